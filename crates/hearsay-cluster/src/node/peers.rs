//! What this node last knew of the ring — every member's place (tokens, status, DC, rack,
//! weight, address) — kept in memory and saved in the data directory, as Cassandra keeps
//! `system.peers`.
//!
//! Two windows close with it:
//! - **A restarting member keeps its place on its peers.** Gossip replaces a restarted
//!   member's state wholesale when its new generation arrives; until the new incarnation's
//!   tokens and status arrive too, a ring built from gossip alone would drop it, and replica
//!   sets would shift under the writers. [`SavedRing::fill`] gives such a member its last
//!   known place: a member's tokens stay in the ring until an operator removes it (or it
//!   leaves).
//! - **A restarted node routes by the ring it had.** Before gossip has spoken, the node's own
//!   view would hold only itself; with the saved ring it holds every member, placed as
//!   before, with those not heard from yet counted DOWN (not alive) until gossip says
//!   otherwise.
//!
//! The file `peers` is a cache of gossip, not a source of truth: a damaged file is logged
//! and ignored (gossip refills it), never a reason to refuse to start. Format: magic
//! `HSPEERS`, a version byte, the body's length (u32 LE) and CRC32C (u32 LE), then the body,
//! the postcard encoding of the members. Written to a temporary file, fsynced, renamed.

use super::membership::{Live, MemberInfo, Membership, RingStatus};
use hearsay_types::{NodeId, Token};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

/// File name under the data directory.
pub const PEERS_FILE: &str = "peers";
const MAGIC: &[u8; 7] = b"HSPEERS";
/// Version byte of the file format.
pub const PEERS_FORMAT_VERSION: u8 = 1;
/// Header: magic, version, body length, body CRC32C.
const HEADER_BYTES: usize = 7 + 1 + 4 + 4;
/// Largest file read: about 1,000 members of 112 tokens each at ~10 bytes a token, with room
/// to spare. A bigger file is not ours (or damaged) and is ignored rather than allocated.
pub const MAX_PEERS_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// One member's place in the ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMember {
    pub id: NodeId,
    pub status: RingStatus,
    pub dc: String,
    pub rack: String,
    pub weight: u32,
    pub tokens: Vec<Token>,
    pub cluster_addr: Option<SocketAddr>,
}

impl SavedMember {
    fn of(m: &MemberInfo) -> SavedMember {
        SavedMember {
            id: m.id,
            status: m.status,
            dc: m.dc.clone(),
            rack: m.rack.clone(),
            weight: m.weight,
            tokens: m.tokens.clone(),
            cluster_addr: m.cluster_addr,
        }
    }
}

/// Statuses that give a member a place in the ring (as owner or as pending owner).
fn placed(status: RingStatus) -> bool {
    matches!(
        status,
        RingStatus::Normal | RingStatus::Joining | RingStatus::Leaving
    )
}

/// The last known place of every member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedRing {
    members: BTreeMap<NodeId, SavedMember>,
}

impl SavedRing {
    /// Members known, by id.
    pub fn members(&self) -> impl Iterator<Item = &SavedMember> {
        self.members.values()
    }

    /// Whether any member other than `me` is known.
    pub fn has_peers(&self, me: NodeId) -> bool {
        self.members.keys().any(|id| *id != me)
    }

    /// Records what gossip says: a member with tokens and a placed status is remembered as
    /// it is now; a removed or departed member is forgotten; a member without tokens or
    /// status (a new incarnation whose states have not all arrived) changes nothing.
    /// Returns whether anything changed.
    pub fn remember(&mut self, gossip: &Membership) -> bool {
        let mut changed = false;
        for m in gossip.members.values() {
            match m.status {
                RingStatus::Removed | RingStatus::Left => {
                    changed |= self.members.remove(&m.id).is_some();
                }
                s if placed(s) && !m.tokens.is_empty() => {
                    let saved = SavedMember::of(m);
                    if self.members.get(&m.id) != Some(&saved) {
                        self.members.insert(m.id, saved);
                        changed = true;
                    }
                }
                _ => {}
            }
        }
        changed
    }

    /// Completes `gossip` with what is known: a member gossip lists without tokens or
    /// status gets its last known place (liveness as gossip says); a known member gossip
    /// has not heard of yet (this node just started) is added with its place and counted
    /// DOWN until gossip says otherwise. `me` is never added (this node is always in its own
    /// gossip).
    pub fn fill(&self, gossip: &mut Membership, me: NodeId) {
        for saved in self.members.values() {
            match gossip.members.get_mut(&saved.id) {
                Some(m) => {
                    let departed = matches!(m.status, RingStatus::Removed | RingStatus::Left)
                        || m.live == Live::Removed;
                    if !departed && (m.tokens.is_empty() || !placed(m.status)) {
                        m.tokens = saved.tokens.clone();
                        m.status = saved.status;
                        m.dc = saved.dc.clone();
                        m.rack = saved.rack.clone();
                        m.weight = saved.weight;
                        if m.cluster_addr.is_none() {
                            m.cluster_addr = saved.cluster_addr;
                        }
                    }
                }
                None if saved.id != me => {
                    gossip.members.insert(
                        saved.id,
                        MemberInfo {
                            id: saved.id,
                            status: saved.status,
                            live: Live::Down,
                            dc: saved.dc.clone(),
                            rack: saved.rack.clone(),
                            weight: saved.weight,
                            tokens: saved.tokens.clone(),
                            cluster_addr: saved.cluster_addr,
                            client_addr: None,
                            admin_addr: None,
                            schema_version: None,
                            load_bytes: None,
                            generation: 0,
                            heartbeat: 0,
                            phi: None,
                            health: Vec::new(),
                        },
                    );
                }
                None => {}
            }
        }
    }

    /// Encodes the file.
    pub fn encode(&self) -> Vec<u8> {
        let members: Vec<&SavedMember> = self.members.values().collect();
        let body = postcard::to_allocvec(&members).unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.extend_from_slice(MAGIC);
        out.push(PEERS_FORMAT_VERSION);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes [`SavedRing::encode`]; an error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<SavedRing, String> {
        if bytes.len() < HEADER_BYTES || &bytes[..7] != MAGIC {
            return Err("not a peers file".into());
        }
        if bytes[7] != PEERS_FORMAT_VERSION {
            return Err(format!("unknown peers file version {}", bytes[7]));
        }
        let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        let body = &bytes[HEADER_BYTES..];
        if body.len() != len {
            return Err(format!(
                "peers file body is {} bytes, header says {len}",
                body.len()
            ));
        }
        if crc32c::crc32c(body) != crc {
            return Err("peers file checksum mismatch".into());
        }
        let members: Vec<SavedMember> =
            postcard::from_bytes(body).map_err(|e| format!("peers file body: {e}"))?;
        Ok(SavedRing {
            members: members.into_iter().map(|m| (m.id, m)).collect(),
        })
    }

    /// Loads the saved ring; a missing file is an empty ring, a damaged one is logged and
    /// ignored (see the module docs).
    pub fn load(dir: &Path) -> SavedRing {
        let path = dir.join(PEERS_FILE);
        let read = || -> Result<Option<SavedRing>, String> {
            match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.to_string()),
                Ok(m) if m.len() > MAX_PEERS_FILE_BYTES => {
                    return Err(format!("{} bytes is too large", m.len()));
                }
                Ok(_) => {}
            }
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            SavedRing::decode(&bytes).map(Some)
        };
        match read() {
            Ok(r) => r.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring the saved ring; gossip will refill it");
                SavedRing::default()
            }
        }
    }

    /// Saves durably (temporary file, fsync, rename, directory fsync).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{PEERS_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&self.encode())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(PEERS_FILE))?;
        if let Ok(d) = std::fs::File::open(dir) {
            d.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn three() -> Membership {
        let mut ms = Membership::default();
        for (i, t) in [(1u128, -100i64), (2, 0), (3, 100)] {
            ms.members.insert(
                NodeId(i),
                MemberInfo::normal(NodeId(i), addr(i as u16), vec![Token(t)]),
            );
        }
        ms
    }

    #[test]
    fn a_restarting_member_keeps_its_place() {
        let mut saved = SavedRing::default();
        assert!(saved.remember(&three()));
        assert!(!saved.remember(&three()), "nothing new");
        // Node 2 restarted: gossip has its new generation, without tokens or status yet.
        let mut now = three();
        let m2 = now.members.get_mut(&NodeId(2)).unwrap();
        m2.tokens.clear();
        m2.status = RingStatus::Unknown;
        m2.generation = 2;
        assert!(
            !saved.remember(&now),
            "an incomplete member changes nothing"
        );
        saved.fill(&mut now, NodeId(1));
        assert_eq!(now, {
            let mut want = three();
            want.members.get_mut(&NodeId(2)).unwrap().generation = 2;
            want
        });
        let (ring, _) = now.ring_and_transitions();
        assert_eq!(ring.members().count(), 3);
    }

    #[test]
    fn members_not_heard_of_yet_are_placed_but_down() {
        let mut saved = SavedRing::default();
        saved.remember(&three());
        // Node 1 restarted and heard nobody yet: its gossip holds only itself.
        let mut now = Membership::default();
        let me = three().members[&NodeId(1)].clone();
        now.members.insert(NodeId(1), me);
        saved.fill(&mut now, NodeId(1));
        assert_eq!(now.members.len(), 3);
        assert_eq!(now.members[&NodeId(2)].live, Live::Down);
        assert_eq!(now.members[&NodeId(3)].tokens, vec![Token(100)]);
        assert_eq!(now.members[&NodeId(1)].live, Live::Up);
    }

    #[test]
    fn removed_members_are_forgotten_and_not_filled() {
        let mut saved = SavedRing::default();
        saved.remember(&three());
        let mut now = three();
        let m3 = now.members.get_mut(&NodeId(3)).unwrap();
        m3.status = RingStatus::Removed;
        m3.live = Live::Removed;
        m3.tokens.clear();
        assert!(saved.remember(&now));
        assert!(!saved.members.contains_key(&NodeId(3)));
        saved.fill(&mut now, NodeId(1));
        assert!(now.members[&NodeId(3)].tokens.is_empty());
    }

    #[test]
    fn file_round_trips_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SavedRing::load(dir.path()), SavedRing::default());
        let mut saved = SavedRing::default();
        saved.remember(&three());
        saved.save(dir.path()).unwrap();
        assert_eq!(SavedRing::load(dir.path()), saved);
        let path = dir.path().join(PEERS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(SavedRing::decode(&bytes).unwrap_err().contains("checksum"));
        assert_eq!(SavedRing::load(dir.path()), SavedRing::default());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = SavedRing::decode(&bytes);
            let mut good = SavedRing::default();
            good.remember(&three());
            let mut enc = good.encode();
            let n = enc.len().min(bytes.len());
            enc[..n].copy_from_slice(&bytes[..n]);
            let _ = SavedRing::decode(&enc);
        }
    }
}
