//! hearsay-sim: see its Cargo.toml description. (Skeleton; filled by its issue.)
