//! The process-local monotonic clock that deadlines, health and parking
//! share. At the bottom of the house: anything may read the time.

use std::time::Instant;

/// Milliseconds on a process-local monotonic clock.
pub fn monotonic_millis() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
