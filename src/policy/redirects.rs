//! Location / Content-Location / Refresh rewriting.
//!
//! An app behind a proxy often builds absolute URLs from what it sees: its own
//! address (`http://127.0.0.1:8000/login`) or the public host with the wrong
//! scheme (`http://app.example/login`). Either sends the browser away from
//! https, and the session cookie (now `Secure`) is not sent there. Those URLs
//! are rewritten to `https://<public host>[:port]/…`; relative URLs and other
//! hosts are left alone.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LOCATION, LOCATION};
use http::uri::Authority;

static REFRESH: HeaderName = HeaderName::from_static("refresh");

/// What a URL must be compared with, and what it becomes.
#[derive(Debug, Clone, Copy)]
pub struct RedirectContext<'a> {
    /// The upstream's own address, as configured.
    pub upstream: &'a Authority,
    /// The host the client asked for, without port (`[::1]` keeps brackets).
    pub public_host: &'a str,
    /// The port clients use for https (443 is left out of URLs).
    pub public_port: u16,
}

/// Which header was rewritten, from what to what (for logs and hints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Header name.
    pub header: &'static str,
    /// The URL the app sent.
    pub from: String,
    /// It pointed at the upstream's own address (else: the public host over http).
    pub to_upstream: bool,
}

/// Rewrites the redirect headers of a response in place.
pub fn rewrite_response(headers: &mut HeaderMap, ctx: &RedirectContext<'_>) -> Vec<Rewrite> {
    let mut done = Vec::new();
    for (name, label) in [(&LOCATION, "Location"), (&CONTENT_LOCATION, "Content-Location")] {
        if let Some((value, latin1)) = headers.get(name).map(decode) {
            if let Some((new, to_upstream)) = rewrite(&value, ctx) {
                let from = value.clone();
                if let Some(v) = encode(&new, latin1) {
                    headers.insert(name.clone(), v);
                    done.push(Rewrite {
                        header: label,
                        from,
                        to_upstream,
                    });
                }
            }
        }
    }
    if let Some((value, latin1)) = headers.get(&REFRESH).map(decode) {
        if let Some(new) = rewrite_refresh(&value, ctx) {
            let from = value.clone();
            if let Some(v) = encode(&new, latin1) {
                headers.insert(REFRESH.clone(), v);
                let to_upstream = from.contains(ctx.upstream.as_str());
                done.push(Rewrite {
                    header: "Refresh",
                    from,
                    to_upstream,
                });
            }
        }
    }
    done
}

/// Header bytes as text without losing any: UTF-8 when valid, else one char
/// per byte (Latin-1). The flag says which, for [`encode`].
pub(crate) fn decode(v: &HeaderValue) -> (String, bool) {
    match std::str::from_utf8(v.as_bytes()) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (v.as_bytes().iter().map(|&b| b as char).collect(), true),
    }
}

/// The inverse of [`decode`]; rewriting only ever adds ASCII.
pub(crate) fn encode(s: &str, latin1: bool) -> Option<HeaderValue> {
    if latin1 {
        let bytes: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
        HeaderValue::from_bytes(&bytes?).ok()
    } else {
        HeaderValue::from_bytes(s.as_bytes()).ok()
    }
}

/// `Refresh: 5; url=http://…` (url may be quoted, any case).
pub fn rewrite_refresh(value: &str, ctx: &RedirectContext<'_>) -> Option<String> {
    map_refresh_url(value, |url| rewrite_url(url, ctx))
}

/// Replaces the URL of a `Refresh` value with `f(url)`, keeping every other byte.
pub fn map_refresh_url(value: &str, f: impl FnOnce(&str) -> Option<String>) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let semi = lower.find([';', ','])?;
    let after = &lower[semi + 1..];
    let url_pos = semi + 1 + after.find("url")?;
    let rest = &value[url_pos + 3..];
    let eq = rest.find('=')?;
    if !rest[..eq].trim().is_empty() {
        return None;
    }
    let mut start = url_pos + 3 + eq + 1;
    start += value[start..].len() - value[start..].trim_start().len();
    let mut end = value.len();
    if let Some(q @ ('"' | '\'')) = value[start..].chars().next() {
        start += 1;
        end = value[start..].find(q).map_or(value.len(), |e| start + e);
    }
    let url = value[start..end].trim_end();
    let new = f(url)?;
    Some(format!("{}{}{}", &value[..start], new, &value[start + url.len()..]))
}

/// Rewrites one URL; `None` when it must stay as it is.
pub fn rewrite_url(url: &str, ctx: &RedirectContext<'_>) -> Option<String> {
    rewrite(url, ctx).map(|(new, _)| new)
}

/// The new URL, and whether the old one pointed at the upstream's own address.
fn rewrite(url: &str, ctx: &RedirectContext<'_>) -> Option<(String, bool)> {
    let (scheme, rest) = if let Some(r) = strip_prefix_ignore_case(url, "http://") {
        (Some("http"), r)
    } else if let Some(r) = strip_prefix_ignore_case(url, "https://") {
        (Some("https"), r)
    } else if let Some(r) = url.strip_prefix("//") {
        (None, r)
    } else {
        return None;
    };
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = split_host_port(authority)?;
    let default_port = if scheme == Some("https") { 443 } else { 80 };
    let port = port.unwrap_or(default_port);

    let is_upstream = port == ctx.upstream.port_u16().unwrap_or(80)
        && (host.eq_ignore_ascii_case(ctx.upstream.host())
            || (is_loopback_name(ctx.upstream.host()) && is_loopback_name(host)));
    let is_public_over_http = scheme != Some("https") && host.eq_ignore_ascii_case(ctx.public_host);
    if !(is_upstream || is_public_over_http) {
        return None;
    }
    let mut out = String::with_capacity(url.len() + 16);
    out.push_str("https://");
    out.push_str(ctx.public_host);
    if ctx.public_port != 443 {
        out.push(':');
        out.push_str(&ctx.public_port.to_string());
    }
    out.push_str(tail);
    (out != url).then_some((out, is_upstream))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()))
        .then(|| &s[prefix.len()..])
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`. Host keeps brackets.
pub fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.starts_with('[') {
        let close = authority.find(']')?;
        let host = &authority[..=close];
        let rest = &authority[close + 1..];
        return match rest.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((authority, None)),
    }
}

fn is_loopback_name(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(up: &'a Authority, host: &'a str, port: u16) -> RedirectContext<'a> {
        RedirectContext {
            upstream: up,
            public_host: host,
            public_port: port,
        }
    }

    #[test]
    fn upstream_address_becomes_public_https() {
        let up: Authority = "127.0.0.1:8000".parse().unwrap();
        let c = ctx(&up, "localhost", 8443);
        assert_eq!(
            rewrite_url("http://127.0.0.1:8000/login?next=%2F", &c).unwrap(),
            "https://localhost:8443/login?next=%2F"
        );
        assert_eq!(
            rewrite_url("http://localhost:8000/", &c).unwrap(),
            "https://localhost:8443/"
        );
        assert_eq!(
            rewrite_url("http://[::1]:8000/a#frag", &c).unwrap(),
            "https://localhost:8443/a#frag"
        );
        assert_eq!(
            rewrite_url("HTTP://127.0.0.1:8000", &c).unwrap(),
            "https://localhost:8443"
        );
        assert_eq!(
            rewrite_url("//127.0.0.1:8000/x", &c).unwrap(),
            "https://localhost:8443/x"
        );
    }

    #[test]
    fn public_host_over_http_becomes_https_and_443_is_left_out() {
        let up: Authority = "app:5000".parse().unwrap();
        let c = ctx(&up, "www.example.com", 443);
        assert_eq!(
            rewrite_url("http://www.example.com/dashboard", &c).unwrap(),
            "https://www.example.com/dashboard"
        );
        assert_eq!(
            rewrite_url("http://WWW.example.com:8080/x", &c).unwrap(),
            "https://www.example.com/x"
        );
        assert_eq!(
            rewrite_url("http://app:5000/x?y=1", &c).unwrap(),
            "https://www.example.com/x?y=1"
        );
    }

    #[test]
    fn others_are_left_alone() {
        let up: Authority = "127.0.0.1:8000".parse().unwrap();
        let c = ctx(&up, "localhost", 8443);
        for url in [
            "/login",
            "login",
            "?a=b",
            "https://localhost:8443/ok",
            "https://accounts.google.com/o/oauth2/auth?redirect_uri=http://127.0.0.1:8000/cb",
            "http://127.0.0.1:9000/other-port",
            "http://evil.example/",
            "http://user@127.0.0.1:8000/",
            "mailto:a@b",
            "",
        ] {
            assert_eq!(rewrite_url(url, &c), None, "{url}");
        }
    }

    #[test]
    fn ipv6_public_host() {
        let up: Authority = "127.0.0.1:8000".parse().unwrap();
        let c = ctx(&up, "[::1]", 8443);
        assert_eq!(rewrite_url("http://[::1]/x", &c).unwrap(), "https://[::1]:8443/x");
    }

    #[test]
    fn refresh_forms() {
        let up: Authority = "127.0.0.1:8000".parse().unwrap();
        let c = ctx(&up, "localhost", 8443);
        assert_eq!(
            rewrite_refresh("0; url=http://127.0.0.1:8000/next", &c).unwrap(),
            "0; url=https://localhost:8443/next"
        );
        assert_eq!(
            rewrite_refresh("5;URL='http://localhost/x'", &c).unwrap(),
            "5;URL='https://localhost:8443/x'"
        );
        assert_eq!(
            rewrite_refresh("3; Url = \"http://127.0.0.1:8000/\" ", &c).unwrap(),
            "3; Url = \"https://localhost:8443/\" "
        );
        assert_eq!(rewrite_refresh("5", &c), None);
        assert_eq!(rewrite_refresh("0; url=/relative", &c), None);
    }

    #[test]
    fn response_headers() {
        let up: Authority = "127.0.0.1:8000".parse().unwrap();
        let c = ctx(&up, "localhost", 8443);
        let mut h = HeaderMap::new();
        h.insert(LOCATION, HeaderValue::from_static("http://127.0.0.1:8000/login"));
        h.insert(CONTENT_LOCATION, HeaderValue::from_static("/relative"));
        h.insert("refresh", HeaderValue::from_static("1; url=http://localhost:8443/x"));
        let done = rewrite_response(&mut h, &c);
        assert_eq!(done.len(), 2);
        assert_eq!(h[LOCATION], "https://localhost:8443/login");
        assert_eq!(h[CONTENT_LOCATION], "/relative");
        assert_eq!(h["refresh"], "1; url=https://localhost:8443/x");
    }

    #[test]
    fn non_ascii_locations_are_rewritten_byte_for_byte() {
        // Found by fuzzing: a UTF-8 (or Latin-1) path left the upstream address in place.
        let up: Authority = "127.0.0.1:8000".parse().unwrap();
        let c = ctx(&up, "localhost", 8443);
        let mut h = HeaderMap::new();
        h.insert(
            LOCATION,
            HeaderValue::from_bytes("http://127.0.0.1:8000/café".as_bytes()).unwrap(),
        );
        h.insert(
            CONTENT_LOCATION,
            HeaderValue::from_bytes(b"http://127.0.0.1:8000/caf\xe9").unwrap(),
        );
        rewrite_response(&mut h, &c);
        assert_eq!(h[LOCATION].as_bytes(), "https://localhost:8443/café".as_bytes());
        assert_eq!(h[CONTENT_LOCATION].as_bytes(), b"https://localhost:8443/caf\xe9");
    }

    #[test]
    fn never_panics_on_odd_input() {
        let up: Authority = "127.0.0.1:8000".parse().unwrap();
        let c = ctx(&up, "localhost", 8443);
        for s in [
            "http://",
            "http://[",
            "http://[::1",
            "http://:/",
            "http://a:99999/",
            "//",
            "0;url",
            "0;url=",
            "é;url=http://127.0.0.1:8000/é",
        ] {
            let _ = rewrite_url(s, &c);
            let _ = rewrite_refresh(s, &c);
        }
        assert_eq!(
            rewrite_refresh("é;url=http://127.0.0.1:8000/é", &c).unwrap(),
            "é;url=https://localhost:8443/é"
        );
    }
}
