//! Token ranges on the ring: `(start, end]`, wrapping past `i64::MAX` back to `i64::MIN`.

use hearsay_types::Token;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Number of distinct tokens on the ring (2^64), as an f64 for ownership fractions.
pub(crate) const RING_SIZE_F64: f64 = 18_446_744_073_709_551_616.0;

/// A range of tokens `(start, end]`: `start` exclusive, `end` inclusive, walking clockwise
/// (increasing tokens, wrapping from `i64::MAX` to `i64::MIN`).
///
/// `start >= end` means the range wraps; `start == end` is the whole ring (a ring with a single
/// vnode token `t` owns `(t, t]`), as in Cassandra. A vnode token `t` with predecessor `p` on
/// the ring owns `(p, t]`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TokenRange {
    /// Exclusive lower bound.
    pub start: Token,
    /// Inclusive upper bound.
    pub end: Token,
}

impl TokenRange {
    /// The range `(start, end]`.
    pub const fn new(start: Token, end: Token) -> TokenRange {
        TokenRange { start, end }
    }

    /// The whole ring, written `(MIN, MIN]`.
    pub const fn full() -> TokenRange {
        TokenRange::new(Token::MIN, Token::MIN)
    }

    /// True when this range covers every token.
    pub fn is_full(&self) -> bool {
        self.start == self.end
    }

    /// True when the range passes from `i64::MAX` to `i64::MIN` (including the full ring).
    pub fn wraps(&self) -> bool {
        self.start >= self.end
    }

    /// Whether `t` lies in `(start, end]`.
    #[inline]
    pub fn contains(&self, t: Token) -> bool {
        if self.start < self.end {
            self.start < t && t <= self.end
        } else if self.start > self.end {
            t > self.start || t <= self.end
        } else {
            true
        }
    }

    /// Number of tokens in the range: in 1..=2^64 (the full ring has 2^64).
    pub fn width(&self) -> u128 {
        if self.is_full() {
            1u128 << 64
        } else {
            (self.end.0.wrapping_sub(self.start.0) as u64) as u128
        }
    }

    /// The fraction of the ring this range covers, in (0, 1].
    pub fn fraction(&self) -> f64 {
        self.width() as f64 / RING_SIZE_F64
    }

    /// The token `offset` steps clockwise from `start`, i.e. the end of the sub-range
    /// `(start, start + offset]`. `offset` must be in 1..=width.
    pub fn token_at(&self, offset: u128) -> Token {
        debug_assert!(offset >= 1 && offset <= self.width());
        Token(self.start.0.wrapping_add(offset as u64 as i64))
    }

    /// Splits at `t` into `(start, t]` and `(t, end]`; `None` unless `t` is strictly inside
    /// (in the range and not its end), so both halves are non-empty.
    pub fn split_at(&self, t: Token) -> Option<(TokenRange, TokenRange)> {
        if t == self.end || !self.contains(t) {
            return None;
        }
        Some((TokenRange::new(self.start, t), TokenRange::new(t, self.end)))
    }

    /// Splits into `n` contiguous sub-ranges of (almost) equal width, in clockwise order,
    /// covering exactly this range. Fewer than `n` when the range has fewer than `n` tokens;
    /// `n == 0` is treated as 1.
    pub fn split_even(&self, n: usize) -> Vec<TokenRange> {
        let width = self.width();
        let n = (n.max(1) as u128).min(width);
        let mut out = Vec::with_capacity(n as usize);
        let mut prev = self.start;
        for i in 1..=n {
            // Exact integer division keeps the pieces within one token of each other.
            let end = if i == n {
                self.end
            } else {
                self.token_at(width * i / n)
            };
            out.push(TokenRange::new(prev, end));
            prev = end;
        }
        out
    }

    /// The range as at most two non-wrapping ranges `(a, b]` with `a < b`, covering the same
    /// key tokens, for storage scans ordered by token. `Token::MIN` itself is not covered by
    /// the second piece `(MIN, end]`; it is never a key's token, so no key is lost.
    pub fn unwrap(&self) -> Vec<TokenRange> {
        if !self.wraps() {
            return vec![*self];
        }
        let mut out = Vec::with_capacity(2);
        if self.start != Token::MAX {
            out.push(TokenRange::new(self.start, Token::MAX));
        }
        if self.end != Token::MIN {
            out.push(TokenRange::new(Token::MIN, self.end));
        }
        out
    }
}

impl TokenRange {
    /// The key tokens in both ranges, as non-wrapping ranges in token order (at most three
    /// pieces: two wrapping ranges can overlap at both ends). Like [`TokenRange::unwrap`], the
    /// pieces do not cover `Token::MIN`, which is never a key's token.
    pub fn intersection(&self, other: &TokenRange) -> Vec<TokenRange> {
        let mut out = Vec::new();
        for a in self.unwrap() {
            for b in other.unwrap() {
                let start = a.start.max(b.start);
                let end = a.end.min(b.end);
                if start < end {
                    out.push(TokenRange::new(start, end));
                }
            }
        }
        out.sort();
        out
    }

    /// Whether the two ranges share a key token.
    pub fn intersects(&self, other: &TokenRange) -> bool {
        !self.intersection(other).is_empty()
    }
}

impl fmt::Debug for TokenRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {}]", self.start, self.end)
    }
}

impl fmt::Display for TokenRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(a: i64, b: i64) -> TokenRange {
        TokenRange::new(Token(a), Token(b))
    }

    #[test]
    fn contains_respects_open_start_closed_end_and_wrap() {
        assert!(!r(0, 10).contains(Token(0)));
        assert!(r(0, 10).contains(Token(10)));
        assert!(!r(0, 10).contains(Token(11)));
        let w = r(10, -10);
        assert!(w.wraps());
        assert!(w.contains(Token(i64::MAX)));
        assert!(w.contains(Token(i64::MIN)));
        assert!(w.contains(Token(-10)));
        assert!(!w.contains(Token(0)));
        assert!(!w.contains(Token(10)));
        assert!(r(5, 5).contains(Token(5)) && r(5, 5).is_full());
    }

    #[test]
    fn widths() {
        assert_eq!(r(0, 10).width(), 10);
        assert_eq!(r(i64::MAX, i64::MIN).width(), 1);
        assert_eq!(TokenRange::full().width(), 1u128 << 64);
        assert_eq!(r(10, 0).width(), (1u128 << 64) - 10);
        assert!((TokenRange::full().fraction() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn unwrap_edges() {
        assert_eq!(r(1, 2).unwrap(), vec![r(1, 2)]);
        assert_eq!(r(i64::MAX, 5).unwrap(), vec![r(i64::MIN, 5)]);
        assert_eq!(r(5, i64::MIN).unwrap(), vec![r(5, i64::MAX)]);
        assert_eq!(TokenRange::full().unwrap(), vec![r(i64::MIN, i64::MAX)]);
    }

    fn any_token() -> impl Strategy<Value = Token> {
        prop_oneof![
            any::<i64>().prop_map(Token),
            (-3i64..3).prop_map(Token),
            prop_oneof![
                Just(i64::MIN),
                Just(i64::MAX),
                Just(i64::MIN + 1),
                Just(i64::MAX - 1)
            ]
            .prop_map(Token),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn split_at_partitions_the_range(a in any_token(), b in any_token(), s in any_token(), t in any_token()) {
            let range = TokenRange::new(a, b);
            if let Some((left, right)) = range.split_at(s) {
                prop_assert_eq!(left.width() + right.width(), range.width());
                prop_assert_eq!(range.contains(t), left.contains(t) || right.contains(t));
                prop_assert!(!(left.contains(t) && right.contains(t)));
            } else {
                prop_assert!(s == b || !range.contains(s));
            }
        }

        #[test]
        fn split_even_covers_exactly(a in any_token(), b in any_token(), n in 0usize..9, t in any_token()) {
            let range = TokenRange::new(a, b);
            let parts = range.split_even(n);
            prop_assert!(!parts.is_empty());
            prop_assert_eq!(parts.iter().map(|p| p.width()).sum::<u128>(), range.width());
            let hits = parts.iter().filter(|p| p.contains(t)).count();
            prop_assert_eq!(hits, usize::from(range.contains(t)));
            let (lo, hi) = parts.iter().fold((u128::MAX, 0), |(lo, hi), p| (lo.min(p.width()), hi.max(p.width())));
            prop_assert!(hi - lo <= 1);
        }

        #[test]
        fn intersection_holds_exactly_the_common_tokens(
            a in any_token(), b in any_token(), c in any_token(), d in any_token(), t in any_token()
        ) {
            prop_assume!(t != Token::MIN);
            let (x, y) = (TokenRange::new(a, b), TokenRange::new(c, d));
            let parts = x.intersection(&y);
            prop_assert!(parts.len() <= 3);
            prop_assert!(parts.iter().all(|p| p.start < p.end));
            prop_assert_eq!(x.contains(t) && y.contains(t), parts.iter().any(|p| p.contains(t)));
            prop_assert_eq!(x.intersects(&y), !parts.is_empty());
        }

        #[test]
        fn unwrap_covers_the_same_key_tokens(a in any_token(), b in any_token(), t in any_token()) {
            prop_assume!(t != Token::MIN);
            let range = TokenRange::new(a, b);
            let parts = range.unwrap();
            prop_assert!(parts.iter().all(|p| p.start < p.end));
            prop_assert_eq!(range.contains(t), parts.iter().any(|p| p.contains(t)));
        }
    }
}
