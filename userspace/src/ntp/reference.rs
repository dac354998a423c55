//! What the server advertises (stratum, reference id, root delay and
//! dispersion, leap indicator) and where it comes from.
//!
//! - `reference: local`: always synchronised at the configured stratum.
//! - `reference: upstream`: derived from the best recent upstream sample
//!   (stratum + 1, root delay + measured delay, root dispersion + measured
//!   dispersion, its leap indicator). Without a good sample for longer than
//!   the holdover — or before the first one — the server raises the alarm
//!   (leap indicator 3) so clients stop trusting it instead of being lied to.
//!   During holdover the root dispersion grows at 15 ppm (RFC 5905's PHI).
//!
//! Plain values and their arithmetic, with no clock reads of their own and
//! no tasks: `refresh` runs the task that polls and republishes them.

use std::{
    fmt,
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

/// Dispersion growth of an undisciplined clock, s/s (RFC 5905 PHI, 15 ppm).
pub const PHI: f64 = 15e-6;
/// RFC 5905 MAXDISP: the dispersion of "no idea".
pub const MAX_DISPERSION: f64 = 16.0;
/// RFC 5905 MAXDIST: a sample farther than this from the root is unusable.
pub const MAX_DISTANCE: f64 = 1.5;
/// Stratum 16 means unsynchronised.
pub const UNSYNCHRONISED_STRATUM: u8 = 16;

/// The leap indicator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Leap {
    NoWarning,
    InsertSecond,
    DeleteSecond,
    /// Unsynchronised: clients must not use our time.
    Alarm,
}

impl Leap {
    /// The value on the wire (and of `tollgate_ntp_leap_indicator`).
    pub fn code(self) -> u8 {
        match self {
            Leap::NoWarning => 0,
            Leap::InsertSecond => 1,
            Leap::DeleteSecond => 2,
            Leap::Alarm => 3,
        }
    }
}

/// What the reference id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// The upstream server we follow.
    Upstream(IpAddr),
    /// `reference: local`.
    Local,
    /// Never synchronised.
    None,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Upstream(ip) => write!(f, "{ip}"),
            Reference::Local => f.write_str("LOCAL"),
            Reference::None => f.write_str("none"),
        }
    }
}

/// The state the server advertises.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Advertised {
    pub leap: Leap,
    pub stratum: u8,
    pub reference: Reference,
    /// Seconds.
    pub root_delay: f64,
    /// Seconds, at `since`; grows by `dispersion_rate` per second after it.
    pub root_dispersion: f64,
    pub since: SystemTime,
    pub dispersion_rate: f64,
}

impl Advertised {
    /// `reference: local`: synchronised at `stratum`, at the root.
    pub fn local(stratum: u8, now: SystemTime) -> Self {
        Advertised {
            leap: Leap::NoWarning,
            stratum,
            reference: Reference::Local,
            root_delay: 0.0,
            root_dispersion: 0.0,
            since: now,
            dispersion_rate: 0.0,
        }
    }

    /// The same state with the alarm raised: what to advertise once nothing
    /// refreshes it any more (the refresh task is gone).
    pub fn orphaned(self) -> Self {
        Advertised {
            leap: Leap::Alarm,
            ..self
        }
    }

    /// Root dispersion at `t`.
    pub fn root_dispersion_at(&self, t: SystemTime) -> f64 {
        let elapsed = t.duration_since(self.since).unwrap_or_default();
        self.root_dispersion + self.dispersion_rate * elapsed.as_secs_f64()
    }
}

/// An upstream server's reply, measured against the host clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpstreamReply {
    pub stratum: u8,
    pub leap: Leap,
    /// The server's root delay and dispersion, seconds.
    pub root_delay: f64,
    pub root_dispersion: f64,
    /// The server's precision, seconds.
    pub precision: f64,
    /// Upstream clock minus host clock, seconds.
    pub offset: f64,
    /// Round-trip network delay, seconds (never negative).
    pub delay: f64,
}

/// A usable upstream sample, expressed as what it lets us advertise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub server: IpAddr,
    pub leap: Leap,
    /// Ours: the server's stratum + 1.
    pub stratum: u8,
    /// Ours, at the time of the sample.
    pub root_delay: f64,
    pub root_dispersion: f64,
    /// The upstream's clock minus the host's, seconds, as measured.
    pub offset: f64,
}

impl Sample {
    /// What a reply lets us advertise, or `None` when the server is not
    /// synchronised (leap 3, stratum 0 or ≥ 15) or too far from its root.
    ///
    /// Measured dispersion, as RFC 5905 defines it for one sample: both
    /// precisions, PHI over the round trip, and the host clock's offset from
    /// the server (the time we serve is the host's, not the server's).
    pub fn from_reply(server: IpAddr, reply: &UpstreamReply, local_precision: f64) -> Option<Self> {
        if reply.leap == Leap::Alarm || !(1..UNSYNCHRONISED_STRATUM - 1).contains(&reply.stratum) {
            return None;
        }
        let measured = reply.precision + local_precision + PHI * reply.delay + reply.offset.abs();
        let sample = Sample {
            server,
            leap: reply.leap,
            stratum: reply.stratum + 1,
            root_delay: reply.root_delay + reply.delay,
            root_dispersion: reply.root_dispersion + measured,
            offset: reply.offset,
        };
        (sample.root_distance() <= MAX_DISTANCE).then_some(sample)
    }

    fn root_distance(&self) -> f64 {
        self.root_delay / 2.0 + self.root_dispersion
    }
}

/// Follows the upstream: the last good sample, and how old it may get.
#[derive(Debug)]
pub struct Holdover {
    holdover: Duration,
    last: Option<(Sample, Instant)>,
}

impl Holdover {
    pub fn new(holdover: Duration) -> Self {
        Holdover {
            holdover,
            last: None,
        }
    }

    /// Takes the samples of one poll round; the one closest to the root wins.
    /// No sample keeps the previous one, ageing.
    pub fn update(&mut self, samples: impl IntoIterator<Item = Sample>, now: Instant) {
        let best = samples
            .into_iter()
            .min_by(|a, b| a.root_distance().total_cmp(&b.root_distance()));
        if let Some(best) = best {
            self.last = Some((best, now));
        }
    }

    /// The last good sample's offset (upstream minus host, seconds) and its
    /// age at `now`; `None` before the first one.
    pub fn last_sample(&self, now: Instant) -> Option<(f64, Duration)> {
        self.last
            .map(|(sample, at)| (sample.offset, now.saturating_duration_since(at)))
    }

    /// What to advertise at `now` (monotonic), with `wall` its host time.
    pub fn advertised(&self, now: Instant, wall: SystemTime) -> Advertised {
        let Some((sample, at)) = self.last else {
            return Advertised {
                leap: Leap::Alarm,
                stratum: UNSYNCHRONISED_STRATUM,
                reference: Reference::None,
                root_delay: 0.0,
                root_dispersion: MAX_DISPERSION,
                since: wall,
                dispersion_rate: 0.0,
            };
        };
        let age = now.saturating_duration_since(at);
        let leap = if age <= self.holdover {
            sample.leap
        } else {
            // Keeping the stratum (not 16) lets clients name the reason:
            // ntpdig reports "leap not in sync".
            Leap::Alarm
        };
        Advertised {
            leap,
            stratum: sample.stratum,
            reference: Reference::Upstream(sample.server),
            root_delay: sample.root_delay,
            root_dispersion: (sample.root_dispersion + PHI * age.as_secs_f64()).min(MAX_DISPERSION),
            since: wall,
            dispersion_rate: PHI,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(stratum: u8, leap: Leap) -> UpstreamReply {
        UpstreamReply {
            stratum,
            leap,
            root_delay: 0.010,
            root_dispersion: 0.020,
            precision: 1e-6,
            offset: -0.002,
            delay: 0.004,
        }
    }

    const SERVER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 53));

    #[test]
    fn a_sample_adds_our_measurement_to_the_upstream_state() {
        let s = Sample::from_reply(SERVER, &reply(2, Leap::NoWarning), 1e-6).unwrap();
        assert_eq!(s.stratum, 3);
        assert!((s.root_delay - 0.014).abs() < 1e-12);
        let measured = 1e-6 + 1e-6 + PHI * 0.004 + 0.002;
        assert!((s.root_dispersion - (0.020 + measured)).abs() < 1e-12);
    }

    #[test]
    fn unsynchronised_or_distant_upstreams_give_no_sample() {
        assert!(Sample::from_reply(SERVER, &reply(2, Leap::Alarm), 1e-6).is_none());
        assert!(Sample::from_reply(SERVER, &reply(0, Leap::NoWarning), 1e-6).is_none());
        assert!(Sample::from_reply(SERVER, &reply(15, Leap::NoWarning), 1e-6).is_none());
        assert!(Sample::from_reply(SERVER, &reply(14, Leap::NoWarning), 1e-6).is_some());
        let mut far = reply(2, Leap::NoWarning);
        far.offset = 2.0;
        assert!(Sample::from_reply(SERVER, &far, 1e-6).is_none());
    }

    #[test]
    fn holdover_keeps_the_sample_then_raises_the_alarm() {
        let mut h = Holdover::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let never = h.advertised(t0, wall);
        assert_eq!(never.leap, Leap::Alarm, "no claim without a sample");
        assert_eq!(never.stratum, UNSYNCHRONISED_STRATUM);
        assert_eq!(never.root_dispersion, MAX_DISPERSION);

        let s = Sample::from_reply(SERVER, &reply(2, Leap::InsertSecond), 1e-6).unwrap();
        assert_eq!(h.last_sample(t0), None);
        h.update([s], t0);
        assert_eq!(h.last_sample(t0), Some((-0.002, Duration::ZERO)));
        let fresh = h.advertised(t0, wall);
        assert_eq!(
            fresh.leap,
            Leap::InsertSecond,
            "the upstream's leap warning"
        );
        assert_eq!(fresh.stratum, 3);
        assert_eq!(fresh.reference, Reference::Upstream(SERVER));

        // Unreachable for 10 minutes: still within holdover, dispersion grew.
        h.update([], t0 + Duration::from_secs(300));
        assert_eq!(
            h.last_sample(t0 + Duration::from_secs(600)),
            Some((-0.002, Duration::from_secs(600))),
            "the sample ages while no new one comes"
        );
        let held = h.advertised(t0 + Duration::from_secs(600), wall);
        assert_eq!(held.leap, Leap::InsertSecond);
        assert!((held.root_dispersion - (s.root_dispersion + PHI * 600.0)).abs() < 1e-9);
        assert_eq!(held.dispersion_rate, PHI);

        let expired = h.advertised(t0 + Duration::from_secs(601), wall);
        assert_eq!(expired.leap, Leap::Alarm);
        assert_eq!(expired.stratum, 3, "stratum kept so clients say why");

        // A good sample again: synchronised again.
        h.update([s], t0 + Duration::from_secs(700));
        assert_eq!(
            h.advertised(t0 + Duration::from_secs(700), wall).leap,
            Leap::InsertSecond
        );
    }

    #[test]
    fn the_sample_closest_to_the_root_wins() {
        let near = Sample::from_reply(SERVER, &reply(3, Leap::NoWarning), 1e-6).unwrap();
        let mut far_reply = reply(1, Leap::NoWarning);
        far_reply.root_dispersion = 0.5;
        let other = IpAddr::from([192, 0, 2, 54]);
        let far = Sample::from_reply(other, &far_reply, 1e-6).unwrap();
        let mut h = Holdover::new(Duration::from_secs(60));
        let now = Instant::now();
        h.update([far, near], now);
        let a = h.advertised(now, SystemTime::now());
        assert_eq!((a.stratum, a.reference), (4, Reference::Upstream(SERVER)));
    }

    #[test]
    fn dispersion_grows_from_its_base_time() {
        let since = SystemTime::now();
        let a = Advertised {
            root_dispersion: 0.1,
            dispersion_rate: PHI,
            ..Advertised::local(2, since)
        };
        let later = since + Duration::from_secs(1000);
        assert!((a.root_dispersion_at(later) - (0.1 + PHI * 1000.0)).abs() < 1e-12);
        assert_eq!(Advertised::local(2, since).root_dispersion_at(later), 0.0);
    }
}
