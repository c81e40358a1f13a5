//! The network seam: how the RPC layer gets byte streams. Production uses TCP
//! ([`TcpTransport`], [`TcpListener`]); tests and the simulator can use [`MemNetwork`], an
//! in-process network whose links can be cut, so partitions and dead peers are cheap to
//! reproduce without namespaces or real sockets.
//!
//! Laws: a stream pair is ordered and reliable until it ends (as TCP is); `connect` fails
//! rather than hangs when nothing listens; a cut link behaves like a pulled cable (no more
//! bytes either way; the ends see EOF/errors), not like a slow one.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The reading half of a connection.
pub type BoxedRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection.
pub type BoxedWrite = Box<dyn AsyncWrite + Send + Unpin>;
/// A future returned by the seam's methods.
pub type TransportFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

/// Opens connections.
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Connects to `addr`; the caller bounds the wait with its own timeout.
    fn connect(&self, addr: SocketAddr) -> TransportFuture<'_, (BoxedRead, BoxedWrite)>;
}

/// Accepts connections.
pub trait Listener: Send + fmt::Debug + 'static {
    /// The address peers connect to.
    fn local_addr(&self) -> SocketAddr;
    /// The next connection and the peer's address. Cancel-safe.
    fn accept(&mut self) -> TransportFuture<'_, (BoxedRead, BoxedWrite, SocketAddr)>;
}

/// Real TCP. Sets `TCP_NODELAY`: frames are written whole, and Nagle's delay would add up to
/// 40 ms to small requests.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpTransport;

impl Transport for TcpTransport {
    fn connect(&self, addr: SocketAddr) -> TransportFuture<'_, (BoxedRead, BoxedWrite)> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            Ok((Box::new(r) as BoxedRead, Box::new(w) as BoxedWrite))
        })
    }
}

/// A bound TCP listener.
#[derive(Debug)]
pub struct TcpListener {
    inner: tokio::net::TcpListener,
    local_addr: SocketAddr,
}

impl TcpListener {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let inner = tokio::net::TcpListener::bind(addr).await?;
        let local_addr = inner.local_addr()?;
        Ok(TcpListener { inner, local_addr })
    }
}

impl TcpListener {
    /// The bound address (with the real port after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Listener for TcpListener {
    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
    fn accept(&mut self) -> TransportFuture<'_, (BoxedRead, BoxedWrite, SocketAddr)> {
        Box::pin(async move {
            let (stream, peer) = self.inner.accept().await?;
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            Ok((Box::new(r) as BoxedRead, Box::new(w) as BoxedWrite, peer))
        })
    }
}

/// Bytes buffered in each direction of an in-memory link, like a socket buffer.
const MEM_LINK_BUFFER_BYTES: usize = 256 * 1024;

/// Connections waiting for a `MemListener` to accept them, like a listen backlog.
const MEM_ACCEPT_BACKLOG: usize = 128;

type Pending = (DuplexStream, SocketAddr, CancellationToken);

#[derive(Default)]
struct MemState {
    listeners: BTreeMap<SocketAddr, mpsc::Sender<Pending>>,
    /// Every link, by (client addr, server addr), so `cut` can end them.
    links: Vec<(SocketAddr, SocketAddr, CancellationToken)>,
    /// Pairs that cannot reach each other (stored both ways).
    cut: std::collections::BTreeSet<(SocketAddr, SocketAddr)>,
}

/// An in-process network of listeners and links, for tests and simulation.
#[derive(Clone, Default)]
pub struct MemNetwork {
    state: Arc<Mutex<MemState>>,
}

impl fmt::Debug for MemNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("MemNetwork")
            .field("listeners", &s.listeners.keys().collect::<Vec<_>>())
            .field("links", &s.links.len())
            .finish()
    }
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> MemNetwork {
        MemNetwork::default()
    }

    /// Listens on `addr`. Fails if something already listens there.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<MemListener> {
        let mut s = self.state.lock();
        if s.listeners.get(&addr).is_some_and(|tx| !tx.is_closed()) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} in use"),
            ));
        }
        let (tx, rx) = mpsc::channel(MEM_ACCEPT_BACKLOG);
        s.listeners.insert(addr, tx);
        Ok(MemListener { addr, rx })
    }

    /// A transport whose connections come from `local` (the address the server sees).
    pub fn transport(&self, local: SocketAddr) -> MemTransport {
        MemTransport {
            net: self.clone(),
            local,
        }
    }

    /// Partitions `a` from `b`: their links end, and new connections between them are
    /// refused, until [`MemNetwork::heal`].
    pub fn cut(&self, a: SocketAddr, b: SocketAddr) {
        let mut s = self.state.lock();
        s.cut.insert((a, b));
        s.cut.insert((b, a));
        s.links.retain(|(c, d, token)| {
            let hit = (*c == a && *d == b) || (*c == b && *d == a);
            if hit {
                token.cancel();
            }
            !hit && !token.is_cancelled()
        });
    }

    /// Undoes every cut.
    pub fn heal(&self) {
        self.state.lock().cut.clear();
    }

    fn connect(&self, from: SocketAddr, to: SocketAddr) -> io::Result<(BoxedRead, BoxedWrite)> {
        let mut s = self.state.lock();
        if s.cut.contains(&(from, to)) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{from} cannot reach {to}"),
            ));
        }
        let refused = || {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("nothing listens on {to}"),
            )
        };
        let tx = s.listeners.get(&to).ok_or_else(refused)?.clone();
        let (client, server) = tokio::io::duplex(MEM_LINK_BUFFER_BYTES);
        let token = CancellationToken::new();
        tx.try_send((server, from, token.clone()))
            .map_err(|_| refused())?;
        s.links.retain(|(_, _, t)| !t.is_cancelled());
        s.links.push((from, to, token.clone()));
        Ok(split(client, token))
    }
}

fn split(stream: DuplexStream, token: CancellationToken) -> (BoxedRead, BoxedWrite) {
    let (r, w) = tokio::io::split(stream);
    (
        Box::new(Cuttable::new(r, token.clone())),
        Box::new(Cuttable::new(w, token)),
    )
}

/// One end of an in-memory link that fails, and wakes whoever waits on it, when the link is
/// cut.
struct Cuttable<T> {
    inner: T,
    /// Kept across polls so the waker stays registered while the end is idle.
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<T> Cuttable<T> {
    fn new(inner: T, token: CancellationToken) -> Cuttable<T> {
        Cuttable {
            inner,
            cut: Box::pin(token.cancelled_owned()),
        }
    }

    fn is_cut(&mut self, cx: &mut Context<'_>) -> bool {
        self.cut.as_mut().poll(cx).is_ready()
    }
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "link cut")
}

impl<T: AsyncRead + Unpin> AsyncRead for Cuttable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Cuttable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects through a [`MemNetwork`] from a fixed local address.
#[derive(Debug, Clone)]
pub struct MemTransport {
    net: MemNetwork,
    local: SocketAddr,
}

impl Transport for MemTransport {
    fn connect(&self, addr: SocketAddr) -> TransportFuture<'_, (BoxedRead, BoxedWrite)> {
        let r = self.net.connect(self.local, addr);
        Box::pin(async move { r })
    }
}

/// A listener on a [`MemNetwork`].
#[derive(Debug)]
pub struct MemListener {
    addr: SocketAddr,
    rx: mpsc::Receiver<Pending>,
}

impl Listener for MemListener {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    fn accept(&mut self) -> TransportFuture<'_, (BoxedRead, BoxedWrite, SocketAddr)> {
        Box::pin(async move {
            let (stream, peer, token) =
                self.rx.recv().await.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotConnected, "network dropped")
                })?;
            let (r, w) = split(stream, token);
            Ok((r, w, peer))
        })
    }
}
