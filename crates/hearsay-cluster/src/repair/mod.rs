//! Anti-entropy repair: replicas of a token range compare hash trees of their cells and
//! exchange exactly the cells that differ (see `docs/repair.md`).
//!
//! - [`tree`]: the pure part — canonical cell hashes, Merkle trees over a range, the
//!   differing slices of several trees, and the sync plan (who must receive which cells).

pub mod tree;

pub use tree::{MAX_TREE_DEPTH, MerkleTree, Snapshot, cell_hash, differing_ranges, plan_sync};
