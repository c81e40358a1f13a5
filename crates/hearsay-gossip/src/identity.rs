//! A node's persistent identity: its `NodeId` (created once) and its generation (strictly
//! increasing at every start), both kept as small text files in the data directory.

use std::fs;
use std::io::Write;
use std::path::Path;

use hearsay_types::NodeId;

use crate::GossipError;

/// File holding the node id (UUID form).
pub const NODE_ID_FILE: &str = "node_id";
/// File holding the last generation used.
pub const GENERATION_FILE: &str = "generation";
/// Identity files are a line of text; anything bigger is not ours.
const MAX_IDENTITY_FILE_BYTES: u64 = 256;

fn read_small(path: &Path) -> Result<Option<String>, GossipError> {
    match fs::metadata(path) {
        Ok(m) if m.len() > MAX_IDENTITY_FILE_BYTES => Err(GossipError::Identity(format!(
            "{} is {} bytes, expected a short line",
            path.display(),
            m.len()
        ))),
        Ok(_) => Ok(Some(fs::read_to_string(path)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes via a temporary file, fsync and rename, so a crash leaves the old or the new
/// content, never a torn one.
fn write_atomic(dir: &Path, name: &str, content: &str) -> Result<(), GossipError> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    if let Ok(d) = fs::File::open(dir) {
        // Directory fsync makes the rename durable; not supported everywhere, hence best effort.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Returns the node id stored in `dir`, creating and storing a fresh random one if absent.
pub fn load_or_create_node_id(dir: &Path) -> Result<NodeId, GossipError> {
    fs::create_dir_all(dir)?;
    let path = dir.join(NODE_ID_FILE);
    if let Some(s) = read_small(&path)? {
        return NodeId::parse(s.trim()).ok_or_else(|| {
            GossipError::Identity(format!("{} does not hold a node id", path.display()))
        });
    }
    let id = NodeId::random();
    write_atomic(dir, NODE_ID_FILE, &format!("{id}\n"))?;
    Ok(id)
}

/// Longest a start on a full disk waits for the clock to pass its unsaved generation, in
/// seconds: one second in the usual case; a clock far behind the saved value is not waited
/// for (the next start then reuses the value, as before).
const UNSAVED_GENERATION_MAX_WAIT_SECS: u64 = 2;

fn wall_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Returns and persists this start's generation: `max(previous + 1, unix seconds)`, so it
/// grows even if the clock went backwards or two starts fall in one second.
pub fn next_generation(dir: &Path, unix_secs: u64) -> Result<u64, GossipError> {
    fs::create_dir_all(dir)?;
    let path = dir.join(GENERATION_FILE);
    let prev = match read_small(&path)? {
        Some(s) => s.trim().parse::<u64>().map_err(|_| {
            GossipError::Identity(format!("{} does not hold a generation", path.display()))
        })?,
        None => 0,
    };
    let next = unix_secs.max(prev.saturating_add(1));
    match write_atomic(dir, GENERATION_FILE, &format!("{next}\n")) {
        Ok(()) => Ok(next),
        // A node that starts on a full disk still starts (serving reads, refusing writes):
        // the generation is above the saved one either way, and the next start computes it
        // again from the clock and the older saved value.
        Err(GossipError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) =>
        {
            let _ = fs::remove_file(dir.join(format!("{GENERATION_FILE}.tmp")));
            tracing::warn!(path = %path.display(), generation = next, error = %e, "cannot save the generation (disk full); using it unsaved");
            // Unsaved, the next start would compute the same value within this second:
            // peers would take the restarted node for the old one. Start only once the
            // clock has passed it, so any later start's clock reading is above it.
            if next <= unix_secs.saturating_add(UNSAVED_GENERATION_MAX_WAIT_SECS) {
                while wall_secs() <= next {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            Ok(next)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_stable_and_generation_strictly_increases() {
        let dir = std::env::temp_dir().join(format!("hearsay-gossip-id-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let a = load_or_create_node_id(&dir).unwrap();
        let b = load_or_create_node_id(&dir).unwrap();
        assert_eq!(a, b);
        let g1 = next_generation(&dir, 1_000).unwrap();
        let g2 = next_generation(&dir, 1_000).unwrap();
        let g3 = next_generation(&dir, 500).unwrap();
        let g4 = next_generation(&dir, 5_000).unwrap();
        assert_eq!((g1, g2, g3, g4), (1_000, 1_001, 1_002, 5_000));
        fs::write(dir.join(NODE_ID_FILE), "garbage").unwrap();
        assert!(load_or_create_node_id(&dir).is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
