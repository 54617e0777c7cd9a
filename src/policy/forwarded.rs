//! X-Forwarded-*, X-Real-IP and RFC 7239 `Forwarded`: telling the app the truth.
//!
//! A peer outside the trusted set cannot inject anything: every incoming
//! `X-Forwarded-*` header, every well-known client-identity header
//! ([`IDENTITY_HEADERS`]) and the names in `forwarded.strip_untrusted` are
//! removed, and what tlsfront saw is set instead. A trusted
//! peer (a load balancer in front) gets its address appended to the
//! `X-Forwarded-For` chain and keeps its own proto/host/port, so an outer
//! `https` is never overwritten. Proto/host/port always leave with exactly one
//! value, because frameworks disagree on which of several they read.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::config;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

// Client-identity headers: names some framework, library or CDN reads as "who
// the client is", "which scheme or host it used" or "which path it asked for".
// From an untrusted peer every one of them is removed, as is every
// `X-Forwarded-*` (by prefix). Sources: django-ipware, Rails' RemoteIp
// (`Client-IP`), Tornado (`X-Scheme`), Symfony/Laravel (`X-Original-URL`,
// `X-Rewrite-Url`), Java's client-IP helpers (`Proxy-Client-IP`,
// `WL-Proxy-Client-IP`), Envoy, Cloudflare, Fastly, Akamai, CloudFront,
// Azure (ARR, Front Door), App Engine, and the nginx/Apache mTLS header
// conventions. One macro makes both the list (for docs, tests and the fuzz
// target) and the `match` (compiled to a length switch: cheap per request).
macro_rules! identity_headers {
    ($($name:literal),* $(,)?) => {
        /// Client-identity header names (lower case) removed from untrusted
        /// peers, in addition to every `x-forwarded-*` name.
        pub const IDENTITY_HEADERS: &[&str] = &[$($name),*];

        fn is_identity_header(name: &str) -> bool {
            matches!(name, $($name)|*)
        }
    };
}

identity_headers![
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    "x-real-ip",
    "x-real-port",
    "x-client-ip",
    "client-ip",
    "http-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
    "x-proxyuser-ip",
    "proxy-client-ip",
    "wl-proxy-client-ip",
    "x-remote-addr",
    "x-remote-ip",
    "x-originating-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "cf-pseudo-ipv4",
    "cf-visitor",
    "fastly-client-ip",
    "fastly-ssl",
    "akamai-origin-hop",
    "cloudfront-viewer-address",
    "cloudfront-forwarded-proto",
    "x-envoy-external-address",
    "x-envoy-internal",
    "x-azure-clientip",
    "x-azure-socketip",
    "x-arr-ssl",
    "x-arr-clientcert",
    "x-appengine-user-ip",
    "front-end-https",
    "x-url-scheme",
    "x-scheme",
    "x-host",
    "x-original-host",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-client-cert",
    "x-client-verify",
    "ssl-client-cert",
    "x-ssl-cert",
    "x-ssl-client-cert",
    "x-ssl-client-verify",
    "x-ssl-client-dn",
    "x-ssl-client-s-dn",
    "remote-user",
    "x-remote-user",
];

/// Whether a header from an untrusted peer is removed by the built-in rule:
/// any `x-forwarded-*` name or one of [`IDENTITY_HEADERS`], also spelled
/// with underscores for dashes (`X_Real_IP`, `X_Forwarded_For`): app
/// servers that map header names to CGI-style keys (`HTTP_X_REAL_IP`) read
/// both spellings as one, so either would pass a forged value (Puma before
/// 6.4.3, CVE-2024-45614; nginx drops names with underscores by default).
pub fn is_forged_identity(name: &HeaderName) -> bool {
    let n = name.as_str();
    is_forged_dashed(n) || (n.as_bytes().contains(&b'_') && is_forged_dashed(&dashed(n)))
}

fn is_forged_dashed(n: &str) -> bool {
    n.starts_with("x-forwarded-") || is_identity_header(n)
}

/// `name` with every `_` read as `-`.
fn dashed(name: &str) -> String {
    name.replace('_', "-")
}

/// The set of peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Builds the set from CIDRs.
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    /// Whether `ip` is inside one of the trusted networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Which headers to produce and whom to trust.
#[derive(Debug, Clone)]
pub struct ForwardedPolicy {
    /// Peers whose headers are kept and extended.
    pub trusted: TrustedProxies,
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
    /// Names of one's own removed from untrusted peers (`forwarded.strip_untrusted`).
    pub strip_untrusted: Vec<HeaderName>,
}

impl ForwardedPolicy {
    /// Whether `name` must not reach the app from an untrusted peer.
    pub fn strips(&self, name: &HeaderName) -> bool {
        // As `is_forged_identity` plus our own names, with one scan for an
        // underscore (this runs for every header of every request).
        let n = name.as_str();
        if is_forged_dashed(n) || self.strip_untrusted.contains(name) {
            return true;
        }
        n.as_bytes().contains(&b'_') && {
            let n = dashed(n);
            is_forged_dashed(&n) || self.strip_untrusted.iter().any(|own| own.as_str() == n)
        }
    }
}

impl From<&config::Forwarded> for ForwardedPolicy {
    fn from(c: &config::Forwarded) -> Self {
        ForwardedPolicy {
            trusted: TrustedProxies::new(c.trusted_proxies.clone()),
            x_forwarded_for: c.x_forwarded_for,
            x_forwarded_proto: c.x_forwarded_proto,
            x_forwarded_host: c.x_forwarded_host,
            x_forwarded_port: c.x_forwarded_port,
            x_real_ip: c.x_real_ip,
            forwarded: c.forwarded,
            strip_untrusted: c.strip_untrusted.clone(),
        }
    }
}

/// What tlsfront itself knows about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestOrigin<'a> {
    /// The TCP peer (canonical: no IPv4-mapped IPv6).
    pub peer: IpAddr,
    /// The Host (or `:authority`) the client asked for.
    pub host: &'a HeaderValue,
    /// The port clients use for https.
    pub public_port: u16,
    /// `peer` already formatted as a header value (made once per connection).
    pub peer_value: Option<&'a HeaderValue>,
}

/// What the app is told, after policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    /// The client's IP as far as the trusted chain lets us know it.
    pub client_ip: IpAddr,
    /// Whether the peer was a trusted proxy.
    pub via_trusted_proxy: bool,
}

/// Rewrites the request's forwarding headers. Returns the client as seen.
pub fn apply(headers: &mut HeaderMap, policy: &ForwardedPolicy, origin: &RequestOrigin<'_>) -> ClientView {
    let peer = origin.peer.to_canonical();
    let trusted = policy.trusted.contains(peer);
    if !trusted {
        // One pass over the names; collecting only when there is something to remove.
        if headers.keys().any(|n| policy.strips(n)) {
            let forged: Vec<HeaderName> = headers.keys().filter(|n| policy.strips(n)).cloned().collect();
            for name in forged {
                headers.remove(name);
            }
        }
        match origin.peer_value {
            Some(ip) if origin.peer == peer => set_all(headers, policy, origin, ip, None, None, None, None, peer),
            _ => {
                let ip = HeaderValue::from_str(&peer.to_string()).expect("an IP address is a valid header value");
                set_all(headers, policy, origin, &ip, None, None, None, None, peer);
            }
        }
        return ClientView {
            client_ip: peer,
            via_trusted_proxy: false,
        };
    }

    // Trusted peer: extend its chain, keep its claims (first value only).
    let mut chain = joined(headers, &X_FORWARDED_FOR);
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    let _ = write!(chain, "{peer}");
    let client_ip = real_client(&chain, &policy.trusted).unwrap_or(peer);
    let proto = first_token(headers, &X_FORWARDED_PROTO).and_then(|p| normalise_proto(&p));
    let host = first_token(headers, &X_FORWARDED_HOST)
        .filter(|h| !h.is_empty())
        .and_then(|h| HeaderValue::from_str(&h).ok());
    let port = first_token(headers, &X_FORWARDED_PORT).and_then(|p| p.parse::<u16>().ok());
    let prior_forwarded = joined(headers, &FORWARDED);
    for name in [
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &X_FORWARDED_PORT,
        &X_REAL_IP,
        &FORWARDED,
    ] {
        headers.remove(name);
    }
    let chain = HeaderValue::from_str(&chain)
        .unwrap_or_else(|_| HeaderValue::from_str(&peer.to_string()).expect("an IP address is a valid header value"));
    set_all(
        headers,
        policy,
        origin,
        &chain,
        proto,
        host,
        port,
        (!prior_forwarded.is_empty()).then_some(prior_forwarded),
        client_ip,
    );
    ClientView {
        client_ip,
        via_trusted_proxy: true,
    }
}

#[allow(clippy::too_many_arguments)]
fn set_all(
    headers: &mut HeaderMap,
    policy: &ForwardedPolicy,
    origin: &RequestOrigin<'_>,
    chain: &HeaderValue,
    proto: Option<&'static str>,
    host: Option<HeaderValue>,
    port: Option<u16>,
    prior_forwarded: Option<String>,
    client_ip: IpAddr,
) {
    let proto = proto.unwrap_or("https");
    if policy.x_forwarded_for {
        headers.insert(X_FORWARDED_FOR.clone(), chain.clone());
    }
    if policy.x_forwarded_proto {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if policy.x_forwarded_host {
        headers.insert(
            X_FORWARDED_HOST.clone(),
            host.clone().unwrap_or_else(|| origin.host.clone()),
        );
    }
    if policy.x_forwarded_port {
        headers.insert(
            X_FORWARDED_PORT.clone(),
            HeaderValue::from(port.unwrap_or(origin.public_port)),
        );
    }
    if policy.x_real_ip {
        let mut ip = String::with_capacity(40);
        let _ = write!(ip, "{client_ip}");
        if let Ok(v) = HeaderValue::from_str(&ip) {
            headers.insert(X_REAL_IP.clone(), v);
        }
    }
    if policy.forwarded {
        let mut value = prior_forwarded.unwrap_or_default();
        if !value.is_empty() {
            value.push_str(", ");
        }
        match origin.peer.to_canonical() {
            IpAddr::V4(ip) => {
                let _ = write!(value, "for={ip}");
            }
            IpAddr::V6(ip) => {
                let _ = write!(value, "for=\"[{ip}]\"");
            }
        }
        let _ = write!(value, ";proto={proto}");
        // Only the hop's own host goes here; a trusted peer's claim is in its own element.
        if let Ok(h) = origin.host.to_str() {
            if h.bytes().all(is_token_byte) {
                let _ = write!(value, ";host={h}");
            } else if !h.contains(['"', '\\']) {
                let _ = write!(value, ";host=\"{h}\"");
            }
        }
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(FORWARDED.clone(), v);
        }
    }
}

/// RFC 7230 tchar.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// All values of a header joined with ", " (several headers = one list).
fn joined(headers: &HeaderMap, name: &HeaderName) -> String {
    let mut out = String::new();
    for v in headers.get_all(name) {
        if let Ok(s) = v.to_str() {
            let s = s.trim();
            if s.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(s);
        }
    }
    out
}

/// The leftmost comma-separated token of the first value: the outermost claim.
fn first_token(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?;
    Some(v.split(',').next()?.trim().to_string())
}

/// Only `http` or `https` ever leaves tlsfront (`ws`/`wss` break Tomcat and Spring).
fn normalise_proto(p: &str) -> Option<&'static str> {
    match p.to_ascii_lowercase().as_str() {
        "https" | "wss" => Some("https"),
        "http" | "ws" => Some("http"),
        _ => None,
    }
}

/// Walks the chain from the right, skipping trusted hops: the first untrusted
/// address is the client. An unparsable entry stops the walk (it cannot be trusted).
fn real_client(chain: &str, trusted: &TrustedProxies) -> Option<IpAddr> {
    let mut last = None;
    for entry in chain.rsplit(',') {
        let ip = parse_chain_entry(entry.trim())?;
        last = Some(ip);
        if !trusted.contains(ip) {
            return Some(ip);
        }
    }
    last
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:80`.
fn parse_chain_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest
            .split_once(']')?
            .0
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
    }
    let (ip, _port) = s.rsplit_once(':')?;
    ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(trusted: &[&str], all: bool) -> ForwardedPolicy {
        ForwardedPolicy {
            trusted: TrustedProxies::new(trusted.iter().map(|s| s.parse().unwrap()).collect()),
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: true,
            x_forwarded_port: true,
            x_real_ip: all,
            forwarded: all,
            strip_untrusted: vec![HeaderName::from_static("x-auth-user")],
        }
    }

    fn spoofed() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("7.7.7.7, 8.8.8.8"));
        h.append("x-forwarded-proto", HeaderValue::from_static("http"));
        h.append("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.append("x-forwarded-port", HeaderValue::from_static("80"));
        h.append("x-forwarded-prefix", HeaderValue::from_static("/evil"));
        h.append("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.append("forwarded", HeaderValue::from_static("for=6.6.6.6;proto=http"));
        h.append("x-forwarded-ssl", HeaderValue::from_static("off"));
        h
    }

    fn one(h: &HeaderMap, name: &str) -> String {
        let all: Vec<_> = h.get_all(name).iter().collect();
        assert_eq!(all.len(), 1, "{name} must have exactly one value: {all:?}");
        all[0].to_str().unwrap().to_string()
    }

    const HOST: HeaderValue = HeaderValue::from_static("app.example:8443");

    /// App servers that read `_` as `-` would take these for the real names.
    const UNDERSCORED: [&str; 5] = [
        "x_forwarded_for",
        "x_real_ip",
        "x-forwarded_host",
        "client_ip",
        "x_auth_user",
    ];

    #[test]
    fn underscore_spellings_of_identity_names_are_removed_too() {
        let mut h = HeaderMap::new();
        for name in UNDERSCORED {
            h.append(HeaderName::from_static(name), HeaderValue::from_static("6.6.6.6"));
        }
        h.append("x_request_id", HeaderValue::from_static("kept"));
        h.append("api_key", HeaderValue::from_static("kept"));
        let origin = RequestOrigin {
            peer_value: None,
            peer: "203.0.113.9".parse().unwrap(),
            host: &HOST,
            public_port: 8443,
        };
        apply(&mut h, &policy(&[], false), &origin);
        for name in UNDERSCORED {
            assert!(h.get(name).is_none(), "{name} reached the app");
        }
        assert_eq!(one(&h, "x_request_id"), "kept");
        assert_eq!(one(&h, "api_key"), "kept");
        assert_eq!(one(&h, "x-forwarded-for"), "203.0.113.9");
    }

    #[test]
    fn untrusted_v4_peer_cannot_inject_anything() {
        let mut h = spoofed();
        let origin = RequestOrigin {
            peer_value: None,
            peer: "203.0.113.9".parse().unwrap(),
            host: &HOST,
            public_port: 8443,
        };
        let view = apply(&mut h, &policy(&[], true), &origin);
        assert_eq!(view.client_ip, origin.peer);
        assert!(!view.via_trusted_proxy);
        assert_eq!(one(&h, "x-forwarded-for"), "203.0.113.9");
        assert_eq!(one(&h, "x-forwarded-proto"), "https");
        assert_eq!(one(&h, "x-forwarded-host"), "app.example:8443");
        assert_eq!(one(&h, "x-forwarded-port"), "8443");
        assert_eq!(one(&h, "x-real-ip"), "203.0.113.9");
        assert_eq!(
            one(&h, "forwarded"),
            "for=203.0.113.9;proto=https;host=\"app.example:8443\""
        );
        assert!(h.get("x-forwarded-prefix").is_none());
        assert!(h.get("x-forwarded-ssl").is_none());
        let all: String = h.iter().map(|(_, v)| v.to_str().unwrap().to_string()).collect();
        assert!(!all.contains("6.6.6.6") && !all.contains("evil") && !all.contains("8.8.8.8"));
    }

    #[test]
    fn precomputed_peer_value_gives_the_same_headers() {
        let peer = "203.0.113.9".parse().unwrap();
        let value = HeaderValue::from_static("203.0.113.9");
        let (mut a, mut b) = (spoofed(), spoofed());
        let base = RequestOrigin {
            peer_value: None,
            peer,
            host: &HOST,
            public_port: 8443,
        };
        apply(&mut a, &policy(&[], true), &base);
        apply(
            &mut b,
            &policy(&[], true),
            &RequestOrigin {
                peer_value: Some(&value),
                ..base
            },
        );
        assert_eq!(a, b);
    }

    #[test]
    fn untrusted_v6_peer() {
        let mut h = spoofed();
        let origin = RequestOrigin {
            peer_value: None,
            peer: "2001:db8::7".parse().unwrap(),
            host: &HOST,
            public_port: 443,
        };
        apply(&mut h, &policy(&["10.0.0.0/8"], true), &origin);
        assert_eq!(one(&h, "x-forwarded-for"), "2001:db8::7");
        assert_eq!(one(&h, "x-forwarded-port"), "443");
        assert!(one(&h, "forwarded").starts_with("for=\"[2001:db8::7]\";proto=https"));
    }

    #[test]
    fn ipv4_mapped_peer_is_shown_as_ipv4() {
        let mut h = HeaderMap::new();
        let origin = RequestOrigin {
            peer_value: None,
            peer: "::ffff:192.0.2.1".parse().unwrap(),
            host: &HOST,
            public_port: 8443,
        };
        let view = apply(&mut h, &policy(&["192.0.2.0/24"], false), &origin);
        assert!(view.via_trusted_proxy);
        assert_eq!(one(&h, "x-forwarded-for"), "192.0.2.1");
    }

    #[test]
    fn trusted_peer_extends_chain_and_keeps_outer_https() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.4"));
        h.append("x-forwarded-proto", HeaderValue::from_static("https, http"));
        h.append("x-forwarded-host", HeaderValue::from_static("www.example.com"));
        h.append("x-forwarded-port", HeaderValue::from_static("443"));
        h.append("forwarded", HeaderValue::from_static("for=198.51.100.4;proto=https"));
        let origin = RequestOrigin {
            peer_value: None,
            peer: "10.1.2.3".parse().unwrap(),
            host: &HOST,
            public_port: 8443,
        };
        let view = apply(&mut h, &policy(&["10.0.0.0/8"], true), &origin);
        assert!(view.via_trusted_proxy);
        assert_eq!(view.client_ip, "198.51.100.4".parse::<IpAddr>().unwrap());
        assert_eq!(one(&h, "x-forwarded-for"), "198.51.100.4, 10.1.2.3");
        assert_eq!(one(&h, "x-forwarded-proto"), "https");
        assert_eq!(one(&h, "x-forwarded-host"), "www.example.com");
        assert_eq!(one(&h, "x-forwarded-port"), "443");
        assert_eq!(one(&h, "x-real-ip"), "198.51.100.4");
        assert_eq!(
            one(&h, "forwarded"),
            "for=198.51.100.4;proto=https, for=10.1.2.3;proto=https;host=\"app.example:8443\""
        );
    }

    #[test]
    fn trusted_peer_without_claims_gets_the_truth() {
        let mut h = HeaderMap::new();
        let origin = RequestOrigin {
            peer_value: None,
            peer: "::1".parse().unwrap(),
            host: &HOST,
            public_port: 9443,
        };
        apply(&mut h, &policy(&["::1/128"], false), &origin);
        assert_eq!(one(&h, "x-forwarded-for"), "::1");
        assert_eq!(one(&h, "x-forwarded-proto"), "https");
        assert_eq!(one(&h, "x-forwarded-host"), "app.example:8443");
        assert_eq!(one(&h, "x-forwarded-port"), "9443");
    }

    #[test]
    fn trusted_peer_ws_proto_is_normalised_and_junk_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("wss"));
        let origin = RequestOrigin {
            peer_value: None,
            peer: "10.0.0.1".parse().unwrap(),
            host: &HOST,
            public_port: 8443,
        };
        apply(&mut h, &policy(&["10.0.0.0/8"], false), &origin);
        assert_eq!(one(&h, "x-forwarded-proto"), "https");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        h.insert("x-forwarded-port", HeaderValue::from_static("99999"));
        apply(&mut h, &policy(&["10.0.0.0/8"], false), &origin);
        assert_eq!(one(&h, "x-forwarded-proto"), "https");
        assert_eq!(one(&h, "x-forwarded-port"), "8443");
    }

    #[test]
    fn real_client_skips_trusted_hops_and_stops_at_junk() {
        let t = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            real_client("1.1.1.1, 10.0.0.2, 10.0.0.1", &t),
            Some("1.1.1.1".parse().unwrap())
        );
        assert_eq!(
            real_client("6.6.6.6, 2.2.2.2, 10.0.0.1", &t),
            Some("2.2.2.2".parse().unwrap())
        );
        assert_eq!(real_client("unknown, 10.0.0.1", &t), None);
        assert_eq!(
            real_client("[2001:db8::1]:4711, 10.0.0.1", &t),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(real_client("10.0.0.3, 10.0.0.1", &t), Some("10.0.0.3".parse().unwrap()));
    }

    #[test]
    fn disabled_headers_are_still_stripped_from_untrusted() {
        let mut h = spoofed();
        let mut p = policy(&[], false);
        p.x_forwarded_for = false;
        p.x_forwarded_host = false;
        let origin = RequestOrigin {
            peer_value: None,
            peer: "192.0.2.1".parse().unwrap(),
            host: &HOST,
            public_port: 8443,
        };
        apply(&mut h, &p, &origin);
        assert!(h.get("x-forwarded-for").is_none());
        assert!(h.get("x-forwarded-host").is_none());
        assert!(h.get("x-real-ip").is_none());
        assert!(h.get("forwarded").is_none());
        assert_eq!(one(&h, "x-forwarded-proto"), "https");
    }

    /// Every name the issue found reaching the app, every built-in identity
    /// header, any `X-Forwarded-*` and the configured extra names: all gone
    /// from an untrusted peer, all kept from a trusted one.
    #[test]
    fn identity_headers_from_untrusted_peers_are_removed() {
        let mut names: Vec<&str> = vec![
            "x-forwarded-client-cert",
            "x-forwarded-uri",
            "x-forwarded-server",
            "x-forwarded-user",
            "X-Client-IP",
            "True-Client-IP",
            "CF-Connecting-IP",
            "X-Original-Forwarded-For",
            "x-auth-user",
        ];
        names.extend_from_slice(IDENTITY_HEADERS);
        let names: std::collections::BTreeSet<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let forged = || {
            let mut h = HeaderMap::new();
            for n in &names {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_static("6.6.6.6"),
                );
            }
            h.append("x-request-id", HeaderValue::from_static("kept"));
            h
        };
        let untrusted = RequestOrigin {
            peer_value: None,
            peer: "203.0.113.9".parse().unwrap(),
            host: &HOST,
            public_port: 8443,
        };
        let mut h = forged();
        apply(&mut h, &policy(&[], true), &untrusted);
        for (name, value) in &h {
            assert_ne!(value, "6.6.6.6", "{name} from an untrusted peer reached the app");
        }
        assert!(!h.iter().any(|(_, v)| v.to_str().unwrap().contains("6.6.6.6")));
        assert_eq!(one(&h, "x-request-id"), "kept");

        let mut h = forged();
        let trusted = RequestOrigin {
            peer: "10.0.0.2".parse().unwrap(),
            ..untrusted
        };
        apply(&mut h, &policy(&["10.0.0.0/8"], true), &trusted);
        assert_eq!(one(&h, "x-forwarded-client-cert"), "6.6.6.6");
        assert_eq!(one(&h, "true-client-ip"), "6.6.6.6");
        assert_eq!(one(&h, "x-auth-user"), "6.6.6.6");
    }

    #[test]
    fn ordinary_headers_are_not_identity_headers() {
        for n in [
            "x-request-id",
            "x-forwarded",
            "x-forwardedfor",
            "cookie",
            "via",
            "x-csrf-token",
            "user-agent",
        ] {
            let name = HeaderName::from_static(n);
            assert_eq!(is_forged_identity(&name), n == "x-forwarded", "{n}");
        }
        assert!(is_forged_identity(&HeaderName::from_static("x-forwarded-anything")));
        for n in IDENTITY_HEADERS {
            assert_eq!(n.to_ascii_lowercase(), *n, "{n} must be lower case to ever match");
            assert!(is_forged_identity(&HeaderName::from_static(n)));
        }
    }

    #[test]
    fn readme_lists_every_identity_header() {
        let readme = include_str!("../../docs/security.md");
        for n in IDENTITY_HEADERS {
            assert!(readme.contains(&format!("`{n}`")), "README does not list {n}");
        }
    }
}
