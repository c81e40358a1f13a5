//! Keyspace definitions known cluster-wide: a pure [`Schema`] (merge, version) plus their
//! durable encoding in the engine's local `system` keyspace.
//!
//! Each definition carries the HLC timestamp of the create/alter/drop that made it; merging
//! keeps the newest per keyspace (a drop is a definition with `dropped = true`, so a stale
//! create cannot resurrect it). The schema version is a hash of every definition; nodes
//! gossip it and pull from a peer whose version differs. Concurrent changes to one keyspace
//! through two nodes resolve by timestamp, last write wins, like Cassandra's schema before
//! transactional metadata.

use bytes::Bytes;
use hearsay_ring::ReplicationStrategy;
use hearsay_storage::{Cell, CellKey};
use hearsay_types::{ConsistencyLevel, Timestamp, Token};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The engine keyspace holding this node's copy of the definitions (local, not replicated:
/// schema pulls keep copies in sync).
pub const SYSTEM_KEYSPACE: &str = "system";
/// The keyspace that always exists (the engine's, re-exported: one name everywhere).
pub use hearsay_storage::DEFAULT_KEYSPACE;
/// Version byte in front of every stored definition written now. Version 1 (no options)
/// is still read, as a definition with the default options.
pub const SCHEMA_RECORD_VERSION: u8 = 2;
/// The first format: a definition without [`KeyspaceOptions`].
const SCHEMA_RECORD_V1: u8 = 1;
/// Most keyspaces (live or dropped) a schema holds: definitions travel whole in a
/// `SchemaPull` answer, and the engine has its own cap on keyspaces.
pub const MAX_KEYSPACE_DEFS: usize = 1_024;
/// Prefix of definition keys in the system keyspace.
pub(crate) const DEF_KEY_PREFIX: &str = "keyspace/";

/// One keyspace's definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceDef {
    pub name: String,
    #[serde(with = "strategy_wire")]
    pub strategy: ReplicationStrategy,
    /// Level used when a request names none (`None`: the node's default).
    pub default_consistency: Option<ConsistencyLevel>,
    /// HLC time of the change that produced this definition.
    pub timestamp: Timestamp,
    /// A drop: the keyspace is gone; kept so older definitions cannot bring it back.
    pub dropped: bool,
    /// Storage and repair options (version 2).
    pub options: KeyspaceOptions,
}

/// A keyspace's storage and repair options, as `KEYSPACE CREATE/ALTER` set them (see
/// `docs/resp.md`). Every node applies them to its engine keyspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceOptions {
    pub compaction: CompactionOption,
    pub compression: CompressionOption,
    /// How long a tombstone is kept before compaction may purge it, with `tombstone_gc =
    /// timeout`, in ms. Default ten days (Cassandra's `gc_grace_seconds`).
    pub gc_grace_ms: u64,
    pub tombstone_gc: TombstoneGc,
    /// Whether reads repair the stale replicas they contacted (blocking read repair). Off
    /// trades monotonic QUORUM reads for lower read latency. Default on.
    pub read_repair: bool,
}

impl Default for KeyspaceOptions {
    fn default() -> Self {
        KeyspaceOptions {
            compaction: CompactionOption::SizeTiered {
                min_threshold: 4,
                max_threshold: 32,
            },
            compression: CompressionOption::Lz4,
            gc_grace_ms: hearsay_storage::config::DEFAULT_GC_GRACE_MS,
            tombstone_gc: TombstoneGc::Repair,
            read_repair: true,
        }
    }
}

/// Compaction strategy of a keyspace (the engine's strategies, in a stable wire form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompactionOption {
    /// Cassandra's STCS: merge runs of similar-sized tables.
    SizeTiered {
        min_threshold: u64,
        max_threshold: u64,
    },
    /// Cassandra's LCS: levels of non-overlapping tables.
    Leveled {
        sstable_target_bytes: u64,
        level_size_multiplier: u64,
    },
    /// Cassandra's TWCS: one table per closed time window.
    TimeWindow { window_ms: u64 },
}

/// SSTable block compression of a keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompressionOption {
    None,
    Lz4,
}

/// When tombstones may be purged (ScyllaDB's `tombstone_gc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TombstoneGc {
    /// After `gc_grace`, as Cassandra: a replica that missed the delete for longer than that
    /// (and was not repaired) can bring the value back.
    Timeout,
    /// Only once a repair that covered the tombstone completed on every replica of its
    /// range: no resurrection, whatever the downtime; tombstones of ranges that cannot be
    /// repaired (a replica down for good) are kept until they can. The default.
    Repair,
}

impl KeyspaceOptions {
    /// The engine's options for this keyspace.
    pub fn engine_options(&self) -> hearsay_storage::KeyspaceOptions {
        use hearsay_storage::{CompactionStrategy, Compression};
        hearsay_storage::KeyspaceOptions {
            compaction: match self.compaction {
                CompactionOption::SizeTiered {
                    min_threshold,
                    max_threshold,
                } => CompactionStrategy::SizeTiered {
                    min_threshold: min_threshold as usize,
                    max_threshold: max_threshold as usize,
                },
                CompactionOption::Leveled {
                    sstable_target_bytes,
                    level_size_multiplier,
                } => CompactionStrategy::Leveled {
                    sstable_target_bytes,
                    level_size_multiplier,
                },
                CompactionOption::TimeWindow { window_ms } => {
                    CompactionStrategy::TimeWindow { window_ms }
                }
            },
            // With `tombstone_gc = repair` the engine purges by the node's purge horizon; until
            // the node has set it (just after the engine opens), nothing may go by age.
            gc_grace_ms: match self.tombstone_gc {
                TombstoneGc::Timeout => self.gc_grace_ms,
                TombstoneGc::Repair => u64::MAX,
            },
            compression: match self.compression {
                CompressionOption::None => Compression::None,
                CompressionOption::Lz4 => Compression::Lz4,
            },
        }
    }

    /// The definition form of an engine keyspace's options (a keyspace of a node that runs
    /// alone, which has no definition): `tombstone_gc` timeout, read repair on.
    pub fn from_engine(o: &hearsay_storage::KeyspaceOptions) -> KeyspaceOptions {
        use hearsay_storage::{CompactionStrategy, Compression};
        KeyspaceOptions {
            compaction: match o.compaction {
                CompactionStrategy::SizeTiered {
                    min_threshold,
                    max_threshold,
                } => CompactionOption::SizeTiered {
                    min_threshold: min_threshold as u64,
                    max_threshold: max_threshold as u64,
                },
                CompactionStrategy::Leveled {
                    sstable_target_bytes,
                    level_size_multiplier,
                } => CompactionOption::Leveled {
                    sstable_target_bytes,
                    level_size_multiplier,
                },
                CompactionStrategy::TimeWindow { window_ms } => {
                    CompactionOption::TimeWindow { window_ms }
                }
            },
            compression: match o.compression {
                Compression::None => CompressionOption::None,
                Compression::Lz4 => CompressionOption::Lz4,
            },
            gc_grace_ms: o.gc_grace_ms,
            tombstone_gc: TombstoneGc::Timeout,
            read_repair: true,
        }
    }

    /// Rejects options the engine would refuse, naming the option.
    pub fn validate(&self) -> Result<(), String> {
        self.engine_options()
            .validate()
            .map_err(|e| format!("invalid compaction option: {e}"))
    }
}

/// What `KEYSPACE ALTER` changes: each field given replaces the current one, the rest stay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyspaceChange {
    pub strategy: Option<ReplicationStrategy>,
    pub default_consistency: Option<ConsistencyLevel>,
    pub compaction: Option<CompactionOption>,
    pub compression: Option<CompressionOption>,
    pub gc_grace_ms: Option<u64>,
    pub tombstone_gc: Option<TombstoneGc>,
    pub read_repair: Option<bool>,
}

impl KeyspaceChange {
    /// Whether the change names nothing.
    pub fn is_empty(&self) -> bool {
        *self == KeyspaceChange::default()
    }

    /// Applies the option fields to `options`.
    pub fn apply_to(&self, options: &mut KeyspaceOptions) {
        if let Some(c) = self.compaction {
            options.compaction = c;
        }
        if let Some(c) = self.compression {
            options.compression = c;
        }
        if let Some(g) = self.gc_grace_ms {
            options.gc_grace_ms = g;
        }
        if let Some(t) = self.tombstone_gc {
            options.tombstone_gc = t;
        }
        if let Some(r) = self.read_repair {
            options.read_repair = r;
        }
    }
}

/// The first stored form of a definition (record version 1).
#[derive(Deserialize)]
struct KeyspaceDefV1 {
    name: String,
    #[serde(with = "strategy_wire")]
    strategy: ReplicationStrategy,
    default_consistency: Option<ConsistencyLevel>,
    timestamp: Timestamp,
    dropped: bool,
}

/// `ReplicationStrategy` is internally tagged for JSON/TOML, which postcard (not
/// self-describing) cannot decode; definitions travel and are stored as this plain enum.
mod strategy_wire {
    use hearsay_ring::ReplicationStrategy;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize)]
    enum Wire {
        Simple(u64),
        NetworkTopology(BTreeMap<String, u64>),
    }

    pub fn serialize<S: Serializer>(s: &ReplicationStrategy, ser: S) -> Result<S::Ok, S::Error> {
        match s {
            ReplicationStrategy::Simple { rf } => Wire::Simple(*rf as u64),
            ReplicationStrategy::NetworkTopology { dc_rf } => {
                Wire::NetworkTopology(dc_rf.iter().map(|(k, v)| (k.clone(), *v as u64)).collect())
            }
        }
        .serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ReplicationStrategy, D::Error> {
        let to_usize = |v: u64| {
            usize::try_from(v).map_err(|_| serde::de::Error::custom("replication factor too large"))
        };
        let s = match Wire::deserialize(d)? {
            Wire::Simple(rf) => ReplicationStrategy::Simple { rf: to_usize(rf)? },
            Wire::NetworkTopology(m) => ReplicationStrategy::NetworkTopology {
                dc_rf: m
                    .into_iter()
                    .map(|(k, v)| Ok((k, to_usize(v)?)))
                    .collect::<Result<_, D::Error>>()?,
            },
        };
        // A definition from disk or a peer is untrusted input: enforce the limits here too.
        s.validate().map_err(serde::de::Error::custom)?;
        Ok(s)
    }
}

impl KeyspaceDef {
    /// Whether `self` replaces `other`: newer timestamp; on a tie a drop, then the larger
    /// encoding (deterministic everywhere).
    pub fn supersedes(&self, other: &KeyspaceDef) -> bool {
        (self.timestamp, self.dropped, encode_def_body(self))
            > (other.timestamp, other.dropped, encode_def_body(other))
    }
}

fn encode_def_body(def: &KeyspaceDef) -> Vec<u8> {
    postcard::to_allocvec(def).unwrap_or_default()
}

/// The definitions this node knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schema {
    defs: BTreeMap<String, KeyspaceDef>,
}

impl Schema {
    /// A schema with only the `default` keyspace at `rf` (timestamp 0, so any explicit
    /// ALTER wins).
    pub fn with_default(rf: usize) -> Schema {
        let mut s = Schema::default();
        s.defs.insert(
            DEFAULT_KEYSPACE.to_string(),
            KeyspaceDef {
                name: DEFAULT_KEYSPACE.to_string(),
                strategy: ReplicationStrategy::simple(rf),
                default_consistency: None,
                timestamp: Timestamp(0),
                dropped: false,
                options: KeyspaceOptions::default(),
            },
        );
        s
    }

    /// Merges one definition; returns true when it changed the schema.
    pub fn merge(&mut self, def: KeyspaceDef) -> bool {
        match self.defs.get(&def.name) {
            Some(cur) if !def.supersedes(cur) => false,
            None if self.defs.len() >= MAX_KEYSPACE_DEFS => {
                tracing::warn!(keyspace = %def.name, "schema full; ignoring definition");
                false
            }
            _ => {
                self.defs.insert(def.name.clone(), def);
                true
            }
        }
    }

    /// Every definition, dropped ones included, by name.
    pub fn defs(&self) -> impl Iterator<Item = &KeyspaceDef> {
        self.defs.values()
    }

    /// Live (not dropped) definitions, by name.
    pub fn live_defs(&self) -> impl Iterator<Item = &KeyspaceDef> {
        self.defs.values().filter(|d| !d.dropped)
    }

    /// A live definition.
    pub fn get(&self, name: &str) -> Option<&KeyspaceDef> {
        self.defs.get(name).filter(|d| !d.dropped)
    }

    /// Any definition, dropped included.
    pub fn get_any(&self, name: &str) -> Option<&KeyspaceDef> {
        self.defs.get(name)
    }

    /// A hash of every definition, as 16 hex digits: equal schemas give equal versions on
    /// every node (definitions are hashed in name order).
    pub fn version(&self) -> String {
        let mut enc = Vec::new();
        for d in self.defs.values() {
            let body = encode_def_body(d);
            enc.extend_from_slice(&(body.len() as u32).to_le_bytes());
            enc.extend_from_slice(&body);
        }
        let forward = crc32c::crc32c(&enc);
        enc.reverse();
        let backward = crc32c::crc32c(&enc);
        format!("{:08x}{:08x}", forward, backward)
    }
}

/// The system-keyspace cell holding `def`.
pub fn def_to_cell(def: &KeyspaceDef) -> (CellKey, Cell) {
    let key = format!("{DEF_KEY_PREFIX}{}", def.name);
    let mut value = vec![SCHEMA_RECORD_VERSION];
    value.extend_from_slice(&encode_def_body(def));
    // Token 0 for every definition: the system keyspace is local and tiny, so its order
    // does not matter, and a fixed token keeps the keys contiguous.
    (
        CellKey::new(Token(0), Bytes::from(key)),
        Cell::value(Bytes::from(value), def.timestamp),
    )
}

/// Decodes a stored definition; `None` (logged) for an unknown version or bad bytes.
pub fn def_from_cell(cell: &Cell) -> Option<KeyspaceDef> {
    let v = cell.value.as_ref()?;
    match v.split_first() {
        Some((&SCHEMA_RECORD_VERSION, body)) => postcard::from_bytes(body).ok(),
        Some((&SCHEMA_RECORD_V1, body)) => {
            postcard::from_bytes::<KeyspaceDefV1>(body)
                .ok()
                .map(|d| KeyspaceDef {
                    name: d.name,
                    strategy: d.strategy,
                    default_consistency: d.default_consistency,
                    timestamp: d.timestamp,
                    dropped: d.dropped,
                    options: KeyspaceOptions::default(),
                })
        }
        _ => {
            tracing::warn!("unreadable keyspace definition in the system keyspace; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, rf: usize, ts: u64, dropped: bool) -> KeyspaceDef {
        KeyspaceDef {
            name: name.into(),
            strategy: ReplicationStrategy::simple(rf),
            default_consistency: None,
            timestamp: Timestamp(ts),
            dropped,
            options: KeyspaceOptions::default(),
        }
    }

    #[test]
    fn newest_definition_wins_whatever_the_order() {
        let changes = [
            def("a", 1, 10, false),
            def("a", 3, 20, false),
            def("a", 2, 20, true),
            def("b", 1, 5, false),
        ];
        let mut s1 = Schema::with_default(3);
        let mut s2 = Schema::with_default(3);
        for d in changes.iter() {
            s1.merge(d.clone());
        }
        for d in changes.iter().rev() {
            s2.merge(d.clone());
        }
        assert_eq!(s1, s2);
        assert_eq!(s1.version(), s2.version());
        assert!(s1.get("a").is_none(), "the drop at the tied timestamp wins");
        assert!(s1.get("b").is_some());
        assert!(!s1.merge(def("a", 1, 10, false)), "stale create ignored");
        assert_ne!(s1.version(), Schema::with_default(3).version());
    }

    #[test]
    fn stored_definition_round_trips() {
        let d = def("ks", 2, 7, false);
        let (k, c) = def_to_cell(&d);
        assert_eq!(&k.key[..], b"keyspace/ks");
        assert_eq!(c.timestamp, Timestamp(7));
        assert_eq!(def_from_cell(&c), Some(d));
        let nts = KeyspaceDef {
            strategy: ReplicationStrategy::network_topology([("dc1", 3), ("dc2", 2)]),
            default_consistency: Some(ConsistencyLevel::LocalQuorum),
            ..def("multi", 1, 8, false)
        };
        assert_eq!(def_from_cell(&def_to_cell(&nts).1), Some(nts));
        let bad = Cell::value(Bytes::from_static(&[9, 1, 2]), Timestamp(1));
        assert_eq!(def_from_cell(&bad), None);
    }
}
