//! Commands that are ours rather than Redis's: the connection's consistency level and
//! keyspace (as cqlsh's `CONSISTENCY` and `USE`), keyspace management, and views of the ring
//! and the members (as `nodetool ring` / `nodetool status` / `nodetool getendpoints`).

use super::{ServerState, Session, parse_int, store_error, text, unknown_subcommand};
use crate::resp::Reply;
use crate::store::{KeyspaceAlter, KeyspaceSpec};
use bytes::Bytes;
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

/// The options of `KEYSPACE CREATE/ALTER`, each `None` when not given.
#[derive(Debug, Default)]
struct KeyspaceOptions {
    name: String,
    strategy: Option<ReplicationStrategy>,
    default_consistency: Option<ConsistencyLevel>,
}

/// Parses `name [RF n | DC name n ...] [CONSISTENCY level]`. Each option may be given once.
fn parse_keyspace_options(args: &[Bytes]) -> Result<KeyspaceOptions, String> {
    let name = text(&args[0]);
    let mut rf: Option<usize> = None;
    let mut dc_rf: BTreeMap<String, usize> = BTreeMap::new();
    let mut level = None;
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
    while i < args.len() {
        let opt = text(&args[i]).to_ascii_uppercase();
        match opt.as_str() {
            "RF" | "REPLICATION_FACTOR" if i + 1 < args.len() => {
                if rf.is_some() {
                    return Err(twice("RF"));
                }
                rf = Some(count(&args[i + 1])?);
                i += 2;
            }
            "DC" if i + 2 < args.len() => {
                let dc = text(&args[i + 1]);
                if dc_rf.insert(dc.clone(), count(&args[i + 2])?).is_some() {
                    return Err(twice(&format!("DC {dc}")));
                }
                i += 3;
            }
            "CONSISTENCY" if i + 1 < args.len() => {
                if level.is_some() {
                    return Err(twice("CONSISTENCY"));
                }
                level = Some(
                    text(&args[i + 1])
                        .parse::<ConsistencyLevel>()
                        .map_err(|_| IMPROPER_CONSISTENCY.to_string())?,
                );
                i += 2;
            }
            _ => return Err(super::SYNTAX_ERR.to_string()),
        }
    }
    let strategy = match (rf, dc_rf.is_empty()) {
        (Some(_), false) => {
            return Err("ERR give either RF (SimpleStrategy) or DC entries (NetworkTopologyStrategy), not both".into());
        }
        (Some(rf), true) => Some(ReplicationStrategy::Simple { rf }),
        (None, true) => None,
        (None, false) => Some(ReplicationStrategy::NetworkTopology { dc_rf }),
    };
    Ok(KeyspaceOptions {
        name,
        strategy,
        default_consistency: level,
    })
}

/// `CREATE`: a keyspace without replication options gets one replica (SimpleStrategy RF 1).
fn parse_create(args: &[Bytes]) -> Result<KeyspaceSpec, String> {
    let o = parse_keyspace_options(args)?;
    Ok(KeyspaceSpec {
        name: o.name,
        strategy: o.strategy.unwrap_or(ReplicationStrategy::Simple { rf: 1 }),
        default_consistency: o.default_consistency,
    })
}

/// `ALTER`: changes only what it names; naming nothing is a syntax error.
fn parse_alter(args: &[Bytes]) -> Result<KeyspaceAlter, String> {
    let o = parse_keyspace_options(args)?;
    if o.strategy.is_none() && o.default_consistency.is_none() {
        return Err(super::SYNTAX_ERR.to_string());
    }
    Ok(KeyspaceAlter {
        name: o.name,
        strategy: o.strategy,
        default_consistency: o.default_consistency,
    })
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
            out.map(3);
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

    fn alter(line: &str) -> Result<KeyspaceAlter, String> {
        parse_alter(&args(line))
    }

    #[test]
    fn alter_changes_only_what_it_names() {
        assert_eq!(
            alter("default CONSISTENCY QUORUM"),
            Ok(KeyspaceAlter {
                name: "default".into(),
                strategy: None,
                default_consistency: Some(ConsistencyLevel::Quorum),
            }),
            "the issue's case: the RF is left alone"
        );
        assert_eq!(
            alter("ks RF 3"),
            Ok(KeyspaceAlter {
                name: "ks".into(),
                strategy: Some(ReplicationStrategy::simple(3)),
                default_consistency: None,
            })
        );
        assert_eq!(
            alter("ks DC dc1 3 DC dc2 2"),
            Ok(KeyspaceAlter {
                name: "ks".into(),
                strategy: Some(ReplicationStrategy::network_topology([
                    ("dc1", 3),
                    ("dc2", 2)
                ])),
                default_consistency: None,
            })
        );
        assert_eq!(
            alter("ks rf 2 consistency all"),
            Ok(KeyspaceAlter {
                name: "ks".into(),
                strategy: Some(ReplicationStrategy::simple(2)),
                default_consistency: Some(ConsistencyLevel::All),
            })
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
    }
}
