//! Location / Content-Location / Refresh rewriting (`tlsfront::policy::redirects`).
//!
//! Input: `TEXT` or `TEXT\n\nCONTROLS`. TEXT (lossy UTF-8) is used as a URL, as
//! a Refresh value and as response headers. CONTROLS are decoded with
//! `arbitrary`: the redirect context (upstream authority, public host and
//! port, from realistic pools or generated) and a structurally generated URL
//! on a host that is neither the upstream's nor the public one. No controls =
//! upstream 127.0.0.1:8000, public host localhost, port 8443.
//!
//! Properties:
//!  1. never panics (`rewrite_url`, `rewrite_refresh`, `rewrite_response`,
//!     `split_host_port`);
//!  2. `rewrite_url` → `Some(out)`: `out` is `https://` + public host
//!     (+ `:port` unless 443), then end or `/ ? #`, and the rest of `out` is
//!     the input's own tail (path, query, fragment kept byte for byte);
//!  3. idempotent: rewriting `out` again gives `None` (URL, Refresh, and a
//!     second `rewrite_response` pass rewrites nothing);
//!  4. `rewrite_refresh` → `Some(out)`: only the URL changed (the bytes before
//!     it are kept) and the new URL is what `rewrite_url` makes of the old;
//!  5. a URL whose host is neither the upstream's nor the public host (and not
//!     a loopback name when the upstream is loopback) is never rewritten, with
//!     any scheme spelling, port and tail;
//!  6. `split_host_port` returns a host that is a prefix of its input;
//!  7. a URL at the upstream's own address (its host, any case, or any
//!     loopback name when the upstream is loopback; its port, or none when
//!     that is the scheme's default), or at the public host over `http://` or
//!     `//` (any port), IS rewritten: to `https://` + public host (+ port) +
//!     the same tail, as a URL, as Location/Content-Location and in Refresh.
//!     A rewriter that never rewrites fails here.
#![no_main]

mod common;

use arbitrary::{Arbitrary, Unstructured};
use http::header::{HeaderMap, HeaderValue, CONTENT_LOCATION, LOCATION};
use http::uri::Authority;
use libfuzzer_sys::fuzz_target;
use tlsfront::policy::redirects::{rewrite_refresh, rewrite_response, rewrite_url, split_host_port, RedirectContext};

const UPSTREAMS: &[&str] = &[
    "127.0.0.1:8000",
    "localhost:5000",
    "[::1]:8080",
    "app:5000",
    "10.0.0.5:80",
    "web.internal:8080",
    "127.0.0.1:443",
    "localhost:8443",
    "LocalHost:3000",
];
const PUBLIC_HOSTS: &[&str] = &[
    "localhost",
    "www.example.com",
    "[::1]",
    "app.example",
    "127.0.0.1",
    "example.com",
    "WWW.Example.COM",
    "[2001:db8::1]",
];
/// Hosts that are never the upstream or the public host of the pools above
/// (look-alikes on purpose). Generated ones are checked at run time.
const OTHER_HOSTS: &[&str] = &[
    "evil.example",
    "accounts.google.com",
    "10.0.0.1",
    "[2001:db8::2]",
    "127.0.0.1.evil.example",
    "localhost.evil.example",
    "localhost.",
    "evil-localhost",
    "127.0.0.2.nip.io",
    "[::2]",
    "0.0.0.0",
    "example.com.evil",
    "xn--80ak6aa92e.com",
    "app.example.evil",
    "www.example.co",
];

#[derive(Arbitrary, Debug)]
enum HostGen {
    Pool(u8),
    Custom(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum PortGen {
    Https,
    Pool(u8),
    Any(u16),
}

#[derive(Arbitrary, Debug)]
enum OtherHost {
    Pool(u8),
    /// Letters, digits, dots and dashes.
    Labels(Vec<u8>),
    /// The upstream's or public host with something appended.
    Suffixed {
        of_public: bool,
        suffix: u8,
    },
    /// Something prepended to the upstream's or public host.
    Prefixed {
        of_public: bool,
        prefix: u8,
    },
    V4([u8; 4]),
    V6([u16; 8]),
}

#[derive(Arbitrary, Debug)]
enum SchemeGen {
    Http,
    Https,
    HttpUpper,
    HttpsMixed,
    SchemeRelative,
}

#[derive(Arbitrary, Debug)]
enum UrlPort {
    None,
    Upstream,
    Public,
    Any(u16),
}

/// A URL that must be rewritten (property 7).
#[derive(Arbitrary, Debug)]
enum OwnUrl {
    /// The upstream's address: which spelling of its host (exact, case
    /// flipped, a loopback alias), scheme, and whether the port is written.
    Upstream {
        host: u8,
        scheme: SchemeGen,
        port_written: bool,
    },
    /// The public host over plain http (or scheme-relative), any port.
    PublicOverHttp {
        flip_case: bool,
        scheme_relative: bool,
        upper: bool,
        port: Option<u16>,
    },
}

#[derive(Arbitrary, Debug)]
struct Controls {
    upstream: HostGen,
    upstream_port: u16,
    public_host: HostGen,
    public_port: PortGen,
    other: OtherHost,
    scheme: SchemeGen,
    port: UrlPort,
    own: OwnUrl,
}

/// Maps bytes onto a DNS-ish name: `[a-z0-9.-]`, never empty.
fn labels(bytes: &[u8], max: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789.-";
    let s: String = bytes
        .iter()
        .take(max)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    if s.is_empty() {
        "h".into()
    } else {
        s
    }
}

fn is_loopback_name(host: &str) -> bool {
    let h = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn pick<'a>(pool: &[&'a str], i: u8) -> &'a str {
    pool[i as usize % pool.len()]
}

const LOOPBACK_NAMES: &[&str] = &["localhost", "127.0.0.1", "[::1]", "LOCALHOST", "127.0.0.2"];

fn flip_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Property 7: a URL on the upstream's own address or on the public host
/// over http must come out as `https://<public>[:port]<tail>`, wherever it is
/// sent.
fn check_own_url(own: &OwnUrl, tail: &str, raw_tail: &[u8], ctx: &RedirectContext<'_>) {
    let up_host = ctx.upstream.host();
    let up_port = ctx.upstream.port_u16().unwrap_or(80);
    let authority = match own {
        OwnUrl::Upstream {
            host,
            scheme,
            port_written,
        } => {
            let (scheme, default_port) = match scheme {
                SchemeGen::Http => ("http://", 80),
                SchemeGen::HttpUpper => ("HTTP://", 80),
                SchemeGen::Https => ("https://", 443),
                SchemeGen::HttpsMixed => ("hTTpS://", 443),
                SchemeGen::SchemeRelative => ("//", 80),
            };
            let host = match host % 3 {
                1 => flip_case(up_host),
                2 if is_loopback_name(up_host) => pick(LOOPBACK_NAMES, host / 3).to_string(),
                _ => up_host.to_string(),
            };
            // The port may be left out only when it is the scheme's default.
            if *port_written || up_port != default_port {
                format!("{scheme}{host}:{up_port}")
            } else {
                format!("{scheme}{host}")
            }
        }
        OwnUrl::PublicOverHttp {
            flip_case: flip,
            scheme_relative,
            upper,
            port,
        } => {
            let scheme = match (scheme_relative, upper) {
                (true, _) => "//",
                (false, true) => "HTTP://",
                (false, false) => "http://",
            };
            let host = if *flip {
                flip_case(ctx.public_host)
            } else {
                ctx.public_host.to_string()
            };
            match port {
                Some(p) => format!("{scheme}{host}:{p}"),
                None => format!("{scheme}{host}"),
            }
        }
    };
    let url = format!("{authority}{tail}");
    let wanted = format!("{}{tail}", https_prefix(ctx));
    // Already what it would become (the upstream is the public https
    // address): nothing to do, by design.
    let expected = (wanted != url).then_some(wanted);
    assert_eq!(
        rewrite_url(&url, ctx),
        expected,
        "{own:?}: {url:?} must become https on the public host ({ctx:?})"
    );
    let Some(expected) = expected else {
        return;
    };
    let refresh = format!("0; url={url}");
    assert_eq!(
        rewrite_refresh(&refresh, ctx),
        Some(format!("0; url={expected}")),
        "Refresh {refresh:?} ({ctx:?})"
    );
    let raw_url = [authority.as_bytes(), raw_tail].concat();
    if let Ok(v) = HeaderValue::from_bytes(&raw_url) {
        let mut h = HeaderMap::new();
        h.insert(LOCATION, v.clone());
        h.insert(CONTENT_LOCATION, v);
        let done = rewrite_response(&mut h, ctx);
        let wanted = [https_prefix(ctx).as_bytes(), raw_tail].concat();
        assert_eq!(done.len(), 2, "{raw_url:?} not rewritten in a response ({ctx:?})");
        assert_eq!(h[LOCATION].as_bytes(), &wanted[..], "Location ({ctx:?})");
        assert_eq!(
            h[CONTENT_LOCATION].as_bytes(),
            &wanted[..],
            "Content-Location ({ctx:?})"
        );
    }
}

fn check_url(url: &str, ctx: &RedirectContext<'_>) {
    let Some(out) = rewrite_url(url, ctx) else {
        return;
    };
    let prefix = https_prefix(ctx);
    let tail = out
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{url:?} → {out:?} does not start with {prefix:?} ({ctx:?})"));
    assert!(
        tail.is_empty() || tail.starts_with(['/', '?', '#']),
        "{url:?} → {out:?}: the public authority runs on into {tail:?} ({ctx:?})"
    );
    assert!(
        url.ends_with(tail),
        "{url:?} → {out:?}: tail {tail:?} is not the input's ({ctx:?})"
    );
    if let Some(again) = rewrite_url(&out, ctx) {
        panic!("not idempotent: {url:?} → {out:?} → {again:?} ({ctx:?})");
    }
}

fn check_refresh(value: &str, ctx: &RedirectContext<'_>) {
    let Some(out) = rewrite_refresh(value, ctx) else {
        return;
    };
    if let Some(again) = rewrite_refresh(&out, ctx) {
        panic!("Refresh not idempotent: {value:?} → {out:?} → {again:?} ({ctx:?})");
    }
    // 4. Only the URL changed: out = P + new + S and value = P + old + S with
    // rewrite_url(old) == new, for some split.
    let pre = value.bytes().zip(out.bytes()).take_while(|(a, b)| a == b).count();
    let post = value
        .bytes()
        .rev()
        .zip(out.bytes().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let prefix = https_prefix(ctx);
    let explained = out
        .match_indices(&prefix)
        .map(|(s, _)| s)
        .filter(|&s| s <= pre)
        .any(|s| {
            (0..=post).any(|l| {
                let (Some(old), Some(new)) = (value.get(s..value.len() - l), out.get(s..out.len().saturating_sub(l)))
                else {
                    return false;
                };
                out.len() - l >= s && rewrite_url(old, ctx).as_deref() == Some(new)
            })
        });
    assert!(
        explained,
        "Refresh {value:?} → {out:?}: more than the URL changed, or not as rewrite_url would ({ctx:?})"
    );
}

fn https_prefix(ctx: &RedirectContext<'_>) -> String {
    let mut prefix = format!("https://{}", ctx.public_host);
    if ctx.public_port != 443 {
        prefix.push_str(&format!(":{}", ctx.public_port));
    }
    prefix
}

/// `raw` as Location, Content-Location and Refresh of a response (any bytes
/// `http` accepts, UTF-8 or not).
fn check_response(raw: &[u8], ctx: &RedirectContext<'_>) {
    let Ok(v) = HeaderValue::from_bytes(raw) else {
        return;
    };
    let mut h = HeaderMap::new();
    h.insert(LOCATION, v.clone());
    h.insert(CONTENT_LOCATION, v.clone());
    h.insert("refresh", v);
    let first = rewrite_response(&mut h, ctx);
    let out = h[LOCATION].as_bytes().to_vec();
    assert_eq!(
        h[CONTENT_LOCATION].as_bytes(),
        &out[..],
        "Location and Content-Location treated differently ({ctx:?})"
    );
    match std::str::from_utf8(raw) {
        Ok(text) => {
            for r in &first {
                assert_eq!(r.from, text, "Rewrite.from is not what the app sent");
            }
            // Exactly what rewrite_url does, byte for byte.
            let expected = rewrite_url(text, ctx).map_or(raw.to_vec(), String::into_bytes);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected),
                "rewrite_response disagrees with rewrite_url on {text:?} ({ctx:?})"
            );
        }
        Err(_) => {
            // Not UTF-8: if rewritten, only the scheme and authority changed.
            if out != raw {
                let prefix = https_prefix(ctx);
                let tail = out
                    .strip_prefix(prefix.as_bytes())
                    .unwrap_or_else(|| panic!("{raw:?} → {out:?} does not start with {prefix:?} ({ctx:?})"));
                assert!(
                    tail.is_empty() || matches!(tail[0], b'/' | b'?' | b'#'),
                    "{raw:?} → {out:?}: the public authority runs on ({ctx:?})"
                );
                assert!(
                    raw.ends_with(tail),
                    "{raw:?} → {out:?}: tail is not the input's ({ctx:?})"
                );
            }
        }
    }
    let snapshot = h.clone();
    let second = rewrite_response(&mut h, ctx);
    assert!(
        second.is_empty() && h == snapshot,
        "rewrite_response not idempotent: {raw:?} → {} then {second:?} ({ctx:?})",
        common::show(&snapshot)
    );
}

fuzz_target!(|data: &[u8]| {
    let (raw, controls) = common::split_blank_line(data);
    let text = String::from_utf8_lossy(raw);
    let mut u = Unstructured::new(controls);
    let Ok(c) = Controls::arbitrary(&mut u) else {
        return;
    };

    let upstream_str = match &c.upstream {
        HostGen::Pool(i) => pick(UPSTREAMS, *i).to_string(),
        HostGen::Custom(b) => format!("{}:{}", labels(b, 24), c.upstream_port),
    };
    let Ok(upstream) = upstream_str.parse::<Authority>() else {
        return;
    };
    let public_host = match &c.public_host {
        HostGen::Pool(i) => pick(PUBLIC_HOSTS, *i).to_string(),
        HostGen::Custom(b) => labels(b, 24),
    };
    let public_port = match c.public_port {
        PortGen::Https => 8443,
        PortGen::Pool(i) => [443, 8443, 80, 8000, 5000][i as usize % 5],
        PortGen::Any(p) => p,
    };
    let ctx = RedirectContext {
        upstream: &upstream,
        public_host: &public_host,
        public_port,
    };

    // 1.–4. on the raw text.
    for raw_line in raw.split(|&b| b == b'\n') {
        check_response(raw_line, &ctx);
    }
    for line in text.split('\n') {
        check_url(line, &ctx);
        check_refresh(line, &ctx);
        if let Some((host, _)) = split_host_port(line) {
            assert!(
                line.starts_with(host),
                "split_host_port({line:?}) host {host:?} is not a prefix"
            );
        }
    }

    // The first line as a URL's tail (path, query or fragment).
    let first_line = text.split('\n').next().unwrap_or("");
    let tail = if first_line.is_empty() || first_line.starts_with(['/', '?', '#']) {
        first_line.to_string()
    } else {
        format!("/{first_line}")
    };
    let raw_first = raw.split(|&b| b == b'\n').next().unwrap_or(b"");
    let mut raw_tail = Vec::with_capacity(raw_first.len() + 1);
    if !raw_first.is_empty() && !matches!(raw_first[0], b'/' | b'?' | b'#') {
        raw_tail.push(b'/');
    }
    raw_tail.extend_from_slice(raw_first);

    // 7. the upstream's own address, and the public host over http.
    check_own_url(&c.own, &tail, &raw_tail, &ctx);

    // 5. another host, structurally.
    let up_host = upstream.host();
    let other = match &c.other {
        OtherHost::Pool(i) => pick(OTHER_HOSTS, *i).to_string(),
        OtherHost::Labels(b) => labels(b, 40),
        OtherHost::Suffixed { of_public, suffix } => {
            let base = if *of_public { public_host.as_str() } else { up_host };
            let s = [".evil.example", "evil", "-x", ".", "0", ".localhost", "%2e"][*suffix as usize % 7];
            if base.ends_with(']') {
                format!("{}{s}", base.trim_end_matches(']')) + "]"
            } else {
                format!("{base}{s}")
            }
        }
        OtherHost::Prefixed { of_public, prefix } => {
            let base = if *of_public { public_host.as_str() } else { up_host };
            let p = ["evil.", "x", "www.", "-", "localhost."][*prefix as usize % 5];
            format!("{p}{base}")
        }
        OtherHost::V4(o) => std::net::Ipv4Addr::from(*o).to_string(),
        OtherHost::V6(s) => format!("[{}]", std::net::Ipv6Addr::from(*s)),
    };
    let same_as_upstream =
        other.eq_ignore_ascii_case(up_host) || (is_loopback_name(up_host) && is_loopback_name(&other));
    let same_as_public = other.eq_ignore_ascii_case(&public_host);
    if same_as_upstream || same_as_public {
        return;
    }
    let scheme = match c.scheme {
        SchemeGen::Http => "http://",
        SchemeGen::Https => "https://",
        SchemeGen::HttpUpper => "HTTP://",
        SchemeGen::HttpsMixed => "hTTpS://",
        SchemeGen::SchemeRelative => "//",
    };
    let port = match c.port {
        UrlPort::None => String::new(),
        UrlPort::Upstream => format!(":{}", upstream.port_u16().unwrap_or(80)),
        UrlPort::Public => format!(":{public_port}"),
        UrlPort::Any(p) => format!(":{p}"),
    };
    let url = format!("{scheme}{other}{port}{tail}");
    if let Some(out) = rewrite_url(&url, &ctx) {
        panic!("rewrote a URL on another host: {url:?} → {out:?} ({ctx:?})");
    }
    // The same URL as response headers, with the tail's raw bytes (UTF-8 or not).
    let mut raw_url = format!("{scheme}{other}{port}").into_bytes();
    raw_url.extend_from_slice(&raw_tail);
    if let Ok(v) = HeaderValue::from_bytes(&raw_url) {
        let mut h = HeaderMap::new();
        h.insert(LOCATION, v.clone());
        h.insert(
            "refresh",
            HeaderValue::from_bytes(&[b"0; url=", &raw_url[..]].concat()).unwrap_or(v),
        );
        let before = h.clone();
        let done = rewrite_response(&mut h, &ctx);
        assert!(
            done.is_empty() && h == before,
            "rewrote a response header to another host: {} → {} ({ctx:?})",
            common::show(&before),
            common::show(&h)
        );
    }
    let refresh = format!("0; url={url}");
    if let Some(out) = rewrite_refresh(&refresh, &ctx) {
        panic!("rewrote a Refresh to another host: {refresh:?} → {out:?} ({ctx:?})");
    }
});
