//! Bloom filters for SSTables. (Being written.)
