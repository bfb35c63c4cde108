//! Connections that go silent are closed. poem's own idle timeout shuts a connection
//! down gracefully, which for HTTP/1 waits for the request being read to finish: a
//! client that sends half a request and stops keeps its connection, and its socket,
//! for good. Here a connection with no byte read or written for `HTTP_IDLE_TIMEOUT`
//! fails its IO instead, so hyper drops it: half a request, a keep-alive connection
//! left idle, a response its client stopped reading once the socket's buffers are
//! full. Either direction counts (unlike a read timeout, which would end an event
//! stream its client only reads), and a connection whose request a handler is still
//! working on is not silent, however long the handler takes ([`Busy`]).

use std::{
    collections::HashMap,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::Stream;
use poem::{
    Body, Endpoint, IntoResponse, Request, Response,
    http::uri::Scheme,
    listener::Acceptor,
    web::{LocalAddr, RemoteAddr},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests being handled, per open connection (by the peer's address, which is the
/// connection's own while it is open): the acceptor registers each connection, the
/// [`serving`] middleware counts its requests in and out.
#[derive(Clone, Debug, Default)]
pub struct Busy(Arc<Mutex<HashMap<String, Arc<AtomicUsize>>>>);

impl Busy {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AtomicUsize>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The count of the connection from `peer`, if it is open.
    fn counter(&self, peer: &RemoteAddr) -> Option<Arc<AtomicUsize>> {
        self.map().get(&peer.to_string()).cloned()
    }

    /// A new connection from `key`: its count, from zero.
    fn register(&self, key: &str) -> Arc<AtomicUsize> {
        let handling = Arc::new(AtomicUsize::new(0));
        self.map().insert(key.to_owned(), handling.clone());
        handling
    }

    /// The connection from `key` closed (unless another took its place meanwhile).
    fn release(&self, key: &str, handling: &Arc<AtomicUsize>) {
        let mut map = self.map();
        if map.get(key).is_some_and(|c| Arc::ptr_eq(c, handling)) {
            map.remove(key);
        }
    }
}

/// Counts a request in for its connection while a handler works on it (its response's
/// body, once handed over, moves bytes of its own), from the moment its body has all
/// arrived: a handler waiting for body bytes is not working, and a client that sends
/// half a body and goes silent is as silent as one that sends half its headers. (The
/// upload's handler reads its body inside the call; counted from the call, such a
/// connection was never closed.)
pub async fn serving<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    busy: Busy,
) -> poem::Result<Response> {
    let counted = Arc::new(Counted {
        counter: busy.counter(req.remote_addr()),
        done: AtomicBool::new(false),
    });
    let body = req.take_body();
    if body.is_empty() {
        counted.count_in();
        req.set_body(body);
    } else {
        req.set_body(Body::from_bytes_stream(CountInAtEnd {
            stream: Box::pin(body.into_bytes_stream()),
            counted: counted.clone(),
        }));
    }
    let response = ep.call(req).await.map(IntoResponse::into_response);
    drop(counted);
    response
}

/// A request's place in its connection's count: in once, out when dropped (the handler
/// done, and its body with it).
struct Counted {
    counter: Option<Arc<AtomicUsize>>,
    done: AtomicBool,
}

impl Counted {
    fn count_in(&self) {
        if let Some(n) = &self.counter
            && !self.done.swap(true, Ordering::SeqCst)
        {
            n.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(n) = &self.counter
            && *self.done.get_mut()
        {
            n.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A request body that counts its request in once its last byte has arrived.
struct CountInAtEnd {
    stream: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
    counted: Arc<Counted>,
}

impl Stream for CountInAtEnd {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.stream.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            self.counted.count_in();
        }
        next
    }
}

/// An acceptor whose connections end when no byte moves either way for `timeout`
/// while no request of theirs is being handled.
pub struct IdleTimeout<A> {
    inner: A,
    timeout: Duration,
    busy: Busy,
    /// When a failed accept was last logged.
    last_warned: Option<Instant>,
}

/// How long accepting pauses after an accept failed for want of a resource.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How often such failures are logged while they last.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

impl<A> IdleTimeout<A> {
    /// Wraps `inner`; `busy` is the one the routes count requests in.
    pub fn new(inner: A, timeout: Duration, busy: Busy) -> Self {
        Self {
            inner,
            timeout,
            busy,
            last_warned: None,
        }
    }
}

impl<A: Acceptor> Acceptor for IdleTimeout<A> {
    type Io = Idle<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = match self.inner.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // poem calls again at once on any error. Out of descriptors (EMFILE,
                // ENFILE) or memory, the listener stays readable and every call fails
                // at once: a core spun at 100 % until descriptors were freed. A pause
                // lets the process close some meanwhile (as hyper's own server does).
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) {
                    if self
                        .last_warned
                        .is_none_or(|at| at.elapsed() > ACCEPT_WARN_EVERY)
                    {
                        tracing::warn!(error = %e, "cannot accept connections; pausing accepts");
                        self.last_warned = Some(Instant::now());
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
                return Err(e);
            }
        };
        let key = remote.to_string();
        let handling = self.busy.register(&key);
        let idle = Idle {
            inner: io,
            timeout: self.timeout,
            deadline: Box::pin(tokio::time::sleep(self.timeout)),
            handling,
            busy: self.busy.clone(),
            key,
        };
        Ok((idle, local, remote, scheme))
    }
}

/// A connection's IO, failing with `TimedOut` once nothing moved for its timeout.
pub struct Idle<T> {
    inner: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Its requests a handler is working on.
    handling: Arc<AtomicUsize>,
    busy: Busy,
    key: String,
}

impl<T> Drop for Idle<T> {
    fn drop(&mut self) {
        self.busy.release(&self.key, &self.handling);
    }
}

impl<T> Idle<T> {
    /// Bytes moved: the connection is alive for another `timeout`.
    fn moved(&mut self) {
        let next = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }

    /// What a write of the inner IO came to: bytes written renew the deadline, a
    /// write waiting is held to it.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.waiting(cx),
        }
    }

    /// The inner IO is waiting: an error once the deadline has passed with no
    /// request being handled (one that is renews it).
    fn waiting<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        loop {
            match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) if self.handling.load(Ordering::SeqCst) > 0 => self.moved(),
                Poll::Ready(()) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no byte either way within HTTP_IDLE_TIMEOUT",
                    )));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.waiting(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.waiting(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
