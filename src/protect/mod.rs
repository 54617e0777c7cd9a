//! What tlsfront does for the app before and after it: who may reach it
//! (`[access]`, `[rate_limit]`, `[auth]`) and how its answers travel
//! (`[compression]`). Built once per route and generation from the
//! validated settings; the checks run in `proxy`, in this order: access,
//! rate limit, auth (cheapest first; a refused client never costs a
//! password hash or a call to the auth service).

pub mod basic;
pub mod forward;
pub mod rate_limit;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::header::HeaderName;
use ipnet::IpNet;

use crate::config::{self, Config};
use crate::metrics::Metrics;

use self::basic::BasicAuth;
use self::forward::ForwardAuth;
use self::rate_limit::RateLimiter;

/// `[access]`, ready to match.
pub struct AccessList {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl AccessList {
    /// `None` when it allows everyone.
    fn new(access: &config::Access) -> Option<AccessList> {
        (!access.allow.is_empty() || !access.deny.is_empty()).then(|| AccessList {
            allow: access.allow.clone(),
            deny: access.deny.clone(),
        })
    }

    /// Deny wins; an empty allow list allows all.
    pub fn allows(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        !self.deny.iter().any(|n| n.contains(&client))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&client)))
    }
}

/// How a request proves who it is.
pub enum Authenticator {
    /// `[auth] basic`.
    Basic {
        /// The users.
        users: Arc<BasicAuth>,
        /// `WWW-Authenticate: Basic realm="..."`.
        challenge: http::HeaderValue,
        /// Pass the client's `Authorization` on.
        forward_authorization: bool,
    },
    /// `[auth] forward`.
    Forward(ForwardAuth),
}

/// One route's protections.
pub struct Protection {
    /// `[compression]`.
    pub compression: config::Compression,
    /// `[access]`; none = everyone.
    pub access: Option<AccessList>,
    /// `[rate_limit]`; none = unlimited.
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// `[auth]`; none = open.
    pub auth: Option<Authenticator>,
    /// Headers the auth service sets: never taken from the client.
    pub copy_headers: Vec<HeaderName>,
    /// What protects the route, in one line (`tlsfront check`).
    pub summary: String,
}

/// What routes share within a generation: the top-level rate limiter and
/// one user list per htpasswd file.
pub struct Shared {
    top_rate_limit: Option<Arc<RateLimiter>>,
    basic: std::sync::Mutex<HashMap<PathBuf, Arc<BasicAuth>>>,
}

impl Shared {
    /// The shared parts of a configuration.
    pub fn new(config: &Config) -> Shared {
        Shared {
            top_rate_limit: config
                .rate_limit
                .enabled()
                .then(|| limiter("top level", &config.rate_limit)),
            basic: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn basic(&self, path: &Path) -> Arc<BasicAuth> {
        let mut files = self.basic.lock().unwrap_or_else(|p| p.into_inner());
        files
            .entry(path.to_path_buf())
            .or_insert_with(|| Arc::new(BasicAuth::new(path)))
            .clone()
    }
}

/// The limiter of a route (by its host and path) and settings: the one the
/// running generation has, when there is one, so that a reload (SIGHUP, a
/// renewed certificate) does not hand every limited client a fresh burst.
fn limiter(owner: &str, settings: &config::RateLimit) -> Arc<RateLimiter> {
    type Registry = std::sync::Mutex<HashMap<String, std::sync::Weak<RateLimiter>>>;
    static LIMITERS: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    let key = format!("{owner} {settings:?}");
    let mut limiters = LIMITERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    limiters.retain(|_, weak| weak.strong_count() > 0);
    if let Some(running) = limiters.get(&key).and_then(std::sync::Weak::upgrade) {
        return running;
    }
    let fresh = Arc::new(RateLimiter::new(settings));
    limiters.insert(key, Arc::downgrade(&fresh));
    fresh
}

impl Protection {
    /// A route's protections: the top-level tables with its overrides.
    pub fn new(route: &config::Route, config: &Config, shared: &Shared, metrics: &Metrics) -> Protection {
        let auth = route.auth.apply(&config.auth);
        let rate_limit = if route.rate_limit.written() {
            let settings = route.rate_limit.apply(&config.rate_limit);
            settings.enabled().then(|| limiter(&route.describe(), &settings))
        } else {
            shared.top_rate_limit.clone()
        };
        let authenticator = if let Some(path) = &auth.basic {
            let realm = format!("Basic realm=\"{}\", charset=\"UTF-8\"", auth.realm);
            Some(Authenticator::Basic {
                users: shared.basic(path),
                challenge: http::HeaderValue::from_str(&realm)
                    .unwrap_or_else(|_| http::HeaderValue::from_static("Basic realm=\"tlsfront\"")),
                forward_authorization: auth.forward_authorization,
            })
        } else {
            auth.service().map(|service| {
                Authenticator::Forward(ForwardAuth::new(
                    &service,
                    auth.copy_headers.clone(),
                    auth.forward_timeout,
                    metrics,
                ))
            })
        };
        Protection {
            summary: describe(route, config),
            compression: route.compression.apply(&config.compression),
            access: AccessList::new(&route.access.apply(&config.access)),
            rate_limit,
            auth: authenticator,
            copy_headers: auth.copy_headers,
        }
    }
}

/// One line for `tlsfront check`: what protects a route.
fn describe(route: &config::Route, config: &Config) -> String {
    let mut parts = Vec::new();
    let c = route.compression.apply(&config.compression);
    if c.enabled {
        let names: Vec<&str> = c.algorithms.iter().map(|a| a.token()).collect();
        parts.push(format!("compression {}", names.join(",")));
    } else {
        parts.push("compression off".into());
    }
    let access = route.access.apply(&config.access);
    if !access.allow.is_empty() {
        let nets: Vec<String> = access.allow.iter().map(ToString::to_string).collect();
        parts.push(format!("access allow {}", nets.join(",")));
    }
    if !access.deny.is_empty() {
        let nets: Vec<String> = access.deny.iter().map(ToString::to_string).collect();
        parts.push(format!("access deny {}", nets.join(",")));
    }
    let auth = route.auth.apply(&config.auth);
    if let Some(path) = &auth.basic {
        parts.push(format!("auth basic {}", path.display()));
    } else if let Some(url) = &auth.forward {
        parts.push(format!("auth forward {url}"));
    }
    let rate = route.rate_limit.apply(&config.rate_limit);
    if rate.enabled() {
        let shared = if route.rate_limit.written() { "" } else { ", shared" };
        parts.push(format!(
            "rate_limit {}/{} burst {}{shared}",
            rate.requests,
            humantime::format_duration(rate.per),
            rate.effective_burst()
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_and_empty_allow_allows_all() {
        let list = |allow: &[&str], deny: &[&str]| AccessList {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let l = list(&["10.0.0.0/8"], &["10.1.0.0/16"]);
        assert!(l.allows(ip("10.2.3.4")));
        assert!(!l.allows(ip("10.1.3.4")));
        assert!(!l.allows(ip("192.0.2.1")));
        assert!(l.allows(ip("::ffff:10.2.3.4")));
        let l = list(&[], &["192.0.2.0/24"]);
        assert!(l.allows(ip("198.51.100.1")));
        assert!(!l.allows(ip("192.0.2.9")));
    }
}
