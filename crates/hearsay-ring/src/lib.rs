//! hearsay-ring: see its Cargo.toml description. (Skeleton; filled by its issue.)
