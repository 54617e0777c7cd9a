//! Hop-by-hop header removal (`tlsfront::policy::hop::strip`).
//!
//! Input: a header block, one `Name: value` per line (whatever `http`
//! accepts: any token name, any value bytes).
//!
//! Properties:
//!  1. never panics;
//!  2. afterwards none of connection, keep-alive, proxy-connection, te,
//!     trailer, transfer-encoding, upgrade, proxy-authorization,
//!     proxy-authenticate remain;
//!  3. every header named in a `Connection` value (comma-separated tokens,
//!     whitespace around them ignored) is gone too, except Host and
//!     Content-Length, which a client cannot make us drop;
//!  4. every other header is kept, values and order unchanged (nothing is
//!     removed that was not asked for);
//!  5. idempotent: stripping again changes nothing.
#![no_main]

mod common;

use http::header::{HeaderMap, HeaderName, CONTENT_LENGTH, HOST};
use libfuzzer_sys::fuzz_target;
use tlsfront::policy::hop::strip;

const FIXED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Header names listed in `Connection`, read from the raw bytes.
fn named_by_connection(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all("connection")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(common::trim_ows(t)).ok())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let before = common::parse_header_block(data);
    let mut after = before.clone();
    strip(&mut after);
    let ctx = || {
        format!(
            "\n--- before ---\n{}--- after ---\n{}",
            common::show(&before),
            common::show(&after)
        )
    };

    for name in FIXED {
        assert!(!after.contains_key(name), "hop-by-hop {name} kept: {}", ctx());
    }
    let named = named_by_connection(&before);
    for name in &named {
        if name != HOST && name != CONTENT_LENGTH {
            assert!(
                !after.contains_key(name),
                "{name} is named in Connection but kept: {}",
                ctx()
            );
        }
    }
    for name in before.keys() {
        let asked = FIXED.contains(&name.as_str()) || (named.contains(name) && name != HOST && name != CONTENT_LENGTH);
        if !asked {
            assert_eq!(
                common::values(&before, name.as_str()),
                common::values(&after, name.as_str()),
                "{name} changed though nothing asked for it: {}",
                ctx()
            );
        }
    }
    assert!(
        after.keys().all(|k| before.contains_key(k)),
        "a header appeared: {}",
        ctx()
    );

    let mut again = after.clone();
    strip(&mut again);
    assert!(again == after, "strip is not idempotent: {}", ctx());
});
