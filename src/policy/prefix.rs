//! Mounting an app under a path prefix (`strip_prefix = true`).
//!
//! Requests lose the prefix on the way in (`/admin/login` → `/login`, with
//! `X-Forwarded-Prefix: /admin`); on the way out the prefix is put back
//! wherever the app leaks an unprefixed path: `Location`, `Content-Location`,
//! `Refresh` and the `Path` of every `Set-Cookie`. Everything else is kept
//! byte for byte, and each rewrite is idempotent: a path already inside the
//! prefix (an app that honours `X-Forwarded-Prefix`) is left alone.
//!
//! The path normalisation used to pick a route lives in
//! [`crate::request_path`], below the configuration that also uses it.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LOCATION, LOCATION, SET_COOKIE};

pub use crate::request_path::{normalise_path, within};

use super::cookies::ParsedCookie;
use super::redirects::{decode, encode, map_refresh_url, split_host_port};

static REFRESH: HeaderName = HeaderName::from_static("refresh");

/// `path` without `prefix` (which it must be [`within`]), always starting with `/`.
pub fn strip<'a>(path: &'a str, prefix: &str) -> &'a str {
    if prefix == "/" {
        return path;
    }
    match path.strip_prefix(prefix) {
        Some("") | None => "/",
        Some(rest) => rest,
    }
}

/// `prefix` + `path` unless `path` is already inside the prefix.
fn put_back(path: &str, prefix: &str) -> Option<String> {
    if within(path, prefix) {
        return None;
    }
    let mut out = String::with_capacity(prefix.len() + path.len());
    out.push_str(prefix);
    out.push_str(path);
    Some(out)
}

/// Puts the prefix back into one URL from `Location`, `Content-Location` or
/// `Refresh`: a path-absolute reference (`/login?next=/`), or an absolute URL
/// on the public host. Relative references (`login`), other hosts and paths
/// already inside the prefix are left alone; `None` = unchanged.
pub fn prefix_url(url: &str, prefix: &str, public_host: &str) -> Option<String> {
    if url.starts_with('/') && !url.starts_with("//") {
        let end = url.find(['?', '#']).unwrap_or(url.len());
        let new_path = put_back(&url[..end], prefix)?;
        return Some(format!("{new_path}{}", &url[end..]));
    }
    // Bytes, not str slices: a non-ASCII URL must not be cut inside a character
    // (found by the prefix fuzz target).
    let starts = |scheme: &[u8]| {
        url.as_bytes()
            .get(..scheme.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(scheme))
    };
    let scheme_end = if starts(b"https://") {
        8
    } else if starts(b"http://") {
        7
    } else if url.starts_with("//") {
        2
    } else {
        return None;
    };
    let rest = &url[scheme_end..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, _) = split_host_port(&rest[..auth_end])?;
    if !host.eq_ignore_ascii_case(public_host) {
        return None;
    }
    let tail = &rest[auth_end..];
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let path = if path_end == 0 { "/" } else { &tail[..path_end] };
    if !path.starts_with('/') {
        return None;
    }
    let new_path = put_back(path, prefix)?;
    Some(format!(
        "{}{new_path}{}",
        &url[..scheme_end + auth_end],
        &tail[path_end..]
    ))
}

/// Puts the prefix into the `Path` of one `Set-Cookie`: `Path=/` becomes
/// `Path=/admin`, `Path=/x` becomes `Path=/admin/x`, a missing or invalid
/// Path becomes `Path=/admin`. Every other byte is kept; `None` = unchanged
/// (already inside the prefix, or not a cookie).
pub fn prefix_cookie_path(value: &[u8], prefix: &str) -> Option<Vec<u8>> {
    let parsed = ParsedCookie::parse(value)?;
    let attrs = parsed.attribute_bytes();
    let attrs_start = value.len() - attrs.len();
    let mut out = Vec::with_capacity(value.len() + prefix.len() + 8);
    out.extend_from_slice(&value[..attrs_start]);
    let mut found = false;
    let mut changed = false;
    let mut first = true;
    for attr in attrs.split(|&b| b == b';') {
        if !first {
            out.push(b';');
        }
        first = false;
        let eq = attr.iter().position(|&b| b == b'=');
        let key = trim(&attr[..eq.unwrap_or(attr.len())]);
        if !key.eq_ignore_ascii_case(b"path") {
            out.extend_from_slice(attr);
            continue;
        }
        found = true;
        let Some(eq) = eq else {
            // A bare `Path` flag: browsers ignore it; give it the prefix.
            out.extend_from_slice(attr);
            out.push(b'=');
            out.extend_from_slice(prefix.as_bytes());
            changed = true;
            continue;
        };
        let raw = &attr[eq + 1..];
        let v = trim(raw);
        let lead = raw.len() - raw.iter().skip_while(|b| **b == b' ' || **b == b'\t').count();
        let path = std::str::from_utf8(v).ok().filter(|p| p.starts_with('/'));
        let new = match path {
            Some(p) if within(p, prefix) => None,
            Some("/") => Some(prefix.to_string()),
            Some(p) => Some(format!("{prefix}{p}")),
            None => Some(prefix.to_string()),
        };
        match new {
            None => out.extend_from_slice(attr),
            Some(new) => {
                out.extend_from_slice(&attr[..eq + 1 + lead]);
                out.extend_from_slice(new.as_bytes());
                out.extend_from_slice(&raw[lead + v.len()..]);
                changed = true;
            }
        }
    }
    if !found {
        out.extend_from_slice(b"; Path=");
        out.extend_from_slice(prefix.as_bytes());
        changed = true;
    }
    changed.then_some(out)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| *c != b' ' && *c != b'\t').unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| *c != b' ' && *c != b'\t')
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// Puts the prefix back into a response's `Location`, `Content-Location`,
/// `Refresh` and every `Set-Cookie` `Path`. Returns how many headers changed.
pub fn prefix_response(headers: &mut HeaderMap, prefix: &str, public_host: &str) -> usize {
    let mut changed = 0;
    for name in [&LOCATION, &CONTENT_LOCATION] {
        if let Some((value, latin1)) = headers.get(name).map(decode) {
            if let Some(v) = prefix_url(&value, prefix, public_host).and_then(|new| encode(&new, latin1)) {
                headers.insert(name.clone(), v);
                changed += 1;
            }
        }
    }
    if let Some((value, latin1)) = headers.get(&REFRESH).map(decode) {
        if let Some(v) =
            map_refresh_url(&value, |url| prefix_url(url, prefix, public_host)).and_then(|new| encode(&new, latin1))
        {
            headers.insert(REFRESH.clone(), v);
            changed += 1;
        }
    }
    if let http::header::Entry::Occupied(mut entry) = headers.entry(SET_COOKIE) {
        for value in entry.iter_mut() {
            if let Some(v) = prefix_cookie_path(value.as_bytes(), prefix).and_then(|b| HeaderValue::from_bytes(&b).ok())
            {
                *value = v;
                changed += 1;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        assert_eq!(strip("/admin", "/admin"), "/");
        assert_eq!(strip("/admin/", "/admin"), "/");
        assert_eq!(strip("/admin/login", "/admin"), "/login");
    }

    #[test]
    fn urls_get_the_prefix_back() {
        let p = "/admin";
        let h = "app.example";
        for (url, want) in [
            ("/login", Some("/admin/login")),
            ("/login?next=/x#f", Some("/admin/login?next=/x#f")),
            ("/", Some("/admin/")),
            ("/admin/login", None),
            ("/admin", None),
            ("/administrator", Some("/admin/administrator")),
            ("login", None),
            ("?x=1", None),
            ("https://app.example/login", Some("https://app.example/admin/login")),
            (
                "https://APP.example:8443/login?x",
                Some("https://APP.example:8443/admin/login?x"),
            ),
            ("https://app.example", Some("https://app.example/admin/")),
            ("https://app.example?q", Some("https://app.example/admin/?q")),
            ("https://app.example/admin/x", None),
            ("https://other.example/login", None),
            ("//app.example/login", Some("//app.example/admin/login")),
            ("//other.example/login", None),
            ("mailto:x@app.example", None),
            ("htt\u{e9}://x/y", None),
            ("\u{e9}\u{e9}\u{e9}\u{e9}/login", None),
        ] {
            assert_eq!(prefix_url(url, p, h).as_deref(), want, "{url}");
            if let Some(w) = want {
                assert_eq!(prefix_url(w, p, h), None, "idempotent for {url}");
            }
        }
    }

    #[test]
    fn cookie_paths_get_the_prefix() {
        let p = "/admin";
        for (cookie, want) in [
            (
                "session=abc; Path=/; HttpOnly",
                Some("session=abc; Path=/admin; HttpOnly"),
            ),
            (
                "session=abc; path=/x; Secure",
                Some("session=abc; path=/admin/x; Secure"),
            ),
            (
                "session=abc; Path= /; Secure",
                Some("session=abc; Path= /admin; Secure"),
            ),
            ("session=abc; HttpOnly", Some("session=abc; HttpOnly; Path=/admin")),
            ("session=abc", Some("session=abc; Path=/admin")),
            ("session=\"a;b\"; Path=/", Some("session=\"a;b\"; Path=/admin")),
            ("session=abc; Path=/admin", None),
            ("session=abc; Path=/admin/sub; Secure", None),
            ("session=abc; Path=relative", Some("session=abc; Path=/admin")),
            ("session=abc; Path", Some("session=abc; Path=/admin")),
            ("not a cookie", None),
            (
                "remember_token=x; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/; SameSite=Lax",
                Some("remember_token=x; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/admin; SameSite=Lax"),
            ),
        ] {
            let got = prefix_cookie_path(cookie.as_bytes(), p).map(|b| String::from_utf8(b).unwrap());
            assert_eq!(got.as_deref(), want, "{cookie}");
            if let Some(w) = want {
                assert_eq!(prefix_cookie_path(w.as_bytes(), p), None, "idempotent for {cookie}");
            }
        }
    }

    #[test]
    fn response_headers() {
        let mut h = HeaderMap::new();
        h.insert(LOCATION, HeaderValue::from_static("/login"));
        h.insert(REFRESH.clone(), HeaderValue::from_static("0; url=/home"));
        h.append(SET_COOKIE, HeaderValue::from_static("a=1; Path=/"));
        h.append(SET_COOKIE, HeaderValue::from_static("b=2; Path=/admin"));
        h.insert("x-other", HeaderValue::from_static("/login"));
        assert_eq!(prefix_response(&mut h, "/admin", "app.example"), 3);
        assert_eq!(h[LOCATION], "/admin/login");
        assert_eq!(h[&REFRESH], "0; url=/admin/home");
        let cookies: Vec<_> = h.get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies, vec!["a=1; Path=/admin", "b=2; Path=/admin"]);
        assert_eq!(h["x-other"], "/login");
        assert_eq!(prefix_response(&mut h, "/admin", "app.example"), 0);
    }

    /// The fuzz finding of issue 26 (`fuzz/regressions/prefix/`): a prefix
    /// with `'` closed a quoted Refresh URL. The config now refuses it (see
    /// `PathPrefix::parse`); its percent-encoded form is written into every
    /// header as it is, and a second pass changes nothing.
    #[test]
    fn a_quote_in_a_prefix_is_refused_and_its_escape_is_safe() {
        use crate::config::PathPrefix;
        for bad in ["/a'b", "/a\"b", "/a;b", "/a,b", "/a(b)"] {
            let e = PathPrefix::parse(bad).unwrap_err();
            assert!(e.contains("cannot contain"), "{bad}: {e}");
        }
        let prefix = PathPrefix::parse("/a%27b").unwrap();
        let prefix = prefix.as_str();
        let mut h = HeaderMap::new();
        h.insert(REFRESH.clone(), HeaderValue::from_static("0;$uurl='/b=;;iLa"));
        h.insert(LOCATION, HeaderValue::from_static("/b"));
        h.append(SET_COOKIE, HeaderValue::from_static("s=1; Path=/"));
        prefix_response(&mut h, prefix, "app.example");
        assert_eq!(h[&REFRESH], "0;$uurl='/a%27b/b=;;iLa");
        assert_eq!(h[LOCATION], "/a%27b/b");
        assert_eq!(h[SET_COOKIE], "s=1; Path=/a%27b");
        let once = h.clone();
        assert_eq!(prefix_response(&mut h, prefix, "app.example"), 0);
        assert_eq!(h, once);
    }
}
