//! Values written in the configuration, parsed once: listen addresses,
//! durations, CIDR lists, header names and values, paths, host names, and
//! TOML strings written back. The tables' files take their deserializers
//! from here; nothing here knows a table.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::Deserialize;

pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_socket_addr(&s).map_err(de::Error::custom)
}

pub(super) fn optional_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    parse_socket_addr(&s).map(Some).map_err(de::Error::custom)
}

/// Parses a listen address such as `0.0.0.0:8443`, `[::]:8443` or `localhost:8443`.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    if let Some(port) = s.strip_prefix(':') {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
        }
    }
    Err(format!(
        "{s:?} is not a listen address; expected IP:PORT like \"0.0.0.0:8443\" or \"[::]:8443\""
    ))
}

pub(super) fn cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    items
        .iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    de::Error::custom(format!(
                        "{s:?} is not a CIDR or IP address; expected like \"10.0.0.0/8\", \"192.168.1.10\" or \"fd00::/8\""
                    ))
                })
        })
        .collect()
}

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(de::Error::custom)
}

/// Parses a human duration such as `5s`, `250ms` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); expected like \"5s\", \"250ms\" or \"2m\""))
}

pub(super) fn optional_header_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HeaderValue>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(s.trim())
        .map(Some)
        .map_err(|_| de::Error::custom(format!("{s:?} is not a valid header value (visible ASCII expected)")))
}

pub(super) fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.trim().as_bytes())
        .map_err(|_| format!("{s:?} is not a header name; expected like \"X-Frame-Options\""))
}

pub(super) fn header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HeaderName>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| header_name(n).map_err(de::Error::custom))
        .collect()
}

pub(super) fn header_table<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(HeaderName, HeaderValue)>, D::Error> {
    let table = std::collections::BTreeMap::<String, String>::deserialize(d)?;
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(table.len());
    for (name, value) in &table {
        let name = header_name(name).map_err(de::Error::custom)?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| de::Error::custom(format!("{value:?} is not a valid value for header {name}")))?;
        // Header names are case-insensitive: "X-A" and "x-a" are one header.
        if headers.iter().any(|(n, _)| *n == name) {
            return Err(de::Error::custom(format!(
                "header {name} is set twice (names are case-insensitive)"
            )));
        }
        headers.push((name, value));
    }
    headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    Ok(headers)
}

pub fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.trim().is_empty()).then(|| PathBuf::from(s)))
}

/// A TOML basic string: quotes, backslashes and control characters escaped,
/// everything else as it is (Rust's `{:?}` escapes differently).
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Lower case, without a trailing dot: how names are compared.
pub fn normalise_name(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Parses a name a certificate is chosen for: a DNS name, or `*.` and a DNS
/// name for one label. Returns it normalised (lower case, no trailing dot).
pub fn parse_name(raw: &str) -> Result<String, String> {
    let name = normalise_name(raw);
    if name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
    {
        return Err(format!(
            "{raw:?} is an IP address; SNI carries host names only (clients that connect by IP get the first, default certificate)"
        ));
    }
    let base = name.strip_prefix("*.").unwrap_or(&name);
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if base.contains('*') {
        return Err(format!(
            "{raw:?}: a wildcard must be the whole first label, like \"*.example.com\""
        ));
    }
    if name.len() > 253 || !base.split('.').all(valid_label) {
        return Err(format!(
            "{raw:?} is not a host name; expected like \"example.com\" or \"*.example.com\""
        ));
    }
    Ok(name)
}
