//! Tokio UDP driver (filled below).
