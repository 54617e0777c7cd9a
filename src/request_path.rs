//! Request paths as routes see them: normalised (so that
//! `/admin/../secret` is routed, and forwarded, as `/secret`) and tested
//! for being under a prefix on whole segments. Pure functions at the
//! bottom of the house: the configuration normalises route prefixes with
//! them, the request path and the prefix policy match with them.

use std::borrow::Cow;

/// The normalised form of a request path (no query): percent-encoded
/// unreserved characters decoded (`%61` → `a`, `%2E` → `.`), other escapes
/// kept with upper-case hex (`%2f` → `%2F`: an encoded slash never splits a
/// segment), a `%` that starts no escape written `%25`, repeated slashes merged, `.` and `..` segments resolved (never
/// above the root). A trailing slash is kept. An already normal path (the
/// usual case) is returned as it is, without allocating.
pub fn normalise_path(path: &str) -> Cow<'_, str> {
    if is_normal(path) {
        return Cow::Borrowed(path);
    }
    Cow::Owned(normalise_path_slow(path))
}

/// No `%`, no empty, `.` or `..` segment, starts with `/`, ASCII.
fn is_normal(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') || b.contains(&b'%') || !path.is_ascii() {
        return false;
    }
    // Every segment but a final empty one (the trailing slash) is a name.
    let mut segments = path[1..].split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last && path.len() > 1) || seg == "." || seg == ".." {
            return false;
        }
    }
    true
}

fn normalise_path_slow(path: &str) -> String {
    let decoded = decode_unreserved(path);
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    out
}

fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let c = h * 16 + l;
                if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                    out.push(c as char);
                } else {
                    out.push('%');
                    out.push(b[i + 1].to_ascii_uppercase() as char);
                    out.push(b[i + 2].to_ascii_uppercase() as char);
                }
                i += 3;
                continue;
            }
        }
        if b[i] == b'%' {
            // A `%` that starts no escape is escaped itself: decoding must
            // never assemble a new escape (`%%66` → `%f`, then `%F6`), so
            // normalising twice changes nothing (found by the fuzz target).
            out.push_str("%25");
            i += 1;
            continue;
        }
        // Paths in a parsed URI are ASCII; anything else is kept as it is.
        let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + ch_len]);
        i += ch_len;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` is `prefix` or below it, on whole segments (`/admin`
/// covers `/admin` and `/admin/x`, never `/administrator`). `/` covers all.
pub fn within(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        for (raw, normal) in [
            ("/", "/"),
            ("", "/"),
            ("/admin", "/admin"),
            ("/admin/", "/admin/"),
            ("/admin/../secret", "/secret"),
            ("/admin/./x", "/admin/x"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("//admin//x", "/admin/x"),
            ("/%61dmin", "/admin"),
            ("/admin/%2e%2e/secret", "/secret"),
            ("/admin%2Fx", "/admin%2Fx"),
            ("/admin%2fx", "/admin%2Fx"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/x%zz", "/x%25zz"),
            ("/x%", "/x%25"),
            ("/x%4", "/x%254"),
            ("/a%%66", "/a%25f"),
        ] {
            assert_eq!(normalise_path(raw), normal, "{raw}");
            assert_eq!(normalise_path(normal), normal, "idempotent for {raw}");
            assert_eq!(normalise_path_slow(raw), normal, "slow path for {raw}");
            assert_eq!(
                matches!(normalise_path(normal), Cow::Borrowed(_)),
                normal.is_ascii() && !normal.contains('%'),
                "fast path for {normal}"
            );
        }
    }

    #[test]
    fn segments() {
        assert!(within("/admin", "/admin"));
        assert!(within("/admin/", "/admin"));
        assert!(within("/admin/x", "/admin"));
        assert!(!within("/administrator", "/admin"));
        assert!(!within("/admin%2Fx", "/admin"));
        assert!(!within("/", "/admin"));
        assert!(within("/anything", "/"));
    }
}
