//! The `Accept-Encoding` negotiation of `[compression]`
//! (`tlsfront::policy::encoding::negotiate`).
//!
//! Input: one header value per line (bytes `http` accepts).
//!
//! Properties:
//!  1. never panics;
//!  2. the coding chosen is one tlsfront offers;
//!  3. it is one the client accepts: named with q > 0, or covered by `*`
//!     with q > 0 and not named (a coding named with q=0 is never chosen);
//!  4. the header alone decides: the same values in the same order give
//!     the same answer.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use tlsfront::config::Coding;
use tlsfront::policy::encoding::negotiate;

/// q of `token` as the client wrote it: None = not named (max over repeats).
fn weight(values: &[HeaderValue], token: &str) -> Option<f64> {
    let mut best: Option<f64> = None;
    for v in values {
        let Ok(text) = v.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let named = name.eq_ignore_ascii_case(token) || (token == "gzip" && name.eq_ignore_ascii_case("x-gzip"));
            if !named {
                continue;
            }
            let mut q = 1.0;
            for p in parts {
                if let Some((k, v)) = p.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = v
                            .trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|q| (0.0..=1.0).contains(q))
                            .unwrap_or(0.0);
                    }
                }
            }
            best = Some(best.map_or(q, |b: f64| b.max(q)));
        }
    }
    best
}

fuzz_target!(|data: &[u8]| {
    let values: Vec<HeaderValue> = data
        .split(|&b| b == b'\n')
        .filter_map(|line| HeaderValue::from_bytes(line).ok())
        .collect();
    let ours = [Coding::Zstd, Coding::Brotli, Coding::Gzip];
    let chosen = negotiate(values.iter(), &ours);
    assert_eq!(chosen, negotiate(values.iter(), &ours));
    if let Some(c) = chosen {
        assert!(ours.contains(&c));
        match weight(&values, c.token()) {
            Some(q) => assert!(q > 0.0, "{c} chosen with q={q} from {values:?}"),
            None => assert!(
                weight(&values, "*").is_some_and(|q| q > 0.0),
                "{c} chosen though neither it nor * is accepted: {values:?}"
            ),
        }
    }
});
