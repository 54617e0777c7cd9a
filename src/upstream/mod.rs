//! A route's servers: picking one (balance, affinity, health), sending the
//! request over a pooled keep-alive HTTP/1.1 connection or a shared HTTP/2
//! one (the version is the connection's, decided here), retrying only what
//! is safe, and saying why it failed as a typed [`UpstreamError`].

pub mod health;
pub mod pool;
pub mod tls;

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST, TE, UPGRADE};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Body;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use self::health::{Health, Passive};
use self::pool::{Pool, PooledBody, PooledConn, Sender, Target};
use self::tls::UpstreamTls;
use crate::clock::monotonic_millis;
use crate::config::{Balance, ServerUrl};
use crate::metrics::Metrics;

/// Any error a body can produce.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type on both sides of the proxy: streamed, never buffered whole.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Request extension: the client accepts trailers (it sent `TE: trailers`,
/// as gRPC clients do). `TE` is hop-by-hop and stripped; an HTTP/2 server is
/// sent `te: trailers` again (RFC 9113 §8.2.2), an HTTP/1.1 one nothing.
#[derive(Debug, Clone, Copy)]
pub struct AcceptsTrailers;

/// What went wrong on the way to the app; retries, ejection, metrics and the
/// 502/504 choice all read this one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The server refused the connection or is not there (no such socket).
    ConnectRefused,
    /// No connection within `connect_timeout`.
    ConnectTimeout,
    /// The connection closed or reset before a response head.
    ResetBeforeResponse,
    /// No response head within `response_timeout`.
    ResponseTimeout,
    /// The server answered with something that is not HTTP.
    Protocol,
    /// The server broke the response body off after its head (the client
    /// had its status already: counted, never answered with).
    ResetMidBody,
    /// The TLS handshake with an `https://` server failed: its certificate
    /// was not verified (unknown CA, wrong name, expired) or no common
    /// version or cipher. The request was not sent.
    Tls,
    /// The request asks for an upgrade (WebSocket), which an `h2c://` server
    /// (HTTP/2 only) cannot take. The request was not sent.
    UpgradeOverHttp2,
    /// Every server of the route is ejected or failing its health checks.
    NoHealthyServer,
}

impl FailureKind {
    /// The status tlsfront answers with.
    pub fn status(self) -> StatusCode {
        match self {
            FailureKind::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `kind` label of `tlsfront_upstream_server_failures_total`.
    fn server_metric_kind(self) -> &'static str {
        match self {
            FailureKind::ConnectRefused => "connect_refused",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::ResetBeforeResponse => "reset",
            FailureKind::ResponseTimeout => "timeout",
            FailureKind::Protocol => "protocol",
            FailureKind::ResetMidBody => "reset_mid_body",
            FailureKind::Tls => "tls",
            FailureKind::UpgradeOverHttp2 => "upgrade_over_http2",
            FailureKind::NoHealthyServer => "no_healthy_server",
        }
    }

    /// The short body of tlsfront's error response.
    pub fn client_text(self) -> &'static str {
        match self {
            FailureKind::ConnectRefused | FailureKind::ConnectTimeout => {
                "502 Bad Gateway: tlsfront could not connect to the app."
            }
            FailureKind::ResetBeforeResponse => "502 Bad Gateway: the app closed the connection without answering.",
            FailureKind::ResponseTimeout => "504 Gateway Timeout: the app did not answer in time.",
            FailureKind::Protocol | FailureKind::ResetMidBody => "502 Bad Gateway: the app's response was broken.",
            FailureKind::Tls => "502 Bad Gateway: tlsfront could not make a verified TLS connection to the app (certificate not trusted or not for this name).",
            FailureKind::UpgradeOverHttp2 => {
                "502 Bad Gateway: this app is reached over HTTP/2 (h2c), which cannot carry a WebSocket or other protocol upgrade; use an http:// or https:// server for it."
            }
            FailureKind::NoHealthyServer => "502 Bad Gateway: no healthy server is available for this site right now.",
        }
    }

    /// Whether the server is to blame (passive health counts it).
    fn counts_against_server(self) -> bool {
        !matches!(
            self,
            FailureKind::NoHealthyServer | FailureKind::Protocol | FailureKind::UpgradeOverHttp2
        )
    }
}

/// Why the app did not answer.
#[derive(Debug)]
pub struct UpstreamError {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The last server tried, if any.
    pub server: Option<String>,
    /// The underlying error, for the log.
    pub detail: String,
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FailureKind::ConnectRefused => "cannot connect",
            FailureKind::ConnectTimeout => "connect timed out",
            FailureKind::ResetBeforeResponse => "connection closed before the response",
            FailureKind::ResponseTimeout => "no response headers in time",
            FailureKind::Protocol => "bad response",
            FailureKind::ResetMidBody => "response body cut off",
            FailureKind::Tls => "TLS handshake failed",
            FailureKind::UpgradeOverHttp2 => "upgrade refused",
            FailureKind::NoHealthyServer => "no healthy server",
        };
        write!(f, "{what}")?;
        if let Some(s) = &self.server {
            write!(f, " ({s})")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Active health checks of a route.
#[derive(Debug, Clone)]
pub struct ActiveCheck {
    /// `GET` this path; 2xx/3xx = pass.
    pub path: String,
    /// Between checks.
    pub interval: Duration,
    /// Per check.
    pub timeout: Duration,
    /// Passes in a row to come back.
    pub healthy_threshold: u32,
    /// Failures in a row to go out.
    pub unhealthy_threshold: u32,
}

/// How a route reaches its servers.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The servers, in configuration order.
    pub servers: Vec<ServerUrl>,
    /// Limit on opening a connection.
    pub connect_timeout: Duration,
    /// Limit until the response head.
    pub response_timeout: Duration,
    /// Longest silence in the middle of a response body.
    pub read_timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per server.
    pub pool_max_idle: usize,
    /// Balancing algorithm.
    pub balance: Balance,
    /// Passive health (ejection). Ignored with a single server.
    pub passive: Passive,
    /// Statuses that count as failures for passive health.
    pub fail_statuses: Vec<u16>,
    /// Active health checks, if configured.
    pub active: Option<ActiveCheck>,
    /// TLS for `https://` servers (none when the route has none).
    pub tls: Option<Arc<UpstreamTls>>,
}

/// One configured server.
pub struct Server {
    /// As configured, e.g. `http://10.0.0.5:8000` or `unix:/run/app.sock`.
    pub label: String,
    /// Stable short id for the affinity cookie (from the label, not the position).
    pub id: String,
    /// Used for redirect rewriting: the address the app may leak.
    pub authority: Authority,
    host_header: HeaderValue,
    pool: Arc<Pool>,
    in_flight: AtomicUsize,
    /// Passive and active health.
    pub health: Health,
    last_answer: AtomicU64,
    responses: Counter,
    up: Gauge,
    metrics_failures: Vec<(FailureKind, Counter)>,
    /// Its `reset_mid_body` counter, handed to every response body.
    cut_off: Counter,
}

impl Server {
    fn new(url: &ServerUrl, s: &UpstreamSettings, metrics: &Metrics) -> Self {
        let label = url.to_string();
        let authority = url
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("localhost"));
        let labels = vec![("upstream", label.clone())];
        let failures: Vec<(FailureKind, Counter)> = [
            FailureKind::ConnectRefused,
            FailureKind::ConnectTimeout,
            FailureKind::ResetBeforeResponse,
            FailureKind::ResponseTimeout,
            FailureKind::Protocol,
            FailureKind::Tls,
            FailureKind::UpgradeOverHttp2,
            FailureKind::ResetMidBody,
        ]
        .into_iter()
        .map(|k| {
            let mut l = labels.clone();
            l.push(("kind", k.server_metric_kind().to_string()));
            (k, metrics.server_failures.get_or_create(&l).clone())
        })
        .collect();
        let up = metrics.server_up.get_or_create(&labels).clone();
        up.set(1);
        Server {
            id: format!("{:08x}", fnv1a(label.as_bytes()) as u32),
            host_header: HeaderValue::from_str(authority.as_str()).unwrap_or(HeaderValue::from_static("localhost")),
            pool: Pool::new(
                target(url, s.tls.as_ref()),
                s.connect_timeout,
                s.pool_idle_timeout,
                s.pool_max_idle,
            ),
            in_flight: AtomicUsize::new(0),
            health: Health::default(),
            last_answer: AtomicU64::new(0),
            responses: metrics.server_responses.get_or_create(&labels).clone(),
            up,
            cut_off: failures
                .iter()
                .find(|(k, _)| *k == FailureKind::ResetMidBody)
                .map(|(_, c)| c.clone())
                .expect("ResetMidBody is among the counted failure kinds"),
            metrics_failures: failures,
            authority,
            label,
        }
    }

    /// Requests in flight to this server.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the server answered within `window`.
    pub fn answered_within(&self, window: Duration) -> bool {
        let last = self.last_answer.load(Ordering::Relaxed);
        last != 0 && monotonic_millis().saturating_sub(last) <= window.as_millis() as u64
    }

    /// Whether it takes requests now (health checks pass, not ejected).
    pub fn available(&self) -> bool {
        self.health.available(monotonic_millis())
    }

    /// Whether a connection to it can be opened now.
    pub async fn probe(&self) -> bool {
        self.pool.connect().await.is_ok()
    }

    fn count_failure(&self, kind: FailureKind) {
        if let Some((_, c)) = self.metrics_failures.iter().find(|(k, _)| *k == kind) {
            c.inc();
        }
    }
}

/// Counts a request in flight to a server while alive.
struct InFlightGuard(Arc<Server>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response from a server, and which server it was.
pub struct Answer {
    /// The response; its body returns the connection to the pool when read.
    pub response: Response<PooledBody>,
    /// The server that answered.
    pub server: Arc<Server>,
}

/// A route's servers.
pub struct Upstream {
    servers: Vec<Arc<Server>>,
    settings: UpstreamSettings,
    next: AtomicUsize,
    random: AtomicU64,
}

impl Upstream {
    /// Longest silence allowed in the middle of a response body.
    pub fn read_timeout(&self) -> Duration {
        self.settings.read_timeout
    }

    /// Builds the servers and their (empty) pools, and starts active health
    /// checks when configured (they stop when the upstream is dropped).
    pub fn new(settings: UpstreamSettings, metrics: &Metrics) -> Arc<Self> {
        let servers = settings
            .servers
            .iter()
            .map(|u| Arc::new(Server::new(u, &settings, metrics)))
            .collect();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            | 1;
        let upstream = Arc::new(Upstream {
            servers,
            settings,
            next: AtomicUsize::new(0),
            random: AtomicU64::new(seed),
        });
        if let (Some(check), Ok(runtime)) = (&upstream.settings.active, tokio::runtime::Handle::try_current()) {
            for (i, _) in upstream.servers.iter().enumerate() {
                runtime.spawn(active_checks(Arc::downgrade(&upstream), i, check.clone()));
            }
        }
        upstream
    }

    /// The servers, in configuration order.
    pub fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    /// The server with this affinity id, if it takes requests.
    fn sticky(&self, id: &str, now: u64) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| s.id == id)
            .filter(|i| self.servers[*i].health.available(now))
    }

    /// Picks a server that takes requests and was not tried yet.
    fn pick(&self, now: u64, tried: u64) -> Option<usize> {
        let n = self.servers.len();
        let usable = |i: usize| i < 64 && tried & (1 << i) == 0 && self.servers[i].health.available(now);
        match self.settings.balance {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|i| usable(*i))
            }
            Balance::LeastRequests => {
                let candidates: Vec<usize> = (0..n).filter(|i| usable(*i)).collect();
                match candidates.len() {
                    0 => None,
                    1 => Some(candidates[0]),
                    len => {
                        let r = self.random_u64();
                        let a = candidates[(r % len as u64) as usize];
                        let mut b = candidates[((r >> 32) % (len as u64 - 1)) as usize];
                        if b == a {
                            b = candidates[len - 1];
                        }
                        Some(if self.servers[b].in_flight() < self.servers[a].in_flight() {
                            b
                        } else {
                            a
                        })
                    }
                }
            }
        }
    }

    /// xorshift64*: cheap, good enough to spread load; not for secrets.
    fn random_u64(&self) -> u64 {
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn failed(&self, server: &Server, kind: FailureKind) {
        server.count_failure(kind);
        if !kind.counts_against_server() || self.servers.len() < 2 {
            return;
        }
        if let Some(period) = server.health.failure(monotonic_millis(), self.settings.passive) {
            server.up.set(0);
            tracing::warn!(
                upstream = %server.label,
                "server ejected for {} after {} failures in a row (last: {kind:?})",
                humantime::format_duration(period),
                self.settings.passive.max_fails
            );
        }
    }

    fn succeeded(&self, server: &Server) {
        server.responses.inc();
        server.last_answer.store(monotonic_millis(), Ordering::Relaxed);
        server.health.success();
        if server.up.get() == 0 && server.health.up() {
            server.up.set(1);
        }
    }

    /// Sends a request to one of the servers and waits for the response head.
    ///
    /// A server that cannot be connected to is skipped for the next one (the
    /// request has not left tlsfront, body included). A pooled connection
    /// the server had closed is replaced once by a new one to the same server:
    /// with the request itself when it was never written, or, for an
    /// idempotent request without a body, with a copy. Nothing else is ever
    /// sent twice.
    pub async fn send(&self, mut req: Request<ProxyBody>, affinity: Option<&str>) -> Result<Answer, UpstreamError> {
        let now = monotonic_millis();
        let deadline = tokio::time::Instant::now() + self.settings.response_timeout;
        let mut tried: u64 = 0;
        let mut choice = affinity
            .and_then(|id| self.sticky(id, now))
            .or_else(|| self.pick(now, tried));
        let mut last_error: Option<UpstreamError> = None;
        let upgrade = req.headers().contains_key(UPGRADE);
        while let Some(i) = choice {
            let server = self.servers[i].clone();
            tried |= 1 << i.min(63);
            server.in_flight.fetch_add(1, Ordering::Relaxed);
            let _guard = InFlightGuard(server.clone());
            let conn = match server.pool.checkout(upgrade).await {
                Ok(conn) => conn,
                Err(e) => {
                    let kind = e.kind();
                    self.failed(&server, kind);
                    last_error = Some(UpstreamError {
                        kind,
                        server: Some(server.label.clone()),
                        detail: e.to_string(),
                    });
                    choice = self.pick(monotonic_millis(), tried);
                    continue;
                }
            };
            if req.headers().get(HOST).is_none() {
                req.headers_mut().insert(HOST, server.host_header.clone());
            }
            fit_to_connection(&mut req, &conn.sender, &server.pool.target().scheme());
            let exchange = self.exchange(&server, conn, req, tried);
            let result = match tokio::time::timeout_at(deadline, exchange).await {
                Ok(result) => result,
                Err(_) => Err((
                    UpstreamError {
                        kind: FailureKind::ResponseTimeout,
                        server: Some(server.label.clone()),
                        detail: format!("waited {}", humantime::format_duration(self.settings.response_timeout)),
                    },
                    server.clone(),
                )),
            };
            return match result {
                Ok((response, server)) => {
                    if self.settings.fail_statuses.contains(&response.status().as_u16()) {
                        server.count_failure(FailureKind::Protocol);
                        if self.servers.len() >= 2 {
                            if let Some(period) = server.health.failure(monotonic_millis(), self.settings.passive) {
                                server.up.set(0);
                                tracing::warn!(
                                    upstream = %server.label,
                                    "server ejected for {} after answering {} {} times in a row",
                                    humantime::format_duration(period),
                                    response.status().as_u16(),
                                    self.settings.passive.max_fails
                                );
                            }
                        }
                    } else {
                        self.succeeded(&server);
                    }
                    Ok(Answer { response, server })
                }
                Err((e, server)) => {
                    self.failed(&server, e.kind);
                    Err(e)
                }
            };
        }
        Err(last_error.unwrap_or(UpstreamError {
            kind: FailureKind::NoHealthyServer,
            server: None,
            detail: format!(
                "all {} server(s) are ejected or failing their health checks",
                self.servers.len()
            ),
        }))
    }

    /// One request on one connection, with the one replay that is safe.
    ///
    /// The request is sent again, once, on a new connection when the first
    /// one closed before any byte of the response and either the request was
    /// never written (hyper gives it back) or it is idempotent without a
    /// body (then a copy goes). That covers a pooled connection that went
    /// stale, and a server that was stopping: it closes its kept-alive
    /// connections and resets those still waiting in its listen backlog. So
    /// the replay goes to another server that takes requests when there is
    /// one (a deploy), else to the same server. Returns the server that
    /// answered, or the one that failed.
    async fn exchange(
        &self,
        server: &Arc<Server>,
        mut conn: PooledConn,
        req: Request<ProxyBody>,
        tried: u64,
    ) -> Result<(Response<PooledBody>, Arc<Server>), (UpstreamError, Arc<Server>)> {
        let replay = (is_idempotent(req.method()) && req.body().is_end_stream())
            .then(|| (req.method().clone(), req.uri().clone(), req.headers().clone()));
        let reused = conn.reused;
        let first = conn.sender.try_send_request(req).await;
        let mut err = match first {
            Ok(resp) => return Ok((pooled(resp, conn, server), server.clone())),
            Err(err) => err,
        };
        let again = match (err.take_message(), replay) {
            (Some(req), _) => Some(req),
            (None, Some((method, uri, headers))) => {
                let mut again = Request::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
                *again.method_mut() = method;
                *again.uri_mut() = uri;
                *again.headers_mut() = headers;
                Some(again)
            }
            _ => None,
        };
        let error = err.into_error();
        let failure = classify(server, &error);
        let Some(again) = again.filter(|_| failure.kind == FailureKind::ResetBeforeResponse) else {
            return Err((failure, server.clone()));
        };
        if !reused {
            // A new connection reset: the server itself is to blame.
            self.failed(server, failure.kind);
        }
        let next = self
            .servers
            .iter()
            .position(|s| Arc::ptr_eq(s, server))
            .map_or(tried, |i| tried | (1 << i.min(63)));
        let retry = self
            .pick(monotonic_millis(), next)
            .map_or_else(|| server.clone(), |i| self.servers[i].clone());
        tracing::debug!(
            upstream = %server.label,
            retry = %retry.label,
            reused,
            "connection closed before the response ({}); sending the request again on a new connection",
            error_chain(&error)
        );
        retry.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlightGuard(retry.clone());
        let upgrade = again.headers().contains_key(UPGRADE);
        let mut fresh = match retry.pool.checkout_fresh(upgrade).await {
            Ok(fresh) => fresh,
            Err(e) => {
                let e = UpstreamError {
                    kind: e.kind(),
                    server: Some(retry.label.clone()),
                    detail: e.to_string(),
                };
                return Err((e, retry));
            }
        };
        let mut again = again;
        fit_to_connection(&mut again, &fresh.sender, &retry.pool.target().scheme());
        match fresh.sender.send_request(again).await {
            Ok(resp) => Ok((pooled(resp, fresh, &retry), retry)),
            Err(e) => Err((classify(&retry, &e), retry)),
        }
    }
}

impl pool::ConnectError {
    /// The failure this is, for retries, ejection and the answer.
    fn kind(&self) -> FailureKind {
        match self {
            pool::ConnectError::Timeout(_) => FailureKind::ConnectTimeout,
            pool::ConnectError::Refused(_) => FailureKind::ConnectRefused,
            pool::ConnectError::Tls(_) => FailureKind::Tls,
            pool::ConnectError::Handshake(_) => FailureKind::ResetBeforeResponse,
            pool::ConnectError::UpgradeOverHttp2 => FailureKind::UpgradeOverHttp2,
        }
    }
}

/// Builds the [`Target`] of a server: `https://` ones get the route's TLS
/// settings (or the system roots, should a route have none).
fn target(url: &ServerUrl, tls: Option<&Arc<UpstreamTls>>) -> Target {
    match url {
        ServerUrl::Http(u) => Target::Tcp(u.authority.as_str().to_string()),
        ServerUrl::H2c(u) => Target::H2c(u.authority.as_str().to_string()),
        ServerUrl::Https(u) => Target::Tls {
            addr: u.authority.as_str().to_string(),
            name: crate::config::tls_name(u.authority.host()).ok(),
            tls: tls
                .cloned()
                .unwrap_or_else(|| Arc::new(UpstreamTls::new(tls::system_roots(), None))),
        },
        ServerUrl::Unix(p) => Target::Unix(p.clone()),
    }
}

/// Shapes a request for the version its connection speaks (the proxy
/// leaves that to this layer). HTTP/2: `:scheme` and `:authority` in the
/// URI, the authority from `Host` (which HTTP/2 requests do not carry), and
/// `te: trailers` when the client accepts them. HTTP/1.1: origin-form URI,
/// `Host` header, no `TE`. Either way round, so a replay on a connection of
/// the other version is shaped again.
fn fit_to_connection(req: &mut Request<ProxyBody>, sender: &Sender, scheme: &Scheme) {
    // Only where the URI is rebuilt: an HTTP/1.1 request in origin form (the
    // usual case) is left as it is, with no copy.
    let path_of = |req: &Request<ProxyBody>| {
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
    };
    match sender.version() {
        Version::HTTP_2 => {
            let host = req.headers_mut().remove(HOST);
            let authority = host
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .or_else(|| req.uri().authority().cloned());
            if let Some(authority) = authority {
                if let Ok(uri) = Uri::builder()
                    .scheme(scheme.clone())
                    .authority(authority)
                    .path_and_query(path_of(req))
                    .build()
                {
                    *req.uri_mut() = uri;
                }
            }
            if req.extensions().get::<AcceptsTrailers>().is_some() {
                req.headers_mut().insert(TE, HeaderValue::from_static("trailers"));
            }
            *req.version_mut() = Version::HTTP_2;
        }
        _ => {
            if let Some(authority) = req.uri().authority() {
                if !req.headers().contains_key(HOST) {
                    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                        req.headers_mut().insert(HOST, host);
                    }
                }
                *req.uri_mut() = Uri::from(path_of(req));
            }
            req.headers_mut().remove(TE);
            *req.version_mut() = Version::HTTP_11;
        }
    }
}

fn pooled(resp: Response<hyper::body::Incoming>, conn: PooledConn, server: &Server) -> Response<PooledBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        resp.map(PooledBody::detached)
    } else {
        let cut_off = server.cut_off.clone();
        resp.map(|b| PooledBody::new(b, conn).counting_cut_off(cut_off))
    }
}

fn classify(server: &Server, e: &hyper::Error) -> UpstreamError {
    let kind = if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() || e.is_user() {
        FailureKind::Protocol
    } else {
        FailureKind::ResetBeforeResponse
    };
    UpstreamError {
        kind,
        server: Some(server.label.clone()),
        detail: error_chain(e),
    }
}

/// Probes one server every `interval` until the upstream is dropped.
async fn active_checks(upstream: Weak<Upstream>, index: usize, check: ActiveCheck) {
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(up) = upstream.upgrade() else {
            return;
        };
        let server = up.servers[index].clone();
        drop(up);
        let passed = tokio::time::timeout(check.timeout, health_probe(&server, &check.path))
            .await
            .unwrap_or(false);
        if let Some(now_up) = server
            .health
            .checked(passed, check.healthy_threshold, check.unhealthy_threshold)
        {
            server.up.set(i64::from(now_up));
            if now_up {
                tracing::info!(upstream = %server.label, "server passes its health check {} again: back in service", check.path);
            } else {
                tracing::warn!(upstream = %server.label, "server fails its health check {}: taken out of service", check.path);
            }
        }
    }
}

async fn health_probe(server: &Server, path: &str) -> bool {
    let Ok(mut sender) = server.pool.connect().await else {
        return false;
    };
    let Ok(uri) = path.parse::<http::Uri>() else {
        return false;
    };
    let mut req = Request::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
    *req.uri_mut() = uri;
    req.headers_mut().insert(HOST, server.host_header.clone());
    req.headers_mut().insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("tlsfront-health-check"),
    );
    fit_to_connection(&mut req, &sender, &server.pool.target().scheme());
    match sender.send_request(req).await {
        Ok(resp) => {
            let ok = resp.status().is_success() || resp.status().is_redirection();
            let _ = resp.into_body().collect().await;
            ok
        }
        Err(_) => false,
    }
}

/// RFC 9110 §9.2.2 idempotent methods.
fn is_idempotent(method: &http::Method) -> bool {
    matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

/// FNV-1a: a stable id for a server label (not a secret).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
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

    /// A server that resets every connection after reading the request head,
    /// as a stopping server does to connections in its listen backlog.
    /// Returns its address and a count of the connections it took.
    async fn resetting_server() -> (String, Arc<AtomicUsize>) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let taken = Arc::new(AtomicUsize::new(0));
        let count = taken.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.set_zero_linger();
                drop(stream);
            }
        });
        (addr, taken)
    }

    /// A server that answers every request `200` with the body `B`.
    async fn answering_server() -> (String, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let taken = Arc::new(AtomicUsize::new(0));
        let count = taken.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nB";
                        if stream.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, taken)
    }

    fn two_servers(first: &str, second: &str) -> Arc<Upstream> {
        let url = |a: &str| ServerUrl::parse(&format!("http://{a}")).unwrap();
        Upstream::new(
            UpstreamSettings {
                servers: vec![url(first), url(second)],
                connect_timeout: Duration::from_secs(2),
                response_timeout: Duration::from_secs(5),
                read_timeout: Duration::from_secs(5),
                pool_idle_timeout: Duration::from_secs(60),
                pool_max_idle: 8,
                balance: Balance::RoundRobin,
                passive: Passive {
                    max_fails: 3,
                    eject_time: Duration::from_secs(10),
                },
                fail_statuses: Vec::new(),
                active: None,
                tls: None,
            },
            &Metrics::new(),
        )
    }

    fn request(method: &str, body: &'static str) -> Request<ProxyBody> {
        let body = http_body_util::Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed();
        let mut req = Request::new(body);
        *req.method_mut() = method.parse().unwrap();
        *req.uri_mut() = http::Uri::from_static("/server");
        req.headers_mut().insert(HOST, HeaderValue::from_static("app.example"));
        req
    }

    // A deploy: the first server picked is stopping and resets a brand-new
    // connection (not a stale pooled one). A GET goes to the other server;
    // a POST is never sent twice. On the old code the GET got a 502.
    #[tokio::test]
    async fn a_reset_new_connection_sends_an_idempotent_request_to_another_server() {
        let (stopping, resets) = resetting_server().await;
        let (healthy, answers) = answering_server().await;

        let upstream = two_servers(&stopping, &healthy);
        let answer = upstream
            .send(request("GET", ""), None)
            .await
            .expect("the GET is answered");
        assert_eq!(answer.response.status(), StatusCode::OK);
        assert_eq!(answer.server.label, format!("http://{healthy}"));
        assert_eq!(resets.load(Ordering::SeqCst), 1);
        assert_eq!(answers.load(Ordering::SeqCst), 1);

        let upstream = two_servers(&stopping, &healthy);
        let err = match upstream.send(request("POST", "x=1"), None).await {
            Ok(a) => panic!("a POST was replayed to {}", a.server.label),
            Err(e) => e,
        };
        assert_eq!(err.kind, FailureKind::ResetBeforeResponse);
        assert_eq!(err.server.as_deref(), Some(format!("http://{stopping}").as_str()));
        assert_eq!(resets.load(Ordering::SeqCst), 2);
        assert_eq!(answers.load(Ordering::SeqCst), 1, "the POST reached a second server");
    }

    #[test]
    fn every_failure_has_a_status_and_text() {
        for k in [
            FailureKind::ConnectRefused,
            FailureKind::ConnectTimeout,
            FailureKind::ResetBeforeResponse,
            FailureKind::ResponseTimeout,
            FailureKind::Protocol,
            FailureKind::Tls,
            FailureKind::UpgradeOverHttp2,
            FailureKind::NoHealthyServer,
        ] {
            let s = k.status();
            assert!(k.client_text().starts_with(s.as_str()), "{k:?}");
        }
    }
}
