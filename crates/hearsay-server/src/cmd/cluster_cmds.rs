//! Commands that are ours rather than Redis's: the connection's consistency level and
//! keyspace (as cqlsh's `CONSISTENCY` and `USE`), keyspace management, and views of the ring
//! and the members (as `nodetool ring` / `nodetool status` / `nodetool getendpoints`).

use super::{ServerState, Session, parse_int, store_error, text, unknown_subcommand};
use crate::resp::Reply;
use crate::store::{KeyspaceAlter, KeyspaceSpec};
use bytes::Bytes;
use hearsay_cluster::node::{
    CompactionOption, CompressionOption, KeyspaceChange, KeyspaceOptions, TombstoneGc,
};
use hearsay_ring::ReplicationStrategy;
use hearsay_types::ConsistencyLevel;
use std::collections::BTreeMap;

/// cqlsh's answer to a malformed CONSISTENCY command.
pub const IMPROPER_CONSISTENCY: &str = "ERR Improper CONSISTENCY command.";
/// What ring and member commands answer on a node that runs alone.
pub const NOT_CLUSTERED: &str =
    "ERR this node is not a cluster member (start it with --seeds or [cluster] enabled = true)";

/// `CONSISTENCY [level]`, answering as cqlsh does.
pub fn consistency(session: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    match args.len() {
        1 => out.simple(&format!(
            "Current consistency level is {}.",
            session.ctx.consistency
        )),
        2 => match text(&args[1]).parse::<ConsistencyLevel>() {
            Ok(level) => {
                session.ctx.consistency = level;
                session.consistency_set = true;
                out.simple(&format!("Consistency level set to {level}."));
            }
            Err(_) => out.error(IMPROPER_CONSISTENCY),
        },
        _ => out.error(IMPROPER_CONSISTENCY),
    }
}

/// `USE keyspace`: later commands on this connection read and write that keyspace. Unless
/// the client chose a level itself, the keyspace's default level applies from now on.
pub fn use_keyspace(state: &ServerState, session: &mut Session, args: Vec<Bytes>, out: &mut Reply) {
    let name = text(&args[1]);
    if !state.store.keyspaces().iter().any(|k| k.name == name) {
        out.error(&format!("ERR Keyspace '{name}' does not exist"));
        return;
    }
    if !session.consistency_set {
        session.ctx.consistency = state.store.default_consistency(&name);
    }
    session.ctx.keyspace = name;
    out.ok();
}

fn strategy_text(s: &ReplicationStrategy) -> String {
    match s {
        ReplicationStrategy::Simple { rf } => format!("SimpleStrategy rf={rf}"),
        ReplicationStrategy::NetworkTopology { dc_rf } => {
            let dcs: Vec<String> = dc_rf.iter().map(|(dc, rf)| format!("{dc}={rf}")).collect();
            format!("NetworkTopologyStrategy {}", dcs.join(" "))
        }
    }
}

/// `KEYSPACE CREATE/ALTER` arguments: the name and whatever was given.
#[derive(Debug, Default)]
struct ParsedKeyspace {
    name: String,
    change: KeyspaceChange,
}

/// Largest `GC_GRACE`, in seconds: ten years (Cassandra's `gc_grace_seconds` has no real
/// upper bound; ours keeps the milliseconds far from overflow).
const MAX_GC_GRACE_SECS: i64 = 10 * 365 * 86_400;

/// Parses `name [RF n | DC name n ...] [CONSISTENCY level] [COMPACTION size-tiered [min max]
/// | leveled [target_mb multiplier] | time-window window_secs] [COMPRESSION none|lz4]
/// [GC_GRACE secs] [TOMBSTONE_GC repair|timeout] [READ_REPAIR on|off]`. Each option may be
/// given once; a bad value is an error naming the option.
fn parse_keyspace_options(args: &[Bytes]) -> Result<ParsedKeyspace, String> {
    let name = text(&args[0]);
    let mut rf: Option<usize> = None;
    let mut dc_rf: BTreeMap<String, usize> = BTreeMap::new();
    let mut c = KeyspaceChange::default();
    let mut i = 1;
    let count = |b: &Bytes| -> Result<usize, String> {
        match parse_int(b) {
            Some(n) if (1..=hearsay_ring::MAX_REPLICATION_FACTOR as i64).contains(&n) => {
                Ok(n as usize)
            }
            _ => Err(format!(
                "ERR replication factor must be an integer in 1..={}",
                hearsay_ring::MAX_REPLICATION_FACTOR
            )),
        }
    };
    let twice = |opt: &str| format!("ERR option {opt} given more than once");
    let bad = |opt: &str, want: &str, got: &Bytes| {
        format!("ERR invalid {opt} value '{}': expected {want}", text(got))
    };
    let arg = |j: usize| args.get(j);
    // A positive integer argument at `j`, if there is one.
    let int_at = |j: usize| arg(j).and_then(|b| parse_int(b)).filter(|n| *n > 0);
    while i < args.len() {
        let opt = text(&args[i]).to_ascii_uppercase();
        let has = |n: usize| i + n < args.len();
        match opt.as_str() {
            "RF" | "REPLICATION_FACTOR" if has(1) => {
                if rf.is_some() {
                    return Err(twice("RF"));
                }
                rf = Some(count(&args[i + 1])?);
                i += 2;
            }
            "DC" if has(2) => {
                let dc = text(&args[i + 1]);
                if dc_rf.insert(dc.clone(), count(&args[i + 2])?).is_some() {
                    return Err(twice(&format!("DC {dc}")));
                }
                i += 3;
            }
            "CONSISTENCY" if has(1) => {
                if c.default_consistency.is_some() {
                    return Err(twice("CONSISTENCY"));
                }
                c.default_consistency = Some(
                    text(&args[i + 1])
                        .parse::<ConsistencyLevel>()
                        .map_err(|_| IMPROPER_CONSISTENCY.to_string())?,
                );
                i += 2;
            }
            "COMPACTION" if has(1) => {
                if c.compaction.is_some() {
                    return Err(twice("COMPACTION"));
                }
                let kind = text(&args[i + 1]).to_ascii_lowercase();
                match kind.as_str() {
                    "size-tiered" | "stcs" => {
                        let (min, max) = match (int_at(i + 2), int_at(i + 3)) {
                            (Some(a), Some(b)) => {
                                i += 4;
                                (a as u64, b as u64)
                            }
                            _ => {
                                i += 2;
                                (4, 32)
                            }
                        };
                        c.compaction = Some(CompactionOption::SizeTiered {
                            min_threshold: min,
                            max_threshold: max,
                        });
                    }
                    "leveled" | "lcs" => {
                        let (mb, mult) = match (int_at(i + 2), int_at(i + 3)) {
                            (Some(a), Some(b)) => {
                                i += 4;
                                (a as u64, b as u64)
                            }
                            _ => {
                                i += 2;
                                (64, 10)
                            }
                        };
                        c.compaction = Some(CompactionOption::Leveled {
                            sstable_target_bytes: mb.saturating_mul(1 << 20),
                            level_size_multiplier: mult,
                        });
                    }
                    "time-window" | "twcs" => {
                        let Some(secs) = int_at(i + 2) else {
                            return Err("ERR invalid COMPACTION value: time-window needs a window in seconds".into());
                        };
                        c.compaction = Some(CompactionOption::TimeWindow {
                            window_ms: (secs as u64).saturating_mul(1_000),
                        });
                        i += 3;
                    }
                    _ => {
                        return Err(bad(
                            "COMPACTION",
                            "size-tiered, leveled or time-window",
                            &args[i + 1],
                        ));
                    }
                }
            }
            "COMPRESSION" if has(1) => {
                if c.compression.is_some() {
                    return Err(twice("COMPRESSION"));
                }
                c.compression = Some(match text(&args[i + 1]).to_ascii_lowercase().as_str() {
                    "none" | "off" => CompressionOption::None,
                    "lz4" => CompressionOption::Lz4,
                    _ => return Err(bad("COMPRESSION", "none or lz4", &args[i + 1])),
                });
                i += 2;
            }
            "GC_GRACE" | "GC_GRACE_SECONDS" if has(1) => {
                if c.gc_grace_ms.is_some() {
                    return Err(twice("GC_GRACE"));
                }
                match parse_int(&args[i + 1]) {
                    Some(n) if (0..=MAX_GC_GRACE_SECS).contains(&n) => {
                        c.gc_grace_ms = Some(n as u64 * 1_000);
                    }
                    _ => {
                        return Err(bad(
                            "GC_GRACE",
                            &format!("seconds in 0..={MAX_GC_GRACE_SECS}"),
                            &args[i + 1],
                        ));
                    }
                }
                i += 2;
            }
            "TOMBSTONE_GC" if has(1) => {
                if c.tombstone_gc.is_some() {
                    return Err(twice("TOMBSTONE_GC"));
                }
                c.tombstone_gc = Some(match text(&args[i + 1]).to_ascii_lowercase().as_str() {
                    "repair" => TombstoneGc::Repair,
                    "timeout" => TombstoneGc::Timeout,
                    _ => return Err(bad("TOMBSTONE_GC", "repair or timeout", &args[i + 1])),
                });
                i += 2;
            }
            "READ_REPAIR" if has(1) => {
                if c.read_repair.is_some() {
                    return Err(twice("READ_REPAIR"));
                }
                c.read_repair = Some(match text(&args[i + 1]).to_ascii_lowercase().as_str() {
                    "on" | "true" | "yes" => true,
                    "off" | "false" | "no" => false,
                    _ => return Err(bad("READ_REPAIR", "on or off", &args[i + 1])),
                });
                i += 2;
            }
            _ => return Err(super::SYNTAX_ERR.to_string()),
        }
    }
    c.strategy = match (rf, dc_rf.is_empty()) {
        (Some(_), false) => {
            return Err("ERR give either RF (SimpleStrategy) or DC entries (NetworkTopologyStrategy), not both".into());
        }
        (Some(rf), true) => Some(ReplicationStrategy::Simple { rf }),
        (None, true) => None,
        (None, false) => Some(ReplicationStrategy::NetworkTopology { dc_rf }),
    };
    let mut check = KeyspaceOptions::default();
    c.apply_to(&mut check);
    check.validate().map_err(|e| format!("ERR {e}"))?;
    Ok(ParsedKeyspace { name, change: c })
}

/// `CREATE`: a keyspace without replication options gets one replica (SimpleStrategy RF 1);
/// options not given get their defaults.
fn parse_create(args: &[Bytes]) -> Result<KeyspaceSpec, String> {
    let p = parse_keyspace_options(args)?;
    let mut options = KeyspaceOptions::default();
    p.change.apply_to(&mut options);
    Ok(KeyspaceSpec {
        name: p.name,
        strategy: p
            .change
            .strategy
            .unwrap_or(ReplicationStrategy::Simple { rf: 1 }),
        default_consistency: p.change.default_consistency,
        options,
    })
}

/// `ALTER`: changes only what it names; naming nothing is a syntax error.
fn parse_alter(args: &[Bytes]) -> Result<KeyspaceAlter, String> {
    let p = parse_keyspace_options(args)?;
    if p.change.is_empty() {
        return Err(super::SYNTAX_ERR.to_string());
    }
    Ok(KeyspaceAlter {
        name: p.name,
        change: p.change,
    })
}

/// `KEYSPACE INFO`'s text for a compaction option.
fn compaction_text(c: &CompactionOption) -> String {
    match c {
        CompactionOption::SizeTiered {
            min_threshold,
            max_threshold,
        } => format!("size-tiered min={min_threshold} max={max_threshold}"),
        CompactionOption::Leveled {
            sstable_target_bytes,
            level_size_multiplier,
        } => format!(
            "leveled target_mb={} multiplier={level_size_multiplier}",
            sstable_target_bytes >> 20
        ),
        CompactionOption::TimeWindow { window_ms } => {
            format!("time-window window_secs={}", window_ms / 1_000)
        }
    }
}

/// `KEYSPACE LIST | INFO name | CREATE name ... | ALTER name ... | DROP name | CURRENT | HELP`.
pub async fn keyspace(
    state: &ServerState,
    session: &mut Session,
    args: Vec<Bytes>,
    out: &mut Reply,
) {
    let sub = text(&args[1]).to_ascii_lowercase();
    match (sub.as_str(), args.len()) {
        ("list", 2) => {
            let ks = state.store.keyspaces();
            out.array(ks.len());
            for k in ks {
                out.bulk(k.name.as_bytes());
            }
        }
        ("current", 2) => out.bulk(session.ctx.keyspace.as_bytes()),
        ("info", 3) => {
            let name = text(&args[2]);
            let Some(k) = state.store.keyspaces().into_iter().find(|k| k.name == name) else {
                out.error(&format!("ERR Keyspace '{name}' does not exist"));
                return;
            };
            let o = &k.options;
            out.map(8);
            out.bulk(b"name");
            out.bulk(k.name.as_bytes());
            out.bulk(b"replication");
            out.bulk(strategy_text(&k.strategy).as_bytes());
            out.bulk(b"default_consistency");
            out.bulk(
                k.default_consistency
                    .unwrap_or_else(|| state.store.default_consistency(&k.name))
                    .name()
                    .as_bytes(),
            );
            out.bulk(b"compaction");
            out.bulk(compaction_text(&o.compaction).as_bytes());
            out.bulk(b"compression");
            out.bulk(match o.compression {
                CompressionOption::None => b"none".as_slice(),
                CompressionOption::Lz4 => b"lz4".as_slice(),
            });
            out.bulk(b"gc_grace_seconds");
            out.bulk((o.gc_grace_ms / 1_000).to_string().as_bytes());
            out.bulk(b"tombstone_gc");
            out.bulk(match o.tombstone_gc {
                TombstoneGc::Repair => b"repair".as_slice(),
                TombstoneGc::Timeout => b"timeout".as_slice(),
            });
            out.bulk(b"read_repair");
            out.bulk(if o.read_repair {
                b"on".as_slice()
            } else {
                b"off".as_slice()
            });
        }
        ("create", n) if n >= 3 => match parse_create(&args[2..]) {
            Err(e) => out.error(&e),
            Ok(spec) => match state.store.create_keyspace(spec).await {
                Ok(()) => out.ok(),
                Err(e) => store_error(out, &e),
            },
        },
        ("alter", n) if n >= 3 => match parse_alter(&args[2..]) {
            Err(e) => out.error(&e),
            Ok(spec) => match state.store.alter_keyspace(spec).await {
                Ok(()) => out.ok(),
                Err(e) => store_error(out, &e),
            },
        },
        ("drop", 3) => {
            let name = text(&args[2]);
            match state.store.drop_keyspace(&name).await {
                Ok(()) => {
                    if session.ctx.keyspace == name {
                        session.ctx.keyspace = "default".into();
                    }
                    out.ok()
                }
                Err(e) => store_error(out, &e),
            }
        }
        ("help", 2) => {
            let lines = [
                "KEYSPACE <subcommand> [<arg> ...]. Subcommands are:",
                "LIST",
                "    The keyspaces.",
                "CURRENT",
                "    The keyspace this connection uses (see USE).",
                "INFO <name>",
                "    Replication and default consistency level of a keyspace.",
                "CREATE <name> [RF <n> | DC <dc> <n> [DC <dc> <n> ...]] [CONSISTENCY <level>]",
                "    Create a keyspace (SimpleStrategy with RF, or NetworkTopologyStrategy).",
                "ALTER <name> [RF <n> | DC <dc> <n> [DC <dc> <n> ...]] [CONSISTENCY <level>]",
                "    Change what is named, and only that: replication (data is not moved) or default level.",
                "DROP <name>",
                "    Drop a keyspace and its data on every node.",
                "HELP",
                "    Print this help.",
            ];
            out.array(lines.len());
            for l in lines {
                out.simple(l);
            }
        }
        (s, _) if ["list", "current", "info", "create", "alter", "drop", "help"].contains(&s) => {
            out.error(&format!(
                "ERR wrong number of arguments for 'keyspace|{s}' command"
            ));
        }
        _ => unknown_subcommand(out, &args[1], "keyspace"),
    }
}

/// `RING [keyspace]`: one entry per vnode range, in token order: `[end token, [replica
/// cluster addresses, primary first]]` (like `nodetool ring` + `describering`).
pub fn ring(state: &ServerState, session: &Session, args: Vec<Bytes>, out: &mut Reply) {
    let Some(node) = state.store.cluster_node() else {
        out.error(NOT_CLUSTERED);
        return;
    };
    let ks = args
        .get(1)
        .map(|b| text(b))
        .unwrap_or_else(|| session.ctx.keyspace.clone());
    let view = node.view();
    let Some(route) = view.routes.get(&ks) else {
        out.error(&format!("ERR Keyspace '{ks}' does not exist"));
        return;
    };
    let placement = route.map.natural();
    let ranges: Vec<_> = placement.ranges().collect();
    out.array(ranges.len());
    for (range, replicas) in ranges {
        out.array(2);
        out.int(range.end.0);
        out.array(replicas.len());
        for r in replicas {
            let addr = view
                .addr_of(*r)
                .map_or_else(|| r.to_string(), |a| a.to_string());
            out.bulk(addr.as_bytes());
        }
    }
}

/// `GETENDPOINTS key`: `[token, [replica cluster addresses]]` in the connection's keyspace.
pub fn getendpoints(state: &ServerState, session: &Session, args: Vec<Bytes>, out: &mut Reply) {
    let Some(node) = state.store.cluster_node() else {
        // Alone, the one replica is this node.
        out.array(2);
        out.int(hearsay_ring::token_of(&args[1]).0);
        out.array(1);
        out.bulk(state.config.cluster.listen.to_string().as_bytes());
        return;
    };
    match node.endpoints(&session.ctx.keyspace, &args[1]) {
        Err(e) => store_error(out, &crate::store::node_error(e)),
        Ok((token, replicas)) => {
            out.array(2);
            out.int(token.0);
            out.array(replicas.len());
            for (id, addr) in replicas {
                let a = addr.map_or_else(|| id.to_string(), |a| a.to_string());
                out.bulk(a.as_bytes());
            }
        }
    }
}

/// `MEMBERS`: one map per member, as `hearsay status` shows them.
pub fn members(state: &ServerState, session: &Session, out: &mut Reply) {
    let Some(node) = state.store.cluster_node() else {
        out.error(NOT_CLUSTERED);
        return;
    };
    let status = node.status();
    out.array(status.members.len());
    for m in status.members {
        out.map(12);
        out.bulk(b"code");
        out.bulk(m.code.as_bytes());
        out.bulk(b"node_id");
        out.bulk(m.node_id.as_bytes());
        out.bulk(b"cluster_addr");
        out.bulk(m.cluster_addr.unwrap_or_default().as_bytes());
        out.bulk(b"client_addr");
        out.bulk(m.client_addr.unwrap_or_default().as_bytes());
        out.bulk(b"dc");
        out.bulk(m.dc.as_bytes());
        out.bulk(b"rack");
        out.bulk(m.rack.as_bytes());
        out.bulk(b"liveness");
        out.bulk(m.liveness.as_bytes());
        out.bulk(b"status");
        out.bulk(m.status.as_bytes());
        out.bulk(b"tokens");
        out.int(m.tokens as i64);
        out.bulk(b"owns_effective");
        let owns = m
            .owns_effective
            .get(&session.ctx.keyspace)
            .copied()
            .unwrap_or(0.0);
        out.bulk(format!("{:.4}", owns).as_bytes());
        out.bulk(b"load_bytes");
        out.int(m.load_bytes.unwrap_or(0) as i64);
        out.bulk(b"generation");
        out.int(m.generation as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split_whitespace()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn alter(line: &str) -> Result<KeyspaceChange, String> {
        parse_alter(&args(line)).map(|a| {
            assert_eq!(a.name, line.split_whitespace().next().unwrap());
            a.change
        })
    }

    #[test]
    fn alter_changes_only_what_it_names() {
        assert_eq!(
            alter("default CONSISTENCY QUORUM"),
            Ok(KeyspaceChange {
                default_consistency: Some(ConsistencyLevel::Quorum),
                ..Default::default()
            }),
            "the issue's case: the RF is left alone"
        );
        assert_eq!(
            alter("ks RF 3"),
            Ok(KeyspaceChange {
                strategy: Some(ReplicationStrategy::simple(3)),
                ..Default::default()
            })
        );
        assert_eq!(
            alter("ks DC dc1 3 DC dc2 2"),
            Ok(KeyspaceChange {
                strategy: Some(ReplicationStrategy::network_topology([
                    ("dc1", 3),
                    ("dc2", 2)
                ])),
                ..Default::default()
            })
        );
        assert_eq!(
            alter("ks rf 2 consistency all"),
            Ok(KeyspaceChange {
                strategy: Some(ReplicationStrategy::simple(2)),
                default_consistency: Some(ConsistencyLevel::All),
                ..Default::default()
            })
        );
    }

    #[test]
    fn storage_and_repair_options_parse_alone_and_together() {
        assert_eq!(
            alter("ks COMPACTION leveled"),
            Ok(KeyspaceChange {
                compaction: Some(CompactionOption::Leveled {
                    sstable_target_bytes: 64 << 20,
                    level_size_multiplier: 10
                }),
                ..Default::default()
            })
        );
        assert_eq!(
            alter("ks COMPACTION time-window 3600 COMPRESSION none"),
            Ok(KeyspaceChange {
                compaction: Some(CompactionOption::TimeWindow {
                    window_ms: 3_600_000
                }),
                compression: Some(CompressionOption::None),
                ..Default::default()
            })
        );
        assert_eq!(
            alter(
                "ks compaction size-tiered 2 8 gc_grace 60 tombstone_gc timeout read_repair off rf 3"
            ),
            Ok(KeyspaceChange {
                strategy: Some(ReplicationStrategy::simple(3)),
                compaction: Some(CompactionOption::SizeTiered {
                    min_threshold: 2,
                    max_threshold: 8
                }),
                gc_grace_ms: Some(60_000),
                tombstone_gc: Some(TombstoneGc::Timeout),
                read_repair: Some(false),
                ..Default::default()
            })
        );
        let spec = parse_create(&args("ks RF 3 TOMBSTONE_GC timeout")).unwrap();
        assert_eq!(spec.options.tombstone_gc, TombstoneGc::Timeout);
        assert_eq!(
            spec.options.compaction,
            KeyspaceOptions::default().compaction,
            "not given: the default"
        );
    }

    #[test]
    fn bad_option_values_name_the_option() {
        for (line, option) in [
            ("ks COMPACTION fastest", "COMPACTION"),
            ("ks COMPACTION time-window", "COMPACTION"),
            ("ks COMPRESSION zstd", "COMPRESSION"),
            ("ks GC_GRACE -1", "GC_GRACE"),
            ("ks TOMBSTONE_GC never", "TOMBSTONE_GC"),
            ("ks READ_REPAIR maybe", "READ_REPAIR"),
        ] {
            let e = alter(line).unwrap_err();
            assert!(e.starts_with("ERR") && e.contains(option), "{line}: {e}");
        }
        let e = alter("ks COMPACTION size-tiered 1 8").unwrap_err();
        assert!(e.contains("compaction"), "{e}");
        assert_eq!(
            alter("ks COMPRESSION lz4 COMPRESSION none"),
            Err("ERR option COMPRESSION given more than once".to_string())
        );
    }

    #[test]
    fn alter_with_nothing_or_bad_options_is_an_error() {
        assert_eq!(alter("ks"), Err(crate::cmd::SYNTAX_ERR.to_string()));
        assert_eq!(alter("ks RF"), Err(crate::cmd::SYNTAX_ERR.to_string()));
        assert_eq!(alter("ks BOGUS 1"), Err(crate::cmd::SYNTAX_ERR.to_string()));
        assert_eq!(
            alter("ks RF 2 RF 3"),
            Err("ERR option RF given more than once".to_string())
        );
        assert_eq!(
            alter("ks DC a 1 DC a 2"),
            Err("ERR option DC a given more than once".to_string())
        );
        assert!(alter("ks RF 2 DC a 1").unwrap_err().contains("not both"));
        assert!(alter("ks RF 0").unwrap_err().contains("replication factor"));
        assert_eq!(
            alter("ks CONSISTENCY SOMETIMES"),
            Err(IMPROPER_CONSISTENCY.to_string())
        );
    }

    #[test]
    fn create_defaults_to_one_replica() {
        let spec = parse_create(&args("ks CONSISTENCY QUORUM")).unwrap();
        assert_eq!(spec.strategy, ReplicationStrategy::simple(1));
        assert_eq!(spec.default_consistency, Some(ConsistencyLevel::Quorum));
        assert_eq!(spec.options, KeyspaceOptions::default());
    }
}
