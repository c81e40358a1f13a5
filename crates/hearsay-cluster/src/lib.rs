//! A Hearsay node: internode RPC, coordinator, hinted handoff, read repair, keyspaces, HLC.
//!
//! This crate turns single nodes into a cluster. The internode RPC layer, [`rpc`] (contract
//! in `docs/rpc.md`), moves every message between nodes:
//! length-prefixed, versioned, checksummed frames over TCP (or an in-memory network seam for
//! tests), a mutual handshake that proves the cluster secret without sending it, typed
//! request/response messages multiplexed on one connection per peer plus a bulk lane,
//! deadlines on every call, bounded in-flight work on both sides, keepalives, reconnection
//! with capped jittered backoff, per-peer counters, and peer clock offsets (physical, by
//! ping, and HLC leads). The pure consistency core ([`quorum`]: how many answers a level needs,
//! write tracking, read resolution, blocking read repair), hinted handoff ([`hints`]) and the
//! node ([`node`]: start-up, ring view, the coordinator's data path, replica handlers,
//! keyspaces, health) live beside it, built on `rpc::RpcClient` and `rpc::Registry`.
//!
//! Invariants of the RPC layer: no byte from the network can make it panic or allocate more
//! than `max_frame_bytes` for one frame (`MAX_HANDSHAKE_FRAME_BYTES` before the peer has
//! authenticated); a peer's HLC reading is observed only after it proved the cluster secret;
//! every queue, in-flight set and connection count has a named bound.
//!
//! Dependencies: `hearsay-types` (`NodeId`, `Timestamp`, `Hlc`), `hearsay-storage`,
//! `hearsay-ring`, `hearsay-gossip`; tokio for I/O. It must not depend on the front ends
//! (`hearsay-server`, the binary) or anything above it in the stack; `rpc` itself uses only
//! `hearsay-types` from the workspace.

pub mod hints;
pub mod node;
pub mod quorum;
pub mod repair;
pub mod rpc;
