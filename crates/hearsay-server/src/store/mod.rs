//! The interface between the front ends and the data: [`Store`].
//!
//! The RESP layer never touches the storage engine. It speaks to a `Store`, which today is
//! [`LocalStore`] (one node, over `hearsay_storage::Engine`) and later a cluster coordinator
//! that fans the same operations out to replicas. The operations are therefore phrased in
//! terms a coordinator can implement: whole-cell writes with a condition evaluated against the
//! newest version, reads of the newest live version, and scans in token order.
//!
//! Laws every implementation keeps:
//! - A write future resolves only after the write is durable per the node's sync mode; a
//!   read started after a write resolved sees it (or something newer).
//! - Mutations in one `write` call are applied in order, atomically with respect to other
//!   writes, and their conditions see the effects of earlier mutations in the same call.
//! - Timestamps are minted by the store (HLC), never by the caller.
//! - `scan` returns live keys in ascending `(token, key)` order; a page never ends in the
//!   middle of a token, so the cursor (the next token) loses nothing.

mod cluster;
mod local;
pub mod read_pool;

#[cfg(test)]
pub mod memory;

pub use cluster::{ClusterStore, ClusterStoreStats, node_error};
pub use local::{LocalStore, LocalStoreStats, WriterConfig};

use bytes::Bytes;
use hearsay_cluster::node::{KeyspaceChange, KeyspaceOptions, Node};
use hearsay_ring::ReplicationStrategy;
use hearsay_types::{ConsistencyLevel, Token};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, so that [`Store`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Per-request settings, taken from the connection (SELECT-like commands change them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestContext {
    pub keyspace: String,
    pub consistency: ConsistencyLevel,
}

impl Default for RequestContext {
    fn default() -> Self {
        RequestContext {
            keyspace: "default".to_string(),
            consistency: ConsistencyLevel::One,
        }
    }
}

/// A live value as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    /// Wall-clock expiry in milliseconds since the Unix epoch.
    pub expires_at_ms: Option<u64>,
}

/// When a written value expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Never.
    Never,
    /// At this wall-clock time (ms since the epoch).
    AtMs(u64),
    /// Whatever the current version has (SET ... KEEPTTL).
    Keep,
}

/// What must hold for a mutation to apply, evaluated against the newest live version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Always,
    /// The key has no live value (SET NX).
    Absent,
    /// The key has a live value (SET XX, DEL counting, GETDEL, EXPIRE).
    Present,
    /// Present and without an expiry (EXPIRE NX).
    PresentWithoutExpiry,
    /// Present and with an expiry (EXPIRE XX, PERSIST).
    PresentWithExpiry,
    /// Present and the new expiry is later than the current one; no expiry counts as
    /// infinite, so this never holds for a persistent key (EXPIRE GT).
    ExpiryGreater(u64),
    /// Present and the new expiry is earlier than the current one (no expiry = infinite,
    /// so this always holds for a persistent key) (EXPIRE LT).
    ExpiryLess(u64),
}

impl Condition {
    /// Whether the condition holds for `current` (None = no live value).
    pub fn holds(self, current: Option<&Entry>) -> bool {
        match (self, current) {
            (Condition::Always, _) => true,
            (Condition::Absent, c) => c.is_none(),
            (_, None) => false,
            (Condition::Present, Some(_)) => true,
            (Condition::PresentWithoutExpiry, Some(e)) => e.expires_at_ms.is_none(),
            (Condition::PresentWithExpiry, Some(e)) => e.expires_at_ms.is_some(),
            (Condition::ExpiryGreater(at), Some(e)) => e.expires_at_ms.is_some_and(|cur| at > cur),
            (Condition::ExpiryLess(at), Some(e)) => e.expires_at_ms.is_none_or(|cur| at < cur),
        }
    }
}

/// What a mutation does when its condition holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write a value.
    Put { value: Bytes, expiry: Expiry },
    /// Write a tombstone.
    Delete,
    /// Rewrite the current value with a new expiry (`None` = persist). An expiry at or before
    /// now deletes the key, as Redis's EXPIRE with a past time does.
    SetExpiry(Option<u64>),
}

/// One conditional write of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    pub key: Bytes,
    pub condition: Condition,
    pub action: Action,
    /// The caller needs [`Outcome::previous`] (SET ... GET, GETDEL, GETEX). When false and
    /// the mutation is an unconditional put, a store may skip reading the current version.
    pub want_previous: bool,
}

impl Mutation {
    pub fn put(key: Bytes, value: Bytes) -> Mutation {
        Mutation {
            key,
            want_previous: false,
            condition: Condition::Always,
            action: Action::Put {
                value,
                expiry: Expiry::Never,
            },
        }
    }
}

/// What happened to one mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The condition held and the action was written.
    pub applied: bool,
    /// The newest live version before this mutation (for SET GET, GETDEL, GETEX); may be
    /// `None` when the mutation did not ask for it.
    pub previous: Option<Entry>,
}

/// One page of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    pub entries: Vec<(Bytes, Entry)>,
    /// Where the next page starts, or `None` when the scan is complete.
    pub next: Option<Token>,
}

/// Why a store operation failed. These are per-request failures: the connection carries on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("keyspace '{0}' does not exist")]
    NoSuchKeyspace(String),
    /// The node cannot take writes right now (engine poisoned, shutting down).
    #[error("{0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("keyspace '{0}' already exists")]
    KeyspaceExists(String),
    #[error("{0}")]
    Invalid(String),
    /// A coordinator failure with its own reply code (`UNAVAILABLE`, `TIMEOUT`, ...).
    #[error("{code} {message}")]
    Cluster { code: &'static str, message: String },
}

/// A keyspace as the front ends show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceInfo {
    pub name: String,
    pub strategy: ReplicationStrategy,
    pub default_consistency: Option<ConsistencyLevel>,
    /// Storage and repair options.
    pub options: KeyspaceOptions,
}

/// What `KEYSPACE CREATE` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceSpec {
    pub name: String,
    pub strategy: ReplicationStrategy,
    pub default_consistency: Option<ConsistencyLevel>,
    pub options: KeyspaceOptions,
}

/// What `KEYSPACE ALTER` changes: only the fields given (`None` keeps the current value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceAlter {
    pub name: String,
    pub change: KeyspaceChange,
}

/// The operations the front ends need. Object-safe: the server holds an `Arc<dyn Store>`.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The newest live version of `key`.
    fn get<'a>(
        &'a self,
        ctx: &'a RequestContext,
        key: Bytes,
    ) -> BoxFuture<'a, Result<Option<Entry>, StoreError>>;

    /// Several keys; the answer has one slot per key, in order.
    fn get_many<'a>(
        &'a self,
        ctx: &'a RequestContext,
        keys: Vec<Bytes>,
    ) -> BoxFuture<'a, Result<Vec<Option<Entry>>, StoreError>>;

    /// Independent point reads, one result per key in order: what a pipelined run of GETs
    /// needs (a failing key fails only its own slot, unlike [`Store::get_many`]). By
    /// default one [`Store::get`] after another, exactly as the GETs would run one by one.
    fn get_each<'a>(
        &'a self,
        ctx: &'a RequestContext,
        keys: &'a [Bytes],
    ) -> BoxFuture<'a, Vec<Result<Option<Entry>, StoreError>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                out.push(self.get(ctx, k.clone()).await);
            }
            out
        })
    }

    /// Applies mutations in order, atomically (see the module laws); one outcome per mutation.
    fn write<'a>(
        &'a self,
        ctx: &'a RequestContext,
        mutations: Vec<Mutation>,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StoreError>>;

    /// Up to about `count` live entries with token >= `from`, ascending by (token, key). May
    /// return fewer (even none) with a `next` cursor when it skipped many deleted cells.
    fn scan<'a>(
        &'a self,
        ctx: &'a RequestContext,
        from: Token,
        count: usize,
    ) -> BoxFuture<'a, Result<ScanPage, StoreError>>;

    /// How many live keys the keyspace holds (exact on one node; may be an estimate in a
    /// cluster).
    fn count_keys<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// The current wall-clock time in ms, as the store judges expiry (TTL replies use it).
    fn now_ms(&self) -> u64;

    /// Makes everything acknowledged so far durable and stops taking writes (shutdown).
    fn shutdown(&self) -> Result<(), StoreError>;

    /// Counters for INFO, as `(section, name, value)` lines.
    fn info(&self) -> Vec<(&'static str, String, String)>;

    /// Live keyspaces, by name. By default only `default`.
    fn keyspaces(&self) -> Vec<KeyspaceInfo> {
        vec![KeyspaceInfo {
            name: "default".into(),
            strategy: ReplicationStrategy::Simple { rf: 1 },
            default_consistency: None,
            options: KeyspaceOptions::default(),
        }]
    }

    /// Creates a keyspace (cluster-wide in a cluster).
    fn create_keyspace<'a>(&'a self, spec: KeyspaceSpec) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = spec;
        Box::pin(std::future::ready(Err(StoreError::Invalid(
            "this store cannot create keyspaces".into(),
        ))))
    }

    /// Changes a keyspace's replication and default level (cluster-wide in a cluster).
    fn alter_keyspace<'a>(&'a self, spec: KeyspaceAlter) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = spec;
        Box::pin(std::future::ready(Err(StoreError::Invalid(
            "keyspaces of a node that runs alone have one replica and cannot be altered".into(),
        ))))
    }

    /// Drops a keyspace and its data (cluster-wide in a cluster). `default` stays.
    fn drop_keyspace<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = name;
        Box::pin(std::future::ready(Err(StoreError::Invalid(
            "this store cannot drop keyspaces".into(),
        ))))
    }

    /// The level a new connection uses on `keyspace` until it says `CONSISTENCY <level>`.
    fn default_consistency(&self, keyspace: &str) -> ConsistencyLevel {
        let _ = keyspace;
        ConsistencyLevel::One
    }

    /// The cluster node coordinating this store's requests, when the node is a cluster member
    /// (ring and membership commands read it).
    fn cluster_node(&self) -> Option<&Arc<Node>> {
        None
    }
}

/// The engine's INFO lines (memtables, commit log, flushes, compactions), shared by every
/// store that sits on a local engine.
pub fn engine_info(engine: &hearsay_storage::Engine) -> Vec<(&'static str, String, String)> {
    let s = engine.stats();
    vec![
        (
            "memory",
            "memtable_bytes".into(),
            s.memtable_bytes_total.to_string(),
        ),
        (
            "persistence",
            "commitlog_segments".into(),
            s.commitlog_segments.to_string(),
        ),
        (
            "persistence",
            "commitlog_syncs".into(),
            s.commitlog_syncs.to_string(),
        ),
        ("persistence", "flushes".into(), s.flushes.to_string()),
        (
            "persistence",
            "compactions".into(),
            s.compactions.to_string(),
        ),
        (
            "persistence",
            "write_stalls".into(),
            s.write_stalls.to_string(),
        ),
        (
            "persistence",
            "storage_poisoned".into(),
            u8::from(s.poisoned.is_some()).to_string(),
        ),
    ]
}

/// The cell a mutation writes: a value (with optional expiry) or a tombstone (`value: None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCell {
    pub value: Option<Bytes>,
    pub expires_at_ms: Option<u64>,
}

/// Evaluates one mutation against the newest live version, as every store implementation
/// must: returns the outcome and, when it applied, the cell to write. Pure, so the single-node
/// writer, the test double and a coordinator share one definition of the command semantics.
pub fn evaluate(current: Option<&Entry>, m: &Mutation, now_ms: u64) -> (Outcome, Option<NewCell>) {
    let previous = current.cloned();
    if !m.condition.holds(current) {
        return (
            Outcome {
                applied: false,
                previous,
            },
            None,
        );
    }
    let cell = match &m.action {
        Action::Put { value, expiry } => {
            let expires_at_ms = match expiry {
                Expiry::Never => None,
                Expiry::AtMs(at) => Some(*at),
                Expiry::Keep => current.and_then(|e| e.expires_at_ms),
            };
            if expires_at_ms.is_some_and(|at| at <= now_ms) {
                // Already expired when written: store what a reader would see, a delete.
                NewCell {
                    value: None,
                    expires_at_ms: None,
                }
            } else {
                NewCell {
                    value: Some(value.clone()),
                    expires_at_ms,
                }
            }
        }
        Action::Delete => NewCell {
            value: None,
            expires_at_ms: None,
        },
        Action::SetExpiry(at) => match current {
            // Conditions other than Always/Absent imply presence; an expiry change of a
            // missing key does nothing.
            None => {
                return (
                    Outcome {
                        applied: false,
                        previous,
                    },
                    None,
                );
            }
            Some(_) if at.is_some_and(|at| at <= now_ms) => NewCell {
                value: None,
                expires_at_ms: None,
            },
            Some(e) => NewCell {
                value: Some(e.value.clone()),
                expires_at_ms: *at,
            },
        },
    };
    (
        Outcome {
            applied: true,
            previous,
        },
        Some(cell),
    )
}

/// What a key's newest cell means to a client at `now_ms`.
pub fn live_entry(value: Option<&Bytes>, expires_at_ms: Option<u64>, now_ms: u64) -> Option<Entry> {
    let value = value?;
    if expires_at_ms.is_some_and(|at| at <= now_ms) {
        return None;
    }
    Some(Entry {
        value: value.clone(),
        expires_at_ms,
    })
}

/// Encodes a scan position as a Redis cursor. Clients (redis-py, redis-rs) parse cursors as
/// unsigned 64-bit integers and stop at 0, so the cursor is the next token shifted into
/// `u64` order: token `i64::MIN` (never a key's token, see [`Token`]) is 0, which means both
/// "start" and "done" exactly as in Redis.
pub fn cursor_of(next: Option<Token>) -> u64 {
    match next {
        None => 0,
        Some(t) => (t.0 as u64) ^ (1 << 63),
    }
}

/// The inverse of [`cursor_of`]: where a scan resumes.
pub fn token_of_cursor(cursor: u64) -> Token {
    Token((cursor ^ (1 << 63)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: &str, exp: Option<u64>) -> Entry {
        Entry {
            value: Bytes::copy_from_slice(v.as_bytes()),
            expires_at_ms: exp,
        }
    }

    #[test]
    fn cursor_round_trips_and_orders() {
        assert_eq!(token_of_cursor(0), Token::MIN);
        for t in [i64::MIN + 1, -5, 0, 5, i64::MAX] {
            assert_eq!(token_of_cursor(cursor_of(Some(Token(t)))), Token(t));
        }
        assert!(cursor_of(Some(Token(-1))) < cursor_of(Some(Token(1))));
    }

    #[test]
    fn expiry_conditions_follow_redis7() {
        let persistent = entry("v", None);
        let volatile = entry("v", Some(1_000));
        assert!(Condition::ExpiryLess(5).holds(Some(&persistent)));
        assert!(!Condition::ExpiryGreater(5).holds(Some(&persistent)));
        assert!(Condition::ExpiryGreater(2_000).holds(Some(&volatile)));
        assert!(!Condition::ExpiryGreater(1_000).holds(Some(&volatile)));
        assert!(!Condition::Present.holds(None));
        assert!(Condition::Absent.holds(None));
    }

    #[test]
    fn evaluate_put_keep_ttl_and_past_expiry() {
        let cur = entry("old", Some(10_000));
        let m = Mutation {
            key: Bytes::from_static(b"k"),
            want_previous: true,
            condition: Condition::Always,
            action: Action::Put {
                value: Bytes::from_static(b"new"),
                expiry: Expiry::Keep,
            },
        };
        let (o, c) = evaluate(Some(&cur), &m, 5_000);
        assert!(o.applied);
        assert_eq!(o.previous, Some(cur.clone()));
        assert_eq!(c.unwrap().expires_at_ms, Some(10_000));
        let m = Mutation {
            key: Bytes::from_static(b"k"),
            want_previous: false,
            condition: Condition::Present,
            action: Action::SetExpiry(Some(4_000)),
        };
        let (o, c) = evaluate(Some(&cur), &m, 5_000);
        assert!(o.applied);
        assert_eq!(c.unwrap().value, None, "expiry in the past deletes");
        let (o, c) = evaluate(None, &m, 5_000);
        assert!(!o.applied && c.is_none());
    }
}
