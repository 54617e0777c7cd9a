//! The life of one proxied request, top to bottom:
//! read the head → request policy → send upstream → response policy → stream back.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, COOKIE, EXPECT, HOST};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::config::Config;
use crate::policy::cookies::{self, CookiePolicy};
use crate::policy::forwarded::{self, ForwardedPolicy, RequestOrigin};
use crate::policy::{hop, redirects};
use crate::upstream::{ProxyBody, Upstream, UpstreamError};

/// What is known about the client connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// TCP peer.
    pub peer: SocketAddr,
    /// The listener address the client connected to.
    pub local: SocketAddr,
}

/// Everything a request needs, built once from the config.
pub struct Proxy {
    upstream: Upstream,
    forwarded: ForwardedPolicy,
    cookies: CookiePolicy,
    rewrite_redirects: bool,
    /// `listen.https_public_port`, or 0 = the port the client connected to.
    public_port: u16,
}

impl Proxy {
    /// Builds the request pipeline from a validated config.
    pub fn new(config: &Config) -> Self {
        Proxy {
            upstream: Upstream::new(&config.upstream),
            forwarded: ForwardedPolicy::from(&config.forwarded),
            cookies: CookiePolicy::from(&config.cookies),
            rewrite_redirects: config.redirects.rewrite_location,
            public_port: config.listen.https_public_port,
        }
    }

    /// Proxies one request. Never fails: problems become 4xx/5xx responses.
    pub async fn handle(&self, req: Request<Incoming>, conn: &Connection) -> Response<ProxyBody> {
        let started = Instant::now();
        // 1. The head: which host the client asked for.
        let host = match request_host(&req) {
            Ok(host) => host,
            Err(reason) => return error_response(StatusCode::BAD_REQUEST, reason),
        };
        if req.method() == Method::CONNECT {
            return error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported: tlsfront is not a forward proxy",
            );
        }
        let public_port = if self.public_port != 0 {
            self.public_port
        } else {
            conn.local.port()
        };

        // 2. Request policy.
        let (mut head, body) = req.into_parts();
        let downstream_version = head.version;
        hop::strip(&mut head.headers);
        // We answered any `Expect: 100-continue` ourselves when reading the body.
        head.headers.remove(EXPECT);
        if downstream_version == Version::HTTP_2 {
            join_cookie_headers(&mut head.headers);
        }
        head.headers.insert(HOST, host.clone());
        let client = forwarded::apply(
            &mut head.headers,
            &self.forwarded,
            &RequestOrigin {
                peer: conn.peer.ip(),
                host: &host,
                public_port,
            },
        );
        head.uri = self.upstream.uri_for(head.uri.path_and_query());
        head.version = Version::HTTP_11;
        let method = head.method.clone();
        let path = head.uri.path().to_string();

        // 3. Upstream.
        let upstream_req = Request::from_parts(head, body.map_err(Into::into).boxed());
        let response = match self.upstream.send(upstream_req).await {
            Ok(response) => response,
            Err(e) => {
                let status = match e {
                    UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                    UpstreamError::Connect(_) | UpstreamError::Protocol(_) => {
                        StatusCode::BAD_GATEWAY
                    }
                };
                tracing::warn!(
                    client = %client.client_ip,
                    %method,
                    path,
                    upstream = %self.upstream.authority(),
                    status = status.as_u16(),
                    "upstream failed: {e}"
                );
                return error_response(status, upstream_failure_text(&e));
            }
        };

        // 4. Response policy.
        let (mut head, body) = response.into_parts();
        hop::strip(&mut head.headers);
        cookies::harden_response(&mut head.headers, &self.cookies);
        if self.rewrite_redirects {
            let public_host = host
                .to_str()
                .ok()
                .and_then(|h| redirects::split_host_port(h).map(|(name, _)| name))
                .unwrap_or("");
            if !public_host.is_empty() {
                let rewrites = redirects::rewrite_response(
                    &mut head.headers,
                    &redirects::RedirectContext {
                        upstream: self.upstream.authority(),
                        public_host,
                        public_port,
                    },
                );
                for r in rewrites {
                    tracing::debug!(
                        header = r.header,
                        from = r.from,
                        "rewrote a URL that pointed at the upstream or at http://"
                    );
                }
            }
        }
        tracing::debug!(
            client = %client.client_ip,
            %method,
            path,
            status = head.status.as_u16(),
            upstream_ms = started.elapsed().as_millis() as u64,
            "proxied"
        );

        // 5. Stream the body back.
        Response::from_parts(head, body.map_err(Into::into).boxed())
    }
}

/// The host the client asked for: `:authority` for HTTP/2, the authority of
/// an absolute-form URI (RFC 9112 §3.2.2), else the single `Host` header.
fn request_host<B>(req: &Request<B>) -> Result<HeaderValue, &'static str> {
    if let Some(authority) = req.uri().authority() {
        if authority.as_str().contains('@') {
            return Err("user information is not allowed in the request target");
        }
        return HeaderValue::from_str(authority.as_str()).map_err(|_| "invalid authority");
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h,
        (Some(_), Some(_)) => return Err("more than one Host header"),
        (None, _) => return Err("missing Host header"),
    };
    let text = host.to_str().map_err(|_| "invalid Host header")?;
    match text.parse::<http::uri::Authority>() {
        Ok(a) if !a.as_str().contains('@') && !a.host().is_empty() => Ok(host.clone()),
        _ => Err("invalid Host header"),
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

fn upstream_failure_text(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Connect(_) => "502 Bad Gateway: tlsfront could not connect to the app.\n",
        UpstreamError::Timeout(_) => "504 Gateway Timeout: the app did not answer in time.\n",
        UpstreamError::Protocol(_) => "502 Bad Gateway: the app's response was broken.\n",
    }
}

/// A short plain-text response produced by tlsfront itself.
pub fn error_response(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut body = text.to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_selection() {
        let r = Request::get("/x")
            .header(HOST, "a.example:8443")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r).unwrap(), "a.example:8443");
        let r = Request::get("http://b.example/x")
            .header(HOST, "a.example")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r).unwrap(), "b.example");
        let r = Request::get("/x").body(()).unwrap();
        assert!(request_host(&r).is_err());
        let r = Request::get("/x")
            .header(HOST, "a")
            .header(HOST, "b")
            .body(())
            .unwrap();
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
}
