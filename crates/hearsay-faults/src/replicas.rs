//! What each replica holds, read from the node's own engine (`/v1/local/scan`), and where
//! keys belong (`RING`). Never a read at ALL: the coordinator repairs the replicas such a
//! read compares, so it would hide the very gaps the checkers look for.

use crate::http;
use crate::node::Cluster;
use crate::util::unhex;
use anyhow::{Context, bail};
use serde_json::Value;
use std::collections::BTreeMap;

/// Most pages of one node's scan: 10 000 cells a page, so up to 10 million cells, far
/// above what a run writes; a node that keeps answering `next` beyond it is broken.
const MAX_SCAN_PAGES: usize = 1_000;

/// One stored cell as a replica reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellInfo {
    pub timestamp: u64,
    pub tombstone: bool,
    pub value_len: u64,
    pub value_crc32c: u32,
    /// The key's natural replicas (node indexes) as the reporting node's ring view had them.
    pub replicas: Vec<usize>,
}

impl CellInfo {
    /// Whether this cell holds exactly `value`.
    pub fn holds(&self, value: &str) -> bool {
        !self.tombstone
            && self.value_len == value.len() as u64
            && self.value_crc32c == crc32c::crc32c(value.as_bytes())
    }

    /// The parts replicas must agree on to have converged.
    pub fn version(&self) -> (u64, bool, u32) {
        (self.timestamp, self.tombstone, self.value_crc32c)
    }
}

/// Every node's cells of one keyspace at (about) one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// key → node index → cell.
    pub cells: BTreeMap<String, BTreeMap<usize, CellInfo>>,
    /// Nodes that could not be scanned (down), with why.
    pub unreachable: BTreeMap<usize, String>,
}

impl Snapshot {
    /// The cell node `node` holds for `key`.
    pub fn cell(&self, key: &str, node: usize) -> Option<&CellInfo> {
        self.cells.get(key).and_then(|m| m.get(&node))
    }
}

/// Scans every running node's `keyspace` completely.
pub fn snapshot(cluster: &Cluster, keyspace: &str) -> Snapshot {
    let mut snap = Snapshot::default();
    for n in &cluster.nodes {
        if !n.is_running() {
            snap.unreachable.insert(n.index, "not running".into());
            continue;
        }
        match scan_node(cluster, n.index, keyspace) {
            Ok(cells) => {
                for (key, cell) in cells {
                    snap.cells.entry(key).or_default().insert(n.index, cell);
                }
            }
            Err(e) => {
                snap.unreachable.insert(n.index, format!("{e:#}"));
            }
        }
    }
    snap
}

/// Every cell node `i` stores in `keyspace`, paging through `/v1/local/scan`.
pub fn scan_node(
    cluster: &Cluster,
    i: usize,
    keyspace: &str,
) -> anyhow::Result<Vec<(String, CellInfo)>> {
    let node = &cluster.nodes[i];
    let mut out = Vec::new();
    let mut from: Option<i64> = None;
    for _ in 0..MAX_SCAN_PAGES {
        let path = match from {
            Some(t) => format!("/v1/local/scan?keyspace={keyspace}&from={t}"),
            None => format!("/v1/local/scan?keyspace={keyspace}"),
        };
        let page = http::get_json(node.admin, &path)?;
        for c in page["cells"].as_array().context("no cells in scan page")? {
            out.push(parse_cell(cluster, c)?);
        }
        match page["next"].as_i64() {
            Some(t) => from = Some(t),
            None => return Ok(out),
        }
    }
    bail!(
        "scan of {} did not end within {MAX_SCAN_PAGES} pages",
        node.name
    )
}

/// One replica's cell of `key`, from `/v1/local/get`.
pub fn local_get(
    cluster: &Cluster,
    i: usize,
    keyspace: &str,
    key: &str,
) -> anyhow::Result<Option<CellInfo>> {
    let hex = crate::util::hex(key.as_bytes());
    let v = http::get_json(
        cluster.nodes[i].admin,
        &format!("/v1/local/get?keyspace={keyspace}&key={hex}"),
    )?;
    if v.is_null() {
        return Ok(None);
    }
    Ok(Some(parse_cell(cluster, &v)?.1))
}

fn parse_cell(cluster: &Cluster, c: &Value) -> anyhow::Result<(String, CellInfo)> {
    let key_hex = c["key"].as_str().context("cell without key")?;
    let key = unhex(key_hex).context("cell key not hex")?;
    let key = String::from_utf8_lossy(&key).into_owned();
    let replicas = c["replicas"]
        .as_array()
        .context("cell without replicas")?
        .iter()
        .filter_map(|r| r.as_str())
        .map(|id| cluster.index_of(id).unwrap_or(usize::MAX))
        .collect();
    Ok((
        key,
        CellInfo {
            timestamp: c["timestamp"].as_u64().context("cell timestamp")?,
            tombstone: c["tombstone"].as_bool().context("cell tombstone")?,
            value_len: c["value_len"].as_u64().context("cell value_len")?,
            value_crc32c: c["value_crc32c"].as_u64().context("cell value_crc32c")? as u32,
            replicas,
        },
    ))
}

/// Where keys belong: the natural replicas per vnode range, `(previous end, end]`, as a
/// node's `RING` answer lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// `(end token, replica node indexes, primary first)`, ascending by end.
    pub ranges: Vec<(i64, Vec<usize>)>,
}

impl Placement {
    /// The natural replicas of `key` (hearsay's Murmur3 token, as the nodes compute it).
    pub fn replicas(&self, key: &str) -> Vec<usize> {
        self.replicas_of_token(hearsay_ring::token_of(key.as_bytes()).0)
    }

    pub fn replicas_of_token(&self, t: i64) -> Vec<usize> {
        if self.ranges.is_empty() {
            return Vec::new();
        }
        // The first range whose end is at or after t; past the last end, wrap to the first.
        let i = self.ranges.partition_point(|(end, _)| *end < t);
        let i = if i == self.ranges.len() { 0 } else { i };
        self.ranges[i].1.clone()
    }
}

/// The placement of `keyspace` as node `i` sees it (`RING keyspace`).
pub fn placement(cluster: &Cluster, i: usize, keyspace: &str) -> anyhow::Result<Placement> {
    let mut con = crate::workload::open(cluster.nodes[i].client, "ONE")
        .map_err(|e| anyhow::anyhow!("{}: {}", cluster.nodes[i].name, e.text()))?;
    let v: redis::Value = redis::cmd("RING")
        .arg(keyspace)
        .query(&mut con)
        .with_context(|| format!("RING on {}", cluster.nodes[i].name))?;
    parse_ring(&v, |addr| cluster.index_of_cluster_addr(addr))
}

/// Parses a `RING` answer, mapping replica addresses to node indexes.
pub fn parse_ring(
    v: &redis::Value,
    index_of: impl Fn(&str) -> Option<usize>,
) -> anyhow::Result<Placement> {
    let redis::Value::Array(rows) = v else {
        bail!("RING answer is not an array: {v:?}");
    };
    let mut ranges = Vec::with_capacity(rows.len());
    for row in rows {
        let redis::Value::Array(pair) = row else {
            bail!("RING row is not an array: {row:?}");
        };
        let (Some(redis::Value::Int(end)), Some(redis::Value::Array(addrs))) =
            (pair.first(), pair.get(1))
        else {
            bail!("RING row is not [end, [replicas]]: {row:?}");
        };
        let mut replicas = Vec::new();
        for a in addrs {
            let text = match a {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                redis::Value::SimpleString(s) => s.clone(),
                other => bail!("RING replica is not a string: {other:?}"),
            };
            replicas.push(index_of(&text).unwrap_or(usize::MAX));
        }
        ranges.push((*end, replicas));
    }
    if !ranges.windows(2).all(|w| w[0].0 < w[1].0) {
        bail!("RING ranges are not in ascending token order");
    }
    Ok(Placement { ranges })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_the_range_ending_at_or_after_them_wrapping_past_the_last() {
        let p = Placement {
            ranges: vec![(-100, vec![0, 1]), (0, vec![1, 2]), (100, vec![2, 0])],
        };
        assert_eq!(p.replicas_of_token(-100), vec![0, 1]);
        assert_eq!(p.replicas_of_token(-99), vec![1, 2]);
        assert_eq!(p.replicas_of_token(0), vec![1, 2]);
        assert_eq!(p.replicas_of_token(100), vec![2, 0]);
        assert_eq!(p.replicas_of_token(101), vec![0, 1]);
        assert_eq!(p.replicas_of_token(i64::MIN), vec![0, 1]);
    }

    #[test]
    fn ring_answers_parse_into_ranges() {
        use redis::Value::{Array, BulkString, Int};
        let v = Array(vec![
            Array(vec![
                Int(-5),
                Array(vec![BulkString(b"a".to_vec()), BulkString(b"b".to_vec())]),
            ]),
            Array(vec![
                Int(7),
                Array(vec![BulkString(b"b".to_vec()), BulkString(b"?".to_vec())]),
            ]),
        ]);
        let p = parse_ring(&v, |a| match a {
            "a" => Some(0),
            "b" => Some(1),
            _ => None,
        })
        .unwrap();
        assert_eq!(p.ranges, vec![(-5, vec![0, 1]), (7, vec![1, usize::MAX])]);
        assert!(parse_ring(&Int(1), |_| None).is_err());
    }

    #[test]
    fn a_cell_holds_a_value_only_with_its_length_and_crc() {
        let v = "1:abc:0000";
        let c = CellInfo {
            timestamp: 1,
            tombstone: false,
            value_len: v.len() as u64,
            value_crc32c: crc32c::crc32c(v.as_bytes()),
            replicas: vec![0],
        };
        assert!(c.holds(v));
        assert!(!c.holds("1:abd:0000"));
        assert!(
            !CellInfo {
                tombstone: true,
                ..c.clone()
            }
            .holds(v)
        );
    }
}
