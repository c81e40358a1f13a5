//! Redis-style glob matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), for SCAN MATCH and
//! CONFIG GET. Iterative with one backtrack point per `*`, so a hostile pattern like
//! `a*a*a*a*b` costs O(pattern × string), never exponential time or deep recursion.

/// Whether `string` matches `pattern`.
pub fn matches(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut s) = (0usize, 0usize);
    // Where to resume after the last '*': (pattern index after the star, string index).
    let mut star: Option<(usize, usize)> = None;
    while s < string.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, s));
                    continue;
                }
                b'?' => {
                    p += 1;
                    s += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(pattern, p, string[s], nocase)
                        && ok
                    {
                        p = next;
                        s += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if eq(pattern[p + 1], string[s]) {
                        p += 2;
                        s += 1;
                        continue;
                    }
                }
                c => {
                    if eq(c, string[s]) {
                        p += 1;
                        s += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, ss)) => {
                p = sp;
                s = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Matches `c` against the class starting at `pattern[start] == '['`. Returns whether it
/// matched and the index after the class. An unterminated class runs to the end of the
/// pattern, as in Redis.
fn class(pattern: &[u8], start: usize, c: u8, nocase: bool) -> Option<(bool, usize)> {
    let low = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    let c = low(c);
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            i += 1;
            if low(pattern[i]) == c {
                matched = true;
            }
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (mut a, mut b) = (low(pattern[i]), low(pattern[i + 2]));
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            if c >= a && c <= b {
                matched = true;
            }
            i += 2;
        } else if low(pattern[i]) == c {
            matched = true;
        }
        i += 1;
    }
    let next = (i + 1).min(pattern.len());
    Some((matched != negate, next))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_glob_cases() {
        let yes: &[(&str, &str)] = &[
            ("*", "anything"),
            ("h?llo", "hello"),
            ("h*llo", "heeeello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("user:*", "user:42"),
            ("a\\*b", "a*b"),
            ("*a*b", "xxaxxb"),
            ("", ""),
        ];
        for (p, s) in yes {
            assert!(matches(p.as_bytes(), s.as_bytes(), false), "{p} {s}");
        }
        let no: &[(&str, &str)] = &[
            ("h?llo", "hllo"),
            ("h[^e]llo", "hello"),
            ("h[a-b]llo", "hcllo"),
            ("user:*", "use"),
            ("a\\*b", "axb"),
            ("", "a"),
        ];
        for (p, s) in no {
            assert!(!matches(p.as_bytes(), s.as_bytes(), false), "{p} {s}");
        }
        assert!(matches(b"SAVE", b"save", true));
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let p = "a*".repeat(50) + "b";
        let s = "a".repeat(5_000);
        assert!(!matches(p.as_bytes(), s.as_bytes(), false));
    }
}
