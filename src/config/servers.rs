//! Where an app is: server URLs (`http`, `h2c`, `https`, `unix:`), the CA
//! and name `https://` servers are verified with, and how a server is
//! picked. Shared by `[[route]]` and `[upstream]`, the fallback route.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http::Uri;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// An upstream address: `http`, `h2c` or `https`, always with an authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// Scheme: `http`, `h2c` (HTTP/2 with prior knowledge) or `https`.
    pub scheme: Scheme,
    /// host:port as written (port filled in when absent).
    pub authority: Authority,
}

impl UpstreamUrl {
    /// Parses `http://host[:port]`, `h2c://host[:port]` (HTTP/2 with prior
    /// knowledge, cleartext) or `https://host[:port]`; the port defaults to
    /// 80, 80 and 443.
    pub fn parse_server(s: &str) -> Result<Self, String> {
        let expected = "expected like \"http://127.0.0.1:8000\", \"h2c://127.0.0.1:50051\" or \"https://app.internal\"";
        let uri: Uri = s.parse().map_err(|e| format!("invalid URL {s:?} ({e}); {expected}"))?;
        let (scheme, default_port) = match uri.scheme_str() {
            Some("http") => (Scheme::HTTP, 80),
            Some("https") => (Scheme::HTTPS, 443),
            Some("h2c") => ("h2c".parse::<Scheme>().map_err(|e| format!("{s:?}: {e}"))?, 80),
            Some(other) => return Err(format!("{s:?}: unknown scheme {other:?}; {expected}")),
            None => return Err(format!("{s:?} has no http:// scheme; {expected}")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{s:?} has no host; {expected}"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{s:?}: user info in the upstream URL is not supported"));
        }
        if let Some(pq) = uri.path_and_query() {
            if pq.as_str() != "/" && !pq.as_str().is_empty() {
                return Err(format!(
                    "{s:?}: a path or query in the upstream URL is not supported; give only scheme, host and port"
                ));
            }
        }
        let authority = if authority.port_u16().is_none() {
            format!("{}:{default_port}", authority.as_str())
                .parse()
                .map_err(|e| format!("invalid host in {s:?}: {e}"))?
        } else {
            authority
        };
        Ok(UpstreamUrl { scheme, authority })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each healthy server in turn.
    #[default]
    RoundRobin,
    /// Power of two choices: of two random healthy servers, the one with fewer requests in flight.
    LeastRequests,
}

/// Session affinity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sticky {
    /// None.
    #[default]
    None,
    /// A cookie names the server (hardened: Secure, HttpOnly, SameSite=Lax).
    Cookie,
}

/// Where a server listens, and how tlsfront speaks to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerUrl {
    /// `http://host:port`: HTTP/1.1.
    Http(UpstreamUrl),
    /// `h2c://host:port`: HTTP/2 with prior knowledge, cleartext.
    H2c(UpstreamUrl),
    /// `https://host:port`: TLS, then HTTP/2 or HTTP/1.1 as ALPN decides.
    Https(UpstreamUrl),
    /// `unix:/path/to.sock`: HTTP/1.1.
    Unix(PathBuf),
}

impl ServerUrl {
    /// Parses `http://host:port`, `h2c://host:port`, `https://host:port` or
    /// `unix:/path/to.sock`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.starts_with('/') {
                return Err(format!(
                    "{s:?}: a Unix socket path must be absolute, like \"unix:/run/app/gunicorn.sock\""
                ));
            }
            return Ok(ServerUrl::Unix(PathBuf::from(path)));
        }
        let url = UpstreamUrl::parse_server(s).map_err(|e| format!("{e} (or \"unix:/path/to.sock\")"))?;
        match url.scheme.as_str() {
            "https" => {
                // The URL host is the default SNI name: it must be one.
                tls_name(url.authority.host())
                    .map_err(|e| format!("{s:?}: the host is not a TLS server name ({e})"))?;
                Ok(ServerUrl::Https(url))
            }
            "h2c" => Ok(ServerUrl::H2c(url)),
            _ => Ok(ServerUrl::Http(url)),
        }
    }

    /// The host:port for TCP servers; none for a Unix socket.
    pub fn authority(&self) -> Option<&http::uri::Authority> {
        match self {
            ServerUrl::Http(u) | ServerUrl::H2c(u) | ServerUrl::Https(u) => Some(&u.authority),
            ServerUrl::Unix(_) => None,
        }
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerUrl::Http(u) | ServerUrl::H2c(u) | ServerUrl::Https(u) => write!(f, "{u}"),
            ServerUrl::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A host as a TLS server name: a DNS name, or an IP address (with or
/// without the brackets of a URL).
pub fn tls_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(bare.to_string()).map_err(|e| format!("{host:?}: {e}"))
}

/// `ca = "file.pem"`: the certificates an `https://` server's chain must end
/// in, read and parsed once at load.
#[derive(Debug, Clone)]
pub struct CaFile {
    /// The file, as written.
    pub path: PathBuf,
    /// Its certificates as trust anchors.
    pub roots: Arc<RootCertStore>,
}

impl CaFile {
    /// Reads a PEM file of one or more CA certificates.
    pub fn load(path: &str) -> Result<Self, String> {
        let path = PathBuf::from(path.trim());
        let text = std::fs::read(&path).map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&text) {
            let cert = cert.map_err(|e| format!("{}: not a PEM certificate file ({e})", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: a certificate is not usable as a CA ({e})", path.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "{}: no certificate in it; expected PEM \"-----BEGIN CERTIFICATE-----\" blocks",
                path.display()
            ));
        }
        Ok(CaFile {
            path,
            roots: Arc::new(roots),
        })
    }
}

pub(super) fn optional_server_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ServerUrl>, D::Error> {
    let s = String::deserialize(d)?;
    ServerUrl::parse(&s).map(Some).map_err(de::Error::custom)
}

pub(super) fn server_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ServerUrl>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    items
        .iter()
        .map(|s| ServerUrl::parse(s).map_err(de::Error::custom))
        .collect()
}

pub(super) fn optional_ca_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CaFile>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    CaFile::load(&s).map(Some).map_err(de::Error::custom)
}

pub(super) fn optional_server_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ServerName<'static>>, D::Error> {
    let s = String::deserialize(d)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    tls_name(s).map(Some).map_err(|e| {
        de::Error::custom(format!(
            "{e}; expected a DNS name like \"app.internal\" or an IP address"
        ))
    })
}
