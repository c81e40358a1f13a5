//! The manifest: the engine's durable root. It lists the keyspaces (id, name, options) and
//! each keyspace's live SSTables (id and level), plus the id counters. Anything on disk not
//! named here is garbage from an interrupted flush or compaction and is deleted on open.
//!
//! Format v2, file `MANIFEST`: magic `HSMF`, format version (u32), body length (u64),
//! CRC32C of the body (u32), body. Body: next keyspace id (u32), next table id (u64),
//! keyspace count (u32), then per keyspace: id (u32), name (u32 length + bytes), compaction
//! tag (u8: 0 size-tiered, 1 leveled, 2 time-window) and its two u64 parameters, gc_grace_ms
//! (u64), compression (u8: 0 none, 1 lz4), table count (u32), then per table: id (u64),
//! level (u32), compression it was written with (u8: 0 none, 1 lz4). All little-endian.
//!
//! Version 1 is version 2 without the per-table compression byte. It is still read: a v1
//! table's compression is its keyspace's, exactly, since a keyspace's options could not
//! change before v2 (`Engine::alter_keyspace` came with it). A v1 manifest is not rewritten
//! at open (opening writes nothing, so that it works on a full disk); the next flush,
//! compaction or keyspace change writes v2.
//!
//! Updates are atomic: the whole manifest is written to `MANIFEST.tmp`, fsynced, renamed over
//! `MANIFEST`, and the directory fsynced. It changes only on flush, compaction and keyspace
//! DDL, and stays small (a few bytes per table), so rewriting it whole is cheap and leaves no
//! log to replay or compact.

use crate::config::{CompactionStrategy, KeyspaceOptions, MAX_KEYSPACE_NAME_BYTES};
use crate::engine::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::sstable::Compression;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Manifest file magic.
pub const MANIFEST_MAGIC: [u8; 4] = *b"HSMF";
/// The manifest format this build writes and the newest it reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 2;
/// The oldest manifest format this build reads (and migrates, see the module docs).
pub const MANIFEST_OLDEST_READABLE_VERSION: u32 = 1;
/// The manifest's file name.
pub const MANIFEST_FILE: &str = "MANIFEST";
const MANIFEST_TMP_FILE: &str = "MANIFEST.tmp";
const MANIFEST_HEADER_BYTES: usize = 4 + 4 + 8 + 4;
/// Largest manifest body accepted: bounds what opening a damaged file can allocate. At ~12
/// bytes per table this is room for millions of tables.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// Most keyspaces in one engine.
pub const MAX_KEYSPACES: usize = 4_096;
/// Most SSTables in one keyspace; compaction keeps real counts far below.
pub const MAX_TABLES_PER_KEYSPACE: usize = 1 << 20;

/// One live SSTable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRecord {
    pub id: u64,
    /// 0 for flushed tables; leveled compaction uses 1.. for its levels.
    pub level: u32,
    /// The compression the table was written with (its keyspace's option at the time; the
    /// blocks record what each of them actually uses, see `storage-format.md`).
    pub compression: Compression,
}

/// One keyspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceRecord {
    pub id: u32,
    pub name: String,
    pub options: KeyspaceOptions,
    pub tables: Vec<TableRecord>,
}

/// The whole manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub next_keyspace_id: u32,
    pub next_table_id: u64,
    pub keyspaces: Vec<KeyspaceRecord>,
}

impl Manifest {
    /// An empty manifest (no keyspaces).
    pub fn empty() -> Manifest {
        Manifest {
            next_keyspace_id: 1,
            next_table_id: 1,
            keyspaces: Vec::new(),
        }
    }

    pub fn keyspace(&self, id: u32) -> Option<&KeyspaceRecord> {
        self.keyspaces.iter().find(|k| k.id == id)
    }

    pub fn keyspace_mut(&mut self, id: u32) -> Option<&mut KeyspaceRecord> {
        self.keyspaces.iter_mut().find(|k| k.id == id)
    }

    /// Serialises the manifest (header included).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Writer::default();
        b.u32(self.next_keyspace_id);
        b.u64(self.next_table_id);
        b.u32(self.keyspaces.len() as u32);
        for ks in &self.keyspaces {
            b.u32(ks.id);
            b.bytes(ks.name.as_bytes());
            let (tag, p1, p2) = match ks.options.compaction {
                CompactionStrategy::SizeTiered {
                    min_threshold,
                    max_threshold,
                } => (0u8, min_threshold as u64, max_threshold as u64),
                CompactionStrategy::Leveled {
                    sstable_target_bytes,
                    level_size_multiplier,
                } => (1, sstable_target_bytes, level_size_multiplier),
                CompactionStrategy::TimeWindow { window_ms } => (2, window_ms, 0),
            };
            b.u8(tag);
            b.u64(p1);
            b.u64(p2);
            b.u64(ks.options.gc_grace_ms);
            b.u8(compression_tag(ks.options.compression));
            b.u32(ks.tables.len() as u32);
            for t in &ks.tables {
                b.u64(t.id);
                b.u32(t.level);
                b.u8(compression_tag(t.compression));
            }
        }
        let mut out = Vec::with_capacity(MANIFEST_HEADER_BYTES + b.buf.len());
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&MANIFEST_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(b.buf.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&b.buf).to_le_bytes());
        out.extend_from_slice(&b.buf);
        out
    }

    /// Parses a manifest file's bytes; `path` only names the file in errors.
    pub fn decode(path: &Path, data: &[u8]) -> Result<Manifest> {
        let corrupt = |off: usize, why: String| Error::corruption(path, off as u64, why);
        let mut r = Reader::new(data);
        let magic = r
            .take(4)
            .map_err(|_| corrupt(0, "file too short to be a manifest".into()))?;
        if magic != MANIFEST_MAGIC {
            return Err(corrupt(0, "not a manifest (bad magic)".into()));
        }
        let version = r.u32().map_err(|e| corrupt(e.offset, e.reason))?;
        if !(MANIFEST_OLDEST_READABLE_VERSION..=MANIFEST_FORMAT_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: MANIFEST_FORMAT_VERSION,
            });
        }
        let body_len = r.u64().map_err(|e| corrupt(e.offset, e.reason))?;
        let crc = r.u32().map_err(|e| corrupt(e.offset, e.reason))?;
        if body_len > MAX_MANIFEST_BYTES || body_len != r.remaining() as u64 {
            return Err(corrupt(
                8,
                format!(
                    "body length {body_len} does not match the {} bytes present",
                    r.remaining()
                ),
            ));
        }
        let body = r
            .take(body_len as usize)
            .map_err(|e| corrupt(e.offset, e.reason))?;
        if crc32c::crc32c(body) != crc {
            return Err(corrupt(16, "manifest checksum mismatch".into()));
        }
        let at = |e: crate::engine::codec::DecodeError| {
            corrupt(MANIFEST_HEADER_BYTES + e.offset, e.reason)
        };
        let mut r = Reader::new(body);
        let next_keyspace_id = r.u32().map_err(at)?;
        let next_table_id = r.u64().map_err(at)?;
        let ks_count = r.u32().map_err(at)? as usize;
        if ks_count > MAX_KEYSPACES {
            return Err(corrupt(
                MANIFEST_HEADER_BYTES + 12,
                format!("{ks_count} keyspaces exceeds {MAX_KEYSPACES}"),
            ));
        }
        let mut keyspaces = Vec::with_capacity(ks_count.min(64));
        for _ in 0..ks_count {
            let off = MANIFEST_HEADER_BYTES + r.pos();
            let id = r.u32().map_err(at)?;
            let name = r
                .bytes(MAX_KEYSPACE_NAME_BYTES, "keyspace name")
                .map_err(at)?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| corrupt(off, "keyspace name is not UTF-8".into()))?;
            let tag = r.u8().map_err(at)?;
            let p1 = r.u64().map_err(at)?;
            let p2 = r.u64().map_err(at)?;
            let compaction = match tag {
                0 => CompactionStrategy::SizeTiered {
                    min_threshold: p1 as usize,
                    max_threshold: p2 as usize,
                },
                1 => CompactionStrategy::Leveled {
                    sstable_target_bytes: p1,
                    level_size_multiplier: p2,
                },
                2 => CompactionStrategy::TimeWindow { window_ms: p1 },
                t => return Err(corrupt(off, format!("unknown compaction strategy tag {t}"))),
            };
            let gc_grace_ms = r.u64().map_err(at)?;
            let compression =
                compression_from_tag(r.u8().map_err(at)?).map_err(|why| corrupt(off, why))?;
            let options = KeyspaceOptions {
                compaction,
                gc_grace_ms,
                compression,
            };
            options
                .validate()
                .map_err(|e| corrupt(off, format!("invalid keyspace options: {e}")))?;
            let n = r.u32().map_err(at)? as usize;
            let table_record_bytes = if version >= 2 { 13 } else { 12 };
            if n > MAX_TABLES_PER_KEYSPACE || n > r.remaining() / table_record_bytes {
                return Err(corrupt(off, format!("table count {n} out of range")));
            }
            let mut tables = Vec::with_capacity(n);
            for _ in 0..n {
                let id = r.u64().map_err(at)?;
                let level = r.u32().map_err(at)?;
                let table_compression = if version >= 2 {
                    compression_from_tag(r.u8().map_err(at)?).map_err(|why| corrupt(off, why))?
                } else {
                    // v1: options never changed, so every table was written with these.
                    options.compression
                };
                if id >= next_table_id {
                    return Err(corrupt(
                        off,
                        format!("table id {id} not below next table id {next_table_id}"),
                    ));
                }
                tables.push(TableRecord {
                    id,
                    level,
                    compression: table_compression,
                });
            }
            if id >= next_keyspace_id {
                return Err(corrupt(
                    off,
                    format!("keyspace id {id} not below next keyspace id {next_keyspace_id}"),
                ));
            }
            keyspaces.push(KeyspaceRecord {
                id,
                name,
                options,
                tables,
            });
        }
        if r.remaining() != 0 {
            return Err(corrupt(
                MANIFEST_HEADER_BYTES + r.pos(),
                "trailing bytes after the last keyspace".into(),
            ));
        }
        Ok(Manifest {
            next_keyspace_id,
            next_table_id,
            keyspaces,
        })
    }

    /// Path of the manifest in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }

    /// Loads `dir/MANIFEST`; `Ok(None)` if there is none.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = Manifest::path(dir);
        let tmp = dir.join(MANIFEST_TMP_FILE);
        if tmp.exists() {
            // An interrupted update: the rename never happened, so MANIFEST is the truth.
            let _ = std::fs::remove_file(&tmp);
        }
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
            Ok(m) if m.len() > MAX_MANIFEST_BYTES + MANIFEST_HEADER_BYTES as u64 => {
                return Err(Error::corruption(
                    &path,
                    0,
                    format!("manifest of {} bytes exceeds the limit", m.len()),
                ));
            }
            Ok(_) => {}
        }
        let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        Manifest::decode(&path, &data).map(Some)
    }

    /// Atomically replaces `dir/MANIFEST` with this manifest: [`Self::write_temp`], then
    /// [`Self::commit_temp`]. An error means the outcome is unknown (old or new manifest)
    /// unless it came from `write_temp`; the engine tells them apart.
    pub fn store(&self, dir: &Path, fs: &dyn Fs) -> Result<u64> {
        let n = self.write_temp(dir, fs)?;
        Manifest::commit_temp(dir, fs)?;
        Ok(n)
    }

    /// Writes this manifest to `dir/MANIFEST.tmp` and fsyncs it; returns its size. On error
    /// the temporary file is removed again and `MANIFEST` is untouched (still the valid
    /// manifest): a full disk here is no reason to stop.
    pub fn write_temp(&self, dir: &Path, fs: &dyn Fs) -> Result<u64> {
        let tmp = dir.join(MANIFEST_TMP_FILE);
        let bytes = self.encode();
        let written = fs
            .create_file(
                &tmp,
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true),
            )
            .and_then(|mut f| {
                f.write_all(&bytes)?;
                fs.sync_file(&f, &tmp)
            });
        if let Err(e) = written {
            if let Err(rm) = std::fs::remove_file(&tmp)
                && rm.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %tmp.display(), error = %rm, "could not remove a manifest temp file whose write failed; it is removed on next open");
            }
            return Err(Error::io(&tmp, e));
        }
        Ok(bytes.len() as u64)
    }

    /// Renames `dir/MANIFEST.tmp` (written by [`Self::write_temp`]) over `dir/MANIFEST` and
    /// fsyncs the directory. An error means the outcome is unknown.
    pub fn commit_temp(dir: &Path, fs: &dyn Fs) -> Result<()> {
        let tmp = dir.join(MANIFEST_TMP_FILE);
        let path = Manifest::path(dir);
        fs.rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        fs.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
        Ok(())
    }
}

fn compression_tag(c: Compression) -> u8 {
    match c {
        Compression::None => 0,
        Compression::Lz4 => 1,
    }
}

fn compression_from_tag(tag: u8) -> std::result::Result<Compression, String> {
    match tag {
        0 => Ok(Compression::None),
        1 => Ok(Compression::Lz4),
        c => Err(format!("unknown compression tag {c}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            next_keyspace_id: 3,
            next_table_id: 10,
            keyspaces: vec![
                KeyspaceRecord {
                    id: 1,
                    name: "default".into(),
                    options: KeyspaceOptions::default(),
                    tables: vec![TableRecord {
                        id: 4,
                        level: 0,
                        compression: Compression::Lz4,
                    }],
                },
                KeyspaceRecord {
                    id: 2,
                    name: "ts".into(),
                    options: KeyspaceOptions {
                        compaction: CompactionStrategy::TimeWindow { window_ms: 60_000 },
                        gc_grace_ms: 5,
                        compression: Compression::None,
                    },
                    tables: vec![
                        TableRecord {
                            id: 7,
                            level: 2,
                            compression: Compression::Lz4,
                        },
                        TableRecord {
                            id: 9,
                            level: 1,
                            compression: Compression::None,
                        },
                    ],
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_every_truncation_or_flip_is_an_error() {
        let m = sample();
        let enc = m.encode();
        let p = Path::new("MANIFEST");
        assert_eq!(Manifest::decode(p, &enc).unwrap(), m);
        for cut in 0..enc.len() {
            assert!(Manifest::decode(p, &enc[..cut]).is_err());
        }
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x10;
            assert!(Manifest::decode(p, &bad).is_err(), "flip at {i} accepted");
        }
    }

    /// The v1 encoding (no per-table compression byte), as the v1 build wrote it.
    fn encode_v1(m: &Manifest) -> Vec<u8> {
        let v2 = m.encode();
        // Re-encode the body without each table's last byte: walk it as the decoder does.
        let mut b = Writer::default();
        b.u32(m.next_keyspace_id);
        b.u64(m.next_table_id);
        b.u32(m.keyspaces.len() as u32);
        for ks in &m.keyspaces {
            let one = Manifest {
                next_keyspace_id: m.next_keyspace_id,
                next_table_id: m.next_table_id,
                keyspaces: vec![KeyspaceRecord {
                    tables: Vec::new(),
                    ..ks.clone()
                }],
            }
            .encode();
            // Header (20) + ids and count (16), then this keyspace up to its table count.
            let ks_bytes = &one[MANIFEST_HEADER_BYTES + 16..one.len() - 4];
            b.buf.extend_from_slice(ks_bytes);
            b.u32(ks.tables.len() as u32);
            for t in &ks.tables {
                b.u64(t.id);
                b.u32(t.level);
            }
        }
        let mut out = v2[..MANIFEST_HEADER_BYTES].to_vec();
        out[4..8].copy_from_slice(&1u32.to_le_bytes());
        out[8..16].copy_from_slice(&(b.buf.len() as u64).to_le_bytes());
        out[16..20].copy_from_slice(&crc32c::crc32c(&b.buf).to_le_bytes());
        out.extend_from_slice(&b.buf);
        out
    }

    #[test]
    fn v1_is_read_with_each_table_at_its_keyspace_compression() {
        let mut m = sample();
        // What a v1 engine could have written: every table at its keyspace's compression.
        for ks in &mut m.keyspaces {
            let c = ks.options.compression;
            for t in &mut ks.tables {
                t.compression = c;
            }
        }
        let v1 = encode_v1(&m);
        assert_eq!(u32::from_le_bytes([v1[4], v1[5], v1[6], v1[7]]), 1);
        assert_eq!(v1.len() + 3, m.encode().len(), "one byte less per table");
        assert_eq!(Manifest::decode(Path::new("MANIFEST"), &v1).unwrap(), m);
        // A version from the future is refused as such.
        let mut v3 = m.encode();
        v3[4..8].copy_from_slice(&3u32.to_le_bytes());
        assert!(matches!(
            Manifest::decode(Path::new("MANIFEST"), &v3),
            Err(Error::UnsupportedVersion { found: 3, .. })
        ));
    }
}
