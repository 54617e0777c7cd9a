//! Helpers shared by the fuzz targets (each target includes this module).
#![allow(dead_code)]

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Whether a known, reported finding is acknowledged for this run:
/// `TLSFRONT_FUZZ_KNOWN=key1,key2` (keys in fuzz/README.md, "Findings"). Each
/// key relaxes exactly the one check that finding trips, so the other
/// properties can still be fuzzed while the fix is pending. Unset = strict.
pub fn known(key: &str) -> bool {
    static KNOWN: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    KNOWN
        .get_or_init(|| {
            std::env::var("TLSFRONT_FUZZ_KNOWN")
                .unwrap_or_default()
                .split(',')
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect()
        })
        .iter()
        .any(|k| k == key || k == "all")
}

/// Splits `data` at the first `\n\n`: a text part that seeds can write by
/// hand, and a tail of control bytes (decoded with `arbitrary`). With no blank
/// line the whole input is text and the controls are all defaults.
pub fn split_blank_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[]),
    }
}

/// Parses a header block, one `Name: value` per line (`\r\n` or `\n`).
/// Whatever `http` would reject (bad name, bad value bytes) is skipped: a
/// real server never hands such a header to the policy functions.
pub fn parse_header_block(text: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = trim_ows(value);
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

/// Trims HTTP optional whitespace (space, tab) at both ends.
pub fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// All values of `name`, in order.
pub fn values(map: &HeaderMap, name: &str) -> Vec<HeaderValue> {
    map.get_all(name).iter().cloned().collect()
}

/// Shows a header map one `name: value` per line, for assertion messages.
pub fn show(map: &HeaderMap) -> String {
    map.iter()
        .map(|(n, v)| format!("{n}: {:?}\n", String::from_utf8_lossy(v.as_bytes())))
        .collect()
}
