//! Mounting under a prefix (`tlsfront::policy::prefix`).
//!
//! Input: `PREFIX\nPATH\nHEADER BLOCK`: the mount prefix (normalised the way
//! the config does, skipped when the config would reject it), a request
//! path, and response headers (`Name: value` per line).
//!
//! Properties:
//!  1. never panics;
//!  2. `normalise_path` is idempotent, starts with `/`, has no `.`/`..`
//!     segment, no `//`, and never decodes `%2F` (an encoded slash never
//!     splits a segment: no slash appears that the input did not have);
//!  3. a normalised path inside the prefix, stripped, starts with `/` and
//!     with the prefix put back in front is the same path (never a path
//!     outside the prefix);
//!  4. `prefix_response` is idempotent: a second pass changes nothing;
//!  5. every `Set-Cookie` it changed keeps its name=value bytes and every
//!     other attribute, and its Path afterwards is inside the prefix;
//!  6. a `Location` it changed keeps its origin, query and fragment, and
//!     its path is the original's with the prefix in front (`/` for an
//!     empty one), inside the prefix on whole segments;
//!  7. headers other than Location, Content-Location, Refresh, Set-Cookie
//!     are untouched.
#![no_main]

mod common;

use http::header::{HeaderMap, LOCATION, SET_COOKIE};
use libfuzzer_sys::fuzz_target;
use tlsfront::config::PathPrefix;
use tlsfront::policy::prefix::{normalise_path, prefix_response, strip, within};

/// A URL as (scheme and authority, path, query and fragment): `""` for the
/// origin of a path-absolute reference; the authority ends at `/`, `?`, `#`.
fn split_url(url: &str) -> (&str, &str, &str) {
    let lower = url.to_ascii_lowercase();
    let origin_end = ["https://", "http://", "//"]
        .into_iter()
        .find(|s| lower.starts_with(s))
        .map_or(0, |s| {
            s.len() + url[s.len()..].find(['/', '?', '#']).unwrap_or(url.len() - s.len())
        });
    let rest = &url[origin_end..];
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    (&url[..origin_end], &rest[..path_end], &rest[path_end..])
}

/// The value of the last `Path` attribute, spaces around it and around `=` dropped.
fn cookie_path(value: &[u8]) -> Option<Vec<u8>> {
    let trim = |b: &[u8]| -> Vec<u8> {
        let start = b.iter().position(|c| *c != b' ' && *c != b'\t').unwrap_or(b.len());
        let end = b
            .iter()
            .rposition(|c| *c != b' ' && *c != b'\t')
            .map_or(start, |e| e + 1);
        b[start..end].to_vec()
    };
    let mut path = None;
    for attr in value.split(|&b| b == b';').skip(1) {
        let Some(eq) = attr.iter().position(|&b| b == b'=') else {
            continue;
        };
        if trim(&attr[..eq]).eq_ignore_ascii_case(b"path") {
            path = Some(trim(&attr[eq + 1..]));
        }
    }
    path
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(3, |&b| b == b'\n');
    let (Some(prefix), Some(path), block) = (lines.next(), lines.next(), lines.next().unwrap_or(&[])) else {
        return;
    };
    let (Ok(prefix), Ok(path)) = (std::str::from_utf8(prefix), std::str::from_utf8(path)) else {
        return;
    };
    // Only what the config accepts as a mount prefix, as it stores it
    // (other than "/", which mounts nothing).
    let Ok(prefix) = PathPrefix::parse(prefix) else {
        return;
    };
    let prefix = prefix.as_str();
    if prefix == "/" {
        return;
    }

    // 2. normalisation
    let normal = normalise_path(path);
    assert_eq!(normalise_path(&normal), normal, "not idempotent: {path:?}");
    assert!(normal.starts_with('/'), "{normal:?}");
    assert!(!normal.contains("//"), "{normal:?}");
    for seg in normal.split('/') {
        assert!(
            seg != "." && seg != "..",
            "dot segment left in {normal:?} from {path:?}"
        );
    }
    // %2F is never decoded: normalising never makes a slash the input did not
    // have (one more at most: the root of an empty or relative path).
    assert!(
        normal.matches('/').count() <= path.matches('/').count() + 1,
        "a slash appeared: {path:?} -> {normal:?}"
    );
    assert!(!normal.contains("%2f"), "%2f not normalised to %2F: {normal:?}");

    // 3. strip and put back
    if within(&normal, prefix) {
        let rest = strip(&normal, prefix);
        assert!(rest.starts_with('/'), "{rest:?}");
        let back = if rest == "/" {
            prefix.to_string()
        } else {
            format!("{prefix}{rest}")
        };
        let same = back == normal || format!("{back}/") == normal || (rest == "/" && normal == format!("{prefix}/"));
        assert!(same, "strip/put back: {normal:?} -> {rest:?} -> {back:?}");
    }

    // 4-7. response headers
    let before: HeaderMap = common::parse_header_block(block);
    let mut after = before.clone();
    prefix_response(&mut after, prefix, "app.example");
    let mut again = after.clone();
    assert_eq!(prefix_response(&mut again, prefix, "app.example"), 0, "not idempotent");
    assert_eq!(again, after);
    for name in before.keys() {
        if !matches!(
            name.as_str(),
            "location" | "content-location" | "refresh" | "set-cookie"
        ) {
            assert_eq!(
                common::values(&before, name.as_str()),
                common::values(&after, name.as_str()),
                "{name} changed"
            );
        }
    }
    let (b, a): (Vec<_>, Vec<_>) = (
        before.get_all(SET_COOKIE).iter().collect(),
        after.get_all(SET_COOKIE).iter().collect(),
    );
    assert_eq!(b.len(), a.len(), "Set-Cookie count changed");
    for (b, a) in b.iter().zip(&a) {
        if b == a {
            continue;
        }
        let name_value = |v: &[u8]| v.split(|&c| c == b';').next().map(<[u8]>::to_vec);
        assert_eq!(
            name_value(b.as_bytes()),
            name_value(a.as_bytes()),
            "cookie value changed: {b:?} -> {a:?}"
        );
        let p = cookie_path(a.as_bytes()).unwrap_or_else(|| panic!("no Path after rewrite: {a:?}"));
        let p = String::from_utf8(p).unwrap_or_default();
        assert!(within(&p, prefix), "Path {p:?} outside {prefix:?}: {b:?} -> {a:?}");
        let others = |v: &[u8]| -> Vec<Vec<u8>> {
            v.split(|&c| c == b';')
                .skip(1)
                .map(|x| {
                    x.iter()
                        .copied()
                        .filter(|c| *c != b' ' && *c != b'\t')
                        .collect::<Vec<u8>>()
                })
                .filter(|x: &Vec<u8>| !(x.len() >= 4 && x[..4].eq_ignore_ascii_case(b"path")))
                .collect()
        };
        assert_eq!(
            others(b.as_bytes()),
            others(a.as_bytes()),
            "attributes changed: {b:?} -> {a:?}"
        );
    }
    if let (Some(b), Some(a)) = (before.get(LOCATION), after.get(LOCATION)) {
        if b != a {
            let (b, a) = (
                String::from_utf8_lossy(b.as_bytes()),
                String::from_utf8_lossy(a.as_bytes()),
            );
            let (b_origin, b_path, b_rest) = split_url(&b);
            let (a_origin, a_path, a_rest) = split_url(&a);
            assert_eq!(a_origin, b_origin, "Location's origin changed: {b:?} -> {a:?}");
            assert_eq!(a_rest, b_rest, "Location's query or fragment changed: {b:?} -> {a:?}");
            assert!(
                within(a_path, prefix),
                "Location's path outside {prefix:?}: {b:?} -> {a:?}"
            );
            let b_path = if b_path.is_empty() { "/" } else { b_path };
            assert_eq!(
                a_path,
                format!("{prefix}{b_path}"),
                "not only the prefix inserted: {b:?} -> {a:?}"
            );
        }
    }
});
