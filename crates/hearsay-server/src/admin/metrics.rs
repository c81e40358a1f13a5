//! `/metrics`: every counter and queue of the node in the OpenMetrics text format.
//!
//! A fresh `prometheus_client` registry is filled from snapshots on each scrape (the
//! server, the engine and the cluster node keep their own atomics; copying them per scrape
//! costs microseconds and keeps one source of truth). Names: `hearsay_<part>_<what>`, units
//! last; counters end in `_total` (added by the encoder).

use super::AdminState;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::sync::atomic::AtomicU64;

/// The exposition format `encode` writes (it ends with `# EOF`).
pub(super) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// Registers metrics with already-known values.
struct Scrape {
    reg: Registry,
}

impl Scrape {
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        let c: Counter = Counter::default();
        c.inc_by(v);
        self.reg.register(name, help, c);
    }

    fn gauge(&mut self, name: &str, help: &str, v: i64) {
        let g: Gauge = Gauge::default();
        g.set(v);
        self.reg.register(name, help, g);
    }

    fn gauge_u(&mut self, name: &str, help: &str, v: u64) {
        self.gauge(name, help, i64::try_from(v).unwrap_or(i64::MAX));
    }

    /// One gauge per label set; nothing is registered for an empty list (a family without
    /// samples only adds noise).
    fn gauge_family(&mut self, name: &str, help: &str, rows: Vec<(Labels, i64)>) {
        if rows.is_empty() {
            return;
        }
        let f: Family<Labels, Gauge> = Family::default();
        for (labels, v) in rows {
            f.get_or_create(&labels).set(v);
        }
        self.reg.register(name, help, f);
    }

    fn gauge_family_f(&mut self, name: &str, help: &str, rows: Vec<(Labels, f64)>) {
        if rows.is_empty() {
            return;
        }
        let f: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
        for (labels, v) in rows {
            f.get_or_create(&labels).set(v);
        }
        self.reg.register(name, help, f);
    }

    fn counter_family(&mut self, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
        if rows.is_empty() {
            return;
        }
        let f: Family<Labels, Counter> = Family::default();
        for (labels, v) in rows {
            f.get_or_create(&labels).inc_by(v);
        }
        self.reg.register(name, help, f);
    }
}

fn label(k: &str, v: impl Into<String>) -> Labels {
    vec![(k.to_string(), v.into())]
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The text of one scrape.
pub(super) fn render(state: &AdminState) -> Result<String, std::fmt::Error> {
    let mut s = Scrape {
        reg: Registry::default(),
    };
    server(&mut s, state);
    storage(&mut s, state);
    if let Some(node) = &state.cluster {
        cluster(&mut s, &node.stats(), &node.status());
        repair(&mut s, &node.repair_stats());
        if let Some(text) = node.membership_json() {
            gossip(&mut s, &text);
        }
    }
    let mut out = String::new();
    encode(&mut out, &s.reg)?;
    Ok(out)
}

fn server(s: &mut Scrape, state: &AdminState) {
    let srv = &state.server;
    let st = &srv.stats;
    let g = |c| st.get(c);
    s.gauge_u(
        "hearsay_server_uptime_seconds",
        "Seconds since the server started",
        srv.started.elapsed().as_secs(),
    );
    s.gauge_u(
        "hearsay_server_connected_clients",
        "Client connections open now",
        g(&st.connected_clients),
    );
    if let Some(io) = crate::server::io_threads::IoThreads::running() {
        let per = io
            .connections()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (label("thread", i.to_string()), clamp(n)))
            .collect();
        s.gauge_family(
            "hearsay_server_io_thread_clients",
            "Client connections served by each event-loop thread",
            per,
        );
    }
    if crate::server::io_threads::IoThreads::running().is_some() {
        let bp = &crate::server::busy_poll::STATS;
        let ld = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        s.gauge_u(
            "hearsay_server_busy_poll_max_us",
            "Longest busy-poll window of an idle event loop (0: loops never poll)",
            ld(&bp.max_us),
        );
        let counters: [(&str, &str, &AtomicU64); 5] = [
            (
                "hearsay_server_busy_poll_windows",
                "Busy-poll windows started by idle event loops",
                &bp.windows,
            ),
            (
                "hearsay_server_busy_poll_caught_reads",
                "Client reads that completed during a busy-poll window (at most the wake-ups saved)",
                &bp.caught,
            ),
            (
                "hearsay_server_busy_poll_timeouts",
                "Busy-poll windows that ran out, after which the event loop slept",
                &bp.timeouts,
            ),
            (
                "hearsay_server_busy_poll_yielded",
                "Busy-poll windows cut short because a connection waited on another thread",
                &bp.yielded,
            ),
            (
                "hearsay_server_busy_poll_microseconds",
                "Time event loops spent busy-polling, in all",
                &bp.polled_us,
            ),
        ];
        for (name, help, c) in counters {
            s.counter(name, help, ld(c));
        }
    }
    if let Some(rp) = crate::store::read_pool::ReadPool::running() {
        s.gauge_u(
            "hearsay_read_pool_threads",
            "Threads that run multi-key reads off the event loops",
            rp.threads() as u64,
        );
        s.gauge_u(
            "hearsay_read_pool_queued",
            "Multi-key reads waiting for a reader thread",
            rp.queued() as u64,
        );
        s.counter(
            "hearsay_read_pool_runs",
            "Multi-key reads run by the reader threads",
            rp.stats
                .offloaded
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        s.counter(
            "hearsay_read_pool_full_inline_runs",
            "Multi-key reads run on the event loop because the reader queue was full",
            rp.stats
                .queue_full
                .load(std::sync::atomic::Ordering::Relaxed),
        );
    }
    s.gauge(
        "hearsay_cluster_mode",
        "1 when the node runs as a cluster member, 0 in single-node mode",
        i64::from(state.cluster.is_some()),
    );
    let counters: [(&str, &str, &AtomicU64); 10] = [
        (
            "hearsay_server_connections_received",
            "Client connections accepted",
            &st.connections_received,
        ),
        (
            "hearsay_server_connections_rejected",
            "Client connections refused (maxclients)",
            &st.connections_rejected,
        ),
        (
            "hearsay_server_commands_processed",
            "Commands executed",
            &st.commands_processed,
        ),
        (
            "hearsay_server_net_input_bytes",
            "Bytes read from clients",
            &st.net_input_bytes,
        ),
        (
            "hearsay_server_net_output_bytes",
            "Bytes written to clients",
            &st.net_output_bytes,
        ),
        (
            "hearsay_server_protocol_errors",
            "Connections closed on a protocol error",
            &st.protocol_errors,
        ),
        (
            "hearsay_server_idle_disconnects",
            "Clients closed by the idle timeout",
            &st.idle_disconnects,
        ),
        (
            "hearsay_server_slow_request_disconnects",
            "Clients closed for not completing a request in time",
            &st.slow_request_disconnects,
        ),
        (
            "hearsay_server_output_limit_disconnects",
            "Clients closed for exceeding the output buffer limit",
            &st.output_limit_disconnects,
        ),
        (
            "hearsay_server_request_limit_disconnects",
            "Clients closed for exceeding a request size limit",
            &st.request_limit_disconnects,
        ),
    ];
    for (name, help, c) in counters {
        s.counter(name, help, g(c));
    }
    // The store's own figures (the write queue and its groups, ...): names and meanings
    // belong to the store implementation, so they are served as one labelled family.
    let rows = srv
        .store
        .info()
        .into_iter()
        .filter_map(|(section, name, value)| {
            let v = value.parse::<f64>().ok()?;
            Some((
                vec![
                    ("section".to_string(), section.to_string()),
                    ("field".to_string(), name),
                ],
                v,
            ))
        })
        .collect();
    s.gauge_family_f(
        "hearsay_store_info",
        "The store's INFO figures (write queue, groups, ...) by section and field",
        rows,
    );
}

fn storage(s: &mut Scrape, state: &AdminState) {
    let e = state.engine.stats();
    let ks = |f: &dyn Fn(&hearsay_storage::KeyspaceStats) -> u64| -> Vec<(Labels, i64)> {
        e.keyspaces
            .iter()
            .map(|(name, k)| (label("keyspace", name.clone()), clamp(f(k))))
            .collect()
    };
    s.gauge_family(
        "hearsay_storage_memtable_bytes",
        "Bytes in the active memtable and those awaiting flush",
        ks(&|k| k.memtable_bytes),
    );
    s.gauge_family(
        "hearsay_storage_flush_queue_memtables",
        "Memtables waiting for the flush worker",
        ks(&|k| k.memtables_awaiting_flush),
    );
    s.gauge_family(
        "hearsay_storage_sstables",
        "Live SSTables",
        ks(&|k| k.sstable_count),
    );
    s.gauge_family(
        "hearsay_storage_sstable_bytes",
        "Bytes of live SSTables",
        ks(&|k| k.sstable_bytes),
    );
    s.gauge_family(
        "hearsay_storage_sstable_memory_bytes",
        "Memory held by SSTable indexes and bloom filters",
        ks(&|k| k.sstable_memory_bytes),
    );
    s.gauge_family(
        "hearsay_storage_bloom_bytes",
        "Bytes of SSTable bloom filters",
        ks(&|k| k.bloom_bytes),
    );
    s.gauge_family(
        "hearsay_storage_sstable_entries",
        "Cells and tombstones in SSTables",
        ks(&|k| k.sstable_entries),
    );
    s.gauge_family(
        "hearsay_storage_sstable_tombstones",
        "Tombstones in SSTables",
        ks(&|k| k.sstable_tombstones),
    );
    let per_level = e
        .keyspaces
        .iter()
        .flat_map(|(name, k)| {
            k.sstables_per_level.iter().enumerate().map(|(l, n)| {
                (
                    vec![
                        ("keyspace".to_string(), name.clone()),
                        ("level".to_string(), l.to_string()),
                    ],
                    clamp(*n),
                )
            })
        })
        .collect();
    s.gauge_family(
        "hearsay_storage_sstables_per_level",
        "Live SSTables per compaction level",
        per_level,
    );
    s.gauge_u(
        "hearsay_storage_memtable_accounted_bytes",
        "Bytes of all memtables as the write-stall budget counts them",
        e.memtable_bytes_total,
    );
    s.gauge_u(
        "hearsay_storage_commitlog_segments",
        "Commit-log segments on disk",
        e.commitlog_segments,
    );
    s.gauge(
        "hearsay_storage_poisoned",
        "1 once the engine refused further writes after an fsync failure",
        i64::from(e.poisoned.is_some()),
    );
    s.gauge(
        "hearsay_storage_background_error",
        "1 when the last flush or compaction failed",
        i64::from(e.last_background_error.is_some()),
    );
    s.gauge(
        "hearsay_storage_compaction_background_running",
        "1 while a compaction runs at idle CPU priority",
        i64::from(e.compaction_background_running),
    );
    let counters: [(&str, &str, u64); 22] = [
        (
            "hearsay_storage_user_bytes_written",
            "Key and value bytes written by clients",
            e.user_bytes_written,
        ),
        (
            "hearsay_storage_disk_bytes_written",
            "Bytes written to disk (commit log, SSTables, manifest)",
            e.disk_bytes_written,
        ),
        (
            "hearsay_storage_commitlog_bytes_written",
            "Bytes appended to the commit log",
            e.commitlog_bytes_written,
        ),
        (
            "hearsay_storage_sstable_bytes_written",
            "Bytes of SSTables written by flushes and compactions",
            e.sstable_bytes_written,
        ),
        (
            "hearsay_storage_commitlog_syncs",
            "Commit-log fsyncs",
            e.commitlog_syncs,
        ),
        (
            "hearsay_storage_commitlog_segments_deleted",
            "Commit-log segments deleted after their data was flushed",
            e.commitlog_segments_deleted,
        ),
        (
            "hearsay_storage_write_stalls",
            "Writes that waited for memtable space",
            e.write_stalls,
        ),
        (
            "hearsay_storage_write_stall_milliseconds",
            "Time writes spent stalled",
            e.write_stall_ms,
        ),
        ("hearsay_storage_flushes", "Memtable flushes", e.flushes),
        (
            "hearsay_storage_flush_errors",
            "Failed memtable flushes",
            e.flush_errors,
        ),
        (
            "hearsay_storage_compactions",
            "Compactions run",
            e.compactions,
        ),
        (
            "hearsay_storage_compaction_errors",
            "Failed compactions",
            e.compaction_errors,
        ),
        (
            "hearsay_storage_compactions_background",
            "Compactions started at idle CPU priority",
            e.compactions_background,
        ),
        (
            "hearsay_storage_compactions_promoted",
            "Idle-priority compactions promoted to normal priority (work queued behind them, or they waited 10 s)",
            e.compactions_promoted,
        ),
        (
            "hearsay_storage_compaction_bytes_read",
            "Bytes read by compactions",
            e.compaction_bytes_read,
        ),
        (
            "hearsay_storage_compaction_blocks_warmed",
            "Compaction output blocks put into the block cache because their input was cached",
            e.compaction_blocks_warmed,
        ),
        (
            "hearsay_storage_flush_blocks_warmed",
            "Blocks flushes put into the block cache as they wrote them",
            e.flush_blocks_warmed,
        ),
        (
            "hearsay_storage_compaction_bytes_written",
            "Bytes written by compactions",
            e.compaction_bytes_written,
        ),
        (
            "hearsay_storage_tombstones_purged",
            "Tombstones dropped by compaction after gc_grace",
            e.tombstones_purged,
        ),
        (
            "hearsay_storage_expired_converted",
            "Expired cells turned into tombstones by compaction",
            e.expired_converted,
        ),
        (
            "hearsay_storage_replayed_records",
            "Commit-log records replayed at start",
            e.replayed_records,
        ),
        (
            "hearsay_storage_replay_torn_tails",
            "Torn commit-log tails truncated at start",
            e.replay_torn_tails,
        ),
    ];
    for (name, help, v) in counters {
        s.counter(name, help, v);
    }
    let c = &e.block_cache;
    s.counter(
        "hearsay_storage_block_cache_hits",
        "Block cache hits",
        c.hits,
    );
    s.counter(
        "hearsay_storage_block_cache_misses",
        "Block cache misses",
        c.misses,
    );
    s.counter(
        "hearsay_storage_block_cache_inserts",
        "Blocks inserted into the cache",
        c.inserts,
    );
    s.counter(
        "hearsay_storage_block_cache_evictions",
        "Blocks evicted from the cache",
        c.evictions,
    );
    s.gauge_u(
        "hearsay_storage_block_cache_used_bytes",
        "Bytes held by the block cache",
        c.bytes_used,
    );
    s.gauge_u(
        "hearsay_storage_block_cache_capacity_bytes",
        "Block cache capacity",
        c.capacity_bytes,
    );
    let r = &e.sstable_reads;
    s.counter_family(
        "hearsay_storage_bloom_checks",
        "SSTable bloom filter checks by outcome",
        vec![
            (label("outcome", "negative"), r.bloom_negatives),
            (label("outcome", "true_positive"), r.bloom_true_positives),
            (label("outcome", "false_positive"), r.bloom_false_positives),
        ],
    );
    s.counter(
        "hearsay_storage_blocks_read",
        "SSTable blocks read from disk",
        r.blocks_read,
    );
    s.counter(
        "hearsay_storage_read_bytes",
        "SSTable bytes read from disk",
        r.bytes_read,
    );
}

/// Anti-entropy repair: the worker's counters, sessions running, and how stale the oldest
/// primary range's last repair is (what `tombstone_gc = repair` waits on).
fn repair(s: &mut Scrape, r: &hearsay_cluster::node::repair::RepairStats) {
    s.gauge_u(
        "hearsay_repair_enabled",
        "1 when the always-on repair worker runs",
        u64::from(r.enabled),
    );
    s.gauge_u(
        "hearsay_repair_budget_bytes_per_second",
        "The node-wide repair byte budget",
        r.bytes_per_sec,
    );
    s.gauge_u(
        "hearsay_repair_sessions_running",
        "Repair sessions running now",
        r.running,
    );
    s.counter("hearsay_repair_sessions", "Repair sessions run", r.sessions);
    s.counter(
        "hearsay_repair_sessions_failed",
        "Repair sessions that failed (retried later)",
        r.sessions_failed,
    );
    s.counter(
        "hearsay_repair_ranges_in_sync",
        "Ranges whose trees matched",
        r.ranges_in_sync,
    );
    s.counter(
        "hearsay_repair_ranges_out_of_sync",
        "Ranges whose trees differed",
        r.ranges_out_of_sync,
    );
    s.counter(
        "hearsay_repair_cells_compared",
        "Cells hashed into repair trees",
        r.cells_compared,
    );
    s.counter(
        "hearsay_repair_cells_moved",
        "Cells sent between replicas by repair",
        r.cells_moved,
    );
    s.counter(
        "hearsay_repair_bytes_moved",
        "Bytes of cells sent between replicas by repair",
        r.bytes_moved,
    );
    s.counter(
        "hearsay_repair_bytes_read",
        "Bytes repair read from the storage engine",
        r.bytes_read,
    );
    if let Some(age) = r.max_age_ms {
        s.gauge_u(
            "hearsay_repair_oldest_range_age_milliseconds",
            "Time since the least recently repaired primary range was repaired",
            age,
        );
    }
}

fn cluster(
    s: &mut Scrape,
    st: &hearsay_cluster::node::NodeStats,
    status: &hearsay_cluster::node::NodeStatus,
) {
    let c = &st.coordinator;
    let by_level = |m: &std::collections::BTreeMap<String, u64>| -> Vec<(Labels, u64)> {
        m.iter()
            .map(|(l, v)| (label("level", l.clone()), *v))
            .collect()
    };
    s.counter_family(
        "hearsay_coordinator_writes",
        "Writes coordinated, by consistency level",
        by_level(&c.writes_by_level),
    );
    s.counter_family(
        "hearsay_coordinator_reads",
        "Reads coordinated, by consistency level",
        by_level(&c.reads_by_level),
    );
    let counters: [(&str, &str, u64); 20] = [
        ("hearsay_coordinator_scans", "Scans coordinated", c.scans),
        (
            "hearsay_coordinator_write_unavailable",
            "Writes refused: too few replicas alive",
            c.write_unavailable,
        ),
        (
            "hearsay_coordinator_read_unavailable",
            "Reads refused: too few replicas alive",
            c.read_unavailable,
        ),
        (
            "hearsay_coordinator_write_timeouts",
            "Writes that timed out waiting for replicas",
            c.write_timeouts,
        ),
        (
            "hearsay_coordinator_read_timeouts",
            "Reads that timed out waiting for replicas",
            c.read_timeouts,
        ),
        (
            "hearsay_coordinator_write_failures",
            "Writes failed by replica errors",
            c.write_failures,
        ),
        (
            "hearsay_coordinator_read_failures",
            "Reads failed by replica errors",
            c.read_failures,
        ),
        (
            "hearsay_coordinator_digest_mismatches",
            "Reads whose replica digests disagreed",
            c.digest_mismatches,
        ),
        (
            "hearsay_coordinator_read_repairs",
            "Stale replicas sent a blocking read-repair write",
            c.read_repairs,
        ),
        (
            "hearsay_coordinator_read_repair_failures",
            "Read repairs that failed",
            c.read_repair_failures,
        ),
        (
            "hearsay_coordinator_superseded_cells",
            "Written cells replicas reported as losing to a newer version",
            c.superseded_cells,
        ),
        (
            "hearsay_coordinator_superseded_retries",
            "Writes re-sent above a newer version a replica held (a clock ran ahead)",
            c.superseded_retries,
        ),
        (
            "hearsay_coordinator_writes_refused_clock_skew",
            "Writes refused because this node's clock is off",
            c.writes_refused_clock_skew,
        ),
        (
            "hearsay_replica_future_mutations_refused",
            "Mutations refused as a replica for timestamps too far ahead of our clock",
            c.future_mutations_refused,
        ),
        (
            "hearsay_replica_mutations",
            "Mutations applied as a replica",
            c.replica_mutations,
        ),
        (
            "hearsay_replica_reads",
            "Reads served as a replica",
            c.replica_reads,
        ),
        (
            "hearsay_schema_pulls",
            "Schema pulls from peers with another schema version",
            st.schema_pulls,
        ),
        (
            "hearsay_schema_pull_failures",
            "Schema pulls that failed",
            st.schema_pull_failures,
        ),
        (
            "hearsay_ring_view_rebuilds",
            "Ring views rebuilt by the view worker",
            st.view_rebuilds,
        ),
        (
            "hearsay_hints_stored",
            "Hints written for replicas that missed a write",
            st.hints.stored_total,
        ),
    ];
    for (name, help, v) in counters {
        s.counter(name, help, v);
    }
    let h = &st.hints;
    s.gauge(
        "hearsay_hints_enabled",
        "1 when hinted handoff is on",
        i64::from(h.enabled),
    );
    s.gauge_u(
        "hearsay_hints_pending",
        "Undelivered hints, all targets",
        h.pending_total,
    );
    s.gauge_family(
        "hearsay_hints_pending_per_target",
        "Undelivered hints per target node",
        h.pending
            .iter()
            .map(|(t, (n, _))| (label("target", t.clone()), clamp(*n)))
            .collect(),
    );
    s.gauge_family(
        "hearsay_hints_pending_bytes",
        "Bytes of undelivered hints per target node",
        h.pending
            .iter()
            .map(|(t, (_, b))| (label("target", t.clone()), clamp(*b)))
            .collect(),
    );
    s.gauge_u(
        "hearsay_hints_disk_bytes",
        "Bytes of hint files on disk",
        h.bytes_on_disk,
    );
    s.counter(
        "hearsay_hints_delivered",
        "Hints delivered to their target",
        h.delivered_total,
    );
    s.counter_family(
        "hearsay_hints_dropped",
        "Hints dropped, by reason (the range is marked for repair)",
        h.dropped_total
            .iter()
            .map(|(r, v)| (label("reason", r.clone()), *v))
            .collect(),
    );
    s.counter(
        "hearsay_hint_replays_ok",
        "Hint replay batches acknowledged",
        h.replays_ok,
    );
    s.counter(
        "hearsay_hint_replays_failed",
        "Hint replay batches that failed",
        h.replays_failed,
    );
    s.gauge_u(
        "hearsay_hint_replay_workers_active",
        "Targets whose hints are being replayed now",
        h.replaying.len() as u64,
    );
    s.gauge_family(
        "hearsay_cluster_clock_skew_microseconds",
        "Each peer's physical clock offset from ours (their wall clock minus ours), measured by RPC pings",
        st.clock_skew_us
            .iter()
            .map(|(p, v)| (label("peer", p.clone()), *v))
            .collect(),
    );
    s.gauge_family(
        "hearsay_cluster_hlc_lead_microseconds",
        "How far each peer's HLC readings run ahead of our wall clock",
        st.hlc_lead_us
            .iter()
            .map(|(p, v)| (label("peer", p.clone()), *v))
            .collect(),
    );
    s.gauge(
        "hearsay_clock_skewed",
        "1 when this node's clock is more than the maximum offset from a majority of its peers (it refuses to coordinate writes)",
        i64::from(st.clock.skewed),
    );
    s.gauge(
        "hearsay_clock_median_peer_offset_microseconds",
        "Median of the peers' clock offsets from ours (positive: we are behind)",
        st.clock.median_peer_offset_us,
    );
    let health_codes = st.health.codes();
    s.gauge(
        "hearsay_node_ready",
        "1 when the node coordinates requests (it heard from a peer since it started)",
        i64::from(st.health.ready),
    );
    s.gauge_family(
        "hearsay_node_unhealthy",
        "1 per health problem this node has (clock_skew, storage_poisoned, disk_full)",
        [
            hearsay_cluster::node::health::CLOCK_SKEW,
            hearsay_cluster::node::health::STORAGE_POISONED,
            hearsay_cluster::node::health::DISK_FULL,
        ]
        .iter()
        .map(|c| {
            (
                label("code", c.to_string()),
                i64::from(health_codes.contains(c)),
            )
        })
        .collect(),
    );
    // Members by their `nodetool status` code (UN, DN, UJ, ...).
    let mut codes: std::collections::BTreeMap<String, i64> = Default::default();
    for m in &status.members {
        *codes.entry(m.code.clone()).or_default() += 1;
    }
    s.gauge_family(
        "hearsay_cluster_members",
        "Members by status code (UN, DN, UJ, UL, ...)",
        codes
            .into_iter()
            .map(|(c, n)| (label("code", c), n))
            .collect(),
    );
    s.gauge_family(
        "hearsay_cluster_member_load_bytes",
        "Bytes stored per member, as it last announced",
        status
            .members
            .iter()
            .filter_map(|m| Some((label("node", m.node_id.clone()), clamp(m.load_bytes?))))
            .collect(),
    );
}

/// Gossip's counters and per-peer phi, from the membership view's JSON (the server does not
/// depend on the gossip crate; the view is its public shape).
fn gossip(s: &mut Scrape, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let m = &v["metrics"];
    let n = |k: &str| m[k].as_u64().unwrap_or(0);
    let counters = [
        ("hearsay_gossip_rounds", "Gossip rounds run", "rounds"),
        (
            "hearsay_gossip_packets_in",
            "Gossip packets accepted",
            "packets_in",
        ),
        (
            "hearsay_gossip_packets_out",
            "Gossip packets sent",
            "packets_out",
        ),
        (
            "hearsay_gossip_bytes_in",
            "Gossip bytes accepted",
            "bytes_in",
        ),
        ("hearsay_gossip_bytes_out", "Gossip bytes sent", "bytes_out"),
        (
            "hearsay_gossip_deltas_truncated",
            "Gossip deltas cut short by the byte budget",
            "deltas_truncated",
        ),
        (
            "hearsay_gossip_deltas_deferred",
            "Gossip deltas left for a later round by the byte budget",
            "deltas_deferred",
        ),
        (
            "hearsay_gossip_stale_ignored",
            "Stale gossip ignored",
            "stale_ignored",
        ),
        (
            "hearsay_gossip_rumors_evicted",
            "Rumors evicted from a full rumor queue",
            "rumors_evicted",
        ),
        (
            "hearsay_gossip_events_dropped",
            "Gossip events dropped because nobody drained them",
            "events_dropped",
        ),
        (
            "hearsay_gossip_local_suspicions",
            "Suspicions raised by the local phi detector",
            "local_suspicions",
        ),
    ];
    for (name, help, key) in counters {
        s.counter(name, help, n(key));
    }
    s.gauge_u(
        "hearsay_gossip_rumors_active",
        "Rumors being spread now",
        n("rumors_active"),
    );
    let dropped = m["dropped"]
        .as_object()
        .map(|d| {
            d.iter()
                .map(|(r, v)| (label("reason", r.clone()), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    s.counter_family(
        "hearsay_gossip_packets_dropped",
        "Gossip packets dropped, by reason",
        dropped,
    );
    let members = v["members"].as_array().cloned().unwrap_or_default();
    let phi = members
        .iter()
        .filter_map(|m| {
            let id = m["node_id"].as_str()?;
            Some((label("peer", id), m["phi"].as_f64()?))
        })
        .collect();
    s.gauge_family_f(
        "hearsay_gossip_phi",
        "Phi-accrual suspicion level per watched peer",
        phi,
    );
    let mut by_liveness: std::collections::BTreeMap<String, i64> = Default::default();
    for m in &members {
        let l = m["liveness"].as_str().unwrap_or("UNKNOWN").to_string();
        *by_liveness.entry(l).or_default() += 1;
    }
    s.gauge_family(
        "hearsay_gossip_members",
        "Gossip members by liveness (UP, SUSPECT, DOWN, REMOVED)",
        by_liveness
            .into_iter()
            .map(|(l, n)| (label("liveness", l), n))
            .collect(),
    );
}
