//! hearsay-server: the front ends of a Hearsay node: the RESP (Redis protocol) server, node
//! configuration, and (later) the HTTP admin API and metrics.
//!
//! Layers, each usable alone: `resp` (pure protocol code over byte slices: request parser,
//! reply encoder, a general value decoder), `cmd` (command semantics over the [`store::Store`]
//! trait), `server` (the tokio driver: connections, limits, shutdown), `config` (the validated
//! [`config::NodeConfig`]), and `node` (wiring the above to a storage engine).
//!
//! Invariants: a connection's memory is bounded by the `[limits]` settings whatever the
//! client sends; untrusted bytes never cause a panic; the RESP and command layers never touch
//! the storage engine directly (only `store::LocalStore` does), so a cluster coordinator can
//! replace it. Must not depend on the `hearsay` binary crate.

pub mod admin;
pub mod cmd;
pub mod config;
pub mod node;
pub mod resp;
pub mod server;
pub mod store;

pub use config::NodeConfig;
pub use server::RespServer;
