//! The life of one proxied request, top to bottom:
//! read the head → check limits → request policy → send upstream →
//! response policy → stream back (or tunnel an upgrade) → record.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, EXPECT, HOST, UPGRADE};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessRecord;
use crate::body::{BodyOutcome, LimitedBody, ObservedBody};
use crate::compress::{self, CompressedBody};
use crate::config::{self, Config};
use crate::connection::Connection;
use crate::hints::Hints;
use crate::policy::forwarded::{self, RequestOrigin};
use crate::policy::headers::HeaderRules;
use crate::policy::{cookies, encoding};
use crate::policy::{hop, prefix, redirects};
use crate::protect::forward::{self, Asking, Verdict};
use crate::protect::{rate_limit, Authenticator};
use crate::routes::{self, Route, RouteTable, Selected};
use crate::telemetry::{InFlight, Telemetry};
use crate::upstream::{AcceptsTrailers, FailureKind, ProxyBody, UpstreamError};

static X_FORWARDED_PREFIX: http::header::HeaderName = http::header::HeaderName::from_static("x-forwarded-prefix");
static X_FORWARDED_USER: http::header::HeaderName = http::header::HeaderName::from_static("x-forwarded-user");
static X_FORWARDED_CLIENT_CERT: http::header::HeaderName =
    http::header::HeaderName::from_static("x-forwarded-client-cert");

/// What a client's request body may be: hyper's [`hyper::body::Incoming`] (HTTP/1.1,
/// HTTP/2) or an HTTP/3 request stream.
pub trait ClientBody: hyper::body::Body<Data = Bytes, Error = Self::Failure> + Send + Sync + Unpin + 'static {
    /// The body's error.
    type Failure: Into<crate::upstream::BoxError>;
}

impl<B, E> ClientBody for B
where
    B: hyper::body::Body<Data = Bytes, Error = E> + Send + Sync + Unpin + 'static,
    E: Into<crate::upstream::BoxError>,
{
    type Failure = E;
}

/// Everything a request needs, built once per configuration generation.
pub struct Proxy {
    /// Where requests go, and each route's policy.
    routes: Arc<RouteTable>,
    /// Top-level `[headers]`, for tlsfront's own answers (no route involved).
    headers: HeaderRules,
    /// Where clients connect (for the public https port).
    listen: config::Listen,
    max_header_bytes: usize,
    max_body_bytes: u64,
    telemetry: Arc<Telemetry>,
    hints: Arc<Hints>,
    /// Upgraded connections, so shutdown can wait for them.
    tunnels: TaskTracker,
    /// Sites asking for client certificates, when any does.
    client_sites: Option<Arc<crate::tls::ClientAuthSites>>,
}

/// What forwarding produced, before the response is recorded.
struct Forwarded {
    response: Response<ProxyBody>,
    /// The route that took the request (its `[headers]` apply to the response).
    route: Option<Arc<Route>>,
    client_ip: IpAddr,
    host: Option<HeaderValue>,
    upstream_time: Option<Duration>,
    /// The response is the app's (tlsfront's own answers are never compressed).
    from_app: bool,
    /// The user `[auth] basic` let in.
    user: Option<String>,
}

impl Proxy {
    /// Builds the request pipeline from a validated config.
    pub fn new(config: &Config, telemetry: Arc<Telemetry>, hints: Arc<Hints>, tunnels: TaskTracker) -> Self {
        Proxy {
            routes: Arc::new(RouteTable::new(config, &telemetry.metrics)),
            headers: HeaderRules::from(&config.headers),
            listen: config.listen.clone(),
            max_header_bytes: config.limits.max_request_header_bytes,
            max_body_bytes: config.limits.max_request_body_bytes,
            telemetry,
            hints,
            tunnels,
            client_sites: None,
        }
    }

    /// The sites that ask for client certificates: a request for one must
    /// come on a connection whose handshake was made for it.
    pub fn with_client_sites(mut self, sites: Option<Arc<crate::tls::ClientAuthSites>>) -> Self {
        self.client_sites = sites;
        self
    }

    /// The route table (for readiness checks).
    pub fn routes(&self) -> &Arc<RouteTable> {
        &self.routes
    }

    /// Proxies one request. Never fails: problems become 4xx/5xx responses.
    pub async fn handle<B: ClientBody>(&self, req: Request<B>, conn: &Arc<Connection>) -> Response<ProxyBody> {
        let guard = conn.begin_request();
        conn.requests.set_body_unread(!req.body().is_end_stream());
        let started = Instant::now();
        let logging = self.telemetry.access_log.enabled();
        let time = if logging {
            SystemTime::now()
        } else {
            SystemTime::UNIX_EPOCH
        };
        let method = req.method().clone();
        let protocol = req.version();
        // Kept for compression, chosen once the route and response are known.
        let accept = encoding::accept_encoding(req.headers());
        let path = if logging {
            req.uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string())
        } else {
            String::new()
        };

        let forwarded = self.forward(req, conn).await;

        let (mut head, body) = forwarded.response.into_parts();
        match &forwarded.route {
            Some(route) => route.policy.headers.apply_response(&mut head.headers),
            None => self.headers.apply_response(&mut head.headers),
        }
        let body = match &forwarded.route {
            Some(route) if forwarded.from_app => self.compress(route, &method, &accept, &mut head, body),
            _ => body,
        };
        let in_flight = InFlight {
            record: AccessRecord {
                time,
                client_ip: forwarded.client_ip,
                method,
                host: forwarded.host,
                path,
                status: head.status.as_u16(),
                bytes: 0,
                upstream_time: forwarded.upstream_time,
                total_time: Duration::ZERO,
                protocol,
                tls_version: conn.tls_version,
                key_exchange: conn.key_exchange,
                user: forwarded.user,
            },
            started,
        };
        let read_timeout = forwarded.route.as_ref().map(|r| r.upstream.read_timeout());
        let body = ObservedBody::new(body, in_flight, self.telemetry.clone(), guard, read_timeout);
        Response::from_parts(head, body.boxed())
    }

    /// Why a request's body is refused before anything is sent: declared
    /// larger than `max_request_body_bytes` (413), or framed with a transfer
    /// coding other than chunked (501). Out of line, for requests with a
    /// body only: the bodiless majority never builds a refusal.
    #[inline(never)]
    fn refuse_body(&self, headers: &HeaderMap) -> Option<(StatusCode, std::borrow::Cow<'static, str>)> {
        if self.max_body_bytes != 0 && declared_length(headers).is_some_and(|n| n > self.max_body_bytes) {
            self.telemetry.metrics.count_limit("body_bytes");
            return Some((StatusCode::PAYLOAD_TOO_LARGE, "413 Content Too Large".into()));
        }
        let coding = hop::unsupported_transfer_coding(headers)?;
        let text = format!("501 Not Implemented: transfer coding {coding:?} is not supported (only chunked)");
        Some((StatusCode::NOT_IMPLEMENTED, text.into()))
    }

    async fn forward<B: ClientBody>(&self, mut req: Request<B>, conn: &Arc<Connection>) -> Forwarded {
        let peer_ip = conn.peer.ip().to_canonical();
        let method = req.method().clone();
        let refuse = |status, text: &str, host: Option<HeaderValue>| Forwarded {
            response: error_response(status, text),
            route: None,
            client_ip: peer_ip,
            host,
            upstream_time: None,
            from_app: false,
            user: None,
        };

        // 1. The head: which host, within the limits.
        let host = match request_host(&req) {
            Ok(host) => host,
            Err(reason) => return refuse(StatusCode::BAD_REQUEST, reason, None),
        };
        if req.method() == Method::CONNECT {
            return refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 Method Not Allowed: CONNECT is not supported; tlsfront is not a forward proxy",
                Some(host),
            );
        }
        if head_size(&req) > self.max_header_bytes {
            self.telemetry.metrics.count_limit("header_bytes");
            return refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "431 Request Header Fields Too Large",
                Some(host),
            );
        }
        if !req.body().is_end_stream() {
            if let Some((status, text)) = self.refuse_body(req.headers()) {
                return refuse(status, &text, Some(host));
            }
        }
        let public_port = self.listen.public_port(conn.local.port());
        let upgrade = wants_upgrade(&req).then(|| {
            let protocol = req.headers().get(UPGRADE).cloned();
            (hyper::upgrade::on(&mut req), protocol)
        });

        // 2. Where it goes: route match (the server is picked when sending).
        let (route, upstream_target) = match self.route(&req, &host) {
            Ok(found) => found,
            Err(refusal) => return refuse(refusal.0, refusal.1, Some(host)),
        };
        let policy = &route.policy;

        // 3. Request policy.
        let (mut head, body) = req.into_parts();
        let downstream_version = head.version;
        if hop::accepts_trailers(&head.headers) {
            head.extensions.insert(AcceptsTrailers);
        }
        hop::strip(&mut head.headers);
        // We answered any `Expect: 100-continue` ourselves when reading the body.
        head.headers.remove(EXPECT);
        if matches!(downstream_version, Version::HTTP_2 | Version::HTTP_3) {
            join_cookie_headers(&mut head.headers);
        }
        head.headers.insert(HOST, host.clone());
        let client = forwarded::apply(
            &mut head.headers,
            &policy.forwarded,
            &RequestOrigin {
                peer: peer_ip,
                host: &host,
                public_port,
                peer_value: Some(&conn.peer_value),
            },
        );
        // 3b. Protections, cheapest first: a refused client costs no
        // password hash and no call to the auth service.
        let user = match self.protect(&route, &mut head, &client, conn, &host).await {
            Ok(user) => user,
            Err(response) => {
                return Forwarded {
                    response,
                    route: Some(route),
                    client_ip: client.client_ip,
                    host: Some(host),
                    upstream_time: None,
                    from_app: false,
                    user: None,
                }
            }
        };
        if let Some(mount) = &route.strip_prefix {
            set_forwarded_prefix(&mut head.headers, mount, client.via_trusted_proxy);
        }
        policy.headers.apply_request(&mut head.headers);
        if let Some((_, Some(protocol))) = &upgrade {
            head.headers.insert(UPGRADE, protocol.clone());
            head.headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let req_path = head.uri.path_and_query().cloned();
        // The HTTP version (and the HTTP/2 `:authority`) is the chosen
        // connection's: the upstream layer sets it.
        head.uri = upstream_target;
        let affinity = route
            .sticky_cookie
            .as_deref()
            .and_then(|name| cookie_value(&head.headers, name));

        // 4. Upstream: pick a server, send, wait for the response head.
        let outcome = BodyOutcome::default();
        let reader = (!body.is_end_stream()).then(|| conn.clone());
        let body = LimitedBody::new(
            body,
            self.max_body_bytes,
            outcome.clone(),
            self.telemetry.clone(),
            reader,
        );
        let asked = Instant::now();
        let sent = route
            .upstream
            .send(Request::from_parts(head, body.boxed()), affinity.as_deref())
            .await;
        let upstream_time = asked.elapsed();
        self.telemetry
            .metrics
            .upstream_duration
            .observe(upstream_time.as_secs_f64());
        let answer = match sent {
            Ok(answer) => answer,
            Err(_) if outcome.too_large() => {
                self.telemetry.metrics.count_limit("body_bytes");
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, "413 Content Too Large", Some(host));
            }
            // Bad chunking or a client that went away: the client's fault, not the app's.
            Err(_) if outcome.client_error() => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request: malformed or incomplete request body",
                    Some(host),
                );
            }
            Err(e) => {
                self.count_upstream_error(&e);
                let status = e.kind.status();
                tracing::warn!(
                    client = %client.client_ip,
                    %method,
                    path = head_path(&req_path),
                    route = %route.name,
                    status = status.as_u16(),
                    "upstream failed: {e}"
                );
                return Forwarded {
                    response: error_response(status, e.kind.client_text()),
                    route: Some(route),
                    client_ip: client.client_ip,
                    host: Some(host),
                    upstream_time: Some(upstream_time),
                    from_app: false,
                    user,
                };
            }
        };
        let mut response = answer.response;
        let server = answer.server;

        // 5. Response policy.
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let tunnel = match (switching, upgrade) {
            (true, Some((client_side, _))) => Some((client_side, hyper::upgrade::on(&mut response))),
            (true, None) => {
                self.telemetry.metrics.upstream_protocol_errors.inc();
                return refuse(
                    StatusCode::BAD_GATEWAY,
                    "502 Bad Gateway: the app switched protocols unasked",
                    Some(host),
                );
            }
            (false, _) => None,
        };
        let (mut head, body) = response.into_parts();
        let upgraded_to = head.headers.get(UPGRADE).cloned();
        // `Trailer` names the fields after the body, end to end (RFC 9110
        // §6.6.2): an HTTP/1.1 client gets only trailers declared there.
        let declared_trailers: Vec<HeaderValue> = head.headers.get_all(http::header::TRAILER).iter().cloned().collect();
        hop::strip(&mut head.headers);
        for value in declared_trailers {
            head.headers.append(http::header::TRAILER, value);
        }
        let hardened = cookies::harden_response(&mut head.headers, &policy.cookies);
        if hardened.any() {
            self.hints.cookies_hardened(hardened);
        }
        if policy.rewrite_redirects {
            self.rewrite_redirects(&mut head.headers, &host, public_port, &server.authority);
        }
        if let Some(mount) = &route.strip_prefix {
            if let Some((public_host, _)) = host.to_str().ok().and_then(redirects::split_host_port) {
                prefix::prefix_response(&mut head.headers, mount, public_host);
            }
        }
        if let Some(name) = &route.sticky_cookie {
            if affinity.as_deref() != Some(server.id.as_str()) {
                let path = route.strip_prefix.as_deref().unwrap_or("/");
                let cookie = format!("{name}={}; Path={path}; Secure; HttpOnly; SameSite=Lax", server.id);
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    head.headers.append(http::header::SET_COOKIE, v);
                }
            }
        }

        // 6. Tunnel an upgrade, or stream the body back.
        if let Some((client_side, upstream_side)) = tunnel {
            if let Some(protocol) = upgraded_to {
                head.headers.insert(UPGRADE, protocol);
            }
            head.headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            let telemetry = self.telemetry.clone();
            self.tunnels.spawn(async move {
                let (Ok(client), Ok(upstream)) = (client_side.await, upstream_side.await) else {
                    return;
                };
                telemetry.metrics.open_tunnels.inc();
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                if let Ok((from_client, to_client)) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    telemetry.metrics.bytes_in.inc_by(from_client);
                    telemetry.metrics.bytes_out.inc_by(to_client);
                }
                telemetry.metrics.open_tunnels.dec();
            });
        }
        Forwarded {
            response: Response::from_parts(head, body.map_err(Into::into).boxed()),
            route: Some(route),
            client_ip: client.client_ip,
            host: Some(host),
            upstream_time: Some(upstream_time),
            from_app: true,
            user,
        }
    }

    /// `[access]`, `[rate_limit]` and `[auth]` of the route, and the headers
    /// only tlsfront may set (the auth service's, `X-Forwarded-User`,
    /// `X-Forwarded-Client-Cert`). `Ok` with the basic-auth user, or the
    /// answer that refuses the request.
    async fn protect(
        &self,
        route: &Route,
        head: &mut http::request::Parts,
        client: &forwarded::ClientView,
        conn: &Connection,
        host: &HeaderValue,
    ) -> Result<Option<String>, Response<ProxyBody>> {
        let protect = &route.protect;
        let metrics = &self.telemetry.metrics;
        if let Some(sites) = &self.client_sites {
            // The host's site must be the one the handshake was made for
            // (by SNI): a connection made for an open site, reused for one
            // that asks for certificates, would skip the asking.
            let name = host.to_str().ok().map(routes::normalise_host);
            let (wanted, _) = sites.for_name(name.as_deref());
            if wanted.auth != config::ClientAuth::None && conn.client_site.as_deref() != Some(&**wanted) {
                metrics.count_refused("client_cert");
                return Err(error_response(
                    StatusCode::MISDIRECTED_REQUEST,
                    "421 Misdirected Request: this site asks for a client certificate; connect to it by its own name",
                ));
            }
        }
        if let Some(access) = &protect.access {
            if !access.allows(client.client_ip) {
                metrics.count_refused("access");
                return Err(error_response(
                    StatusCode::FORBIDDEN,
                    "403 Forbidden: this address may not reach this site",
                ));
            }
        }
        if let Some(limiter) = &protect.rate_limit {
            if let Err(wait) = limiter.check(client.client_ip) {
                metrics.count_refused("rate_limit");
                let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "429 Too Many Requests");
                response.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(rate_limit::retry_after_secs(wait)),
                );
                return Err(response);
            }
        }
        // Only tlsfront's own auth names the user: a load balancer in front
        // passes clients' headers through, so even its word is not taken.
        head.headers.remove(&X_FORWARDED_USER);
        // A trusted proxy that terminated the client's TLS vouches for its
        // certificate, as for X-Forwarded-For (untrusted peers' copies are
        // gone already); once tlsfront asks for certificates itself, only
        // its own verification counts.
        if !client.via_trusted_proxy || self.client_sites.is_some() {
            head.headers.remove(&X_FORWARDED_CLIENT_CERT);
        }
        if let Some(identity) = &conn.client_cert {
            head.headers.insert(X_FORWARDED_CLIENT_CERT.clone(), identity.clone());
        }
        // The auth service's names are never the client's; for forward auth
        // they are removed once the service has seen the request as sent
        // (it may need the client's own Authorization).
        if !matches!(protect.auth, Some(Authenticator::Forward(_))) {
            forward::strip_copied(&mut head.headers, &protect.copy_headers);
        }
        match &protect.auth {
            None => Ok(None),
            Some(Authenticator::Basic {
                users,
                challenge,
                forward_authorization,
            }) => {
                let Some(user) = users.user(head.headers.get(http::header::AUTHORIZATION)).await else {
                    metrics.count_refused("auth");
                    let mut response = error_response(StatusCode::UNAUTHORIZED, "401 Unauthorized");
                    response
                        .headers_mut()
                        .insert(http::header::WWW_AUTHENTICATE, challenge.clone());
                    return Err(response);
                };
                if let Ok(v) = HeaderValue::from_str(&user) {
                    head.headers.insert(X_FORWARDED_USER.clone(), v);
                }
                if !forward_authorization {
                    head.headers.remove(http::header::AUTHORIZATION);
                }
                Ok(Some(user))
            }
            Some(Authenticator::Forward(service)) => {
                // The path as routes and the app see it: with routes,
                // normalised (`/public/../admin` is `/admin`), so the service
                // judges what is served, not what was typed.
                let uri = self.public_target(&head.uri);
                let client_value =
                    HeaderValue::from_str(&client.client_ip.to_string()).unwrap_or_else(|_| conn.peer_value.clone());
                let verdict = service
                    .ask(Asking {
                        headers: &head.headers,
                        method: &head.method,
                        uri: &uri,
                        host,
                        client: &client_value,
                    })
                    .await;
                forward::strip_copied(&mut head.headers, &protect.copy_headers);
                match verdict {
                    Verdict::Allow(copied) => {
                        for (name, value) in copied {
                            head.headers.append(name, value);
                        }
                        Ok(None)
                    }
                    Verdict::Deny(answer) => {
                        metrics.count_refused("auth");
                        let (mut parts, body) = answer.into_parts();
                        hop::strip(&mut parts.headers);
                        let hardened = cookies::harden_response(&mut parts.headers, &route.policy.cookies);
                        if hardened.any() {
                            self.hints.cookies_hardened(hardened);
                        }
                        Err(Response::from_parts(parts, body.map_err(Into::into).boxed()))
                    }
                    Verdict::Failed(status, text) => Err(error_response(status, text)),
                }
            }
        }
    }

    /// The request target as the app is sent it, before a mount prefix is
    /// stripped: normalised when there are routes, as is otherwise.
    fn public_target(&self, uri: &http::Uri) -> String {
        if !self.routes.has_routes() {
            return uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string());
        }
        let path = prefix::normalise_path(uri.path());
        match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.into_owned(),
        }
    }

    /// Compresses an app's response when the route, the response and the
    /// client allow it (`[compression]`); otherwise returns the body as is.
    fn compress(
        &self,
        route: &Route,
        method: &Method,
        accept: &Option<HeaderValue>,
        head: &mut http::response::Parts,
        body: ProxyBody,
    ) -> ProxyBody {
        let settings = &route.protect.compression;
        if !encoding::eligible(method, head.status, &head.headers, settings) {
            return body;
        }
        if hyper::body::Body::size_hint(&body)
            .exact()
            .is_some_and(|n| n < settings.min_bytes)
        {
            return body;
        }
        // Eligible: caches must keep the encodings apart, whatever this client takes.
        encoding::vary_on_accept_encoding(&mut head.headers);
        let Some(coding) = encoding::negotiate(accept.iter(), &settings.algorithms) else {
            return body;
        };
        // The memory budget spent: this response goes as it is.
        let Some(budget) = compress::reserve(coding) else {
            return body;
        };
        match CompressedBody::new(body, coding, budget) {
            Ok(compressed) => {
                encoding::prepare_response(&mut head.headers, coding);
                self.telemetry.metrics.count_compressed(coding.token());
                compressed.boxed()
            }
            Err(body) => body,
        }
    }

    /// Route match: which route takes the request, and the origin-form
    /// target it is sent upstream with. Without `[[route]]` tables the path
    /// goes unchanged to the one upstream, as before routes existed; with
    /// them it is normalised first (so `/admin/../x` is `/x` for matching and
    /// for the app alike) and loses a mount prefix.
    fn route<B>(
        &self,
        req: &Request<B>,
        host: &HeaderValue,
    ) -> Result<(Arc<Route>, http::Uri), (StatusCode, &'static str)> {
        let uri = req.uri();
        let as_is = || {
            uri.path_and_query()
                .map_or_else(|| http::Uri::from_static("/"), |pq| http::Uri::from(pq.clone()))
        };
        if !self.routes.has_routes() {
            let route = self
                .routes
                .all()
                .next()
                .expect("without routes, the [upstream] route exists");
            return Ok((route.clone(), as_is()));
        }
        let host = routes::normalise_host(host.to_str().unwrap_or_default());
        let path = prefix::normalise_path(uri.path());
        let route = match self.routes.select(&host, &path) {
            Selected::Route(route) => route.clone(),
            Selected::UnknownHost => {
                return Err((
                    StatusCode::MISDIRECTED_REQUEST,
                    "421 Misdirected Request: no site is configured for this host name",
                ))
            }
            Selected::NoPath => return Err((StatusCode::NOT_FOUND, "404 Not Found: no route for this path")),
        };
        let stripped = match &route.strip_prefix {
            Some(mount) => prefix::strip(&path, mount),
            None => &path,
        };
        // The common case: nothing to normalise or strip; the target as it came.
        if stripped == uri.path() {
            return Ok((route, as_is()));
        }
        let path = stripped;
        let target = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let target = target.parse().unwrap_or_else(|_| as_is());
        Ok((route, target))
    }

    /// `tlsfront_upstream_errors_total{kind}`: the one mapping from a typed
    /// failure to its label, onto handles made once (no label lookup per request).
    fn count_upstream_error(&self, e: &UpstreamError) {
        let m = &self.telemetry.metrics;
        match e.kind {
            FailureKind::ConnectRefused | FailureKind::ConnectTimeout | FailureKind::Tls => {
                m.upstream_connect_errors.inc()
            }
            FailureKind::ResponseTimeout => m.upstream_timeouts.inc(),
            FailureKind::ResetBeforeResponse
            | FailureKind::Protocol
            | FailureKind::UpgradeOverHttp2
            | FailureKind::ResetMidBody => m.upstream_protocol_errors.inc(),
            FailureKind::NoHealthyServer => m.upstream_unavailable.inc(),
        };
    }

    fn rewrite_redirects(
        &self,
        headers: &mut HeaderMap,
        host: &HeaderValue,
        public_port: u16,
        upstream: &http::uri::Authority,
    ) {
        let Some(public_host) = host
            .to_str()
            .ok()
            .and_then(|h| redirects::split_host_port(h).map(|(name, _)| name))
            .filter(|name| !name.is_empty())
        else {
            return;
        };
        let rewrites = redirects::rewrite_response(
            headers,
            &redirects::RedirectContext {
                upstream,
                public_host,
                public_port,
            },
        );
        for r in rewrites {
            self.hints.redirect_rewritten(&r);
        }
    }
}

fn head_path(path: &Option<http::uri::PathAndQuery>) -> &str {
    path.as_ref().map_or("/", |p| p.path())
}

/// Size of the request head as it was on the wire (close enough for a limit).
fn head_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    line + req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// HTTP/1.1 `Connection: upgrade` + `Upgrade: …` (HTTP/2 has no upgrades;
/// WebSocket over HTTP/2 is refused, so browsers use HTTP/1.1 for it).
fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(UPGRADE)
        && req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The host the client asked for: `:authority` for HTTP/2, the authority of
/// an absolute-form URI (RFC 9112 §3.2.2), else the single `Host` header.
fn request_host<B>(req: &Request<B>) -> Result<HeaderValue, &'static str> {
    if let Some(authority) = req.uri().authority() {
        if authority.as_str().contains('@') {
            return Err("400 Bad Request: user information is not allowed in the request target");
        }
        return HeaderValue::from_str(authority.as_str()).map_err(|_| "400 Bad Request: invalid authority");
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h,
        (Some(_), Some(_)) => return Err("400 Bad Request: more than one Host header"),
        (None, _) => return Err("400 Bad Request: missing Host header"),
    };
    let text = host.to_str().map_err(|_| "400 Bad Request: invalid Host header")?;
    match text.parse::<http::uri::Authority>() {
        Ok(a) if !a.as_str().contains('@') && !a.host().is_empty() => Ok(host.clone()),
        _ => Err("400 Bad Request: invalid Host header"),
    }
}

/// HTTP/2 may split `cookie` into several fields; HTTP/1.1 wants one
/// (RFC 9113 §8.2.3), joined with "; ".
fn join_cookie_headers(headers: &mut HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

/// `X-Forwarded-Prefix` for a mounted app: ours, after a trusted proxy's own.
fn set_forwarded_prefix(headers: &mut HeaderMap, mount: &str, via_trusted_proxy: bool) {
    let outer = via_trusted_proxy
        .then(|| headers.get(&X_FORWARDED_PREFIX).and_then(|v| v.to_str().ok()))
        .flatten()
        .map(|p| p.trim().trim_end_matches('/').to_string())
        .filter(|p| p.starts_with('/'));
    let value = match outer {
        Some(outer) => format!("{outer}{mount}"),
        None => mount.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_PREFIX.clone(), v);
    }
}

/// The value of cookie `name` in the request's `Cookie` header(s).
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().to_string())
}

/// A short plain-text response produced by tlsfront itself.
pub fn error_response(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut body = text.to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_selection() {
        let r = Request::get("/x").header(HOST, "a.example:8443").body(()).unwrap();
        assert_eq!(request_host(&r).unwrap(), "a.example:8443");
        let r = Request::get("http://b.example/x")
            .header(HOST, "a.example")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r).unwrap(), "b.example");
        let r = Request::get("/x").body(()).unwrap();
        assert!(request_host(&r).is_err());
        let r = Request::get("/x").header(HOST, "a").header(HOST, "b").body(()).unwrap();
        assert!(request_host(&r).is_err());
        let r = Request::get("/x").header(HOST, "a b").body(()).unwrap();
        assert!(request_host(&r).is_err());
        let r = Request::get("/x").header(HOST, "u@a").body(()).unwrap();
        assert!(request_host(&r).is_err());
    }

    #[test]
    fn cookies_are_joined() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        h.append(COOKIE, HeaderValue::from_static("c=3"));
        join_cookie_headers(&mut h);
        let all: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(all, vec!["a=1; b=2; c=3"]);
    }

    #[test]
    fn upgrade_detection() {
        let r = Request::get("/ws")
            .header(CONNECTION, "keep-alive, Upgrade")
            .header(UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(wants_upgrade(&r));
        let r = Request::get("/ws").header(UPGRADE, "websocket").body(()).unwrap();
        assert!(!wants_upgrade(&r));
        let r = Request::get("/ws")
            .version(Version::HTTP_2)
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(!wants_upgrade(&r));
    }

    #[test]
    fn head_size_counts_headers() {
        let r = Request::get("/abc").header("x-a", "1234567890").body(()).unwrap();
        assert_eq!(head_size(&r), 3 + 4 + 12 + 3 + 10 + 4);
    }
}
