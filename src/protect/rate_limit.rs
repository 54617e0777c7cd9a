//! `[rate_limit]`: requests per client address, by GCRA (the generic cell
//! rate algorithm: one "theoretical arrival time" per key, no timers, no
//! token refills), in sharded maps whose size is bounded.
//!
//! Hand-written: the state is one `u64` per client and the check a few
//! arithmetic operations under a shard's lock; the crates that do this
//! (governor) bring a clock abstraction and a concurrent map of their own.
//!
//! Memory: at most `max_clients` entries of 16 bytes of key and 8 of state
//! (about 40 bytes each with the map's overhead: 100,000 clients are about
//! 4 MiB). When a shard is full, entries whose bucket has refilled (they
//! carry no information) are dropped first; when none has, a new address
//! shares one overflow bucket with every other such address, so a flood of
//! addresses is limited together rather than let through or grown into.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimit;

const SHARDS: usize = 16;

/// One limiter: a route's own, or the top-level one shared by routes.
pub struct RateLimiter {
    /// Nanoseconds between requests at the sustained rate.
    interval: u64,
    /// How far ahead of now a key's arrival time may run (the burst).
    tolerance: u64,
    per_shard: usize,
    epoch: Instant,
    shards: Vec<Mutex<HashMap<u128, u64>>>,
    overflow: Mutex<u64>,
}

impl RateLimiter {
    /// A limiter for enabled settings.
    pub fn new(settings: &RateLimit) -> RateLimiter {
        let requests = u128::from(settings.requests.max(1));
        let interval = u64::try_from(settings.per.as_nanos() / requests)
            .unwrap_or(u64::MAX)
            .max(1);
        let burst = u64::from(settings.effective_burst().max(1));
        RateLimiter {
            interval,
            tolerance: interval.saturating_mul(burst - 1),
            per_shard: settings.max_clients.div_ceil(SHARDS).max(1),
            epoch: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            overflow: Mutex::new(0),
        }
    }

    /// `Ok` if `client` may make a request now; else how long until it may.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.check_at(client, now)
    }

    fn check_at(&self, client: IpAddr, now: u64) -> Result<(), Duration> {
        let key = key(client);
        let shard = &self.shards[(key as usize ^ (key >> 64) as usize).wrapping_mul(0x9E37_79B9) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tat) = map.get_mut(&key) {
            return self.admit(tat, now);
        }
        if map.len() >= self.per_shard {
            // Entries whose bucket is full again say nothing: forget them.
            map.retain(|_, tat| *tat > now);
        }
        if map.len() >= self.per_shard {
            drop(map);
            let mut tat = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
            return self.admit(&mut tat, now);
        }
        let mut tat = 0;
        let verdict = self.admit(&mut tat, now);
        map.insert(key, tat);
        verdict
    }

    /// GCRA: the arrival time moves one interval per request; a request is
    /// refused when it would run further ahead of now than the burst allows.
    fn admit(&self, tat: &mut u64, now: u64) -> Result<(), Duration> {
        let next = (*tat).max(now).saturating_add(self.interval);
        let allowed_at = next.saturating_sub(self.interval.saturating_add(self.tolerance));
        if allowed_at > now {
            return Err(Duration::from_nanos(allowed_at - now));
        }
        *tat = next;
        Ok(())
    }

    /// Client addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// IPv4 by address, IPv6 by /64 (one subscriber's usual allocation: keying
/// by full address would let one client rotate through 2^64 of them).
fn key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (1u128 << 100) | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests: u32, per: u64, burst: u32, max_clients: usize) -> RateLimiter {
        RateLimiter::new(&RateLimit {
            requests,
            per: Duration::from_secs(per),
            burst,
            max_clients,
            ..RateLimit::default()
        })
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_the_sustained_rate() {
        let l = limiter(3, 2, 0, 100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check_at(ip, 10 * S).is_ok());
        }
        let wait = l.check_at(ip, 10 * S).unwrap_err();
        // 3 per 2 s: one more every 2/3 s.
        assert_eq!(wait.as_millis(), 666);
        assert_eq!(retry_after_secs(wait), 1);
        assert!(l.check_at(ip, 10 * S + 2 * S / 3 + 1).is_ok());
        assert!(l.check_at(ip, 10 * S + 2 * S / 3 + 2).is_err());
        // Another client has its own bucket.
        assert!(l.check_at("192.0.2.2".parse().unwrap(), 10 * S).is_ok());
    }

    #[test]
    fn burst_smaller_than_the_rate() {
        let l = limiter(10, 60, 2, 100);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(l.check_at(ip, S).is_ok());
        assert!(l.check_at(ip, S).is_ok());
        let wait = l.check_at(ip, S).unwrap_err();
        assert_eq!(wait.as_secs(), 6);
        // The same /64 is the same client; another /64 is not.
        assert!(l.check_at("2001:db8::ffff".parse().unwrap(), S).is_err());
        assert!(l.check_at("2001:db8:0:1::1".parse().unwrap(), S).is_ok());
        // IPv4-mapped IPv6 is the IPv4 client.
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(l.check_at(v4, S).is_ok());
        assert!(l.check_at(v4, S).is_ok());
        assert!(l.check_at("::ffff:198.51.100.7".parse().unwrap(), S).is_err());
    }

    #[test]
    fn memory_is_bounded_however_many_addresses() {
        let l = limiter(1, 60, 1, 1_000);
        for i in 0..50_000u32 {
            let _ = l.check_at(IpAddr::V4(i.into()), S);
        }
        assert!(l.tracked() <= 1_000 + SHARDS, "{}", l.tracked());
        // Overflowing addresses share one bucket: limited, not let through.
        let refused = (50_000..50_100u32)
            .filter(|i| l.check_at(IpAddr::V4((*i).into()), S).is_err())
            .count();
        assert!(refused >= 99, "{refused}");
        // Once buckets refill, their entries make room again.
        assert!(l.check_at(IpAddr::V4(60_000.into()), 200 * S).is_ok());
        assert!(l.tracked() <= 1_000 + SHARDS);
    }
}
