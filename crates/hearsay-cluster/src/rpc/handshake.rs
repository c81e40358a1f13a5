//! The connection handshake, as a sans-IO state machine per side.
//!
//! Both sides prove they know the cluster secret without sending it, and each proof is bound
//! to both fresh nonces, the cluster name and both node ids, so it cannot be replayed on
//! another connection, reflected back (the two proofs use different labels), or moved to
//! another cluster:
//!
//! ```text
//! client -> server  Hello     { cluster_name, client_id, client_nonce }
//! server -> client  Challenge { server_id, server_nonce, server_proof }
//! client -> server  Proof     { client_proof }
//! server -> client  Welcome
//! proof = HMAC-SHA256(secret, label || len(cluster) || cluster || client_nonce
//!                             || server_nonce || client_id || server_id)
//! ```
//!
//! Either side answers a failed check with `Refused { reason }` and closes. The server checks
//! the cluster name before it spends an HMAC on a stranger.

use hearsay_types::NodeId;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;

/// Bytes of a nonce. 32 random bytes never repeat in practice.
pub const NONCE_BYTES: usize = 32;

/// Longest cluster name accepted, in bytes; names are operator-chosen identifiers.
pub const MAX_CLUSTER_NAME_BYTES: usize = 128;

const SERVER_LABEL: &[u8] = b"hearsay-rpc-v1 server proof";
const CLIENT_LABEL: &[u8] = b"hearsay-rpc-v1 client proof";

/// The shared cluster secret. Never logged: its `Debug` shows only its length.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    /// Wraps the secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> ClusterSecret {
        ClusterSecret(bytes.into())
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret({} bytes)", self.0.len())
    }
}

/// Who this node is, as far as the RPC layer is concerned.
#[derive(Clone, Debug)]
pub struct Identity {
    pub node_id: NodeId,
    pub cluster_name: String,
    pub secret: ClusterSecret,
}

/// The body of a `Handshake` frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeMsg {
    Hello {
        cluster_name: String,
        node_id: NodeId,
        nonce: [u8; NONCE_BYTES],
    },
    Challenge {
        node_id: NodeId,
        nonce: [u8; NONCE_BYTES],
        proof: [u8; 32],
    },
    Proof {
        proof: [u8; 32],
    },
    Welcome,
    Refused {
        reason: String,
    },
}

/// Why a handshake failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer belongs to another cluster.
    #[error("wrong cluster name: expected '{expected}', peer says '{found}'")]
    WrongCluster { expected: String, found: String },
    /// The peer's proof does not verify: it does not know our cluster secret.
    #[error("peer's proof does not verify (wrong cluster secret)")]
    BadProof,
    /// The peer refused us; its reason.
    #[error("peer refused: {0}")]
    RefusedByPeer(String),
    /// A message out of order or malformed.
    #[error("handshake protocol violation: {0}")]
    Protocol(String),
}

impl HandshakeError {
    /// What to tell the peer in `Refused` (never for `RefusedByPeer`: they already know).
    /// Deliberately does not echo our cluster name to a stranger.
    pub fn reason_for_peer(&self) -> Option<String> {
        match self {
            HandshakeError::WrongCluster { found, .. } => {
                Some(format!("wrong cluster name '{found}'"))
            }
            HandshakeError::BadProof => Some("proof does not verify (wrong cluster secret)".into()),
            HandshakeError::RefusedByPeer(_) => None,
            HandshakeError::Protocol(m) => Some(m.clone()),
        }
    }
}

fn proof(
    secret: &ClusterSecret,
    label: &[u8],
    cluster: &str,
    client_nonce: &[u8; NONCE_BYTES],
    server_nonce: &[u8; NONCE_BYTES],
    client_id: NodeId,
    server_id: NodeId,
) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(label);
    mac.update(&(cluster.len() as u32).to_be_bytes());
    mac.update(cluster.as_bytes());
    mac.update(client_nonce);
    mac.update(server_nonce);
    mac.update(&client_id.0.to_be_bytes());
    mac.update(&server_id.0.to_be_bytes());
    mac
}

fn check_cluster(expected: &str, found: &str) -> Result<(), HandshakeError> {
    if found.len() > MAX_CLUSTER_NAME_BYTES {
        return Err(HandshakeError::Protocol(format!(
            "cluster name of {} bytes exceeds {MAX_CLUSTER_NAME_BYTES}",
            found.len()
        )));
    }
    if found != expected {
        return Err(HandshakeError::WrongCluster {
            expected: expected.to_string(),
            found: found.to_string(),
        });
    }
    Ok(())
}

enum ClientState {
    AwaitChallenge,
    AwaitWelcome { server_id: NodeId },
    Done,
}

/// The connecting side.
pub struct ClientHandshake {
    identity: Identity,
    nonce: [u8; NONCE_BYTES],
    state: ClientState,
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("node_id", &self.identity.node_id)
            .finish_non_exhaustive()
    }
}

/// What the client does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientStep {
    /// Send this and wait for the next message.
    Send(HandshakeMsg),
    /// The server is proven and has accepted us.
    Established { server_id: NodeId },
}

impl ClientHandshake {
    /// Starts a handshake with a fresh `nonce`; returns the `Hello` to send.
    pub fn start(identity: Identity, nonce: [u8; NONCE_BYTES]) -> (ClientHandshake, HandshakeMsg) {
        let hello = HandshakeMsg::Hello {
            cluster_name: identity.cluster_name.clone(),
            node_id: identity.node_id,
            nonce,
        };
        (
            ClientHandshake {
                identity,
                nonce,
                state: ClientState::AwaitChallenge,
            },
            hello,
        )
    }

    /// Feeds the server's next message.
    pub fn on_message(&mut self, msg: HandshakeMsg) -> Result<ClientStep, HandshakeError> {
        match (&self.state, msg) {
            (_, HandshakeMsg::Refused { reason }) => Err(HandshakeError::RefusedByPeer(reason)),
            (
                ClientState::AwaitChallenge,
                HandshakeMsg::Challenge {
                    node_id,
                    nonce,
                    proof: server_proof,
                },
            ) => {
                let id = &self.identity;
                proof(
                    &id.secret,
                    SERVER_LABEL,
                    &id.cluster_name,
                    &self.nonce,
                    &nonce,
                    id.node_id,
                    node_id,
                )
                .verify_slice(&server_proof)
                .map_err(|_| HandshakeError::BadProof)?;
                let ours = proof(
                    &id.secret,
                    CLIENT_LABEL,
                    &id.cluster_name,
                    &self.nonce,
                    &nonce,
                    id.node_id,
                    node_id,
                )
                .finalize()
                .into_bytes()
                .into();
                self.state = ClientState::AwaitWelcome { server_id: node_id };
                Ok(ClientStep::Send(HandshakeMsg::Proof { proof: ours }))
            }
            (ClientState::AwaitWelcome { server_id }, HandshakeMsg::Welcome) => {
                let server_id = *server_id;
                self.state = ClientState::Done;
                Ok(ClientStep::Established { server_id })
            }
            (_, other) => Err(HandshakeError::Protocol(format!(
                "unexpected {} from server",
                msg_name(&other)
            ))),
        }
    }
}

enum ServerState {
    AwaitHello,
    AwaitProof {
        client_id: NodeId,
        client_nonce: [u8; NONCE_BYTES],
    },
    Done,
}

/// The accepting side.
pub struct ServerHandshake {
    identity: Identity,
    nonce: [u8; NONCE_BYTES],
    state: ServerState,
}

impl fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandshake")
            .field("node_id", &self.identity.node_id)
            .finish_non_exhaustive()
    }
}

/// What the server does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerStep {
    /// Send this and wait for the next message.
    Send(HandshakeMsg),
    /// The client is proven: send `Welcome` and serve it.
    Established {
        client_id: NodeId,
        welcome: HandshakeMsg,
    },
}

impl ServerHandshake {
    /// Waits for a `Hello`; `nonce` must be fresh.
    pub fn new(identity: Identity, nonce: [u8; NONCE_BYTES]) -> ServerHandshake {
        ServerHandshake {
            identity,
            nonce,
            state: ServerState::AwaitHello,
        }
    }

    /// Feeds the client's next message.
    pub fn on_message(&mut self, msg: HandshakeMsg) -> Result<ServerStep, HandshakeError> {
        match (&self.state, msg) {
            (_, HandshakeMsg::Refused { reason }) => Err(HandshakeError::RefusedByPeer(reason)),
            (
                ServerState::AwaitHello,
                HandshakeMsg::Hello {
                    cluster_name,
                    node_id,
                    nonce,
                },
            ) => {
                let id = &self.identity;
                check_cluster(&id.cluster_name, &cluster_name)?;
                let ours = proof(
                    &id.secret,
                    SERVER_LABEL,
                    &id.cluster_name,
                    &nonce,
                    &self.nonce,
                    node_id,
                    id.node_id,
                )
                .finalize()
                .into_bytes()
                .into();
                self.state = ServerState::AwaitProof {
                    client_id: node_id,
                    client_nonce: nonce,
                };
                Ok(ServerStep::Send(HandshakeMsg::Challenge {
                    node_id: id.node_id,
                    nonce: self.nonce,
                    proof: ours,
                }))
            }
            (
                ServerState::AwaitProof {
                    client_id,
                    client_nonce,
                },
                HandshakeMsg::Proof {
                    proof: client_proof,
                },
            ) => {
                let id = &self.identity;
                let client_id = *client_id;
                proof(
                    &id.secret,
                    CLIENT_LABEL,
                    &id.cluster_name,
                    client_nonce,
                    &self.nonce,
                    client_id,
                    id.node_id,
                )
                .verify_slice(&client_proof)
                .map_err(|_| HandshakeError::BadProof)?;
                self.state = ServerState::Done;
                Ok(ServerStep::Established {
                    client_id,
                    welcome: HandshakeMsg::Welcome,
                })
            }
            (_, other) => Err(HandshakeError::Protocol(format!(
                "unexpected {} from client",
                msg_name(&other)
            ))),
        }
    }
}

fn msg_name(m: &HandshakeMsg) -> &'static str {
    match m {
        HandshakeMsg::Hello { .. } => "Hello",
        HandshakeMsg::Challenge { .. } => "Challenge",
        HandshakeMsg::Proof { .. } => "Proof",
        HandshakeMsg::Welcome => "Welcome",
        HandshakeMsg::Refused { .. } => "Refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(node: u128, cluster: &str, secret: &str) -> Identity {
        Identity {
            node_id: NodeId(node),
            cluster_name: cluster.into(),
            secret: ClusterSecret::new(secret.as_bytes()),
        }
    }

    /// Runs a handshake to completion in memory; returns each side's outcome.
    fn run(
        client: Identity,
        server: Identity,
    ) -> (
        Result<NodeId, HandshakeError>,
        Result<NodeId, HandshakeError>,
    ) {
        let (mut c, hello) = ClientHandshake::start(client, [1; NONCE_BYTES]);
        let mut s = ServerHandshake::new(server, [2; NONCE_BYTES]);
        let challenge = match s.on_message(hello) {
            Ok(ServerStep::Send(m)) => m,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => return (Err(HandshakeError::RefusedByPeer(e.to_string())), Err(e)),
        };
        let proof = match c.on_message(challenge) {
            Ok(ClientStep::Send(m)) => m,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => return (Err(e), Err(HandshakeError::RefusedByPeer("client".into()))),
        };
        match s.on_message(proof) {
            Ok(ServerStep::Established { client_id, welcome }) => match c.on_message(welcome) {
                Ok(ClientStep::Established { server_id }) => (Ok(server_id), Ok(client_id)),
                other => panic!("unexpected {other:?}"),
            },
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => (Err(HandshakeError::RefusedByPeer(e.to_string())), Err(e)),
        }
    }

    #[test]
    fn same_secret_and_cluster_establish_both_ways() {
        let (c, s) = run(ident(1, "prod", "s3cret"), ident(2, "prod", "s3cret"));
        assert_eq!(c, Ok(NodeId(2)));
        assert_eq!(s, Ok(NodeId(1)));
    }

    #[test]
    fn wrong_secret_is_caught_by_whichever_side_checks_first() {
        // The client checks the server's proof first, so a server without the secret is
        // refused by the client...
        let (c, _) = run(ident(1, "prod", "right"), ident(2, "prod", "wrong"));
        assert_eq!(c, Err(HandshakeError::BadProof));
        // ...and a client without the secret never gets past the server, even though it
        // happily "verifies" nothing: its proof fails at the server.
        let (mut c, hello) = ClientHandshake::start(ident(1, "prod", "wrong"), [1; NONCE_BYTES]);
        let mut s = ServerHandshake::new(ident(2, "prod", "right"), [2; NONCE_BYTES]);
        let Ok(ServerStep::Send(challenge)) = s.on_message(hello) else {
            panic!("server should challenge")
        };
        // The client cannot verify the server (different secrets) and refuses.
        assert_eq!(c.on_message(challenge), Err(HandshakeError::BadProof));
        // A client that skips verification and sends a made-up proof is refused by the server.
        assert_eq!(
            s.on_message(HandshakeMsg::Proof { proof: [0; 32] }),
            Err(HandshakeError::BadProof)
        );
    }

    #[test]
    fn wrong_cluster_is_refused_before_any_proof() {
        let (_, s) = run(ident(1, "staging", "x"), ident(2, "prod", "x"));
        assert!(
            matches!(s, Err(HandshakeError::WrongCluster { .. })),
            "{s:?}"
        );
        let reason = s.unwrap_err().reason_for_peer().unwrap();
        assert!(
            !reason.contains("prod"),
            "must not reveal our name: {reason}"
        );
    }

    #[test]
    fn out_of_order_messages_are_protocol_errors() {
        let mut s = ServerHandshake::new(ident(2, "prod", "x"), [2; NONCE_BYTES]);
        assert!(matches!(
            s.on_message(HandshakeMsg::Welcome),
            Err(HandshakeError::Protocol(_))
        ));
        let (mut c, _) = ClientHandshake::start(ident(1, "prod", "x"), [1; NONCE_BYTES]);
        assert!(matches!(
            c.on_message(HandshakeMsg::Welcome),
            Err(HandshakeError::Protocol(_))
        ));
    }

    fn arb_msg() -> impl proptest::strategy::Strategy<Value = HandshakeMsg> {
        use proptest::prelude::*;
        prop_oneof![
            (
                any::<u128>(),
                any::<[u8; 32]>(),
                prop_oneof![Just("prod".to_string()), ".{0,8}"]
            )
                .prop_map(|(id, nonce, cluster_name)| HandshakeMsg::Hello {
                    cluster_name,
                    node_id: NodeId(id),
                    nonce
                }),
            (any::<u128>(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(id, nonce, proof)| {
                HandshakeMsg::Challenge {
                    node_id: NodeId(id),
                    nonce,
                    proof,
                }
            }),
            any::<[u8; 32]>().prop_map(|proof| HandshakeMsg::Proof { proof }),
            Just(HandshakeMsg::Welcome),
            ".{0,8}".prop_map(|reason| HandshakeMsg::Refused { reason }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// A peer that does not know the secret, sending any sequence of messages, never gets
        /// either side to "established" (and nothing panics).
        #[test]
        fn no_message_sequence_establishes_without_the_secret(
            msgs in proptest::collection::vec(arb_msg(), 0..6),
        ) {
            let mut s = ServerHandshake::new(ident(2, "prod", "secret"), [2; NONCE_BYTES]);
            let (mut c, _) = ClientHandshake::start(ident(1, "prod", "secret"), [1; NONCE_BYTES]);
            for m in msgs {
                let established_server = matches!(s.on_message(m.clone()), Ok(ServerStep::Established { .. }));
                proptest::prop_assert!(!established_server, "server established by a stranger");
                let established_client = matches!(c.on_message(m), Ok(ClientStep::Established { .. }));
                proptest::prop_assert!(!established_client, "client established by a stranger");
            }
        }
    }

    #[test]
    fn a_proof_from_one_connection_does_not_work_on_another() {
        // Replay: record a client's proof for server nonce A, present it where the server
        // chose nonce B.
        let id_c = ident(1, "prod", "x");
        let (mut c, hello) = ClientHandshake::start(id_c.clone(), [1; NONCE_BYTES]);
        let mut s1 = ServerHandshake::new(ident(2, "prod", "x"), [7; NONCE_BYTES]);
        let Ok(ServerStep::Send(ch)) = s1.on_message(hello.clone()) else {
            panic!()
        };
        let Ok(ClientStep::Send(recorded)) = c.on_message(ch) else {
            panic!()
        };
        let mut s2 = ServerHandshake::new(ident(2, "prod", "x"), [8; NONCE_BYTES]);
        let Ok(ServerStep::Send(_)) = s2.on_message(hello) else {
            panic!()
        };
        assert_eq!(s2.on_message(recorded), Err(HandshakeError::BadProof));
    }
}
