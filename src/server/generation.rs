//! A generation: one loaded configuration with its certificates, request
//! pipeline and HTTP settings, built whole and swapped whole on reload.

use std::path::PathBuf;
use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioTimer;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hints::Hints;
use crate::policy::forwarded::TrustedProxies;
use crate::proxy::Proxy;
use crate::reload;
use crate::telemetry::Telemetry;

use super::handshake::ProxyHeaderGate;
use super::quic::QuicSetup;
use super::streams::InConnectionTask;

/// A configuration and its certificates, loaded and validated.
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// The TLS server configuration built from its certificates.
    pub tls: Arc<ServerConfig>,
    /// Per-site configurations when some site asks for client certificates.
    pub client_sites: Option<Arc<crate::tls::ClientAuthSites>>,
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
    pub(super) acceptor: TlsAcceptor,
    /// Per-site configurations when some site asks for client certificates.
    pub(super) client_sites: Option<Arc<crate::tls::ClientAuthSites>>,
    pub(super) http1: http1::Builder,
    pub(super) http2: http2::Builder<InConnectionTask>,
    /// HTTP/3: the QUIC side of the same certificates (`listen.http3`).
    pub(super) quic: Option<QuicSetup>,
    /// `listen.proxy_protocol`: set when every connection must start with a header.
    pub(super) proxy_protocol: Option<ProxyHeaderGate>,
    /// Files watched for changes.
    pub watch: Vec<PathBuf>,
    /// `[acme] names` this generation has no certificate for (not ready).
    pub acme_missing: Vec<String>,
}

/// Builds a generation from a loaded configuration.
pub(super) fn build_generation(
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
        // Off: it runs from when hyper starts waiting, which on a kept-alive
        // connection is the end of the last response; `serve::drive` times
        // heads itself, from accept for the first and from its first byte
        // for every later one, and idle connections by limits.idle_timeout.
        .header_read_timeout(None)
        .max_buf_size(limits.max_request_header_bytes.max(8192) + 1024)
        .keep_alive(true);
    // Streams run in their connection's task (see `streams`).
    let mut http2 = http2::Builder::new(InConnectionTask);
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_reset_streams)
        // Twice the limit, so that tlsfront's own check (which counts the 431 in
        // limit_rejections and the access log) sees ordinary oversized heads;
        // h2 itself refuses larger ones, uncounted, as the memory bound.
        .max_header_list_size(u32::try_from(limits.max_request_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX));
    // HTTP/3 from the same certificates; a failure leaves TCP serving.
    let quic = if config.listen.http3 {
        QuicSetup::new(&loaded.tls, &config)
            .map_err(|e| tracing::error!("HTTP/3 is off for this configuration: {e}"))
            .ok()
    } else {
        None
    };
    Generation {
        proxy: Proxy::new(&config, telemetry.clone(), hints.clone(), tracker.clone())
            .with_client_sites(loaded.client_sites.clone()),
        acceptor: TlsAcceptor::from(loaded.tls),
        client_sites: loaded.client_sites,
        quic,
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
