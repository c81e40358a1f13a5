//! A Hearsay node: internode RPC, coordinator, hinted handoff, read repair, keyspaces, HLC.
//!
//! This crate turns single nodes into a cluster. Today it holds the internode RPC layer
//! ([`rpc`]): length-prefixed, versioned, checksummed frames over TCP, a mutual handshake
//! that proves the cluster secret without sending it, typed request/response messages
//! multiplexed on one connection per peer, deadlines on every call, bounded in-flight work on
//! both sides, reconnection with capped backoff, and per-peer counters. The coordinator
//! (consistency levels, hinted handoff, read repair), keyspaces and anti-entropy will live
//! beside it in their own modules (`coordinator/`, ...), built on `rpc::RpcClient` and
//! `rpc::Registry`.
//!
//! Invariants of the RPC layer: no byte from the network can make it panic or allocate more
//! than `max_frame_bytes` for one frame (`MAX_HANDSHAKE_FRAME_BYTES` before the peer has
//! authenticated); a peer's HLC reading is observed only after it proved the cluster secret;
//! every queue, in-flight set and connection count has a named bound.
//!
//! Dependencies: `hearsay-types` for `NodeId`, `Timestamp`, `Hlc`; tokio for I/O. It must not
//! depend on the front ends (`hearsay-server`, the binary) or anything above it in the stack.

pub mod rpc;
pub mod coordinator;
pub mod hints;
