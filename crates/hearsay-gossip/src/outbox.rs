//! The packets of one turn (a tick, or the answer to one received packet): messages by
//! destination, rumors riding on a message already going to the same peer when they fit,
//! and sealing. Every sealed packet fits `max_packet_bytes`.

use std::net::SocketAddr;

use crate::types::GossipMetrics;
use crate::wire::{
    Body, Codec, HEADER_BYTES, LEN_PREFIX_SLACK_BYTES, MAC_TAG_BYTES, MAX_RUMORS, Message, Rumor,
    Sender, encoded_len,
};

/// A packet to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Destination.
    pub to: SocketAddr,
    /// Sealed packet bytes.
    pub packet: Vec<u8>,
}

/// Messages to send, in order.
#[derive(Debug)]
pub(crate) struct Outbox {
    msgs: Vec<(SocketAddr, Message)>,
    max_packet_bytes: usize,
}

impl Outbox {
    pub(crate) fn new(max_packet_bytes: usize) -> Outbox {
        Outbox {
            msgs: Vec::new(),
            max_packet_bytes,
        }
    }

    pub(crate) fn push(&mut self, to: SocketAddr, m: Message) {
        self.msgs.push((to, m));
    }

    /// True if a message already goes to `to`.
    pub(crate) fn goes_to(&self, to: SocketAddr) -> bool {
        self.msgs.iter().any(|(t, _)| *t == to)
    }

    /// Adds `batch` to a message already going to `to` if it fits there, else to a new
    /// `Ping` from `sender`.
    pub(crate) fn attach(&mut self, to: SocketAddr, batch: &[Rumor], sender: Sender) {
        let rumor_bytes: usize = batch.iter().map(encoded_len).sum();
        let max = self.max_packet_bytes;
        let fits = |m: &Message| {
            m.rumors.len() + batch.len() <= MAX_RUMORS
                && encoded_len(m)
                    + rumor_bytes
                    + HEADER_BYTES
                    + MAC_TAG_BYTES
                    + LEN_PREFIX_SLACK_BYTES
                    <= max
        };
        if let Some((_, m)) = self.msgs.iter_mut().find(|(a, m)| *a == to && fits(m)) {
            m.rumors.extend_from_slice(batch);
            return;
        }
        self.msgs.push((
            to,
            Message {
                sender,
                body: Body::Ping,
                rumors: batch.to_vec(),
            },
        ));
    }

    /// Encodes and seals every message, counting packets and bytes out.
    pub(crate) fn seal(self, codec: &Codec, metrics: &mut GossipMetrics) -> Vec<Outgoing> {
        let max = self.max_packet_bytes;
        self.msgs
            .into_iter()
            .map(|(to, m)| {
                let packet = codec.encode(&m);
                debug_assert!(
                    packet.len() <= max,
                    "packet of {} bytes over budget {max}",
                    packet.len(),
                );
                metrics.packets_out += 1;
                metrics.bytes_out += packet.len() as u64;
                Outgoing { to, packet }
            })
            .collect()
    }
}
