//! SSTables: immutable sorted files of cells. (Being written.)
