//! Response rate limiting: per source with chrony's `ratelimit` semantics,
//! and a global cap on replies per second.
//!
//! Per source, a token bucket: it holds up to `burst` replies and refills at
//! one reply per 2^`interval` seconds; a reply takes a token. A request that
//! finds the bucket empty is answered anyway with probability 2^-`leak`
//! (chrony's leak), so a flood with a spoofed source address cannot lock the
//! real device out: at least one request in 2^leak still gets its reply.
//!
//! Sources live in a fixed-size table indexed by a keyed hash (as chrony's
//! client log and ntp-proto's cache do): memory is bounded whatever the
//! number of sources, and a source that collides with another starts over
//! with a full bucket, which only ever errs on the side of answering.

use std::{collections::hash_map::RandomState, hash::BuildHasher, net::IpAddr, time::Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::config::NtpRateLimit;

/// Sources tracked at once (40 bytes each: 2.5 MiB).
const SLOTS: usize = 1 << 16;

/// What the limiter lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Reply,
    /// The source's bucket is empty and the leak did not pick this request.
    SourceLimited,
    /// The global cap is reached.
    GlobalLimited,
}

#[derive(Clone, Copy)]
struct Slot {
    source: IpAddr,
    tokens: f64,
    /// Nanoseconds since the limiter's epoch.
    updated: u64,
}

pub struct RateLimiter {
    slots: Vec<Option<Slot>>,
    hasher: RandomState,
    /// Tokens gained per nanosecond, per source.
    source_refill: f64,
    burst: f64,
    leak: u8,
    global: GlobalCap,
    epoch: Instant,
    rng: StdRng,
}

/// The global cap: a token bucket of `max_rate` replies per second that holds
/// a tenth of a second's worth (at least one), so it smooths bursts without
/// letting a second's worth out at once.
struct GlobalCap {
    tokens: f64,
    capacity: f64,
    refill_per_ns: f64,
    updated: u64,
}

impl RateLimiter {
    pub fn new(limit: NtpRateLimit, max_rate: u32) -> Self {
        Self::with_rng(limit, max_rate, StdRng::from_entropy())
    }

    fn with_rng(limit: NtpRateLimit, max_rate: u32, rng: StdRng) -> Self {
        let interval_ns = 2f64.powi(limit.interval.into()) * 1e9;
        let capacity = (f64::from(max_rate) / 10.0).max(1.0);
        RateLimiter {
            slots: vec![None; SLOTS],
            hasher: RandomState::new(),
            source_refill: 1.0 / interval_ns,
            burst: f64::from(limit.burst),
            leak: limit.leak,
            global: GlobalCap {
                tokens: capacity,
                capacity,
                refill_per_ns: f64::from(max_rate) / 1e9,
                updated: 0,
            },
            epoch: Instant::now(),
            rng,
        }
    }

    /// Decides whether `source` gets a reply at `now`, and charges it.
    pub fn admit(&mut self, source: IpAddr, now: Instant) -> Admission {
        let t =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let index = self.hasher.hash_one(source) as usize % SLOTS;
        let slot = match &mut self.slots[index] {
            Some(slot) if slot.source == source => {
                let elapsed = t.saturating_sub(slot.updated) as f64;
                slot.tokens = (slot.tokens + elapsed * self.source_refill).min(self.burst);
                slot.updated = t;
                slot
            }
            entry => entry.insert(Slot {
                source,
                tokens: self.burst,
                updated: t,
            }),
        };
        let has_token = slot.tokens >= 1.0;
        if !has_token && (self.leak == 0 || self.rng.gen_range(0..1u32 << self.leak) != 0) {
            return Admission::SourceLimited;
        }
        if !self.global.take(t) {
            return Admission::GlobalLimited;
        }
        if has_token {
            slot.tokens -= 1.0;
        }
        Admission::Reply
    }
}

impl GlobalCap {
    fn take(&mut self, t: u64) -> bool {
        let elapsed = t.saturating_sub(self.updated) as f64;
        self.tokens = (self.tokens + elapsed * self.refill_per_ns).min(self.capacity);
        self.updated = t;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
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

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 11));

    fn limiter(interval: i8, burst: u32, leak: u8, max_rate: u32) -> RateLimiter {
        let limit = NtpRateLimit {
            interval,
            burst,
            leak,
        };
        RateLimiter::with_rng(limit, max_rate, StdRng::seed_from_u64(7))
    }

    fn replies(l: &mut RateLimiter, source: IpAddr, n: usize, now: Instant) -> usize {
        (0..n)
            .filter(|_| l.admit(source, now) == Admission::Reply)
            .count()
    }

    #[test]
    fn a_burst_then_one_reply_per_interval() {
        let mut l = limiter(3, 8, 0, 1_000_000);
        let t0 = Instant::now();
        assert_eq!(replies(&mut l, A, 20, t0), 8, "the burst");
        assert_eq!(l.admit(A, t0), Admission::SourceLimited);
        // Another source has its own bucket.
        assert_eq!(replies(&mut l, B, 3, t0), 3);
        // 8 s (2^3) later: exactly one more reply.
        let later = t0 + Duration::from_secs(8);
        assert_eq!(replies(&mut l, A, 5, later), 1);
        // A long silence refills at most a burst.
        let much_later = later + Duration::from_secs(3600);
        assert_eq!(replies(&mut l, A, 20, much_later), 8);
    }

    #[test]
    fn the_leak_answers_one_in_two_to_the_leak_of_limited_requests() {
        let mut l = limiter(6, 8, 2, 1_000_000);
        let t0 = Instant::now();
        let n = 8 + 40_000;
        let got = replies(&mut l, A, n, t0);
        let leaked = (got - 8) as f64 / 40_000.0;
        assert!((leaked - 0.25).abs() < 0.02, "leak ratio {leaked}");
    }

    #[test]
    fn the_source_table_has_a_fixed_size() {
        assert_eq!(std::mem::size_of::<Option<Slot>>(), 40);
        let l = limiter(3, 8, 2, 100);
        assert_eq!(l.slots.len(), SLOTS);
    }

    #[test]
    fn the_global_cap_limits_all_sources_together() {
        // 100 replies/s: a bucket of 10.
        let mut l = limiter(-4, 1_000, 0, 100);
        let t0 = Instant::now();
        let got = replies(&mut l, A, 50, t0) + replies(&mut l, B, 50, t0);
        assert_eq!(got, 10);
        assert_eq!(l.admit(B, t0), Admission::GlobalLimited);
        // A tenth of a second refills it.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(replies(&mut l, B, 50, later), 10);
        // Refused by the cap, a source keeps its tokens.
        let mut l = limiter(6, 2, 0, 10);
        let t0 = Instant::now();
        assert_eq!(replies(&mut l, A, 1, t0), 1);
        assert_eq!(l.admit(B, t0), Admission::GlobalLimited);
        let later = t0 + Duration::from_millis(100);
        assert_eq!(replies(&mut l, B, 2, later), 1);
        let later = later + Duration::from_millis(100);
        assert_eq!(replies(&mut l, B, 2, later), 1, "B's second token");
    }
}
