//! Internode messages of the data path and repair (method ids 16..=23, listed in docs/rpc.md and
//! docs/cluster.md). Each names its response type ([`Rpc`]); bodies are postcard inside the
//! RPC layer's versioned, checksummed frames, which bound their size before decoding.

use super::schema::KeyspaceDef;
use crate::rpc::{MethodId, Rpc};
use serde::{Deserialize, Serialize};

/// Most cells one `Mutate` may carry: a client batch (MSET) is bounded by the front end's
/// argument limits far below this; the bound keeps one request from holding a replica's
/// write path for long.
pub const MAX_CELLS_PER_MUTATION: usize = 65_536;
/// Most cells one `ScanRange` answer carries, whatever the caller asks.
pub const MAX_SCAN_CELLS: usize = 10_000;

/// A cell on the wire: the same frozen v1 cell shape that hint records store, so a cell has
/// one serialized form whether it travels to a replica or waits on disk for one.
pub type WireCell = crate::hints::format::HintCellV1;

/// Apply cells to the replica's engine (a coordinator's write, a read repair or a hint).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mutate {
    pub keyspace: String,
    pub cells: Vec<WireCell>,
    /// Ask the replica to report cells that lost to a newer stored version.
    pub report_superseded: bool,
}

/// A replica applied a [`Mutate`] (durably, per its sync mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutateAck {
    /// Cells that lost to a version already stored (only counted when asked).
    pub superseded: u32,
}

impl Rpc for Mutate {
    const METHOD: MethodId = 16;
    const NAME: &'static str = "Mutate";
    type Response = MutateAck;
}

/// A coordinator's write (method 20): a [`Mutate`] whose answer also says how new the
/// newest stored version that beat it is, so that the coordinator can re-send the write
/// above it (see `docs/cluster.md`, "Clocks"). `Mutate` (16) stays for hints and read
/// repair, and for peers that do not know this method.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MutateV2 {
    pub keyspace: String,
    pub cells: Vec<WireCell>,
    /// Ask the replica to report cells that lost to a newer stored version.
    pub report_superseded: bool,
}

/// Answer to [`MutateV2`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutateAckV2 {
    /// Cells that lost to a version already stored (only counted when asked).
    pub superseded: u32,
    /// The newest timestamp among the stored versions that beat a cell of this write (0
    /// when none did).
    pub newest_superseding: u64,
}

impl Rpc for MutateV2 {
    const METHOD: MethodId = 20;
    const NAME: &'static str = "MutateV2";
    type Response = MutateAckV2;
}

/// Hold a hint for `target` (method 21): a coordinator whose own replica failed to apply a
/// write (its storage refuses writes, so its own hint store likely does too) asks a peer to
/// store the hint and replay it to the coordinator once its storage takes writes again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HintFor {
    /// The node the hint is for (the sender).
    pub target: u128,
    pub keyspace: String,
    pub cells: Vec<WireCell>,
}

/// Answer to [`HintFor`]: the hint is stored (durably per the hint store's sync policy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HintForAck {}

impl Rpc for HintFor {
    const METHOD: MethodId = 21;
    const NAME: &'static str = "HintFor";
    type Response = HintForAck;
}

/// Build this replica's hash tree of a token range (method 22, repair): the root always, the
/// leaves when asked. See `crate::repair::tree`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepairTree {
    pub keyspace: String,
    /// The range `(start, end]`.
    pub start: i64,
    pub end: i64,
    /// `2^depth` leaves (at most `repair::MAX_TREE_DEPTH`).
    pub depth: u8,
    pub snapshot: crate::repair::Snapshot,
    pub with_leaves: bool,
}

/// Answer to [`RepairTree`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairTreeReply {
    pub root: u128,
    /// The leaves, when asked (else empty).
    pub leaves: Vec<u128>,
    /// Cells and key+value bytes hashed.
    pub cells: u64,
    pub bytes: u64,
}

impl Rpc for RepairTree {
    const METHOD: MethodId = 22;
    const NAME: &'static str = "RepairTree";
    type Response = RepairTreeReply;
}

/// A repair of `(start, end]` completed on every replica (method 23): each records the
/// watermark, before which the range's deletions are known to be on every replica, so that
/// with `tombstone_gc = repair` they may be purged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepairDone {
    pub keyspace: String,
    pub start: i64,
    pub end: i64,
    pub watermark_ms: u64,
}

/// Answer to [`RepairDone`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairDoneAck {}

impl Rpc for RepairDone {
    const METHOD: MethodId = 23;
    const NAME: &'static str = "RepairDone";
    type Response = RepairDoneAck;
}

/// Read one key: its full cell, or only the cell's digest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Read {
    pub keyspace: String,
    pub token: i64,
    pub key: Vec<u8>,
    pub digest_only: bool,
}

/// Answer to [`Read`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadReply {
    /// The stored cell (tombstones included), or nothing.
    Data(Option<WireCell>),
    /// `quorum::cell_digest` of the stored cell.
    Digest(u64),
}

impl Rpc for Read {
    const METHOD: MethodId = 17;
    const NAME: &'static str = "Read";
    type Response = ReadReply;
}

/// Ask a peer for its keyspace definitions (when its gossiped schema version differs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SchemaPull {}

/// Answer to [`SchemaPull`]: every definition, dropped ones included.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SchemaReply {
    pub defs: Vec<KeyspaceDef>,
}

impl Rpc for SchemaPull {
    const METHOD: MethodId = 18;
    const NAME: &'static str = "SchemaPull";
    type Response = SchemaReply;
}

/// Read stored cells with tokens in `[from, to]`, ascending by `(token, key)`, at most about
/// `limit` (a page never ends inside a token).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScanRange {
    pub keyspace: String,
    pub from: i64,
    pub to: i64,
    pub limit: u32,
}

/// Answer to [`ScanRange`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScanReply {
    pub cells: Vec<WireCell>,
    /// Where to continue within the range (inclusive), when the page filled up.
    pub next: Option<i64>,
}

impl Rpc for ScanRange {
    const METHOD: MethodId = 19;
    const NAME: &'static str = "ScanRange";
    type Response = ScanReply;
}
