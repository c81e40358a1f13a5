//! A node joining (or rejoining) its cluster: gossip started with the node's states already
//! set, tokens chosen at first start (from the seeds' ring) or reloaded, JOINING → NORMAL,
//! and the readiness gate (a restarted node coordinates nothing until it has heard from a
//! peer; see `docs/cluster.md`, "Restarts").

use super::membership::{self, Membership, RingStatus};
use super::{Inner, Node, NodeError, tokens};
use hearsay_gossip::StateKey;
use hearsay_gossip::driver::GossipHandle;
use hearsay_ring::{Member, Ring};
use hearsay_types::Token;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Gossip rounds a new node stays JOINING (tokens announced) before NORMAL, so that every
/// node has seen its tokens as pending (writes reach it) before it owns ranges; also the
/// window in which two nodes that chose the same tokens find out.
const JOINING_ROUNDS: u64 = 3;
/// Attempts at binding the gossip UDP socket on the port the RPC server got (a restarted
/// node may find its old socket still closing), 50 ms apart.
const GOSSIP_BIND_ATTEMPTS: u32 = 40;

impl Node {
    /// Starts gossip with this node's states already set, so that its first packet carries
    /// them: a restarting node (`saved_tokens`) announces its tokens and NORMAL status from
    /// the start, and its peers never see its new incarnation without a place in the ring.
    pub(super) async fn start_gossip(
        &self,
        cluster_addr: SocketAddr,
        saved_tokens: Option<&[Token]>,
    ) -> Result<Arc<GossipHandle>, NodeError> {
        let inner = &self.inner;
        let mut cfg = inner.config.gossip_config();
        cfg.cluster_addr = cluster_addr;
        let c = &inner.config;
        let mut initial: Vec<(StateKey, Vec<u8>)> = Vec::new();
        // Place first: deltas go out in version order, so a delta cut short by the packet
        // budget still carries them.
        if let Some(t) = saved_tokens {
            initial.push((StateKey::Status, b"NORMAL".to_vec()));
            initial.push((StateKey::Tokens, membership::encode_tokens(t).into_bytes()));
        }
        initial.push((StateKey::Dc, c.dc.clone().into_bytes()));
        initial.push((StateKey::Rack, c.rack.clone().into_bytes()));
        initial.push((
            StateKey::Custom("weight".into()),
            c.weight.to_string().into_bytes(),
        ));
        if let Some(a) = c.client_addr {
            initial.push((StateKey::ClientAddr, a.to_string().into_bytes()));
        }
        if let Some(a) = c.admin_addr {
            initial.push((StateKey::AdminAddr, a.to_string().into_bytes()));
        }
        initial.push((
            StateKey::SchemaVersion,
            inner.schema.lock().version().into_bytes(),
        ));
        initial.push((StateKey::Load, inner.load_bytes().to_string().into_bytes()));
        let mut attempt = 0;
        let handle = loop {
            match GossipHandle::spawn_with(
                cfg.clone(),
                inner.id,
                inner.generation,
                inner.clock.clone(),
                initial.clone(),
                inner.rpc.context().net_faults.clone(),
            )
            .await
            {
                Ok(h) => break h,
                Err(hearsay_gossip::GossipError::Io(e)) if attempt + 1 < GOSSIP_BIND_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(error = %e, "gossip bind failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(NodeError::Startup(format!(
                        "cannot start gossip on {cluster_addr}: {e}"
                    )));
                }
            }
        };
        Ok(Arc::new(handle))
    }
}

impl Inner {
    /// Whether gossip has heard from another node since this one started: gossip learns of
    /// members only from packets received, and the saved ring is not gossip.
    pub(super) fn heard_from_peer(&self) -> bool {
        self.gossip().is_some_and(|g| {
            g.membership().members.iter().any(|m| {
                m.node_id != self.id.to_string()
                    && matches!(
                        m.liveness,
                        hearsay_gossip::Liveness::Up | hearsay_gossip::Liveness::Suspect
                    )
            })
        })
    }

    /// Marks the node ready once it has heard from a peer; returns whether it is ready.
    pub(super) fn check_ready(&self) -> bool {
        if self.ready.load(Relaxed) {
            return true;
        }
        if self.heard_from_peer() {
            self.ready.store(true, Relaxed);
            tracing::info!(node = %self.id, "heard from a peer; coordinating requests");
            return true;
        }
        false
    }

    /// Waits (at most `join_wait_ms`) until the node has heard from a peer. A node that
    /// restarts must not coordinate on a view of itself alone: until it has heard from
    /// somebody it refuses requests with [`NodeError::NotReady`] (the view worker keeps
    /// checking and lifts the refusal at first contact).
    pub(super) async fn await_contact(self: &Arc<Self>) {
        let deadline = Instant::now() + Duration::from_millis(self.config.join_wait_ms);
        let poll = Duration::from_millis((self.config.gossip.interval_ms / 4).clamp(10, 250));
        while !self.heard_from_peer() {
            if Instant::now() >= deadline {
                tracing::warn!(
                    node = %self.id,
                    wait_ms = self.config.join_wait_ms,
                    "no peer answered; refusing to coordinate requests until one does"
                );
                return;
            }
            tokio::time::sleep(poll).await;
        }
        // Judge our clock before the first write can mint a timestamp with it.
        self.refresh_view();
        self.probe_clocks().await;
        self.check_ready();
    }

    /// At first start: learns the ring from the seeds (bounded wait) and allocates balanced
    /// tokens, announcing them as JOINING, then saves them.
    pub(super) async fn choose_tokens(
        &self,
        gossip: &GossipHandle,
    ) -> Result<Vec<Token>, NodeError> {
        let interval = Duration::from_millis(self.config.gossip.interval_ms);
        let other_seeds: Vec<SocketAddr> = self
            .config
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != self.cluster_addr)
            .collect();
        if !other_seeds.is_empty() {
            let deadline = Instant::now() + Duration::from_millis(self.config.join_wait_ms);
            let mut heard_at: Option<Instant> = None;
            while Instant::now() < deadline {
                let ms = Membership::from_gossip(&gossip.membership());
                let heard = ms.members.values().any(|m| {
                    m.id != self.id && m.cluster_addr.is_some_and(|a| other_seeds.contains(&a))
                });
                if heard && heard_at.is_none() {
                    heard_at = Some(Instant::now());
                }
                // Two more rounds after the first answer: the seed's delta carries the ring.
                if heard_at.is_some_and(|t| t.elapsed() >= interval * 2) {
                    break;
                }
                tokio::time::sleep(interval / 2).await;
            }
            if heard_at.is_none() {
                tracing::warn!(seeds = ?other_seeds, "no seed answered; choosing tokens without the ring");
            }
        }
        let count = self.config.num_tokens * self.config.weight as usize;
        let me = Member {
            id: self.id,
            dc: self.config.dc.clone(),
            rack: self.config.rack.clone(),
            weight: self.config.weight,
            tokens: Vec::new(),
        };
        let mut chosen: Option<Vec<Token>> = None;
        for attempt in 0..3 {
            let ms = Membership::from_gossip(&gossip.membership());
            let others: Vec<Member> = ms
                .members
                .values()
                .filter(|m| {
                    m.id != self.id
                        && !m.tokens.is_empty()
                        && matches!(
                            m.status,
                            RingStatus::Normal | RingStatus::Joining | RingStatus::Leaving
                        )
                })
                .map(|m| Member {
                    id: m.id,
                    dc: m.dc.clone(),
                    rack: m.rack.clone(),
                    weight: m.weight,
                    tokens: m.tokens.clone(),
                })
                .filter(|m| Ring::new([m.clone()]).is_ok())
                .collect();
            let ring = Ring::new(others).unwrap_or_default();
            let tokens = match &chosen {
                // A clash with a node that chose at the same time: move to tokens derived from
                // our own id, which no other node computes.
                Some(_) => hearsay_ring::random_tokens(self.id, count),
                None => hearsay_ring::allocate_tokens(&ring, &me, &self.config.allocator_config()),
            };
            gossip
                .set_local_state(
                    StateKey::Tokens,
                    membership::encode_tokens(&tokens).into_bytes(),
                )
                .map_err(|e| NodeError::Startup(e.to_string()))?;
            let _ = gossip.set_local_state(StateKey::Status, b"JOINING".to_vec());
            tokio::time::sleep(interval * JOINING_ROUNDS as u32).await;
            let ms = Membership::from_gossip(&gossip.membership());
            let clash = ms.members.values().any(|m| {
                m.id < self.id
                    && m.status != RingStatus::Removed
                    && m.tokens.iter().any(|t| tokens.contains(t))
            });
            chosen = Some(tokens);
            if !clash {
                break;
            }
            tracing::warn!(
                attempt,
                "tokens clash with a node that joined at the same time; choosing again"
            );
        }
        let tokens = chosen.unwrap_or_default();
        tokens::save(&self.config.data_dir, &tokens).map_err(NodeError::Startup)?;
        Ok(tokens)
    }

    pub(super) async fn announce_normal(&self, gossip: &GossipHandle, tokens: &[Token]) {
        let _ = gossip.set_local_state(
            StateKey::Tokens,
            membership::encode_tokens(tokens).into_bytes(),
        );
        let _ = gossip.set_local_state(StateKey::Status, b"NORMAL".to_vec());
        self.refresh_view();
    }
}
