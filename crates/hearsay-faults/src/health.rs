//! What a node says about its own health and its peers' (issue 17): `GET /v1/health`, the
//! `MEMBERS` code column (`U…` up, `S…` sick: alive but refusing writes, `D…` down), and the
//! Prometheus gauges of `/metrics` (per-peer clock offsets).

use crate::http;
use crate::node::{Cluster, Node};
use crate::workload::Client;
use anyhow::Context;
use serde_json::Value;
use std::collections::BTreeMap;

/// The health code of a node that lost its data and has not been repaired yet (it serves
/// no reads: docs/repair.md).
pub const NEEDS_REPAIR: &str = "needs_repair";

/// A node's `/v1/health` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// 200 when ready and healthy, 503 otherwise.
    pub status: u16,
    /// Health codes (`clock_skew`, `storage_poisoned`, `disk_full`, ...); empty when 200.
    pub codes: Vec<String>,
    /// The reasons as sentences.
    pub reasons: Vec<String>,
}

impl Health {
    pub fn has(&self, code: &str) -> bool {
        self.codes.iter().any(|c| c == code)
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        if self.status == 200 {
            "200 ok".to_string()
        } else {
            format!(
                "{} {:?}: {}",
                self.status,
                self.codes,
                self.reasons.join("; ")
            )
        }
    }
}

/// `GET /v1/health` of `node`.
pub fn health(node: &Node) -> anyhow::Result<Health> {
    health_at(node.admin)
}

/// `GET /v1/health` of the node whose admin API is at `admin` (for threads that hold an
/// address, not the node).
pub fn health_at(admin: std::net::SocketAddr) -> anyhow::Result<Health> {
    let (status, body) = http::get(admin, "/v1/health")?;
    let v: Value =
        serde_json::from_slice(&body).with_context(|| format!("{admin}/v1/health: not JSON"))?;
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Health {
        status,
        codes: strings("codes"),
        reasons: strings("reasons"),
    })
}

/// `GET /metrics` of `node` (Prometheus text).
pub fn metrics(node: &Node) -> anyhow::Result<String> {
    let (status, body) = http::get(node.admin, "/metrics")?;
    if status != 200 {
        anyhow::bail!("{}/metrics answered {status}", node.name);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The samples of metric `name` in Prometheus text, keyed by the value of `label`
/// (samples without it are left out).
pub fn metric_by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let want = format!("{label}=\"");
        if let Some(at) = labels.find(&want) {
            let after = &labels[at + want.len()..];
            if let Some(end) = after.find('"') {
                out.insert(after[..end].to_string(), v);
            }
        }
    }
    out
}

/// `MEMBERS` through `node`: node id → code (`UN`, `SN`, `DN`, ...).
pub fn members(client: &mut Client, node: usize) -> Result<BTreeMap<String, String>, String> {
    let v = client
        .raw(node, &redis::cmd("MEMBERS"))
        .map_err(|e| e.text())?;
    let rows = match v {
        redis::Value::Array(rows) => rows,
        other => return Err(format!("MEMBERS answered {other:?}")),
    };
    let mut out = BTreeMap::new();
    for row in rows {
        let pairs: Vec<(redis::Value, redis::Value)> = match row {
            redis::Value::Map(p) => p,
            redis::Value::Array(flat) => {
                let mut it = flat.into_iter();
                let mut p = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    p.push((k, v));
                }
                p
            }
            other => return Err(format!("a MEMBERS row is {other:?}")),
        };
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        let mut id = None;
        let mut code = None;
        for (k, v) in &pairs {
            match text(k).as_deref() {
                Some("node_id") => id = text(v),
                Some("code") => code = text(v),
                _ => {}
            }
        }
        match (id, code) {
            (Some(i), Some(c)) => {
                out.insert(i, c);
            }
            _ => return Err(format!("a MEMBERS row without node_id or code: {pairs:?}")),
        }
    }
    Ok(out)
}

/// Whether every running node's `MEMBERS` shows exactly the nodes `sick` with a code
/// starting with `S` and every other member with `U`; `Err` says what one node shows
/// instead. (The node's own row comes from its own health, the others' from gossip.)
pub fn members_show_sick(
    cluster: &Cluster,
    client: &mut Client,
    sick: &[usize],
) -> Result<(), String> {
    for n in cluster.nodes.iter().filter(|n| n.is_running()) {
        let m = members(client, n.index).map_err(|e| format!("MEMBERS on {}: {e}", n.name))?;
        for other in &cluster.nodes {
            let code = m.get(&other.node_id).map(String::as_str).unwrap_or("?");
            let want = if sick.contains(&other.index) {
                'S'
            } else {
                'U'
            };
            if !code.starts_with(want) {
                return Err(format!(
                    "MEMBERS on {} shows {} as {code} (want {want}…)",
                    n.name, other.name
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_gauges_are_read_by_label() {
        let text = "# HELP hearsay_cluster_clock_skew_microseconds Each peer's offset\n\
                    # TYPE hearsay_cluster_clock_skew_microseconds gauge\n\
                    hearsay_cluster_clock_skew_microseconds{peer=\"aa\"} 120000123\n\
                    hearsay_cluster_clock_skew_microseconds{peer=\"bb\"} -35\n\
                    hearsay_cluster_clock_skew_microseconds_other{peer=\"cc\"} 1\n\
                    hearsay_clock_skewed 0\n";
        let m = metric_by_label(text, "hearsay_cluster_clock_skew_microseconds", "peer");
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m["aa"], 120000123.0);
        assert_eq!(m["bb"], -35.0);
        assert!(metric_by_label(text, "hearsay_clock_skewed", "peer").is_empty());
    }
}
