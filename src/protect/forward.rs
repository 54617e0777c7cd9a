//! `[auth] forward`: ask an auth service (Authelia, Authentik,
//! oauth2-proxy) about every request before the app sees it.
//!
//! The service gets a `GET` with the client's headers (not its body) and
//! `X-Forwarded-Method/-Proto/-Host/-Uri/-For`; a 2xx lets the request
//! through with `copy_headers` taken from the answer, anything else goes
//! back to the client as it is. A service that cannot be reached or does
//! not answer in time fails closed (502/504): nothing reaches the app.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};

use crate::config::{AuthService, Balance, ServerUrl};
use crate::metrics::Metrics;
use crate::upstream::health::Passive;
use crate::upstream::pool::PooledBody;
use crate::upstream::tls::{system_roots, UpstreamTls};
use crate::upstream::{BoxError, Upstream, UpstreamSettings};

/// Where to ask, and what to copy back.
pub struct ForwardAuth {
    service: Arc<Upstream>,
    path: http::Uri,
    copy: Vec<HeaderName>,
    timeout: Duration,
}

/// What the auth service said.
pub enum Verdict {
    /// Let the request through, with these headers added.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// Answer the client with this (a login redirect, a 401 ...).
    Deny(Response<PooledBody>),
    /// The service failed: answer with this status.
    Failed(StatusCode, &'static str),
}

/// What the auth service is told about the request.
pub struct Asking<'a> {
    /// The client's headers, after tlsfront's own request policy.
    pub headers: &'a HeaderMap,
    /// The request's method.
    pub method: &'a Method,
    /// The request's path and query, as the client sent them.
    pub uri: &'a str,
    /// The public host.
    pub host: &'a HeaderValue,
    /// The client's address as tlsfront resolved it.
    pub client: &'a HeaderValue,
}

/// Body bytes of a 2xx auth answer read (and thrown away) at most.
const DRAIN_BYTES: usize = 64 * 1024;

static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl ForwardAuth {
    /// A client to the service (pooled like a route's servers).
    pub fn new(service: &AuthService, copy: Vec<HeaderName>, timeout: Duration, metrics: &Metrics) -> ForwardAuth {
        let tls =
            matches!(service.server, ServerUrl::Https(_)).then(|| Arc::new(UpstreamTls::new(system_roots(), None)));
        ForwardAuth {
            service: Upstream::new(
                UpstreamSettings {
                    servers: vec![service.server.clone()],
                    connect_timeout: timeout,
                    response_timeout: timeout,
                    read_timeout: timeout,
                    pool_idle_timeout: Duration::from_secs(60),
                    pool_max_idle: 32,
                    balance: Balance::default(),
                    passive: Passive {
                        max_fails: 0,
                        eject_time: Duration::from_secs(1),
                    },
                    fail_statuses: Vec::new(),
                    active: None,
                    tls,
                },
                metrics,
            ),
            path: service.path.parse().unwrap_or_else(|_| http::Uri::from_static("/")),
            copy,
            timeout,
        }
    }

    /// Asks the service about one request.
    pub async fn ask(&self, asking: Asking<'_>) -> Verdict {
        let mut headers = asking.headers.clone();
        headers.remove(CONTENT_LENGTH);
        headers.remove(TRANSFER_ENCODING);
        let text = |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("/"));
        headers.insert(X_FORWARDED_METHOD.clone(), text(asking.method.as_str()));
        headers.insert(X_FORWARDED_URI.clone(), text(asking.uri));
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
        headers.insert(X_FORWARDED_HOST.clone(), asking.host.clone());
        if !headers.contains_key(&X_FORWARDED_FOR) {
            headers.insert(X_FORWARDED_FOR.clone(), asking.client.clone());
        }
        let mut request = Request::new(
            Empty::<bytes::Bytes>::new()
                .map_err(|e| -> BoxError { match e {} })
                .boxed(),
        );
        *request.method_mut() = Method::GET;
        *request.uri_mut() = self.path.clone();
        *request.headers_mut() = headers;
        let answer = match tokio::time::timeout(self.timeout, self.service.send(request, None)).await {
            Err(_) => {
                return Verdict::Failed(
                    StatusCode::GATEWAY_TIMEOUT,
                    "504 Gateway Timeout: the auth service did not answer in time",
                )
            }
            Ok(Err(e)) => {
                tracing::warn!("auth service failed: {e}");
                return match e.kind.status() {
                    StatusCode::GATEWAY_TIMEOUT => Verdict::Failed(
                        StatusCode::GATEWAY_TIMEOUT,
                        "504 Gateway Timeout: the auth service did not answer in time",
                    ),
                    _ => Verdict::Failed(
                        StatusCode::BAD_GATEWAY,
                        "502 Bad Gateway: the auth service cannot be reached",
                    ),
                };
            }
            Ok(Ok(answer)) => answer.response,
        };
        if !answer.status().is_success() {
            return Verdict::Deny(answer);
        }
        let copied = self
            .copy
            .iter()
            .flat_map(|name| {
                answer
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(move |v| (name.clone(), v.clone()))
            })
            .collect();
        // Read the (usually empty) body so the connection goes back to the
        // pool; a large or slow one is dropped (with its connection) instead.
        let mut body = answer.into_body();
        let mut left = DRAIN_BYTES;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(frame)) = body.frame().await {
                let n = frame.data_ref().map_or(0, |d| d.len());
                if n > left {
                    break;
                }
                left -= n;
            }
        })
        .await;
        Verdict::Allow(copied)
    }
}

/// Removes every header named in `copy_headers` from the client's request,
/// in both spellings (`Remote-User`, `Remote_User`): some app servers
/// (WSGI, CGI) read the two as one, so a client's `Remote_User` would pass
/// for the auth service's `Remote-User`.
pub fn strip_copied(headers: &mut HeaderMap, copy: &[HeaderName]) {
    if copy.is_empty() {
        return;
    }
    let normal = |s: &str| s.replace('_', "-").to_ascii_lowercase();
    let wanted: Vec<String> = copy.iter().map(|n| normal(n.as_str())).collect();
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| wanted.contains(&normal(k.as_str())))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_names_are_stripped_in_every_spelling() {
        let mut h = HeaderMap::new();
        h.insert("remote-user", HeaderValue::from_static("admin"));
        h.insert("remote_user", HeaderValue::from_static("admin"));
        h.insert("REMOTE_GROUPS", HeaderValue::from_static("admins"));
        h.insert("cookie", HeaderValue::from_static("a=b"));
        strip_copied(
            &mut h,
            &[
                HeaderName::from_static("remote-user"),
                HeaderName::from_static("remote-groups"),
            ],
        );
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("cookie"));
    }
}
