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
//!  6. a `Location` it changed ends with the original's path tail (only the
//!     prefix was inserted) and its path is inside the prefix;
//!  7. headers other than Location, Content-Location, Refresh, Set-Cookie
//!     are untouched.
#![no_main]

mod common;

use http::header::{HeaderMap, LOCATION, SET_COOKIE};
use libfuzzer_sys::fuzz_target;
use tlsfront::policy::prefix::{normalise_path, prefix_response, strip, within};

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
    // The config only accepts already-normal ASCII prefixes other than "/".
    let prefix = prefix.trim_end_matches('/');
    if !prefix.starts_with('/')
        || prefix
            .bytes()
            .any(|b| b <= b' ' || b >= 0x7f || b == b'?' || b == b'#' || b == b';' || b == b',' || b == b'"')
        || normalise_path(prefix) != prefix
    {
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
            let tail = b.find('/').map(|i| &b[i..]).unwrap_or("");
            let tail = if b.starts_with("//") || b.contains("://") {
                // absolute: the part after the authority
                let rest = b.split_once("//").map(|(_, r)| r).unwrap_or("");
                rest.find(['/', '?', '#']).map(|i| &rest[i..]).unwrap_or("")
            } else {
                tail
            };
            assert!(
                a.ends_with(tail) || tail.starts_with('?') || tail.is_empty(),
                "Location lost its tail: {b:?} -> {a:?}"
            );
            assert!(a.contains(prefix), "Location without the prefix: {b:?} -> {a:?}");
        }
    }
});
