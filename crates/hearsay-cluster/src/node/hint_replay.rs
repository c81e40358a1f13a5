//! The hint replay worker: drives the sans-IO [`crate::hints::HintScheduler`] with the
//! targets gossip shows UP, sends each batch as `Mutate`s, acknowledges delivered hints in
//! the store, and keeps the store's periodic fsync.

use super::Inner;
use crate::hints::{HintAction, ReplayResult};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Longest the worker sleeps between looks at gossip, in ms: a target that comes back UP is
/// noticed within this (gossip changes do not wake the worker directly).
const POLL_INTERVAL_MS: u64 = 200;

pub(crate) async fn run(inner: Arc<Inner>) {
    let Some(store) = inner.hints.clone() else {
        return;
    };
    let sync_every = Duration::from_millis(inner.config.hints.sync_interval_ms.max(100));
    let mut last_sync = tokio::time::Instant::now();
    loop {
        let view = inner.current_view();
        // A target whose storage refuses writes (it says so in gossip) is not replayed to
        // until it takes writes again: every attempt would fail.
        let up = view
            .up
            .iter()
            .copied()
            .filter(|n| *n != inner.id && !view.unfit.contains(n))
            .collect();
        let pending: BTreeMap<_, _> = store
            .targets_with_hints()
            .into_iter()
            .map(|t| (t, store.pending(t).1))
            .collect();
        let now = inner.clock.monotonic();
        let actions = inner.hint_scheduler.lock().poll(now, &up, &pending);
        for HintAction::Replay { target, max_bytes } in actions {
            let this = inner.clone();
            let store = store.clone();
            let addr = view.addr_of(target);
            tokio::spawn(async move {
                let result = replay_one(&this, &store, target, addr, max_bytes).await;
                if matches!(result, ReplayResult::Ok { .. }) {
                    this.counters.hint_replays_ok.fetch_add(1, Relaxed);
                } else {
                    this.counters.hint_replays_failed.fetch_add(1, Relaxed);
                }
                let now = this.clock.monotonic();
                this.hint_scheduler
                    .lock()
                    .on_replay_result(target, now, result);
                this.hint_wake.notify_one();
            });
        }
        if last_sync.elapsed() >= sync_every {
            last_sync = tokio::time::Instant::now();
            let s = store.clone();
            let _ = tokio::task::spawn_blocking(move || s.sync()).await;
        }
        let wake_in = inner
            .hint_scheduler
            .lock()
            .next_wakeup()
            .map(|t| t.saturating_duration_since(inner.clock.monotonic()))
            .unwrap_or(Duration::MAX)
            .min(Duration::from_millis(POLL_INTERVAL_MS));
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = inner.hint_wake.notified() => {}
            _ = tokio::time::sleep(wake_in) => {}
        }
    }
}

async fn replay_one(
    inner: &Arc<Inner>,
    store: &Arc<crate::hints::HintStore>,
    target: hearsay_types::NodeId,
    addr: Option<std::net::SocketAddr>,
    max_bytes: u64,
) -> ReplayResult {
    let s = store.clone();
    let batch = match tokio::task::spawn_blocking(move || s.replay_batch(target, max_bytes)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::warn!(%target, error = %e, "cannot read hints");
            return ReplayResult::Err;
        }
        Err(_) => return ReplayResult::Err,
    };
    let Some(last) = batch.last().map(|h| h.hint_id) else {
        return ReplayResult::Ok {
            acked_id: 0,
            bytes: 0,
        };
    };
    let timeout = Duration::from_millis(inner.config.write_timeout_ms);
    let mut bytes = 0u64;
    for hint in &batch {
        if inner.schema.lock().get(&hint.keyspace).is_none() {
            // The keyspace was dropped since: nothing to deliver.
            continue;
        }
        bytes += hint
            .cells
            .iter()
            .map(|(k, c)| (k.key.len() + c.value_len()) as u64)
            .sum::<u64>();
        if let Err(reason) = inner
            .send_mutation(
                target,
                addr,
                hint.keyspace.clone(),
                &hint.cells,
                timeout,
                false,
            )
            .await
        {
            tracing::debug!(%target, %reason, "hint replay failed; will retry");
            return ReplayResult::Err;
        }
        inner.counters.hints_replayed.fetch_add(1, Relaxed);
    }
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.ack(target, last)).await {
        Ok(Ok(())) => ReplayResult::Ok {
            acked_id: last,
            bytes,
        },
        _ => ReplayResult::Err,
    }
}
