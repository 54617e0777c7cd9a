//! Set-Cookie hardening (`tlsfront::policy::cookies`).
//!
//! Input: the raw bytes of one `Set-Cookie` value (any bytes, not only what
//! `http` accepts). Each input is hardened under every policy combination
//! (Secure on/off × HttpOnly on/off × SameSite keep/Lax/Strict/None ×
//! HttpOnly exception list empty / naming this cookie).
//!
//! Properties, whenever `harden` returns `Some(out)`:
//!  1. never panics (libFuzzer reports panics as crashes);
//!  2. `out` starts with the input minus trailing spaces/tabs (no original
//!     byte changed or dropped) and is a valid `HeaderValue` when the input was;
//!  3. idempotent: `harden(out)` is `None`;
//!  4. `Secure`, `HttpOnly`, `SameSite` each appear (as attributes, any case)
//!     at most max(1, count in the input) times;
//!  5. `ParsedCookie::parse` gives the same name and value for input and output;
//!  6. what `Hardening` reports was added really was (one more attribute), and
//!     what was not added is not there more often than before;
//!
//! And for every parseable input (hardened or not): the result satisfies the
//! policy (Secure / HttpOnly / SameSite present where the policy asks).
//! Finally `harden_response` over the input's lines (as separate Set-Cookie
//! headers) keeps their number and order and agrees with `harden`.
#![no_main]

mod common;

use http::header::{HeaderMap, HeaderValue, SET_COOKIE};
use libfuzzer_sys::fuzz_target;
use tlsfront::policy::cookies::{harden, harden_response, CookiePolicy, ParsedCookie};

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(0, |e| e + 1);
    &s[..end]
}

/// (secure, httponly, samesite) attribute counts, names matched case-insensitively.
fn counts(c: &ParsedCookie<'_>) -> [usize; 3] {
    let mut n = [0; 3];
    for (key, _) in c.attributes() {
        for (i, flag) in ["secure", "httponly", "samesite"].iter().enumerate() {
            if key.eq_ignore_ascii_case(flag.as_bytes()) {
                n[i] += 1;
            }
        }
    }
    n
}

fn policies(name: Option<&[u8]>) -> Vec<CookiePolicy> {
    let mut all = Vec::new();
    let excepts: Vec<Vec<Vec<u8>>> = match name {
        Some(n) => vec![vec![], vec![b"csrftoken".to_vec(), n.to_vec()]],
        None => vec![vec![]],
    };
    for secure in [true, false] {
        for http_only in [true, false] {
            for same_site in [None, Some("Lax"), Some("Strict"), Some("None")] {
                for except in &excepts {
                    all.push(CookiePolicy {
                        secure,
                        http_only,
                        same_site,
                        http_only_except: except.clone(),
                    });
                }
            }
        }
    }
    all
}

fn check(input: &[u8], policy: &CookiePolicy) {
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let parsed_in = ParsedCookie::parse(input);
    let result = harden(input, policy);
    let Some((out, added)) = &result else {
        if let Some(c) = parsed_in {
            satisfies_policy(&c, input, policy);
        }
        return;
    };
    let out = out.as_slice();
    let ctx = || format!("input {:?} → {:?} with {policy:?}", show(input), show(out));

    // 2. every original byte kept, only appended to.
    assert!(
        out.starts_with(trim_end(input)),
        "original bytes not a prefix: {}",
        ctx()
    );
    assert!(out.len() > trim_end(input).len(), "Some but nothing added: {}", ctx());
    if HeaderValue::from_bytes(input).is_ok() {
        assert!(
            HeaderValue::from_bytes(out).is_ok(),
            "output is not a valid header value: {}",
            ctx()
        );
    }
    assert!(added.any(), "Some without anything added: {}", ctx());

    // 3. idempotent.
    if let Some((again, _)) = harden(out, policy) {
        panic!("not idempotent: second pass gives {:?}: {}", show(&again), ctx());
    }

    // 5. name and value unchanged.
    let cin = parsed_in.unwrap_or_else(|| panic!("hardened an unparseable value: {}", ctx()));
    let cout = ParsedCookie::parse(out).unwrap_or_else(|| panic!("output does not parse: {}", ctx()));
    assert_eq!(cin.name, cout.name, "name changed: {}", ctx());
    assert_eq!(cin.value, cout.value, "value changed: {}", ctx());

    // 4. + 6. no duplicated flags; the report matches the bytes.
    let (n_in, n_out) = (counts(&cin), counts(&cout));
    for (i, flag) in ["Secure", "HttpOnly", "SameSite"].iter().enumerate() {
        assert!(
            n_out[i] <= n_in[i].max(1),
            "{flag} appears {} times (input had {}): {}",
            n_out[i],
            n_in[i],
            ctx()
        );
    }
    for (i, was_added) in [added.added_secure, added.added_http_only, added.added_same_site]
        .into_iter()
        .enumerate()
    {
        let expected = n_in[i] + usize::from(was_added);
        assert_eq!(n_out[i], expected, "attribute {i} count vs report {added:?}: {}", ctx());
    }
    if let (true, Some(v)) = (added.added_same_site, policy.same_site) {
        assert_eq!(
            cout.attribute("samesite"),
            Some(Some(v.as_bytes())),
            "added SameSite is not the policy's: {}",
            ctx()
        );
    }
    satisfies_policy(&cout, out, policy);
}

/// The cookie, as it leaves tlsfront, has what the policy asks for.
fn satisfies_policy(c: &ParsedCookie<'_>, bytes: &[u8], policy: &CookiePolicy) {
    let ctx = || format!("{:?} with {policy:?}", String::from_utf8_lossy(bytes));
    let has = |flag: &str| c.attributes().any(|(k, _)| k.eq_ignore_ascii_case(flag.as_bytes()));
    let prefixed = [&b"__secure-"[..], b"__host-"]
        .iter()
        .any(|p| c.name.len() >= p.len() && c.name[..p.len()].eq_ignore_ascii_case(p));
    let same_site_none = c
        .attribute("samesite")
        .is_some_and(|v| common::trim_ows(v.unwrap_or(b"")).eq_ignore_ascii_case(b"none"));
    if policy.secure || prefixed || same_site_none {
        assert!(has("secure"), "Secure missing after hardening: {}", ctx());
    }
    if policy.http_only && !policy.http_only_except.iter().any(|n| n.as_slice() == c.name) {
        assert!(has("httponly"), "HttpOnly missing after hardening: {}", ctx());
    }
    if policy.same_site.is_some() {
        assert!(has("samesite"), "SameSite missing after hardening: {}", ctx());
    }
}

fn check_response(data: &[u8], policy: &CookiePolicy) {
    let lines: Vec<HeaderValue> = data
        .split(|&b| b == b'\n')
        .filter_map(|l| HeaderValue::from_bytes(l).ok())
        .collect();
    if lines.is_empty() {
        return;
    }
    let mut map = HeaderMap::new();
    for v in &lines {
        map.append(SET_COOKIE, v.clone());
    }
    let added = harden_response(&mut map, policy);
    let after: Vec<&HeaderValue> = map.get_all(SET_COOKIE).iter().collect();
    assert_eq!(
        after.len(),
        lines.len(),
        "harden_response changed the number of Set-Cookie headers"
    );
    let mut any = false;
    for (before, after) in lines.iter().zip(after) {
        let expected = match harden(before.as_bytes(), policy) {
            Some((out, h)) => {
                any |= h.any();
                out
            }
            None => before.as_bytes().to_vec(),
        };
        assert_eq!(after.as_bytes(), &expected[..], "harden_response disagrees with harden");
    }
    assert_eq!(added.any(), any, "harden_response's report disagrees with harden");
}

fuzz_target!(|data: &[u8]| {
    let name = ParsedCookie::parse(data).map(|c| c.name.to_vec());
    let policies = policies(name.as_deref());
    for policy in &policies {
        check(data, policy);
    }
    check_response(data, &policies[0]);
    check_response(data, &policies[policies.len() - 1]);
});
