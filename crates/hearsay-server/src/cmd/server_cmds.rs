//! Server commands: INFO, CONFIG GET, COMMAND, CLIENT, TIME.

use super::connection::{BAD_NAME, REDIS_VERSION, valid_name};
use super::{
    COMMANDS, CommandSpec, ServerState, Session, arity_ok, glob, text, unknown_subcommand,
};
use crate::config::SyncModeName;
use crate::resp::Reply;
use crate::server::busy_poll;
use crate::server::io_threads::IoThreads;
use crate::store::read_pool::ReadPool;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

const INFO_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cluster",
    "keyspace",
];

fn rss_bytes() -> u64 {
    // Linux: the second field of /proc/self/statm is resident pages.
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2}G", b / (1u64 << 30) as f64)
    } else if b >= (1 << 20) as f64 {
        format!("{:.2}M", b / (1 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}

pub async fn info(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let mut wanted: Vec<&str> = Vec::new();
    if args.len() == 1 {
        wanted.extend(INFO_SECTIONS);
    }
    for a in &args[1..] {
        let a = text(a).to_ascii_lowercase();
        if matches!(a.as_str(), "all" | "default" | "everything") {
            wanted.extend(INFO_SECTIONS);
        } else if let Some(sec) = INFO_SECTIONS.iter().find(|s| **s == a) {
            wanted.push(sec);
        }
    }
    let st = &state.stats;
    let cfg = &state.config;
    let store_info = state.store.info();
    let mut text_out = String::new();
    for sec in INFO_SECTIONS.iter().filter(|s| wanted.contains(s)) {
        if !text_out.is_empty() {
            text_out.push_str("\r\n");
        }
        let mut cap = sec.to_string();
        cap[..1].make_ascii_uppercase();
        let _ = write!(text_out, "# {cap}\r\n");
        let mut line = |k: &str, v: &dyn std::fmt::Display| {
            let _ = write!(text_out, "{k}:{v}\r\n");
        };
        match *sec {
            "server" => {
                let up = state.started.elapsed().as_secs();
                line("redis_version", &REDIS_VERSION);
                line("hearsay_version", &env!("CARGO_PKG_VERSION"));
                line("redis_mode", &"standalone");
                line("os", &std::env::consts::OS);
                line("arch_bits", &64);
                line("process_id", &std::process::id());
                line("run_id", &state.run_id);
                let port = state
                    .bound_listen
                    .lock()
                    .map_or(cfg.server.listen.port(), |a| a.port());
                line("tcp_port", &port);
                line("uptime_in_seconds", &up);
                line("uptime_in_days", &(up / 86_400));
                if let Some(io) = IoThreads::running() {
                    line("io_threads", &io.len());
                    let bp = &busy_poll::STATS;
                    line("busy_poll_max_us", &bp.max_us.load(Relaxed));
                }
            }
            "clients" => {
                line("connected_clients", &st.get(&st.connected_clients));
                line("maxclients", &cfg.server.maxclients);
                if let Some(io) = IoThreads::running() {
                    let per: Vec<String> = io.connections().iter().map(u64::to_string).collect();
                    line("io_thread_clients", &per.join(","));
                }
                line("blocked_clients", &0);
            }
            "memory" => {
                let rss = rss_bytes();
                line("used_memory", &rss);
                line("used_memory_human", &human(rss));
                line("used_memory_rss", &rss);
                line("used_memory_rss_human", &human(rss));
                line("maxmemory", &0);
                line("mem_allocator", &"libc");
            }
            "persistence" => {
                line("loading", &0);
                line("async_loading", &0);
                line("rdb_changes_since_last_save", &0);
                line("rdb_bgsave_in_progress", &0);
                line(
                    "aof_enabled",
                    &u8::from(cfg.storage.sync_mode != SyncModeName::None),
                );
                line("aof_rewrite_in_progress", &0);
                line("sync_mode", &cfg.storage.sync_mode.as_str());
            }
            "stats" => {
                if IoThreads::running().is_some() {
                    let bp = &busy_poll::STATS;
                    line("busy_poll_windows", &bp.windows.load(Relaxed));
                    line("busy_poll_caught_reads", &bp.caught.load(Relaxed));
                    line("busy_poll_timeouts", &bp.timeouts.load(Relaxed));
                    line("busy_poll_yielded", &bp.yielded.load(Relaxed));
                    line("busy_poll_us", &bp.polled_us.load(Relaxed));
                }
                if let Some(rp) = ReadPool::running() {
                    line("read_pool_threads", &rp.threads());
                    line("read_pool_queued", &rp.queued());
                    line(
                        "read_pool_runs",
                        &rp.stats
                            .offloaded
                            .load(std::sync::atomic::Ordering::Relaxed),
                    );
                    line(
                        "read_pool_full_inline_runs",
                        &rp.stats
                            .queue_full
                            .load(std::sync::atomic::Ordering::Relaxed),
                    );
                }
                line(
                    "total_connections_received",
                    &st.get(&st.connections_received),
                );
                line("total_commands_processed", &st.get(&st.commands_processed));
                line("total_net_input_bytes", &st.get(&st.net_input_bytes));
                line("total_net_output_bytes", &st.get(&st.net_output_bytes));
                line("rejected_connections", &st.get(&st.connections_rejected));
                line("total_error_replies", &0);
                line("protocol_errors", &st.get(&st.protocol_errors));
                line("idle_disconnects", &st.get(&st.idle_disconnects));
                line(
                    "slow_request_disconnects",
                    &st.get(&st.slow_request_disconnects),
                );
                line(
                    "output_limit_disconnects",
                    &st.get(&st.output_limit_disconnects),
                );
                line(
                    "request_limit_disconnects",
                    &st.get(&st.request_limit_disconnects),
                );
            }
            "replication" => {
                line("role", &"master");
                line("connected_slaves", &0);
            }
            // A cluster member's store adds its own lines (members, hints, ...).
            "cluster" if state.store.cluster_node().is_none() => {
                line("cluster_enabled", &0);
            }
            "keyspace" => {
                if let Ok(n) = state.store.count_keys(&s.ctx).await
                    && n > 0
                {
                    line("db0", &format!("keys={n},expires=0,avg_ttl=0"));
                }
            }
            _ => {}
        }
        for (section, k, v) in &store_info {
            if section == sec {
                let _ = write!(text_out, "{k}:{v}\r\n");
            }
        }
    }
    out.verbatim(&text_out);
}

/// Every parameter CONFIG GET knows, with its current value. Redis names come first
/// (clients such as redis-benchmark ask for `save` and `appendonly`), then ours.
/// A boolean setting as Redis's CONFIG GET shows one.
fn yes_no(on: bool) -> String {
    if on { "yes" } else { "no" }.into()
}

fn config_params(state: &ServerState) -> BTreeMap<&'static str, String> {
    let c = &state.config;
    let mut m = BTreeMap::new();
    let appendfsync = match c.storage.sync_mode {
        SyncModeName::Batch => "always",
        SyncModeName::Periodic => "everysec",
        SyncModeName::None => "no",
    };
    m.insert("save", String::new());
    m.insert(
        "appendonly",
        yes_no(c.storage.sync_mode != SyncModeName::None),
    );
    m.insert("appendfsync", appendfsync.into());
    m.insert("databases", "1".into());
    m.insert("maxclients", c.server.maxclients.to_string());
    m.insert("timeout", (c.server.idle_timeout_ms / 1000).to_string());
    m.insert("proto-max-bulk-len", c.limits.max_bulk_bytes.to_string());
    m.insert(
        "client-query-buffer-limit",
        c.limits.max_request_bytes.to_string(),
    );
    m.insert("bind", c.server.listen.ip().to_string());
    m.insert("port", c.server.listen.port().to_string());
    m.insert("dir", c.storage.data_dir.display().to_string());
    m.insert("requirepass", String::new());
    m.insert("listen", c.server.listen.to_string());
    m.insert("admin-listen", c.server.admin_listen.to_string());
    m.insert("cluster-listen", c.cluster.listen.to_string());
    m.insert("idle-timeout-ms", c.server.idle_timeout_ms.to_string());
    m.insert("busy-poll-us", c.server.busy_poll_us.to_string());
    m.insert(
        "shutdown-timeout-ms",
        c.server.shutdown_timeout_ms.to_string(),
    );
    m.insert("data-dir", c.storage.data_dir.display().to_string());
    m.insert("sync-mode", c.storage.sync_mode.as_str().into());
    m.insert("sync-interval-ms", c.storage.sync_interval_ms.to_string());
    m.insert(
        "memtable-size-bytes",
        c.storage.memtable_size_bytes.to_string(),
    );
    m.insert("block-cache-bytes", c.storage.block_cache_bytes.to_string());
    m.insert(
        "compaction-background-priority",
        yes_no(c.storage.compaction_background_priority),
    );
    m.insert("flush-warm-cache", yes_no(c.storage.flush_warm_cache));
    m.insert("write-batch-max", c.storage.write_batch_max.to_string());
    m.insert("write-queue-max", c.storage.write_queue_max.to_string());
    m.insert("max-bulk-bytes", c.limits.max_bulk_bytes.to_string());
    m.insert("max-args", c.limits.max_args.to_string());
    m.insert("max-inline-bytes", c.limits.max_inline_bytes.to_string());
    m.insert("max-request-bytes", c.limits.max_request_bytes.to_string());
    m.insert(
        "output-buffer-limit-bytes",
        c.limits.output_buffer_limit_bytes.to_string(),
    );
    m.insert(
        "request-timeout-ms",
        c.limits.request_timeout_ms.to_string(),
    );
    m
}

fn sub_arity_ok(spec: &CommandSpec, sub: &[u8], n: usize, out: &mut Reply) -> Option<&'static str> {
    let Some((name, arity, _, _)) = spec
        .subcommands
        .iter()
        .find(|(name, ..)| name.as_bytes().eq_ignore_ascii_case(sub))
    else {
        unknown_subcommand(out, sub, spec.name);
        return None;
    };
    if !arity_ok(*arity, n) {
        super::wrong_arity(out, &format!("{}|{}", spec.name, name));
        return None;
    }
    Some(name)
}

fn help(out: &mut Reply, lines: &[&str]) {
    out.array(lines.len());
    for l in lines {
        out.simple(l);
    }
}

fn spec_of(name: &str) -> &'static CommandSpec {
    super::COMMANDS
        .iter()
        .find(|c| c.name == name)
        .expect("the command table has this entry")
}

pub fn config(state: &ServerState, args: Vec<Bytes>, out: &mut Reply) {
    let Some(sub) = sub_arity_ok(spec_of("config"), &args[1], args.len(), out) else {
        return;
    };
    if sub == "help" {
        return help(
            out,
            &[
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern>",
                "    Return parameters matching the glob-like <pattern> and their values.",
                "HELP",
                "    Print this help.",
            ],
        );
    }
    let params = config_params(state);
    let found: Vec<(&&str, &String)> = params
        .iter()
        .filter(|(k, _)| {
            args[2..]
                .iter()
                .any(|p| glob::matches(p, k.as_bytes(), true))
        })
        .collect();
    out.map(found.len());
    for (k, v) in found {
        out.bulk(k.as_bytes());
        out.bulk(v.as_bytes());
    }
}

fn write_command_info(
    out: &mut Reply,
    full_name: &str,
    arity: i32,
    flags: &[&str],
    spec: Option<&CommandSpec>,
) {
    out.array(10);
    out.bulk(full_name.as_bytes());
    out.int(i64::from(arity));
    out.set(flags.len());
    for f in flags {
        out.simple(f);
    }
    let (fk, lk, st) = spec.map_or((0, 0, 0), |s| (s.first_key, s.last_key, s.step));
    out.int(i64::from(fk));
    out.int(i64::from(lk));
    out.int(i64::from(st));
    let cats = spec.map_or(&["@slow"][..], |s| s.categories);
    out.set(cats.len());
    for c in cats {
        out.simple(c);
    }
    out.array(0); // tips
    if fk > 0 {
        let write = flags.contains(&"write");
        out.array(1);
        out.map(3);
        out.bulk(b"flags");
        out.set(1);
        out.simple(if write { "RW" } else { "RO" });
        out.bulk(b"begin_search");
        out.map(2);
        out.bulk(b"type");
        out.bulk(b"index");
        out.bulk(b"spec");
        out.map(1);
        out.bulk(b"index");
        out.int(i64::from(fk));
        out.bulk(b"find_keys");
        out.map(2);
        out.bulk(b"type");
        out.bulk(b"range");
        out.bulk(b"spec");
        out.map(3);
        out.bulk(b"lastkey");
        out.int(if lk < 0 { -1 } else { i64::from(lk - fk) });
        out.bulk(b"keystep");
        out.int(i64::from(st));
        out.bulk(b"limit");
        out.int(0);
    } else {
        out.array(0);
    }
    match spec {
        Some(s) if !s.subcommands.is_empty() => {
            out.array(s.subcommands.len());
            for (name, arity, flags, _) in s.subcommands {
                write_command_info(out, &format!("{}|{}", s.name, name), *arity, flags, None);
            }
        }
        _ => out.array(0),
    }
}

fn write_command_doc(out: &mut Reply, s: &CommandSpec) {
    let has_subs = !s.subcommands.is_empty();
    out.map(if has_subs { 5 } else { 4 });
    for (k, v) in [
        ("summary", s.summary),
        ("since", s.since),
        ("group", s.group),
        ("complexity", s.complexity),
    ] {
        out.bulk(k.as_bytes());
        out.bulk(v.as_bytes());
    }
    if has_subs {
        out.bulk(b"subcommands");
        out.map(s.subcommands.len());
        for (name, _, _, summary) in s.subcommands {
            out.bulk(format!("{}|{}", s.name, name).as_bytes());
            out.map(3);
            out.bulk(b"summary");
            out.bulk(summary.as_bytes());
            out.bulk(b"since");
            out.bulk(s.since.as_bytes());
            out.bulk(b"group");
            out.bulk(s.group.as_bytes());
        }
    }
}

pub fn command(args: Vec<Bytes>, out: &mut Reply) {
    if args.len() == 1 {
        out.array(COMMANDS.len());
        for c in COMMANDS {
            write_command_info(out, c.name, c.arity, c.flags, Some(c));
        }
        return;
    }
    let Some(sub) = sub_arity_ok(spec_of("command"), &args[1], args.len(), out) else {
        return;
    };
    let find = |n: &[u8]| super::lookup(n);
    match sub {
        "count" => out.int(COMMANDS.len() as i64),
        "info" => {
            if args.len() == 2 {
                return command(vec![args[0].clone()], out);
            }
            out.array(args.len() - 2);
            for n in &args[2..] {
                match find(n) {
                    Some(c) => write_command_info(out, c.name, c.arity, c.flags, Some(c)),
                    None => out.null_array(),
                }
            }
        }
        "docs" => {
            let specs: Vec<&CommandSpec> = if args.len() == 2 {
                COMMANDS.iter().collect()
            } else {
                args[2..].iter().filter_map(|n| find(n)).collect()
            };
            out.map(specs.len());
            for s in specs {
                out.bulk(s.name.as_bytes());
                write_command_doc(out, s);
            }
        }
        _ => help(
            out,
            &[
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand)",
                "    Return details about all Redis commands.",
                "COUNT",
                "    Return the total number of commands in this Redis server.",
                "DOCS [<command-name> ...]",
                "    Return documentation details about multiple Redis commands.",
                "INFO [<command-name> ...]",
                "    Return details about multiple Redis commands.",
                "HELP",
                "    Print this help.",
            ],
        ),
    }
}

pub fn client(state: &ServerState, s: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let Some(sub) = sub_arity_ok(spec_of("client"), &args[1], args.len(), out) else {
        return;
    };
    match sub {
        "id" => out.int(s.info.id as i64),
        "setname" => {
            if !valid_name(&args[2]) {
                return out.error(BAD_NAME);
            }
            *s.info.name.lock() = if args[2].is_empty() {
                None
            } else {
                Some(text(&args[2]))
            };
            out.ok();
        }
        "getname" => match s.info.name.lock().as_deref() {
            Some(n) => out.bulk(n.as_bytes()),
            None => out.null(),
        },
        "setinfo" => {
            let attr = text(&args[2]).to_ascii_lowercase();
            let slot = match attr.as_str() {
                "lib-name" => &s.info.lib_name,
                "lib-ver" => &s.info.lib_ver,
                _ => return out.error(&format!("ERR Unrecognized option '{}'", text(&args[2]))),
            };
            if !valid_name(&args[3]) {
                return out.error(&format!(
                    "ERR {attr} cannot contain spaces, newlines or special characters."
                ));
            }
            *slot.lock() = if args[3].is_empty() {
                None
            } else {
                Some(text(&args[3]))
            };
            out.ok();
        }
        "info" => out.verbatim(&(s.info.list_line() + "\n")),
        "list" => {
            let mut ids: Option<Vec<u64>> = None;
            let mut type_ok = true;
            let mut j = 2;
            while j < args.len() {
                if args[j].eq_ignore_ascii_case(b"type") && j + 1 < args.len() {
                    let t = text(&args[j + 1]).to_ascii_lowercase();
                    match t.as_str() {
                        "normal" => {}
                        "master" | "replica" | "slave" | "pubsub" => type_ok = false,
                        _ => {
                            return out.error(&format!(
                                "ERR Unknown client type '{}'",
                                text(&args[j + 1])
                            ));
                        }
                    }
                    j += 2;
                } else if args[j].eq_ignore_ascii_case(b"id") && j + 1 < args.len() {
                    let mut v = Vec::new();
                    for a in &args[j + 1..] {
                        match super::parse_int(a) {
                            Some(n) if n > 0 => v.push(n as u64),
                            _ => return out.error("ERR Invalid client ID"),
                        }
                    }
                    ids = Some(v);
                    j = args.len();
                } else {
                    return out.error(super::SYNTAX_ERR);
                }
            }
            let clients: Vec<_> = state.clients.lock().values().cloned().collect();
            let mut listing = String::new();
            for c in clients
                .iter()
                .filter(|c| type_ok && ids.as_ref().is_none_or(|ids| ids.contains(&c.id)))
            {
                listing.push_str(&c.list_line());
                listing.push('\n');
            }
            out.verbatim(&listing);
        }
        _ => help(
            out,
            &[
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ID",
                "    Return the ID of the current connection.",
                "GETNAME",
                "    Return the name of the current connection.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "SETINFO <option> <value>",
                "    Set client meta attributes (LIB-NAME, LIB-VER).",
                "LIST [TYPE <type>] [ID <id> ...]",
                "    Return information about client connections.",
                "INFO",
                "    Return information about the current client connection.",
                "HELP",
                "    Print this help.",
            ],
        ),
    }
}

pub fn time(_state: &ServerState, out: &mut Reply) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    out.array(2);
    out.bulk(now.as_secs().to_string().as_bytes());
    out.bulk(now.subsec_micros().to_string().as_bytes());
}
