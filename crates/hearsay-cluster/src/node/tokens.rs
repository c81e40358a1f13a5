//! The node's tokens, saved in the data directory once chosen so that a restart keeps its
//! place in the ring. One line: `hearsay-tokens v1 <crc32c hex> <encoded tokens>`, written
//! to a temporary file, fsynced and renamed.

use super::membership::{decode_tokens, encode_tokens};
use hearsay_types::Token;
use std::io::Write;
use std::path::Path;

/// File name under the data directory.
pub const TOKENS_FILE: &str = "tokens";
const MAGIC: &str = "hearsay-tokens";
const VERSION: &str = "v1";
/// The file is one short line; anything bigger is not ours.
const MAX_TOKENS_FILE_BYTES: u64 = 4 * 1024;

/// The saved tokens, `None` if never saved; an error if the file is damaged (a node must not
/// silently take new tokens: it would own other data than it holds).
pub fn load(dir: &Path) -> Result<Option<Vec<Token>>, String> {
    let path = dir.join(TOKENS_FILE);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(m) if m.len() > MAX_TOKENS_FILE_BYTES => {
            return Err(format!(
                "{} is too large to be a tokens file",
                path.display()
            ));
        }
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = || {
        format!(
            "{} is damaged; remove it only if this node holds no data",
            path.display()
        )
    };
    let mut parts = text.trim_end().split(' ');
    let (Some(MAGIC), Some(VERSION), Some(crc), Some(body), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    let crc = u32::from_str_radix(crc, 16).map_err(|_| bad())?;
    if crc != crc32c::crc32c(body.as_bytes()) {
        return Err(bad());
    }
    let tokens = decode_tokens(body).ok_or_else(bad)?;
    if tokens.is_empty() {
        return Err(bad());
    }
    Ok(Some(tokens))
}

/// Saves `tokens` durably (temp file, fsync, rename, directory fsync).
pub fn save(dir: &Path, tokens: &[Token]) -> Result<(), String> {
    let body = encode_tokens(tokens);
    let line = format!(
        "{MAGIC} {VERSION} {:08x} {body}\n",
        crc32c::crc32c(body.as_bytes())
    );
    let tmp = dir.join(format!("{TOKENS_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(line.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(TOKENS_FILE))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| format!("cannot save tokens in {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_round_trips_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let tokens = vec![Token(-5), Token(7), Token(i64::MAX)];
        save(dir.path(), &tokens).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(tokens));
        let path = dir.path().join(TOKENS_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        // Flip one token character: the checksum catches it.
        let last = text.len() - 2;
        text.replace_range(
            last..last + 1,
            if &text[last..last + 1] == "A" {
                "B"
            } else {
                "A"
            },
        );
        std::fs::write(&path, text).unwrap();
        assert!(load(dir.path()).is_err());
    }
}
