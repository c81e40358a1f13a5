//! State shared by all connections (store, config, counters, the client registry) and the
//! per-connection session.

use super::CmdId;
use crate::config::NodeConfig;
use crate::resp::Protocol;
use crate::store::{RequestContext, Store};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

/// Counters the server exports (INFO stats, later Prometheus). Plain relaxed atomics: they
/// are statistics, never used for synchronisation.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections_received: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub connected_clients: AtomicU64,
    pub commands_processed: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub idle_disconnects: AtomicU64,
    pub slow_request_disconnects: AtomicU64,
    pub output_limit_disconnects: AtomicU64,
    pub request_limit_disconnects: AtomicU64,
}

impl ServerStats {
    pub fn inc_commands(&self) {
        self.commands_processed.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What CLIENT LIST shows about one connection; shared between its task and the registry.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub created: Instant,
    pub name: Mutex<Option<String>>,
    pub lib_name: Mutex<Option<String>>,
    pub lib_ver: Mutex<Option<String>>,
    pub last_active_ms: AtomicU64,
    last_cmd: AtomicU8,
    pub resp: AtomicU8,
}

impl ClientInfo {
    pub fn new(id: u64, addr: SocketAddr, laddr: SocketAddr) -> ClientInfo {
        ClientInfo {
            id,
            addr,
            laddr,
            created: Instant::now(),
            name: Mutex::new(None),
            lib_name: Mutex::new(None),
            lib_ver: Mutex::new(None),
            last_active_ms: AtomicU64::new(0),
            last_cmd: AtomicU8::new(u8::MAX),
            resp: AtomicU8::new(2),
        }
    }

    pub fn set_last_command(&self, id: CmdId) {
        let idx = super::COMMANDS
            .iter()
            .position(|c| c.id == id)
            .unwrap_or(255);
        self.last_cmd.store(idx as u8, Ordering::Relaxed);
    }

    /// Records activity now (the connection loop calls it once per read of requests).
    pub fn touch(&self) {
        self.last_active_ms
            .store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn last_command(&self) -> &'static str {
        super::COMMANDS
            .get(self.last_cmd.load(Ordering::Relaxed) as usize)
            .map_or("NULL", |c| c.name)
    }

    /// One line of CLIENT LIST, in Redis's format (fields we do not track read as zero).
    pub fn list_line(&self) -> String {
        let age = self.created.elapsed().as_secs();
        let idle_ms = (self.created.elapsed().as_millis() as u64)
            .saturating_sub(self.last_active_ms.load(Ordering::Relaxed));
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.name.lock().as_deref().unwrap_or(""),
            age,
            idle_ms / 1000,
            self.last_command(),
            self.resp.load(Ordering::Relaxed),
            self.lib_name.lock().as_deref().unwrap_or(""),
            self.lib_ver.lock().as_deref().unwrap_or(""),
        )
    }
}

/// Everything a connection needs from the server.
#[derive(Debug)]
pub struct ServerState {
    pub store: Arc<dyn Store>,
    pub config: NodeConfig,
    pub stats: ServerStats,
    pub clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    next_client_id: AtomicU64,
    pub started: Instant,
    /// Random 40-hex-digit id of this process run (INFO run_id).
    pub run_id: String,
    /// The address the client listener actually bound (port 0 resolved).
    pub bound_listen: Mutex<Option<SocketAddr>>,
}

impl ServerState {
    pub fn new(store: Arc<dyn Store>, config: NodeConfig) -> ServerState {
        ServerState {
            store,
            config,
            stats: ServerStats::default(),
            clients: Mutex::new(BTreeMap::new()),
            next_client_id: AtomicU64::new(1),
            started: Instant::now(),
            run_id: format!(
                "{:016x}{:016x}{:08x}",
                rand_u64(),
                rand_u64(),
                rand_u64() as u32
            ),
            bound_listen: Mutex::new(None),
        }
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a connection for CLIENT LIST.
    pub fn register(&self, info: Arc<ClientInfo>) {
        self.clients.lock().insert(info.id, info);
    }

    pub fn unregister(&self, id: u64) {
        self.clients.lock().remove(&id);
    }
}

fn rand_u64() -> u64 {
    // Not security relevant: identifies a process run in INFO. std's RandomState is seeded
    // randomly per process, which is all we need without another dependency.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    pub info: Arc<ClientInfo>,
    pub proto: Protocol,
    pub authenticated: bool,
    pub ctx: RequestContext,
    /// The client chose its level with CONSISTENCY (USE then keeps it).
    pub consistency_set: bool,
}

impl Session {
    pub fn new(info: Arc<ClientInfo>, needs_auth: bool) -> Session {
        Session {
            info,
            proto: Protocol::Resp2,
            authenticated: !needs_auth,
            ctx: RequestContext::default(),
            consistency_set: false,
        }
    }
}
