//! Random bytes fed to the frame decoder (and to the body decoders a server applies to an
//! unauthenticated peer's frames) never panic and never allocate more than the frame limit.
//!
//! Measured with a counting global allocator. This is the only `unsafe` in the crate's
//! tests: `GlobalAlloc` is an unsafe trait, and wrapping `System` is the standard, minimal
//! way to observe every allocation the decoder makes. Only allocations on the test's own
//! thread while `TRACK` is set are counted, so tests running in parallel do not mix.
#![allow(unsafe_code)]

use bytes::BytesMut;
use hearsay_cluster::rpc::frame::{FrameKind, decode_frame};
use hearsay_cluster::rpc::handshake::HandshakeMsg;
use hearsay_cluster::rpc::message::RemoteError;
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LARGEST_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    if TRACK.with(|t| t.get()) {
        LARGEST_BYTES.with(|l| l.set(l.get().max(size)));
    }
}

// SAFETY: every method forwards to `System` unchanged; the bookkeeping touches only
// const-initialised thread-locals, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MAX_BYTES: u32 = 4096;

/// Decodes everything in `input`, delivered in `chunk`-byte pieces as a socket would, the way
/// the server treats a peer: frames until an error, each body decoded as what it must carry.
/// Returns the largest single allocation made while decoding.
fn decode_all(input: &[u8], chunk: usize) -> usize {
    // The receive buffer's growth is the socket reader's, measured in the crate's own tests;
    // here the buffer is pre-sized so only the decoder's allocations are counted.
    let mut buf = BytesMut::with_capacity(input.len());
    LARGEST_BYTES.with(|l| l.set(0));
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        TRACK.with(|t| t.set(true));
        let outcome = loop {
            match decode_frame(&mut buf, MAX_BYTES) {
                Ok(Some(f)) => {
                    let _ = match f.kind {
                        FrameKind::Handshake => {
                            postcard::from_bytes::<HandshakeMsg>(&f.body).map(|_| ())
                        }
                        FrameKind::Error => {
                            postcard::from_bytes::<RemoteError>(&f.body).map(|_| ())
                        }
                        _ => postcard::from_bytes::<Vec<u8>>(&f.body).map(|_| ()),
                    };
                }
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        TRACK.with(|t| t.set(false));
        if !outcome {
            break;
        }
    }
    LARGEST_BYTES.with(|l| l.get())
}

/// A frame header declaring `len` bytes, then arbitrary bytes.
fn with_header(len: u32, version: u8, kind: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.push(version);
    v.push(kind);
    v.extend_from_slice(rest);
    v
}

#[test]
fn the_measurement_sees_the_decoder_allocate_a_whole_frame_exactly_once() {
    use bytes::Bytes;
    use hearsay_cluster::rpc::frame::{Frame, encode_to_bytes};
    use hearsay_types::Timestamp;
    let body = Bytes::from(vec![9u8; MAX_BYTES as usize - 32]);
    let bytes = encode_to_bytes(
        &Frame::new(FrameKind::Ping, 1, Timestamp(1), body),
        MAX_BYTES,
    )
    .unwrap();
    // Delivered in small pieces into an empty buffer, the decoder sizes the buffer for the
    // declared frame once: exactly the frame, which here is exactly the limit.
    let mut buf = BytesMut::new();
    let mut frames = 0;
    LARGEST_BYTES.with(|l| l.set(0));
    for piece in bytes.chunks(100) {
        buf.extend_from_slice(piece);
        TRACK.with(|t| t.set(true));
        if let Ok(Some(_)) = decode_frame(&mut buf, MAX_BYTES) {
            frames += 1;
        }
        TRACK.with(|t| t.set(false));
    }
    assert_eq!(frames, 1);
    assert_eq!(LARGEST_BYTES.with(|l| l.get()), MAX_BYTES as usize);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoder_never_panics_nor_allocates_beyond_the_limit(
        junk in proptest::collection::vec(any::<u8>(), 0..12_000),
        len in any::<u32>(),
        kind in 0u8..8,
        framed in any::<bool>(),
        chunk in 1usize..5_000,
    ) {
        // Half the cases start with a plausible header (version 1, a real kind, any length),
        // so the decoder gets past the first checks; the rest are pure noise.
        let input = if framed { with_header(len, 1, kind, &junk) } else { junk };
        let largest = decode_all(&input, chunk);
        prop_assert!(
            largest <= MAX_BYTES as usize,
            "decoder allocated {largest} bytes at once (limit {MAX_BYTES})"
        );
    }
}
