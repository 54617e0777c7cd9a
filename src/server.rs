//! Listeners, accept loops, TLS handshakes, HTTP/1.1 + HTTP/2 serving and
//! graceful shutdown. All I/O of the downstream side lives here.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST, LOCATION};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::policy::redirects::split_host_port;
use crate::proxy::{error_response, Connection, Proxy};
use crate::upstream::ProxyBody;

/// A listener could not be opened.
#[derive(Debug)]
pub struct ServerError(String);

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

/// Settings every connection task needs.
struct Shared {
    proxy: Proxy,
    acceptor: TlsAcceptor,
    http: auto::Builder<TokioExecutor>,
    handshake_timeout: Duration,
}

/// Binds the listeners, serves until SIGTERM/SIGINT, then drains in-flight
/// connections for up to `limits.shutdown_timeout`.
pub async fn run(config: Config, tls: Arc<ServerConfig>) -> Result<(), ServerError> {
    let https = bind(config.listen.https, "listen.https").await?;
    let https_addr = https.local_addr().map_err(|e| ServerError(e.to_string()))?;
    tracing::info!(
        "listening on https://{https_addr} (HTTP/1.1 and HTTP/2), forwarding to {}",
        config.upstream.url
    );
    let http = match config.listen.http {
        Some(addr) => {
            let listener = bind(addr, "listen.http").await?;
            let addr = listener
                .local_addr()
                .map_err(|e| ServerError(e.to_string()))?;
            tracing::info!("listening on http://{addr} (redirects to https)");
            Some(listener)
        }
        None => None,
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tracker = TaskTracker::new();

    let mut http_builder = auto::Builder::new(TokioExecutor::new());
    http_builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.limits.header_read_timeout)
        .keep_alive(true);
    http_builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250);
    let shared = Arc::new(Shared {
        proxy: Proxy::new(&config),
        acceptor: TlsAcceptor::from(tls),
        http: http_builder,
        handshake_timeout: config.limits.handshake_timeout,
    });

    if let Some(listener) = http {
        let redirect = RedirectToHttps {
            public_port: if config.listen.https_public_port != 0 {
                config.listen.https_public_port
            } else {
                https_addr.port()
            },
            header_read_timeout: config.limits.header_read_timeout,
        };
        tracker.spawn(accept_plain(
            listener,
            redirect,
            shutdown_rx.clone(),
            tracker.clone(),
        ));
    }
    tracker.spawn(accept_tls(
        https,
        https_addr,
        shared,
        shutdown_rx,
        tracker.clone(),
    ));

    wait_for_signal().await;
    tracing::info!(
        "shutting down: no new connections; waiting up to {} for in-flight requests",
        humantime::format_duration(config.limits.shutdown_timeout)
    );
    let _ = shutdown_tx.send(true);
    tracker.close();
    if tokio::time::timeout(config.limits.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown_timeout reached with connections still open; closing them");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError(format!("cannot listen on {addr} ({key}): {e}")))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn accept_tls(
    listener: TcpListener,
    local: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracker.spawn(serve_tls(stream, Connection { peer, local }, shared.clone(), shutdown.clone()));
                }
                Err(e) => accept_error(e).await,
            },
        }
    }
}

/// Out of file descriptors or similar: log, back off a little, keep serving.
async fn accept_error(e: std::io::Error) {
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn serve_tls(
    stream: TcpStream,
    conn: Connection,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // A TLS connection starts with a handshake record (0x16); anything else is
    // most likely plain HTTP sent to the https port, which deserves an answer.
    let mut first = [0u8; 1];
    match tokio::time::timeout(shared.handshake_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => return answer_plain_http_on_tls_port(stream, conn.local).await,
        _ => return,
    }
    let tls = match tokio::time::timeout(shared.handshake_timeout, shared.acceptor.accept(stream))
        .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(peer = %conn.peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %conn.peer, "TLS handshake timed out");
            return;
        }
    };
    let conn = Arc::new(conn);
    let service = {
        let shared = shared.clone();
        service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(shared.proxy.handle(req, &conn).await) }
        })
    };
    let connection = shared
        .http
        .serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        res = connection.as_mut() => {
            if let Err(e) = res {
                tracing::debug!("connection ended with an error: {e}");
            }
        }
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Plain HTTP on the TLS port: say so, in plain HTTP, then close.
async fn answer_plain_http_on_tls_port(mut stream: TcpStream, local: SocketAddr) {
    let mut buf = vec![0u8; 8192];
    let n = match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        _ => 0,
    };
    let head = String::from_utf8_lossy(&buf[..n]);
    let host = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("host")
                .then(|| value.trim().to_string())
        })
        .filter(|h| h.parse::<http::uri::Authority>().is_ok())
        .unwrap_or_else(|| format!("localhost:{}", local.port()));
    let body = format!(
        "400 Bad Request: this port speaks HTTPS, not plain HTTP.\nUse https://{host}/ instead.\n"
    );
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        stream.write_all(response.as_bytes()),
    )
    .await;
    let _ = stream.shutdown().await;
}

/// The optional plain-HTTP listener: every request gets a 308 to https.
#[derive(Clone, Copy)]
struct RedirectToHttps {
    public_port: u16,
    header_read_timeout: Duration,
}

impl RedirectToHttps {
    fn respond(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            });
        let Some((name, _)) = host
            .as_deref()
            .and_then(split_host_port)
            .filter(|(n, _)| !n.is_empty())
        else {
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
            return error_response(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: invalid request target",
            );
        };
        let mut resp = error_response(
            StatusCode::PERMANENT_REDIRECT,
            &format!("308 Permanent Redirect: {location}"),
        );
        resp.headers_mut().insert(LOCATION, value);
        resp
    }
}

async fn accept_plain(
    listener: TcpListener,
    redirect: RedirectToHttps,
    mut shutdown: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let mut shutdown = shutdown.clone();
                    tracker.spawn(async move {
                        let service = service_fn(move |req: Request<Incoming>| async move {
                            Ok::<_, Infallible>(redirect.respond(&req))
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(redirect.header_read_timeout)
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = shutdown.changed() => {
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
