//! Internode RPC over TCP.
//!
//! Layers, bottom up:
//! - [`frame`]: the sans-IO v1 frame codec (length, version, kind, request id, deadline, HLC,
//!   CRC32C, postcard body), bounded before it allocates.
//! - [`handshake`]: the sans-IO mutual challenge–response that proves the cluster secret.
//! - [`message`]: the [`Rpc`] trait (each request names its response type) and the server's
//!   [`Registry`] of handlers by method id.
//! - [`RpcClient`] / [`RpcServer`]: the tokio drivers.
//! - [`RpcError`]: the error model (the quorum errors clients see are the coordinator's,
//!   in `crate::quorum`).
//!
//! The wire format, limits and error model are described in `docs/rpc.md`.
//!
//! Adding a message for the coordinator:
//!
//! ```ignore
//! #[derive(Serialize, Deserialize)]
//! pub struct Mutation { /* ... */ }
//! impl Rpc for Mutation {
//!     const METHOD: MethodId = 16;   // next free id from docs/rpc.md's table
//!     const NAME: &'static str = "Mutation";
//!     type Response = MutationAck;
//! }
//! registry.register_fn::<Mutation, _, _>(|ctx, m| async move { /* apply */ Ok(MutationAck) })?;
//! let ack: MutationAck = client.call(replica_addr, &mutation, timeout).await?;
//! ```

mod client;
mod config;
mod conn;
mod error;
pub mod frame;
pub mod handshake;
pub mod message;
mod server;
mod stats;
pub mod transport;
pub mod wire_bytes;

pub use client::{MAX_CALL_TIMEOUT, RpcClient};
pub use config::{
    ConfigError, MAX_CONCURRENT_REQUESTS_PER_CONNECTION, MAX_CONNECTIONS,
    MAX_HANDSHAKE_FRAME_BYTES, MAX_IN_FLIGHT_PER_PEER, RpcConfig,
};
pub use conn::RpcContext;
pub use error::{RpcError, RpcErrorKind};
pub use frame::{FRAME_VERSION, MAX_FRAME_BYTES, RejectReason};
pub use handshake::{ClusterSecret, Identity};
pub use message::{
    CallContext, FIRST_USER_METHOD, Handler, HandlerError, MethodId, Ping, Pong, Registry, Rpc,
};
pub use server::RpcServer;
pub use stats::{
    OffsetSample, PeerClock, PeerClocks, PeerStats, PeerStatsSnapshot, ServerPeerStats,
    ServerPeerStatsSnapshot, ServerStats, ServerStatsSnapshot,
};
pub use transport::{MemNetwork, Transport};
