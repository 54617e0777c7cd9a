//! Set-Cookie hardening: add `Secure`, `HttpOnly` and `SameSite` where absent.
//!
//! Hand-written rather than built on a cookie crate on purpose: a cookie crate
//! parses and re-serialises, which reorders attributes, re-formats `Expires`,
//! drops unknown attributes and unquotes values. Here every byte the app sent
//! is kept; we only ever append. Attribute names are matched
//! case-insensitively; nothing is duplicated; the rewrite is idempotent; a
//! value we cannot parse passes unchanged.

use http::header::{HeaderMap, HeaderValue, SET_COOKIE};

use crate::config;

/// The hardening to apply to every `Set-Cookie`.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    /// Add `Secure`.
    pub secure: bool,
    /// Add `HttpOnly`.
    pub http_only: bool,
    /// `SameSite` value to add when absent (`Lax`, `Strict`, `None`).
    pub same_site: Option<&'static str>,
    /// Cookie names that scripts must still read: no `HttpOnly` added.
    pub http_only_except: Vec<Vec<u8>>,
}

impl From<&config::Cookies> for CookiePolicy {
    fn from(c: &config::Cookies) -> Self {
        CookiePolicy {
            secure: c.secure,
            http_only: c.http_only,
            same_site: match c.same_site {
                config::SameSite::Keep => None,
                config::SameSite::Lax => Some("Lax"),
                config::SameSite::Strict => Some("Strict"),
                config::SameSite::None => Some("None"),
            },
            http_only_except: c.http_only_except.iter().map(|n| n.as_bytes().to_vec()).collect(),
        }
    }
}

/// What hardening one `Set-Cookie` needed (for logs and hints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hardening {
    /// `Secure` was added.
    pub added_secure: bool,
    /// `HttpOnly` was added.
    pub added_http_only: bool,
    /// `SameSite` was added.
    pub added_same_site: bool,
}

impl Hardening {
    /// Whether anything was added.
    pub fn any(&self) -> bool {
        self.added_secure || self.added_http_only || self.added_same_site
    }
}

/// Hardens every `Set-Cookie` in a response, in place and in order.
/// Returns what was added to any of them.
pub fn harden_response(headers: &mut HeaderMap, policy: &CookiePolicy) -> Hardening {
    let mut all = Hardening::default();
    if let http::header::Entry::Occupied(mut entry) = headers.entry(SET_COOKIE) {
        for value in entry.iter_mut() {
            if let Some((new, added)) = harden(value.as_bytes(), policy) {
                if let Ok(v) = HeaderValue::from_bytes(&new) {
                    *value = v;
                    all.added_secure |= added.added_secure;
                    all.added_http_only |= added.added_http_only;
                    all.added_same_site |= added.added_same_site;
                }
            }
        }
    }
    all
}

/// A `Set-Cookie` value split into name, value and attributes, borrowing
/// the original bytes (nothing is copied or normalised).
#[derive(Debug, Clone, Copy)]
pub struct ParsedCookie<'a> {
    /// Cookie name, trimmed.
    pub name: &'a [u8],
    /// Cookie value as sent (quotes kept), trimmed.
    pub value: &'a [u8],
    /// Everything after the first `;` that ends the value.
    rest: &'a [u8],
}

impl<'a> ParsedCookie<'a> {
    /// `None` if the value is not `name=value[; attr]*`.
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        let eq = value.iter().position(|&b| b == b'=')?;
        let name = trim(&value[..eq]);
        if name.is_empty() || name.contains(&b';') || name.iter().any(|&b| b == b'"' || b < 0x20 || b == 0x7f) {
            return None;
        }
        // The cookie value may be quoted; a `;` inside quotes is not a separator.
        let rest = &value[eq + 1..];
        let value_start = rest.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(rest.len());
        let search_from = if rest.get(value_start) == Some(&b'"') {
            rest[value_start + 1..]
                .iter()
                .position(|&b| b == b'"')
                .map_or(value_start, |p| value_start + 1 + p + 1)
        } else {
            value_start
        };
        let (cookie_value, attrs) = match rest[search_from..].iter().position(|&b| b == b';') {
            Some(semi) => (&rest[..search_from + semi], &rest[search_from + semi + 1..]),
            None => (rest, &b""[..]),
        };
        Some(ParsedCookie {
            name,
            value: trim(cookie_value),
            rest: attrs,
        })
    }

    /// The raw attribute bytes (after the `;` that ends the value); always a
    /// suffix of the parsed input.
    pub fn attribute_bytes(&self) -> &'a [u8] {
        self.rest
    }

    /// Attributes in order: (name, value), both trimmed; name as sent.
    pub fn attributes(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        self.rest.split(|&b| b == b';').filter_map(|attr| {
            let (key, val) = match attr.iter().position(|&b| b == b'=') {
                Some(i) => (trim(&attr[..i]), Some(trim(&attr[i + 1..]))),
                None => (trim(attr), None),
            };
            (!key.is_empty()).then_some((key, val))
        })
    }

    /// The last occurrence of an attribute (case-insensitive name):
    /// `Some(None)` for a flag, `Some(Some(v))` for `name=v`.
    pub fn attribute(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.attributes()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .last()
            .map(|(_, v)| v)
    }
}

/// The parts of a Set-Cookie value that hardening needs to know.
#[derive(Debug, Default)]
struct Attributes<'a> {
    name: &'a [u8],
    secure: bool,
    http_only: bool,
    same_site: Option<&'a [u8]>,
}

/// Hardens one `Set-Cookie` value. `None` when nothing changes (already hard,
/// or malformed); otherwise the new bytes: the original, untouched, plus the
/// attributes it lacked.
pub fn harden(value: &[u8], policy: &CookiePolicy) -> Option<(Vec<u8>, Hardening)> {
    let attrs = parse(value)?;
    let is_prefixed =
        starts_with_ignore_case(attrs.name, b"__Secure-") || starts_with_ignore_case(attrs.name, b"__Host-");
    let add_same_site = match (attrs.same_site, policy.same_site) {
        (None, Some(v)) => Some(v),
        _ => None,
    };
    let same_site_none = match attrs.same_site {
        Some(v) => trim(v).eq_ignore_ascii_case(b"none"),
        None => add_same_site == Some("None"),
    };
    let add_secure = !attrs.secure && (policy.secure || same_site_none || is_prefixed);
    let add_http_only =
        !attrs.http_only && policy.http_only && !policy.http_only_except.iter().any(|n| n.as_slice() == attrs.name);
    let hardening = Hardening {
        added_secure: add_secure,
        added_http_only: add_http_only,
        added_same_site: add_same_site.is_some(),
    };
    if !hardening.any() {
        return None;
    }

    let kept = trim_end(value);
    let mut out = Vec::with_capacity(kept.len() + 32);
    out.extend_from_slice(kept);
    // "a=b; Path=/;" already ends with a separator: don't leave an empty attribute.
    let mut separator: &[u8] = if kept.ends_with(b";") { b" " } else { b"; " };
    let mut push = |attr: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(separator);
        out.extend_from_slice(attr);
        separator = b"; ";
    };
    if add_secure {
        push(b"Secure", &mut out);
    }
    if add_http_only {
        push(b"HttpOnly", &mut out);
    }
    if let Some(v) = add_same_site {
        let mut attr = b"SameSite=".to_vec();
        attr.extend_from_slice(v.as_bytes());
        push(&attr, &mut out);
    }
    Some((out, hardening))
}

/// Finds the cookie name and the security attributes; `None` if the value is
/// not `name=value[; attr]*` (then it passes unchanged).
fn parse(value: &[u8]) -> Option<Attributes<'_>> {
    let cookie = ParsedCookie::parse(value)?;
    let mut attrs = Attributes {
        name: cookie.name,
        ..Attributes::default()
    };
    for (key, val) in cookie.attributes() {
        if key.eq_ignore_ascii_case(b"secure") {
            attrs.secure = true;
        } else if key.eq_ignore_ascii_case(b"httponly") {
            attrs.http_only = true;
        } else if key.eq_ignore_ascii_case(b"samesite") {
            attrs.same_site = Some(val.unwrap_or(b""));
        }
    }
    Some(attrs)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(0, |e| e + 1);
    &s[..end]
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_policy() -> CookiePolicy {
        CookiePolicy {
            secure: true,
            http_only: true,
            same_site: None,
            http_only_except: vec![b"csrftoken".to_vec(), b"XSRF-TOKEN".to_vec()],
        }
    }

    fn hardened(v: &str, p: &CookiePolicy) -> String {
        match harden(v.as_bytes(), p) {
            Some((out, _)) => String::from_utf8(out).unwrap(),
            None => v.to_string(),
        }
    }

    /// (input, expected) with the default policy: Secure + HttpOnly.
    const CASES: &[(&str, &str)] = &[
        // Flask / Werkzeug
        ("session=eyJfZnJlc2giOmZhbHNlfQ.ZkX1bA.abc; HttpOnly; Path=/",
         "session=eyJfZnJlc2giOmZhbHNlfQ.ZkX1bA.abc; HttpOnly; Path=/; Secure"),
        ("session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/",
         "session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/; Secure"),
        ("remember_token=1|abc; Expires=Fri, 20 Nov 2027 10:00:00 GMT; Path=/",
         "remember_token=1|abc; Expires=Fri, 20 Nov 2027 10:00:00 GMT; Path=/; Secure; HttpOnly"),
        ("session=abc; Secure; HttpOnly; Path=/; SameSite=Lax",
         "session=abc; Secure; HttpOnly; Path=/; SameSite=Lax"),
        // Django
        ("sessionid=x7k2; expires=Thu, 10 Dec 2026 09:00:00 GMT; HttpOnly; Max-Age=1209600; Path=/; SameSite=Lax",
         "sessionid=x7k2; expires=Thu, 10 Dec 2026 09:00:00 GMT; HttpOnly; Max-Age=1209600; Path=/; SameSite=Lax; Secure"),
        ("csrftoken=Zm9v; expires=Thu, 25 Nov 2027 09:00:00 GMT; Max-Age=31449600; Path=/; SameSite=Lax",
         "csrftoken=Zm9v; expires=Thu, 25 Nov 2027 09:00:00 GMT; Max-Age=31449600; Path=/; SameSite=Lax; Secure"),
        ("messages=\"123abc$[[\\\"__json_message\\\"\\0540]]\"; Path=/; SameSite=Lax",
         "messages=\"123abc$[[\\\"__json_message\\\"\\0540]]\"; Path=/; SameSite=Lax; Secure; HttpOnly"),
        // Express / connect
        ("connect.sid=s%3AabcDEF.sig%2Bx; Path=/; Expires=Wed, 02 Dec 2026 10:00:00 GMT; HttpOnly",
         "connect.sid=s%3AabcDEF.sig%2Bx; Path=/; Expires=Wed, 02 Dec 2026 10:00:00 GMT; HttpOnly; Secure"),
        ("XSRF-TOKEN=abc123; Path=/", "XSRF-TOKEN=abc123; Path=/; Secure"),
        ("express:sess=eyJ1c2VyIjoxfQ==; path=/; samesite=strict; httponly",
         "express:sess=eyJ1c2VyIjoxfQ==; path=/; samesite=strict; httponly; Secure"),
        // Rails
        ("_myapp_session=Rk9P--a1b2; path=/; HttpOnly; SameSite=Lax",
         "_myapp_session=Rk9P--a1b2; path=/; HttpOnly; SameSite=Lax; Secure"),
        ("remember_user_token=eyJfcmFpbHMi; path=/; expires=Sat, 26 Dec 2026 10:00:00 GMT; secure; HttpOnly; SameSite=Lax",
         "remember_user_token=eyJfcmFpbHMi; path=/; expires=Sat, 26 Dec 2026 10:00:00 GMT; secure; HttpOnly; SameSite=Lax"),
        // PHP
        ("PHPSESSID=el4ukv0kqbvoirg7nkp4dncpk3; path=/",
         "PHPSESSID=el4ukv0kqbvoirg7nkp4dncpk3; path=/; Secure; HttpOnly"),
        ("PHPSESSID=abc; path=/; domain=.example.com; secure; HttpOnly; SameSite=Strict",
         "PHPSESSID=abc; path=/; domain=.example.com; secure; HttpOnly; SameSite=Strict"),
        ("laravel_session=eyJpdiI6%3D%3D; expires=Thu, 26-Nov-2026 12:00:00 GMT; Max-Age=7200; path=/; httponly; samesite=lax",
         "laravel_session=eyJpdiI6%3D%3D; expires=Thu, 26-Nov-2026 12:00:00 GMT; Max-Age=7200; path=/; httponly; samesite=lax; Secure"),
        // Java / ASP.NET / Go
        ("JSESSIONID=8F3A; Path=/app; HttpOnly", "JSESSIONID=8F3A; Path=/app; HttpOnly; Secure"),
        (".AspNetCore.Cookies=CfDJ8; path=/; samesite=lax; httponly",
         ".AspNetCore.Cookies=CfDJ8; path=/; samesite=lax; httponly; Secure"),
        ("ASP.NET_SessionId=xyz; path=/; HttpOnly; SameSite=Lax",
         "ASP.NET_SessionId=xyz; path=/; HttpOnly; SameSite=Lax; Secure"),
        ("gorilla=MTY5; Path=/; Expires=Sat, 26 Dec 2026 10:00:00 GMT; Max-Age=2592000",
         "gorilla=MTY5; Path=/; Expires=Sat, 26 Dec 2026 10:00:00 GMT; Max-Age=2592000; Secure; HttpOnly"),
        // Odd case and spacing of existing flags
        ("a=b; SECURE; HTTPONLY", "a=b; SECURE; HTTPONLY"),
        ("a=b;secure;httponly", "a=b;secure;httponly"),
        ("a=b;  HttpOnly  ", "a=b;  HttpOnly; Secure"),
        ("a=b; Path=/;", "a=b; Path=/; Secure; HttpOnly"),
        ("a=b", "a=b; Secure; HttpOnly"),
        ("a=", "a=; Secure; HttpOnly"),
        // SameSite=None always gets Secure
        ("tracker=1; SameSite=None", "tracker=1; SameSite=None; Secure; HttpOnly"),
        ("tracker=1; samesite=none; HttpOnly", "tracker=1; samesite=none; HttpOnly; Secure"),
        // Quoted values, with separators inside the quotes
        ("q=\"a;b=c\"; Path=/", "q=\"a;b=c\"; Path=/; Secure; HttpOnly"),
        ("q=\"Secure\"", "q=\"Secure\"; Secure; HttpOnly"),
        // A value that looks like an attribute is not an attribute
        ("secure=1; Path=/", "secure=1; Path=/; Secure; HttpOnly"),
        ("HttpOnly=1", "HttpOnly=1; Secure; HttpOnly"),
        // Unknown attributes and extensions are kept
        ("id=a3fWa; Max-Age=2592000; Partitioned; Priority=High",
         "id=a3fWa; Max-Age=2592000; Partitioned; Priority=High; Secure; HttpOnly"),
        ("lang=en-US; Domain=example.com; Path=/docs; Comment=\"x\"",
         "lang=en-US; Domain=example.com; Path=/docs; Comment=\"x\"; Secure; HttpOnly"),
        // Secure=anything counts as Secure for browsers
        ("a=b; Secure=false; HttpOnly", "a=b; Secure=false; HttpOnly"),
        // Scripts must read these: Secure only
        ("csrftoken=abc; Path=/", "csrftoken=abc; Path=/; Secure"),
        // Malformed: unchanged
        ("no-equals-sign", "no-equals-sign"),
        ("=nameless", "=nameless"),
        ("; Path=/", "; Path=/"),
        ("", ""),
    ];

    #[test]
    fn real_world_shapes() {
        let p = default_policy();
        for (input, expected) in CASES {
            assert_eq!(&hardened(input, &p), expected, "input: {input}");
        }
        assert!(CASES.len() >= 30);
    }

    #[test]
    fn idempotent_and_never_duplicates() {
        let mut p = default_policy();
        p.same_site = Some("Lax");
        for (input, _) in CASES {
            let once = hardened(input, &p);
            let twice = hardened(&once, &p);
            assert_eq!(once, twice, "input: {input}");
            let lower = once.to_ascii_lowercase();
            for flag in ["; secure", "; httponly", "; samesite"] {
                assert!(lower.matches(flag).count() <= 1, "{flag} duplicated in {once}");
            }
        }
    }

    #[test]
    fn prefix_is_kept_byte_for_byte() {
        let p = default_policy();
        for (input, _) in CASES {
            assert!(hardened(input, &p).starts_with(input.trim_end()), "input: {input}");
        }
    }

    #[test]
    fn same_site_policy() {
        let mut p = default_policy();
        p.same_site = Some("Lax");
        assert_eq!(hardened("s=1", &p), "s=1; Secure; HttpOnly; SameSite=Lax");
        assert_eq!(
            hardened("s=1; SameSite=Strict", &p),
            "s=1; SameSite=Strict; Secure; HttpOnly"
        );
        p.same_site = Some("None");
        p.secure = false;
        assert_eq!(hardened("s=1", &p), "s=1; Secure; HttpOnly; SameSite=None");
        p.same_site = None;
        assert_eq!(hardened("s=1", &p), "s=1; HttpOnly");
    }

    #[test]
    fn secure_off_still_secures_prefixed_and_none() {
        let p = CookiePolicy {
            secure: false,
            http_only: false,
            same_site: None,
            http_only_except: vec![],
        };
        assert_eq!(hardened("__Host-id=1; Path=/", &p), "__Host-id=1; Path=/; Secure");
        assert_eq!(hardened("__Secure-id=1", &p), "__Secure-id=1; Secure");
        assert_eq!(hardened("x=1; SameSite=None", &p), "x=1; SameSite=None; Secure");
        assert_eq!(hardened("x=1", &p), "x=1");
    }

    #[test]
    fn response_headers_stay_separate_and_in_order() {
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("a=1"));
        h.append(SET_COOKIE, HeaderValue::from_static("b=2; Secure; HttpOnly"));
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("c=3; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        let added = harden_response(&mut h, &default_policy());
        assert!(added.added_secure && added.added_http_only && !added.added_same_site);
        let all: Vec<_> = h.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(
            all,
            vec![
                "a=1; Secure; HttpOnly",
                "b=2; Secure; HttpOnly",
                "c=3; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Secure; HttpOnly"
            ]
        );
    }

    #[test]
    fn parsed_cookie_parts() {
        let c = ParsedCookie::parse(b"q=\"a;b\"; Path=/x; Domain=.example.com; Secure; SameSite = Lax").unwrap();
        assert_eq!(c.name, b"q");
        assert_eq!(c.value, b"\"a;b\"");
        assert_eq!(c.attribute("path"), Some(Some(&b"/x"[..])));
        assert_eq!(c.attribute("DOMAIN"), Some(Some(&b".example.com"[..])));
        assert_eq!(c.attribute("secure"), Some(None));
        assert_eq!(c.attribute("samesite"), Some(Some(&b"Lax"[..])));
        assert_eq!(c.attribute("httponly"), None);
        assert_eq!(c.attributes().count(), 4);
        assert!(ParsedCookie::parse(b"novalue").is_none());
    }

    #[test]
    fn non_utf8_bytes_are_kept() {
        let input = b"n=\xe9t\xe9; Path=/";
        let (out, _) = harden(input, &default_policy()).unwrap();
        assert!(out.starts_with(input));
        assert!(HeaderValue::from_bytes(&out).is_ok());
    }
}
