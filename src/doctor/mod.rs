//! `tlsfront doctor`: sends the app the requests tlsfront would send (with
//! honest forwarded headers) and again with forged ones, and explains in
//! plain language what breaks sessions or security, with the fix per
//! framework. The checks themselves are pure (`findings`); this module does
//! the requests and the report.

pub mod findings;
mod report;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONNECTION, COOKIE, HOST, LOCATION, SERVER};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::UpstreamUrl;
use findings::{
    check_cookies, check_location, check_urls, finding, is_session_name, Context, Finding, SeenCookie, Severity,
};
pub use report::{render_human, render_json};

/// The client IP the honest request claims (TEST-NET-2).
pub const HONEST_CLIENT: &str = "198.51.100.23";
/// The forged values of the spoofed request.
pub const SPOOFED_HOST: &str = "spoofed.invalid";
/// The forged client IP (TEST-NET-3).
pub const SPOOFED_CLIENT: &str = "203.0.113.66";

/// Slower than this for the response head is worth a warning.
const SLOW: Duration = Duration::from_secs(1);
/// Bytes of a body that are searched for URLs.
const BODY_LIMIT: usize = 512 * 1024;
/// Redirects followed per path, when they stay on the app.
const MAX_REDIRECTS: usize = 5;

/// What the doctor needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    /// The app.
    pub upstream: UpstreamUrl,
    /// `https://host[:port]` clients use.
    pub public_url: String,
    /// Pages to check.
    pub paths: Vec<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response timeout.
    pub response_timeout: Duration,
}

/// The outcome of a doctor run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The app's URL.
    pub upstream: String,
    /// The public URL.
    pub public_url: String,
    /// The framework the responses suggest.
    pub framework: Option<&'static str>,
    /// Findings, one per code, worst first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is an error (exit status 1).
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// No errors and no warnings.
    pub fn is_clean(&self) -> bool {
        !self.findings.iter().any(|f| f.severity <= Severity::Warning)
    }
}

/// The public URL, split.
fn public_parts(url: &str) -> Result<(String, u16, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("--public-url {url:?}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("--public-url {url:?}: expected https://host[:port]"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--public-url {url:?}: no host"))?;
    let port = authority.port_u16().unwrap_or(443);
    let host = authority.host().to_ascii_lowercase();
    let origin = if port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{port}")
    };
    Ok((host, port, origin))
}

/// One response as the doctor keeps it.
struct Seen {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: String,
    elapsed: Duration,
}

enum Fetch {
    Ok(Seen),
    /// No connection, no HTTP, or no response head in time.
    Unreachable(String),
}

/// Runs every check and returns the report.
pub async fn run(opts: &Options) -> Result<Report, String> {
    let (public_host, public_port, public_origin) = public_parts(&opts.public_url)?;
    let upstream_host = opts
        .upstream
        .authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let ctx = Context {
        public_host: public_host.clone(),
        public_port,
        public_origin: public_origin.clone(),
        upstream_authority: opts.upstream.authority.as_str().to_string(),
        upstream_is_loopback: upstream_host.eq_ignore_ascii_case("localhost")
            || upstream_host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    };
    let host_header = if public_port == 443 {
        public_host.clone()
    } else {
        format!("{public_host}:{public_port}")
    };
    let mut doctor = Doctor {
        opts,
        ctx,
        host_header,
        findings: Vec::new(),
        cookies: Vec::new(),
        servers: Vec::new(),
    };
    let paths = if opts.paths.is_empty() {
        vec!["/".to_string()]
    } else {
        opts.paths.clone()
    };
    for path in &paths {
        if !doctor.check_path(path).await {
            break;
        }
    }
    doctor.check_cookie_set();
    let framework = doctor.framework();
    let mut findings = dedupe(doctor.findings);
    findings.sort_by_key(|f| f.severity);
    Ok(Report {
        upstream: opts.upstream.to_string(),
        public_url: public_origin,
        framework,
        findings,
    })
}

struct Doctor<'a> {
    opts: &'a Options,
    ctx: Context,
    host_header: String,
    findings: Vec<Finding>,
    cookies: Vec<SeenCookie>,
    /// Server / X-Powered-By headers and cookie names, for framework detection.
    servers: Vec<String>,
}

impl Doctor<'_> {
    /// Checks one path; `false` when the app cannot be reached at all.
    async fn check_path(&mut self, start: &str) -> bool {
        let mut path = start.to_string();
        let mut jar: BTreeMap<String, String> = BTreeMap::new();
        let mut first_cookies: Option<Vec<SeenCookie>> = None;
        for _ in 0..=MAX_REDIRECTS {
            let evidence = format!("GET {path}");
            let seen = match self.fetch(&path, false, &jar).await {
                Fetch::Ok(seen) => seen,
                Fetch::Unreachable(e) => {
                    self.findings.push(finding(
                        "upstream_unreachable",
                        &self.ctx,
                        "",
                        format!("{evidence}: {e}"),
                    ));
                    return false;
                }
            };
            self.observe(&seen, &path, &evidence);
            let (cookie_findings, cookies) = check_cookies(&seen.headers, path_only(&path), &self.ctx, &evidence);
            self.findings.extend(cookie_findings);
            for c in &cookies {
                if c.deletion {
                    jar.remove(&c.name);
                } else {
                    jar.insert(c.name.clone(), c.value.clone());
                }
            }
            if first_cookies.is_none() {
                first_cookies = Some(cookies.clone());
            }
            self.cookies.extend(cookies);
            match self.next_hop(&seen) {
                Some(next) if seen.status.is_redirection() => path = next,
                _ => break,
            }
        }

        // The same page again with the cookies it gave: a session cookie
        // that changes every time is churn.
        if let Some(first) = first_cookies.filter(|c| c.iter().any(|c| is_session_name(&c.name) && !c.deletion)) {
            let mut jar: BTreeMap<String, String> = first.iter().map(|c| (c.name.clone(), c.value.clone())).collect();
            let mut changed = first.iter().map(|c| (c.name.clone(), 0)).collect::<BTreeMap<_, _>>();
            for _ in 0..2 {
                if let Fetch::Ok(again) = self.fetch(start, false, &jar).await {
                    let (_, cookies) = check_cookies(&again.headers, path_only(start), &self.ctx, "");
                    for c in cookies {
                        if jar.get(&c.name).is_some_and(|old| *old != c.value) && is_session_name(&c.name) {
                            *changed.entry(c.name.clone()).or_default() += 1;
                        }
                        jar.insert(c.name, c.value);
                    }
                }
            }
            if let Some((name, _)) = changed.iter().find(|(_, n)| **n >= 2) {
                self.findings.push(finding(
                    "session_churn",
                    &self.ctx,
                    name,
                    format!("GET {start} three times with the cookies it set: {name} got a new value each time"),
                ));
            }
        }

        // Forged forwarded headers, as anyone reaching the app directly could send.
        let honest_leaks_http = self.findings.iter().any(|f| f.code == "redirect_http_scheme");
        if let Fetch::Ok(spoofed) = self.fetch(start, true, &BTreeMap::new()).await {
            let mut text = spoofed.body.to_ascii_lowercase();
            if let Some(loc) = spoofed.headers.get(LOCATION).and_then(|v| v.to_str().ok()) {
                text.push_str(&loc.to_ascii_lowercase());
            }
            // The forged `X-Forwarded-Proto: http` alone turned https URLs into http ones.
            let believes_proto = !honest_leaks_http
                && check_urls(&text, &self.ctx, "")
                    .iter()
                    .any(|f| f.code == "redirect_http_scheme");
            let what = if text.contains(SPOOFED_HOST) {
                Some(SPOOFED_HOST.to_string())
            } else if text.contains(SPOOFED_CLIENT) {
                Some(SPOOFED_CLIENT.to_string())
            } else if believes_proto {
                Some(format!(
                    "http://{} URLs (it believed X-Forwarded-Proto: http)",
                    self.ctx.public_host
                ))
            } else {
                None
            };
            if let Some(what) = what {
                self.findings.push(finding(
                    "trusts_spoofed_forwarded",
                    &self.ctx,
                    "",
                    format!(
                        "GET {start} with X-Forwarded-Host: {SPOOFED_HOST}, X-Forwarded-Proto: http, \
                         X-Forwarded-For: {SPOOFED_CLIENT}: the response contains {what}"
                    ),
                ));
            }
        }
        true
    }

    /// Findings from one response's head and body (URLs, speed, protocol).
    fn observe(&mut self, seen: &Seen, path: &str, evidence: &str) {
        if seen.elapsed > SLOW {
            self.findings.push(finding(
                "upstream_slow",
                &self.ctx,
                &format!("{} ms for GET {path}", seen.elapsed.as_millis()),
                evidence.to_string(),
            ));
        }
        let closes = seen
            .headers
            .get(CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
        let keeps = seen
            .headers
            .get(CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("keep-alive"));
        if seen.version == Version::HTTP_10 && (closes || !keeps) {
            self.findings.push(finding(
                "upstream_http10",
                &self.ctx,
                "",
                format!("{evidence} → HTTP/1.0 response without keep-alive"),
            ));
        }
        self.findings.extend(check_location(&seen.headers, &self.ctx, evidence));
        self.findings
            .extend(check_urls(&seen.body, &self.ctx, &format!("{evidence} (page body)")));
        for name in [SERVER.as_str(), "x-powered-by"] {
            if let Some(v) = seen.headers.get(name).and_then(|v| v.to_str().ok()) {
                self.servers.push(v.to_ascii_lowercase());
            }
        }
    }

    /// The path of a redirect that stays on the app.
    fn next_hop(&self, seen: &Seen) -> Option<String> {
        let loc = seen.headers.get(LOCATION)?.to_str().ok()?;
        if loc.starts_with('/') && !loc.starts_with("//") {
            return Some(loc.to_string());
        }
        let uri: http::Uri = loc.parse().ok()?;
        let authority = uri.authority()?.as_str().to_ascii_lowercase();
        let ours = authority == self.host_header.to_ascii_lowercase()
            || authority == self.ctx.public_host
            || authority == self.ctx.upstream_authority.to_ascii_lowercase();
        ours.then(|| uri.path_and_query().map_or("/".to_string(), |p| p.as_str().to_string()))
    }

    /// Cookie checks across all responses: duplicates and count.
    fn check_cookie_set(&mut self) {
        let mut by_name: BTreeMap<&str, Vec<(&str, Option<&str>)>> = BTreeMap::new();
        for c in self.cookies.iter().filter(|c| !c.deletion) {
            let places = by_name.entry(&c.name).or_default();
            let place = (c.path.as_str(), c.domain.as_deref());
            if !places.contains(&place) {
                places.push(place);
            }
        }
        for (name, places) in &by_name {
            if places.len() > 1 {
                let listed: Vec<String> = places
                    .iter()
                    .map(|(p, d)| format!("Path={p}{}", d.map(|d| format!(" Domain={d}")).unwrap_or_default()))
                    .collect();
                self.findings.push(finding(
                    "duplicate_cookie",
                    &self.ctx,
                    name,
                    format!("{name}: {}", listed.join(" and ")),
                ));
            }
        }
        if by_name.len() > 50 {
            self.findings.push(finding(
                "too_many_cookies",
                &self.ctx,
                &format!("{} cookies", by_name.len()),
                format!("{} distinct cookies set", by_name.len()),
            ));
        }
    }

    fn framework(&self) -> Option<&'static str> {
        let names: Vec<&str> = self.cookies.iter().map(|c| c.name.as_str()).collect();
        let server = self.servers.join(" ");
        if server.contains("express") || names.contains(&"connect.sid") {
            Some("express")
        } else if names.iter().any(|n| *n == "sessionid" || *n == "csrftoken") || server.contains("wsgiserver") {
            Some("django")
        } else if server.contains("werkzeug") || names.contains(&"remember_token") {
            Some("flask")
        } else if names.iter().any(|n| n.starts_with('_') && n.ends_with("_session")) || server.contains("puma") {
            Some("rails")
        } else {
            None
        }
    }

    /// One GET to the app, honest or forged.
    async fn fetch(&self, path: &str, spoofed: bool, jar: &BTreeMap<String, String>) -> Fetch {
        let addr = self.opts.upstream.authority.as_str().to_string();
        let tcp = match tokio::time::timeout(self.opts.connect_timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Fetch::Unreachable(format!("cannot connect to {addr}: {e}")),
            Err(_) => {
                return Fetch::Unreachable(format!(
                    "no connection to {addr} within {:?}",
                    self.opts.connect_timeout
                ))
            }
        };
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await else {
            return Fetch::Unreachable(format!("{addr} does not speak HTTP/1.1"));
        };
        tokio::spawn(conn);
        let mut req = Request::get(path)
            .body(Empty::<Bytes>::new())
            .expect("a GET with a path is valid");
        let h = req.headers_mut();
        let value = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("invalid"));
        if spoofed {
            h.insert(HOST, value(&self.host_header));
            h.insert("x-forwarded-host", HeaderValue::from_static(SPOOFED_HOST));
            h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
            h.insert("x-forwarded-for", HeaderValue::from_static(SPOOFED_CLIENT));
            h.insert("x-forwarded-port", HeaderValue::from_static("80"));
            h.insert(
                "forwarded",
                value(&format!("for={SPOOFED_CLIENT};host={SPOOFED_HOST};proto=http")),
            );
        } else {
            h.insert(HOST, value(&self.host_header));
            h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
            h.insert("x-forwarded-host", value(&self.host_header));
            h.insert("x-forwarded-port", HeaderValue::from(self.ctx.public_port));
            h.insert("x-forwarded-for", HeaderValue::from_static(HONEST_CLIENT));
        }
        h.insert("user-agent", HeaderValue::from_static("tlsfront-doctor"));
        h.insert(
            "accept",
            HeaderValue::from_static("text/html,application/json;q=0.9,*/*;q=0.8"),
        );
        if !jar.is_empty() {
            let cookie: Vec<String> = jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
            h.insert(COOKIE, value(&cookie.join("; ")));
        }
        let started = Instant::now();
        let resp = match tokio::time::timeout(self.opts.response_timeout, send.send_request(req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return Fetch::Unreachable(format!("the app's answer is not valid HTTP/1.1: {e}")),
            Err(_) => {
                return Fetch::Unreachable(format!("no response head within {:?}", self.opts.response_timeout));
            }
        };
        let elapsed = started.elapsed();
        let (head, mut body) = resp.into_parts();
        let mut bytes = Vec::new();
        let deadline = Instant::now() + self.opts.response_timeout;
        while bytes.len() < BODY_LIMIT {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        bytes.extend_from_slice(d);
                    }
                }
                _ => break,
            }
        }
        Fetch::Ok(Seen {
            status: head.status,
            version: head.version,
            headers: head.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            elapsed,
        })
    }
}

fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or("/")
}

/// One finding per code (the first evidence kept, the others counted).
fn dedupe(findings: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    let mut extra: BTreeMap<&'static str, usize> = BTreeMap::new();
    for f in findings {
        if out.iter().any(|o| o.code == f.code) {
            *extra.entry(f.code).or_default() += 1;
        } else {
            out.push(f);
        }
    }
    for f in &mut out {
        if let Some(n) = extra.get(f.code) {
            f.evidence.push_str(&format!(" (and {n} more)"));
        }
    }
    out
}
