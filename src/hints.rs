//! Live hints: the first time the running proxy has to correct something in
//! the app's traffic, it says once, in plain language, what the app gets
//! wrong and how to fix it; later occurrences are only counted in metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::policy::cookies::Hardening;
use crate::policy::redirects::Rewrite;
use crate::telemetry::Telemetry;

/// Problems tlsfront can notice in live traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Hint {
    /// A Set-Cookie without `Secure`.
    CookieWithoutSecure,
    /// A Set-Cookie without `HttpOnly`.
    CookieWithoutHttpOnly,
    /// A redirect to the app's own address.
    RedirectToUpstream,
    /// A redirect to the public host over `http://`.
    RedirectOverHttp,
}

impl Hint {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Hint::CookieWithoutSecure => "cookie_without_secure",
            Hint::CookieWithoutHttpOnly => "cookie_without_httponly",
            Hint::RedirectToUpstream => "redirect_to_upstream",
            Hint::RedirectOverHttp => "redirect_over_http",
        }
    }

    /// What is wrong, why it matters, and the fix, in one paragraph.
    pub fn explanation(self) -> &'static str {
        match self {
            Hint::CookieWithoutSecure => {
                "the app sets cookies without Secure; tlsfront adds it, but the app does not know it is served over https. \
                 Fix in the app: Flask SESSION_COOKIE_SECURE=True and REMEMBER_COOKIE_SECURE=True; Django SESSION_COOKIE_SECURE=True and CSRF_COOKIE_SECURE=True; \
                 Express app.set('trust proxy', 1) and cookie: { secure: true }; Rails config.assume_ssl = true and config.force_ssl = true"
            }
            Hint::CookieWithoutHttpOnly => {
                "the app sets cookies without HttpOnly, so page scripts (and XSS) can read them; tlsfront adds it. \
                 If a script must read a cookie (CSRF tokens), list it in cookies.http_only_except. \
                 Fix in the app: Flask SESSION_COOKIE_HTTPONLY=True; Django SESSION_COOKIE_HTTPONLY=True; Express cookie: { httpOnly: true }"
            }
            Hint::RedirectToUpstream => {
                "the app redirects to its own internal address (it ignores X-Forwarded-Host), which browsers cannot reach; tlsfront rewrote it. \
                 Fix in the app: Flask/Werkzeug ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1); \
                 Django USE_X_FORWARDED_HOST=True and USE_X_FORWARDED_PORT=True; Express app.set('trust proxy', 1)"
            }
            Hint::RedirectOverHttp => {
                "the app builds http:// URLs for its public host (it ignores X-Forwarded-Proto), which drops Secure cookies and the session; tlsfront rewrote it to https. \
                 Fix in the app: Flask/Werkzeug ProxyFix(app.wsgi_app, x_proto=1, ...); Django SECURE_PROXY_SSL_HEADER = (\"HTTP_X_FORWARDED_PROTO\", \"https\"); \
                 Express app.set('trust proxy', 1); Rails config.assume_ssl = true"
            }
        }
    }
}

/// Remembers which hints were already logged.
pub struct Hints {
    seen: [AtomicBool; 4],
    telemetry: Arc<Telemetry>,
}

impl Hints {
    /// Nothing seen yet.
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Hints {
            seen: Default::default(),
            telemetry,
        }
    }

    /// Logs the hint the first time, counts it every time.
    pub fn notice(&self, hint: Hint, detail: &str) {
        self.telemetry
            .metrics
            .hints
            .get_or_create(&vec![("kind", hint.label())])
            .inc();
        if !self.seen[hint as usize].swap(true, Ordering::Relaxed) {
            tracing::warn!(hint = hint.label(), "{detail}: {}", hint.explanation());
        }
    }

    /// After Set-Cookie hardening.
    pub fn cookies_hardened(&self, added: Hardening) {
        if added.added_secure {
            self.notice(Hint::CookieWithoutSecure, "Set-Cookie without Secure");
        }
        if added.added_http_only {
            self.notice(Hint::CookieWithoutHttpOnly, "Set-Cookie without HttpOnly");
        }
    }

    /// After a redirect URL was rewritten.
    pub fn redirect_rewritten(&self, rewrite: &Rewrite) {
        let detail = format!("rewrote {}: {}", rewrite.header, rewrite.from);
        let hint = if rewrite.to_upstream {
            Hint::RedirectToUpstream
        } else {
            Hint::RedirectOverHttp
        };
        self.notice(hint, &detail);
    }
}
