//! Helpers shared by the RPC integration tests.
#![allow(dead_code)]

use hearsay_cluster::rpc::{
    ClusterSecret, Identity, Registry, RpcClient, RpcConfig, RpcContext, RpcServer,
};
use hearsay_types::{Hlc, NodeId, SystemClock};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

pub const CLUSTER: &str = "test-cluster";
pub const SECRET: &str = "correct horse battery staple";

pub fn identity(node: u128, cluster: &str, secret: &str) -> Identity {
    Identity {
        node_id: NodeId(node << 96 | node),
        cluster_name: cluster.to_string(),
        secret: ClusterSecret::new(secret.as_bytes()),
    }
}

pub fn context(node: u128, cluster: &str, secret: &str, config: RpcConfig) -> Arc<RpcContext> {
    RpcContext::new(
        identity(node, cluster, secret),
        config,
        Arc::new(Hlc::new(Arc::new(SystemClock))),
    )
    .expect("valid config")
}

/// A config with short timeouts, so failure paths finish quickly in tests. The backoff is
/// long enough (200..400 ms before the first redial) that a test can observe "failing fast
/// while backing off" even on a loaded machine, and short enough that reconnect tests take
/// well under a second.
pub fn fast_config() -> RpcConfig {
    RpcConfig {
        backoff_base_ms: 400,
        backoff_max_ms: 800,
        connect_timeout_ms: 500,
        handshake_timeout_ms: 1_000,
        ..RpcConfig::default()
    }
}

pub async fn server(node: u128, registry: Registry) -> RpcServer {
    server_with(context(node, CLUSTER, SECRET, fast_config()), registry).await
}

pub async fn server_with(ctx: Arc<RpcContext>, registry: Registry) -> RpcServer {
    RpcServer::bind(ctx, SocketAddr::from(([127, 0, 0, 1], 0)), registry)
        .await
        .expect("bind loopback")
}

pub fn client(node: u128) -> RpcClient {
    RpcClient::new(context(node, CLUSTER, SECRET, fast_config()))
}

/// Polls `cond` every few milliseconds until it holds; panics with `what` after `limit`.
/// Used instead of sleeping for a guessed duration.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Requests that block in their handler until the test releases them by id.
#[derive(Clone, Default)]
pub struct Gates {
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>,
}

impl Gates {
    /// Parks the caller until `release(id)`; returns whether it was released (false if the
    /// gate was dropped).
    pub async fn park(&self, id: u64) -> bool {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(id, tx);
        rx.await.is_ok()
    }
    pub fn parked(&self) -> usize {
        self.waiting.lock().len()
    }
    pub fn is_parked(&self, id: u64) -> bool {
        self.waiting.lock().contains_key(&id)
    }
    pub fn release(&self, id: u64) {
        let tx = self.waiting.lock().remove(&id).expect("request parked");
        let _ = tx.send(());
    }
}
