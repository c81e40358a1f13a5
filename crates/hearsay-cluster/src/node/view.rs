//! The ring view a node routes by: rebuilt from gossip (completed by the saved ring) on
//! every gossip event and round, swapped atomically; the saved ring written when it changes;
//! the node's load announced now and then.

use super::membership::Membership;
use super::schema::Schema;
use super::{Inner, RingView};
use hearsay_gossip::StateKey;
use hearsay_gossip::driver::GossipHandle;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// How often the node announces its load in gossip, in ms (`hearsay status` shows it; it
/// need not be fresh).
const LOAD_ANNOUNCE_INTERVAL_MS: u64 = 10_000;
/// How often the saved ring is written, at most, in ms: it changes only when members join,
/// leave or restart, and it is a cache that gossip refills.
const RING_SAVE_INTERVAL_MS: u64 = 1_000;

/// Rebuilds the ring view on gossip events (coalesced) and every gossip round, announces
/// load now and then, and starts schema pulls from peers whose version differs.
pub(super) async fn view_worker(inner: Arc<Inner>, gossip: Arc<GossipHandle>) {
    let mut events = gossip.subscribe();
    let mut round = tokio::time::interval(Duration::from_millis(inner.config.gossip.interval_ms));
    round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_load = Instant::now();
    let mut last_save = Instant::now() - Duration::from_millis(RING_SAVE_INTERVAL_MS);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            e = events.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = e {
                    return;
                }
                // Coalesce a burst of events into one rebuild.
                while events.try_recv().is_ok() {}
            }
            _ = round.tick() => {}
        }
        inner.refresh_view();
        inner.check_ready();
        inner.maybe_pull_schema();
        if last_save.elapsed() >= Duration::from_millis(RING_SAVE_INTERVAL_MS) {
            last_save = Instant::now();
            inner.save_ring_if_dirty().await;
        }
        if last_load.elapsed() >= Duration::from_millis(LOAD_ANNOUNCE_INTERVAL_MS) {
            last_load = Instant::now();
            let load = inner.load_bytes();
            let _ = gossip.set_local_state(StateKey::Load, load.to_string().into_bytes());
        }
    }
}

impl Inner {
    pub(super) fn gossip(&self) -> Option<Arc<GossipHandle>> {
        self.gossip.lock().clone()
    }

    pub(crate) fn current_view(&self) -> Arc<RingView> {
        self.view.read().clone()
    }

    /// The membership to route by: gossip's, completed with the saved ring (a restarting
    /// member keeps its place; members not heard of since this node started are placed but
    /// DOWN), or the test override.
    pub(super) fn membership_now(&self) -> Membership {
        if let Some(m) = self.membership_override.lock().clone() {
            return m;
        }
        let mut m = match self.gossip() {
            Some(g) => Membership::from_gossip(&g.membership()),
            None => Membership::default(),
        };
        let mut saved = self.saved_ring.lock();
        if saved.remember(&m) {
            self.saved_ring_dirty.store(true, Relaxed);
        }
        saved.fill(&mut m, self.id);
        m
    }

    /// Saves the ring if it changed (on a blocking thread; errors are logged, the file is
    /// a cache).
    pub(super) async fn save_ring_if_dirty(self: &Arc<Self>) {
        if !self.saved_ring_dirty.swap(false, Relaxed) {
            return;
        }
        let this = self.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let ring = this.saved_ring.lock().clone();
            ring.save(&this.config.data_dir)
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!("cannot save the ring; will retry");
            self.saved_ring_dirty.store(true, Relaxed);
        }
    }

    pub(crate) fn refresh_view(&self) {
        let membership = self.membership_now();
        // Built and installed under the schema lock: a rebuild that read the schema before
        // `apply_defs` merged a keyspace must not install its view after the one that routes
        // the keyspace.
        let schema = self.schema.lock();
        self.install_view(membership, &schema);
    }

    /// Installs the view of `schema` (whose lock the caller holds, so whoever sees a keyspace
    /// in the schema finds it in the view too).
    pub(super) fn install_view(&self, membership: Membership, schema: &Schema) {
        let view = RingView::build(self.id, membership, schema);
        *self.view.write() = Arc::new(view);
        self.counters.view_rebuilds.fetch_add(1, Relaxed);
    }

    pub(super) fn load_bytes(&self) -> u64 {
        let s = self.engine.stats();
        s.memtable_bytes_total + s.keyspaces.values().map(|k| k.sstable_bytes).sum::<u64>()
    }
}
