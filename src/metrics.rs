//! Prometheus metrics. Every handle is created once at start (no label
//! lookups per request); `/metrics` encodes them with prometheus-client.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::proxy_protocol::Rejection;

type Labels = Vec<(&'static str, &'static str)>;

/// Labels naming a configured server (`upstream`), bounded by the config.
pub type ServerLabels = Vec<(&'static str, String)>;
/// `name` of a served certificate: bounded by the configuration.
type CertificateLabels = Vec<(&'static str, String)>;

/// All of tlsfront's metrics.
pub struct Metrics {
    registry: Registry,
    requests_1xx: Counter,
    requests_2xx: Counter,
    requests_3xx: Counter,
    requests_4xx: Counter,
    requests_5xx: Counter,
    /// Request duration, from the request head to the end of the response body.
    pub request_duration: Histogram,
    /// Time until the upstream's response head.
    pub upstream_duration: Histogram,
    /// Upstream connection failures.
    pub upstream_connect_errors: Counter,
    /// Upstream response timeouts (504).
    pub upstream_timeouts: Counter,
    /// Broken upstream responses.
    pub upstream_protocol_errors: Counter,
    /// Requests refused because every server of their route was down.
    pub upstream_unavailable: Counter,
    /// Client connections open now.
    pub open_connections: Gauge,
    /// Kept-alive HTTP/1.1 connections parked: idle, without HTTP buffers (`park`).
    pub parked_connections: Gauge,
    /// Upgraded (WebSocket) tunnels open now.
    pub open_tunnels: Gauge,
    /// Completed TLS handshakes.
    pub tls_handshakes: Counter,
    /// Failed or timed-out TLS handshakes.
    pub tls_handshake_failures: Counter,
    /// Request body bytes received from clients.
    pub bytes_in: Counter,
    /// Response body bytes sent to clients.
    pub bytes_out: Counter,
    /// Successful configuration reloads.
    pub reloads: Counter,
    /// Rejected configuration reloads.
    pub reload_failures: Counter,
    /// Requests refused by a limit, by limit.
    pub limit_rejections: Family<Labels, Counter>,
    /// Completed handshakes (TCP and QUIC) by negotiated key exchange group.
    pub key_exchanges: Family<Labels, Counter>,
    /// Requests refused by a protection, by reason (access, rate_limit, auth, client_cert).
    pub refused_requests: Family<Labels, Counter>,
    /// Responses compressed, by coding.
    pub compressed_responses: Family<Labels, Counter>,
    /// QUIC connections open now (also counted in `open_connections`).
    pub open_quic_connections: Gauge,
    /// Problems in the app's traffic that tlsfront noticed (see `hints`).
    pub hints: Family<Labels, Counter>,
    /// Responses received, per configured server.
    pub server_responses: Family<ServerLabels, Counter>,
    /// Failures per configured server and kind.
    pub server_failures: Family<ServerLabels, Counter>,
    /// 1 while a configured server takes requests (healthy, not ejected).
    pub server_up: Family<ServerLabels, Gauge>,
    /// `notAfter` of each served certificate, by its first name.
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    /// Connections closed for a missing, bad or untrusted PROXY header, by reason.
    proxy_protocol_rejections: Family<Labels, Counter>,
    /// ACME orders finished, by result (`success`, `failure`).
    acme_orders: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `tlsfront_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tlsfront");
        let requests = Family::<Labels, Counter>::default();
        registry.register("requests", "Requests answered, by status class", requests.clone());
        let class = |c: &'static str| requests.get_or_create(&vec![("class", c)]).clone();
        let request_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        registry.register_with_unit(
            "request_duration",
            "Time from request head to end of response body",
            prometheus_client::registry::Unit::Seconds,
            request_duration.clone(),
        );
        let upstream_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        registry.register_with_unit(
            "upstream_response_duration",
            "Time until the upstream's response head",
            prometheus_client::registry::Unit::Seconds,
            upstream_duration.clone(),
        );
        let upstream_errors = Family::<Labels, Counter>::default();
        registry.register("upstream_errors", "Upstream failures by kind", upstream_errors.clone());
        let kind = |k: &'static str| upstream_errors.get_or_create(&vec![("kind", k)]).clone();
        let mut m = Metrics {
            requests_1xx: class("1xx"),
            requests_2xx: class("2xx"),
            requests_3xx: class("3xx"),
            requests_4xx: class("4xx"),
            requests_5xx: class("5xx"),
            request_duration,
            upstream_duration,
            upstream_connect_errors: kind("connect"),
            upstream_timeouts: kind("timeout"),
            upstream_protocol_errors: kind("protocol"),
            upstream_unavailable: kind("no_healthy_server"),
            open_connections: Gauge::default(),
            parked_connections: Gauge::default(),
            open_tunnels: Gauge::default(),
            tls_handshakes: Counter::default(),
            tls_handshake_failures: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            limit_rejections: Family::default(),
            key_exchanges: Family::default(),
            refused_requests: Family::default(),
            compressed_responses: Family::default(),
            open_quic_connections: Gauge::default(),
            hints: Family::default(),
            server_responses: Family::default(),
            server_failures: Family::default(),
            server_up: Family::default(),
            certificate_expiry: Family::default(),
            proxy_protocol_rejections: Family::default(),
            acme_orders: Family::default(),
            registry,
        };
        let r = &mut m.registry;
        r.register(
            "open_connections",
            "Client connections open now",
            m.open_connections.clone(),
        );
        r.register(
            "parked_connections",
            "Idle kept-alive HTTP/1.1 connections waiting without HTTP buffers",
            m.parked_connections.clone(),
        );
        r.register(
            "open_tunnels",
            "Upgraded (WebSocket) connections open now",
            m.open_tunnels.clone(),
        );
        r.register("tls_handshakes", "Completed TLS handshakes", m.tls_handshakes.clone());
        r.register(
            "tls_handshake_failures",
            "Failed or timed-out TLS handshakes",
            m.tls_handshake_failures.clone(),
        );
        r.register_with_unit(
            "received",
            "Request body bytes received from clients",
            prometheus_client::registry::Unit::Bytes,
            m.bytes_in.clone(),
        );
        r.register_with_unit(
            "sent",
            "Response body bytes sent to clients",
            prometheus_client::registry::Unit::Bytes,
            m.bytes_out.clone(),
        );
        r.register("config_reloads", "Successful configuration reloads", m.reloads.clone());
        r.register(
            "config_reload_failures",
            "Rejected configuration reloads",
            m.reload_failures.clone(),
        );
        r.register(
            "tls_key_exchanges",
            "Completed TLS handshakes (TCP and QUIC) by key exchange group",
            m.key_exchanges.clone(),
        );
        r.register(
            "open_quic_connections",
            "Open HTTP/3 (QUIC) connections",
            m.open_quic_connections.clone(),
        );
        r.register(
            "refused_requests",
            "Requests refused by a protection ([access], [rate_limit], [auth], client certificates), by reason",
            m.refused_requests.clone(),
        );
        r.register(
            "compressed_responses",
            "Responses compressed ([compression]), by coding",
            m.compressed_responses.clone(),
        );
        r.register(
            "limit_rejections",
            "Requests refused by a limit",
            m.limit_rejections.clone(),
        );
        r.register(
            "hints",
            "Problems noticed in the app's traffic, by kind",
            m.hints.clone(),
        );
        r.register(
            "upstream_server_responses",
            "Responses received, per configured server",
            m.server_responses.clone(),
        );
        r.register(
            "upstream_server_failures",
            "Failures per configured server, by kind",
            m.server_failures.clone(),
        );
        r.register(
            "upstream_server_up",
            "1 while a configured server takes requests (healthy, not ejected)",
            m.server_up.clone(),
        );
        r.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of each served certificate (Unix time), by its first name",
            m.certificate_expiry.clone(),
        );
        r.register(
            "proxy_protocol_rejected",
            "Connections closed for a missing, invalid or untrusted PROXY protocol header, by reason",
            m.proxy_protocol_rejections.clone(),
        );
        r.register(
            "acme_orders",
            "ACME certificate orders finished, by result (success, failure)",
            m.acme_orders.clone(),
        );
        for result in ["success", "failure"] {
            drop(m.acme_orders.get_or_create(&vec![("result", result)]));
        }
        // Every reason shows (as 0) before the first rejection.
        for reason in Rejection::ALL {
            drop(
                m.proxy_protocol_rejections
                    .get_or_create(&vec![("reason", reason.label())]),
            );
        }
        m
    }

    /// Counts a finished ACME order: `success` or `failure`.
    pub fn count_acme_order(&self, result: &'static str) {
        self.acme_orders.get_or_create(&vec![("result", result)]).inc();
    }

    /// Replaces the certificate expiry gauges with those of the certificates
    /// served now (a certificate dropped by a reload disappears). The first
    /// certificate with a name wins, as in the SNI choice.
    pub fn set_certificate_expiry(&self, certificates: &[(String, i64)]) {
        self.certificate_expiry.clear();
        let mut seen: Vec<&str> = Vec::with_capacity(certificates.len());
        for (name, not_after) in certificates {
            if !seen.contains(&name.as_str()) {
                seen.push(name);
                self.certificate_expiry
                    .get_or_create(&vec![("name", name.clone())])
                    .set(*not_after);
            }
        }
    }

    /// Counts one answered request by its status class.
    pub fn count_status(&self, status: u16) {
        match status {
            100..=199 => self.requests_1xx.inc(),
            200..=299 => self.requests_2xx.inc(),
            300..=399 => self.requests_3xx.inc(),
            400..=499 => self.requests_4xx.inc(),
            _ => self.requests_5xx.inc(),
        };
    }

    /// Counts a refusal by a named limit.
    pub fn count_key_exchange(&self, group: &'static str) {
        self.key_exchanges.get_or_create(&vec![("group", group)]).inc();
    }

    /// Counts a request refused by a protection.
    pub fn count_refused(&self, reason: &'static str) {
        self.refused_requests.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// Counts a compressed response.
    pub fn count_compressed(&self, coding: &'static str) {
        self.compressed_responses
            .get_or_create(&vec![("algorithm", coding)])
            .inc();
    }

    /// Counts a request refused by a limit.
    pub fn count_limit(&self, limit: &'static str) {
        self.limit_rejections.get_or_create(&vec![("limit", limit)]).inc();
    }

    /// Counts a connection closed by the PROXY protocol gate.
    pub fn count_proxy_protocol_rejected(&self, reason: Rejection) {
        self.proxy_protocol_rejections
            .get_or_create(&vec![("reason", reason.label())])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family docs/operations.md lists, with a sample line each: a family
    /// registered but not listed here, or listed but not exposed, fails.
    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::new();
        m.count_status(200);
        m.count_status(502);
        m.upstream_connect_errors.inc();
        m.count_limit("body");
        m.count_key_exchange("X25519MLKEM768");
        m.count_refused("access");
        m.count_compressed("zstd");
        m.hints.get_or_create(&vec![("kind", "cookie_without_secure")]).inc();
        m.upstream_duration.observe(0.01);
        m.open_tunnels.inc();
        m.set_certificate_expiry(&[("old.test".into(), 1)]);
        m.set_certificate_expiry(&[("a.test".into(), 1_900_000_000), ("a.test".into(), 5)]);
        m.count_proxy_protocol_rejected(Rejection::UntrustedPeer);
        m.count_acme_order("success");
        let server = vec![("upstream", "http://10.0.0.5:8000".to_string())];
        m.server_responses.get_or_create(&server).inc();
        m.server_up.get_or_create(&server).set(1);
        let mut failure = server.clone();
        failure.push(("kind", "connect_refused".to_string()));
        m.server_failures.get_or_create(&failure).inc();
        let text = m.encode();
        assert!(
            !text.contains("old.test"),
            "a replaced certificate stays listed:\n{text}"
        );
        let families = [
            ("requests", "tlsfront_requests_total{class=\"2xx\"} 1"),
            ("request_duration_seconds", "tlsfront_request_duration_seconds_bucket"),
            (
                "upstream_response_duration_seconds",
                "tlsfront_upstream_response_duration_seconds_count 1",
            ),
            ("upstream_errors", "tlsfront_upstream_errors_total{kind=\"connect\"} 1"),
            ("open_connections", "tlsfront_open_connections 0"),
            ("parked_connections", "tlsfront_parked_connections 0"),
            ("open_tunnels", "tlsfront_open_tunnels 1"),
            ("tls_handshakes", "tlsfront_tls_handshakes_total 0"),
            ("tls_handshake_failures", "tlsfront_tls_handshake_failures_total 0"),
            ("open_quic_connections", "tlsfront_open_quic_connections 0"),
            ("received_bytes", "tlsfront_received_bytes_total 0"),
            ("sent_bytes", "tlsfront_sent_bytes_total 0"),
            ("config_reloads", "tlsfront_config_reloads_total 0"),
            ("config_reload_failures", "tlsfront_config_reload_failures_total 0"),
            ("limit_rejections", "tlsfront_limit_rejections_total{limit=\"body\"} 1"),
            (
                "refused_requests",
                "tlsfront_refused_requests_total{reason=\"access\"} 1",
            ),
            (
                "compressed_responses",
                "tlsfront_compressed_responses_total{algorithm=\"zstd\"} 1",
            ),
            (
                "tls_key_exchanges",
                "tlsfront_tls_key_exchanges_total{group=\"X25519MLKEM768\"} 1",
            ),
            ("hints", "tlsfront_hints_total{kind=\"cookie_without_secure\"} 1"),
            (
                "upstream_server_responses",
                "tlsfront_upstream_server_responses_total{upstream=\"http://10.0.0.5:8000\"} 1",
            ),
            (
                "upstream_server_failures",
                "tlsfront_upstream_server_failures_total{upstream=\"http://10.0.0.5:8000\",kind=\"connect_refused\"} 1",
            ),
            (
                "upstream_server_up",
                "tlsfront_upstream_server_up{upstream=\"http://10.0.0.5:8000\"} 1",
            ),
            (
                "certificate_expiry_timestamp_seconds",
                "tlsfront_certificate_expiry_timestamp_seconds{name=\"a.test\"} 1900000000",
            ),
            (
                "proxy_protocol_rejected",
                "tlsfront_proxy_protocol_rejected_total{reason=\"untrusted_peer\"} 1",
            ),
            ("acme_orders", "tlsfront_acme_orders_total{result=\"success\"} 1"),
        ];
        let exposed: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE tlsfront_"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let listed: Vec<&str> = families.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            exposed.iter().collect::<std::collections::BTreeSet<_>>(),
            listed.iter().collect::<std::collections::BTreeSet<_>>(),
            "exposed families and the ones this test (and the README) lists differ:\n{text}"
        );
        for (_, sample) in families {
            assert!(text.contains(sample), "{sample} missing in:\n{text}");
        }
        // Every status class, upstream error kind and PROXY rejection reason exists from the start.
        for needle in [
            "tlsfront_requests_total{class=\"5xx\"} 1",
            "tlsfront_requests_total{class=\"1xx\"} 0",
            "tlsfront_upstream_errors_total{kind=\"timeout\"} 0",
            "tlsfront_upstream_errors_total{kind=\"protocol\"} 0",
            "tlsfront_upstream_errors_total{kind=\"no_healthy_server\"} 0",
            "tlsfront_proxy_protocol_rejected_total{reason=\"timeout\"} 0",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }
}
