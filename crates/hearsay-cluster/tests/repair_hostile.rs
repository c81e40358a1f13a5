//! Issue 20, acceptance 7: malformed repair messages never panic and are bounded in memory.
//! Bodies arrive inside the RPC layer's checksummed frames (bounded by `max_frame_bytes`);
//! here every repair message type is decoded from arbitrary bytes, and every tree a peer
//! could describe is checked before it is used.

use hearsay_cluster::node::messages::{RepairDone, RepairTree, RepairTreeReply};
use hearsay_cluster::repair::{MAX_TREE_DEPTH, MerkleTree, differing_ranges};
use hearsay_ring::TokenRange;
use hearsay_types::Token;
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = postcard::from_bytes::<RepairTree>(&bytes);
        let _ = postcard::from_bytes::<RepairTreeReply>(&bytes);
        let _ = postcard::from_bytes::<RepairDone>(&bytes);
    }

    /// A peer's leaves become a tree only when their count is a power of two within the
    /// depth bound, so a comparison never indexes past a leaf list or allocates beyond it.
    #[test]
    fn trees_from_peers_are_validated(
        n in 0usize..70_000,
        start in any::<i64>(),
        end in any::<i64>(),
    ) {
        let range = TokenRange::new(Token(start), Token(end));
        let leaves = vec![7u128; n];
        match MerkleTree::from_leaves(range, leaves) {
            Some(t) => {
                prop_assert!(n.is_power_of_two() && n <= 1 << MAX_TREE_DEPTH);
                // Compared with a tree of another depth: the whole range differs, no panic.
                let other = MerkleTree::new(range, (t.depth() + 1) % (MAX_TREE_DEPTH + 1));
                let d = differing_ranges(&[&t, &other]);
                prop_assert!(d.len() <= 1 << MAX_TREE_DEPTH);
            }
            None => prop_assert!(n == 0 || !n.is_power_of_two() || n > 1 << MAX_TREE_DEPTH),
        }
    }
}

#[test]
fn a_tree_request_deeper_than_the_bound_builds_no_larger_tree() {
    let t = MerkleTree::new(TokenRange::full(), u8::MAX);
    assert_eq!(t.depth(), MAX_TREE_DEPTH);
    assert_eq!(t.leaves().len(), 1 << MAX_TREE_DEPTH);
}
