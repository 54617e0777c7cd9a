//! Listeners, accept loops, TLS handshakes, HTTP/1.1 + HTTP/2 serving,
//! connection limits, idle timeouts and graceful shutdown. All I/O of the
//! downstream side lives here; reload and admin are composed in from their
//! own modules.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{HeaderValue, HOST, LOCATION};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hints::Hints;
use crate::park::{self, Parking, ParkingStream, Returned, PARK_AFTER};
use crate::policy::forwarded::TrustedProxies;
use crate::policy::redirects::split_host_port;
use crate::proxy::{error_response, monotonic_millis, Connection, Proxy};
use crate::proxy_protocol::{self, Parse, Rejection};
use crate::telemetry::Telemetry;
use crate::upstream::ProxyBody;
use crate::{admin, reload};

/// A listener could not be opened.
#[derive(Debug)]
pub struct ServerError(pub String);

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

/// A configuration and its certificates, loaded and validated.
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// The TLS server configuration built from its certificates.
    pub tls: Arc<ServerConfig>,
    /// Files whose change triggers a reload (certificate and key).
    pub watch: Vec<PathBuf>,
    /// How those files were just before they were read.
    pub seen: reload::Fingerprint,
    /// The development CA, when a development certificate is used.
    pub dev_ca: Option<PathBuf>,
    /// (label, notAfter in Unix seconds) of every served certificate.
    pub certificate_expiry: Vec<(String, i64)>,
    /// `[acme] names` that have no certificate yet.
    pub acme_missing: Vec<String>,
}

/// Loads the configuration again, the way it was loaded at start (same
/// file, same command-line overrides). Errors are one readable line.
pub type Loader = Box<dyn Fn() -> Result<Loaded, String> + Send + Sync>;

/// One generation of the configuration; replaced whole on reload. New
/// connections and requests use the newest; in-flight ones finish on theirs.
pub struct Generation {
    /// The configuration.
    pub config: Config,
    /// The request pipeline (with its own upstream pool).
    pub proxy: Proxy,
    acceptor: TlsAcceptor,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// `listen.proxy_protocol`: set when every connection must start with a header.
    proxy_protocol: Option<ProxyHeaderGate>,
    /// Files watched for changes.
    pub watch: Vec<PathBuf>,
    /// `[acme] names` this generation has no certificate for (not ready).
    pub acme_missing: Vec<String>,
}

/// State that outlives generations.
pub struct Server {
    current: ArcSwap<Generation>,
    /// Metrics and access log.
    pub telemetry: Arc<Telemetry>,
    hints: Arc<Hints>,
    tracker: TaskTracker,
    shutting_down: AtomicBool,
    /// Open ACME challenges (http-01 answers on the plain listener).
    challenges: Arc<crate::acme::Challenges>,
}

/// Builds a generation from a loaded configuration.
fn build_generation(
    loaded: Loaded,
    telemetry: &Arc<Telemetry>,
    hints: &Arc<Hints>,
    tracker: &TaskTracker,
) -> Generation {
    let config = loaded.config;
    // The expiry metric follows the certificates of the newest generation.
    telemetry.metrics.set_certificate_expiry(&loaded.certificate_expiry);
    let limits = &config.limits;
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_request_header_bytes.max(8192) + 1024)
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_reset_streams)
        // Twice the limit, so that tlsfront's own check (which counts the 431 in
        // limit_rejections and the access log) sees ordinary oversized heads;
        // h2 itself refuses larger ones, uncounted, as the memory bound.
        .max_header_list_size(u32::try_from(limits.max_request_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX));
    Generation {
        proxy: Proxy::new(&config, telemetry.clone(), hints.clone(), tracker.clone()),
        acceptor: TlsAcceptor::from(loaded.tls),
        http1,
        http2,
        proxy_protocol: config.listen.proxy_protocol.then(|| ProxyHeaderGate {
            trusted: TrustedProxies::new(config.forwarded.trusted_proxies.clone()),
            timeout: config.listen.proxy_protocol_timeout,
        }),
        watch: loaded.watch,
        acme_missing: loaded.acme_missing,
        config,
    }
}

impl Server {
    fn generation(&self, loaded: Loaded) -> Generation {
        build_generation(loaded, &self.telemetry, &self.hints, &self.tracker)
    }

    /// The generation new connections and requests use.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Re-reads configuration and certificates; on success new connections
    /// and requests use them, on failure the old ones keep serving.
    pub fn reload(&self, loader: &Loader, why: &str) {
        match loader() {
            Ok(loaded) => {
                let old = self.current();
                let new = self.generation(loaded);
                let (n, o) = (&new.config, &old.config);
                let restart_only = [
                    ("listen.https", n.listen.https != o.listen.https),
                    ("listen.http", n.listen.http != o.listen.http),
                    ("admin.listen", n.admin.listen != o.admin.listen),
                    (
                        "limits.max_connections",
                        n.limits.max_connections != o.limits.max_connections,
                    ),
                    (
                        "[log] settings",
                        n.log.level != o.log.level || n.log.access != o.log.access || n.log.format != o.log.format,
                    ),
                ];
                for (what, changed) in restart_only {
                    if changed {
                        tracing::warn!("{what} changed: that takes effect on restart; everything else is reloaded");
                    }
                }
                self.current.store(Arc::new(new));
                self.telemetry.metrics.reloads.inc();
                tracing::info!("reloaded configuration and certificates ({why})");
            }
            Err(e) => {
                self.telemetry.metrics.reload_failures.inc();
                tracing::error!("reload ({why}) rejected, still serving the previous configuration: {e}");
            }
        }
    }

    /// Whether SIGTERM/SIGINT was received.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// Binds the listeners, serves until SIGTERM/SIGINT, reloads on SIGHUP and
/// certificate changes, then drains in-flight work for up to
/// `limits.shutdown_timeout`.
pub async fn run(initial: Loaded, loader: Loader, challenges: Arc<crate::acme::Challenges>) -> Result<(), ServerError> {
    let config = initial.config.clone();
    let dev_ca = initial.dev_ca.clone();
    let seen = initial.seen.clone();
    let https = bind(config.listen.https, "listen.https").await?;
    let https_addr = https.local_addr().map_err(|e| ServerError(e.to_string()))?;
    let http = match config.listen.http {
        Some(addr) => Some(bind(addr, "listen.http").await?),
        None => None,
    };
    let admin_listener = match config.admin.listen {
        Some(addr) => Some(bind(addr, "admin.listen").await?),
        None => None,
    };
    raise_fd_limit(config.limits.max_connections);

    let telemetry = Arc::new(Telemetry::new(config.log.access));
    let hints = Arc::new(Hints::new(telemetry.clone()));
    let tracker = TaskTracker::new();
    let first = build_generation(initial, &telemetry, &hints, &tracker);
    let server = Arc::new(Server {
        current: ArcSwap::from_pointee(first),
        telemetry,
        hints,
        tracker: tracker.clone(),
        shutting_down: AtomicBool::new(false),
        challenges: challenges.clone(),
    });

    // Signal handlers before the "listening" line: a signal sent as soon as
    // tlsfront says it is up must not meet the default action (exit).
    let stop = shutdown_signal();
    let reloader = reload::watch(server.clone(), loader, seen);
    let destination = if config.routes.is_empty() {
        format!("forwarding to {}", config.upstream.url)
    } else {
        format!(
            "{} route(s){}",
            config.routes.len(),
            if config.upstream_given {
                format!(", fallback {}", config.upstream.url)
            } else {
                String::new()
            }
        )
    };
    tracing::info!("listening on https://{https_addr} (HTTP/1.1 and HTTP/2), {destination}");
    let public_port = config.listen.public_port(https_addr.port());
    if let Some(ca) = dev_ca {
        tracing::info!(
            "try it: curl --cacert {} https://localhost:{public_port}/",
            ca.display()
        );
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    if let Some(listener) = http {
        let addr = listener.local_addr().map_err(|e| ServerError(e.to_string()))?;
        tracing::info!("listening on http://{addr} (redirects to https)");
        let redirect = RedirectToHttps {
            public_port,
            header_read_timeout: config.limits.header_read_timeout,
        };
        tracker.spawn(accept_plain(listener, redirect, server.clone(), shutdown_rx.clone()));
    }
    if let Some(listener) = admin_listener {
        let addr = listener.local_addr().map_err(|e| ServerError(e.to_string()))?;
        tracing::info!("admin endpoint on http://{addr} (/healthz, /readyz, /metrics)");
        tokio::spawn(admin::serve(listener, server.clone()));
    }
    let connections = Arc::new(Semaphore::new(config.limits.max_connections));
    tracker.spawn(accept_tls(https, https_addr, server.clone(), connections, shutdown_rx));
    tokio::spawn(reloader);
    // Always running: a reload may turn [acme] on.
    tokio::spawn(crate::acme::manage(server.clone(), challenges));
    tokio::spawn(park::give_back_freed_memory());

    stop.await;
    server.shutting_down.store(true, Ordering::Relaxed);
    let grace = server.current().config.limits.shutdown_timeout;
    tracing::info!(
        "shutting down: no new connections; waiting up to {} for in-flight requests",
        humantime::format_duration(grace)
    );
    let _ = shutdown_tx.send(true);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("shutdown_timeout reached with connections still open; closing them");
        let _ = shutdown_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_millis(250), tracker.wait()).await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError(format!("cannot listen on {addr} ({key}): {e}")))
}

/// Raises the soft open-files limit toward the hard one, so that
/// `max_connections` (plus the upstream pool) is reachable.
fn raise_fd_limit(max_connections: usize) {
    let needed = u64::try_from(max_connections).unwrap_or(u64::MAX).saturating_add(128);
    // Room for the upstream pool too.
    let wanted = needed.saturating_mul(2);
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < needed => tracing::warn!(
            "open-files limit is {limit}: fewer than limits.max_connections = {max_connections} client connections can be served"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            "cannot raise the open-files limit ({e}): limits.max_connections = {max_connections} may not be reachable"
        ),
    }
}

/// Registers the SIGTERM/SIGINT handlers now; the future ends at the first signal.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
        async move {
            let (Ok(mut term), Ok(mut int)) = handlers else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn accept_tls(
    listener: TcpListener,
    local: SocketAddr,
    server: Arc<Server>,
    connections: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // At max_connections, new connections wait in the kernel's backlog.
        let permit = tokio::select! {
            _ = shutdown.changed() => return,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let server2 = server.clone();
                    let shutdown = shutdown.clone();
                    server.tracker.spawn(async move {
                        let _permit = permit;
                        serve_tls(stream, peer, local, server2, shutdown).await;
                    });
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

/// Decrements the open-connections gauge however the connection ends.
struct OpenConnection<'a>(&'a Telemetry);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.metrics.open_connections.dec();
    }
}

/// What the TLS handshake settled, taken out of the stream in one place.
struct Accepted {
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    /// ALPN chose HTTP/2.
    speaks_h2: bool,
    /// A tls-alpn-01 validation: it ends with the handshake (RFC 8737 §3).
    acme_validation: bool,
    tls_version: &'static str,
}

/// The TLS handshake, within `timeout`; `None` (counted and logged) when it
/// fails. A function of its own that hands the stream over by value: a
/// future keeps a slot for every local that was ever borrowed across an
/// await, and the finished handshake plus the borrowed TLS stream held
/// ~2.4 KiB of every idle connection's task that way.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    server: &Server,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<Accepted> {
    // Count a failure before the socket closes, so what a client sees and
    // what /metrics says agree: the fallible accept hands the socket back,
    // and a timed-out accept (which holds it) is dropped after the count.
    let accepting = acceptor.accept(stream).into_fallible();
    tokio::pin!(accepting);
    let tls = match tokio::time::timeout(timeout, accepting.as_mut()).await {
        Ok(Ok(tls)) => tls,
        Ok(Err((e, io))) => {
            server.telemetry.metrics.tls_handshake_failures.inc();
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            drop(io);
            return None;
        }
        Err(_) => {
            server.telemetry.metrics.tls_handshake_failures.inc();
            tracing::debug!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    server.telemetry.metrics.tls_handshakes.inc();
    let session = tls.get_ref().1;
    // The protocol is the one ALPN chose: no sniffing of the first bytes
    // (hyper's auto-detection reads them apart, which made the HTTP/1.1 read
    // buffer grow to 16 KiB on every connection). Without ALPN, HTTP/1.1:
    // HTTP/2 over TLS is negotiated by ALPN only (RFC 9113 section 3.3).
    let speaks_h2 = session.alpn_protocol() == Some(b"h2");
    let acme_validation = session.alpn_protocol() == Some(crate::acme::ACME_TLS_ALPN);
    let tls_version = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    };
    Some(Accepted {
        tls,
        speaks_h2,
        acme_validation,
        tls_version,
    })
}

async fn serve_tls(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    server: Arc<Server>,
    shutdown: watch::Receiver<bool>,
) {
    let generation = server.current();
    let limits = &generation.config.limits;
    server.telemetry.metrics.open_connections.inc();
    let _open = OpenConnection(&server.telemetry);
    let _ = stream.set_nodelay(true);

    // Behind an L4 balancer the client is whom the PROXY header names.
    let mut peer = peer;
    if let Some(gate) = &generation.proxy_protocol {
        match gate.admit(&mut stream, peer, &server.telemetry).await {
            Some(client) => peer = client,
            None => return,
        }
    }

    // A TLS connection starts with a handshake record (0x16); anything else is
    // most likely plain HTTP sent to the https port, which deserves an answer.
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.handshake_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => return answer_plain_http_on_tls_port(stream, local).await,
        _ => return,
    }
    let handshake = handshake(&generation.acceptor, stream, &server, peer, limits.handshake_timeout);
    // Bound field by field: a whole `Accepted` local would keep its slot
    // while its copied fields are still readable.
    let Some(Accepted {
        tls,
        speaks_h2,
        acme_validation,
        tls_version,
    }) = handshake.await
    else {
        return;
    };
    if acme_validation {
        let mut tls = tls;
        let _ = tls.shutdown().await;
        return;
    }
    let conn = Arc::new(Connection {
        tls_version,
        ..Connection::new(peer, local)
    });
    let service = {
        let server = server.clone();
        let conn = conn.clone();
        service_fn(move |req: Request<Incoming>| {
            // Each request takes the newest generation: a reload applies to
            // the next request even on a kept-alive connection.
            let generation = server.current();
            let conn = conn.clone();
            // Boxed: hyper keeps an HTTP/1.1 connection's request-future slot
            // for the connection's whole life and copies an HTTP/2 stream's
            // future into a task of its own; a pointer is cheaper to hold
            // idle and to move than the request's multi-KiB state.
            let handling: Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>> =
                Box::pin(async move { generation.proxy.handle(req, &conn).await });
            async move { Ok::<_, Infallible>(handling.await) }
        })
    };
    let deadlines = Deadlines {
        first_request: limits.header_read_timeout,
        idle: limits.idle_timeout,
        send: limits.send_timeout,
    };
    // hyper reads and writes through a `ParkingStream`, which hands the TLS
    // stream back when hyper lets go of it: to park an idle HTTP/1.1
    // connection without hyper's buffers (see `park`), or to close it the
    // lingering way (see `linger`).
    let parking = Arc::new(Parking::new(!speaks_h2));
    let mut shutdown = shutdown;
    let mut stream = tls;
    loop {
        let io = TokioIo::new(ParkingStream::new(stream, parking.clone()));
        let ended = if speaks_h2 {
            // Boxed so that an HTTP/1.1 connection's task is not sized for HTTP/2's state.
            let mut connection = Box::pin(generation.http2.serve_connection(io, service.clone()));
            drive(
                connection.as_mut(),
                |c| c.graceful_shutdown(),
                &server,
                &conn,
                deadlines,
                shutdown.clone(),
                &parking,
            )
            .await
        } else {
            let connection = server
                .current()
                .http1
                .serve_connection(io, service.clone())
                .with_upgrades();
            tokio::pin!(connection);
            drive(
                connection.as_mut(),
                |c| c.graceful_shutdown(),
                &server,
                &conn,
                deadlines,
                shutdown.clone(),
                &parking,
            )
            .await
        };
        // hyper's connection is gone; its stream is back unless an upgrade took it.
        let Some(Returned { stream: back, parked }) = parking.take() else {
            break;
        };
        // hyper saw the made-up end of stream inside a message (which the
        // parking conditions exclude): its buffers are gone, so whatever
        // they held is lost; the connection is closed, never parked.
        let parked = parked && ended == Ended::Normally;
        if !parked {
            // After hyper's own error answers (its 431 for a head past its
            // buffer), and after an HTTP/1.1 answer given before the
            // request's body was read (tlsfront's own 413, an app that
            // refused an upload early): the client may still be sending, and
            // closing with its bytes unread would reset the connection under
            // the answer. (Lingered here, not after the loop: a stream
            // carried out of the loop would keep a slot in every connection's
            // task.)
            if ended == Ended::WithError || (!speaks_h2 && conn.requests.body_left_unread()) {
                // Boxed: rare, and inline it would size every connection's task.
                Box::pin(linger(back)).await;
            }
            break;
        }
        park::freed();
        let metrics = &server.telemetry.metrics;
        metrics.parked_connections.inc();
        // One await with the stream borrowed (the close is inside): a stream
        // borrowed across two would keep a slot in every connection's task.
        let mut back = back;
        let woken = wait_parked(&mut back, &conn, &parking, deadlines, &mut shutdown).await;
        metrics.parked_connections.dec();
        if !woken {
            break;
        }
        stream = back;
    }
}

/// A parked connection waits for its client's next bytes (true), or is
/// closed (false): idle past its deadline, or tlsfront shutting down. The
/// deadline is the one hyper's header timer kept while it held the
/// connection: the smaller of `header_read_timeout` and `idle_timeout`.
async fn wait_parked(
    stream: &mut tokio_rustls::server::TlsStream<TcpStream>,
    conn: &Connection,
    parking: &Parking,
    deadlines: Deadlines,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let keep = deadlines.first_request.min(deadlines.idle);
    let answered = parking.answered(&conn.requests);
    let waited = Duration::from_millis(monotonic_millis().saturating_sub(answered));
    let woken = match keep.checked_sub(waited) {
        Some(left) => tokio::select! {
            ready = stream.get_ref().0.readable() => ready.is_ok(),
            _ = shutdown.changed() => false,
            _ = tokio::time::sleep(left) => false,
        },
        None => false,
    };
    if !woken {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
    woken
}

/// How serving a connection ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Closed by either side, idle, or shut down.
    Normally,
    /// hyper gave up on it with an error.
    WithError,
}

/// After an error, or an answer given before the request body was read:
/// send what rustls still holds, stop sending, read and discard what the
/// client still sends (up to 1 MiB, 2 s), then close. nginx's lingering
/// close: the client sees the answer and an end of stream instead of a reset.
async fn linger(mut tls: tokio_rustls::server::TlsStream<TcpStream>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.flush()).await;
    let (mut socket, _) = tls.into_inner();
    if socket.shutdown().await.is_err() {
        return;
    }
    // On the heap: an array here would be part of every connection's task.
    let mut sink = vec![0u8; 8192];
    let drain = async {
        let mut total = 0usize;
        while total < (1 << 20) {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// When an open connection is closed for lack of requests.
#[derive(Clone, Copy)]
struct Deadlines {
    first_request: Duration,
    idle: Duration,
    /// `limits.send_timeout`: a client that takes none of the bytes waiting
    /// for it for this long is dropped.
    send: Duration,
}

/// Serves a connection to its end, closing it when it stays without requests
/// too long or when tlsfront shuts down (what is in flight finishes first).
async fn drive<C, E>(
    mut connection: Pin<&mut C>,
    graceful_shutdown: impl Fn(Pin<&mut C>),
    server: &Server,
    conn: &Connection,
    deadlines: Deadlines,
    mut shutdown: watch::Receiver<bool>,
    stream: &Parking,
) -> Ended
where
    C: Future<Output = Result<(), E>> + ?Sized,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Deadlines by requests, not bytes: a client trickling a request (or an
    // HTTP/2 preface, which hyper's header timer does not cover) a byte at a
    // time is neither active nor allowed to hold its slot.
    let Deadlines {
        first_request,
        idle,
        send,
    } = deadlines;
    let may_park = stream.parks();
    let opened = monotonic_millis();
    let first_check = first_request.min(idle);
    let first_check = if may_park {
        first_check.min(PARK_AFTER)
    } else {
        first_check
    };
    let mut check_at = tokio::time::Instant::now() + first_check;
    let closing = loop {
        tokio::select! {
            res = connection.as_mut() => {
                if let Err(e) = res {
                    let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                    // hyper answered 431 itself: the head outgrew its read buffer.
                    if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse_too_large) {
                        server.telemetry.metrics.count_limit("header_bytes");
                    }
                    tracing::debug!("connection ended with an error: {e}");
                    return Ended::WithError;
                }
                return Ended::Normally;
            }
            _ = shutdown.changed() => break None,
            _ = tokio::time::sleep_until(check_at) => {
                let now = monotonic_millis();
                let requests = &conn.requests;
                // A client that takes none of what waits for it (a response,
                // or a GOAWAY) would hold the connection, and the app's
                // worker behind it, for ever.
                let blocked = stream.blocked_since();
                let send_left = if blocked == 0 {
                    Duration::MAX
                } else {
                    send.saturating_sub(Duration::from_millis(now.saturating_sub(blocked)))
                };
                if send_left.is_zero() {
                    break Some("the client took no bytes for limits.send_timeout");
                }
                // A response is over when its last bytes are out of hyper's
                // and rustls' buffers, not when its body was handed over.
                let busy = requests.in_flight() > 0 || stream.unflushed();
                let answered = stream.answered(requests);
                let (since, limit, why) = if requests.started() == 0 {
                    (opened, first_request, "no request within limits.header_read_timeout")
                } else if !busy {
                    if may_park && !requests.body_left_unread() {
                        // HTTP/1.1 between requests: hyper's header timer
                        // runs from the last response too, but restarts on a
                        // connection unparked by a byte; this keeps the
                        // deadline where it was.
                        (
                            answered,
                            idle.min(first_request),
                            "idle for limits.idle_timeout or limits.header_read_timeout",
                        )
                    } else {
                        (answered, idle, "idle for limits.idle_timeout")
                    }
                } else {
                    let next = if may_park { PARK_AFTER } else { idle };
                    check_at = tokio::time::Instant::now() + next.min(send_left);
                    continue;
                };
                let waited = Duration::from_millis(now.saturating_sub(since));
                if waited >= limit {
                    break Some(why);
                }
                let mut next = (limit - waited).min(send_left);
                if may_park {
                    // Checked at least every PARK_AFTER. Parking is for a
                    // kept-alive connection between requests; asked here,
                    // done by its next read that would wait (the select
                    // polls the connection again right away).
                    next = next.min(PARK_AFTER);
                    // Not while the client may still be sending the last
                    // request's body (answered before it was read): a
                    // blank line inside a body is no message boundary.
                    if requests.started() > 0 && !requests.body_left_unread() {
                        if waited < PARK_AFTER {
                            next = next.min(PARK_AFTER - waited);
                        } else if stream.between_messages() {
                            stream.request();
                        }
                    }
                }
                check_at = tokio::time::Instant::now() + next;
            }
        }
    };
    // Shutdown or idle: finish what is in flight, accept nothing new. An idle
    // peer that does not let go within a second is dropped.
    graceful_shutdown(connection.as_mut());
    match closing {
        None => {
            // A second signal on the channel is shutdown_timeout running out:
            // the connection is dropped here, in its own task, so a request
            // still in flight gets no answer at all (never a 502 made up
            // while the runtime tears the upstream side down).
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.changed() => {}
            }
        }
        Some(why) => {
            tracing::debug!(peer = %conn.peer, "closing connection: {why}");
            // Nothing is in flight: a GOAWAY is a courtesy, not worth waiting for.
            let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
        }
    }
    Ended::Normally
}

/// `listen.proxy_protocol`: who may send the PROXY header, and how long
/// they have; from the generation, so a reload applies to new connections.
struct ProxyHeaderGate {
    trusted: TrustedProxies,
    timeout: Duration,
}

impl ProxyHeaderGate {
    /// Takes the header off a new connection: the client address to use
    /// from now on (the header's, or `peer` for LOCAL/UNKNOWN), or `None`
    /// when the connection is to be closed without a response (counted).
    async fn admit(&self, stream: &mut TcpStream, peer: SocketAddr, telemetry: &Telemetry) -> Option<SocketAddr> {
        let taken = if self.trusted.contains(peer.ip()) {
            match tokio::time::timeout(self.timeout, read_proxy_header(stream)).await {
                Ok(taken) => taken,
                Err(_) => Err(Rejection::Timeout),
            }
        } else {
            Err(Rejection::UntrustedPeer)
        };
        match taken {
            Ok(header) => Some(header.source().unwrap_or(peer)),
            Err(reason) => {
                telemetry.metrics.count_proxy_protocol_rejected(reason);
                tracing::debug!(%peer, "closing connection: PROXY protocol header {}", reason.label());
                None
            }
        }
    }
}

/// Reads exactly the PROXY header and not one byte more, so the TLS
/// ClientHello (or plain HTTP) behind it stays in the socket. Peeks, then
/// consumes only bytes the parser has placed inside the header: when it
/// needs more, every byte seen so far is header, and when it is complete,
/// `consumed` says where the header ends.
async fn read_proxy_header(stream: &mut TcpStream) -> Result<proxy_protocol::Header, Rejection> {
    let mut buf = vec![0u8; proxy_protocol::V1_MAX_LEN];
    let mut have = 0;
    loop {
        let peeked = match stream.peek(&mut buf[have..]).await {
            Ok(0) | Err(_) => return Err(Rejection::Closed),
            Ok(n) => n,
        };
        match proxy_protocol::parse(&buf[..have + peeked])? {
            Parse::Complete { header, consumed } => {
                stream
                    .read_exact(&mut buf[have..consumed])
                    .await
                    .map_err(|_| Rejection::Closed)?;
                return Ok(header);
            }
            Parse::Incomplete { at_least } => {
                stream
                    .read_exact(&mut buf[have..have + peeked])
                    .await
                    .map_err(|_| Rejection::Closed)?;
                have += peeked;
                // A v2 header longer than the first window (TLVs): make room.
                if at_least > buf.len() {
                    buf.resize(at_least.min(proxy_protocol::V2_MAX_LEN), 0);
                }
            }
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
    let body = format!("400 Bad Request: this port speaks HTTPS, not plain HTTP.\nUse https://{host}/ instead.\n");
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(response.as_bytes())).await;
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

fn http01_response(key_authorization: String) -> Response<ProxyBody> {
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

async fn accept_plain(
    listener: TcpListener,
    redirect: RedirectToHttps,
    server: Arc<Server>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
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
