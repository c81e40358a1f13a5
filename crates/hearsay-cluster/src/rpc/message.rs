//! Typed messages and the server-side handler registry.
//!
//! Each request type implements [`Rpc`], which names its wire id and its response type, so a
//! caller can only ever get back the type the request promises (Garage's habit). A server
//! holds a [`Registry`] from method id to a type-erased handler; adding a message (Mutation,
//! Read, DigestRead, Hint, RepairRange, ...) is one `impl Rpc` plus one `register` call.

use bytes::Bytes;
use hearsay_types::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::time::Instant;

/// Wire id of a request type. 1..=15 are the RPC layer's own; the coordinator and the
/// other subsystems allocate from 16 upwards (the table is in `docs/rpc.md`). An id is never
/// reused for a different type: a mixed-version cluster would decode garbage.
pub type MethodId = u16;

/// The lowest method id available to users of the RPC layer.
pub const FIRST_USER_METHOD: MethodId = 16;

/// A request type. The response type is part of the request's type, so `call` is typed end to
/// end and a handler cannot answer with the wrong thing.
pub trait Rpc: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Wire id; unique among all request types (the registry refuses duplicates).
    const METHOD: MethodId;
    /// Human-readable name, for logs and errors.
    const NAME: &'static str;
    /// What a successful call returns.
    type Response: Serialize + DeserializeOwned + Send + 'static;
    /// Whether calls travel on the peer's bulk connection even when the request is small,
    /// because the *response* can be large (a range scan, a streamed batch). Requests whose
    /// body exceeds `large_message_bytes` take it anyway.
    const LARGE: bool = false;
}

/// Liveness and round-trip probe, answered by every server without registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed back, so a test can tell answers apart.
    pub payload: u64,
}

/// Answer to [`Ping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub payload: u64,
    /// The answering node, as proven in the handshake.
    pub node: NodeId,
}

impl Rpc for Ping {
    const METHOD: MethodId = 1;
    const NAME: &'static str = "Ping";
    type Response = Pong;
}

/// Why a server did not answer a request successfully; the body of an `Error` frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// A [`RemoteErrorCode`] as a number, so that a code added later decodes as `Handler`
    /// on an older node instead of killing the connection.
    pub code: u16,
    pub message: String,
}

/// The classes of remote failure a caller acts on differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteErrorCode {
    /// The handler ran and failed; the message says why.
    Handler = 0,
    /// No handler for this method on the server (an older node, or a typo in the id).
    UnknownMethod = 1,
    /// The server sheds load: too many concurrent requests on this connection.
    Overloaded = 2,
}

impl RemoteError {
    /// An error of class `code`.
    pub fn new(code: RemoteErrorCode, message: impl Into<String>) -> RemoteError {
        RemoteError {
            code: code as u16,
            message: message.into(),
        }
    }

    /// The class; unknown codes read as `Handler`.
    pub fn code(&self) -> RemoteErrorCode {
        match self.code {
            1 => RemoteErrorCode::UnknownMethod,
            2 => RemoteErrorCode::Overloaded,
            _ => RemoteErrorCode::Handler,
        }
    }
}

/// What a handler returns on failure: the text is sent to the caller as `RpcError::Remote`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub message: String,
    /// Sends the caller `RpcError::Overloaded` instead of `Remote`, so it backs off rather
    /// than treating the replica as broken.
    pub overloaded: bool,
}

impl HandlerError {
    /// A plain failure.
    pub fn new(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            overloaded: false,
        }
    }

    /// A load-shedding refusal.
    pub fn overloaded(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            overloaded: true,
        }
    }
}

/// Who sent a request, and until when they wait for the answer.
#[derive(Clone, Copy, Debug)]
pub struct CallContext {
    /// The caller, as proven in the handshake.
    pub from: NodeId,
    pub peer_addr: SocketAddr,
    pub request_id: u64,
    /// When the caller gives up; the server drops the handler's future at this instant.
    pub deadline: Instant,
}

/// An async handler for request type `M`.
///
/// Laws: the returned future may be dropped at the request's deadline, so it must be
/// cancel-safe (work that must finish, such as a storage write, belongs in a blocking task
/// that outlives the future). Handlers run concurrently and may complete in any order.
pub trait Handler<M: Rpc>: Send + Sync + 'static {
    /// Answers one request.
    fn handle(
        &self,
        ctx: CallContext,
        request: M,
    ) -> impl Future<Output = Result<M::Response, HandlerError>> + Send;
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A handler with its request and response types erased: body bytes in, body bytes out.
/// Decoding happens before the future is created, so an undecodable body is a protocol error
/// the connection can act on (close) rather than an answer.
pub(crate) trait ErasedHandler: Send + Sync {
    fn call(
        &self,
        ctx: CallContext,
        body: &[u8],
    ) -> Result<BoxFuture<Result<Bytes, RemoteError>>, postcard::Error>;
}

struct FnHandler<M, F> {
    f: F,
    _m: std::marker::PhantomData<fn(M)>,
}

impl<M, F, Fut> ErasedHandler for FnHandler<M, F>
where
    M: Rpc,
    F: Fn(CallContext, M) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<M::Response, HandlerError>> + Send + 'static,
{
    fn call(
        &self,
        ctx: CallContext,
        body: &[u8],
    ) -> Result<BoxFuture<Result<Bytes, RemoteError>>, postcard::Error> {
        let request: M = postcard::from_bytes(body)?;
        let fut = (self.f)(ctx, request);
        Ok(Box::pin(async move {
            match fut.await {
                Ok(response) => postcard::to_allocvec(&response)
                    .map(Bytes::from)
                    .map_err(|e| {
                        RemoteError::new(
                            RemoteErrorCode::Handler,
                            format!("{}: cannot encode response: {e}", M::NAME),
                        )
                    }),
                Err(e) if e.overloaded => {
                    Err(RemoteError::new(RemoteErrorCode::Overloaded, e.message))
                }
                Err(e) => Err(RemoteError::new(RemoteErrorCode::Handler, e.message)),
            }
        }))
    }
}

/// Two handlers were registered for one method id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("method id {method} is already registered (by {existing}); cannot register {new}")]
pub struct DuplicateMethod {
    pub method: MethodId,
    pub existing: &'static str,
    pub new: &'static str,
}

pub(crate) struct Registered {
    pub(crate) name: &'static str,
    pub(crate) handler: Arc<dyn ErasedHandler>,
}

/// Method id → handler. Built before the server starts, then frozen (shared read-only by
/// every connection, so dispatch takes no lock).
#[derive(Default)]
pub struct Registry {
    pub(crate) handlers: BTreeMap<MethodId, Registered>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.handlers.iter().map(|(id, r)| (id, r.name)))
            .finish()
    }
}

impl Registry {
    /// An empty registry (the server adds [`Ping`] itself).
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers a handler object for `M`.
    pub fn register<M: Rpc, H: Handler<M>>(
        &mut self,
        handler: Arc<H>,
    ) -> Result<(), DuplicateMethod> {
        self.register_fn::<M, _, _>(move |ctx, request| {
            let handler = handler.clone();
            async move { handler.handle(ctx, request).await }
        })
    }

    /// Registers an async closure for `M`.
    pub fn register_fn<M, F, Fut>(&mut self, f: F) -> Result<(), DuplicateMethod>
    where
        M: Rpc,
        F: Fn(CallContext, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Response, HandlerError>> + Send + 'static,
    {
        if let Some(existing) = self.handlers.get(&M::METHOD) {
            return Err(DuplicateMethod {
                method: M::METHOD,
                existing: existing.name,
                new: M::NAME,
            });
        }
        self.handlers.insert(
            M::METHOD,
            Registered {
                name: M::NAME,
                handler: Arc::new(FnHandler::<M, F> {
                    f,
                    _m: std::marker::PhantomData,
                }),
            },
        );
        Ok(())
    }

    /// Whether a handler for `method` is registered.
    pub fn contains(&self, method: MethodId) -> bool {
        self.handlers.contains_key(&method)
    }
}
