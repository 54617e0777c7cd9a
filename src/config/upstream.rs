//! `[upstream]`: the fallback route, and the timeouts and pool every route
//! starts from.
//!
//! It is read as a `[[route]]` table (the same keys, the same parsing and
//! checks: `unix:`, `https://` with `ca` and `server_name`, several
//! `servers`, balancing, health), without `host`, `path`, `strip_prefix`
//! and the policy sub-tables: it takes whatever no route takes, with the
//! top-level policy.

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::route::{CookiesOverride, ForwardedOverride, HeadersOverride, RedirectsOverride, Route};
use super::servers::ServerUrl;

/// The app when nothing says otherwise.
const DEFAULT_URL: &str = "http://127.0.0.1:8000";

/// `[upstream]`
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The route: servers, TLS to them, balancing, health. Its timeouts and
    /// pool are the resolved values below.
    pub route: Route,
    /// Whether `[upstream]` is a route: always without `[[route]]` tables;
    /// with them, only when `url` or `servers` was written (or
    /// `--upstream` given), as the fallback.
    pub given: bool,
    /// Limit on establishing a TCP connection to the app.
    pub connect_timeout: Duration,
    /// Limit until the app's response headers arrive.
    pub response_timeout: Duration,
    /// Longest silence of the app in the middle of a response body.
    pub read_timeout: Duration,
    /// How long an idle pooled connection to the app is kept.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept to the app.
    pub pool_max_idle: usize,
}

impl Upstream {
    /// Builds the fallback from a route table as written; `Err` names a key
    /// that only a `[[route]]` takes.
    fn from_route(mut route: Route) -> Result<Self, String> {
        let only_routes = [
            ("host", route.host.is_some()),
            ("path", route.path.is_some()),
            ("strip_prefix", route.strip_prefix),
            ("cookies", route.cookies != CookiesOverride::default()),
            ("forwarded", route.forwarded != ForwardedOverride::default()),
            ("redirects", route.redirects != RedirectsOverride::default()),
            ("headers", route.headers != HeadersOverride::default()),
            ("compression", route.compression != Default::default()),
            ("access", route.access != Default::default()),
            ("auth", route.auth != Default::default()),
            ("rate_limit", route.rate_limit != Default::default()),
        ];
        if let Some((key, _)) = only_routes.iter().find(|(_, written)| *written) {
            return Err(format!(
                "`{key}` is a [[route]] key: [upstream] is the fallback route, it takes every request no route takes with the top-level [cookies], [forwarded], [redirects], [headers], [compression], [access], [auth] and [rate_limit]; give a [[route]] for a host or path of its own"
            ));
        }
        let given = !route.all_servers().is_empty();
        if !given {
            route.url = Some(ServerUrl::parse(DEFAULT_URL).expect("the default upstream is valid"));
        }
        let connect_timeout = *route.connect_timeout.get_or_insert(Duration::from_secs(5));
        let response_timeout = *route.response_timeout.get_or_insert(Duration::from_secs(60));
        let read_timeout = *route.read_timeout.get_or_insert(Duration::from_secs(60));
        let pool_idle_timeout = *route.pool_idle_timeout.get_or_insert(Duration::from_secs(60));
        // Enough to keep every connection a burst of 1,024 concurrent requests
        // opened: with 64, 2,000 clients made tlsfront open a new connection
        // to the app for one request in four (bench/README, round three).
        let pool_max_idle = *route.pool_max_idle.get_or_insert(1024);
        Ok(Upstream {
            route,
            given,
            connect_timeout,
            response_timeout,
            read_timeout,
            pool_idle_timeout,
            pool_max_idle,
        })
    }

    /// Replaces the servers with one (`--upstream`).
    pub fn set_server(&mut self, url: ServerUrl) {
        self.route.url = Some(url);
        self.route.servers.clear();
        self.given = true;
    }

    /// The servers, `url` first.
    pub fn servers(&self) -> Vec<ServerUrl> {
        self.route.all_servers()
    }

    /// `http://127.0.0.1:8000`, or `3 servers (http://a:1, ...)`, for messages.
    pub fn describe(&self) -> String {
        let servers = self.servers();
        let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
        match list.as_slice() {
            [one] => one.clone(),
            _ => format!("{} servers ({})", list.len(), list.join(", ")),
        }
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Upstream::from_route(Route::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl Default for Upstream {
    fn default() -> Self {
        let empty: Route = toml::from_str("").expect("an empty route table is valid");
        Upstream::from_route(empty).expect("an empty route table is a fallback")
    }
}
