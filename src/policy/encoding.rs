//! Response compression policy: which coding a client gets (RFC 9110
//! §12.5.3 `Accept-Encoding` with q-values), which responses are worth
//! compressing, and the header edits a compressed response needs. Pure
//! functions over `http` types; the encoding itself is in `compress`.

use http::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_TYPE, ETAG, VARY,
};
use http::{Method, StatusCode};

use crate::config::{Coding, Compression};

/// The coding to use: among the client's acceptable codings (q > 0), the
/// one with the highest q; ties go to the first in `ours`. `identity` and
/// unknown codings are never chosen; `*` stands for every coding the client
/// did not name.
pub fn negotiate<'a>(accept: impl Iterator<Item = &'a HeaderValue>, ours: &[Coding]) -> Option<Coding> {
    // q in thousandths, per coding in `ours` order: None = not named.
    let mut named: [Option<u16>; 3] = [None; 3];
    let mut star: Option<u16> = None;
    let mut any = false;
    for value in accept {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            let mut q = 1000u16;
            for param in parts {
                if let Some((k, v)) = param.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        // A malformed weight: the coding is ignored rather than guessed at.
                        q = parse_q(v.trim()).unwrap_or_default();
                    }
                }
            }
            any = true;
            if token == "*" {
                star = Some(star.map_or(q, |s| s.max(q)));
                continue;
            }
            if let Some(i) = Coding::ALL.iter().position(|c| c.token().eq_ignore_ascii_case(token)) {
                named[i] = Some(named[i].map_or(q, |s| s.max(q)));
            } else if token.eq_ignore_ascii_case("x-gzip") {
                named[2] = Some(named[2].map_or(q, |s| s.max(q)));
            }
        }
    }
    if !any {
        return None;
    }
    let mut best: Option<(Coding, u16)> = None;
    for &coding in ours {
        let i = Coding::ALL.iter().position(|c| *c == coding).unwrap_or(0);
        let q = named[i].or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((coding, q));
        }
    }
    best.map(|(c, _)| c)
}

/// A qvalue (`0`, `0.5`, `1.000`) in thousandths; `None` if malformed.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Whether a response of this kind may be compressed at all (its content
/// type is listed, nothing forbids it), before looking at the client: such
/// a response varies by `Accept-Encoding` whatever this client accepts.
pub fn eligible(method: &Method, status: StatusCode, headers: &HeaderMap, settings: &Compression) -> bool {
    if !settings.enabled
        || *method == Method::HEAD
        || status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
        )
        || status == StatusCode::SWITCHING_PROTOCOLS
    {
        return false;
    }
    // Cheapest refusals first: a small body (most API answers) is decided
    // by one lookup.
    if let Some(length) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if length < settings.min_bytes {
            return false;
        }
    }
    if headers.contains_key(CONTENT_ENCODING) {
        return false;
    }
    if headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
    {
        return false;
    }
    let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    type_listed(content_type, &settings.types)
}

/// Whether a `Content-Type` value matches one of `types` (`text/html`,
/// `text/*`, `+json`).
pub fn type_listed(content_type: &str, types: &[String]) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let Some((ty, sub)) = essence.split_once('/') else {
        return false;
    };
    types.iter().any(|t| {
        if let Some(suffix) = t.strip_prefix('+') {
            sub.rsplit_once('+').is_some_and(|(_, s)| s == suffix)
        } else if let Some(family) = t.strip_suffix("/*") {
            family == ty
        } else {
            *t == essence
        }
    })
}

/// Adds `Accept-Encoding` to `Vary` unless it is there (or `Vary: *`).
pub fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let present = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.eq_ignore_ascii_case("accept-encoding")
        });
    if !present {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// The header edits of a response about to be compressed with `coding`:
/// the coding named, the length gone (it is not known any more), ranges no
/// longer offered (they would be of the compressed bytes), a strong
/// validator made weak (the bytes differ, the meaning does not).
pub fn prepare_response(headers: &mut HeaderMap, coding: Coding) {
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
    headers.remove(CONTENT_LENGTH);
    headers.remove(ACCEPT_RANGES);
    headers.remove("content-md5");
    headers.remove("content-digest");
    headers.remove("repr-digest");
    if let Some(etag) = headers.get(ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                headers.insert(ETAG, v);
            }
        }
    }
}

/// The request's `Accept-Encoding`, kept for when the response is known:
/// one value as it is (a reference count, no copy), several joined.
pub fn accept_encoding(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(ACCEPT_ENCODING).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(first.clone());
    };
    let mut joined = first.as_bytes().to_vec();
    for v in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(accept: &str) -> Option<&'static str> {
        let v = HeaderValue::from_str(accept).unwrap();
        negotiate(std::iter::once(&v), &Coding::ALL).map(Coding::token)
    }

    #[test]
    fn q_values_and_server_preference() {
        assert_eq!(pick("gzip, deflate, br, zstd"), Some("zstd"));
        assert_eq!(pick("gzip, deflate, br"), Some("br"));
        assert_eq!(pick("gzip;q=1, br;q=0"), Some("gzip"));
        assert_eq!(pick("zstd;q=0, br, gzip"), Some("br"));
        assert_eq!(pick("gzip;q=0.5, br;q=0.4"), Some("gzip"));
        assert_eq!(pick("*"), Some("zstd"));
        assert_eq!(pick("*;q=0.1, zstd;q=0"), Some("br"));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("gzip;q=0"), None);
        assert_eq!(pick(""), None);
        assert_eq!(pick("x-gzip"), Some("gzip"));
        assert_eq!(pick("GZIP;Q=1.000"), Some("gzip"));
        assert_eq!(pick("gzip;q=2"), None);
        assert_eq!(pick("gzip;q=0.0001"), None);
        assert_eq!(pick(",,;q=,gzip"), Some("gzip"));
        let mut two = HeaderMap::new();
        two.append(ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0.1"));
        two.append(ACCEPT_ENCODING, HeaderValue::from_static("br"));
        let joined = accept_encoding(&two).unwrap();
        assert_eq!(joined, "gzip;q=0.1, br");
        assert_eq!(negotiate(std::iter::once(&joined), &Coding::ALL), Some(Coding::Brotli));
        assert_eq!(accept_encoding(&HeaderMap::new()), None);
        let only_gzip = [Coding::Gzip];
        let v = HeaderValue::from_static("zstd, br, gzip");
        assert_eq!(negotiate(std::iter::once(&v), &only_gzip), Some(Coding::Gzip));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn what_is_never_compressed() {
        let s = Compression::default();
        let html = headers(&[("content-type", "text/html; charset=utf-8")]);
        assert!(eligible(&Method::GET, StatusCode::OK, &html, &s));
        assert!(!eligible(&Method::HEAD, StatusCode::OK, &html, &s));
        for status in [204, 206, 304, 101] {
            assert!(!eligible(
                &Method::GET,
                StatusCode::from_u16(status).unwrap(),
                &html,
                &s
            ));
        }
        for extra in [
            ("content-encoding", "gzip"),
            ("cache-control", "public, No-Transform"),
            ("content-length", "1023"),
        ] {
            let h = headers(&[("content-type", "text/html"), extra]);
            assert!(!eligible(&Method::GET, StatusCode::OK, &h, &s), "{extra:?}");
        }
        let big = headers(&[("content-type", "text/html"), ("content-length", "1024")]);
        assert!(eligible(&Method::GET, StatusCode::OK, &big, &s));
        for (ct, want) in [
            ("image/png", false),
            ("application/ld+json", true),
            ("application/atom+xml", true),
            ("image/svg+xml", true),
            ("TEXT/CSS", true),
            ("text/event-stream", false),
            ("application/octet-stream", false),
            ("nonsense", false),
        ] {
            let h = headers(&[("content-type", ct)]);
            assert_eq!(eligible(&Method::GET, StatusCode::OK, &h, &s), want, "{ct}");
        }
        let off = Compression {
            enabled: false,
            ..Compression::default()
        };
        assert!(!eligible(&Method::GET, StatusCode::OK, &html, &off));
        assert!(type_listed("text/plain", &["text/*".into()]));
    }

    #[test]
    fn compressed_response_headers() {
        let mut h = headers(&[
            ("content-length", "5000"),
            ("accept-ranges", "bytes"),
            ("etag", "\"abc\""),
            ("vary", "Cookie"),
        ]);
        prepare_response(&mut h, Coding::Brotli);
        vary_on_accept_encoding(&mut h);
        vary_on_accept_encoding(&mut h);
        assert_eq!(h["content-encoding"], "br");
        assert!(!h.contains_key("content-length") && !h.contains_key("accept-ranges"));
        assert_eq!(h["etag"], "W/\"abc\"");
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["Cookie", "Accept-Encoding"]);
        let mut weak = headers(&[("etag", "W/\"x\"")]);
        prepare_response(&mut weak, Coding::Gzip);
        assert_eq!(weak["etag"], "W/\"x\"");
    }
}
