//! `[[route]]` tables: several apps behind one listener.
//!
//! Parsed once into typed values (host patterns, normalised path prefixes,
//! server addresses, policy overrides); `routes::RouteTable` is built from
//! them per configuration generation.

use std::fmt;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use rustls_pki_types::ServerName;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::policy::{Cookies, Forwarded, Headers, Redirects, SameSite};
use super::protect::{AccessOverride, AuthOverride, CompressionOverride, RateLimitOverride};
use super::servers::{
    optional_ca_file, optional_server_name, optional_server_url, server_urls, Balance, CaFile, ServerUrl, Sticky,
};
use super::values::{cidr_list, duration, header_names, header_table, optional_header_value, toml_string};

/// One `[[route]]`: which requests (host, path prefix) go to which servers,
/// with which policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Exact host (`app.example.com`) or one-label wildcard (`*.example.com`); none = any host.
    #[serde(default, deserialize_with = "optional_host_pattern")]
    pub host: Option<HostPattern>,
    /// Path prefix matched on whole segments; none = every path.
    #[serde(default, deserialize_with = "optional_path_prefix")]
    pub path: Option<PathPrefix>,
    /// Remove `path` before forwarding; put it back where the app leaks the unprefixed path.
    #[serde(default)]
    pub strip_prefix: bool,
    /// One server (shorthand for `servers = [url]`).
    #[serde(default, deserialize_with = "optional_server_url")]
    pub url: Option<ServerUrl>,
    /// Several servers sharing the route's traffic.
    #[serde(default, deserialize_with = "server_urls")]
    pub servers: Vec<ServerUrl>,
    /// PEM file of the CA(s) that `https://` servers' certificates must chain
    /// to, instead of the system roots.
    #[serde(default, deserialize_with = "optional_ca_file")]
    pub ca: Option<CaFile>,
    /// Name sent as SNI and verified in `https://` servers' certificates,
    /// instead of the URL's host (for servers reached by IP address).
    #[serde(default, deserialize_with = "optional_server_name")]
    pub server_name: Option<ServerName<'static>>,
    /// How a server is picked.
    #[serde(default)]
    pub balance: Balance,
    /// Session affinity.
    #[serde(default)]
    pub sticky: Sticky,
    /// Name of the affinity cookie.
    #[serde(default = "default_sticky_cookie")]
    pub sticky_cookie: String,
    /// Active health check path (`GET`, 2xx/3xx = healthy); none = off.
    #[serde(default, deserialize_with = "optional_health_path")]
    pub health_path: Option<String>,
    /// Time between active health checks of one server.
    #[serde(default = "default_health_interval", deserialize_with = "duration")]
    pub health_interval: Duration,
    /// Time a health check may take.
    #[serde(default = "default_health_timeout", deserialize_with = "duration")]
    pub health_timeout: Duration,
    /// Consecutive passing checks that bring a server back.
    #[serde(default = "default_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failing checks that take a server out.
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: u32,
    /// Passive health: consecutive failures (connect errors or `fail_statuses`) that eject a server.
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    /// Response statuses that count as a failure for passive health.
    #[serde(default)]
    pub fail_statuses: Vec<u16>,
    /// First ejection period; doubles on each ejection in a row (up to 32×), resets on success.
    #[serde(default = "default_eject_time", deserialize_with = "duration")]
    pub eject_time: Duration,
    /// Overrides `upstream.connect_timeout` for this route.
    #[serde(default, deserialize_with = "optional_duration")]
    pub connect_timeout: Option<Duration>,
    /// Overrides `upstream.response_timeout` for this route.
    #[serde(default, deserialize_with = "optional_duration")]
    pub response_timeout: Option<Duration>,
    /// Overrides `upstream.read_timeout` for this route.
    #[serde(default, deserialize_with = "optional_duration")]
    pub read_timeout: Option<Duration>,
    /// Overrides `upstream.pool_idle_timeout` for this route.
    #[serde(default, deserialize_with = "optional_duration")]
    pub pool_idle_timeout: Option<Duration>,
    /// Overrides `upstream.pool_max_idle` for this route.
    #[serde(default)]
    pub pool_max_idle: Option<usize>,
    /// `[route.cookies]`: overrides of `[cookies]`.
    #[serde(default)]
    pub cookies: CookiesOverride,
    /// `[route.forwarded]`: overrides of `[forwarded]`.
    #[serde(default)]
    pub forwarded: ForwardedOverride,
    /// `[route.redirects]`: overrides of `[redirects]`.
    #[serde(default)]
    pub redirects: RedirectsOverride,
    /// `[route.headers]`: overrides of `[headers]`.
    #[serde(default)]
    pub headers: HeadersOverride,
    /// `[route.compression]`: overrides of `[compression]`.
    #[serde(default)]
    pub compression: CompressionOverride,
    /// `[route.access]`: overrides of `[access]`.
    #[serde(default)]
    pub access: AccessOverride,
    /// `[route.auth]`: overrides of `[auth]`.
    #[serde(default)]
    pub auth: AuthOverride,
    /// `[route.rate_limit]`: overrides of `[rate_limit]` (with counters of its own).
    #[serde(default)]
    pub rate_limit: RateLimitOverride,
}

fn default_sticky_cookie() -> String {
    "tlsfront_server".into()
}
fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_threshold() -> u32 {
    2
}
fn default_max_fails() -> u32 {
    3
}
fn default_eject_time() -> Duration {
    Duration::from_secs(10)
}

impl Route {
    /// The servers of this route, `url` first.
    pub fn all_servers(&self) -> Vec<ServerUrl> {
        self.url.iter().chain(self.servers.iter()).cloned().collect()
    }

    /// A short description for messages: `app.example.com/admin`.
    pub fn describe(&self) -> String {
        let path = self.path.as_ref().map_or("/", |p| p.as_str());
        match &self.host {
            Some(h) => format!("{h}{path}"),
            None => format!("any host, {path}"),
        }
    }
}

/// A route's host pattern, lower case, without port or trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `app.example.com`
    Exact(String),
    /// `*.example.com`: stores `.example.com`; matches exactly one more label.
    Wildcard(String),
}

impl HostPattern {
    /// Parses `app.example.com`, `*.example.com`, `bücher.example` (IDN: stored as punycode).
    pub fn parse(s: &str) -> Result<Self, String> {
        let raw = s.trim();
        let (wild, name) = match raw.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() || name.contains('*') {
            return Err(format!(
                "{s:?} is not a host pattern; expected like \"app.example.com\" or \"*.example.com\""
            ));
        }
        if name.contains(':') && !name.starts_with('[') {
            return Err(format!(
                "{s:?}: give the host without a port; routes match whatever port the client used"
            ));
        }
        let ascii = if name.is_ascii() {
            name.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(name).map_err(|_| format!("{s:?} is not a valid international domain name"))?
        };
        let valid = ascii
            .split('.')
            .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            || (ascii.starts_with('[') && ascii.ends_with(']'));
        if !valid {
            return Err(format!(
                "{s:?} is not a host name; expected like \"app.example.com\" or \"*.example.com\""
            ));
        }
        Ok(if wild {
            HostPattern::Wildcard(format!(".{ascii}"))
        } else {
            HostPattern::Exact(ascii)
        })
    }

    /// Whether `host` (already normalised: lower case, no port, no trailing dot) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(n) => f.write_str(n),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// A path prefix: starts with `/`, no trailing `/` (except the root), no dot
/// segments, no query; matched on whole segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathPrefix(String);

impl PathPrefix {
    /// Parses `/admin`, `/admin/` (same as `/admin`), `/`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let p = s.trim();
        if !p.starts_with('/') {
            return Err(format!("{s:?} is not a path prefix; expected like \"/admin\""));
        }
        if p.contains(['?', '#']) || p.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(format!(
                "{s:?}: a path prefix has no query, fragment, spaces or raw non-ASCII (percent-encode them)"
            ));
        }
        // A mounted prefix is written back into Location, Content-Location,
        // Refresh (whose URL may be quoted) and Set-Cookie's Path (which ends
        // at `;`): a character that is a delimiter in one of them would end
        // or change the header's value there (found by fuzzing: `'` closed a
        // quoted Refresh URL). Refused rather than percent-encoded on the way
        // out: `%27` is not `'` to the route matcher (RFC 3986 keeps escapes
        // of reserved characters distinct), so an encoded redirect would
        // leave the mount.
        if let Some(c) = p.chars().find(|c| "'\";,()<>\\`{}|^[]".contains(*c)) {
            return Err(format!(
                "{s:?}: a path prefix cannot contain {c:?} (it is a delimiter in the Refresh, Set-Cookie or Location headers the prefix is written into); percent-encode it (e.g. {:?}) or choose another name",
                format!("%{:02X}", c as u32)
            ));
        }
        let normal = crate::request_path::normalise_path(p);
        if normal != p.trim_end_matches('/') && normal != p {
            return Err(format!(
                "{s:?} has dot segments, empty segments or encoded characters; write it as {normal:?}"
            ));
        }
        let trimmed = normal.trim_end_matches('/');
        Ok(PathPrefix(if trimmed.is_empty() { "/".into() } else { trimmed.into() }))
    }

    /// The prefix, e.g. `/admin` (or `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the (normalised) `path` is inside this prefix, on whole segments.
    pub fn matches(&self, path: &str) -> bool {
        crate::request_path::within(path, &self.0)
    }
}

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[route.cookies]`: each key set here replaces the top-level one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookiesOverride {
    /// `cookies.secure`
    pub secure: Option<bool>,
    /// `cookies.http_only`
    pub http_only: Option<bool>,
    /// `cookies.same_site`
    pub same_site: Option<SameSite>,
    /// `cookies.http_only_except`
    pub http_only_except: Option<Vec<String>>,
}

impl CookiesOverride {
    /// The top-level settings with this route's changes.
    pub fn apply(&self, base: &Cookies) -> Cookies {
        let mut c = base.clone();
        if let Some(v) = self.secure {
            c.secure = v;
        }
        if let Some(v) = self.http_only {
            c.http_only = v;
        }
        if let Some(v) = self.same_site {
            c.same_site = v;
        }
        if let Some(v) = &self.http_only_except {
            c.http_only_except = v.clone();
        }
        c
    }
}

/// `[route.forwarded]`: each key set here replaces the top-level one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardedOverride {
    /// `forwarded.trusted_proxies`
    #[serde(default, deserialize_with = "optional_cidr_list")]
    pub trusted_proxies: Option<Vec<IpNet>>,
    /// `forwarded.x_forwarded_for`
    pub x_forwarded_for: Option<bool>,
    /// `forwarded.x_forwarded_proto`
    pub x_forwarded_proto: Option<bool>,
    /// `forwarded.x_forwarded_host`
    pub x_forwarded_host: Option<bool>,
    /// `forwarded.x_forwarded_port`
    pub x_forwarded_port: Option<bool>,
    /// `forwarded.x_real_ip`
    pub x_real_ip: Option<bool>,
    /// `forwarded.forwarded`
    pub forwarded: Option<bool>,
    /// `forwarded.strip_untrusted`
    #[serde(default, deserialize_with = "optional_header_names")]
    pub strip_untrusted: Option<Vec<HeaderName>>,
}

impl ForwardedOverride {
    /// The top-level settings with this route's changes.
    pub fn apply(&self, base: &Forwarded) -> Forwarded {
        let mut c = base.clone();
        if let Some(v) = &self.trusted_proxies {
            c.trusted_proxies = v.clone();
        }
        for (over, field) in [
            (self.x_forwarded_for, &mut c.x_forwarded_for),
            (self.x_forwarded_proto, &mut c.x_forwarded_proto),
            (self.x_forwarded_host, &mut c.x_forwarded_host),
            (self.x_forwarded_port, &mut c.x_forwarded_port),
            (self.x_real_ip, &mut c.x_real_ip),
            (self.forwarded, &mut c.forwarded),
        ] {
            if let Some(v) = over {
                *field = v;
            }
        }
        if let Some(v) = &self.strip_untrusted {
            c.strip_untrusted = v.clone();
        }
        c
    }
}

/// `[route.redirects]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectsOverride {
    /// `redirects.rewrite_location`
    pub rewrite_location: Option<bool>,
}

impl RedirectsOverride {
    /// The top-level settings with this route's changes.
    pub fn apply(&self, base: &Redirects) -> Redirects {
        Redirects {
            rewrite_location: self.rewrite_location.unwrap_or(base.rewrite_location),
        }
    }
}

/// `[route.headers]`: each key set here replaces the top-level one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersOverride {
    /// `headers.hsts` (`""` turns it off for this route)
    #[serde(default, deserialize_with = "optional_optional_header_value")]
    pub hsts: Option<Option<HeaderValue>>,
    /// `headers.remove_response`
    #[serde(default, deserialize_with = "optional_header_names")]
    pub remove_response: Option<Vec<HeaderName>>,
    /// `headers.set_response`
    #[serde(default, deserialize_with = "optional_header_table")]
    pub set_response: Option<Vec<(HeaderName, HeaderValue)>>,
    /// `headers.set_request`
    #[serde(default, deserialize_with = "optional_header_table")]
    pub set_request: Option<Vec<(HeaderName, HeaderValue)>>,
}

impl HeadersOverride {
    /// The top-level settings with this route's changes.
    pub fn apply(&self, base: &Headers) -> Headers {
        let mut h = base.clone();
        if let Some(v) = &self.hsts {
            h.hsts = v.clone();
        }
        if let Some(v) = &self.remove_response {
            h.remove_response = v.clone();
        }
        if let Some(v) = &self.set_response {
            h.set_response = v.clone();
        }
        if let Some(v) = &self.set_request {
            h.set_request = v.clone();
        }
        h
    }
}

fn optional_host_pattern<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HostPattern>, D::Error> {
    let s = String::deserialize(d)?;
    HostPattern::parse(&s).map(Some).map_err(de::Error::custom)
}

fn optional_path_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathPrefix>, D::Error> {
    let s = String::deserialize(d)?;
    PathPrefix::parse(&s).map(Some).map_err(de::Error::custom)
}

fn optional_health_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<http::uri::PathAndQuery>() {
        Ok(pq) if s.starts_with('/') => Ok(Some(pq.as_str().to_string())),
        _ => Err(de::Error::custom(format!(
            "{s:?} is not a request path; expected like \"/healthz\""
        ))),
    }
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn optional_cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<IpNet>>, D::Error> {
    cidr_list(d).map(Some)
}

fn optional_header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<HeaderName>>, D::Error> {
    header_names(d).map(Some)
}

fn optional_header_table<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<(HeaderName, HeaderValue)>>, D::Error> {
    header_table(d).map(Some)
}

fn optional_optional_header_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<HeaderValue>>, D::Error> {
    optional_header_value(d).map(Some)
}

/// Writes the routes back as TOML `[[route]]` tables (only what differs from
/// the route defaults, plus the host/path/servers that define it).
pub fn display_routes(routes: &[Route], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let names = |n: &[HeaderName]| {
        let q: Vec<String> = n.iter().map(|n| toml_string(n.as_str())).collect();
        format!("[{}]", q.join(", "))
    };
    let value = |v: &HeaderValue| toml_string(&String::from_utf8_lossy(v.as_bytes()));
    let table = |items: &[(HeaderName, HeaderValue)]| {
        let inner: Vec<String> = items.iter().map(|(n, v)| format!("\"{n}\" = {}", value(v))).collect();
        format!("{{ {} }}", inner.join(", ")).replace("{  }", "{}")
    };
    for r in routes {
        writeln!(f, "\n[[route]]")?;
        if let Some(h) = &r.host {
            writeln!(f, "host = {}", toml_string(&h.to_string()))?;
        }
        if let Some(p) = &r.path {
            writeln!(f, "path = {}", toml_string(p.as_str()))?;
        }
        writeln!(f, "strip_prefix = {}", r.strip_prefix)?;
        display_servers(r, f)?;
        let c = &r.cookies;
        let mut lines = Vec::new();
        if let Some(v) = c.secure {
            lines.push(format!("secure = {v}"));
        }
        if let Some(v) = c.http_only {
            lines.push(format!("http_only = {v}"));
        }
        if let Some(v) = c.same_site {
            lines.push(format!("same_site = \"{}\"", format!("{v:?}").to_lowercase()));
        }
        if let Some(v) = &c.http_only_except {
            let q: Vec<String> = v.iter().map(|n| toml_string(n)).collect();
            lines.push(format!("http_only_except = [{}]", q.join(", ")));
        }
        section(f, "route.cookies", &lines)?;
        let w = &r.forwarded;
        let mut lines = Vec::new();
        if let Some(v) = &w.trusted_proxies {
            let q: Vec<String> = v.iter().map(|n| toml_string(&n.to_string())).collect();
            lines.push(format!("trusted_proxies = [{}]", q.join(", ")));
        }
        for (key, v) in [
            ("x_forwarded_for", w.x_forwarded_for),
            ("x_forwarded_proto", w.x_forwarded_proto),
            ("x_forwarded_host", w.x_forwarded_host),
            ("x_forwarded_port", w.x_forwarded_port),
            ("x_real_ip", w.x_real_ip),
            ("forwarded", w.forwarded),
        ] {
            if let Some(v) = v {
                lines.push(format!("{key} = {v}"));
            }
        }
        if let Some(v) = &w.strip_untrusted {
            lines.push(format!("strip_untrusted = {}", names(v)));
        }
        section(f, "route.forwarded", &lines)?;
        let lines: Vec<String> = r
            .redirects
            .rewrite_location
            .map(|v| format!("rewrite_location = {v}"))
            .into_iter()
            .collect();
        section(f, "route.redirects", &lines)?;
        let h = &r.headers;
        let mut lines = Vec::new();
        if let Some(v) = &h.hsts {
            lines.push(format!(
                "hsts = {}",
                v.as_ref().map(value).unwrap_or_else(|| "\"\"".into())
            ));
        }
        if let Some(v) = &h.remove_response {
            lines.push(format!("remove_response = {}", names(v)));
        }
        if let Some(v) = &h.set_response {
            lines.push(format!("set_response = {}", table(v)));
        }
        if let Some(v) = &h.set_request {
            lines.push(format!("set_request = {}", table(v)));
        }
        section(f, "route.headers", &lines)?;
        section(f, "route.compression", &r.compression.lines())?;
        section(f, "route.access", &r.access.lines())?;
        section(f, "route.auth", &r.auth.lines())?;
        section(f, "route.rate_limit", &r.rate_limit.lines())?;
    }
    Ok(())
}

/// Writes the keys a `[[route]]` and `[upstream]` share: servers, TLS to
/// them, balancing, health, timeouts and pool.
pub fn display_servers(r: &Route, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let dur = |d: Duration| humantime::format_duration(d).to_string();
    if let Some(u) = &r.url {
        writeln!(f, "url = {}", toml_string(&u.to_string()))?;
    }
    let servers: Vec<String> = r.servers.iter().map(|s| toml_string(&s.to_string())).collect();
    writeln!(f, "servers = [{}]", servers.join(", "))?;
    // Empty means none: written always, so that every key is shown.
    let ca =
        r.ca.as_ref()
            .map(|ca| ca.path.display().to_string())
            .unwrap_or_default();
    writeln!(f, "ca = {}", toml_string(&ca))?;
    let name = r
        .server_name
        .as_ref()
        .map(|n| n.to_str().to_string())
        .unwrap_or_default();
    writeln!(f, "server_name = {}", toml_string(&name))?;
    let balance = match r.balance {
        Balance::RoundRobin => "round_robin",
        Balance::LeastRequests => "least_requests",
    };
    writeln!(f, "balance = \"{balance}\"")?;
    let sticky = match r.sticky {
        Sticky::None => "none",
        Sticky::Cookie => "cookie",
    };
    writeln!(f, "sticky = \"{sticky}\"")?;
    writeln!(f, "sticky_cookie = {}", toml_string(&r.sticky_cookie))?;
    writeln!(
        f,
        "health_path = {}",
        toml_string(r.health_path.as_deref().unwrap_or(""))
    )?;
    writeln!(f, "health_interval = \"{}\"", dur(r.health_interval))?;
    writeln!(f, "health_timeout = \"{}\"", dur(r.health_timeout))?;
    writeln!(f, "healthy_threshold = {}", r.healthy_threshold)?;
    writeln!(f, "unhealthy_threshold = {}", r.unhealthy_threshold)?;
    writeln!(f, "max_fails = {}", r.max_fails)?;
    let statuses: Vec<String> = r.fail_statuses.iter().map(|s| s.to_string()).collect();
    writeln!(f, "fail_statuses = [{}]", statuses.join(", "))?;
    writeln!(f, "eject_time = \"{}\"", dur(r.eject_time))?;
    if let Some(d) = r.connect_timeout {
        writeln!(f, "connect_timeout = \"{}\"", dur(d))?;
    }
    if let Some(d) = r.response_timeout {
        writeln!(f, "response_timeout = \"{}\"", dur(d))?;
    }
    if let Some(d) = r.read_timeout {
        writeln!(f, "read_timeout = \"{}\"", dur(d))?;
    }
    if let Some(d) = r.pool_idle_timeout {
        writeln!(f, "pool_idle_timeout = \"{}\"", dur(d))?;
    }
    if let Some(n) = r.pool_max_idle {
        writeln!(f, "pool_max_idle = {n}")?;
    }
    Ok(())
}

fn section(f: &mut fmt::Formatter<'_>, name: &str, lines: &[String]) -> fmt::Result {
    if lines.is_empty() {
        return Ok(());
    }
    writeln!(f, "[{name}]")?;
    for l in lines {
        writeln!(f, "{l}")?;
    }
    Ok(())
}

/// The checks a `[[route]]` and `[upstream]` share (servers, TLS to them,
/// affinity, health, timeouts); `table` names the keys (`route[2]`,
/// `upstream`), `what` the route in messages.
pub fn validate_servers(r: &Route, table: &str, what: &str) -> Result<(), (String, String)> {
    let key = |k: &str| format!("{table}.{k}");
    let servers = r.all_servers();
    for (a, s) in servers.iter().enumerate() {
        if servers[..a].contains(s) {
            return Err((key("servers"), format!("{s} is listed twice")));
        }
    }
    if (r.ca.is_some() || r.server_name.is_some()) && !servers.iter().any(|s| matches!(s, ServerUrl::Https(_))) {
        return Err((
            key(if r.ca.is_some() { "ca" } else { "server_name" }),
            format!("ca and server_name apply to https:// servers, and {what} has none"),
        ));
    }
    if r.strip_prefix && r.path.as_ref().is_none_or(|p| p.as_str() == "/") {
        return Err((
            key("strip_prefix"),
            "strip_prefix needs a path prefix other than \"/\", e.g. path = \"/admin\"".into(),
        ));
    }
    if r.sticky == Sticky::Cookie
        && (r.sticky_cookie.is_empty()
            || r.sticky_cookie
                .bytes()
                .any(|b| b <= b' ' || b >= 0x7f || b"=;,\"\\()<>@:/[]?{}".contains(&b)))
    {
        return Err((
            key("sticky_cookie"),
            format!("{:?} is not a cookie name", r.sticky_cookie),
        ));
    }
    if r.healthy_threshold == 0 || r.unhealthy_threshold == 0 || r.max_fails == 0 {
        return Err((
            key("healthy_threshold"),
            "healthy_threshold, unhealthy_threshold and max_fails must be at least 1".into(),
        ));
    }
    for (k, d) in [
        ("health_interval", Some(r.health_interval)),
        ("health_timeout", Some(r.health_timeout)),
        ("eject_time", Some(r.eject_time)),
        ("connect_timeout", r.connect_timeout),
        ("response_timeout", r.response_timeout),
        ("read_timeout", r.read_timeout),
        ("pool_idle_timeout", r.pool_idle_timeout),
    ] {
        if d.is_some_and(|d| d.is_zero()) {
            return Err((key(k), "must be greater than zero".into()));
        }
    }
    if let Some(s) = r.fail_statuses.iter().find(|s| !(100..=599).contains(*s)) {
        return Err((key("fail_statuses"), format!("{s} is not an HTTP status")));
    }
    Ok(())
}

/// Cross-route checks: every route has servers, no two routes take the same
/// requests, the fallback is reachable, the keys make sense together.
/// Returns the key (e.g. `route[2].path`) and the message.
pub fn validate(routes: &[Route], fallback: bool) -> Result<(), (String, String)> {
    for (i, r) in routes.iter().enumerate() {
        // 0-based, as serde names the keys of unknown or mistyped values.
        let key = |k: &str| format!("route[{i}].{k}");
        if r.all_servers().is_empty() {
            return Err((
                key("url"),
                format!(
                    "route[{i}] ({}) has no server; give url = \"http://127.0.0.1:8000\" or servers = [...]",
                    r.describe()
                ),
            ));
        }
        validate_servers(r, &format!("route[{i}]"), &format!("route[{i}] ({})", r.describe()))?;
        for (j, earlier) in routes[..i].iter().enumerate() {
            if earlier.host == r.host
                && earlier.path.as_ref().map(|p| p.as_str()).unwrap_or("/")
                    == r.path.as_ref().map(|p| p.as_str()).unwrap_or("/")
            {
                return Err((
                    key("path"),
                    format!(
                        "route[{i}] takes the same requests as route[{j}] ({}): it could never match; merge them or change host/path",
                        r.describe()
                    ),
                ));
            }
        }
        if fallback && r.host.is_none() && r.path.as_ref().is_none_or(|p| p.as_str() == "/") {
            return Err((
                key("path"),
                format!(
                    "route[{i}] takes every request, so the [upstream] fallback could never match; remove one of them"
                ),
            ));
        }
    }
    Ok(())
}
