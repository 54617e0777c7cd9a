//! What tlsfront does *for* the app: `[compression]`, `[access]`,
//! `[auth]` and `[rate_limit]`, at top level and as overrides in each
//! `[[route]]` (each key written in a route replaces the top-level one).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::header::HeaderName;
use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::servers::ServerUrl;
use super::values::{cidr_list, duration, header_names, toml_string};

/// A content coding tlsfront can compress with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Coding {
    /// Zstandard (RFC 8878).
    #[serde(rename = "zstd")]
    Zstd,
    /// Brotli (RFC 7932).
    #[serde(rename = "br")]
    Brotli,
    /// gzip (RFC 1952).
    #[serde(rename = "gzip")]
    Gzip,
}

impl Coding {
    /// Every coding, in the default order of preference.
    pub const ALL: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

    /// The token of `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }
}

impl fmt::Display for Coding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// `[compression]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Compression {
    /// Compress eligible responses.
    pub enabled: bool,
    /// Codings offered, in tlsfront's order of preference.
    pub algorithms: Vec<Coding>,
    /// Media types compressed: `type/subtype`, `type/*`, or a `+suffix`.
    #[serde(deserialize_with = "media_types")]
    pub types: Vec<String>,
    /// A response whose known length is below this is sent as is.
    pub min_bytes: u64,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            enabled: true,
            algorithms: Coding::ALL.to_vec(),
            types: [
                "text/html",
                "text/css",
                "text/plain",
                "text/javascript",
                "application/javascript",
                "application/json",
                "application/xml",
                "image/svg+xml",
                "+json",
                "+xml",
            ]
            .map(String::from)
            .to_vec(),
            min_bytes: 1024,
        }
    }
}

/// `[access]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Access {
    /// Client networks allowed; empty = every client.
    #[serde(deserialize_with = "cidr_list")]
    pub allow: Vec<IpNet>,
    /// Client networks refused (wins over `allow`).
    #[serde(deserialize_with = "cidr_list")]
    pub deny: Vec<IpNet>,
}

/// `auth.forward` as written: the auth service and the path in its URL.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardUrl {
    /// The server (`http://`, `https://` or `unix:`).
    pub server: ServerUrl,
    /// The URL's path and query, if it has one.
    pub path: Option<String>,
    written: String,
}

impl fmt::Display for ForwardUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// Where forward auth asks.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthService {
    /// The server (`http://`, `https://` or `unix:`).
    pub server: ServerUrl,
    /// The path and query asked for.
    pub path: String,
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// htpasswd file of basic auth; none = off.
    #[serde(deserialize_with = "optional_file")]
    pub basic: Option<PathBuf>,
    /// The realm named in `WWW-Authenticate`.
    #[serde(deserialize_with = "realm")]
    pub realm: String,
    /// The auth service of forward auth; none = off.
    #[serde(deserialize_with = "optional_auth_url")]
    pub forward: Option<ForwardUrl>,
    /// Path asked of the auth service; empty = the URL's own (`/` for `unix:`).
    #[serde(deserialize_with = "forward_path")]
    pub forward_path: String,
    /// Headers copied from a 2xx auth answer onto the request (and always
    /// removed from the client's).
    #[serde(deserialize_with = "header_names")]
    pub copy_headers: Vec<HeaderName>,
    /// Basic auth: pass the client's `Authorization` on to the app.
    pub forward_authorization: bool,
    /// Time the auth service may take.
    #[serde(deserialize_with = "duration")]
    pub forward_timeout: Duration,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            basic: None,
            realm: "tlsfront".into(),
            forward: None,
            forward_path: String::new(),
            copy_headers: Vec::new(),
            forward_authorization: false,
            forward_timeout: Duration::from_secs(5),
        }
    }
}

impl Auth {
    /// Where forward auth asks, when on.
    pub fn service(&self) -> Option<AuthService> {
        self.forward.as_ref().map(|url| AuthService {
            server: url.server.clone(),
            path: if self.forward_path.is_empty() {
                url.path.clone().unwrap_or_else(|| "/".into())
            } else {
                self.forward_path.clone()
            },
        })
    }
}

/// What a rate limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RateKey {
    /// The client's address (IPv6 by its /64).
    #[serde(rename = "client_ip")]
    ClientIp,
}

/// `[rate_limit]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// Requests allowed per `per`; 0 = off.
    pub requests: u32,
    /// The period of `requests`.
    #[serde(deserialize_with = "duration")]
    pub per: Duration,
    /// Requests allowed back to back; 0 = `requests`.
    pub burst: u32,
    /// What is counted.
    pub key: RateKey,
    /// Client addresses tracked at once.
    pub max_clients: usize,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            requests: 0,
            per: Duration::from_secs(1),
            burst: 0,
            key: RateKey::ClientIp,
            max_clients: 100_000,
        }
    }
}

impl RateLimit {
    /// Whether requests are limited.
    pub fn enabled(&self) -> bool {
        self.requests > 0
    }

    /// Requests allowed back to back.
    pub fn effective_burst(&self) -> u32 {
        if self.burst == 0 {
            self.requests
        } else {
            self.burst
        }
    }
}

/// `[route.compression]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionOverride {
    /// `compression.enabled`
    pub enabled: Option<bool>,
    /// `compression.algorithms`
    pub algorithms: Option<Vec<Coding>>,
    /// `compression.types`
    #[serde(default, deserialize_with = "optional_media_types")]
    pub types: Option<Vec<String>>,
    /// `compression.min_bytes`
    pub min_bytes: Option<u64>,
}

impl CompressionOverride {
    /// The top-level settings with this route's changes.
    pub fn apply(&self, base: &Compression) -> Compression {
        Compression {
            enabled: self.enabled.unwrap_or(base.enabled),
            algorithms: self.algorithms.clone().unwrap_or_else(|| base.algorithms.clone()),
            types: self.types.clone().unwrap_or_else(|| base.types.clone()),
            min_bytes: self.min_bytes.unwrap_or(base.min_bytes),
        }
    }

    /// The keys written, as TOML lines.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(v) = self.enabled {
            lines.push(format!("enabled = {v}"));
        }
        if let Some(v) = &self.algorithms {
            lines.push(format!("algorithms = {}", quoted(v)));
        }
        if let Some(v) = &self.types {
            lines.push(format!("types = {}", quoted(v)));
        }
        if let Some(v) = self.min_bytes {
            lines.push(format!("min_bytes = {v}"));
        }
        lines
    }
}

/// `[route.access]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessOverride {
    /// `access.allow`
    #[serde(default, deserialize_with = "optional_cidr_list")]
    pub allow: Option<Vec<IpNet>>,
    /// `access.deny`
    #[serde(default, deserialize_with = "optional_cidr_list")]
    pub deny: Option<Vec<IpNet>>,
}

impl AccessOverride {
    /// The top-level settings with this route's changes.
    pub fn apply(&self, base: &Access) -> Access {
        Access {
            allow: self.allow.clone().unwrap_or_else(|| base.allow.clone()),
            deny: self.deny.clone().unwrap_or_else(|| base.deny.clone()),
        }
    }

    /// The keys written, as TOML lines.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(v) = &self.allow {
            lines.push(format!("allow = {}", quoted(v)));
        }
        if let Some(v) = &self.deny {
            lines.push(format!("deny = {}", quoted(v)));
        }
        lines
    }
}

/// `[route.auth]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthOverride {
    /// `auth.basic` (`""` turns auth off for this route)
    #[serde(default, deserialize_with = "optional_optional_file")]
    pub basic: Option<Option<PathBuf>>,
    /// `auth.realm`
    #[serde(default, deserialize_with = "optional_realm")]
    pub realm: Option<String>,
    /// `auth.forward` (`""` turns auth off for this route)
    #[serde(default, deserialize_with = "optional_optional_auth_url")]
    pub forward: Option<Option<ForwardUrl>>,
    /// `auth.forward_path`
    #[serde(default, deserialize_with = "optional_forward_path")]
    pub forward_path: Option<String>,
    /// `auth.copy_headers`
    #[serde(default, deserialize_with = "optional_header_names")]
    pub copy_headers: Option<Vec<HeaderName>>,
    /// `auth.forward_authorization`
    pub forward_authorization: Option<bool>,
    /// `auth.forward_timeout`
    #[serde(default, deserialize_with = "optional_duration")]
    pub forward_timeout: Option<Duration>,
}

impl AuthOverride {
    /// The top-level settings with this route's changes. Naming one method
    /// in a route replaces the top-level one, whichever it was.
    pub fn apply(&self, base: &Auth) -> Auth {
        let mut a = base.clone();
        if self.basic.is_some() || self.forward.is_some() {
            a.basic = self.basic.clone().flatten();
            a.forward = self.forward.clone().flatten();
        }
        if let Some(v) = &self.realm {
            a.realm = v.clone();
        }
        if let Some(v) = &self.forward_path {
            a.forward_path = v.clone();
        }
        if let Some(v) = &self.copy_headers {
            a.copy_headers = v.clone();
        }
        if let Some(v) = self.forward_authorization {
            a.forward_authorization = v;
        }
        if let Some(v) = self.forward_timeout {
            a.forward_timeout = v;
        }
        a
    }

    /// The keys written, as TOML lines.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(v) = &self.basic {
            lines.push(format!("basic = {}", toml_string(&path_text(v))));
        }
        if let Some(v) = &self.realm {
            lines.push(format!("realm = {}", toml_string(v)));
        }
        if let Some(v) = &self.forward {
            let url = v.as_ref().map(ToString::to_string).unwrap_or_default();
            lines.push(format!("forward = {}", toml_string(&url)));
        }
        if let Some(v) = &self.forward_path {
            lines.push(format!("forward_path = {}", toml_string(v)));
        }
        if let Some(v) = &self.copy_headers {
            lines.push(format!("copy_headers = {}", quoted(v)));
        }
        if let Some(v) = self.forward_authorization {
            lines.push(format!("forward_authorization = {v}"));
        }
        if let Some(v) = self.forward_timeout {
            lines.push(format!("forward_timeout = \"{}\"", humantime::format_duration(v)));
        }
        lines
    }
}

/// `[route.rate_limit]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitOverride {
    /// `rate_limit.requests`
    pub requests: Option<u32>,
    /// `rate_limit.per`
    #[serde(default, deserialize_with = "optional_duration")]
    pub per: Option<Duration>,
    /// `rate_limit.burst`
    pub burst: Option<u32>,
    /// `rate_limit.key`
    pub key: Option<RateKey>,
    /// `rate_limit.max_clients`
    pub max_clients: Option<usize>,
}

impl RateLimitOverride {
    /// Whether the route has its own limit (and so its own counters).
    pub fn written(&self) -> bool {
        *self != RateLimitOverride::default()
    }

    /// The top-level settings with this route's changes.
    pub fn apply(&self, base: &RateLimit) -> RateLimit {
        RateLimit {
            requests: self.requests.unwrap_or(base.requests),
            per: self.per.unwrap_or(base.per),
            burst: self.burst.unwrap_or(base.burst),
            key: self.key.unwrap_or(base.key),
            max_clients: self.max_clients.unwrap_or(base.max_clients),
        }
    }

    /// The keys written, as TOML lines.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(v) = self.requests {
            lines.push(format!("requests = {v}"));
        }
        if let Some(v) = self.per {
            lines.push(format!("per = \"{}\"", humantime::format_duration(v)));
        }
        if let Some(v) = self.burst {
            lines.push(format!("burst = {v}"));
        }
        if self.key.is_some() {
            lines.push("key = \"client_ip\"".into());
        }
        if let Some(v) = self.max_clients {
            lines.push(format!("max_clients = {v}"));
        }
        lines
    }
}

/// Writes the four top-level tables as TOML.
pub fn display(f: &mut fmt::Formatter<'_>, c: &Compression, a: &Access, auth: &Auth, r: &RateLimit) -> fmt::Result {
    writeln!(f, "\n[compression]")?;
    writeln!(f, "enabled = {}", c.enabled)?;
    writeln!(f, "algorithms = {}", quoted(&c.algorithms))?;
    writeln!(f, "types = {}", quoted(&c.types))?;
    writeln!(f, "min_bytes = {}", c.min_bytes)?;
    writeln!(f, "\n[access]")?;
    writeln!(f, "allow = {}", quoted(&a.allow))?;
    writeln!(f, "deny = {}", quoted(&a.deny))?;
    writeln!(f, "\n[auth]")?;
    writeln!(f, "basic = {}", toml_string(&path_text(&auth.basic)))?;
    writeln!(f, "realm = {}", toml_string(&auth.realm))?;
    let forward = auth.forward.as_ref().map(ToString::to_string).unwrap_or_default();
    writeln!(f, "forward = {}", toml_string(&forward))?;
    writeln!(f, "forward_path = {}", toml_string(&auth.forward_path))?;
    writeln!(f, "copy_headers = {}", quoted(&auth.copy_headers))?;
    writeln!(f, "forward_authorization = {}", auth.forward_authorization)?;
    writeln!(
        f,
        "forward_timeout = \"{}\"",
        humantime::format_duration(auth.forward_timeout)
    )?;
    writeln!(f, "\n[rate_limit]")?;
    writeln!(f, "requests = {}", r.requests)?;
    writeln!(f, "per = \"{}\"", humantime::format_duration(r.per))?;
    writeln!(f, "burst = {}", r.burst)?;
    writeln!(f, "key = \"client_ip\"")?;
    writeln!(f, "max_clients = {}", r.max_clients)
}

/// The checks of one effective set of protections; `table` prefixes the
/// keys (`""` at top level, `route[2].` in a route).
pub fn validate(
    table: &str,
    c: &Compression,
    auth: &Auth,
    copy_written: bool,
    r: &RateLimit,
) -> Result<(), (String, String)> {
    let key = |k: &str| format!("{table}{k}");
    if c.enabled && c.algorithms.is_empty() {
        return Err((
            key("compression.algorithms"),
            "is empty; expected e.g. [\"zstd\", \"br\", \"gzip\"], or enabled = false".into(),
        ));
    }
    for (i, a) in c.algorithms.iter().enumerate() {
        if c.algorithms[..i].contains(a) {
            return Err((key("compression.algorithms"), format!("lists \"{a}\" twice")));
        }
    }
    if auth.basic.is_some() && auth.forward.is_some() {
        return Err((
            key("auth.forward"),
            "basic and forward are both set; an [auth] table uses one of them".into(),
        ));
    }
    // Inherited names are harmless on a route without forward auth (they are
    // still removed from clients' requests); written ones are a mistake.
    if copy_written && auth.forward.is_none() && !auth.copy_headers.is_empty() {
        return Err((
            key("auth.copy_headers"),
            "only applies with forward auth (auth.forward = \"http://...\")".into(),
        ));
    }
    if let Some(name) = auth.copy_headers.iter().find(|n| FRAMING.contains(&n.as_str())) {
        return Err((
            key("auth.copy_headers"),
            format!("{name:?} frames or routes the request; it cannot come from the auth service"),
        ));
    }
    if auth.forward_timeout.is_zero() {
        return Err((key("auth.forward_timeout"), "must be greater than zero".into()));
    }
    if r.enabled() {
        if r.per.is_zero() {
            return Err((key("rate_limit.per"), "must be greater than zero, e.g. \"1m\"".into()));
        }
        if r.max_clients == 0 {
            return Err((key("rate_limit.max_clients"), "must be at least 1".into()));
        }
    }
    Ok(())
}

/// Fields that frame or route a request: never copied from an auth answer.
const FRAMING: [&str; 11] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "expect",
    "content-encoding",
];

fn path_text(p: &Option<PathBuf>) -> String {
    p.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
}

fn quoted<T: fmt::Display>(items: &[T]) -> String {
    let q: Vec<String> = items.iter().map(|i| toml_string(&i.to_string())).collect();
    format!("[{}]", q.join(", "))
}

fn media_types<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    items
        .into_iter()
        .map(|s| {
            let t = s.trim().to_ascii_lowercase();
            let token = |p: &str| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
            };
            let ok = match t.split_once('/') {
                Some((ty, "*")) => token(ty),
                Some((ty, sub)) => token(ty) && token(sub),
                None => t.strip_prefix('+').is_some_and(token),
            };
            if ok {
                Ok(t)
            } else {
                Err(de::Error::custom(format!(
                    "{s:?} is not a media type; expected like \"text/html\", \"text/*\" or \"+json\""
                )))
            }
        })
        .collect()
}

fn optional_media_types<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    media_types(d).map(Some)
}

fn optional_cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<IpNet>>, D::Error> {
    cidr_list(d).map(Some)
}

fn optional_header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<HeaderName>>, D::Error> {
    header_names(d).map(Some)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn optional_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.trim().is_empty()).then(|| PathBuf::from(s.trim())))
}

fn optional_optional_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<PathBuf>>, D::Error> {
    optional_file(d).map(Some)
}

fn realm<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty()
        || s.chars()
            .any(|c| c == '"' || c == '\\' || c.is_control() || !c.is_ascii())
    {
        return Err(de::Error::custom(format!(
            "{s:?}: a realm is printable ASCII without quotes or backslashes, e.g. \"tlsfront\""
        )));
    }
    Ok(s)
}

fn optional_realm<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    realm(d).map(Some)
}

/// Parses an auth service URL: `http://host:port/path`, `https://...`, or
/// `unix:/path.sock`; the path goes into `forward_path` unless written there.
fn optional_auth_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ForwardUrl>, D::Error> {
    let s = String::deserialize(d)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    parse_auth_url(s)
        .map(|(server, path)| {
            Some(ForwardUrl {
                server,
                path,
                written: s.to_string(),
            })
        })
        .map_err(de::Error::custom)
}

fn optional_optional_auth_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<ForwardUrl>>, D::Error> {
    optional_auth_url(d).map(Some)
}

/// Splits an auth service URL into its server and its path and query.
pub fn parse_auth_url(s: &str) -> Result<(ServerUrl, Option<String>), String> {
    if s.starts_with("unix:") {
        return ServerUrl::parse(s).map(|u| (u, None));
    }
    let uri: http::Uri = s
        .parse()
        .map_err(|_| format!("{s:?} is not a URL; expected like \"http://127.0.0.1:9091/api/verify\""))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!(
            "{s:?} is not an absolute URL; expected like \"http://127.0.0.1:9091/api/verify\""
        ));
    };
    if !matches!(scheme, "http" | "https") {
        return Err(format!(
            "{s:?}: an auth service is reached by http://, https:// or unix:"
        ));
    }
    let server = ServerUrl::parse(&format!("{scheme}://{authority}"))?;
    let path = uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .filter(|p| p != "/" && !p.is_empty());
    Ok((server, path))
}

fn forward_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(String::new());
    }
    match s.parse::<http::uri::PathAndQuery>() {
        Ok(pq) if s.starts_with('/') => Ok(pq.as_str().to_string()),
        _ => Err(de::Error::custom(format!(
            "{s:?} is not a request path; expected like \"/api/verify\""
        ))),
    }
}

fn optional_forward_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    forward_path(d).map(Some)
}
