//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and
//! must not be forwarded, in either direction.

use http::header::{
    HeaderMap, HeaderName, CONNECTION, CONTENT_LENGTH, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a header name is hop-by-hop by definition (without `Connection`'s help).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

/// Removes `Connection`, every header it names, and the fixed hop-by-hop set.
pub fn strip(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of nine lookups.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        // Bytes, not str: one non-ASCII token must not hide the valid ones.
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        // A client cannot make us drop what frames or routes the message.
        .filter(|name| name != HOST && name != CONTENT_LENGTH)
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
        &UPGRADE,
        &PROXY_AUTHORIZATION,
        &PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
}

/// Whether the request's `TE` lists `trailers`: the client accepts trailer
/// fields (gRPC clients always send `te: trailers`). Read before [`strip`]
/// removes `TE`, so an HTTP/2 upstream can be sent `te: trailers` again.
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(TE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|coding| {
            let name = coding.split(|&b| b == b';').next().unwrap_or_default();
            name.trim_ascii().eq_ignore_ascii_case(b"trailers")
        })
}

/// The first transfer coding of a request other than `chunked`, if any.
/// hyper frames a request by its last coding only, so `identity, chunked`
/// or `gzip, chunked` would be read as plain chunked and forwarded without
/// the coding: the app would get bytes it cannot know are still encoded.
/// Such a request is refused with 501 (RFC 9112 §6.1), as nginx does.
pub fn unsupported_transfer_coding(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|coding| coding.trim_ascii())
        .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"chunked"))
        .map(|coding| String::from_utf8_lossy(coding).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_chunked_is_a_supported_transfer_coding() {
        let coding = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(TRANSFER_ENCODING, HeaderValue::from_static(v));
            }
            unsupported_transfer_coding(&h)
        };
        assert_eq!(coding(&[]), None);
        assert_eq!(coding(&["chunked"]), None);
        assert_eq!(coding(&["Chunked "]), None);
        assert_eq!(coding(&["identity, chunked"]).as_deref(), Some("identity"));
        assert_eq!(coding(&["gzip", "chunked"]).as_deref(), Some("gzip"));
        assert_eq!(coding(&[" , chunked"]), None);
    }

    #[test]
    fn removes_fixed_and_named() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "keep-alive, X-Secret , Upgrade"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
            ("host", "a"),
            ("content-length", "0"),
        ] {
            h.append(n, HeaderValue::from_static(v));
        }
        let mut with_named_host = h.clone();
        with_named_host.append(CONNECTION, HeaderValue::from_static("host, content-length"));
        strip(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["content-length", "host", "x-kept"]);
        strip(&mut with_named_host);
        assert!(with_named_host.contains_key(HOST) && with_named_host.contains_key(CONTENT_LENGTH));

        // Found by fuzzing: a non-ASCII token in Connection hid the others.
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_bytes(b"x-secret, \xc3\xa9").unwrap());
        h.insert("x-secret", HeaderValue::from_static("1"));
        strip(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn trailers_token_in_te() {
        for (te, accepts) in [
            ("trailers", true),
            ("Trailers", true),
            ("gzip, trailers", true),
            (" trailers ;q=1", true),
            ("gzip", false),
            ("trailersx", false),
            ("x-trailers", false),
            ("", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(TE, HeaderValue::from_static(te));
            assert_eq!(accepts_trailers(&h), accepts, "{te:?}");
        }
        assert!(!accepts_trailers(&HeaderMap::new()));
    }
}
