//! The pooled HTTP/1.1 client to the app.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config;

/// Any error a body can produce.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type on both sides of the proxy: streamed, never buffered whole.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Why the app did not answer.
#[derive(Debug)]
pub enum UpstreamError {
    /// The TCP connection could not be made (refused, unreachable, connect timeout).
    Connect(String),
    /// No response headers within `response_timeout`.
    Timeout(Duration),
    /// The connection broke or the app sent something that is not HTTP.
    Protocol(String),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "cannot connect: {e}"),
            UpstreamError::Timeout(d) => {
                write!(f, "no response headers within {}", humantime::format_duration(*d))
            }
            UpstreamError::Protocol(e) => write!(f, "bad response: {e}"),
        }
    }
}

/// The app behind the proxy, reached over a keep-alive connection pool.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, ProxyBody>,
    /// No pooling: a retry must not meet another stale pooled connection.
    fresh: Client<HttpConnector, ProxyBody>,
    scheme: Scheme,
    authority: Authority,
    response_timeout: Duration,
    connect_timeout: Duration,
    /// Unix milliseconds of the last response head from the app.
    last_answer: Arc<AtomicU64>,
}

impl Upstream {
    /// Builds the pool. Connections are made lazily, on the first request.
    pub fn new(cfg: &config::Upstream) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle)
            // A request that never reached a pooled connection the app had
            // closed is retried on a fresh one: nothing was sent, so it is safe.
            .retry_canceled_requests(true)
            .set_host(false)
            .build(connector.clone());
        let fresh = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .set_host(false)
            .build(connector);
        Upstream {
            client,
            fresh,
            scheme: cfg.url.scheme.clone(),
            authority: cfg.url.authority.clone(),
            response_timeout: cfg.response_timeout,
            connect_timeout: cfg.connect_timeout,
            last_answer: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The app's own `host:port`.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The absolute URI the pool needs to pick a connection; hyper sends
    /// only the path and query on the wire.
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            path_and_query
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).expect("scheme, authority and path are all set")
    }

    /// Notes that the app just answered (for readiness).
    pub fn mark_answered(&self) {
        self.last_answer.store(unix_millis(), Ordering::Relaxed);
    }

    /// Whether the app answered within `window`.
    pub fn answered_within(&self, window: Duration) -> bool {
        let last = self.last_answer.load(Ordering::Relaxed);
        last != 0 && unix_millis().saturating_sub(last) <= window.as_millis() as u64
    }

    /// Whether a TCP connection to the app can be opened now.
    pub async fn probe(&self) -> bool {
        let addr = self.authority.as_str().to_string();
        matches!(
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        )
    }

    /// Sends a request and waits for the response head, within `response_timeout`.
    ///
    /// A pooled connection the app closed while the request was on its way
    /// fails after the request was written, which hyper cannot retry. When
    /// the request is safe to repeat (idempotent method, no body) it is sent
    /// once more, on a new connection.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, UpstreamError> {
        let replay = (is_idempotent(req.method()) && req.body().is_end_stream())
            .then(|| (req.method().clone(), req.uri().clone(), req.headers().clone()));
        let started = tokio::time::Instant::now();
        match (Self::exchange(&self.client, req, self.response_timeout).await, replay) {
            (Err(UpstreamError::Protocol(first)), Some((method, uri, headers))) => {
                tracing::debug!("retrying {method} {} on a new connection after: {first}", uri.path());
                let mut again = Request::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
                *again.method_mut() = method;
                *again.uri_mut() = uri;
                *again.headers_mut() = headers;
                let left = self.response_timeout.saturating_sub(started.elapsed());
                Self::exchange(&self.fresh, again, left).await
            }
            (result, _) => result,
        }
    }

    async fn exchange(
        client: &Client<HttpConnector, ProxyBody>,
        req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(timeout, client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout(timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(UpstreamError::Protocol(error_chain(&e))),
        }
    }
}

/// RFC 9110 §9.2.2 idempotent methods.
fn is_idempotent(method: &http::Method) -> bool {
    matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// "a: b: c" from an error and its sources, for one readable log line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_methods_are_replayed() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
            assert!(is_idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "PROPFIND"] {
            assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
        }
    }
}
