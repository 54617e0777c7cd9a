//! Connections to one server: keep-alive HTTP/1.1 connections (over TCP,
//! TLS or a Unix socket), or one shared, multiplexed HTTP/2 connection
//! (`h2c://`, or `https://` when ALPN picks h2).
//!
//! Hand-rolled on hyper's `client::conn` rather than hyper-util's pooled
//! `Client` for one reason: a connection is made (or taken from the pool)
//! *before* the request is handed over. A connect failure therefore leaves the
//! request, body included, in our hands, so it can go to another server; and
//! `try_send_request` gives a request back when a stale pooled connection
//! could not take it, so nothing is cloned to replay it.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;

use super::tls::UpstreamTls;
use super::ProxyBody;

/// Where a server listens and how it is spoken to.
#[derive(Debug, Clone)]
pub enum Target {
    /// `host:port`, HTTP/1.1.
    Tcp(String),
    /// `host:port`, HTTP/2 with prior knowledge.
    H2c(String),
    /// `host:port` over TLS, HTTP/2 or HTTP/1.1 as ALPN decides.
    Tls {
        /// `host:port`
        addr: String,
        /// The URL's host as a TLS name (the route's `server_name` overrides it).
        name: Option<ServerName<'static>>,
        /// Roots and ALPN.
        tls: Arc<UpstreamTls>,
    },
    /// A Unix socket path, HTTP/1.1.
    Unix(PathBuf),
}

impl Target {
    /// The `:scheme` of HTTP/2 requests to it.
    pub fn scheme(&self) -> http::uri::Scheme {
        match self {
            Target::Tls { .. } => http::uri::Scheme::HTTPS,
            _ => http::uri::Scheme::HTTP,
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    /// Refused, unreachable, no such socket: the server is not there.
    Refused(std::io::Error),
    /// No answer within `connect_timeout`.
    Timeout(Duration),
    /// The TLS handshake failed: certificate not verified, no common version.
    Tls(std::io::Error),
    /// Connected, but the HTTP handshake failed.
    Handshake(hyper::Error),
    /// The request asks for an upgrade and the server speaks only HTTP/2.
    UpgradeOverHttp2,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "{e}"),
            ConnectError::Timeout(d) => write!(f, "no connection within {}", humantime::format_duration(*d)),
            ConnectError::Tls(e) => match e.get_ref() {
                Some(inner) => write!(f, "{inner}"),
                None => write!(f, "{e}"),
            },
            ConnectError::Handshake(e) => write!(f, "{e}"),
            ConnectError::UpgradeOverHttp2 => {
                f.write_str("an h2c:// server cannot take an HTTP/1.1 upgrade (WebSocket) request")
            }
        }
    }
}

/// The request side of one connection.
pub enum Sender {
    /// One request at a time.
    Http1(http1::SendRequest<ProxyBody>),
    /// Shared: many streams at once.
    Http2(http2::SendRequest<ProxyBody>),
}

impl Sender {
    /// The HTTP version requests on this connection are sent with.
    pub fn version(&self) -> Version {
        match self {
            Sender::Http1(_) => Version::HTTP_11,
            Sender::Http2(_) => Version::HTTP_2,
        }
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    /// Sends a request; gives it back when the connection could not take it.
    pub async fn try_send_request(
        &mut self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ProxyBody>>> {
        match self {
            Sender::Http1(s) => s.try_send_request(req).await,
            Sender::Http2(s) => s.try_send_request(req).await,
        }
    }

    /// Sends a request.
    pub async fn send_request(&mut self, req: Request<ProxyBody>) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::Http1(s) => s.send_request(req).await,
            Sender::Http2(s) => s.send_request(req).await,
        }
    }
}

/// Connections to one server: idle HTTP/1.1 ones, and the shared HTTP/2 one.
pub struct Pool {
    target: Target,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Idle>>,
    /// The multiplexed HTTP/2 connection, while it is open.
    shared: Mutex<Option<http2::SendRequest<ProxyBody>>>,
    /// Held while the shared connection is (re)made, so a burst of requests
    /// opens one connection, not one each.
    connecting: tokio::sync::Mutex<()>,
    /// An `https://` server chose h2 last time: expect it again.
    speaks_h2: AtomicBool,
}

struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// A connection taken from the pool (or new); give it back with [`PooledConn::release`].
pub struct PooledConn {
    /// The request side of the connection.
    pub sender: Sender,
    /// It served an earlier request: it may have gone stale since.
    pub reused: bool,
    pool: Weak<Pool>,
}

impl Pool {
    /// An empty pool; connections are made on demand.
    pub fn new(target: Target, connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Arc<Self> {
        Arc::new(Pool {
            speaks_h2: AtomicBool::new(matches!(target, Target::H2c(_))),
            target,
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
            shared: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// The server's address, for messages.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A connection for one request: the shared HTTP/2 one, a ready idle
    /// HTTP/1.1 one, or a new one. `upgrade`: the request asks for a
    /// protocol upgrade, which only HTTP/1.1 carries.
    pub async fn checkout(self: &Arc<Self>, upgrade: bool) -> Result<PooledConn, ConnectError> {
        if upgrade && matches!(self.target, Target::H2c(_)) {
            return Err(ConnectError::UpgradeOverHttp2);
        }
        if !upgrade && self.speaks_h2.load(Ordering::Relaxed) {
            if let Some(sender) = self.shared_h2() {
                return Ok(self.conn(Sender::Http2(sender), true));
            }
            let _connecting = self.connecting.lock().await;
            // Another request may have made it while this one waited.
            if let Some(sender) = self.shared_h2() {
                return Ok(self.conn(Sender::Http2(sender), true));
            }
            let sender = self.connect_for(false).await?;
            return Ok(self.conn(sender, false));
        }
        while let Some(mut idle) = self.pop_idle() {
            if idle.since.elapsed() > self.idle_timeout || idle.sender.is_closed() {
                continue;
            }
            // Usually immediate; fails when the server closed it meanwhile.
            if idle.sender.ready().await.is_ok() {
                return Ok(self.conn(Sender::Http1(idle.sender), true));
            }
        }
        let sender = self.connect_for(upgrade).await?;
        Ok(self.conn(sender, false))
    }

    /// A new connection, never an idle or shared one (the retry after a stale one).
    pub async fn checkout_fresh(self: &Arc<Self>, upgrade: bool) -> Result<PooledConn, ConnectError> {
        let sender = self.connect_for(upgrade).await?;
        Ok(self.conn(sender, false))
    }

    fn conn(self: &Arc<Self>, sender: Sender, reused: bool) -> PooledConn {
        PooledConn {
            sender,
            reused,
            pool: Arc::downgrade(self),
        }
    }

    /// A new connection that later requests share when it is HTTP/2.
    async fn connect_for(&self, upgrade: bool) -> Result<Sender, ConnectError> {
        // Boxed: connecting (TCP, TLS, HTTP/2 handshake) is a multi-KiB
        // future, and inline it made every request's future that large: moving
        // the request future into its box cost ~12,000 instructions a request.
        let sender = Box::pin(self.connect_with(upgrade)).await?;
        if let Sender::Http2(h2) = &sender {
            *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(h2.clone());
        }
        if matches!(self.target, Target::Tls { .. }) && !upgrade {
            self.speaks_h2
                .store(matches!(sender, Sender::Http2(_)), Ordering::Relaxed);
        }
        Ok(sender)
    }

    fn shared_h2(&self) -> Option<http2::SendRequest<ProxyBody>> {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match &*shared {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                *shared = None;
                None
            }
            None => None,
        }
    }

    fn pop_idle(&self) -> Option<Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// A new connection, outside the pool (also used by health checks).
    pub async fn connect(&self) -> Result<Sender, ConnectError> {
        self.connect_with(false).await
    }

    async fn connect_with(&self, http1_only: bool) -> Result<Sender, ConnectError> {
        let timeout = self.connect_timeout;
        let handshake = async {
            match &self.target {
                Target::Tcp(addr) => start_http1(tcp(addr).await?).await,
                Target::H2c(addr) => start_http2(tcp(addr).await?).await,
                Target::Tls { addr, name, tls } => {
                    let Some(name) = tls.name_for(name.as_ref()) else {
                        return Err(ConnectError::Tls(std::io::Error::other(format!(
                            "{addr} has no TLS server name; set server_name on the route"
                        ))));
                    };
                    let stream = tcp(addr).await?;
                    let stream = tokio_rustls::TlsConnector::from(tls.config(http1_only))
                        .connect(name, stream)
                        .await
                        .map_err(ConnectError::Tls)?;
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        start_http2(stream).await
                    } else {
                        start_http1(stream).await
                    }
                }
                Target::Unix(path) => {
                    #[cfg(unix)]
                    {
                        let stream = tokio::net::UnixStream::connect(path)
                            .await
                            .map_err(ConnectError::Refused)?;
                        start_http1(stream).await
                    }
                    #[cfg(not(unix))]
                    {
                        Err(ConnectError::Refused(std::io::Error::other(format!(
                            "Unix sockets are not supported here: {}",
                            path.display()
                        ))))
                    }
                }
            }
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .unwrap_or(Err(ConnectError::Timeout(timeout)))
    }

    fn put_back(&self, sender: Sender) {
        // The HTTP/2 connection stays shared in `self.shared`; nothing to return.
        let Sender::Http1(sender) = sender else {
            return;
        };
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Oldest first, so the expired ones are a prefix; closed ones are
        // skipped at checkout. A scan of the whole list on every release cost
        // ~1,000 instructions a request with 100 HTTP/2 streams in flight.
        let expired = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) > self.idle_timeout)
            .count();
        idle.drain(..expired);
        if idle.len() >= self.max_idle {
            idle.retain(|i| !i.sender.is_closed());
        }
        if idle.len() < self.max_idle {
            idle.push(Idle { sender, since: now });
        }
    }
}

async fn tcp(addr: &str) -> Result<tokio::net::TcpStream, ConnectError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(ConnectError::Refused)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The largest read (and write) buffer of an HTTP/1.1 connection to an app.
const UPSTREAM_BUFFER_BYTES: usize = 64 * 1024;

async fn start_http1<S>(stream: S) -> Result<Sender, ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new()
        // hyper's read buffer doubles while reads come back full, up to this
        // (default ~400 KiB), and keeps its size: when tlsfront falls behind
        // an app that streams, every busy connection grew to it (1,000 slow
        // compressed downloads: 670 MiB instead of 340, bench/README.md).
        // 64 KiB still takes a whole TLS record train per read; a response
        // head much over 64 KiB (by hand: 70 KiB passes, 100 KiB is a 502)
        // is refused (nginx's default refuses over 4-8 KiB).
        .max_buf_size(UPSTREAM_BUFFER_BYTES)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    // `with_upgrades`: a 101 response hands the socket to the WebSocket tunnel.
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(Sender::Http1(sender))
}

async fn start_http2<S>(stream: S) -> Result<Sender, ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        // Pings while streams are open find a server that vanished without
        // closing the connection (the shared connection is then replaced).
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Sender::Http2(sender))
}

impl PooledConn {
    /// Returns the connection to its pool, ready for the next request.
    pub fn release(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put_back(self.sender);
        }
    }
}

/// A response body that returns its connection to the pool once read to the
/// end (a body dropped early takes its connection with it: it cannot be reused).
pub struct PooledBody {
    inner: Incoming,
    conn: Option<PooledConn>,
    /// Counts a body cut off by the server after its head (reset mid-body).
    cut_off: Option<prometheus_client::metrics::counter::Counter>,
}

impl PooledBody {
    /// Wraps a response body; a body that is already complete releases at once.
    pub fn new(inner: Incoming, conn: PooledConn) -> Self {
        let mut body = PooledBody {
            inner,
            conn: Some(conn),
            cut_off: None,
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// A body whose connection never goes back to the pool (a 101: the
    /// socket now belongs to the upgraded protocol).
    pub fn detached(inner: Incoming) -> Self {
        PooledBody {
            inner,
            conn: None,
            cut_off: None,
        }
    }

    /// Counts into `counter` when the server breaks the body off.
    pub fn counting_cut_off(mut self, counter: prometheus_client::metrics::counter::Counter) -> Self {
        self.cut_off = Some(counter);
        self
    }

    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.release();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => {
                self.conn = None;
                if let Some(c) = self.cut_off.take() {
                    c.inc();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
