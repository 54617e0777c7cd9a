//! What `tlsfront doctor` can find, and what it says about each: pure
//! functions from responses to findings, no I/O.

use std::collections::BTreeMap;

use http::header::{HeaderMap, LOCATION, SET_COOKIE};

use crate::policy::cookies::ParsedCookie;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Breaks sessions or security; tlsfront cannot fully repair it.
    Error,
    /// Wrong, but tlsfront corrects it or it only bites in some setups.
    Warning,
    /// Worth knowing.
    Info,
}

impl Severity {
    /// `error`, `warning`, `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// Frameworks with tailored fixes.
pub const FRAMEWORKS: [&str; 4] = ["flask", "django", "express", "rails"];

/// Everything the doctor can find: a closed set, so every code has its texts
/// (the compiler checks `finding` covers each one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingCode {
    /// `redirect_http_scheme`
    RedirectHttpScheme,
    /// `redirect_internal_host`
    RedirectInternalHost,
    /// `cookie_missing_secure`
    CookieMissingSecure,
    /// `cookie_missing_httponly`
    CookieMissingHttponly,
    /// `cookie_missing_samesite`
    CookieMissingSamesite,
    /// `cookie_samesite_none_insecure`
    CookieSamesiteNoneInsecure,
    /// `cookie_domain_mismatch`
    CookieDomainMismatch,
    /// `cookie_path_mismatch`
    CookiePathMismatch,
    /// `cookie_prefix_invalid`
    CookiePrefixInvalid,
    /// `cookie_too_large`
    CookieTooLarge,
    /// `too_many_cookies`
    TooManyCookies,
    /// `duplicate_cookie`
    DuplicateCookie,
    /// `session_churn`
    SessionChurn,
    /// `trusts_spoofed_forwarded`
    TrustsSpoofedForwarded,
    /// `login_csrf_rejected`: the login form's POST, as a browser at the public URL sends it, is refused by the CSRF/origin check.
    LoginCsrfRejected,
    /// `upstream_unreachable`
    UpstreamUnreachable,
    /// `upstream_slow`
    UpstreamSlow,
    /// `upstream_http10`
    UpstreamHttp10,
    /// `uncompressed_text`: a large text response sent uncompressed while tlsfront's `[compression]` is off.
    UncompressedText,
}

impl FindingCode {
    /// Every code, in the order docs/doctor.md lists them.
    pub const ALL: [FindingCode; 19] = [
        FindingCode::RedirectHttpScheme,
        FindingCode::RedirectInternalHost,
        FindingCode::CookieMissingSecure,
        FindingCode::CookieMissingHttponly,
        FindingCode::CookieMissingSamesite,
        FindingCode::CookieSamesiteNoneInsecure,
        FindingCode::CookieDomainMismatch,
        FindingCode::CookiePathMismatch,
        FindingCode::CookiePrefixInvalid,
        FindingCode::CookieTooLarge,
        FindingCode::TooManyCookies,
        FindingCode::DuplicateCookie,
        FindingCode::SessionChurn,
        FindingCode::TrustsSpoofedForwarded,
        FindingCode::LoginCsrfRejected,
        FindingCode::UpstreamUnreachable,
        FindingCode::UpstreamSlow,
        FindingCode::UpstreamHttp10,
        FindingCode::UncompressedText,
    ];

    /// The stable machine name in the report and the JSON, e.g. `redirect_http_scheme`.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingCode::RedirectHttpScheme => "redirect_http_scheme",
            FindingCode::RedirectInternalHost => "redirect_internal_host",
            FindingCode::CookieMissingSecure => "cookie_missing_secure",
            FindingCode::CookieMissingHttponly => "cookie_missing_httponly",
            FindingCode::CookieMissingSamesite => "cookie_missing_samesite",
            FindingCode::CookieSamesiteNoneInsecure => "cookie_samesite_none_insecure",
            FindingCode::CookieDomainMismatch => "cookie_domain_mismatch",
            FindingCode::CookiePathMismatch => "cookie_path_mismatch",
            FindingCode::CookiePrefixInvalid => "cookie_prefix_invalid",
            FindingCode::CookieTooLarge => "cookie_too_large",
            FindingCode::TooManyCookies => "too_many_cookies",
            FindingCode::DuplicateCookie => "duplicate_cookie",
            FindingCode::SessionChurn => "session_churn",
            FindingCode::TrustsSpoofedForwarded => "trusts_spoofed_forwarded",
            FindingCode::LoginCsrfRejected => "login_csrf_rejected",
            FindingCode::UpstreamUnreachable => "upstream_unreachable",
            FindingCode::UpstreamSlow => "upstream_slow",
            FindingCode::UpstreamHttp10 => "upstream_http10",
            FindingCode::UncompressedText => "uncompressed_text",
        }
    }
}

impl std::fmt::Display for FindingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem, explained.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What was found; its stable machine name is `code.as_str()`.
    pub code: FindingCode,
    /// How bad.
    pub severity: Severity,
    /// One line.
    pub title: String,
    /// Why it breaks sessions or security.
    pub why: String,
    /// The fix per framework.
    pub fix: BTreeMap<&'static str, String>,
    /// Whether tlsfront already corrects it in flight.
    pub tlsfront_fixes: bool,
    /// What tlsfront does about it, in words.
    pub tlsfront_does: String,
    /// What was seen, e.g. `GET /login → Location: http://…`.
    pub evidence: String,
}

/// Where the app is and where clients think it is.
#[derive(Debug, Clone)]
pub struct Context {
    /// Public host name (no port), lowercase.
    pub public_host: String,
    /// Public https port.
    pub public_port: u16,
    /// `https://host[:port]` as clients see it.
    pub public_origin: String,
    /// The app's `host:port`.
    pub upstream_authority: String,
    /// Whether the app's address is loopback (reachable only from this machine).
    pub upstream_is_loopback: bool,
    /// Whether tlsfront's `[compression]` is on (top level).
    pub compression: bool,
}

fn fixes(items: [(&'static str, String); 4]) -> BTreeMap<&'static str, String> {
    items.into_iter().collect()
}

fn proxy_trust_fixes(ctx: &Context) -> BTreeMap<&'static str, String> {
    fixes([
        ("flask", "from werkzeug.middleware.proxy_fix import ProxyFix; app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)  (1 = tlsfront alone; add one per trusted proxy in front of it)".into()),
        ("django", format!("settings.py: SECURE_PROXY_SSL_HEADER = (\"HTTP_X_FORWARDED_PROTO\", \"https\"); USE_X_FORWARDED_HOST = True; USE_X_FORWARDED_PORT = True; CSRF_TRUSTED_ORIGINS = [\"{}\"]", ctx.public_origin)),
        ("express", "app.set('trust proxy', 1) before the routes and the session middleware (or 'loopback' when tlsfront runs on the same host)".into()),
        ("rails", "config/environments/production.rb: config.assume_ssl = true and config.force_ssl = true".into()),
    ])
}

/// Builds the finding for `code` with its fixed texts; `detail` names the cookie or URL.
pub fn finding(code: FindingCode, ctx: &Context, detail: &str, evidence: String) -> Finding {
    let (severity, title, why, fix, tlsfront_fixes, tlsfront_does): (Severity, String, String, BTreeMap<&'static str, String>, bool, &str) = match code {
        FindingCode::RedirectHttpScheme => (
            Severity::Error,
            format!("The app builds http:// URLs for {}", ctx.public_host),
            "The app does not believe X-Forwarded-Proto, so it thinks it is served over plain http. A browser that follows such a URL leaves https: a Secure session cookie is not sent there, the user looks logged out, and forms and scripts are blocked as mixed content.".into(),
            proxy_trust_fixes(ctx),
            false,
            "tlsfront rewrites Location, Content-Location and Refresh headers that point at http://, but not URLs inside pages, query strings (?next=…) or scripts.",
        ),
        FindingCode::RedirectInternalHost => (
            Severity::Error,
            format!("The app builds URLs with its internal address {}", ctx.upstream_authority),
            "The app ignores X-Forwarded-Host/-Port and uses the address tlsfront reaches it at, which browsers cannot reach (or reach without tlsfront in between).".into(),
            proxy_trust_fixes(ctx),
            false,
            "tlsfront rewrites Location, Content-Location and Refresh headers that point at the app's address, but not URLs inside pages or query strings.",
        ),
        FindingCode::CookieMissingSecure => (
            Severity::Warning,
            format!("Cookies set without Secure ({detail})"),
            "Without Secure the browser also sends the cookie over plain http, where it can be read; and an app that only marks cookies Secure when it believes it is on https disagrees with the browser about the scheme.".into(),
            fixes([
                ("flask", "SESSION_COOKIE_SECURE = True and REMEMBER_COOKIE_SECURE = True (Flask-Login)".into()),
                ("django", "SESSION_COOKIE_SECURE = True and CSRF_COOKIE_SECURE = True".into()),
                ("express", "express-session: cookie: { secure: true }, together with app.set('trust proxy', 1) (without it express-session silently never sends the cookie)".into()),
                ("rails", "config.force_ssl = true (marks cookies Secure)".into()),
            ]),
            true,
            "tlsfront adds Secure to every Set-Cookie ([cookies] secure = true).",
        ),
        FindingCode::CookieMissingHttponly => (
            Severity::Warning,
            format!("Cookies set without HttpOnly ({detail})"),
            "Page scripts, and so any XSS, can read these cookies and steal the session.".into(),
            fixes([
                ("flask", "SESSION_COOKIE_HTTPONLY = True and REMEMBER_COOKIE_HTTPONLY = True".into()),
                ("django", "SESSION_COOKIE_HTTPONLY = True".into()),
                ("express", "express-session: cookie: { httpOnly: true }".into()),
                ("rails", "cookies[:name] = { value: …, httponly: true }".into()),
            ]),
            true,
            "tlsfront adds HttpOnly to every Set-Cookie except the names in [cookies] http_only_except.",
        ),
        FindingCode::CookieMissingSamesite => (
            Severity::Info,
            format!("Cookies set without SameSite ({detail})"),
            "Browsers then default to Lax, which is usually right; saying it explicitly avoids surprises across browsers and with cross-site logins.".into(),
            fixes([
                ("flask", "SESSION_COOKIE_SAMESITE = \"Lax\"".into()),
                ("django", "SESSION_COOKIE_SAMESITE = \"Lax\" (the default)".into()),
                ("express", "express-session: cookie: { sameSite: 'lax' }".into()),
                ("rails", "config.action_dispatch.cookies_same_site_protection = :lax".into()),
            ]),
            false,
            "tlsfront can add it: [cookies] same_site = \"lax\".",
        ),
        FindingCode::CookieSamesiteNoneInsecure => (
            Severity::Warning,
            format!("SameSite=None without Secure ({detail})"),
            "Browsers reject SameSite=None cookies that are not Secure: the cookie is never stored and the session is lost.".into(),
            fixes([
                ("flask", "SESSION_COOKIE_SECURE = True (needed with SESSION_COOKIE_SAMESITE = \"None\")".into()),
                ("django", "SESSION_COOKIE_SECURE = True (needed with SESSION_COOKIE_SAMESITE = \"None\")".into()),
                ("express", "cookie: { sameSite: 'none', secure: true } and app.set('trust proxy', 1)".into()),
                ("rails", "config.force_ssl = true".into()),
            ]),
            true,
            "tlsfront always adds Secure to SameSite=None cookies.",
        ),
        FindingCode::CookieDomainMismatch => (
            Severity::Error,
            format!("Cookie Domain does not match {} ({detail})", ctx.public_host),
            "The browser rejects a cookie whose Domain does not cover the host it came from: it is never stored, so every request starts a new session.".into(),
            fixes([
                ("flask", "SESSION_COOKIE_DOMAIN = None (or the public domain), and SERVER_NAME unset or the public host".into()),
                ("django", "SESSION_COOKIE_DOMAIN = None and CSRF_COOKIE_DOMAIN = None (or the public domain)".into()),
                ("express", "remove cookie.domain from the session options, or set it to the public domain".into()),
                ("rails", "session_store domain: :all or the public domain".into()),
            ]),
            false,
            "tlsfront does not change Domain: it cannot know which domain you meant.",
        ),
        FindingCode::CookiePathMismatch => (
            Severity::Warning,
            format!("Cookie Path does not cover the page that sets it ({detail})"),
            "The browser stores the cookie but does not send it back to this page, so the app never sees it here (common when the app thinks it is mounted under a prefix).".into(),
            fixes([
                ("flask", "SESSION_COOKIE_PATH = \"/\" (or check APPLICATION_ROOT and ProxyFix x_prefix)".into()),
                ("django", "SESSION_COOKIE_PATH = \"/\" (or check FORCE_SCRIPT_NAME)".into()),
                ("express", "cookie: { path: '/' }".into()),
                ("rails", "session_store path: '/'".into()),
            ]),
            false,
            "tlsfront does not change Path.",
        ),
        FindingCode::CookiePrefixInvalid => (
            Severity::Error,
            format!("Cookie prefix rules broken ({detail})"),
            "Browsers reject __Host- cookies that have a Domain or a Path other than /, and __Secure-/__Host- cookies without Secure: the cookie is never stored.".into(),
            fixes([
                ("flask", "for a __Host- session cookie: SESSION_COOKIE_DOMAIN = None, SESSION_COOKIE_PATH = \"/\", SESSION_COOKIE_SECURE = True".into()),
                ("django", "for a __Host- cookie: SESSION_COOKIE_DOMAIN = None, SESSION_COOKIE_PATH = \"/\", SESSION_COOKIE_SECURE = True".into()),
                ("express", "for a __Host- cookie: no cookie.domain, cookie.path '/', cookie.secure true".into()),
                ("rails", "for a __Host- cookie: no domain, path '/', secure: true".into()),
            ]),
            false,
            "tlsfront adds Secure to prefixed cookies but cannot remove Domain or change Path.",
        ),
        FindingCode::CookieTooLarge => (
            Severity::Error,
            format!("Cookie larger than browsers keep ({detail})"),
            "Browsers drop cookies over 4096 bytes (name, value and attributes): a session stored in such a cookie is silently lost.".into(),
            fixes([
                ("flask", "keep less in the session, or store sessions server-side (Flask-Session with Redis or a database)".into()),
                ("django", "use database or cache sessions instead of signed_cookies (SESSION_ENGINE)".into()),
                ("express", "use express-session with a store instead of cookie-session".into()),
                ("rails", "use the ActiveRecord or cache session store".into()),
            ]),
            false,
            "tlsfront passes cookies through; it cannot make them smaller.",
        ),
        FindingCode::TooManyCookies => (
            Severity::Error,
            format!("More cookies than a browser keeps per site ({detail})"),
            "Browsers keep only so many cookies per domain (50 is the safe limit) and evict the oldest, which may be the session cookie.".into(),
            fixes([
                ("flask", "merge values into the session instead of separate cookies".into()),
                ("django", "merge values into the session instead of separate cookies".into()),
                ("express", "merge values into req.session instead of res.cookie() calls".into()),
                ("rails", "merge values into session instead of separate cookies".into()),
            ]),
            false,
            "tlsfront passes cookies through.",
        ),
        FindingCode::DuplicateCookie => (
            Severity::Warning,
            format!("The same cookie name with different Path or Domain ({detail})"),
            "The browser keeps both and sends both; the app reads whichever comes first, often the stale one: logins that do not stick, CSRF failures.".into(),
            fixes([
                ("flask", "set SESSION_COOKIE_PATH/SESSION_COOKIE_DOMAIN once, and delete the old cookie with its old Path/Domain".into()),
                ("django", "set SESSION_COOKIE_PATH/SESSION_COOKIE_DOMAIN once, and delete the old cookie with its old Path/Domain".into()),
                ("express", "use one cookie.path/cookie.domain, and clear the old cookie with res.clearCookie(name, { path, domain })".into()),
                ("rails", "use one path/domain, and delete the old cookie with its old path/domain".into()),
            ]),
            false,
            "tlsfront passes cookies through.",
        ),
        FindingCode::SessionChurn => (
            Severity::Warning,
            format!("A new session cookie on every response ({detail})"),
            "Concurrent requests overwrite each other's session (lost logins, CSRF failures in other tabs), and no page can be cached.".into(),
            fixes([
                ("flask", "only write to session when something changes; SESSION_REFRESH_EACH_REQUEST = False for permanent sessions".into()),
                ("django", "SESSION_SAVE_EVERY_REQUEST = False".into()),
                ("express", "express-session: resave: false, saveUninitialized: false, rolling: false".into()),
                ("rails", "avoid writing to session on every request".into()),
            ]),
            false,
            "tlsfront passes cookies through.",
        ),
        FindingCode::TrustsSpoofedForwarded => (
            // On loopback only this machine can reach the app: the usual, safe setup.
            if ctx.upstream_is_loopback { Severity::Info } else { Severity::Error },
            "The app believes X-Forwarded-* from anyone".into(),
            format!(
                "A request with forged X-Forwarded-Host/-Proto/-For changed what the app generated. Through tlsfront this is safe (tlsfront replaces these headers from untrusted clients), but anyone who reaches the app directly at {} can spoof client IPs and poison absolute URLs such as password-reset links.",
                ctx.upstream_authority
            ),
            fixes([
                ("flask", "make the app reachable only through tlsfront: bind it to 127.0.0.1 (gunicorn -b 127.0.0.1:8000); keep ProxyFix's counts equal to the real number of proxies".into()),
                ("django", "bind the app to 127.0.0.1 or a private network that only tlsfront reaches".into()),
                ("express", "app.set('trust proxy', 'loopback') instead of true, and app.listen(port, '127.0.0.1')".into()),
                ("rails", "config.action_dispatch.trusted_proxies = [IPAddr.new('127.0.0.1')], and bind Puma to 127.0.0.1".into()),
            ]),
            false,
            "tlsfront removes forwarded headers from untrusted clients, but cannot protect an app that is reachable without it.",
        ),
        FindingCode::LoginCsrfRejected => (
            Severity::Error,
            format!("The login form is refused as a cross-site request ({detail})"),
            format!(
                "The login page's form, posted the way a browser at {} posts it (its Origin and Referer, the page's CSRF token and cookies), was refused by the app's CSRF/origin check before the credentials were even looked at. Nobody can log in: the app compares the Origin with the scheme and host it believes it is served at (http, or the internal address), or its CSRF secret lives in a cookie it never sent because it thinks the connection is not https.",
                ctx.public_origin
            ),
            fixes([
                ("flask", "Flask-WTF: from werkzeug.middleware.proxy_fix import ProxyFix; app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1) so its Referer check (WTF_CSRF_SSL_STRICT) compares with the public https origin; keep WTF_CSRF_SSL_STRICT = True".into()),
                ("django", format!("settings.py: SECURE_PROXY_SSL_HEADER = (\"HTTP_X_FORWARDED_PROTO\", \"https\") and CSRF_TRUSTED_ORIGINS = [\"{}\"] (Django 4+ checks Origin against them)", ctx.public_origin)),
                ("express", "app.set('trust proxy', 1) before the session and CSRF middleware (csrf-csrf, csrf-sync, csurf): otherwise a cookie: { secure: true } session or CSRF cookie is never sent and every token check fails".into()),
                ("rails", "config/environments/production.rb: config.assume_ssl = true and config.force_ssl = true, so request.base_url is https:// and matches the Origin header".into()),
            ]),
            false,
            "tlsfront sends X-Forwarded-Proto: https and X-Forwarded-Host with the public host; the app has to believe them. tlsfront never changes Origin or Referer.",
        ),
        FindingCode::UpstreamUnreachable => (
            Severity::Error,
            format!("The app does not answer at {}", ctx.upstream_authority),
            format!("tlsfront answers 502 to every request while nothing accepts connections at {}.", ctx.upstream_authority),
            fixes([
                ("flask", "start the app (flask run --host 127.0.0.1 --port …), and check upstream.url".into()),
                ("django", "start the app (gunicorn -b 127.0.0.1:8000 project.wsgi), and check upstream.url".into()),
                ("express", "start the app (node server.js), and check upstream.url".into()),
                ("rails", "start the app (bin/rails server -b 127.0.0.1), and check upstream.url".into()),
            ]),
            false,
            "tlsfront answers 502 with a short explanation.",
        ),
        FindingCode::UpstreamSlow => (
            Severity::Warning,
            format!("The app is slow to answer ({detail})"),
            "Slow responses hold connections and may hit upstream.response_timeout (then 504).".into(),
            fixes([
                ("flask", "run more workers (gunicorn -w 4 --threads 4), and find the slow path".into()),
                ("django", "run more workers (gunicorn -w 4), and find the slow path".into()),
                ("express", "find the blocking code; run several processes (cluster or pm2)".into()),
                ("rails", "raise Puma's threads/workers, and find the slow path".into()),
            ]),
            false,
            "tlsfront waits up to upstream.response_timeout, then answers 504.",
        ),
        FindingCode::UpstreamHttp10 => (
            Severity::Warning,
            "The app answers HTTP/1.0 without keep-alive".into(),
            "Every request then needs a new connection to the app: slower, and under load the machine runs out of ports.".into(),
            fixes([
                ("flask", "serve with gunicorn or waitress instead of a server that speaks HTTP/1.0".into()),
                ("django", "serve with gunicorn or uvicorn".into()),
                ("express", "do not set Connection: close".into()),
                ("rails", "serve with Puma".into()),
            ]),
            false,
            "tlsfront still works, opening a new connection each time.",
        ),
        FindingCode::UncompressedText => (
            Severity::Info,
            "The app sends large text responses uncompressed, and tlsfront's compression is off".into(),
            "HTML, CSS, JavaScript and JSON shrink to a fifth or less with gzip, brotli or zstd; sent as they are, pages load slower on slow links and cost more bandwidth. (The doctor asks without Accept-Encoding: an app that compresses when asked is fine.)".into(),
            fixes([
                ("flask", "turn [compression] on in tlsfront (enabled = true, the default), or use flask-compress".into()),
                ("django", "turn [compression] on in tlsfront (enabled = true, the default), or add django.middleware.gzip.GZipMiddleware".into()),
                ("express", "turn [compression] on in tlsfront (enabled = true, the default), or app.use(require('compression')())".into()),
                ("rails", "turn [compression] on in tlsfront (enabled = true, the default), or use Rack::Deflater".into()),
            ]),
            true,
            "With [compression] enabled (the default), tlsfront compresses such responses for every client that accepts it; switch it off only for pages that mix a secret with reflected input (BREACH), per route.",
        ),
    };
    Finding {
        code,
        severity,
        title,
        why,
        fix,
        tlsfront_fixes,
        tlsfront_does: tlsfront_does.to_string(),
        evidence,
    }
}

/// Cookie names that page scripts are meant to read.
const SCRIPT_READABLE: [&str; 4] = ["csrftoken", "XSRF-TOKEN", "csrf_token", "_csrf"];

/// Whether a name looks like a session cookie.
pub fn is_session_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["session", "sess", "sid", "remember", "auth", "token"]
        .iter()
        .any(|k| n.contains(k))
        && !n.contains("csrf")
}

/// One `Set-Cookie` as the doctor records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenCookie {
    /// Name.
    pub name: String,
    /// Value, the bytes as the app sent them.
    pub value: Vec<u8>,
    /// Path attribute (or the default).
    pub path: String,
    /// Domain attribute, if any.
    pub domain: Option<String>,
    /// Whether it deletes the cookie (Max-Age=0 or Expires in the past).
    pub deletion: bool,
}

/// Checks every Set-Cookie of a response; returns findings and the cookies.
pub fn check_cookies(
    headers: &HeaderMap,
    request_path: &str,
    ctx: &Context,
    evidence: &str,
) -> (Vec<Finding>, Vec<SeenCookie>) {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for raw in headers.get_all(SET_COOKIE) {
        let bytes = raw.as_bytes();
        let Some(c) = ParsedCookie::parse(bytes) else { continue };
        let name = String::from_utf8_lossy(c.name).into_owned();
        let text = |v: Option<Option<&[u8]>>| v.flatten().map(|b| String::from_utf8_lossy(b).into_owned());
        let max_age = text(c.attribute("max-age"));
        let expires = text(c.attribute("expires"));
        let deletion = max_age
            .as_deref()
            .is_some_and(|m| m.trim().starts_with('0') || m.trim().starts_with('-'))
            || expires.as_deref().is_some_and(|e| e.contains("1970"));
        let path = text(c.attribute("path")).unwrap_or_else(|| default_path(request_path));
        let domain = text(c.attribute("domain")).map(|d| d.trim_start_matches('.').to_ascii_lowercase());
        let secure = c.attribute("secure").is_some();
        let http_only = c.attribute("httponly").is_some();
        let same_site = text(c.attribute("samesite"));
        let ev = format!("{evidence} → Set-Cookie: {}", shorten(&String::from_utf8_lossy(bytes)));
        seen.push(SeenCookie {
            name: name.clone(),
            value: c.value.to_vec(),
            path: path.clone(),
            domain: domain.clone(),
            deletion,
        });
        if bytes.len() > 4096 {
            out.push(finding(
                FindingCode::CookieTooLarge,
                ctx,
                &format!("{name}: {} bytes", bytes.len()),
                ev.clone(),
            ));
        }
        if deletion {
            continue;
        }
        if !secure {
            out.push(finding(FindingCode::CookieMissingSecure, ctx, &name, ev.clone()));
        }
        if !http_only && !SCRIPT_READABLE.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
            out.push(finding(FindingCode::CookieMissingHttponly, ctx, &name, ev.clone()));
        }
        match same_site.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => out.push(finding(FindingCode::CookieMissingSamesite, ctx, &name, ev.clone())),
            Some("none") if !secure => {
                out.push(finding(FindingCode::CookieSamesiteNoneInsecure, ctx, &name, ev.clone()))
            }
            _ => {}
        }
        if let Some(d) = &domain {
            if !domain_matches(&ctx.public_host, d) {
                out.push(finding(
                    FindingCode::CookieDomainMismatch,
                    ctx,
                    &format!("{name}: Domain={d}"),
                    ev.clone(),
                ));
            }
        }
        if !path_matches(request_path, &path) {
            out.push(finding(
                FindingCode::CookiePathMismatch,
                ctx,
                &format!("{name}: Path={path} set by {request_path}"),
                ev.clone(),
            ));
        }
        if name.starts_with("__Host-") && (domain.is_some() || path != "/") {
            out.push(finding(
                FindingCode::CookiePrefixInvalid,
                ctx,
                &format!("{name} needs no Domain and Path=/"),
                ev.clone(),
            ));
        }
    }
    (out, seen)
}

/// RFC 6265 §5.1.3.
fn domain_matches(host: &str, domain: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == domain
        || (host.ends_with(domain)
            && host[..host.len() - domain.len()].ends_with('.')
            && host.parse::<std::net::IpAddr>().is_err())
}

/// RFC 6265 §5.1.4.
fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie) && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

/// RFC 6265 §5.1.4 default-path.
fn default_path(request: &str) -> String {
    match request.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => request[..i].to_string(),
    }
}

/// Absolute URLs in `text` that leak http:// or the internal address.
pub fn check_urls(text: &str, ctx: &Context, evidence: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let decoded = percent_decode(text);
    for candidate in [text, decoded.as_str()] {
        let lower = candidate.to_ascii_lowercase();
        let internal = ctx.upstream_authority.to_ascii_lowercase();
        for scheme in ["http://", "https://", "//"] {
            if lower.contains(&format!("{scheme}{internal}")) {
                out.push(finding(
                    FindingCode::RedirectInternalHost,
                    ctx,
                    "",
                    format!("{evidence}: {}", excerpt(candidate, &internal)),
                ));
                break;
            }
        }
        let public = format!("http://{}", ctx.public_host);
        let mut from = 0;
        while let Some(pos) = lower[from..].find(&public) {
            let at = from + pos;
            let next = lower[at + public.len()..].chars().next();
            // `http://localhost.evil` is another host; `http://localhost:8443/` is ours.
            if matches!(
                next,
                None | Some(':' | '/' | '?' | '#' | '"' | '\'' | ' ' | '<' | '&' | ')' | '\\')
            ) {
                out.push(finding(
                    FindingCode::RedirectHttpScheme,
                    ctx,
                    "",
                    format!("{evidence}: {}", excerpt(candidate, &public)),
                ));
                break;
            }
            from = at + public.len();
        }
        if !out.is_empty() {
            break;
        }
    }
    out
}

/// The Location header and its decoded query both count.
/// Text this large sent uncompressed is worth a note when tlsfront will not compress it.
pub const LARGE_TEXT_BYTES: usize = 10 * 1024;

/// A large text response the app sent as it is, when tlsfront's
/// compression is off.
pub fn check_compression(headers: &HeaderMap, body_len: usize, ctx: &Context, evidence: &str) -> Option<Finding> {
    if ctx.compression || body_len < LARGE_TEXT_BYTES || headers.contains_key(http::header::CONTENT_ENCODING) {
        return None;
    }
    let content_type = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    let defaults = crate::config::Compression::default();
    if !crate::policy::encoding::type_listed(content_type, &defaults.types) {
        return None;
    }
    Some(finding(
        FindingCode::UncompressedText,
        ctx,
        "",
        format!("{evidence} → {body_len} bytes of {content_type}, no Content-Encoding"),
    ))
}

pub fn check_location(headers: &HeaderMap, ctx: &Context, evidence: &str) -> Vec<Finding> {
    match headers.get(LOCATION).and_then(|v| v.to_str().ok()) {
        Some(loc) => check_urls(loc, ctx, &format!("{evidence} → Location")),
        None => Vec::new(),
    }
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn excerpt(text: &str, needle: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let Some(pos) = lower.find(needle) else {
        return shorten(text);
    };
    let start = text[..pos].char_indices().rev().nth(30).map_or(0, |(i, _)| i);
    let end = text[pos..].char_indices().nth(80).map_or(text.len(), |(i, _)| pos + i);
    let mut s = String::new();
    if start > 0 {
        s.push('…');
    }
    s.push_str(text[start..end].trim());
    if end < text.len() {
        s.push('…');
    }
    s.replace(['\n', '\r'], " ")
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 120 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(120).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ctx() -> Context {
        Context {
            public_host: "localhost".into(),
            public_port: 8443,
            public_origin: "https://localhost:8443".into(),
            upstream_authority: "127.0.0.1:5001".into(),
            upstream_is_loopback: true,
            compression: true,
        }
    }

    fn codes(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.code.as_str()).collect()
    }

    #[test]
    fn urls() {
        let c = ctx();
        assert_eq!(
            codes(&check_urls("http://localhost:8443/login", &c, "e")),
            vec!["redirect_http_scheme"]
        );
        assert_eq!(
            codes(&check_urls("/login?next=http%3A%2F%2Flocalhost%3A8443%2F", &c, "e")),
            vec!["redirect_http_scheme"]
        );
        assert_eq!(
            codes(&check_urls("<a href=\"http://127.0.0.1:5001/x\">", &c, "e")),
            vec!["redirect_internal_host"]
        );
        assert!(check_urls("https://localhost:8443/ok and /relative", &c, "e").is_empty());
        assert!(check_urls("http://localhost.example.com/", &c, "e").is_empty());
        assert!(check_urls("%%%2", &c, "e").is_empty());
    }

    #[test]
    fn cookies() {
        let c = ctx();
        let mut h = HeaderMap::new();
        for v in [
            "session=abc; Path=/; HttpOnly",
            "csrftoken=x; Path=/; SameSite=Lax; Secure",
            "wide=1; Domain=.example.com; Secure; HttpOnly; SameSite=Lax",
            "__Host-id=1; Path=/app; Secure; HttpOnly; SameSite=Lax",
            "gone=; Max-Age=0; Path=/",
            "deep=1; Path=/admin; Secure; HttpOnly; SameSite=Strict",
            "x=1; SameSite=None; HttpOnly",
        ] {
            h.append(SET_COOKIE, HeaderValue::from_static(v));
        }
        let (f, seen) = check_cookies(&h, "/login", &c, "GET /login");
        let got = codes(&f);
        assert!(got.contains(&"cookie_missing_secure"));
        assert!(got.contains(&"cookie_missing_samesite"));
        assert!(got.contains(&"cookie_domain_mismatch"));
        assert!(got.contains(&"cookie_prefix_invalid"));
        assert!(got.contains(&"cookie_path_mismatch"));
        assert!(got.contains(&"cookie_samesite_none_insecure"));
        // csrftoken may be script-readable; deletions are not judged.
        assert!(!f
            .iter()
            .any(|f| f.code == FindingCode::CookieMissingHttponly && f.title.contains("csrftoken")));
        assert!(!f.iter().any(|f| f.title.contains("gone")));
        assert_eq!(seen.len(), 7);
        assert!(seen.iter().any(|s| s.name == "gone" && s.deletion));
    }

    #[test]
    fn matching_rules() {
        assert!(domain_matches("app.example.com", "example.com"));
        assert!(!domain_matches("badexample.com", "example.com"));
        assert!(!domain_matches("localhost", "example.com"));
        assert!(path_matches("/admin/x", "/admin"));
        assert!(!path_matches("/administrator", "/admin"));
        assert!(path_matches("/anything", "/"));
        assert_eq!(default_path("/a/b"), "/a");
        assert_eq!(default_path("/a"), "/");
    }

    #[test]
    fn uncompressed_text_only_when_compression_is_off() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        let mut off = ctx();
        off.compression = false;
        let found = check_compression(&headers, 20_000, &off, "GET /").unwrap();
        assert_eq!(found.code, FindingCode::UncompressedText);
        assert!(
            found.evidence.contains("20000 bytes of text/html"),
            "{}",
            found.evidence
        );
        assert!(check_compression(&headers, 20_000, &ctx(), "GET /").is_none());
        assert!(check_compression(&headers, 5_000, &off, "GET /").is_none());
        let mut png = HeaderMap::new();
        png.insert("content-type", http::HeaderValue::from_static("image/png"));
        assert!(check_compression(&png, 20_000, &off, "GET /").is_none());
        headers.insert("content-encoding", http::HeaderValue::from_static("gzip"));
        assert!(check_compression(&headers, 20_000, &off, "GET /").is_none());
    }

    #[test]
    fn every_code_has_text_and_fixes() {
        let c = ctx();
        for code in FindingCode::ALL {
            let f = finding(code, &c, "x", String::new());
            assert!(!f.title.is_empty() && !f.why.is_empty(), "{code}");
            for fw in FRAMEWORKS {
                assert!(f.fix.get(fw).is_some_and(|s| !s.is_empty()), "{code}/{fw}");
            }
        }
    }

    #[test]
    fn codes_are_distinct_snake_case_names() {
        let names: std::collections::BTreeSet<&str> = FindingCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), FindingCode::ALL.len());
        assert!(names.iter().all(|n| n
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    }

    /// The app believes forged X-Forwarded-*: only information when nothing
    /// but this machine reaches it, an error when other hosts can.
    #[test]
    fn spoof_trust_is_an_error_when_the_app_is_reachable_from_other_hosts() {
        let loopback = ctx();
        let exposed = Context {
            upstream_authority: "10.0.0.5:8000".into(),
            upstream_is_loopback: false,
            compression: true,
            ..ctx()
        };
        let on_loopback = finding(FindingCode::TrustsSpoofedForwarded, &loopback, "", String::new());
        let reachable = finding(FindingCode::TrustsSpoofedForwarded, &exposed, "", String::new());
        assert_eq!(on_loopback.severity, Severity::Info);
        assert_eq!(reachable.severity, Severity::Error);
        assert!(reachable.why.contains("10.0.0.5:8000"), "{}", reachable.why);
    }
}
