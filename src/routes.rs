//! Where a request goes: the route table, built once per configuration
//! generation and swapped whole on reload.
//!
//! Order of matching: routes with an exact host, then with a wildcard host,
//! then without a host; within each, the longest path prefix first. The
//! first route whose host and path both match takes the request; the
//! top-level `[upstream]` (when written in the file, or `--upstream`) takes
//! what no route does. Without any `[[route]]`, the `[upstream]` (or its
//! default) takes everything, exactly as before routes existed.

use std::borrow::Cow;
use std::sync::Arc;

use crate::config::{self, Config, HostPattern, PathPrefix, Sticky};
use crate::metrics::Metrics;
use crate::policy::cookies::CookiePolicy;
use crate::policy::forwarded::ForwardedPolicy;
use crate::policy::headers::HeaderRules;
use crate::protect::{self, Protection};
use crate::upstream::health::Passive;
use crate::upstream::tls::UpstreamTls;
use crate::upstream::{self, ActiveCheck, Upstream, UpstreamSettings};

/// Header policy of one route.
pub struct RoutePolicy {
    /// X-Forwarded-* and whom to trust.
    pub forwarded: ForwardedPolicy,
    /// Set-Cookie hardening.
    pub cookies: CookiePolicy,
    /// Fixed headers and HSTS.
    pub headers: HeaderRules,
    /// Rewrite redirects that leak the upstream.
    pub rewrite_redirects: bool,
}

impl RoutePolicy {
    fn new(
        forwarded: &config::Forwarded,
        cookies: &config::Cookies,
        headers: &config::Headers,
        redirects: &config::Redirects,
    ) -> Self {
        RoutePolicy {
            forwarded: ForwardedPolicy::from(forwarded),
            cookies: CookiePolicy::from(cookies),
            headers: HeaderRules::from(headers),
            rewrite_redirects: redirects.rewrite_location,
        }
    }
}

/// One route, ready to serve.
pub struct Route {
    /// `route[1] (app.example.com/admin)` or `[upstream]`, for logs and `/readyz`.
    pub name: String,
    /// Host pattern; none = any host.
    pub host: Option<HostPattern>,
    /// Path prefix; none = every path.
    pub path: Option<PathPrefix>,
    /// Remove the prefix before forwarding and put it back in responses.
    pub strip_prefix: Option<String>,
    /// Affinity cookie name, when `sticky = "cookie"`.
    pub sticky_cookie: Option<String>,
    /// Header policy.
    pub policy: RoutePolicy,
    /// Compression, access, auth, rate limit.
    pub protect: Protection,
    /// Its servers.
    pub upstream: Arc<Upstream>,
}

impl Route {
    fn matches(&self, host: &str, path: &str) -> bool {
        self.host.as_ref().is_none_or(|h| h.matches(host)) && self.path.as_ref().is_none_or(|p| p.matches(path))
    }
}

/// The outcome of matching a request.
pub enum Selected<'a> {
    /// This route takes it.
    Route(&'a Arc<Route>),
    /// No route serves this host at all: 421.
    UnknownHost,
    /// Routes serve this host, but none this path: 404.
    NoPath,
}

/// All routes of a generation, in matching order.
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    fallback: Option<Arc<Route>>,
}

impl RouteTable {
    /// Builds every route's servers and policy from a validated config;
    /// `[upstream]` is built by the same code, as the fallback route.
    pub fn new(config: &Config, metrics: &Metrics) -> Self {
        // Read once per generation, and only when a route verifies with them.
        let system_roots = std::cell::OnceCell::new();
        let shared = protect::Shared::new(config);
        let build = |name: String, r: &config::Route| build_route(name, r, config, metrics, &system_roots, &shared);
        if config.routes.is_empty() {
            return RouteTable {
                routes: Vec::new(),
                fallback: Some(build("[upstream]".into(), &config.upstream.route)),
            };
        }
        let mut routes: Vec<(usize, &config::Route)> = config.routes.iter().enumerate().collect();
        routes.sort_by_key(|(i, r)| {
            let host_rank = match &r.host {
                Some(HostPattern::Exact(_)) => 0,
                Some(HostPattern::Wildcard(_)) => 1,
                None => 2,
            };
            let path_len = r
                .path
                .as_ref()
                .map_or(0, |p| if p.as_str() == "/" { 0 } else { p.as_str().len() });
            (host_rank, std::cmp::Reverse(path_len), *i)
        });
        let routes = routes
            .into_iter()
            .map(|(i, r)| build(format!("route[{i}] ({})", r.describe()), r))
            .collect();
        RouteTable {
            routes,
            fallback: config
                .upstream
                .given
                .then(|| build("[upstream] fallback".into(), &config.upstream.route)),
        }
    }

    /// Whether `[[route]]` tables exist (then paths are normalised and
    /// unmatched requests get 421/404).
    pub fn has_routes(&self) -> bool {
        !self.routes.is_empty()
    }

    /// Every route in matching order, the fallback last.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter().chain(self.fallback.iter())
    }

    /// Picks the route for a normalised host (lower case, no port, no
    /// trailing dot) and a normalised path.
    pub fn select(&self, host: &str, path: &str) -> Selected<'_> {
        if let Some(route) = self.routes.iter().find(|r| r.matches(host, path)) {
            return Selected::Route(route);
        }
        if let Some(fallback) = &self.fallback {
            return Selected::Route(fallback);
        }
        if self
            .routes
            .iter()
            .any(|r| r.host.as_ref().is_none_or(|h| h.matches(host)))
        {
            Selected::NoPath
        } else {
            Selected::UnknownHost
        }
    }
}

/// A Host header or `:authority` as browsers mean it: lower case, without
/// the port and the trailing dot; an international name as punycode. The
/// usual host (lower-case ASCII) is borrowed, not copied.
pub fn normalise_host(authority: &str) -> Cow<'_, str> {
    let host = match crate::policy::redirects::split_host_port(authority) {
        Some((h, _)) => h,
        None => authority,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_ascii() {
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        }
    } else {
        Cow::Owned(idna::domain_to_ascii(host).unwrap_or_else(|_| host.to_lowercase()))
    }
}

/// One route, ready to serve: its servers (with the TLS to them), its
/// policy (the top level's, with the route's overrides), its timeouts and
/// pool (the route's, else `[upstream]`'s).
fn build_route(
    name: String,
    r: &config::Route,
    config: &Config,
    metrics: &Metrics,
    system_roots: &std::cell::OnceCell<Arc<rustls::RootCertStore>>,
    shared: &protect::Shared,
) -> Arc<Route> {
    let up = &config.upstream;
    let servers = r.all_servers();
    let tls = servers
        .iter()
        .any(|s| matches!(s, config::ServerUrl::Https(_)))
        .then(|| {
            let roots = match &r.ca {
                Some(ca) => ca.roots.clone(),
                None => system_roots.get_or_init(upstream::tls::system_roots).clone(),
            };
            Arc::new(UpstreamTls::new(roots, r.server_name.clone()))
        });
    Arc::new(Route {
        name,
        host: r.host.clone(),
        path: r.path.clone(),
        strip_prefix: r
            .strip_prefix
            .then(|| r.path.as_ref().map(|p| p.as_str().to_string()))
            .flatten(),
        sticky_cookie: (r.sticky == Sticky::Cookie).then(|| r.sticky_cookie.clone()),
        policy: RoutePolicy::new(
            &r.forwarded.apply(&config.forwarded),
            &r.cookies.apply(&config.cookies),
            &r.headers.apply(&config.headers),
            &r.redirects.apply(&config.redirects),
        ),
        protect: Protection::new(r, config, shared, metrics),
        upstream: Upstream::new(
            UpstreamSettings {
                servers,
                connect_timeout: r.connect_timeout.unwrap_or(up.connect_timeout),
                response_timeout: r.response_timeout.unwrap_or(up.response_timeout),
                read_timeout: r.read_timeout.unwrap_or(up.read_timeout),
                pool_idle_timeout: r.pool_idle_timeout.unwrap_or(up.pool_idle_timeout),
                pool_max_idle: r.pool_max_idle.unwrap_or(up.pool_max_idle),
                balance: r.balance,
                passive: Passive {
                    max_fails: r.max_fails,
                    eject_time: r.eject_time,
                },
                fail_statuses: r.fail_statuses.clone(),
                active: r.health_path.as_ref().map(|path| ActiveCheck {
                    path: path.clone(),
                    interval: r.health_interval,
                    timeout: r.health_timeout,
                    healthy_threshold: r.healthy_threshold,
                    unhealthy_threshold: r.unhealthy_threshold,
                }),
                tls,
            },
            metrics,
        ),
    })
}

/// What protects each route, in matching order: `route[1] (...): compression
/// zstd,br,gzip; auth basic ...`, for `tlsfront check`.
pub fn describe_protection(config: &Config) -> Vec<String> {
    let table = RouteTable::new(config, &Metrics::new());
    table
        .all()
        .map(|r| format!("{}: {}", r.name, r.protect.summary))
        .collect()
}

/// Writes the route table in matching order, one route per line, for `tlsfront check`.
pub fn describe(config: &Config) -> Vec<String> {
    let table = RouteTable::new(config, &Metrics::new());
    table
        .all()
        .map(|r| {
            let servers: Vec<&str> = r.upstream.servers().iter().map(|s| s.label.as_str()).collect();
            let mut line = format!("{} -> {}", r.name, servers.join(", "));
            if let Some(p) = &r.strip_prefix {
                line.push_str(&format!(" (strip_prefix {p})"));
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(toml: &str) -> RouteTable {
        let c = Config::from_toml(toml, "test.toml").unwrap();
        RouteTable::new(&c, &Metrics::new())
    }

    fn name(s: Selected<'_>) -> String {
        match s {
            Selected::Route(r) => r.name.clone(),
            Selected::UnknownHost => "421".into(),
            Selected::NoPath => "404".into(),
        }
    }

    #[test]
    fn most_specific_host_then_longest_path() {
        let t = table(
            r#"
[[route]]
host = "*.example.com"
url = "http://127.0.0.1:1"
[[route]]
host = "app.example.com"
url = "http://127.0.0.1:2"
[[route]]
host = "app.example.com"
path = "/admin"
url = "http://127.0.0.1:3"
[[route]]
path = "/static"
url = "http://127.0.0.1:4"
[[route]]
host = "api.example.org"
path = "/v1"
url = "http://127.0.0.1:5"
"#,
        );
        let cases = [
            ("app.example.com", "/", "route[1]"),
            ("app.example.com", "/admin", "route[2]"),
            ("app.example.com", "/admin/x", "route[2]"),
            ("app.example.com", "/administrator", "route[1]"),
            ("app.example.com", "/static/x", "route[1]"),
            ("www.example.com", "/x", "route[0]"),
            ("a.b.example.com", "/static/x", "route[3]"),
            ("a.b.example.com", "/x", "404"),
            ("example.com", "/static/app.js", "route[3]"),
            ("example.com", "/", "404"),
            ("api.example.org", "/v1/users", "route[4]"),
            ("api.example.org", "/v2", "404"),
        ];
        for (host, path, want) in cases {
            let got = name(t.select(host, path));
            assert!(got.starts_with(want), "{host}{path}: {got}, expected {want}");
        }
    }

    #[test]
    fn fallback_only_when_written() {
        let routes = "[[route]]\nhost = \"a.example\"\nurl = \"http://127.0.0.1:1\"\n";
        assert_eq!(name(table(routes).select("b.example", "/")), "421");
        let with = format!("[upstream]\nurl = \"http://127.0.0.1:9\"\n{routes}");
        assert_eq!(name(table(&with).select("b.example", "/")), "[upstream] fallback");
        assert_eq!(name(table("").select("anything", "/x")), "[upstream]");
    }

    #[test]
    fn hosts_are_normalised_as_browsers_mean_them() {
        assert_eq!(normalise_host("App.Example.COM:8443"), "app.example.com");
        assert_eq!(normalise_host("app.example.com."), "app.example.com");
        assert_eq!(normalise_host("[::1]:8443"), "[::1]");
        assert_eq!(normalise_host("bücher.example"), "xn--bcher-kva.example");
        let t = table("[[route]]\nhost = \"Bücher.Example.\"\nurl = \"http://127.0.0.1:1\"\n");
        assert!(name(t.select(&normalise_host("xn--bcher-kva.example:443"), "/")).starts_with("route[0]"));
    }
}
