//! v1 frames checked into `tests/fixtures/rpc-v1/`: today's decoder must read them and
//! today's encoder must reproduce them byte for byte, so a format change cannot slip in
//! unnoticed. Regenerate (only when deliberately changing the format, with a version bump)
//! with `HEARSAY_WRITE_FIXTURES=1 cargo test -p hearsay-cluster --test rpc_fixtures`.

use bytes::{Bytes, BytesMut};
use hearsay_cluster::rpc::frame::{
    Frame, FrameKind, MAX_FRAME_BYTES, decode_frame, encode_to_bytes,
};
use hearsay_cluster::rpc::handshake::HandshakeMsg;
use hearsay_cluster::rpc::message::RemoteError;
use hearsay_cluster::rpc::{Ping, Pong, RejectReason, Rpc};
use hearsay_types::{NodeId, Timestamp};
use std::path::PathBuf;

const HLC: Timestamp = Timestamp(1_700_000_000_000_000);
const NODE: NodeId = NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rpc-v1")
}

fn frame(kind: FrameKind, method: u16, id: u64, deadline_ms: u32, body: Vec<u8>) -> Frame {
    Frame {
        kind,
        method,
        request_id: id,
        deadline_ms,
        hlc: HLC,
        body: Bytes::from(body),
    }
}

fn expected() -> Vec<(&'static str, Frame)> {
    let hello = HandshakeMsg::Hello {
        cluster_name: "prod".into(),
        node_id: NODE,
        nonce: [0x11; 32],
    };
    vec![
        (
            "handshake_hello.bin",
            frame(
                FrameKind::Handshake,
                0,
                0,
                0,
                postcard::to_allocvec(&hello).unwrap(),
            ),
        ),
        (
            "request_ping.bin",
            frame(
                FrameKind::Request,
                Ping::METHOD,
                42,
                1_500,
                postcard::to_allocvec(&Ping { payload: 7 }).unwrap(),
            ),
        ),
        (
            "response_pong.bin",
            frame(
                FrameKind::Response,
                0,
                42,
                0,
                postcard::to_allocvec(&Pong {
                    payload: 7,
                    node: NODE,
                })
                .unwrap(),
            ),
        ),
        (
            "error_overloaded.bin",
            frame(
                FrameKind::Error,
                0,
                43,
                0,
                postcard::to_allocvec(&RemoteError {
                    code: 2,
                    message: "busy".into(),
                })
                .unwrap(),
            ),
        ),
        ("ping.bin", frame(FrameKind::Ping, 0, 44, 0, Vec::new())),
    ]
}

#[test]
fn v1_fixtures_decode_and_reencode_identically() {
    let write = std::env::var_os("HEARSAY_WRITE_FIXTURES").is_some();
    for (name, want) in expected() {
        let path = dir().join(name);
        let encoded = encode_to_bytes(&want, MAX_FRAME_BYTES).unwrap();
        if write {
            std::fs::write(&path, &encoded).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut buf = BytesMut::from(&bytes[..]);
        let got = decode_frame(&mut buf, MAX_FRAME_BYTES)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: incomplete"));
        assert!(buf.is_empty(), "{name}: trailing bytes");
        assert_eq!(got, want, "{name}");
        assert_eq!(&encoded[..], &bytes[..], "{name}: encoder output changed");
    }
    // The bodies decode as the types they carry.
    let bytes = std::fs::read(dir().join("request_ping.bin")).unwrap();
    let f = decode_frame(&mut BytesMut::from(&bytes[..]), MAX_FRAME_BYTES)
        .unwrap()
        .unwrap();
    assert_eq!(
        postcard::from_bytes::<Ping>(&f.body).unwrap(),
        Ping { payload: 7 }
    );
}

#[test]
fn corrupt_v1_fixture_is_rejected_by_checksum() {
    let path = dir().join("request_ping_bad_crc.bin");
    if std::env::var_os("HEARSAY_WRITE_FIXTURES").is_some() {
        let (_, ping) = expected().swap_remove(1);
        let mut b = encode_to_bytes(&ping, MAX_FRAME_BYTES).unwrap().to_vec();
        let last = b.len() - 1;
        b[last] ^= 0x01; // one flipped bit in the body
        std::fs::write(&path, b).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let err = decode_frame(&mut BytesMut::from(&bytes[..]), MAX_FRAME_BYTES).unwrap_err();
    assert_eq!(err.reject_reason(), Some(RejectReason::BadCrc), "{err}");
}
