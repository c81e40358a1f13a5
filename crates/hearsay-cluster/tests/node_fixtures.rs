//! Checked-in v1 examples of the node's own formats: the tokens file, the saved ring
//! (`peers`) and a stored keyspace definition (system keyspace value). A format change must keep loading these (or bump the
//! version and add new fixtures). `HEARSAY_WRITE_FIXTURES=1` rewrites them.

use hearsay_cluster::node::membership::{MemberInfo, Membership};
use hearsay_cluster::node::peers::{PEERS_FILE, SavedRing};
use hearsay_cluster::node::schema::{
    CompactionOption, CompressionOption, KeyspaceDef, KeyspaceOptions, TombstoneGc, def_from_cell,
    def_to_cell,
};
use hearsay_cluster::node::tokens;
use hearsay_ring::ReplicationStrategy;
use hearsay_storage::Cell;
use hearsay_types::{ConsistencyLevel, NodeId, Timestamp, Token};
use std::net::SocketAddr;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node-v1")
}

fn writing() -> bool {
    std::env::var_os("HEARSAY_WRITE_FIXTURES").is_some()
}

#[test]
fn tokens_file_v1_loads() {
    let expect = vec![Token(i64::MIN + 1), Token(-42), Token(0), Token(i64::MAX)];
    if writing() {
        tokens::save(&dir(), &expect).unwrap();
    }
    assert_eq!(tokens::load(&dir()).unwrap(), Some(expect));
}

#[test]
fn keyspace_definition_v1_loads() {
    // Written by the first format (no options); it reads as the default options.
    let expect = KeyspaceDef {
        name: "multi".into(),
        strategy: ReplicationStrategy::network_topology([("dc1", 3), ("dc2", 2)]),
        default_consistency: Some(ConsistencyLevel::LocalQuorum),
        timestamp: Timestamp(1_700_000_000_000_000),
        dropped: false,
        options: KeyspaceOptions::default(),
    };
    let path = dir().join("keyspace_def.bin");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes[0], 1, "version byte");
    let cell = Cell::value(bytes, expect.timestamp);
    assert_eq!(def_from_cell(&cell), Some(expect));
    // A version byte this code does not know is refused, not misread.
    let mut bad = std::fs::read(&path).unwrap();
    bad[0] = 9;
    assert_eq!(def_from_cell(&Cell::value(bad, Timestamp(1))), None);
}

#[test]
fn keyspace_definition_v2_loads() {
    let expect = KeyspaceDef {
        name: "tuned".into(),
        strategy: ReplicationStrategy::simple(3),
        default_consistency: Some(ConsistencyLevel::Quorum),
        timestamp: Timestamp(1_700_000_000_000_001),
        dropped: false,
        options: KeyspaceOptions {
            compaction: CompactionOption::Leveled {
                sstable_target_bytes: 64 << 20,
                level_size_multiplier: 10,
            },
            compression: CompressionOption::None,
            gc_grace_ms: 3_600_000,
            tombstone_gc: TombstoneGc::Timeout,
            read_repair: false,
        },
    };
    let path = dir().join("keyspace_def_v2.bin");
    if writing() {
        let (_, cell) = def_to_cell(&expect);
        std::fs::write(&path, cell.value.unwrap()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes[0], 2, "version byte");
    assert_eq!(
        def_from_cell(&Cell::value(bytes, expect.timestamp)),
        Some(expect)
    );
}

#[test]
fn peers_file_v1_loads() {
    let mut ms = Membership::default();
    for (i, t) in [(1u128, -100i64), (2, 0), (3, 100)] {
        let addr = SocketAddr::from(([127, 0, 0, i as u8], 7381));
        ms.members.insert(
            NodeId(i),
            MemberInfo::normal(NodeId(i), addr, vec![Token(t), Token(t + 7)]),
        );
    }
    let mut expect = SavedRing::default();
    expect.remember(&ms);
    if writing() {
        expect.save(&dir()).unwrap();
    }
    let bytes = std::fs::read(dir().join(PEERS_FILE)).unwrap();
    assert_eq!(SavedRing::decode(&bytes), Ok(expect));
    let mut bad = bytes.clone();
    bad[7] = 2;
    assert!(SavedRing::decode(&bad).unwrap_err().contains("version"));
}
