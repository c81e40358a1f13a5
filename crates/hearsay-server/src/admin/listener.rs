//! The admin port's listener: at most a fixed number of connections at once, each closed
//! when it fails to deliver a request in time.
//!
//! axum's own server has neither bound (hyper's header-read timeout needs a timer axum does
//! not install), so both live here, in the I/O type axum is handed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Pause after a failed `accept` (out of file descriptors, ...), so a persistent failure
/// does not spin a core; the failure usually clears once connections close.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// A TCP listener that holds one semaphore permit per open connection.
#[derive(Debug)]
pub(super) struct BoundedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    request_timeout: Duration,
}

impl BoundedListener {
    pub(super) fn new(
        inner: TcpListener,
        max_connections: usize,
        request_timeout: Duration,
    ) -> BoundedListener {
        assert!(
            max_connections > 0,
            "the admin port must accept connections"
        );
        BoundedListener {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
            request_timeout,
        }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = AdminConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (AdminConn, SocketAddr) {
        // The semaphore is never closed, so this only waits; `ok()` keeps a closed one
        // (impossible) from panicking the server.
        let permit = self.permits.clone().acquire_owned().await.ok();
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (AdminConn::new(stream, permit, self.request_timeout), addr);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin port: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One admin connection. Reads fail with `TimedOut` once the deadline passes; the deadline
/// is `request_timeout` after the connection opened or after the server last wrote (a
/// response), so a request must arrive whole within that time and an idle keep-alive
/// connection closes.
#[derive(Debug)]
pub(super) struct AdminConn {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
    request_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl AdminConn {
    fn new(
        stream: TcpStream,
        permit: Option<OwnedSemaphorePermit>,
        request_timeout: Duration,
    ) -> AdminConn {
        AdminConn {
            stream,
            _permit: permit,
            request_timeout,
            deadline: Box::pin(tokio::time::sleep(request_timeout)),
        }
    }

    fn push_deadline(&mut self) {
        let at = Instant::now() + self.request_timeout;
        self.deadline.as_mut().reset(at);
    }
}

impl AsyncRead for AdminConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "admin connection sent no complete request in time",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for AdminConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.push_deadline();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.push_deadline();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
