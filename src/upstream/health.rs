//! Server health: passive (failures seen on real requests eject a server
//! for a back-off period) and active (a periodic `GET health_path`).
//!
//! Pure state and arithmetic over a millisecond clock passed in, so the
//! rules are unit-tested without sleeping; the probe loop lives in `mod.rs`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Ejections in a row double the period up to this factor.
const MAX_BACKOFF_SHIFT: u32 = 5;

/// The health of one server.
#[derive(Debug)]
pub struct Health {
    /// Failures in a row on real requests.
    fails: AtomicU32,
    /// Ejected until this time ([`crate::clock::monotonic_millis`]); 0 = never.
    ejected_until: AtomicU64,
    /// Ejections without a success in between (for the back-off).
    ejections: AtomicU32,
    /// Active checks: up (optimistic until a check says otherwise).
    up: AtomicBool,
    /// Active checks in a row with the same result, toward a threshold.
    streak: AtomicU32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            fails: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            up: AtomicBool::new(true),
            streak: AtomicU32::new(0),
        }
    }
}

/// Passive-health settings of a route.
#[derive(Debug, Clone, Copy)]
pub struct Passive {
    /// Failures in a row that eject (0 = never eject).
    pub max_fails: u32,
    /// First ejection period.
    pub eject_time: Duration,
}

impl Health {
    /// Whether requests may go to the server at `now`.
    pub fn available(&self, now: u64) -> bool {
        self.up.load(Ordering::Relaxed) && now >= self.ejected_until.load(Ordering::Relaxed)
    }

    /// Whether active checks say the server is up.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether the server is ejected at `now` by passive health.
    pub fn ejected(&self, now: u64) -> bool {
        now < self.ejected_until.load(Ordering::Relaxed)
    }

    /// A request succeeded: the failure count and the back-off reset.
    pub fn success(&self) {
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A request failed at `now`. Returns the ejection period when this
    /// failure ejects the server.
    pub fn failure(&self, now: u64, passive: Passive) -> Option<Duration> {
        if passive.max_fails == 0 {
            return None;
        }
        let fails = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails < passive.max_fails {
            return None;
        }
        self.fails.store(0, Ordering::Relaxed);
        let shift = self.ejections.fetch_add(1, Ordering::Relaxed).min(MAX_BACKOFF_SHIFT);
        let period = passive.eject_time.saturating_mul(1 << shift);
        self.ejected_until
            .store(now.saturating_add(period.as_millis() as u64), Ordering::Relaxed);
        Some(period)
    }

    /// Records an active check. Returns `Some(new state)` when it changed.
    pub fn checked(&self, passed: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> Option<bool> {
        let up = self.up.load(Ordering::Relaxed);
        if passed == up {
            self.streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if passed { healthy_threshold } else { unhealthy_threshold };
        if streak < needed {
            return None;
        }
        self.streak.store(0, Ordering::Relaxed);
        self.up.store(passed, Ordering::Relaxed);
        if passed {
            // Back in service: forget the passive history too.
            self.ejected_until.store(0, Ordering::Relaxed);
            self.fails.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
        }
        Some(passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Passive = Passive {
        max_fails: 3,
        eject_time: Duration::from_secs(10),
    };

    #[test]
    fn failures_in_a_row_eject_with_growing_backoff() {
        let h = Health::default();
        assert!(h.available(0));
        assert_eq!(h.failure(0, P), None);
        assert_eq!(h.failure(0, P), None);
        assert_eq!(h.failure(0, P), Some(Duration::from_secs(10)));
        assert!(!h.available(9_999));
        assert!(h.available(10_000));
        for _ in 0..2 {
            h.failure(10_000, P);
        }
        assert_eq!(h.failure(10_000, P), Some(Duration::from_secs(20)));
        assert!(!h.available(29_999));
        for _ in 0..21 {
            h.failure(30_000, P);
        }
        // Capped at 32 x.
        for _ in 0..2 {
            h.failure(1_000_000, P);
        }
        assert_eq!(h.failure(1_000_000, P), Some(Duration::from_secs(320)));
        // A success resets the count and the back-off.
        h.success();
        h.failure(2_000_000, P);
        h.failure(2_000_000, P);
        assert_eq!(h.failure(2_000_000, P), Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let h = Health::default();
        for _ in 0..10 {
            assert_eq!(h.failure(0, P), None);
            assert_eq!(h.failure(0, P), None);
            h.success();
        }
        assert!(h.available(0));
        let never = Passive { max_fails: 0, ..P };
        for _ in 0..10 {
            assert_eq!(h.failure(0, never), None);
        }
    }

    #[test]
    fn active_checks_need_their_thresholds() {
        let h = Health::default();
        assert_eq!(h.checked(false, 2, 3), None);
        assert_eq!(h.checked(false, 2, 3), None);
        assert!(h.up());
        assert_eq!(h.checked(false, 2, 3), Some(false));
        assert!(!h.available(0));
        assert_eq!(h.checked(true, 2, 3), None);
        assert_eq!(h.checked(false, 2, 3), None, "a failure breaks the streak");
        assert_eq!(h.checked(true, 2, 3), None);
        assert_eq!(h.checked(true, 2, 3), Some(true));
        assert!(h.available(0));
    }
}
