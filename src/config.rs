//! The configuration contract: TOML → validated [`Config`].
//!
//! The file is parsed once, here, into typed values (socket addresses, URIs,
//! durations, CIDR sets). Nothing else in the program ever sees a raw config
//! string. Every error names the file, the line and column, the full key and
//! what was expected.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::Uri;
use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::Deserialize;

mod acme;
mod route;
pub use acme::{Acme, ChallengeKind, LETSENCRYPT, LETSENCRYPT_STAGING};
pub use route::{
    tls_name, Balance, CaFile, CookiesOverride, ForwardedOverride, HeadersOverride, HostPattern, PathPrefix,
    RedirectsOverride, Route, ServerUrl, Sticky,
};

/// Where the configuration came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file, named by `-c`, `TLSFRONT_CONFIG` or found at `config/tlsfront.toml`.
    File(PathBuf),
    /// No file: the built-in defaults.
    Defaults,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Defaults => f.write_str("built-in defaults"),
        }
    }
}

/// The validated configuration of a running proxy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners.
    pub listen: Listen,
    /// Certificates and protocol versions.
    pub tls: Tls,
    /// The app behind the proxy.
    pub upstream: Upstream,
    /// Which forwarded headers to send and whom to believe.
    pub forwarded: Forwarded,
    /// Set-Cookie hardening.
    pub cookies: Cookies,
    /// Location / Content-Location / Refresh rewriting.
    pub redirects: Redirects,
    /// Application log.
    pub log: Log,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Admin endpoint (health, readiness, metrics).
    pub admin: Admin,
    /// Fixed request/response headers and HSTS.
    pub headers: Headers,
    /// `[acme]`: automatic certificates.
    pub acme: Acme,
    /// `[[route]]` tables: several apps behind one listener.
    #[serde(rename = "route")]
    pub routes: Vec<Route>,
    /// Whether `[upstream]` is a route: always without `[[route]]` tables;
    /// with them, only when `[upstream] url` was written in the file or
    /// given with `--upstream` (then it is the fallback route).
    #[serde(skip)]
    pub upstream_given: bool,
}

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

/// Minimum TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain; empty = generate a development certificate.
    #[serde(deserialize_with = "optional_path")]
    pub cert: Option<PathBuf>,
    /// PEM private key; empty = generate a development certificate.
    #[serde(deserialize_with = "optional_path")]
    pub key: Option<PathBuf>,
    /// Where development certificates are written and reused from.
    pub self_signed_dir: PathBuf,
    /// Names the development certificate is valid for.
    pub self_signed_hosts: Vec<String>,
    /// Lowest protocol version offered.
    pub min_version: TlsVersion,
    /// `[[tls.certificate]]`: more certificates, chosen by SNI. After
    /// `cert`/`key` (when set), which stays the default.
    #[serde(rename = "certificate", deserialize_with = "certificate_entries")]
    pub certificates: Vec<CertificateEntry>,
}

/// One `[[tls.certificate]]`: a PEM chain and its key, served to clients
/// whose SNI is one of `names`.
#[derive(Clone)]
pub struct CertificateEntry {
    /// PEM certificate chain, server certificate first.
    pub cert: PathBuf,
    /// PEM private key of the first certificate.
    pub key: PathBuf,
    /// Names it is chosen for (lower case, no trailing dot; `*.example.com`
    /// for one label). Empty: the DNS names in the certificate.
    pub names: Vec<String>,
    /// Where `cert`, `key` and each name are in the file, for messages.
    pub positions: EntryPositions,
}

/// 1-based line and column of the parts of a `[[tls.certificate]]`; `None`
/// when the entry did not come from a file.
#[derive(Debug, Clone, Default)]
pub struct EntryPositions {
    /// The `cert` value.
    pub cert: Option<(usize, usize)>,
    /// The `key` value.
    pub key: Option<(usize, usize)>,
    /// Each of `names`, in order.
    pub names: Vec<Option<(usize, usize)>>,
    /// Byte offsets of the above, turned into lines and columns once the text is known.
    offsets: Vec<usize>,
}

impl fmt::Debug for CertificateEntry {
    /// The settings only: where they were written is not what they mean, so
    /// a config printed and parsed again compares equal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateEntry")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl CertificateEntry {
    /// Fills in lines and columns from the byte offsets the parser recorded.
    fn locate(&mut self, text: &str) {
        let mut at = self.positions.offsets.iter().map(|&o| Some(line_col(text, o)));
        self.positions.cert = at.next().flatten();
        self.positions.key = at.next().flatten();
        self.positions.names = at.collect();
    }
}

/// `[upstream]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// `http://host:port` of the app.
    #[serde(deserialize_with = "upstream_url")]
    pub url: UpstreamUrl,
    /// Limit on establishing a TCP connection to the app.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Limit until the app's response headers arrive.
    #[serde(deserialize_with = "duration")]
    pub response_timeout: Duration,
    /// Longest silence of the app in the middle of a response body.
    #[serde(deserialize_with = "duration")]
    pub read_timeout: Duration,
    /// How long an idle pooled connection to the app is kept.
    #[serde(deserialize_with = "duration")]
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept to the app.
    pub pool_max_idle: usize,
}

/// An upstream address: `http`, `h2c` or `https`, always with an authority.
/// The `[upstream] url` is always `http` (see [`UpstreamUrl::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// Scheme: `http`, `h2c` (HTTP/2 with prior knowledge) or `https`.
    pub scheme: Scheme,
    /// host:port as written (port filled in when absent).
    pub authority: Authority,
}

impl UpstreamUrl {
    /// Parses and validates `http://host[:port][/]`: the `[upstream] url`,
    /// which stays plain HTTP/1.1 (`h2c://` and `https://` servers go on a
    /// `[[route]]`, where `ca` and `server_name` can be set).
    pub fn parse(s: &str) -> Result<Self, String> {
        let url = Self::parse_server(s)?;
        if url.scheme != Scheme::HTTP {
            return Err(format!(
                "{s:?}: [upstream] url takes http:// only (plain HTTP/1.1 to the app, e.g. \"http://127.0.0.1:8000\"); h2c:// and https:// servers are not supported there: give them on a [[route]] (url = \"{s}\")"
            ));
        }
        Ok(url)
    }

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

/// `[forwarded]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Forwarded {
    /// Peers whose forwarded headers are believed and extended.
    #[serde(deserialize_with = "cidr_list")]
    pub trusted_proxies: Vec<IpNet>,
    /// Send X-Forwarded-For.
    pub x_forwarded_for: bool,
    /// Send X-Forwarded-Proto.
    pub x_forwarded_proto: bool,
    /// Send X-Forwarded-Host.
    pub x_forwarded_host: bool,
    /// Send X-Forwarded-Port.
    pub x_forwarded_port: bool,
    /// Send X-Real-IP.
    pub x_real_ip: bool,
    /// Send RFC 7239 Forwarded.
    pub forwarded: bool,
    /// Extra header names removed from untrusted peers, beyond every
    /// `X-Forwarded-*` and the built-in client-identity list.
    #[serde(deserialize_with = "header_names")]
    pub strip_untrusted: Vec<HeaderName>,
}

/// `SameSite` policy for cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    /// Leave whatever the app sent.
    Keep,
    /// Add `SameSite=Lax` when absent.
    Lax,
    /// Add `SameSite=Strict` when absent.
    Strict,
    /// Add `SameSite=None` (and so `Secure`) when absent.
    None,
}

/// `[cookies]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cookies {
    /// Add `Secure`.
    pub secure: bool,
    /// Add `HttpOnly`.
    pub http_only: bool,
    /// Add `SameSite` when absent.
    pub same_site: SameSite,
    /// Cookie names that must stay readable by scripts.
    pub http_only_except: Vec<String>,
}

/// `[redirects]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redirects {
    /// Rewrite Location / Content-Location / Refresh that leak the upstream.
    pub rewrite_location: bool,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal operation.
    Info,
    /// Troubleshooting.
    Debug,
    /// Everything.
    Trace,
}

/// Access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// Common Log Format plus host, timings, protocol and TLS version.
    Common,
    /// No access log.
    Off,
}

/// Application log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Application log level.
    pub level: LogLevel,
    /// Access log (stdout).
    pub access: AccessLogFormat,
    /// Application log format (stderr).
    pub format: LogFormat,
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Where `/healthz`, `/readyz` and `/metrics` are served; empty = off.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub listen: Option<SocketAddr>,
}

/// `[headers]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Headers {
    /// `Strict-Transport-Security` value added to responses; empty = off.
    #[serde(deserialize_with = "optional_header_value")]
    pub hsts: Option<HeaderValue>,
    /// Response headers removed (e.g. `Server`, `X-Powered-By`).
    #[serde(deserialize_with = "header_names")]
    pub remove_response: Vec<HeaderName>,
    /// Response headers set to fixed values (replacing the app's).
    #[serde(deserialize_with = "header_table")]
    pub set_response: Vec<(HeaderName, HeaderValue)>,
    /// Request headers set to fixed values before the request goes upstream.
    #[serde(deserialize_with = "header_table")]
    pub set_request: Vec<(HeaderName, HeaderValue)>,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line + headers) accepted; past it, 431.
    pub max_request_header_bytes: usize,
    /// Largest request body accepted; past it, 413. 0 = unlimited.
    pub max_request_body_bytes: u64,
    /// A keep-alive connection with no traffic for this long is closed.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Client connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// HTTP/2 streams per connection at once.
    pub max_concurrent_streams: u32,
    /// HTTP/2 streams a client may reset before they are processed, before
    /// the connection is closed (rapid-reset protection).
    pub max_pending_reset_streams: usize,
    /// Time a client has to complete the TLS handshake.
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Time a client has to send a complete request head (slowloris).
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// A client that takes none of the bytes waiting for it (a response it
    /// stopped reading) for this long is dropped (nginx's `send_timeout`).
    #[serde(deserialize_with = "duration")]
    pub send_timeout: Duration,
    /// Grace period for in-flight requests on SIGTERM / SIGINT.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            https: SocketAddr::from(([0, 0, 0, 0], 8443)),
            http: None,
            https_public_port: 0,
            proxy_protocol: false,
            proxy_protocol_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert: None,
            key: None,
            self_signed_dir: PathBuf::from("certs"),
            self_signed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            min_version: TlsVersion::Tls12,
            certificates: Vec::new(),
        }
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            url: UpstreamUrl::parse("http://127.0.0.1:8000").expect("the default upstream is valid"),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle: 64,
        }
    }
}

impl Default for Forwarded {
    fn default() -> Self {
        Forwarded {
            trusted_proxies: Vec::new(),
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: true,
            x_forwarded_port: true,
            x_real_ip: false,
            forwarded: false,
            strip_untrusted: Vec::new(),
        }
    }
}

impl Default for Cookies {
    fn default() -> Self {
        Cookies {
            secure: true,
            http_only: true,
            same_site: SameSite::Keep,
            http_only_except: Vec::new(),
        }
    }
}

impl Default for Redirects {
    fn default() -> Self {
        Redirects { rewrite_location: true }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: LogLevel::Info,
            access: AccessLogFormat::Common,
            format: LogFormat::Text,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_header_bytes: 64 * 1024,
            max_request_body_bytes: 0,
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_concurrent_streams: 100,
            max_pending_reset_streams: 20,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// A configuration that could not be used, with everything a person needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or "built-in defaults", or "command line").
    pub source: String,
    /// 1-based line and column, where TOML is involved.
    pub position: Option<(usize, usize)>,
    /// Full dotted key, e.g. `upstream.connect_timeout`, when known.
    pub key: Option<String>,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// One line, whatever the file contained: control characters are escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one_line = |s: &str| {
            s.chars()
                .flat_map(|c| {
                    if c.is_control() {
                        c.escape_default().collect::<Vec<_>>()
                    } else {
                        vec![c]
                    }
                })
                .collect::<String>()
        };
        write!(f, "invalid configuration in {}", one_line(&self.source))?;
        if let Some((line, col)) = self.position {
            write!(f, " at line {line}, column {col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{}`", one_line(key))?;
        }
        write!(f, ": {}", one_line(&self.message))
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses a TOML document. `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            // Values read with their position (toml::Spanned) add a private
            // segment to the path; the person reading wants the key.
            let path = err.path().to_string().replace(".$__serde_spanned_private_value", "");
            let inner = err.into_inner();
            let position = inner.span().map(|span| line_col(text, span.start));
            let (key, message) = explain_toml_error(&path, inner.message());
            ConfigError {
                source: source.to_string(),
                position,
                key,
                message,
            }
        })?;
        // Parsed again only to see whether `[upstream] url` is written (the
        // typed parse above cannot tell a default from a written value).
        config.upstream_given = config.routes.is_empty()
            || toml::from_str::<toml::Table>(text).is_ok_and(|t| {
                t.get("upstream")
                    .and_then(|u| u.as_table())
                    .is_some_and(|u| u.contains_key("url"))
            });
        for entry in &mut config.tls.certificates {
            entry.locate(text);
        }
        // By default http-01 is offered only when there is a plain listener.
        let challenges_written = toml::from_str::<toml::Table>(text).is_ok_and(|t| {
            t.get("acme")
                .and_then(|a| a.as_table())
                .is_some_and(|a| a.contains_key("challenges"))
        });
        if !challenges_written && config.listen.http.is_none() {
            config.acme.challenges.retain(|c| *c != ChallengeKind::Http01);
        }
        // `[acme] enabled = true`: every exact route host is a name too.
        if config.acme.enabled {
            for route in &config.routes {
                if let Some(HostPattern::Exact(host)) = &route.host {
                    let is_ip = host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok();
                    if !is_ip && !config.acme.names.contains(host) {
                        config.acme.names.push(host.clone());
                    }
                }
            }
        }
        config.validate(source)?;
        Ok(config)
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: source.clone(),
            position: None,
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        let mut config = Config::from_toml(&text, &source)?;
        config.acme.resolve_beside(path);
        Ok(config)
    }

    /// Cross-field checks that a single key's type cannot express.
    pub fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            source: source.to_string(),
            position: None,
            key: Some(key.to_string()),
            message,
        };
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return Err(err(
                    "tls.key",
                    "tls.cert is set but tls.key is empty; give both, or neither to use a generated development certificate".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "tls.cert",
                    "tls.key is set but tls.cert is empty; give both, or neither to use a generated development certificate".into(),
                ))
            }
            _ => {}
        }
        // With [[tls.certificate]] an empty list means: no development certificate.
        if self.tls.cert.is_none() && self.tls.self_signed_hosts.is_empty() && self.tls.certificates.is_empty() {
            return Err(err(
                "tls.self_signed_hosts",
                "no host names for the development certificate; expected e.g. [\"localhost\"]".into(),
            ));
        }
        for name in &self.tls.self_signed_hosts {
            if name.trim().is_empty() || name.contains(char::is_whitespace) {
                return Err(err(
                    "tls.self_signed_hosts",
                    format!("{name:?} is not a host name or IP address"),
                ));
            }
        }
        if let Some(http) = self.listen.http {
            if http == self.listen.https {
                return Err(err(
                    "listen.http",
                    format!("{http} is also the https listener; use another port, e.g. 8080"),
                ));
            }
        }
        if self.listen.proxy_protocol && self.forwarded.trusted_proxies.is_empty() {
            return Err(err(
                "listen.proxy_protocol",
                "is true but forwarded.trusted_proxies is empty, so every connection would be refused; list the load balancer's addresses there, e.g. [\"10.0.0.0/8\"]".into(),
            ));
        }
        if self.listen.proxy_protocol_timeout.is_zero() {
            return Err(err("listen.proxy_protocol_timeout", "must be greater than zero".into()));
        }
        for name in &self.cookies.http_only_except {
            if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == b'=' || b == b';' || b >= 0x7f) {
                return Err(err(
                    "cookies.http_only_except",
                    format!("{name:?} is not a cookie name"),
                ));
            }
        }
        let l = &self.limits;
        if l.max_request_header_bytes < 1024 {
            return Err(err(
                "limits.max_request_header_bytes",
                format!(
                    "{} is too small to hold a request; expected at least 1024",
                    l.max_request_header_bytes
                ),
            ));
        }
        if l.max_connections == 0 || l.max_concurrent_streams == 0 {
            return Err(err(
                "limits",
                "max_connections and max_concurrent_streams must be at least 1".into(),
            ));
        }
        for (key, d) in [
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.handshake_timeout", l.handshake_timeout),
            ("limits.header_read_timeout", l.header_read_timeout),
            ("limits.send_timeout", l.send_timeout),
        ] {
            if d.is_zero() {
                return Err(err(key, "must be greater than zero".into()));
            }
        }
        if let Some(admin) = self.admin.listen {
            // Port 0 = "any free port": never a clash.
            if admin.port() != 0 && (admin == self.listen.https || Some(admin) == self.listen.http) {
                return Err(err(
                    "admin.listen",
                    format!("{admin} is already used by another listener"),
                ));
            }
        }
        if self.upstream.connect_timeout.is_zero()
            || self.upstream.response_timeout.is_zero()
            || self.upstream.read_timeout.is_zero()
        {
            return Err(err("upstream", "timeouts must be greater than zero".into()));
        }
        route::validate(&self.routes, self.upstream_given).map_err(|(key, message)| err(&key, message))?;
        self.acme
            .validate(self.listen.http.is_some())
            .map_err(|(key, message)| err(&key, message))?;
        if self.acme.enabled && self.acme.names.is_empty() {
            return Err(err(
                "acme.enabled",
                "acme.enabled is true but acme.names is empty and no [[route]] has an exact host name; give names = [...] or route hosts".into(),
            ));
        }
        Ok(())
    }

    /// The port clients use for https, for redirects and X-Forwarded-Port,
    /// as configured (before binding: an ephemeral port 0 stays 0).
    pub fn public_https_port(&self) -> u16 {
        self.listen.public_port(self.listen.https.port())
    }

    /// Whether the development certificate is used (no cert/key configured).
    pub fn uses_dev_cert(&self) -> bool {
        self.tls.cert.is_none()
    }
}

/// Resolves which file to read, in the documented order, and reads it.
pub fn load(explicit: Option<&Path>) -> Result<(Config, Source), ConfigError> {
    let chosen = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => match std::env::var_os("TLSFRONT_CONFIG") {
            Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
            _ => {
                let default = PathBuf::from("config/tlsfront.toml");
                default.exists().then_some(default)
            }
        },
    };
    match chosen {
        Some(path) => Ok((Config::from_file(&path)?, Source::File(path))),
        None => Ok((Config::default(), Source::Defaults)),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    (line, col)
}

/// Turns serde/toml wording into a message a person understands, with a
/// "did you mean" for misspelt keys.
fn explain_toml_error(path: &str, message: &str) -> (Option<String>, String) {
    let message = message.trim();
    let path = (path != "." && !path.is_empty()).then(|| path.to_string());
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let key = match &path {
                Some(p) if p.ends_with(field) => p.clone(),
                Some(p) => format!("{p}.{field}"),
                None => field.to_string(),
            };
            let suggestion = known
                .iter()
                .map(|k| (strsim::jaro_winkler(field, k), *k))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, k)| format!("did you mean `{k}`? "))
                .unwrap_or_default();
            return (
                Some(key),
                format!(
                    "unknown key `{field}`; {suggestion}known keys here: {}",
                    known.join(", ")
                ),
            );
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((value, expected)) = rest.rsplit_once("`, expected") {
            let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            return (
                path,
                format!("{value:?} is not allowed; expected one of {}", known.join(", ")),
            );
        }
    }
    (
        path,
        message
            .split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_socket_addr(&s).map_err(de::Error::custom)
}

fn optional_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    parse_socket_addr(&s).map(Some).map_err(de::Error::custom)
}

/// Parses a listen address such as `0.0.0.0:8443`, `[::]:8443` or `localhost:8443`.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    if let Some(port) = s.strip_prefix(':') {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
        }
    }
    Err(format!(
        "{s:?} is not a listen address; expected IP:PORT like \"0.0.0.0:8443\" or \"[::]:8443\""
    ))
}

fn cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    items
        .iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    de::Error::custom(format!(
                        "{s:?} is not a CIDR or IP address; expected like \"10.0.0.0/8\", \"192.168.1.10\" or \"fd00::/8\""
                    ))
                })
        })
        .collect()
}

fn upstream_url<'de, D: Deserializer<'de>>(d: D) -> Result<UpstreamUrl, D::Error> {
    let s = String::deserialize(d)?;
    UpstreamUrl::parse(s.trim()).map_err(de::Error::custom)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(de::Error::custom)
}

/// Parses a human duration such as `5s`, `250ms` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); expected like \"5s\", \"250ms\" or \"2m\""))
}

fn optional_header_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HeaderValue>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(s.trim())
        .map(Some)
        .map_err(|_| de::Error::custom(format!("{s:?} is not a valid header value (visible ASCII expected)")))
}

fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.trim().as_bytes())
        .map_err(|_| format!("{s:?} is not a header name; expected like \"X-Frame-Options\""))
}

fn header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HeaderName>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| header_name(n).map_err(de::Error::custom))
        .collect()
}

fn header_table<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(HeaderName, HeaderValue)>, D::Error> {
    let table = std::collections::BTreeMap::<String, String>::deserialize(d)?;
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(table.len());
    for (name, value) in &table {
        let name = header_name(name).map_err(de::Error::custom)?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| de::Error::custom(format!("{value:?} is not a valid value for header {name}")))?;
        // Header names are case-insensitive: "X-A" and "x-a" are one header.
        if headers.iter().any(|(n, _)| *n == name) {
            return Err(de::Error::custom(format!(
                "header {name} is set twice (names are case-insensitive)"
            )));
        }
        headers.push((name, value));
    }
    headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    Ok(headers)
}

/// `[[tls.certificate]]` as written, with the offsets of its values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificateEntry {
    cert: toml::Spanned<PemPath>,
    key: toml::Spanned<PemPath>,
    #[serde(default)]
    names: Vec<toml::Spanned<CertificateName>>,
}

/// A non-empty file path (validated where it is written, for the position).
struct PemPath(PathBuf);

impl<'de> Deserialize<'de> for PemPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(de::Error::custom("is empty; expected the path of a PEM file"));
        }
        Ok(PemPath(PathBuf::from(s)))
    }
}

/// A name a certificate is chosen for, normalised.
struct CertificateName(String);

impl<'de> Deserialize<'de> for CertificateName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::certificates::parse_name(&s)
            .map(CertificateName)
            .map_err(de::Error::custom)
    }
}

fn certificate_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<CertificateEntry>, D::Error> {
    let raw = Vec::<RawCertificateEntry>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|e| {
            let mut offsets = vec![e.cert.span().start, e.key.span().start];
            offsets.extend(e.names.iter().map(|n| n.span().start));
            CertificateEntry {
                cert: e.cert.into_inner().0,
                key: e.key.into_inner().0,
                names: e.names.into_iter().map(|n| n.into_inner().0).collect(),
                positions: EntryPositions {
                    offsets,
                    ..EntryPositions::default()
                },
            }
        })
        .collect())
}

pub(crate) fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.trim().is_empty()).then(|| PathBuf::from(s)))
}

/// A TOML basic string: quotes, backslashes and control characters escaped,
/// everything else as it is (Rust's `{:?}` escapes differently).
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Config {
    /// The effective settings, as TOML a person could paste back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn path(p: &Option<PathBuf>) -> String {
            p.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
        }
        fn list<T: fmt::Display>(items: &[T]) -> String {
            let quoted: Vec<String> = items.iter().map(|i| toml_string(&i.to_string())).collect();
            format!("[{}]", quoted.join(", "))
        }
        fn dur(d: Duration) -> String {
            humantime::format_duration(d).to_string()
        }
        let l = &self.listen;
        writeln!(f, "[listen]")?;
        writeln!(f, "https = \"{}\"", l.https)?;
        writeln!(f, "http = \"{}\"", l.http.map(|a| a.to_string()).unwrap_or_default())?;
        writeln!(f, "https_public_port = {}", l.https_public_port)?;
        writeln!(f, "proxy_protocol = {}", l.proxy_protocol)?;
        writeln!(f, "proxy_protocol_timeout = \"{}\"", dur(l.proxy_protocol_timeout))?;
        let t = &self.tls;
        writeln!(f, "\n[tls]")?;
        writeln!(f, "cert = {}", toml_string(&path(&t.cert)))?;
        writeln!(f, "key = {}", toml_string(&path(&t.key)))?;
        writeln!(
            f,
            "self_signed_dir = {}",
            toml_string(&t.self_signed_dir.display().to_string())
        )?;
        writeln!(f, "self_signed_hosts = {}", list(&t.self_signed_hosts))?;
        writeln!(
            f,
            "min_version = \"{}\"",
            match t.min_version {
                TlsVersion::Tls12 => "1.2",
                TlsVersion::Tls13 => "1.3",
            }
        )?;
        for entry in &t.certificates {
            writeln!(f, "\n[[tls.certificate]]")?;
            writeln!(f, "cert = {}", toml_string(&entry.cert.display().to_string()))?;
            writeln!(f, "key = {}", toml_string(&entry.key.display().to_string()))?;
            writeln!(f, "names = {}", list(&entry.names))?;
        }
        let u = &self.upstream;
        writeln!(f, "\n[upstream]")?;
        // With routes, an unwritten url is no fallback: printing it would make one.
        if self.upstream_given || self.routes.is_empty() {
            writeln!(f, "url = \"{}\"", u.url)?;
        }
        writeln!(f, "connect_timeout = \"{}\"", dur(u.connect_timeout))?;
        writeln!(f, "response_timeout = \"{}\"", dur(u.response_timeout))?;
        writeln!(f, "read_timeout = \"{}\"", dur(u.read_timeout))?;
        writeln!(f, "pool_idle_timeout = \"{}\"", dur(u.pool_idle_timeout))?;
        writeln!(f, "pool_max_idle = {}", u.pool_max_idle)?;
        let w = &self.forwarded;
        writeln!(f, "\n[forwarded]")?;
        writeln!(f, "trusted_proxies = {}", list(&w.trusted_proxies))?;
        writeln!(f, "x_forwarded_for = {}", w.x_forwarded_for)?;
        writeln!(f, "x_forwarded_proto = {}", w.x_forwarded_proto)?;
        writeln!(f, "x_forwarded_host = {}", w.x_forwarded_host)?;
        writeln!(f, "x_forwarded_port = {}", w.x_forwarded_port)?;
        writeln!(f, "x_real_ip = {}", w.x_real_ip)?;
        writeln!(f, "forwarded = {}", w.forwarded)?;
        writeln!(
            f,
            "strip_untrusted = {}",
            list(&w.strip_untrusted.iter().map(|n| n.as_str()).collect::<Vec<_>>())
        )?;
        let c = &self.cookies;
        writeln!(f, "\n[cookies]")?;
        writeln!(f, "secure = {}", c.secure)?;
        writeln!(f, "http_only = {}", c.http_only)?;
        writeln!(f, "same_site = \"{}\"", format!("{:?}", c.same_site).to_lowercase())?;
        writeln!(f, "http_only_except = {}", list(&c.http_only_except))?;
        writeln!(f, "\n[redirects]")?;
        writeln!(f, "rewrite_location = {}", self.redirects.rewrite_location)?;
        writeln!(f, "\n[log]")?;
        writeln!(f, "level = \"{}\"", format!("{:?}", self.log.level).to_lowercase())?;
        writeln!(f, "access = \"{}\"", format!("{:?}", self.log.access).to_lowercase())?;
        writeln!(f, "format = \"{}\"", format!("{:?}", self.log.format).to_lowercase())?;
        let m = &self.limits;
        writeln!(f, "\n[limits]")?;
        writeln!(f, "max_request_header_bytes = {}", m.max_request_header_bytes)?;
        writeln!(f, "max_request_body_bytes = {}", m.max_request_body_bytes)?;
        writeln!(f, "idle_timeout = \"{}\"", dur(m.idle_timeout))?;
        writeln!(f, "max_connections = {}", m.max_connections)?;
        writeln!(f, "max_concurrent_streams = {}", m.max_concurrent_streams)?;
        writeln!(f, "max_pending_reset_streams = {}", m.max_pending_reset_streams)?;
        writeln!(f, "handshake_timeout = \"{}\"", dur(m.handshake_timeout))?;
        writeln!(f, "header_read_timeout = \"{}\"", dur(m.header_read_timeout))?;
        writeln!(f, "send_timeout = \"{}\"", dur(m.send_timeout))?;
        writeln!(f, "shutdown_timeout = \"{}\"", dur(m.shutdown_timeout))?;
        writeln!(f, "\n[admin]")?;
        writeln!(
            f,
            "listen = \"{}\"",
            self.admin.listen.map(|a| a.to_string()).unwrap_or_default()
        )?;
        let h = &self.headers;
        let value = |v: &HeaderValue| toml_string(&String::from_utf8_lossy(v.as_bytes()));
        let table = |items: &[(HeaderName, HeaderValue)]| {
            let inner: Vec<String> = items.iter().map(|(n, v)| format!("\"{n}\" = {}", value(v))).collect();
            format!("{{ {} }}", inner.join(", ")).replace("{  }", "{}")
        };
        writeln!(f, "\n[headers]")?;
        writeln!(
            f,
            "hsts = {}",
            h.hsts.as_ref().map(value).unwrap_or_else(|| "\"\"".into())
        )?;
        writeln!(
            f,
            "remove_response = {}",
            list(&h.remove_response.iter().map(|n| n.as_str()).collect::<Vec<_>>())
        )?;
        writeln!(f, "set_response = {}", table(&h.set_response))?;
        writeln!(f, "set_request = {}", table(&h.set_request))?;
        self.acme.write_toml(f, self.listen.http.is_some(), toml_string)?;
        if !self.routes.is_empty() {
            writeln!(f)?;
            route::display_routes(&self.routes, f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml")
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.https, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(c.listen.http, None);
        assert_eq!(c.upstream.url.to_string(), "http://127.0.0.1:8000");
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.upstream.response_timeout, Duration::from_secs(60));
        assert!(c.cookies.secure && c.cookies.http_only);
        assert_eq!(c.cookies.same_site, SameSite::Keep);
        assert!(c.forwarded.x_forwarded_for && !c.forwarded.forwarded && !c.forwarded.x_real_ip);
        assert_eq!(c.tls.min_version, TlsVersion::Tls12);
        assert!(c.uses_dev_cert());
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
[listen]
https = "127.0.0.1:9443"
http = "127.0.0.1:9080"
https_public_port = 443
[tls]
min_version = "1.3"
self_signed_hosts = ["example.test"]
[upstream]
url = "http://localhost:5000/"
connect_timeout = "250ms"
response_timeout = "2m"
[forwarded]
trusted_proxies = ["10.0.0.0/8", "::1/128"]
forwarded = true
[cookies]
same_site = "lax"
http_only_except = ["csrftoken"]
[redirects]
rewrite_location = false
"#,
        )
        .unwrap();
        assert_eq!(c.listen.http, Some("127.0.0.1:9080".parse().unwrap()));
        assert_eq!(c.public_https_port(), 443);
        assert_eq!(c.tls.min_version, TlsVersion::Tls13);
        assert_eq!(c.upstream.url.authority.as_str(), "localhost:5000");
        assert_eq!(c.upstream.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.upstream.response_timeout, Duration::from_secs(120));
        assert_eq!(c.forwarded.trusted_proxies.len(), 2);
        assert_eq!(c.cookies.same_site, SameSite::Lax);
        assert!(!c.redirects.rewrite_location);
    }

    #[test]
    fn unknown_key_has_position_and_suggestion() {
        let e = parse("[listen]\nhtps = \"0.0.0.0:1\"\n").unwrap_err();
        assert_eq!(e.position, Some((2, 1)));
        assert_eq!(e.key.as_deref(), Some("listen.htps"));
        assert!(e.message.contains("did you mean `https`"), "{e}");
        let shown = e.to_string();
        assert!(
            shown.contains("test.toml") && shown.contains("line 2, column 1"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_table_is_an_error() {
        let e = parse("[upstreams]\nurl = \"http://x:1\"\n").unwrap_err();
        assert!(e.message.contains("did you mean `upstream`"), "{e}");
    }

    #[test]
    fn bad_duration_names_key_and_expectation() {
        let e = parse("[upstream]\nconnect_timeout = \"5 parsecs\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("upstream.connect_timeout"));
        assert_eq!(e.position, Some((2, 19)));
        assert!(e.message.contains("expected like \"5s\""), "{e}");
    }

    #[test]
    fn bad_cidr_is_rejected() {
        let e = parse("[forwarded]\ntrusted_proxies = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(
            e.key.as_deref().unwrap().starts_with("forwarded.trusted_proxies"),
            "{e}"
        );
        assert_eq!(e.position.map(|p| p.0), Some(2));
    }

    #[test]
    fn bad_listen_and_upstream() {
        let e = parse("[listen]\nhttps = \"8443\"\n").unwrap_err();
        assert!(e.message.contains("expected IP:PORT"), "{e}");
        let e = parse("[upstream]\nurl = \"127.0.0.1:8000\"\n").unwrap_err();
        assert!(e.message.contains("http://"), "{e}");
        let e = parse("[upstream]\nurl = \"https://app:8000\"\n").unwrap_err();
        assert!(e.message.contains("not supported"), "{e}");
    }

    #[test]
    fn bad_enum_lists_choices() {
        let e = parse("[cookies]\nsame_site = \"sometimes\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("cookies.same_site"));
        assert!(e.message.contains("keep, lax, strict, none"), "{e}");
        let e = parse("[tls]\nmin_version = \"1.1\"\n").unwrap_err();
        assert!(e.message.contains("1.2, 1.3"), "{e}");
    }

    #[test]
    fn wrong_type_and_syntax() {
        let e = parse("[cookies]\nsecure = \"yes\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("cookies.secure"));
        assert_eq!(e.position, Some((2, 10)));
        let e = parse("[listen\nhttps = 1").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(1));
    }

    #[test]
    fn bad_headers_are_rejected() {
        let e = parse("[headers]\nremove_response = [\"Bad Name\"]\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("headers.remove_response"));
        let e = parse("[headers]\nset_response = { \"X-A\" = \"line\\nbreak\" }\n").unwrap_err();
        assert!(e.message.contains("X-A") || e.message.contains("x-a"), "{e}");
        let e = parse("[limits]\nmax_request_header_bytes = 10\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("limits.max_request_header_bytes"));
    }

    #[test]
    fn display_keeps_every_setting() {
        let text = "[limits]\nmax_connections = 512\nidle_timeout = \"5s\"\nmax_request_body_bytes = 1000\n\
                    [log]\naccess = \"json\"\nformat = \"json\"\n";
        let c = parse(text).unwrap();
        let again = parse(&c.to_string()).unwrap();
        assert_eq!(format!("{again:?}"), format!("{c:?}"));
    }

    #[test]
    fn fuzz_findings_stay_fixed() {
        // Display must print TOML that parses back to the same settings.
        for text in [
            "[tls]\nself_signed_hosts = [\"\\u0301\"]\n",
            "[tls]\nself_signed_dir = \"\\u0001\"\n",
            "[headers]\nset_response = { \"X-B\" = \"1\", \"a\" = \"2\" }\n",
        ] {
            let c = parse(text).unwrap();
            assert_eq!(parse(&c.to_string()).unwrap().to_string(), c.to_string(), "{text}");
        }
        // Case-insensitive duplicates are an error, not two headers.
        assert!(parse("[headers]\nset_response = { \"X-A\" = \"1\", \"x-a\" = \"2\" }\n").is_err());
        // Errors stay one line, whatever the key or value contains.
        for text in ["[listen]\n\"ht\\nps\" = 1\n", "[cookies]\nsame_site = \"x`a`\\n`b\"\n"] {
            let e = parse(text).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
        }
        let e = parse("[cookies]\nsame_site = \"x`a`b\"\n").unwrap_err();
        assert!(e.message.contains("keep, lax, strict, none"), "{e}");
    }

    #[test]
    fn proxy_protocol_needs_trusted_proxies() {
        let e = parse("[listen]\nproxy_protocol = true\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("listen.proxy_protocol"));
        assert!(e.message.contains("forwarded.trusted_proxies is empty"), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        let c = parse("[listen]\nproxy_protocol = true\nproxy_protocol_timeout = \"750ms\"\n[forwarded]\ntrusted_proxies = [\"10.0.0.0/8\"]\n")
            .unwrap();
        assert!(c.listen.proxy_protocol);
        assert_eq!(c.listen.proxy_protocol_timeout, Duration::from_millis(750));
        assert_eq!(parse(&c.to_string()).unwrap().to_string(), c.to_string());
        let e = parse("[listen]\nproxy_protocol_timeout = \"0s\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("listen.proxy_protocol_timeout"));
    }

    #[test]
    fn cert_without_key() {
        let e = parse("[tls]\ncert = \"a.pem\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls.key"));
    }

    /// The shipped file documents every key with its default: uncommenting
    /// all of them must parse and change nothing.
    #[test]
    fn shipped_config_documents_the_defaults() {
        let shipped = include_str!("../config/tlsfront.toml");
        assert_eq!(parse(shipped).unwrap().to_string(), Config::default().to_string());
        let uncommented: String = shipped
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
                {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed = parse(&uncommented).unwrap();
        assert_eq!(parsed.to_string(), Config::default().to_string());
        // Every documented key is in the effective settings (found by fuzzing:
        // keys missing there were reset to defaults when pasted back) ...
        let shown = Config::default().to_string();
        for line in shipped.lines() {
            if let Some((key, _)) = line.strip_prefix("# ").and_then(|l| l.split_once(" = ")) {
                if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    assert!(
                        shown.contains(&format!("\n{key} = ")),
                        "{key} is not printed by Display"
                    );
                }
            }
        }
        // ... and every key of the effective settings is documented.
        for line in Config::default().to_string().lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(uncommented.contains(&format!("\n{key} = ")), "{key} is not documented");
            }
        }
    }

    /// Every key a `[[route]]` can have is documented in the shipped file's
    /// route section (indented `#   key = ...` lines).
    #[test]
    fn shipped_config_documents_every_route_key() {
        let shipped = include_str!("../config/tlsfront.toml");
        let c = parse(
            "[[route]]\nhost = \"a.example\"\npath = \"/x\"\nurl = \"http://127.0.0.1:1\"\nconnect_timeout = \"1s\"\nresponse_timeout = \"1s\"\n",
        )
        .unwrap();
        let shown = c.to_string();
        let route = &shown[shown.find("[[route]]").unwrap()..];
        let mut keys: Vec<&str> = route
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
            .filter(|k| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .collect();
        keys.extend(["servers", "ca", "server_name"]);
        for key in keys {
            assert!(
                shipped.contains(&format!("#   {key} = ")),
                "route key {key} is not documented in config/tlsfront.toml"
            );
        }
        for table in ["cookies", "forwarded", "redirects", "headers"] {
            assert!(
                shipped.contains(&format!("#   [route.{table}]")),
                "[route.{table}] undocumented"
            );
        }
    }

    #[test]
    fn acme_enabled_takes_the_exact_route_hosts() {
        let c = parse(
            "[acme]\nenabled = true\nnames = [\"www.example.com\"]\n\
             [[route]]\nhost = \"App.Example.com\"\nurl = \"http://127.0.0.1:1\"\n\
             [[route]]\nhost = \"*.example.org\"\nurl = \"http://127.0.0.1:2\"\n\
             [[route]]\nhost = \"www.example.com\"\npath = \"/x\"\nurl = \"http://127.0.0.1:3\"\n",
        )
        .unwrap();
        assert_eq!(c.acme.names, ["www.example.com", "app.example.com"]);
        assert!(c.acme.active());
        let again = parse(&c.to_string()).unwrap();
        assert_eq!(again.acme.names, c.acme.names);
        let e = parse("[acme]\nenabled = true\n[[route]]\nhost = \"*.example.org\"\nurl = \"http://127.0.0.1:2\"\n")
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("acme.enabled"), "{e}");
        let off = parse("[[route]]\nhost = \"a.example\"\nurl = \"http://127.0.0.1:2\"\n").unwrap();
        assert!(!off.acme.active());
    }

    #[test]
    fn acme_keys_are_checked() {
        let c = parse("[acme]\nnames = [\"A.Example.com.\"]\n").unwrap();
        assert_eq!(c.acme.names, ["a.example.com"]);
        assert_eq!(c.acme.directory_url(), LETSENCRYPT);
        assert_eq!(
            c.acme.challenges,
            [ChallengeKind::TlsAlpn01],
            "no http-01 without listen.http"
        );
        let c = parse("[listen]\nhttp = \"127.0.0.1:8080\"\n[acme]\nnames = [\"a.example.com\"]\ndirectory = \"letsencrypt-staging\"\n").unwrap();
        assert_eq!(c.acme.challenges, [ChallengeKind::TlsAlpn01, ChallengeKind::Http01]);
        assert_eq!(c.acme.directory_url(), LETSENCRYPT_STAGING);
        for (text, key, words) in [
            ("names = [\"*.example.com\"]", "acme.names", "dns-01"),
            ("names = [\"a.example.com\", \"A.example.com\"]", "acme.names", "twice"),
            ("names = [\"127.0.0.1\"]", "acme.names", "IP address"),
            (
                "names = [\"a.example.com\"]\nchallenges = [\"http-01\"]",
                "acme.challenges",
                "listen.http",
            ),
            (
                "names = [\"a.example.com\"]\nchallenges = []",
                "acme.challenges",
                "empty",
            ),
            ("challenges = [\"dns-01\"]", "acme.challenges", "tls-alpn-01"),
            (
                "directory = \"letsencrypt-prod\"",
                "acme.directory",
                "letsencrypt-staging",
            ),
            ("eab_kid = \"k\"", "acme.eab_hmac_key", "both"),
            (
                "eab_kid = \"k\"\neab_hmac_key = \"not base64!\"",
                "acme.eab_hmac_key",
                "base64url",
            ),
            ("email = \"nobody\"", "acme.email", "email"),
            ("renew_before = \"0s\"", "acme.renew_before", "greater than zero"),
        ] {
            let e = parse(&format!("[acme]\n{text}\n")).unwrap_err();
            assert!(e.key.as_deref().is_some_and(|k| k.starts_with(key)), "{text}: {e}");
            assert!(e.to_string().contains(words), "{text}: {e}");
        }
        // storage defaults to acme/ beside the config file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tlsfront.toml");
        std::fs::write(&file, "[acme]\nnames = [\"a.example.com\"]\n").unwrap();
        assert_eq!(
            Config::from_file(&file).unwrap().acme.storage_dir(),
            dir.path().join("acme")
        );
    }

    #[test]
    fn display_round_trips() {
        let c = parse("[cookies]\nsame_site = \"strict\"\n[forwarded]\ntrusted_proxies=[\"10.0.0.0/8\"]").unwrap();
        let again = parse(&c.to_string()).unwrap();
        assert_eq!(again.cookies.same_site, SameSite::Strict);
        assert_eq!(again.forwarded.trusted_proxies, c.forwarded.trusted_proxies);
        assert_eq!(again.to_string(), c.to_string());

        // Routes with HTTP/2 and TLS servers, and their ca and server_name.
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("upstream ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
        let text = format!(
            "[[route]]\nhost = \"api.example\"\nurl = \"h2c://127.0.0.1:50051\"\n\
             [[route]]\nhost = \"app.example\"\nservers = [\"https://10.0.0.5\", \"https://[::1]:8443\"]\n\
             ca = {}\nserver_name = \"app.internal\"\n",
            toml_string(&ca.display().to_string())
        );
        let c = parse(&text).unwrap();
        let shown = c.to_string();
        for line in [
            "url = \"h2c://127.0.0.1:50051\"",
            "servers = [\"https://10.0.0.5:443\", \"https://[::1]:8443\"]",
            "server_name = \"app.internal\"",
        ] {
            assert!(shown.contains(line), "{line} missing from:\n{shown}");
        }
        assert!(shown.contains(&format!("ca = {}", toml_string(&ca.display().to_string()))));
        let again = parse(&shown).unwrap();
        assert_eq!(again.to_string(), shown);
        assert_eq!(again.routes[1].ca.as_ref().map(|c| c.roots.len()), Some(1));
    }

    #[test]
    fn server_url_schemes() {
        for (url, shown) in [
            ("http://a:1", "http://a:1"),
            ("h2c://a", "h2c://a:80"),
            ("https://a", "https://a:443"),
            ("https://127.0.0.1:8443/", "https://127.0.0.1:8443"),
            ("unix:/run/app.sock", "unix:/run/app.sock"),
        ] {
            assert_eq!(ServerUrl::parse(url).unwrap().to_string(), shown, "{url}");
        }
        assert!(matches!(ServerUrl::parse("h2c://a:1"), Ok(ServerUrl::H2c(_))));
        assert!(matches!(ServerUrl::parse("https://a:1"), Ok(ServerUrl::Https(_))));
        for bad in ["ftp://a", "https://a/x", "h2c://", "https://u@a"] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
        // [upstream] url stays http:// only, and says where the others go.
        let e = UpstreamUrl::parse("h2c://a:1").unwrap_err();
        assert!(e.contains("[[route]]"), "{e}");
    }

    #[test]
    fn certificate_entries_parse_with_positions() {
        let text = "[tls]\nmin_version = \"1.3\"\n\n[[tls.certificate]]\ncert = \"a.pem\"\nkey = \"a-key.pem\"\nnames = [\"A.Test.\", \"*.w.test\"]\n\n[[tls.certificate]]\ncert = \"b.pem\"\nkey = \"b-key.pem\"\n";
        let c = parse(text).unwrap();
        let [a, b] = &c.tls.certificates[..] else {
            panic!("two entries expected: {:?}", c.tls.certificates)
        };
        assert_eq!(a.cert, PathBuf::from("a.pem"));
        assert_eq!(a.names, ["a.test", "*.w.test"], "names are normalised");
        assert_eq!(a.positions.cert, Some((5, 8)));
        assert_eq!(a.positions.key, Some((6, 7)));
        assert_eq!(a.positions.names, [Some((7, 10)), Some((7, 21))]);
        assert!(b.names.is_empty());
        assert_eq!(b.positions.cert, Some((10, 8)));
        // Display prints them back as [[tls.certificate]] tables.
        let shown = c.to_string();
        let again = parse(&shown).unwrap();
        assert_eq!(again.to_string(), shown);
        assert_eq!(
            format!("{again:?}"),
            format!("{c:?}"),
            "same settings, wherever written"
        );
        assert_eq!(again.tls.certificates.len(), 2);
        // Without cert/key, an empty self_signed_hosts turns the development certificate off.
        parse("[tls]\nself_signed_hosts = []\n[[tls.certificate]]\ncert = \"a\"\nkey = \"b\"\n").unwrap();
    }

    #[test]
    fn bad_certificate_entries_name_the_key_and_position() {
        let cases: &[(&str, &str, (usize, usize), &str)] = &[
            (
                "[[tls.certificate]]\ncert = \"a.pem\"\nkey = \"k\"\nnames = [\"ok.test\", \"bad name\"]\n",
                "tls.certificate[0].names[1]",
                // toml reports an element's own error at its array.
                (4, 9),
                "not a host name",
            ),
            (
                "[[tls.certificate]]\ncert = \"\"\nkey = \"k\"\n",
                "tls.certificate[0].cert",
                (2, 8),
                "is empty",
            ),
            (
                "[tls]\ncertificate = [{cert = \"a\", key = \"b\", names = [\"10.0.0.1\"]}]\n",
                "tls.certificate[0].names[0]",
                (2, 48),
                "IP address",
            ),
            (
                "[[tls.certificate]]\ncert = \"a\"\nkey = \"b\"\nnames = [\"*.*.x\"]\n",
                "tls.certificate[0].names[0]",
                (4, 9),
                "whole first label",
            ),
            (
                "[[tls.certificate]]\ncert = \"a.pem\"\nkey = \"k\"\nnmes = []\n",
                "tls.certificate[0].nmes",
                (4, 1),
                "did you mean `names`",
            ),
        ];
        for (text, key, position, needle) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(*key), "{e}");
            assert_eq!(e.position, Some(*position), "{e}");
            assert!(e.message.contains(needle), "{e}");
        }
    }
}
