//! Serving: the listeners, the connections on them, generations and
//! reload, and shutdown. [`run`] composes them; each concern has its file:
//! `accept` (the TLS accept loop), `handshake` (PROXY header, TLS),
//! `serve` (one connection's HTTP/1.1 or HTTP/2), `plain_http` (redirects
//! and http-01), `generation` (what a reload swaps), `state` (what outlives
//! generations, and the views admin, reload and ACME get of it), `http3`
//! (QUIC connections and their requests), `quic` (a generation's QUIC setup),
//! `streams` (HTTP/2 streams polled in their connection's task).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use crate::hints::Hints;
use crate::park::{self};
use crate::telemetry::Telemetry;
use crate::{admin, reload};

mod accept;
mod generation;
mod handshake;
mod http3;
mod plain_http;
mod quic;
mod serve;
mod state;
pub mod streams;

pub use generation::{Generation, Loaded, Loader};
pub use state::Server;

#[derive(Debug)]
pub struct ServerError(pub String);

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

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
    let first = generation::build_generation(initial, &telemetry, &hints, &tracker);
    // HTTP/3 on the same address and port, over UDP.
    let quic = match (&first.quic, config.listen.http3) {
        (Some(setup), true) => Some(quic::bind(https_addr, setup).map_err(ServerError)?),
        (None, true) => {
            return Err(ServerError(
                "HTTP/3 cannot start (see above); listen.http3 = false turns it off".into(),
            ))
        }
        (_, false) => None,
    };
    let public_port = config.listen.public_port(https_addr.port());
    let server = Arc::new(Server {
        alt_svc: quic.as_ref().map(|_| http3::alt_svc(public_port)),
        current: ArcSwap::from_pointee(first),
        telemetry,
        hints,
        tracker: tracker.clone(),
        shutting_down: AtomicBool::new(false),
        challenges: challenges.clone(),
    });

    // Signal handlers before the "listening" line: a signal sent as soon as
    // tlsfront says it is up must not meet the default action (exit).
    let mut stop = StopSignals::register();
    let reloader = reload::watch(
        Arc::new(state::Reloader {
            server: server.clone(),
            loader,
        }),
        seen,
    );
    let destination = if config.routes.is_empty() {
        format!("forwarding to {}", config.upstream.describe())
    } else {
        format!(
            "{} route(s){}",
            config.routes.len(),
            if config.upstream.given {
                format!(", fallback {}", config.upstream.describe())
            } else {
                String::new()
            }
        )
    };
    let protocols = if quic.is_some() {
        "HTTP/1.1 and HTTP/2; HTTP/3 on udp"
    } else {
        "HTTP/1.1 and HTTP/2"
    };
    tracing::info!("listening on https://{https_addr} ({protocols}), {destination}");
    if let Some(ca) = dev_ca {
        tracing::info!(
            "try it: curl --cacert {} https://localhost:{public_port}/",
            ca.display()
        );
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(state::Phase::Serving);
    if let Some(listener) = http {
        let addr = listener.local_addr().map_err(|e| ServerError(e.to_string()))?;
        tracing::info!("listening on http://{addr} (redirects to https)");
        let redirect = plain_http::RedirectToHttps {
            public_port,
            header_read_timeout: config.limits.header_read_timeout,
        };
        tracker.spawn(plain_http::accept_plain(
            listener,
            redirect,
            server.clone(),
            shutdown_rx.clone(),
        ));
    }
    if let Some(listener) = admin_listener {
        let addr = listener.local_addr().map_err(|e| ServerError(e.to_string()))?;
        tracing::info!("admin endpoint on http://{addr} (/healthz, /readyz, /metrics)");
        tokio::spawn(admin::serve(listener, server.clone()));
    }
    let connections = Arc::new(Semaphore::new(config.limits.max_connections));
    if let Some(endpoint) = &quic {
        tracker.spawn(http3::accept_quic(
            endpoint.clone(),
            server.clone(),
            connections.clone(),
            shutdown_rx.clone(),
        ));
    }
    tracker.spawn(accept::accept_tls(
        https,
        https_addr,
        server.clone(),
        connections,
        shutdown_rx,
    ));
    tokio::spawn(reloader);
    // Always running: a reload may turn [acme] on.
    tokio::spawn(crate::acme::manage(server.clone(), challenges));
    tokio::spawn(park::give_back_freed_memory());

    stop.next().await;
    // Not ready from now on: /readyz and /healthz answer 503.
    server.shutting_down.store(true, Ordering::Relaxed);
    shutdown_tx.send_replace(state::Phase::LameDuck);
    let limits = server.current().config.limits.clone();
    let open = || server.telemetry.metrics.open_connections.get();
    if !limits.shutdown_delay.is_zero() {
        tracing::info!(
            "shutting down: /readyz and /healthz answer 503; still accepting and serving for limits.shutdown_delay = {} ({} connections open; a second SIGTERM/SIGINT skips the wait)",
            humantime::format_duration(limits.shutdown_delay),
            open()
        );
        tokio::select! {
            _ = tokio::time::sleep(limits.shutdown_delay) => {}
            _ = stop.next() => tracing::info!("second signal: the rest of shutdown_delay skipped"),
        }
    }
    let grace = limits.shutdown_timeout;
    tracing::info!(
        "shutting down: no new connections; waiting up to {} for in-flight requests ({} connections open)",
        humantime::format_duration(grace),
        open()
    );
    let draining = std::time::Instant::now();
    shutdown_tx.send_replace(state::Phase::Draining);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            "shutdown_timeout reached with {} connections still open; closing them",
            open()
        );
        shutdown_tx.send_replace(state::Phase::Abandon);
        let _ = tokio::time::timeout(Duration::from_millis(250), tracker.wait()).await;
    } else {
        tracing::info!(
            "drained: every connection closed after {:.1} s",
            draining.elapsed().as_secs_f64()
        );
    }
    if let Some(endpoint) = quic {
        // Lets the last CONNECTION_CLOSE frames leave.
        endpoint.close(quinn::VarInt::from_u32(0x100), b"");
        let _ = tokio::time::timeout(Duration::from_millis(250), endpoint.wait_idle()).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Connections the kernel queues for `accept` per listener. tokio's own
/// `bind` asks for 128: 2,000 clients connecting at once overflowed it, and
/// each dropped SYN cost its client a 1 s retransmit (the 2,000-connection
/// bench). The kernel caps it at `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, ServerError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As std's and tokio's bind: a restart may reuse the port at once.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e: std::io::Error| ServerError(format!("cannot listen on {addr} ({key}): {e}")))
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

/// SIGTERM and SIGINT, registered when made: a signal sent as soon as
/// tlsfront says it is up must not meet the default action (exit).
struct StopSignals {
    #[cfg(unix)]
    handlers: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let handlers = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(term), Ok(int)) => Some((term, int)),
                _ => None,
            };
            StopSignals { handlers }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = self.handlers.as_mut() {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
