//! The Redis protocol (RESP2 and RESP3): request parsing, reply encoding, and a general value
//! decoder. Pure code over byte slices; the tokio driver lives in `server`.

pub mod frame;
pub mod reply;
pub mod request;

pub use frame::{Frame, FrameError, FrameLimits, decode};
pub use reply::{Protocol, Reply};
pub use request::{Parsed, ProtocolError, RequestLimits, parse_request};
