//! Live hints: the first time the running proxy has to correct something in
//! the app's traffic, it says once, in plain language, what the app gets
//! wrong and how to fix it; later occurrences are only counted in metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use crate::policy::cookies::Hardening;
use crate::policy::redirects::Rewrite;
use crate::telemetry::Telemetry;

/// Problems tlsfront can notice in live traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Per hint: whether it was logged, and its counter, taken from the metric
/// family once (a family lookup hashes its labels under a lock: ~1,100
/// instructions a request when it ran for every hardened cookie).
struct Noticed {
    logged: AtomicBool,
    count: Counter,
}

/// One entry per hint, reached through an exhaustive match: a new hint is a
/// compile error here, never an index out of bounds at run time.
struct Seen {
    cookie_without_secure: Noticed,
    cookie_without_http_only: Noticed,
    redirect_to_upstream: Noticed,
    redirect_over_http: Noticed,
}

impl Seen {
    fn of(&self, hint: Hint) -> &Noticed {
        match hint {
            Hint::CookieWithoutSecure => &self.cookie_without_secure,
            Hint::CookieWithoutHttpOnly => &self.cookie_without_http_only,
            Hint::RedirectToUpstream => &self.redirect_to_upstream,
            Hint::RedirectOverHttp => &self.redirect_over_http,
        }
    }
}

/// Remembers which hints were already logged.
pub struct Hints {
    seen: Seen,
}

impl Hints {
    /// Nothing seen yet.
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        let noticed = |hint: Hint| Noticed {
            logged: AtomicBool::new(false),
            count: telemetry
                .metrics
                .hints
                .get_or_create(&vec![("kind", hint.label())])
                .clone(),
        };
        Hints {
            seen: Seen {
                cookie_without_secure: noticed(Hint::CookieWithoutSecure),
                cookie_without_http_only: noticed(Hint::CookieWithoutHttpOnly),
                redirect_to_upstream: noticed(Hint::RedirectToUpstream),
                redirect_over_http: noticed(Hint::RedirectOverHttp),
            },
        }
    }

    /// Logs the hint the first time, counts it every time. `detail` is only
    /// built for the one line that is logged, not on every occurrence.
    pub fn notice(&self, hint: Hint, detail: impl FnOnce() -> String) {
        let noticed = self.seen.of(hint);
        noticed.count.inc();
        // A cheap load first: after the first time, no read-modify-write per request.
        let flag = &noticed.logged;
        if !flag.load(Ordering::Relaxed) && !flag.swap(true, Ordering::Relaxed) {
            tracing::warn!(hint = hint.label(), "{}: {}", detail(), hint.explanation());
        }
    }

    /// Whether `hint` was already logged.
    pub fn logged(&self, hint: Hint) -> bool {
        self.seen.of(hint).logged.load(Ordering::Relaxed)
    }

    /// After Set-Cookie hardening.
    pub fn cookies_hardened(&self, added: Hardening) {
        if added.added_secure {
            self.notice(Hint::CookieWithoutSecure, || "Set-Cookie without Secure".into());
        }
        if added.added_http_only {
            self.notice(Hint::CookieWithoutHttpOnly, || "Set-Cookie without HttpOnly".into());
        }
    }

    /// After a redirect URL was rewritten.
    pub fn redirect_rewritten(&self, rewrite: &Rewrite) {
        let hint = if rewrite.to_upstream {
            Hint::RedirectToUpstream
        } else {
            Hint::RedirectOverHttp
        };
        self.notice(hint, || format!("rewrote {}: {}", rewrite.header, rewrite.from));
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::config::AccessLogFormat;

    /// Every hint has its own flag, the detail is built once (when logged),
    /// and every occurrence is counted.
    #[test]
    fn each_hint_is_logged_once_and_counted_always() {
        let telemetry = Arc::new(Telemetry::new(AccessLogFormat::Off));
        let hints = Hints::new(telemetry.clone());
        let all = [
            Hint::CookieWithoutSecure,
            Hint::CookieWithoutHttpOnly,
            Hint::RedirectToUpstream,
            Hint::RedirectOverHttp,
        ];
        let built = Cell::new(0);
        // A subscriber that takes warnings, so the detail is really formatted.
        let subscriber = tracing_subscriber::fmt().with_writer(std::io::sink).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        for round in 0..3 {
            for (i, hint) in all.iter().enumerate() {
                assert_eq!(hints.logged(*hint), round > 0, "{hint:?} in round {round}");
                hints.notice(*hint, || {
                    built.set(built.get() + 1);
                    format!("detail {i}")
                });
                assert!(hints.logged(*hint));
                for later in &all[i + 1..] {
                    assert_eq!(hints.logged(*later), round > 0, "{later:?} set by {hint:?}");
                }
            }
        }
        assert_eq!(built.get(), all.len(), "detail built more than once per hint");
        let text = telemetry.metrics.encode();
        assert!(text.contains("kind=\"redirect_over_http\"} 3"), "{text}");
    }
}
