//! The configuration contract: TOML → validated [`Config`].
//!
//! The file is parsed once, here, into typed values (socket addresses, URIs,
//! durations, CIDR sets). Nothing else in the program ever sees a raw config
//! string. Every error names the file, the line and column, the full key and
//! what was expected.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use serde::Deserialize;

mod acme;
mod error;
mod limits;
mod listen;
mod policy;
mod protect;
mod route;
mod servers;
mod tls;
mod upstream;
mod values;

pub use acme::{decode_hmac_key, Acme, ChallengeKind, LETSENCRYPT, LETSENCRYPT_STAGING};
pub use error::ConfigError;
use error::{explain_toml_error, line_col};
pub use limits::{AccessLogFormat, Limits, Log, LogFormat, LogLevel};
pub use listen::{Admin, Listen};
pub use policy::{Cookies, Forwarded, Headers, Redirects, SameSite};
pub use protect::{
    parse_auth_url, Access, AccessOverride, Auth, AuthOverride, AuthService, Coding, Compression, CompressionOverride,
    ForwardUrl, RateKey, RateLimit, RateLimitOverride,
};
pub use route::{
    CookiesOverride, ForwardedOverride, HeadersOverride, HostPattern, PathPrefix, RedirectsOverride, Route,
};
pub use servers::{tls_name, Balance, CaFile, ServerUrl, Sticky, UpstreamUrl};
pub use tls::{
    CertificateEntry, ClientAuth, ClientCertificates, ClientOverride, EntryPositions, KeyExchange, Tls, TlsVersion,
};
pub use upstream::Upstream;
use values::toml_string;
pub use values::{normalise_name, parse_duration, parse_name, parse_socket_addr};

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
    /// `[compression]`: responses compressed for clients that accept it.
    pub compression: Compression,
    /// `[access]`: client networks allowed and refused.
    pub access: Access,
    /// `[auth]`: basic or forward authentication in front of the app.
    pub auth: Auth,
    /// `[rate_limit]`: requests per client address.
    pub rate_limit: RateLimit,
    /// `[[route]]` tables: several apps behind one listener.
    #[serde(rename = "route")]
    pub routes: Vec<Route>,
}

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
        // Without routes, [upstream] takes every request, written or not.
        config.upstream.given |= config.routes.is_empty();
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
        if self.tls.key_exchange.is_empty() {
            return Err(err(
                "tls.key_exchange",
                "is empty; expected e.g. [\"X25519MLKEM768\", \"X25519\", \"secp256r1\"]".into(),
            ));
        }
        for (i, group) in self.tls.key_exchange.iter().enumerate() {
            if self.tls.key_exchange[..i].contains(group) {
                return Err(err("tls.key_exchange", format!("lists {group} twice")));
            }
        }
        if self.tls.min_version == TlsVersion::Tls12 && self.tls.key_exchange == [KeyExchange::X25519MLKEM768] {
            return Err(err(
                "tls.key_exchange",
                "has only X25519MLKEM768, which TLS 1.2 cannot use; add \"X25519\" or set tls.min_version = \"1.3\""
                    .into(),
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
        if self.upstream.given {
            route::validate_servers(&self.upstream.route, "upstream", "[upstream]")
                .map_err(|(key, message)| err(&key, message))?;
        }
        route::validate(&self.routes, self.upstream.given).map_err(|(key, message)| err(&key, message))?;
        self.validate_protections()
            .map_err(|(key, message)| err(&key, message))?;
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

    /// The protections at top level and in each route, as they take effect:
    /// each must hold on its own, and every htpasswd file and client CA
    /// named must be usable.
    fn validate_protections(&self) -> Result<(), (String, String)> {
        let copy_written = !self.auth.copy_headers.is_empty();
        protect::validate("", &self.compression, &self.auth, copy_written, &self.rate_limit)?;
        check_htpasswd("auth.basic", &self.auth)?;
        for (i, r) in self.routes.iter().enumerate() {
            let table = format!("route[{i}].");
            let auth = r.auth.apply(&self.auth);
            protect::validate(
                &table,
                &r.compression.apply(&self.compression),
                &auth,
                r.auth.copy_headers.is_some(),
                &r.rate_limit.apply(&self.rate_limit),
            )?;
            if r.auth.basic.is_some() {
                check_htpasswd(&format!("{table}auth.basic"), &auth)?;
            }
        }
        self.tls.client().validate("tls")?;
        for (i, entry) in self.tls.certificates.iter().enumerate() {
            if entry.client.is_some() {
                self.tls.client_for(entry).validate(&format!("tls.certificate[{i}]"))?;
            }
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

/// An htpasswd file must be readable and hold only strong hashes.
fn check_htpasswd(key: &str, auth: &Auth) -> Result<(), (String, String)> {
    let Some(path) = &auth.basic else {
        return Ok(());
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| (key.to_string(), format!("cannot read {}: {e}", path.display())))?;
    crate::htpasswd::parse(&text).map_err(|e| (key.to_string(), format!("{}: {e}", path.display())))?;
    Ok(())
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
        writeln!(f, "http3 = {}", l.http3)?;
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
        writeln!(f, "key_exchange = {}", list(&t.key_exchange))?;
        writeln!(f, "early_data = {}", t.early_data)?;
        writeln!(f, "client_ca = {}", toml_string(&path(&t.client_ca)))?;
        writeln!(f, "client_auth = \"{}\"", t.client_auth)?;
        writeln!(f, "client_crl = {}", toml_string(&path(&t.client_crl)))?;
        for entry in &t.certificates {
            writeln!(f, "\n[[tls.certificate]]")?;
            writeln!(f, "cert = {}", toml_string(&entry.cert.display().to_string()))?;
            writeln!(f, "key = {}", toml_string(&entry.key.display().to_string()))?;
            writeln!(f, "names = {}", list(&entry.names))?;
            if let Some(client) = &entry.client {
                if client.ca.is_some() {
                    writeln!(f, "client_ca = {}", toml_string(&path(&client.ca)))?;
                }
                if let Some(auth) = client.auth {
                    writeln!(f, "client_auth = \"{auth}\"")?;
                }
                if client.crl.is_some() {
                    writeln!(f, "client_crl = {}", toml_string(&path(&client.crl)))?;
                }
            }
        }
        writeln!(f, "\n[upstream]")?;
        let mut fallback = self.upstream.route.clone();
        // With routes, an unwritten url is no fallback: printing it would make one.
        if !(self.upstream.given || self.routes.is_empty()) {
            fallback.url = None;
            fallback.servers.clear();
        }
        route::display_servers(&fallback, f)?;
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
        writeln!(f, "shutdown_delay = \"{}\"", dur(m.shutdown_delay))?;
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
        protect::display(f, &self.compression, &self.access, &self.auth, &self.rate_limit)?;
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
        assert_eq!(c.upstream.describe(), "http://127.0.0.1:8000");
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
        assert_eq!(c.upstream.describe(), "http://localhost:5000");
        assert_eq!(c.upstream.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.upstream.response_timeout, Duration::from_secs(120));
        assert_eq!(c.forwarded.trusted_proxies.len(), 2);
        assert_eq!(c.cookies.same_site, SameSite::Lax);
        assert!(!c.redirects.rewrite_location);
    }

    #[test]
    fn key_exchange_groups_are_checked() {
        let c = parse("[tls]\nkey_exchange = [\"X25519\", \"secp256r1\"]\n").unwrap();
        assert_eq!(c.tls.key_exchange, [KeyExchange::X25519, KeyExchange::Secp256r1]);
        let e = parse("[tls]\nkey_exchange = [\"X25519MLKEM76\"]\n").unwrap_err();
        assert!(e.message.contains("did you mean \"X25519MLKEM768\""), "{e}");
        let e = parse("[tls]\nkey_exchange = [\"x25519\"]\n").unwrap_err();
        assert!(e.message.contains("did you mean \"X25519\""), "{e}");
        for (text, wanted) in [
            ("key_exchange = []", "is empty"),
            ("key_exchange = [\"X25519\", \"X25519\"]", "twice"),
            ("key_exchange = [\"X25519MLKEM768\"]", "TLS 1.2 cannot use"),
        ] {
            let e = parse(&format!("[tls]\n{text}\n")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("tls.key_exchange"), "{text}");
            assert!(e.message.contains(wanted), "{text}: {e}");
        }
        parse("[tls]\nmin_version = \"1.3\"\nkey_exchange = [\"X25519MLKEM768\"]\n").unwrap();
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
        let e = parse("[upstream]\nurl = \"ftp://app:8000\"\n").unwrap_err();
        assert!(e.message.contains("unknown scheme"), "{e}");
    }

    #[test]
    fn upstream_is_the_fallback_route_with_every_server_key() {
        let c = parse("[upstream]\nurl = \"unix:/run/app/gunicorn.sock\"\n").unwrap();
        assert_eq!(c.upstream.describe(), "unix:/run/app/gunicorn.sock");
        assert!(c.upstream.given);
        let c = parse(
            "[upstream]\nservers = [\"http://127.0.0.1:8001\", \"https://app.internal\"]\nbalance = \"least_requests\"\nhealth_path = \"/up\"\nserver_name = \"app.internal\"\npool_max_idle = 8\n[[route]]\nhost = \"a.test\"\nurl = \"http://127.0.0.1:9000\"\n",
        )
        .unwrap();
        assert!(c.upstream.given, "servers written: the fallback");
        assert_eq!(c.upstream.servers().len(), 2);
        assert_eq!(c.upstream.route.balance, Balance::LeastRequests);
        assert_eq!(c.upstream.pool_max_idle, 8);
        // Not written: with routes, no fallback (the built-in default does not apply).
        let c = parse(
            "[upstream]\nconnect_timeout = \"1s\"\n[[route]]\nhost = \"a.test\"\nurl = \"http://127.0.0.1:9000\"\n",
        )
        .unwrap();
        assert!(!c.upstream.given);
        // The route checks apply, with [upstream]'s keys.
        let e = parse("[upstream]\nurl = \"http://a:1\"\nca = \"x.pem\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("upstream.ca"), "{e}");
        let e = parse("[upstream]\nservers = [\"http://a:1\", \"http://a:1\"]\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("upstream.servers"), "{e}");
        // What only a [[route]] takes.
        for table in [
            "path = \"/a\"",
            "host = \"a.test\"",
            "strip_prefix = true",
            "[upstream.cookies]\nsecure = false",
        ] {
            let e = parse(&format!("[upstream]\nurl = \"http://a:1\"\n{table}\n")).unwrap_err();
            assert!(e.message.contains("is a [[route]] key"), "{table}: {e}");
        }
        // Written back and read again, the same.
        let c = parse("[upstream]\nservers = [\"unix:/a.sock\", \"http://b:2\"]\nmax_fails = 5\n").unwrap();
        let again = parse(&c.to_string()).unwrap();
        assert_eq!(again.upstream.describe(), c.upstream.describe());
        assert_eq!(again.upstream.route.max_fails, 5);
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
        let shipped = include_str!("../../config/tlsfront.toml");
        assert_eq!(parse(shipped).unwrap().to_string(), Config::default().to_string());
        let uncommented: String = shipped
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty()
                            && k.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
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
                if !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
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
        let shipped = include_str!("../../config/tlsfront.toml");
        let c = parse(
            "[[route]]\nhost = \"a.example\"\npath = \"/x\"\nurl = \"http://127.0.0.1:1\"\nconnect_timeout = \"1s\"\nresponse_timeout = \"1s\"\n",
        )
        .unwrap();
        let shown = c.to_string();
        let route = &shown[shown.find("[[route]]").unwrap()..];
        let mut keys: Vec<&str> = route
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
            .filter(|k| {
                k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
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
