//! The per-request header policy on a realistic request/response pair, for
//! `bench/policy.sh` (run under callgrind: instruction counts are stable on
//! a noisy machine). One iteration = what tlsfront does to one request and
//! its response: hop-by-hop removal both ways, forwarded headers from an
//! untrusted peer, Set-Cookie hardening, redirect rewriting.
//!
//! usage: policy_bench ITERATIONS

use std::hint::black_box;

use http::header::{HeaderMap, HeaderValue};
use tlsfront::policy::cookies::{harden_response, CookiePolicy};
use tlsfront::policy::forwarded::{apply, ForwardedPolicy, RequestOrigin};
use tlsfront::policy::{hop, redirects};

fn request() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("referer", "https://app.example.com/login"),
        (
            "cookie",
            "session=eyJfZnJlc2giOmZhbHNlLCJ1c2VyIjoxfQ.ZkX1bA.abcDEF; csrftoken=Zm9vYmFy",
        ),
        ("x-forwarded-for", "6.6.6.6"),
        ("upgrade-insecure-requests", "1"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
    ] {
        h.insert(n, HeaderValue::from_static(v));
    }
    h
}

fn response() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert("content-length", HeaderValue::from_static("199"));
    h.insert("location", HeaderValue::from_static("http://127.0.0.1:8000/dashboard"));
    h.insert("vary", HeaderValue::from_static("Cookie"));
    h.append(
        "set-cookie",
        HeaderValue::from_static("session=eyJfZnJlc2giOmZhbHNlLCJ1c2VyIjoxfQ.ZkX1bA.abcDEF; HttpOnly; Path=/"),
    );
    h.append(
        "set-cookie",
        HeaderValue::from_static("remember_token=1|abc; Expires=Fri, 20 Nov 2027 10:00:00 GMT; Path=/"),
    );
    h
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let forwarded = ForwardedPolicy::from(&tlsfront::config::Forwarded::default());
    let cookies = CookiePolicy::from(&tlsfront::config::Cookies::default());
    let upstream: http::uri::Authority = "127.0.0.1:8000".parse().expect("valid authority");
    let host = HeaderValue::from_static("app.example.com");
    let peer_value = HeaderValue::from_static("203.0.113.9");
    let (req, resp) = (request(), response());
    let mut sum = 0usize;
    for _ in 0..n {
        let mut req = black_box(req.clone());
        hop::strip(&mut req);
        let origin = RequestOrigin {
            peer: "203.0.113.9".parse().expect("valid IP"),
            host: &host,
            public_port: 443,
            peer_value: Some(&peer_value),
        };
        apply(&mut req, &forwarded, &origin);
        let mut resp = black_box(resp.clone());
        hop::strip(&mut resp);
        harden_response(&mut resp, &cookies);
        let ctx = redirects::RedirectContext {
            upstream: &upstream,
            public_host: "app.example.com",
            public_port: 443,
        };
        redirects::rewrite_response(&mut resp, &ctx);
        sum += req.len() + resp.len();
    }
    println!("{n} iterations, checksum {sum}");
}
