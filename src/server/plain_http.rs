//! The optional plain-HTTP listener: ACME http-01 answers, and a 308 to
//! https for everything else.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST, LOCATION};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::policy::redirects::split_host_port;
use crate::proxy::error_response;
use crate::upstream::ProxyBody;

use super::accept::accept_error;
use super::state::{reached, Phase, Server};

/// The optional plain-HTTP listener: every request gets a 308 to https.
#[derive(Clone, Copy)]
pub(super) struct RedirectToHttps {
    pub(super) public_port: u16,
    pub(super) header_read_timeout: Duration,
}

impl RedirectToHttps {
    fn respond(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        let host = req.uri().authority().map(|a| a.as_str().to_string()).or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
        let Some((name, _)) = host.as_deref().and_then(split_host_port).filter(|(n, _)| !n.is_empty()) else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: missing or invalid Host header",
            );
        };
        let port = if self.public_port == 443 {
            String::new()
        } else {
            format!(":{}", self.public_port)
        };
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let location = format!("https://{name}{port}{target}");
        let Ok(value) = HeaderValue::from_str(&location) else {
            return error_response(StatusCode::BAD_REQUEST, "400 Bad Request: invalid request target");
        };
        let mut resp = error_response(
            StatusCode::PERMANENT_REDIRECT,
            &format!("308 Permanent Redirect: {location}"),
        );
        resp.headers_mut().insert(LOCATION, value);
        resp
    }
}

pub(super) fn http01_response(key_authorization: String) -> Response<ProxyBody> {
    use http_body_util::{BodyExt, Full};
    // Exactly the key authorization: no trailing newline.
    let mut resp = Response::new(
        Full::new(bytes::Bytes::from(key_authorization))
            .map_err(|never| match never {})
            .boxed(),
    );
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

pub(super) async fn accept_plain(
    listener: TcpListener,
    redirect: RedirectToHttps,
    server: Arc<Server>,
    mut shutdown: watch::Receiver<Phase>,
) {
    loop {
        tokio::select! {
            _ = reached(&mut shutdown, Phase::Draining) => return,
            accepted = listener.accept() => match accepted {
                Ok((mut stream, peer)) => {
                    let mut shutdown = shutdown.clone();
                    let server = server.clone();
                    server.tracker.clone().spawn(async move {
                        // The balancer sends the header on every port it forwards;
                        // the address is not used here (a redirect logs nothing).
                        if let Some(gate) = &server.current().proxy_protocol {
                            if gate.admit(&mut stream, peer, &server.telemetry).await.is_none() {
                                return;
                            }
                        }
                        let challenges = server.challenges.clone();
                        let service = service_fn(move |req: Request<Incoming>| {
                            // http-01 is answered before the redirect (RFC 8555 §8.3).
                            let answer = challenges.http_answer(req.uri().path());
                            async move {
                                Ok::<_, Infallible>(match answer {
                                    Some(key_authorization) => http01_response(key_authorization),
                                    None => redirect.respond(&req),
                                })
                            }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(redirect.header_read_timeout)
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = reached(&mut shutdown, Phase::Draining) => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
                Err(e) => accept_error(e).await,
            },
        }
    }
}
