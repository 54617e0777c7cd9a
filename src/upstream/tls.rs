//! TLS to `https://` servers: which roots verify them, which name is
//! checked, and which protocols ALPN offers.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;

/// The client side of TLS for one route's `https://` servers, built once per
/// configuration generation.
#[derive(Debug)]
pub struct UpstreamTls {
    /// ALPN `h2`, `http/1.1`: the server picks.
    negotiate: Arc<ClientConfig>,
    /// ALPN `http/1.1` only: for requests that ask for an upgrade
    /// (WebSocket), which HTTP/2 cannot carry as HTTP/1.1 does.
    http1_only: Arc<ClientConfig>,
    /// `server_name` from the route, instead of each URL's host.
    server_name: Option<ServerName<'static>>,
}

impl UpstreamTls {
    /// Verifies servers against `roots` (the route's `ca`, or the system's).
    pub fn new(roots: Arc<RootCertStore>, server_name: Option<ServerName<'static>>) -> Self {
        let config = |alpn: &[&[u8]]| {
            let mut config =
                ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default TLS versions")
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(config)
        };
        UpstreamTls {
            negotiate: config(&[b"h2", b"http/1.1"]),
            http1_only: config(&[b"http/1.1"]),
            server_name,
        }
    }

    /// The client configuration: offering HTTP/2 or not.
    pub fn config(&self, http1_only: bool) -> Arc<ClientConfig> {
        if http1_only {
            self.http1_only.clone()
        } else {
            self.negotiate.clone()
        }
    }

    /// The name to send as SNI and to verify: `server_name` if set, else the URL's host.
    pub fn name_for(&self, url_name: Option<&ServerName<'static>>) -> Option<ServerName<'static>> {
        self.server_name.clone().or_else(|| url_name.cloned())
    }
}

/// The operating system's trusted roots (what `update-ca-certificates`
/// manages; `SSL_CERT_FILE`/`SSL_CERT_DIR` are honoured). Certificates that
/// cannot be parsed are skipped; none at all is logged, as every `https://`
/// server will then fail verification.
pub fn system_roots() -> Arc<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), |e| e.to_string());
        tracing::warn!(
            "no system CA certificates ({why}): https:// servers cannot be verified; install the ca-certificates package or set ca = \"file.pem\" on the route"
        );
    }
    Arc::new(roots)
}
