//! The admin endpoint: `/healthz`, `/readyz` and `/metrics` over plain HTTP,
//! meant for loopback or a private network (off unless `admin.listen` is set).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::routes::RouteTable;

/// An app that answered this recently is ready without a new probe.
const RECENT: Duration = Duration::from_secs(10);

/// What the admin endpoint reads of the running server, and nothing more.
pub trait ServerStatus: Send + Sync + 'static {
    /// SIGTERM/SIGINT was received: `/healthz` and `/readyz` answer 503.
    fn shutting_down(&self) -> bool;
    /// The newest generation's routes and its `[acme]` names that have no
    /// certificate yet.
    fn readiness_view(&self) -> ReadinessView;
    /// The metrics `/metrics` exposes.
    fn metrics(&self) -> &Metrics;
}

/// What readiness is judged on.
pub struct ReadinessView {
    /// Every route and its servers.
    pub routes: Arc<RouteTable>,
    /// Names whose handshakes fail until ACME brings their certificate.
    pub certificates_missing: Vec<String>,
}

/// Serves the admin endpoint until the process ends.
pub async fn serve(listener: TcpListener, server: Arc<dyn ServerStatus>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(respond(req, &*server).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(req: Request<Incoming>, server: &dyn ServerStatus) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/healthz" if server.shutting_down() => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if server.shutting_down() {
                return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
            }
            let view = server.readiness_view();
            let (mut ready, mut body) = readiness(&view.routes).await;
            let missing = &view.certificates_missing;
            if !missing.is_empty() {
                // Clients asking for these names get a failed handshake.
                ready = false;
                body = format!(
                    "{}\n",
                    serde_json::json!({
                        "ready": false,
                        "certificates_missing": missing,
                        "why": format!("no certificate yet for {} (ACME order in progress or failing; see the log)", missing.join(", ")),
                        "routes": serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v.get("routes").cloned()),
                    })
                );
            }
            let mut resp = text(
                if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                &body,
            );
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        "/metrics" => {
            let mut resp = text(StatusCode::OK, &server.metrics().encode());
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found: try /healthz, /readyz or /metrics\n"),
    }
}

/// Ready while every route has a server that takes requests and answers
/// (recently, or to a connection attempt now). The body lists each route
/// and server, e.g. `{"ready":false,"routes":[{"route":"[upstream]",
/// "ready":false,"servers":[{"url":"http://127.0.0.1:8000","available":true,
/// "answering":false}]}]}`.
async fn readiness(routes: &RouteTable) -> (bool, String) {
    let mut all_ready = true;
    let mut out = Vec::new();
    for route in routes.all() {
        let mut servers = Vec::new();
        let mut route_ready = false;
        for s in route.upstream.servers() {
            let available = s.available();
            let answering = available && (s.answered_within(RECENT) || s.probe().await);
            route_ready |= answering;
            servers.push(serde_json::json!({
                "url": s.label,
                "available": available,
                "answering": answering,
                "in_flight": s.in_flight(),
            }));
        }
        all_ready &= route_ready;
        out.push(serde_json::json!({ "route": route.name, "ready": route_ready, "servers": servers }));
    }
    let body = serde_json::json!({ "ready": all_ready, "routes": out });
    (all_ready, format!("{body}\n"))
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}
