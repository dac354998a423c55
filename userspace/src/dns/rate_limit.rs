//! Per-source query rate limiting: a token bucket per source address that
//! holds `burst` queries and refills at `rate` per second.
//!
//! Sources live in a fixed-size table indexed by a keyed hash, as the NTP
//! server's limiter does: memory is bounded whatever the number of sources,
//! and a source that collides with another starts with a full bucket.

use std::{collections::hash_map::RandomState, hash::BuildHasher, net::IpAddr, time::Instant};

use crate::config::DnsRateLimit;

/// Sources tracked at once.
const SLOTS: usize = 1 << 12;

#[derive(Clone, Copy)]
struct Bucket {
    source: IpAddr,
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    slots: Vec<Option<Bucket>>,
    hasher: RandomState,
    rate: f64,
    burst: f64,
}

impl RateLimiter {
    pub fn new(limit: DnsRateLimit) -> RateLimiter {
        RateLimiter {
            slots: vec![None; SLOTS],
            hasher: RandomState::new(),
            rate: f64::from(limit.rate),
            burst: f64::from(limit.burst),
        }
    }

    /// Whether `source` may have a query answered at `now` (and takes a
    /// token if so).
    pub fn admit(&mut self, source: IpAddr, now: Instant) -> bool {
        let index = self.hasher.hash_one(source) as usize % SLOTS;
        let bucket = match &mut self.slots[index] {
            Some(b) if b.source == source => b,
            slot => slot.insert(Bucket {
                source,
                tokens: self.burst,
                updated: now,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut limiter = RateLimiter::new(DnsRateLimit { rate: 2, burst: 3 });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        assert!((0..3).all(|_| limiter.admit(a, t)));
        assert!(!limiter.admit(a, t));
        // Another source is not charged for the first one's queries.
        assert!(limiter.admit(b, t));
        assert!(limiter.admit(a, t + Duration::from_millis(500)));
        assert!(!limiter.admit(a, t + Duration::from_millis(500)));
    }
}
