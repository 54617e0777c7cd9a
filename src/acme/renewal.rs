//! ACME Renewal Information (ARI, RFC 9773): the CA's suggested renewal
//! window for a certificate, and when to renew inside it.
//!
//! The state of each name (window, chosen moment, next check) is kept in
//! storage beside its last error, so that `tlsfront doctor` (another
//! process) and replicas sharing the storage see the same plan. The
//! choice itself is a pure function ([`plan`]), tested below.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Shortest wait between two checks, whatever `Retry-After` says.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between two checks (RFC 9773 §4.3.2 suggests clamping),
/// and the wait when the CA sends no usable `Retry-After`.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// What is known of one certificate's renewal window, in Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalPlan {
    /// The certificate this is about (RFC 9773 certID: `AKI.serial`).
    pub cert_id: String,
    /// The CA's suggested window.
    pub window_start: i64,
    /// End of the window (exclusive).
    pub window_end: i64,
    /// The moment chosen inside it.
    pub renew_at: i64,
    /// When to ask the CA again.
    pub next_check: i64,
    /// The CA's explanation, when it gave one (a mass revocation, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation_url: Option<String>,
}

/// The plan after the CA answered `window` (`[start, end)`, Unix seconds)
/// with `retry_after`. The moment chosen before is kept while it stays
/// inside the window (so asking again does not move it); otherwise a new
/// one is drawn with `random` (uniform in `[0, 1)`), and a window already
/// over means now.
pub fn plan(
    previous: Option<&RenewalPlan>,
    cert_id: &str,
    window: (i64, i64),
    now: i64,
    retry_after: Duration,
    random: f64,
) -> RenewalPlan {
    let (start, end) = (window.0, window.1.max(window.0));
    let kept = previous
        .filter(|p| p.cert_id == cert_id)
        .map(|p| p.renew_at)
        .filter(|&t| start <= t && t < end.max(start + 1));
    let renew_at = match kept {
        Some(t) => t,
        None if end <= now => now,
        None => {
            // Not before now: the part of the window already past is no choice.
            let from = start.max(now);
            let span = (end - from).max(0) as f64;
            from + (span * random.clamp(0.0, 1.0)) as i64
        }
    };
    // Rounded up: "Retry-After: 3" arrives as 2.99 s from now, and must not
    // become 2.
    let wait = Duration::from_secs(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
        .clamp(MIN_CHECK_INTERVAL, MAX_CHECK_INTERVAL);
    RenewalPlan {
        cert_id: cert_id.to_string(),
        window_start: start,
        window_end: end,
        renew_at,
        next_check: now.saturating_add(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX)),
        explanation_url: None,
    }
}

/// RFC 9773 §4.1's certID of a DER certificate: the base64url of its
/// Authority Key Identifier's keyIdentifier and of its serial number's DER
/// content, joined by a dot. `None` without an AKI.
pub fn cert_id(der: &[u8]) -> Option<instant_acme::CertificateIdentifier<'static>> {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let aki = cert.iter_extensions().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    })?;
    let serial = cert.tbs_certificate.raw_serial().to_vec();
    Some(
        instant_acme::CertificateIdentifier::new(
            rustls::pki_types::Der::from_slice(&aki),
            rustls::pki_types::Der::from_slice(&serial),
        )
        .into_owned(),
    )
}

/// A uniform draw in `[0, 1)` from the crypto provider's generator (the
/// moments of many servers must not line up).
pub fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    if provider.secure_random.fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    #[test]
    fn a_window_in_the_future_gets_a_moment_inside_it() {
        let p = plan(None, "a.1", (10 * HOUR, 20 * HOUR), 0, Duration::from_secs(60), 0.5);
        assert_eq!(p.renew_at, 15 * HOUR);
        assert_eq!(p.next_check, 60);
        let almost = plan(None, "a.1", (10 * HOUR, 20 * HOUR), 0, Duration::from_millis(2999), 0.5);
        assert_eq!(
            almost.next_check, 3,
            "a Retry-After read a moment late is not cut short"
        );
        let low = plan(None, "a.1", (10 * HOUR, 20 * HOUR), 0, Duration::ZERO, 0.0);
        assert_eq!(low.renew_at, 10 * HOUR);
        assert_eq!(low.next_check, 1, "Retry-After below a second is clamped");
    }

    #[test]
    fn a_window_in_the_past_means_now() {
        let p = plan(None, "a.1", (HOUR, 2 * HOUR), 5 * HOUR, Duration::from_secs(60), 0.9);
        assert_eq!(p.renew_at, 5 * HOUR);
    }

    #[test]
    fn a_window_that_began_is_drawn_from_now_on() {
        let p = plan(None, "a.1", (0, 10 * HOUR), 5 * HOUR, Duration::from_secs(60), 0.0);
        assert_eq!(p.renew_at, 5 * HOUR);
    }

    #[test]
    fn the_moment_stays_while_the_window_holds_it_and_moves_when_not() {
        let first = plan(None, "a.1", (10 * HOUR, 20 * HOUR), 0, Duration::from_secs(60), 0.5);
        let again = plan(
            Some(&first),
            "a.1",
            (10 * HOUR, 20 * HOUR),
            60,
            Duration::from_secs(60),
            0.1,
        );
        assert_eq!(again.renew_at, first.renew_at, "asking again does not move it");
        // A mass revocation: the window moves into the past.
        let moved = plan(Some(&first), "a.1", (0, HOUR / 2), HOUR, Duration::from_secs(60), 0.5);
        assert_eq!(moved.renew_at, HOUR, "renew at once");
        // A new certificate: its own draw.
        let other = plan(
            Some(&first),
            "b.2",
            (10 * HOUR, 20 * HOUR),
            0,
            Duration::from_secs(60),
            0.0,
        );
        assert_eq!(other.renew_at, 10 * HOUR);
    }

    #[test]
    fn retry_after_is_clamped_to_six_hours() {
        let p = plan(
            None,
            "a.1",
            (10 * HOUR, 20 * HOUR),
            0,
            Duration::from_secs(30 * 86400),
            0.5,
        );
        assert_eq!(p.next_check, 6 * HOUR);
    }

    #[test]
    fn random_fractions_are_in_range_and_vary() {
        let draws: Vec<f64> = (0..32).map(|_| random_fraction()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        assert!(draws.iter().any(|d| (d - draws[0]).abs() > f64::EPSILON));
    }

    #[test]
    fn plans_round_trip_through_json() {
        let mut p = plan(None, "a.1", (10, 20), 0, Duration::from_secs(5), 0.5);
        p.explanation_url = Some("https://ca.test/why".into());
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<RenewalPlan>(&text).unwrap(), p);
    }
}
