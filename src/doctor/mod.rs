//! `tlsfront doctor`: sends the app the requests tlsfront would send (with
//! honest forwarded headers) and again with forged ones, and explains in
//! plain language what breaks sessions or security, with the fix per
//! framework. The checks themselves are pure (`findings`); this module does
//! the requests and the report.

pub mod findings;
pub mod forms;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, REFERER, SERVER,
};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::ServerUrl;
use findings::{
    check_compression, check_cookies, check_location, check_urls, finding, is_session_name, Context, Finding,
    FindingCode, SeenCookie, Severity,
};
pub use report::{render_human, render_json};

/// The client IP the honest request claims (TEST-NET-2).
pub const HONEST_CLIENT: &str = "198.51.100.23";
/// The forged values of the spoofed request.
pub const SPOOFED_HOST: &str = "spoofed.invalid";
/// The forged client IP (TEST-NET-3).
pub const SPOOFED_CLIENT: &str = "203.0.113.66";
/// The forged `Forwarded` header: the same client and host as the X-Forwarded-* ones.
const SPOOFED_FORWARDED: &str = "for=203.0.113.66;host=spoofed.invalid;proto=http";

/// Slower than this for the response head is worth a warning.
const SLOW: Duration = Duration::from_secs(1);
/// Bytes of a body that are searched for URLs.
const BODY_LIMIT: usize = 512 * 1024;
/// Redirects followed per path, when they stay on the app.
const MAX_REDIRECTS: usize = 5;

/// What the doctor needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    /// The app: an `http://` or `unix:` server (the doctor speaks plain
    /// HTTP/1.1 to it).
    pub upstream: ServerUrl,
    /// `https://host[:port]` clients use.
    pub public_url: String,
    /// Pages to check.
    pub paths: Vec<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response timeout.
    pub response_timeout: Duration,
    /// Post the login form of each checked page once (`--no-forms` turns it off).
    pub forms: bool,
    /// Whether tlsfront's `[compression]` is on.
    pub compression: bool,
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
    /// What the doctor could not check, and why (e.g. a redirect it cannot follow).
    pub notes: Vec<String>,
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

/// A page to check, as given with `--path`: it must be a request target
/// (`/` first, no spaces or other bytes a URL cannot carry).
fn check_target(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("--path {path:?}: a page starts with / (e.g. /login)"));
    }
    path.parse::<http::uri::PathAndQuery>().map(|_| ()).map_err(|_| {
        format!(
            "--path {path:?}: not a valid URL path (write a space as %20, and percent-encode other special characters)"
        )
    })
}

/// Whether the app's host is reachable only from this machine: `localhost`
/// or a loopback address (IPv6 brackets allowed).
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A Location as a browser follows it: bytes a URL cannot carry (spaces,
/// controls, non-ASCII, `"<>\^`{|}`) percent-encoded, the fragment dropped.
fn browser_target(location: &str) -> String {
    let location = location.split('#').next().unwrap_or("");
    let mut out = String::with_capacity(location.len());
    for b in location.bytes() {
        if b <= b' ' || b >= 0x7f || b"\"<>\\^`{|}".contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// A password nobody has: random for every run.
fn dummy_password() -> String {
    let random = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.finish()
    };
    format!("tlsfront-doctor-{:016x}{:016x}", random(1), random(2))
}

/// Cookies the doctor holds for the app, as a browser would: name → raw value.
type Jar = BTreeMap<String, Vec<u8>>;

/// Which forwarded headers a request carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Forwarding {
    /// What tlsfront sends for a real client.
    Honest,
    /// Forged ones, as anyone reaching the app directly could send.
    Forged,
}

/// One request to the app.
struct Outgoing<'a> {
    method: Method,
    target: &'a str,
    forwarding: Forwarding,
    jar: &'a Jar,
    /// Headers of a form POST (Origin, Referer, Content-Type).
    extra: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl<'a> Outgoing<'a> {
    fn get(target: &'a str, forwarding: Forwarding, jar: &'a Jar) -> Self {
        Outgoing {
            method: Method::GET,
            target,
            forwarding,
            jar,
            extra: Vec::new(),
            body: Bytes::new(),
        }
    }
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
    /// The request cannot be written (a target or header value HTTP cannot carry); nothing was sent.
    Unsendable(String),
}

/// Runs every check and returns the report.
pub async fn run(opts: &Options) -> Result<Report, String> {
    let (public_host, public_port, public_origin) = public_parts(&opts.public_url)?;
    for path in &opts.paths {
        check_target(path)?;
    }
    let ctx = Context {
        public_host: public_host.clone(),
        public_port,
        public_origin: public_origin.clone(),
        // A Unix-socket app has no address of its own to leak.
        upstream_authority: opts
            .upstream
            .authority()
            .map_or("localhost", |a| a.as_str())
            .to_string(),
        upstream_is_loopback: opts.upstream.authority().is_none_or(|a| is_loopback_host(a.host())),
        compression: opts.compression,
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
        posted: BTreeSet::new(),
        notes: Vec::new(),
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
    let mut findings = dedupe(std::mem::take(&mut doctor.findings));
    findings.sort_by_key(|f| f.severity);
    Ok(Report {
        upstream: opts.upstream.to_string(),
        public_url: public_origin,
        framework,
        findings,
        notes: doctor.notes,
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
    /// Form targets already posted to (each login form once per run).
    posted: BTreeSet<String>,
    /// What could not be checked.
    notes: Vec<String>,
}

impl Doctor<'_> {
    /// Checks one path; `false` when the app cannot be reached at all.
    async fn check_path(&mut self, start: &str) -> bool {
        let mut path = start.to_string();
        let mut jar = Jar::new();
        let mut first_cookies: Option<Vec<SeenCookie>> = None;
        // The status the honest request for the start page got.
        let mut start_status: Option<StatusCode> = None;
        // The page the path ends at after redirects, for its login form.
        let mut page: Option<(String, Seen)> = None;
        for _ in 0..=MAX_REDIRECTS {
            let evidence = format!("GET {path}");
            let seen = match self.send(Outgoing::get(&path, Forwarding::Honest, &jar)).await {
                Fetch::Ok(seen) => seen,
                Fetch::Unreachable(e) => {
                    self.findings.push(finding(
                        FindingCode::UpstreamUnreachable,
                        &self.ctx,
                        "",
                        format!("{evidence}: {e}"),
                    ));
                    return false;
                }
                // Only a redirect's target can get here (--path is checked up
                // front): the page that redirected has been seen; stop there.
                Fetch::Unsendable(e) => {
                    self.notes.push(format!("redirect from {start} not followed: {e}"));
                    break;
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
                start_status = Some(seen.status);
            }
            self.cookies.extend(cookies);
            let next = self.next_hop(&seen).filter(|_| seen.status.is_redirection());
            page = Some((path.clone(), seen));
            match next {
                Some(next) => path = next,
                None => break,
            }
        }

        if self.opts.forms {
            if let Some((page_path, seen)) = &page {
                self.check_login_form(page_path, seen, &jar).await;
            }
        }

        // The same page again with the cookies it gave: a session cookie
        // that changes every time is churn.
        if let Some(first) = first_cookies.filter(|c| c.iter().any(|c| is_session_name(&c.name) && !c.deletion)) {
            let mut jar: Jar = first.iter().map(|c| (c.name.clone(), c.value.clone())).collect();
            let mut changed = first.iter().map(|c| (c.name.clone(), 0)).collect::<BTreeMap<_, _>>();
            for _ in 0..2 {
                if let Fetch::Ok(again) = self.send(Outgoing::get(start, Forwarding::Honest, &jar)).await {
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
                    FindingCode::SessionChurn,
                    &self.ctx,
                    name,
                    format!("GET {start} three times with the cookies it set: {name} got a new value each time"),
                ));
            }
        }

        // Forged forwarded headers, as anyone reaching the app directly could send.
        let honest_leaks_http = self.findings.iter().any(|f| f.code == FindingCode::RedirectHttpScheme);
        let spoofed = match self.send(Outgoing::get(start, Forwarding::Forged, &Jar::new())).await {
            // Refused (Django's and Flask's TRUSTED_HOSTS answer 400, naming
            // the forged host in the error page) where the honest request was
            // not: the app did not believe it.
            Fetch::Ok(f) if f.status.is_client_error() && start_status.is_some_and(|s| !s.is_client_error()) => None,
            Fetch::Ok(f) => Some(f),
            _ => None,
        };
        if let Some(spoofed) = spoofed {
            let mut text = spoofed.body.to_ascii_lowercase();
            if let Some(loc) = spoofed.headers.get(LOCATION).and_then(|v| v.to_str().ok()) {
                text.push_str(&loc.to_ascii_lowercase());
            }
            // The forged `X-Forwarded-Proto: http` alone turned https URLs into http ones.
            let believes_proto = !honest_leaks_http
                && check_urls(&text, &self.ctx, "")
                    .iter()
                    .any(|f| f.code == FindingCode::RedirectHttpScheme);
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
                    FindingCode::TrustsSpoofedForwarded,
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
                FindingCode::UpstreamSlow,
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
                FindingCode::UpstreamHttp10,
                &self.ctx,
                "",
                format!("{evidence} → HTTP/1.0 response without keep-alive"),
            ));
        }
        self.findings.extend(check_location(&seen.headers, &self.ctx, evidence));
        self.findings
            .extend(check_compression(&seen.headers, seen.body.len(), &self.ctx, evidence));
        self.findings
            .extend(check_urls(&seen.body, &self.ctx, &format!("{evidence} (page body)")));
        for name in [SERVER.as_str(), "x-powered-by"] {
            if let Some(v) = seen.headers.get(name).and_then(|v| v.to_str().ok()) {
                self.servers.push(v.to_ascii_lowercase());
            }
        }
    }

    /// The path of a redirect that stays on the app, encoded as a browser
    /// encodes it before following it.
    fn next_hop(&self, seen: &Seen) -> Option<String> {
        let loc = browser_target(&String::from_utf8_lossy(seen.headers.get(LOCATION)?.as_bytes()));
        if loc.starts_with('/') && !loc.starts_with("//") {
            return Some(loc);
        }
        let uri: http::Uri = loc.parse().ok()?;
        let authority = uri.authority()?.as_str().to_ascii_lowercase();
        self.is_ours(&authority)
            .then(|| uri.path_and_query().map_or("/".to_string(), |p| p.as_str().to_string()))
    }

    /// Whether a URL's authority (lowercase) is the app, by its public or internal address.
    fn is_ours(&self, authority: &str) -> bool {
        authority == self.host_header.to_ascii_lowercase()
            || authority == self.ctx.public_host
            || authority == self.ctx.upstream_authority.to_ascii_lowercase()
    }

    /// Posts the page's login form once, as a browser at the public URL
    /// would, with credentials that cannot log anyone in: a clean "wrong
    /// password" is fine, a CSRF/origin rejection is an error.
    async fn check_login_form(&mut self, page: &str, seen: &Seen, jar: &Jar) {
        let Some(form) = forms::find_login_form(&seen.body) else {
            return;
        };
        let Some(target) = forms::resolve_action(page, form.action.as_deref(), |a| self.is_ours(a)) else {
            return; // posts to another site (a single sign-on provider): not the app's check
        };
        let target = browser_target(&target);
        if !self.posted.insert(target.clone()) {
            return;
        }
        let (extra, body) = match self.form_submission(&form, page) {
            Ok(parts) => parts,
            Err(e) => {
                self.notes
                    .push(format!("the login form of {page} (POST {target}) was not checked: {e}"));
                return;
            }
        };
        let out = Outgoing {
            method: Method::POST,
            target: &target,
            forwarding: Forwarding::Honest,
            jar,
            extra,
            body,
        };
        let answer = match self.send(out).await {
            Fetch::Ok(answer) => answer,
            Fetch::Unreachable(e) | Fetch::Unsendable(e) => {
                self.notes
                    .push(format!("the login form of {page} (POST {target}) was not checked: {e}"));
                return;
            }
        };
        if let Some(why) = forms::csrf_rejection(answer.status, &answer.body) {
            let hidden = form
                .controls
                .iter()
                .filter(|c| matches!(c.kind, forms::ControlKind::Fixed(_)))
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let cookies = jar.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
            self.findings.push(finding(
                FindingCode::LoginCsrfRejected,
                &self.ctx,
                &format!("POST {target}"),
                format!(
                    "POST {target} (the login form of {page}) with Origin: {origin}, Referer: {origin}{page}, \
                     the form's fields [{hidden}], cookies [{cookies}], user {user} and a random password → {why}",
                    origin = self.ctx.public_origin,
                    user = forms::DUMMY_USER,
                ),
            ));
        }
    }

    /// The headers and body a browser at the public URL sends when the
    /// form on `page` is submitted with the dummy credentials.
    fn form_submission(
        &self,
        form: &forms::LoginForm,
        page: &str,
    ) -> Result<(Vec<(HeaderName, HeaderValue)>, Bytes), String> {
        let fields = form.fill(&dummy_password());
        let (content_type, body) = if form.multipart {
            let boundary = "----tlsfront-doctor-form-boundary";
            (
                format!("multipart/form-data; boundary={boundary}"),
                forms::multipart(&fields, boundary),
            )
        } else {
            (
                "application/x-www-form-urlencoded".to_string(),
                forms::urlencode(&fields),
            )
        };
        let origin = &self.ctx.public_origin;
        let referer = format!("{origin}{page}");
        let mut headers = Vec::new();
        for (name, value) in [
            (ORIGIN, origin.as_str()),
            (REFERER, referer.as_str()),
            (CONTENT_TYPE, content_type.as_str()),
            (HeaderName::from_static("sec-fetch-site"), "same-origin"),
            (HeaderName::from_static("sec-fetch-mode"), "navigate"),
            (HeaderName::from_static("sec-fetch-dest"), "document"),
        ] {
            let value =
                HeaderValue::from_str(value).map_err(|_| format!("{name}: {value:?} is not a valid header value"))?;
            headers.push((name, value));
        }
        Ok((headers, Bytes::from(body)))
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
                    FindingCode::DuplicateCookie,
                    &self.ctx,
                    name,
                    format!("{name}: {}", listed.join(" and ")),
                ));
            }
        }
        if by_name.len() > 50 {
            self.findings.push(finding(
                FindingCode::TooManyCookies,
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

    /// The request for `out`, with the headers tlsfront would add (or forged ones).
    fn request(&self, out: &Outgoing<'_>) -> Result<Request<Full<Bytes>>, String> {
        let mut req = Request::builder()
            .method(out.method.clone())
            .uri(out.target)
            .body(Full::new(out.body.clone()))
            .map_err(|e| format!("{} {:?} cannot be sent: {e}", out.method, out.target))?;
        let host = HeaderValue::from_str(&self.host_header)
            .map_err(|_| format!("the public host {:?} is not a valid Host header", self.host_header))?;
        let h = req.headers_mut();
        h.insert(HOST, host.clone());
        match out.forwarding {
            Forwarding::Forged => {
                h.insert("x-forwarded-host", HeaderValue::from_static(SPOOFED_HOST));
                h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
                h.insert("x-forwarded-for", HeaderValue::from_static(SPOOFED_CLIENT));
                h.insert("x-forwarded-port", HeaderValue::from_static("80"));
                h.insert("forwarded", HeaderValue::from_static(SPOOFED_FORWARDED));
            }
            Forwarding::Honest => {
                h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
                h.insert("x-forwarded-host", host);
                h.insert("x-forwarded-port", HeaderValue::from(self.ctx.public_port));
                h.insert("x-forwarded-for", HeaderValue::from_static(HONEST_CLIENT));
            }
        }
        h.insert("user-agent", HeaderValue::from_static("tlsfront-doctor"));
        h.insert(
            "accept",
            HeaderValue::from_static("text/html,application/json;q=0.9,*/*;q=0.8"),
        );
        if !out.jar.is_empty() {
            let mut cookie = Vec::new();
            for (name, value) in out.jar {
                if !cookie.is_empty() {
                    cookie.extend_from_slice(b"; ");
                }
                cookie.extend_from_slice(name.as_bytes());
                cookie.push(b'=');
                cookie.extend_from_slice(value);
            }
            // The values came from the app's Set-Cookie bytes and go back unchanged.
            let value = HeaderValue::from_bytes(&cookie).map_err(|_| {
                format!(
                    "the cookies the app set cannot be sent back: {:?}",
                    String::from_utf8_lossy(&cookie)
                )
            })?;
            h.insert(COOKIE, value);
        }
        for (name, value) in &out.extra {
            h.insert(name, value.clone());
        }
        Ok(req)
    }

    /// One request to the app.
    async fn send(&self, out: Outgoing<'_>) -> Fetch {
        let req = match self.request(&out) {
            Ok(req) => req,
            Err(e) => return Fetch::Unsendable(e),
        };
        let addr = self.opts.upstream.to_string();
        let connect = async {
            match &self.opts.upstream {
                ServerUrl::Http(u) => {
                    let tcp = TcpStream::connect(u.authority.as_str()).await?;
                    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                        .await
                        .map_err(std::io::Error::other)?;
                    tokio::spawn(conn);
                    Ok(send)
                }
                ServerUrl::Unix(path) => {
                    let unix = tokio::net::UnixStream::connect(path).await?;
                    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(unix))
                        .await
                        .map_err(std::io::Error::other)?;
                    tokio::spawn(conn);
                    Ok(send)
                }
                ServerUrl::H2c(_) | ServerUrl::Https(_) => Err(std::io::Error::other(
                    "the doctor speaks plain HTTP/1.1 to the app: give its http:// or unix: address with --upstream",
                )),
            }
        };
        let mut send = match tokio::time::timeout(self.opts.connect_timeout, connect).await {
            Ok(Ok(send)) => send,
            Ok(Err(e)) => return Fetch::Unreachable(format!("cannot connect to {addr}: {e}")),
            Err(_) => {
                return Fetch::Unreachable(format!(
                    "no connection to {addr} within {:?}",
                    self.opts.connect_timeout
                ))
            }
        };
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
    let mut extra: BTreeMap<FindingCode, usize> = BTreeMap::new();
    for f in findings {
        if out.iter().any(|o| o.code == f.code) {
            *extra.entry(f.code).or_default() += 1;
        } else {
            out.push(f);
        }
    }
    for f in &mut out {
        if let Some(n) = extra.get(&f.code) {
            f.evidence.push_str(&format!(" (and {n} more)"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_request_targets() {
        assert!(check_target("/login?next=%2F").is_ok());
        let spaced = check_target("/a b").unwrap_err();
        assert!(spaced.contains("\"/a b\"") && spaced.contains("%20"), "{spaced}");
        assert!(check_target("login").unwrap_err().contains("starts with /"));
        assert!(check_target("/\u{7f}").is_err());
    }

    #[test]
    fn locations_are_encoded_as_browsers_follow_them() {
        assert_eq!(browser_target("/a b?x=1 2#frag"), "/a%20b?x=1%202");
        assert_eq!(browser_target("/caf\u{e9}"), "/caf%C3%A9");
        assert_eq!(browser_target("/ok/%20already"), "/ok/%20already");
        for loc in ["/a b", "/\"<>\\^`{|}", "/\t\r\n"] {
            let target = browser_target(loc);
            assert!(
                target.parse::<http::uri::PathAndQuery>().is_ok(),
                "{loc:?} → {target:?}"
            );
        }
    }

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "LocalHost", "127.0.0.1", "127.3.2.1", "[::1]", "::1"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["10.0.0.5", "app.internal", "[2001:db8::1]", "0.0.0.0"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn the_forged_forwarded_header_matches_the_forged_x_forwarded_ones() {
        assert!(SPOOFED_FORWARDED.contains(&format!("for={SPOOFED_CLIENT}")));
        assert!(SPOOFED_FORWARDED.contains(&format!("host={SPOOFED_HOST}")));
    }

    #[test]
    fn dummy_passwords_differ_per_run() {
        let (a, b) = (dummy_password(), dummy_password());
        assert_ne!(a, b);
        assert!(a.len() > 30 && a.starts_with("tlsfront-doctor-"));
    }
}
