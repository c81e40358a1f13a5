//! The bounded block cache. (Being written.)
