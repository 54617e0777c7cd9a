//! The state that outlives generations: the current generation, telemetry,
//! the connection tracker, the shutdown flag; and the narrow views that
//! admin, reload and ACME get of it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::hints::Hints;
use crate::metrics::Metrics;
use crate::telemetry::Telemetry;
use crate::{acme, admin, config, reload};

use super::generation::{build_generation, Generation, Loaded, Loader};

/// State that outlives generations.
pub struct Server {
    pub(super) current: ArcSwap<Generation>,
    /// `Alt-Svc` for HTTP/1.1 and HTTP/2 responses while HTTP/3 is served.
    pub(super) alt_svc: Option<http::HeaderValue>,
    /// Metrics and access log.
    pub telemetry: Arc<Telemetry>,
    pub(super) hints: Arc<Hints>,
    pub(super) tracker: TaskTracker,
    pub(super) shutting_down: AtomicBool,
    /// Open ACME challenges (http-01 answers on the plain listener).
    pub(super) challenges: Arc<crate::acme::Challenges>,
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

/// Live reload's view: the server, and how to load its configuration again.
pub(super) struct Reloader {
    pub(super) server: Arc<Server>,
    pub(super) loader: Loader,
}

impl reload::Reload for Reloader {
    fn watched(&self) -> Vec<PathBuf> {
        self.server.current().watch.clone()
    }

    fn reload(&self, why: &str) {
        self.server.reload(&self.loader, why);
    }
}

impl admin::ServerStatus for Server {
    fn shutting_down(&self) -> bool {
        self.is_shutting_down()
    }

    fn readiness_view(&self) -> admin::ReadinessView {
        let generation = self.current();
        admin::ReadinessView {
            routes: generation.proxy.routes().clone(),
            certificates_missing: generation.acme_missing.clone(),
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.telemetry.metrics
    }
}

impl acme::AcmeHost for Server {
    fn acme_settings(&self) -> (config::Acme, bool) {
        let generation = self.current();
        (generation.config.acme.clone(), generation.config.listen.http.is_some())
    }

    fn shutting_down(&self) -> bool {
        self.is_shutting_down()
    }

    fn metrics(&self) -> &Metrics {
        &self.telemetry.metrics
    }
}

/// Where shutdown stands, sent to every accept loop and connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    /// Accepting and serving.
    Serving,
    /// SIGTERM received, `limits.shutdown_delay` running: still accepting
    /// and serving, but HTTP/1.1 responses say `Connection: close` and
    /// HTTP/2 connections get a GOAWAY, so that their clients come back on
    /// new connections, which the balancer sends elsewhere by then.
    LameDuck,
    /// Not accepting; what is in flight, or on its way, finishes.
    Draining,
    /// `limits.shutdown_timeout` ran out: connections are dropped.
    Abandon,
}

/// The next phase announced (a closed channel is the end).
pub(super) async fn next_phase(phases: &mut watch::Receiver<Phase>) -> Phase {
    match phases.changed().await {
        Ok(()) => *phases.borrow_and_update(),
        Err(_) => Phase::Abandon,
    }
}

/// Returns once the phase is `at_least` (at once if it already is).
pub(super) async fn reached(phases: &mut watch::Receiver<Phase>, at_least: Phase) {
    while *phases.borrow_and_update() < at_least {
        if phases.changed().await.is_err() {
            return;
        }
    }
}
