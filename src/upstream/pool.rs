//! Keep-alive HTTP/1.1 connections to one server, over TCP or a Unix socket.
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
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::ProxyBody;
use crate::config::ServerUrl;

/// Where a server listens.
#[derive(Debug, Clone)]
pub enum Target {
    /// `host:port`
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl From<&ServerUrl> for Target {
    fn from(url: &ServerUrl) -> Self {
        match url {
            ServerUrl::Http(u) => Target::Tcp(u.authority.as_str().to_string()),
            ServerUrl::Unix(p) => Target::Unix(p.clone()),
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
    /// Connected, but the HTTP/1.1 handshake failed.
    Handshake(hyper::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "{e}"),
            ConnectError::Timeout(d) => write!(f, "no connection within {}", humantime::format_duration(*d)),
            ConnectError::Handshake(e) => write!(f, "{e}"),
        }
    }
}

/// Idle keep-alive connections to one server.
pub struct Pool {
    target: Target,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// A connection taken from the pool (or new); give it back with [`PooledConn::release`].
pub struct PooledConn {
    /// The request side of the connection.
    pub sender: http1::SendRequest<ProxyBody>,
    /// It served an earlier request: it may have gone stale since.
    pub reused: bool,
    pool: Weak<Pool>,
}

impl Pool {
    /// An empty pool; connections are made on demand.
    pub fn new(target: Target, connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Arc<Self> {
        Arc::new(Pool {
            target,
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The server's address, for messages.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A ready idle connection, or a new one.
    pub async fn checkout(self: &Arc<Self>) -> Result<PooledConn, ConnectError> {
        while let Some(mut idle) = self.pop_idle() {
            if idle.since.elapsed() > self.idle_timeout || idle.sender.is_closed() {
                continue;
            }
            // Usually immediate; fails when the server closed it meanwhile.
            if idle.sender.ready().await.is_ok() {
                return Ok(PooledConn {
                    sender: idle.sender,
                    reused: true,
                    pool: Arc::downgrade(self),
                });
            }
        }
        Ok(PooledConn {
            sender: self.connect().await?,
            reused: false,
            pool: Arc::downgrade(self),
        })
    }

    /// A new connection, never an idle one (the retry after a stale one).
    pub async fn checkout_fresh(self: &Arc<Self>) -> Result<PooledConn, ConnectError> {
        Ok(PooledConn {
            sender: self.connect().await?,
            reused: false,
            pool: Arc::downgrade(self),
        })
    }

    fn pop_idle(&self) -> Option<Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// A new connection, outside the pool (also used by health checks).
    pub async fn connect(&self) -> Result<http1::SendRequest<ProxyBody>, ConnectError> {
        let timeout = self.connect_timeout;
        let handshake = async {
            match &self.target {
                Target::Tcp(addr) => {
                    let stream = tokio::net::TcpStream::connect(addr.as_str())
                        .await
                        .map_err(ConnectError::Refused)?;
                    let _ = stream.set_nodelay(true);
                    start(stream).await
                }
                Target::Unix(path) => {
                    #[cfg(unix)]
                    {
                        let stream = tokio::net::UnixStream::connect(path)
                            .await
                            .map_err(ConnectError::Refused)?;
                        start(stream).await
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

    fn put_back(&self, sender: http1::SendRequest<ProxyBody>) {
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

async fn start<S>(stream: S) -> Result<http1::SendRequest<ProxyBody>, ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    // `with_upgrades`: a 101 response hands the socket to the WebSocket tunnel.
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
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
}

impl PooledBody {
    /// Wraps a response body; a body that is already complete releases at once.
    pub fn new(inner: Incoming, conn: PooledConn) -> Self {
        let mut body = PooledBody {
            inner,
            conn: Some(conn),
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// A body whose connection never goes back to the pool (a 101: the
    /// socket now belongs to the upgraded protocol).
    pub fn detached(inner: Incoming) -> Self {
        PooledBody { inner, conn: None }
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
            Poll::Ready(Some(Err(_))) => self.conn = None,
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
