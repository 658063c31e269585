//! Connection handling shared by every TCP listener (OTLP/HTTP, OTLP/gRPC, query HTTP,
//! cluster HTTP/gRPC, Postgres), so slow, idle or numerous clients cannot take a port down.
//!
//! ```text
//!  TcpListener ─Listener::accept─▶ at max_connections? close the connection idle longest
//!      │ (EMFILE: shed one, back off; never spin)   (all busy: refuse the new one)
//!      ▼
//!  TrackedStream (last byte in/out, busy while a request runs; closed when shed or idle
//!      │          past idle_timeout)
//!      ▼ serve_http: hyper-util auto (HTTP/1.1 + HTTP/2)
//!  HTTP/1: header_read_timeout (also bounds keep-alive idle time between requests)
//!  HTTP/2: keep-alive pings, max concurrent streams, pending-reset limit
//!  every request body: TimedBody (no frame for body_idle_timeout, or the whole body longer
//!      than body_timeout ─▶ BodyTimedOut: the OTLP receivers answer 408 and release budget)
//! ```
//!
//! The Postgres listener uses [`Listener`] too (cap, shedding, accept back-off); pgwire owns
//! its socket, so there the connection idle longest is the one accepted first, and its own
//! 60 s start-up timeout bounds a client that never finishes logging in.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::task::AtomicWaker;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Per-connection limits of one listener (the `[listen]` keys of the same names).
#[derive(Debug, Clone)]
pub struct Limits {
    /// HTTP/1: the request line and headers must arrive within this; it also closes a
    /// keep-alive connection that sends no new request for this long.
    pub header_read_timeout: Duration,
    /// A request body that sends nothing for this long is cut (408).
    pub body_idle_timeout: Duration,
    /// A request body that takes longer than this in total is cut (408): a minimum rate.
    pub body_timeout: Duration,
    /// A connection with no request running and no byte in or out for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections per listener; at the cap the connection idle longest is closed to
    /// make room (a new one is refused only when every connection is busy).
    pub max_connections: usize,
    pub http2_max_concurrent_streams: u32,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    /// Streams a client may open and reset before the server has accepted them (the HTTP/2
    /// rapid-reset attack).
    pub http2_max_pending_accept_reset_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(300),
            max_connections: default_max_connections(4),
            http2_max_concurrent_streams: 256,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
            http2_max_pending_accept_reset_streams: 32,
        }
    }
}

// =============================================================================================
// File descriptors
// =============================================================================================

/// The soft and hard `RLIMIT_NOFILE` after [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

/// Raises the soft limit of open files to the hard limit (the usual soft limit of 1,024 is
/// far below what a server with thousands of clients needs; raising it needs no privilege).
pub fn raise_fd_limit() -> io::Result<FdLimit> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if before >= hard {
        return Ok(FdLimit {
            before,
            now: before,
            hard,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )?;
    Ok(FdLimit {
        before,
        now: hard,
        hard,
    })
}

/// The current soft limit of open files.
pub fn fd_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Connections per listener when `max_connections = 0`: the open-file limit, less what the
/// WAL, Parquet files and outgoing connections need (256, or half of a smaller limit),
/// shared by `listeners`.
pub fn default_max_connections(listeners: usize) -> usize {
    let limit = fd_limit();
    let spare = limit - (limit / 2).min(256);
    let per = spare / listeners.max(1) as u64;
    usize::try_from(per).unwrap_or(usize::MAX).clamp(16, 65_536)
}

// =============================================================================================
// Tracked connections
// =============================================================================================

/// One open connection, as the listener sees it.
#[derive(Debug)]
struct ConnState {
    id: u64,
    /// Milliseconds since the registry's epoch of the last byte read or written.
    last_active: AtomicU64,
    /// Requests running on it (an HTTP/2 connection may run many).
    busy: AtomicUsize,
    closing: AtomicBool,
    /// Its bytes are seen (a [`TrackedStream`]); only such connections are closed for being
    /// idle (pgwire owns its socket, so a Postgres session's activity is not seen).
    tracked: AtomicBool,
    waker: AtomicWaker,
}

impl ConnState {
    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
struct Registry {
    name: &'static str,
    cap: usize,
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    shed: AtomicU64,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn register(self: &Arc<Self>) -> Arc<ConnState> {
        let conn = Arc::new(ConnState {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            last_active: AtomicU64::new(self.now_ms()),
            busy: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            tracked: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        self.conns
            .lock()
            .insert(conn.id, std::sync::Arc::clone(&conn));
        conn
    }

    fn remove(&self, id: u64) {
        self.conns.lock().remove(&id);
    }

    /// Closes the connection idle longest (no request running); false when all are busy.
    fn shed_idlest(&self) -> bool {
        let victim = self
            .conns
            .lock()
            .values()
            .filter(|c| c.busy.load(Ordering::Acquire) == 0 && !c.is_closing())
            .min_by_key(|c| c.last_active.load(Ordering::Relaxed))
            .cloned();
        match victim {
            Some(conn) => {
                conn.close();
                self.shed.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Room for one more connection: below the cap, or an idle one was closed for it.
    fn make_room(&self) -> bool {
        let open = self
            .conns
            .lock()
            .values()
            .filter(|c| !c.is_closing())
            .count();
        open < self.cap || self.shed_idlest()
    }

    /// Closes connections idle for longer than `idle`.
    fn close_idle(&self, idle: Duration) {
        let cutoff = self.now_ms().saturating_sub(idle.as_millis() as u64);
        for conn in self.conns.lock().values() {
            if conn.tracked.load(Ordering::Relaxed)
                && conn.busy.load(Ordering::Acquire) == 0
                && conn.last_active.load(Ordering::Relaxed) < cutoff
            {
                conn.close();
            }
        }
    }
}

/// A TCP listener with a connection cap, idle shedding and accept back-off.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    registry: Arc<Registry>,
    limits: Arc<Limits>,
}

/// What a [`Listener`] hands out: the socket plus the guard that tracks it.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: std::net::SocketAddr,
    pub slot: Slot,
}

/// A connection's place in its listener: removed when dropped; [`Slot::closed`] resolves
/// when the listener sheds it.
#[derive(Debug)]
pub struct Slot {
    conn: Arc<ConnState>,
    registry: Arc<Registry>,
}

impl Slot {
    /// Resolves once the listener decided to close this connection.
    pub fn closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            self.conn.waker.register(cx.waker());
            if self.conn.is_closing() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.remove(self.conn.id);
    }
}

impl Listener {
    /// Wraps `tcp`; `name` appears in logs. Starts the idle sweeper.
    pub fn new(tcp: TcpListener, name: &'static str, limits: Limits) -> Self {
        let registry = Arc::new(Registry {
            name,
            cap: limits.max_connections.max(1),
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            shed: AtomicU64::new(0),
        });
        tokio::spawn(sweep_idle(Arc::downgrade(&registry), limits.idle_timeout));
        Self {
            tcp,
            registry,
            limits: Arc::new(limits),
        }
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }

    /// Open connections (those being closed included).
    pub fn open_connections(&self) -> usize {
        self.registry.conns.lock().len()
    }

    /// Connections closed to make room for new ones so far.
    pub fn shed_connections(&self) -> u64 {
        self.registry.shed.load(Ordering::Relaxed)
    }

    /// The next connection. Accept errors never end the listener: running out of file
    /// descriptors sheds the connection idle longest, and every error backs off (10 ms
    /// doubling to 1 s) instead of spinning.
    pub async fn accept(&self) -> Accepted {
        let mut backoff = Duration::from_millis(10);
        let mut last_warning: Option<Instant> = None;
        loop {
            match self.tcp.accept().await {
                Ok((stream, peer)) => {
                    if !self.registry.make_room() {
                        tracing::warn!(
                            listener = self.registry.name,
                            cap = self.registry.cap,
                            "connection refused: every connection is busy"
                        );
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let conn = self.registry.register();
                    return Accepted {
                        stream,
                        peer,
                        slot: Slot {
                            conn,
                            registry: std::sync::Arc::clone(&self.registry),
                        },
                    };
                }
                Err(e) => {
                    let out_of_fds = matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::MFILE.raw_os_error() || code == rustix::io::Errno::NFILE.raw_os_error());
                    if out_of_fds {
                        self.registry.shed_idlest();
                    }
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                        tracing::warn!(listener = self.registry.name, error = %e, "accept failed; backing off");
                        last_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

async fn sweep_idle(registry: Weak<Registry>, idle: Duration) {
    let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::time::sleep(every).await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        registry.close_idle(idle);
    }
}

/// A socket that records activity and reads EOF once its listener closes it.
#[derive(Debug)]
pub struct TrackedStream {
    io: TcpStream,
    slot: Slot,
}

impl TrackedStream {
    fn touch(&self) {
        let now = self.slot.registry.now_ms();
        self.slot.conn.last_active.store(now, Ordering::Relaxed);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.slot.conn.waker.register(cx.waker());
        if self.slot.conn.is_closing() {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        result
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.slot.conn.is_closing() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.slot.conn.is_closing() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Marks its connection busy while alive (a request is running or its response streams).
#[derive(Debug)]
struct Busy(Arc<ConnState>);

impl Busy {
    fn new(conn: Arc<ConnState>) -> Self {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Self(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

// =============================================================================================
// Request bodies
// =============================================================================================

/// A request body cut for being too slow. The OTLP receivers answer it with 408.
#[derive(Debug, thiserror::Error)]
#[error("request body too slow: {0}")]
pub struct BodyTimedOut(pub String);

/// Whether `error` (or one of its sources) is a [`BodyTimedOut`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// A request body with an idle timeout between frames and a total deadline.
pub struct TimedBody<B> {
    inner: B,
    started: Instant,
    idle: Duration,
    total: Duration,
    /// Created on the first wait, so bodies that arrive at once cost no timer.
    idle_sleep: Option<Pin<Box<Sleep>>>,
    total_sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> std::fmt::Debug for TimedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedBody").finish_non_exhaustive()
    }
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, idle: Duration, total: Duration) -> Self {
        Self {
            inner,
            started: Instant::now(),
            idle,
            total,
            idle_sleep: None,
            total_sleep: None,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(sleep) = &mut this.idle_sleep {
                    sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = this.idle;
                let idle_sleep = this
                    .idle_sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if idle_sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyTimedOut(format!(
                        "no data for {}s (listen.body_idle_timeout_secs)",
                        idle.as_secs()
                    ))))));
                }
                let deadline = tokio::time::Instant::from_std(this.started + this.total);
                let total_sleep = this
                    .total_sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if total_sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyTimedOut(format!(
                        "body not complete after {}s (listen.body_timeout_secs)",
                        this.total.as_secs()
                    ))))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its connection marked busy until it is sent or dropped.
pub struct BusyBody<B> {
    inner: Pin<Box<B>>,
    _busy: Busy,
}

impl<B: Body> Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// =============================================================================================
// Serving HTTP (HTTP/1.1 and HTTP/2, so gRPC too)
// =============================================================================================

/// The per-connection hyper service: timed request bodies, busy tracking.
struct ConnService<S> {
    inner: S,
    conn: Arc<ConnState>,
    limits: Arc<Limits>,
}

impl<S, ResB> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: tower::Service<Request<TimedBody<Incoming>>, Response = Response<ResB>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResB: Body + Send + 'static,
{
    type Response = Response<BusyBody<ResB>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        use tower::ServiceExt as _;
        let busy = Busy::new(std::sync::Arc::clone(&self.conn));
        let request = request.map(|body| {
            TimedBody::new(
                body,
                self.limits.body_idle_timeout,
                self.limits.body_timeout,
            )
        });
        let call = self.inner.clone().oneshot(request);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| BusyBody {
                inner: Box::pin(body),
                _busy: busy,
            }))
        })
    }
}

/// How long shutdown waits for open connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `service` (an axum `Router`, tonic `Routes`, ...) on `listener` over HTTP/1.1 and
/// HTTP/2 with the listener's limits, until `shutdown` resolves; then stops accepting and
/// lets running requests finish (at most 30 s).
pub async fn serve_http<S, ResB>(
    listener: Listener,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: tower::Service<Request<TimedBody<Incoming>>, Response = Response<ResB>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let limits = std::sync::Arc::clone(&listener.limits);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.http2_max_pending_accept_reset_streams);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let conn = std::sync::Arc::clone(&accepted.slot.conn);
        conn.tracked.store(true, Ordering::Relaxed);
        let io = TokioIo::new(TrackedStream {
            io: accepted.stream,
            slot: accepted.slot,
        });
        let service = ConnService {
            inner: service.clone(),
            conn,
            limits: std::sync::Arc::clone(&limits),
        };
        let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
        let peer = accepted.peer;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(cap: usize) -> Arc<Registry> {
        Arc::new(Registry {
            name: "test",
            cap,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            shed: AtomicU64::new(0),
        })
    }

    #[test]
    fn at_the_cap_the_connection_idle_longest_is_closed() {
        let reg = registry(3);
        let conns: Vec<_> = (0..3).map(|_| reg.register()).collect();
        conns[0].last_active.store(50, Ordering::Relaxed);
        conns[1].last_active.store(10, Ordering::Relaxed);
        conns[2].last_active.store(5, Ordering::Relaxed);
        // The one idle longest is busy: the next idlest goes.
        conns[2].busy.store(1, Ordering::Relaxed);
        assert!(reg.make_room());
        assert!(conns[1].is_closing());
        assert!(!conns[0].is_closing() && !conns[2].is_closing());
        // Closing connections do not count against the cap.
        let fourth = reg.register();
        fourth.last_active.store(100, Ordering::Relaxed);
        assert!(reg.make_room(), "three open, two of them idle");
        assert!(conns[0].is_closing());
        // Everything busy: no room.
        let reg = registry(1);
        let busy = reg.register();
        busy.busy.store(1, Ordering::Relaxed);
        assert!(!reg.make_room());
        assert_eq!(reg.shed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn only_tracked_idle_connections_time_out() {
        let reg = registry(10);
        let tracked = reg.register();
        tracked.tracked.store(true, Ordering::Relaxed);
        let untracked = reg.register();
        let busy = reg.register();
        busy.tracked.store(true, Ordering::Relaxed);
        busy.busy.store(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        reg.close_idle(Duration::from_millis(10));
        assert!(tracked.is_closing());
        assert!(
            !untracked.is_closing(),
            "a Postgres session's activity is not seen"
        );
        assert!(
            !busy.is_closing(),
            "a connection running a request is not idle"
        );
    }

    /// A body that yields one frame, then waits forever.
    struct Stalled(bool);

    impl Body for Stalled {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.0 {
                Poll::Pending
            } else {
                self.0 = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
            }
        }
    }

    #[tokio::test]
    async fn stalled_bodies_time_out() {
        use http_body_util::BodyExt as _;
        let idle = Duration::from_millis(200);
        let mut body = TimedBody::new(Stalled(false), idle, Duration::from_secs(600));
        assert!(body.frame().await.unwrap().is_ok());
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(is_body_timeout(&*err), "{err}");
        assert!(err.to_string().contains("body_idle_timeout_secs"), "{err}");
        assert!(started.elapsed() >= idle);
        // The total deadline is counted from the start of the request.
        let mut body = TimedBody::new(Stalled(true), Duration::from_secs(600), idle);
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("body_timeout_secs"), "{err}");
    }
}
