//! `[listen]` and `[admin]`: where tlsfront accepts connections.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, optional_socket_addr, socket_addr};

/// `[listen]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// The TLS listener.
    #[serde(deserialize_with = "socket_addr")]
    pub https: SocketAddr,
    /// Optional plain-HTTP listener that redirects to https.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub http: Option<SocketAddr>,
    /// Port clients use for HTTPS; 0 = the https listener's port.
    pub https_public_port: u16,
    /// Every connection (on both listeners) starts with a PROXY protocol
    /// v1/v2 header from a peer in `forwarded.trusted_proxies`.
    pub proxy_protocol: bool,
    /// Time a peer has to send the whole PROXY protocol header.
    #[serde(deserialize_with = "duration")]
    pub proxy_protocol_timeout: Duration,
    /// HTTP/3 (QUIC) on UDP at the `https` address, advertised to HTTP/1.1
    /// and HTTP/2 clients with `Alt-Svc`.
    pub http3: bool,
}

impl Listen {
    /// The port clients use for https: `https_public_port`, else the port the
    /// HTTPS listener is bound to. The one place this rule lives.
    pub fn public_port(&self, bound_port: u16) -> u16 {
        match self.https_public_port {
            0 => bound_port,
            port => port,
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            https: SocketAddr::from(([0, 0, 0, 0], 8443)),
            http: None,
            https_public_port: 0,
            proxy_protocol: false,
            proxy_protocol_timeout: Duration::from_secs(5),
            http3: true,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Where `/healthz`, `/readyz` and `/metrics` are served; empty = off.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub listen: Option<SocketAddr>,
}
