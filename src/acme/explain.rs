//! ACME failures in plain words: what was tried, what the CA saw, and what
//! to fix, built from the problem document (RFC 8555 §6.7). Pure, so every
//! kind is unit-tested.

use std::time::SystemTime;

use instant_acme::Problem;

/// What was being done when the failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reaching the directory or creating / loading the account.
    Account,
    /// Creating the order.
    Order,
    /// The CA validating the challenge.
    Challenge(crate::config::ChallengeKind),
    /// Finalizing and downloading the certificate.
    Finalize,
}

impl Step {
    fn describe(self, name: &str) -> String {
        match self {
            Step::Account => "reaching the ACME directory and account".into(),
            Step::Order => format!("ordering a certificate for {name}"),
            Step::Challenge(kind) => format!("proving control of {name} with {kind}"),
            Step::Finalize => format!("finalizing the certificate for {name}"),
        }
    }
}

/// One line: `<name>: <step> failed: <what the CA said> (<type>); <fix>`.
pub fn problem_line(name: &str, step: Step, problem: &Problem) -> String {
    let kind = problem
        .r#type
        .as_deref()
        .unwrap_or("")
        .trim_start_matches("urn:ietf:params:acme:error:")
        .to_string();
    // The subproblem for this name says more than the umbrella detail.
    let detail = problem
        .subproblems
        .iter()
        .find_map(|s| s.detail.clone())
        .or_else(|| problem.detail.clone())
        .unwrap_or_else(|| "no detail given".into());
    let fix = fix_for(&kind, step, &detail);
    let kind_shown = if kind.is_empty() {
        "no problem type".to_string()
    } else {
        kind
    };
    format!(
        "{name}: {} failed: the CA says \"{}\" ({kind_shown}); {fix}",
        step.describe(name),
        detail.trim()
    )
}

/// A failure that is not a problem document (network, TLS, timeouts).
pub fn transport_line(name: &str, step: Step, error: &str, directory: &str) -> String {
    format!(
        "{name}: {} failed: {error}; check that {directory} is reachable from this host (DNS, firewall, proxy) and, for a private CA, that acme.directory_ca holds its root; tlsfront keeps retrying with back-off",
        step.describe(name)
    )
}

fn fix_for(kind: &str, step: Step, detail: &str) -> String {
    let port = match step {
        Step::Challenge(crate::config::ChallengeKind::Http01) => "80 (listen.http)",
        _ => "443 (listen.https)",
    };
    let lower = detail.to_ascii_lowercase();
    match kind {
        "unauthorized" | "accountDoesNotExist" if step == Step::Account => {
            "the account was refused: check acme.eab_kid / acme.eab_hmac_key, or delete the account file in acme.storage to register a new one".into()
        }
        "connection" if lower.contains("refused") => format!(
            "the CA could not connect to this server on port {port}: make sure the name's DNS points here and the port is open and forwarded to tlsfront"
        ),
        "connection" | "incorrectResponse" | "unauthorized" | "tls" => format!(
            "the CA reached an address for the name but not this tlsfront answering on port {port}: check the name's A/AAAA records point here and nothing in front (a CDN, another proxy) answers instead"
        ),
        "dns" => "the CA could not look the name up: create its A/AAAA record (or fix the DNS servers) and wait for it to propagate".into(),
        "caa" => "a CAA record on the domain does not allow this CA: add one for it (e.g. 0 issue \"letsencrypt.org\") or remove the restriction".into(),
        "rateLimited" => "the CA's rate limit was hit: tlsfront waits until it lifts (Retry-After); test against directory = \"letsencrypt-staging\" to avoid this".into(),
        "rejectedIdentifier" | "malformed" if lower.contains("identifier") || kind == "rejectedIdentifier" => {
            "the CA will not issue for this name (a reserved, internal or blocked name): use a public DNS name you own".into()
        }
        "externalAccountRequired" => "this CA needs external account binding: set acme.eab_kid and acme.eab_hmac_key from its dashboard".into(),
        "invalidContact" | "unsupportedContact" => "the CA refused the contact address: fix acme.email".into(),
        "badNonce" => "a replay nonce expired: a transient CA hiccup, tlsfront retries".into(),
        "serverInternal" => "the CA had an internal error: nothing to fix here, tlsfront retries with back-off".into(),
        "userActionRequired" => "the CA wants something done in its web interface (e.g. accept new terms): see the detail".into(),
        "badCSR" | "badPublicKey" | "badSignatureAlgorithm" => "the CA refused tlsfront's request: please report this as a tlsfront bug".into(),
        _ => "see the detail above; tlsfront retries with back-off".into(),
    }
}

/// When a problem's rate limit lifts, if the detail says so (Let's Encrypt
/// writes "retry after 2026-01-02 03:04:05 UTC"); the `Retry-After` header,
/// when sent, is preferred by the caller.
pub fn when_it_lifts(retry_after: Option<SystemTime>) -> String {
    match retry_after {
        Some(t) => format!(" (it lifts at {})", httpdate::fmt_http_date(t)),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChallengeKind;

    fn problem(kind: &str, detail: &str) -> Problem {
        serde_json::from_value(serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{kind}"),
            "detail": detail,
            "status": 400
        }))
        .unwrap()
    }

    #[test]
    fn each_kind_says_what_to_fix() {
        let line = problem_line(
            "a.test",
            Step::Challenge(ChallengeKind::Http01),
            &problem(
                "connection",
                "127.0.0.1: Fetching http://a.test/.well-known/acme-challenge/x: Connection refused",
            ),
        );
        assert!(
            line.starts_with(
                "a.test: proving control of a.test with http-01 failed: the CA says \"127.0.0.1: Fetching"
            ),
            "{line}"
        );
        assert!(line.contains("(connection)"), "{line}");
        assert!(line.contains("port 80 (listen.http)"), "{line}");
        assert!(line.contains("port is open"), "{line}");
        let line = problem_line(
            "a.test",
            Step::Challenge(ChallengeKind::TlsAlpn01),
            &problem("connection", "timeout"),
        );
        assert!(line.contains("port 443"), "{line}");
        assert!(line.contains("A/AAAA"), "{line}");
        for (kind, words) in [
            ("dns", "A/AAAA record"),
            ("caa", "CAA record"),
            ("rateLimited", "Retry-After"),
            ("rejectedIdentifier", "public DNS name"),
            ("externalAccountRequired", "eab_kid"),
            ("serverInternal", "retries"),
            ("somethingNew", "retries with back-off"),
        ] {
            let line = problem_line("b.test", Step::Order, &problem(kind, "x"));
            assert!(line.contains(words), "{kind}: {line}");
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn subproblem_detail_wins_and_missing_fields_are_said() {
        let p: Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "Error creating new order",
            "subproblems": [{"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "blocked name"}]
        }))
        .unwrap();
        assert!(problem_line("c.test", Step::Order, &p).contains("\"blocked name\""));
        let empty: Problem = serde_json::from_value(serde_json::json!({})).unwrap();
        let line = problem_line("c.test", Step::Order, &empty);
        assert!(
            line.contains("no detail given") && line.contains("no problem type"),
            "{line}"
        );
    }
}
