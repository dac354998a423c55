//! Per-group time health: which devices take time from the gateway, how
//! often, and how far off their clocks were, from the client requests
//! themselves.
//!
//! Many SNTP clients put their own clock's time in the request's transmit
//! timestamp, so a request tells the device's offset: the gateway's
//! receive time minus that timestamp (positive: the device is behind). Two
//! requests of one device tell its polling interval. Both paths report
//! every well-formed client request from a member, once: the server each
//! one it decides, the XDP fast path each one it answers
//! (`TG_NTP_SAMPLES`, drained by `daemon/ntp_fast.rs`).
//!
//! Exported per group, never per device (cardinality is bounded by the
//! policy's groups plus `allow-list` for `ntp.allow` sources; non-members
//! are not recorded: they get no answer and anyone can claim their
//! address):
//! - `tollgate_ntp_client_offset_seconds{group}`, a histogram of offsets;
//! - `tollgate_ntp_client_poll_interval_seconds{group}`, a histogram of the
//!   time since the same device's previous request;
//! - `tollgate_ntp_clients{group}`, devices seen in the last hour;
//! - `tollgate_ntp_clients_untracked_total`, requests from devices the
//!   table had no room for.
//!
//! An offset counts (in the histogram, `tollgate status` and the deny
//! log's hints) once the device's next request confirms it: two offsets in
//! a row that differ by at most 1 s plus 500 ppm of the time between them,
//! as a real clock's do. Clients that fill the transmit timestamp with
//! random bits (chrony does, to keep its clock private) never confirm one,
//! so they cannot skew their group; a device's first request and one-shot
//! clients tell none. A zero transmit timestamp is no offset (the device
//! is still seen and its interval measured). The table keeps
//! [`MAX_TRACKED_DEVICES`] devices, each for a day after its last request;
//! a device beyond that is counted in
//! `tollgate_ntp_clients_untracked_total` only.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntGaugeVec, Opts, Registry, core::Collector,
    proto::MetricFamily,
};
use serde::Serialize;

/// Devices whose last request is remembered at once (about 100 bytes
/// each): a gateway's fleet, with room to spare.
pub const MAX_TRACKED_DEVICES: usize = 16_384;
/// `tollgate_ntp_clients` counts the devices seen within this window.
pub const CLIENT_WINDOW: Duration = Duration::from_secs(3600);
/// A device is forgotten this long after its last request (the longest
/// polling interval measured).
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// A full table is swept for forgotten devices at most this often, so a
/// flood of new sources costs one sweep a minute, not one per request.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Beyond this, a device's clock is wrong enough to break TLS: deny
/// events from it carry a `clock_skew` hint.
pub const SKEW_HINT: f64 = 300.0;

/// Offsets in seconds, both signs: a millisecond either way is "right", a
/// year either way is a clock that was never set.
const OFFSET_BUCKETS: [f64; 20] = [
    -31_536_000.0,
    -86_400.0,
    -3_600.0,
    -300.0,
    -60.0,
    -10.0,
    -1.0,
    -0.1,
    -0.01,
    -0.001,
    0.001,
    0.01,
    0.1,
    1.0,
    10.0,
    60.0,
    300.0,
    3_600.0,
    86_400.0,
    31_536_000.0,
];
/// Polling intervals in seconds: NTP polls in powers of two (2^4 to 2^17),
/// SNTP clients often hourly or daily.
const POLL_BUCKETS: [f64; 19] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 3600.0, 4096.0,
    8192.0, 16384.0, 32768.0, 65536.0, 86_400.0,
];

/// Two offsets of one device agree when they differ by at most this, plus
/// [`MAX_DRIFT`] of the time between them.
const AGREEMENT: f64 = 1.0;
/// The fastest a clock drifts that NTP assumes (500 ppm, `MAXFREQ`).
const MAX_DRIFT: f64 = 500e-6;

/// Whether `new`, told `interval` after `old`, confirms it: a real clock's
/// offset moves by its drift, a random timestamp's by anything.
fn agree(new: f64, old: f64, interval: Duration) -> bool {
    (new - old).abs() <= AGREEMENT + MAX_DRIFT * interval.as_secs_f64()
}

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A request's timestamp in NTP format (32.32 seconds, era wrapped as on
/// the wire).
pub fn ntp_timestamp(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = (since.as_secs() + NTP_UNIX_OFFSET) & 0xffff_ffff;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// `later - earlier` in seconds, across an era boundary as NTP does (the
/// eras that make the difference smallest, up to 68 years either way).
fn ntp_difference(later: u64, earlier: u64) -> f64 {
    later.wrapping_sub(earlier) as i64 as f64 / 4_294_967_296.0
}

/// The wall-clock time of NTP timestamp `ts`, in the era nearest `near`.
pub fn ntp_to_system(ts: u64, near: SystemTime) -> SystemTime {
    let seconds = ntp_difference(ts, ntp_timestamp(near));
    if seconds >= 0.0 {
        near + Duration::from_secs_f64(seconds)
    } else {
        near - Duration::from_secs_f64(-seconds)
    }
}

/// One client request, as both paths report it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub source: IpAddr,
    /// When it arrived (the kernel's receive timestamp).
    pub received: SystemTime,
    /// Its transmit timestamp, NTP format as sent (0: none).
    pub transmit: u64,
}

impl Sample {
    /// The device's offset (receive time minus its transmit timestamp), or
    /// `None` when it sent none.
    pub fn offset(&self) -> Option<f64> {
        (self.transmit != 0).then(|| ntp_difference(ntp_timestamp(self.received), self.transmit))
    }
}

/// A device `tollgate status` lists.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClientOffset {
    pub group: String,
    pub address: IpAddr,
    /// Its last confirmed offset, seconds (positive: its clock is behind).
    pub offset_seconds: f64,
    /// When its last request arrived.
    pub last_seen_unix: u64,
}

struct Device {
    group: Arc<str>,
    /// When the controller took its last request (windows and expiry).
    seen: Instant,
    /// When that request arrived (intervals, status).
    received: SystemTime,
    /// The last offset a request told, confirmed or not.
    told: Option<f64>,
    /// The last offset the next request confirmed.
    offset: Option<f64>,
}

#[derive(Default)]
struct Devices {
    by_address: HashMap<IpAddr, Device>,
    /// The labels of the policy in force, each exported even at zero.
    groups: Vec<Arc<str>>,
    last_sweep: Option<Instant>,
}

impl Devices {
    /// The device's entry, made room for if need be; `None` when the table
    /// is full of devices seen within a day.
    fn entry(&mut self, source: IpAddr, group: &str, now: Instant) -> Option<&mut Device> {
        if !self.by_address.contains_key(&source) && self.by_address.len() >= MAX_TRACKED_DEVICES {
            if self
                .last_sweep
                .is_some_and(|at| now.duration_since(at) < SWEEP_EVERY)
            {
                return None;
            }
            self.last_sweep = Some(now);
            self.by_address
                .retain(|_, d| now.duration_since(d.seen) < FORGET_AFTER);
            if self.by_address.len() >= MAX_TRACKED_DEVICES {
                return None;
            }
        }
        let group = self.label(group);
        let device = self.by_address.entry(source).or_insert_with(|| Device {
            group: group.clone(),
            seen: now,
            received: UNIX_EPOCH,
            told: None,
            offset: None,
        });
        device.group = group;
        Some(device)
    }

    /// One shared copy of each label.
    fn label(&mut self, group: &str) -> Arc<str> {
        if let Some(g) = self.groups.iter().find(|g| &***g == group) {
            return g.clone();
        }
        Arc::from(group)
    }
}

/// The time health of every group, fed by both paths.
pub struct ClientHealth {
    offsets: HistogramVec,
    polls: HistogramVec,
    untracked: IntCounter,
    clients: IntGaugeVec,
    devices: Mutex<Devices>,
}

impl ClientHealth {
    /// Registers the metrics into `registry` (once per registry).
    pub fn register(registry: &Registry) -> prometheus::Result<Arc<Self>> {
        let health = Arc::new(ClientHealth {
            offsets: HistogramVec::new(
                HistogramOpts::new(
                    "tollgate_ntp_client_offset_seconds",
                    "Clock offsets of NTP clients by group: receive time minus the request's transmit timestamp (positive: the device is behind), each confirmed by the device's next request.",
                )
                .buckets(OFFSET_BUCKETS.to_vec()),
                &["group"],
            )?,
            polls: HistogramVec::new(
                HistogramOpts::new(
                    "tollgate_ntp_client_poll_interval_seconds",
                    "Time between two NTP requests of the same device, by group.",
                )
                .buckets(POLL_BUCKETS.to_vec()),
                &["group"],
            )?,
            untracked: IntCounter::new(
                "tollgate_ntp_clients_untracked_total",
                "NTP requests from devices the time-health table had no room for (16384 devices): in no other time-health metric.",
            )?,
            clients: IntGaugeVec::new(
                Opts::new(
                    "tollgate_ntp_clients",
                    "Distinct devices that sent an NTP request in the last hour, by group.",
                ),
                &["group"],
            )?,
            devices: Mutex::new(Devices::default()),
        });
        registry.register(Box::new(health.offsets.clone()))?;
        registry.register(Box::new(health.polls.clone()))?;
        registry.register(Box::new(health.untracked.clone()))?;
        registry.register(Box::new(ClientsGauge(health.clone())))?;
        Ok(health)
    }

    fn devices(&self) -> std::sync::MutexGuard<'_, Devices> {
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The labels of the policy in force: each has its series from the
    /// start, zero until one of its devices asks.
    pub fn set_groups(&self, labels: impl IntoIterator<Item = String>) {
        let labels: Vec<Arc<str>> = labels.into_iter().map(Arc::from).collect();
        for label in &labels {
            self.offsets.with_label_values(&[&**label]);
            self.polls.with_label_values(&[&**label]);
        }
        self.devices().groups = labels;
    }

    /// Records one request of a device of `group`, taken at `now`.
    pub fn observe(&self, group: &str, sample: &Sample, now: Instant) {
        let told = sample.offset();
        let mut devices = self.devices();
        let Some(device) = devices.entry(sample.source, group, now) else {
            self.untracked.inc();
            return;
        };
        let previous = (device.received != UNIX_EPOCH).then(|| {
            sample
                .received
                .duration_since(device.received)
                .unwrap_or_else(|e| e.duration())
        });
        if let Some(interval) = previous {
            self.polls
                .with_label_values(&[group])
                .observe(interval.as_secs_f64());
        }
        if let (Some(new), Some(old), Some(interval)) = (told, device.told, previous)
            && agree(new, old, interval)
        {
            self.offsets.with_label_values(&[group]).observe(new);
            device.offset = Some(new);
        }
        device.seen = now;
        device.received = sample.received;
        if told.is_some() {
            device.told = told;
        }
    }

    /// Devices seen within [`CLIENT_WINDOW`] of `now`, by group.
    pub fn clients(&self, now: Instant) -> BTreeMap<String, u64> {
        let devices = self.devices();
        let mut counts: BTreeMap<String, u64> =
            devices.groups.iter().map(|g| (g.to_string(), 0)).collect();
        for d in devices.by_address.values() {
            if now.saturating_duration_since(d.seen) < CLIENT_WINDOW {
                *counts.entry(d.group.to_string()).or_default() += 1;
            }
        }
        counts
    }

    /// The `n` remembered devices with the largest offsets, largest first.
    pub fn largest_offsets(&self, n: usize, now: Instant) -> Vec<ClientOffset> {
        let devices = self.devices();
        let mut list: Vec<ClientOffset> = devices
            .by_address
            .iter()
            .filter(|(_, d)| now.saturating_duration_since(d.seen) < FORGET_AFTER)
            .filter_map(|(address, d)| {
                Some(ClientOffset {
                    group: d.group.to_string(),
                    address: *address,
                    offset_seconds: d.offset?,
                    last_seen_unix: d
                        .received
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |t| t.as_secs()),
                })
            })
            .collect();
        list.sort_by(|a, b| {
            b.offset_seconds
                .abs()
                .total_cmp(&a.offset_seconds.abs())
                .then(a.address.cmp(&b.address))
        });
        list.truncate(n);
        list
    }

    /// The last confirmed offset of `source` when it is beyond [`SKEW_HINT`] either
    /// way: a device whose clock is that wrong fails TLS in ways that look
    /// like network faults.
    pub fn clock_skew(&self, source: IpAddr, now: Instant) -> Option<f64> {
        let devices = self.devices();
        let d = devices.by_address.get(&source.to_canonical())?;
        let offset = d.offset?;
        (now.saturating_duration_since(d.seen) < FORGET_AFTER && offset.abs() > SKEW_HINT)
            .then_some(offset)
    }
}

/// `tollgate_ntp_clients`, counted at scrape time: the window moves
/// whether or not requests come.
struct ClientsGauge(Arc<ClientHealth>);

impl Collector for ClientsGauge {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.clients.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let counts = self.0.clients(Instant::now());
        // One scrape at a time rebuilds the series: a group gone from the
        // policy and from the window goes from the exposition too.
        let _devices = self.0.devices();
        self.0.clients.reset();
        for (group, n) in counts {
            self.0
                .clients
                .with_label_values(&[&group])
                .set(n.try_into().unwrap_or(i64::MAX));
        }
        self.0.clients.collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use prometheus::core::Metric as _;

    use super::*;

    const T0: Duration = Duration::from_secs(1_780_000_000);

    fn at(seconds: f64) -> SystemTime {
        if seconds >= 0.0 {
            UNIX_EPOCH + T0 + Duration::from_secs_f64(seconds)
        } else {
            UNIX_EPOCH + T0 - Duration::from_secs_f64(-seconds)
        }
    }

    fn device(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    /// A request from `source` arriving at `received` whose clock said
    /// `received - offset`.
    fn sample(source: IpAddr, received: f64, offset: f64) -> Sample {
        Sample {
            source,
            received: at(received),
            transmit: ntp_timestamp(at(received - offset)),
        }
    }

    /// Two requests of `source`, 64 s apart, both `offset` off: one
    /// confirmed offset.
    fn told_twice(h: &ClientHealth, group: &str, source: IpAddr, offset: f64, now: Instant) {
        h.observe(group, &sample(source, 0.0, offset), now);
        h.observe(group, &sample(source, 64.0, offset), now);
    }

    fn health() -> Arc<ClientHealth> {
        ClientHealth::register(&Registry::new()).unwrap()
    }

    fn buckets(h: &HistogramVec, group: &str) -> Vec<(f64, u64)> {
        let m = h.with_label_values(&[group]).metric();
        m.get_histogram()
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect()
    }

    fn count_le(h: &HistogramVec, group: &str, le: f64) -> u64 {
        buckets(h, group)
            .into_iter()
            .find(|(b, _)| *b == le)
            .map(|(_, c)| c)
            .unwrap()
    }

    #[test]
    fn offsets_land_in_signed_buckets() {
        let h = health();
        let now = Instant::now();
        told_twice(&h, "meters", device(1), 0.0005, now);
        told_twice(&h, "meters", device(2), -0.0005, now);
        told_twice(&h, "meters", device(3), 3_599.0, now);
        told_twice(&h, "meters", device(4), -400.0, now);
        told_twice(&h, "cameras", device(5), 5.0, now);
        assert_eq!(count_le(&h.offsets, "meters", -300.0), 1, "400 s ahead");
        assert_eq!(count_le(&h.offsets, "meters", -0.001), 1);
        assert_eq!(count_le(&h.offsets, "meters", 0.001), 3, "±0.5 ms");
        assert_eq!(count_le(&h.offsets, "meters", 300.0), 3);
        assert_eq!(count_le(&h.offsets, "meters", 3_600.0), 4, "an hour behind");
        assert_eq!(count_le(&h.offsets, "cameras", 1.0), 0);
        assert_eq!(count_le(&h.offsets, "cameras", 10.0), 1);
    }

    #[test]
    fn an_offset_counts_once_the_next_request_confirms_it() {
        let h = health();
        let now = Instant::now();
        h.observe("meters", &sample(device(1), 0.0, 1_800.0), now);
        assert_eq!(
            h.offsets.with_label_values(&["meters"]).get_sample_count(),
            0
        );
        assert_eq!(h.clock_skew(device(1), now), None, "not yet confirmed");
        // Drift within 500 ppm of an hour (1.8 s) and the 1 s slack.
        h.observe("meters", &sample(device(1), 3_600.0, 1_802.7), now);
        assert_eq!(
            h.offsets.with_label_values(&["meters"]).get_sample_count(),
            1
        );
        assert!(h.clock_skew(device(1), now).is_some());
        // The clock is set right: the jump confirms nothing, the next does.
        h.observe("meters", &sample(device(1), 3_700.0, 0.001), now);
        assert_eq!(
            h.offsets.with_label_values(&["meters"]).get_sample_count(),
            1
        );
        assert!(h.clock_skew(device(1), now).is_some(), "the last confirmed");
        h.observe("meters", &sample(device(1), 3_800.0, 0.002), now);
        assert_eq!(
            h.offsets.with_label_values(&["meters"]).get_sample_count(),
            2
        );
        assert_eq!(h.clock_skew(device(1), now), None);
    }

    #[test]
    fn random_transmit_timestamps_never_count() {
        // chrony's client requests: random bits where the clock would be.
        let h = health();
        let now = Instant::now();
        let mut random = 0x9e37_79b9_7f4a_7c15_u64;
        for n in 0..20 {
            random = random
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let s = Sample {
                source: device(1),
                received: at(f64::from(n) * 64.0),
                transmit: random,
            };
            h.observe("meters", &s, now);
        }
        assert_eq!(
            h.offsets.with_label_values(&["meters"]).get_sample_count(),
            0
        );
        assert_eq!(
            h.polls.with_label_values(&["meters"]).get_sample_count(),
            19
        );
        assert!(h.largest_offsets(10, now).is_empty());
        assert_eq!(h.clock_skew(device(1), now), None);
        assert_eq!(h.clients(now)["meters"], 1, "seen all the same");
    }

    #[test]
    fn a_zero_transmit_timestamp_is_no_offset_but_a_sighting() {
        let h = health();
        let now = Instant::now();
        told_twice(&h, "meters", device(1), 7_200.0, now);
        let mut s = sample(device(1), 128.0, 0.0);
        s.transmit = 0;
        h.observe("meters", &s, now + Duration::from_secs(64));
        let offsets = h.offsets.with_label_values(&["meters"]);
        assert_eq!(offsets.get_sample_count(), 1);
        assert_eq!(h.polls.with_label_values(&["meters"]).get_sample_count(), 2);
        assert_eq!(count_le(&h.polls, "meters", 64.0), 2);
        assert_eq!(count_le(&h.polls, "meters", 32.0), 0);
        // The last offset confirmed stays the device's offset.
        let skew = h.clock_skew(device(1), now + Duration::from_secs(64));
        assert!((skew.unwrap() - 7_200.0).abs() < 1e-3, "{skew:?}");
    }

    #[test]
    fn offsets_cross_the_ntp_era_boundary() {
        // 2036-02-07T06:28:16Z is where the 32-bit seconds wrap.
        let wrap = UNIX_EPOCH + Duration::from_secs((1u64 << 32) - NTP_UNIX_OFFSET);
        let s = Sample {
            source: device(1),
            received: wrap + Duration::from_secs(5),
            transmit: ntp_timestamp(wrap - Duration::from_secs(5)),
        };
        assert!((s.offset().unwrap() - 10.0).abs() < 1e-6);
        let back = ntp_to_system(ntp_timestamp(wrap + Duration::from_secs(5)), wrap);
        assert_eq!(
            back.duration_since(wrap).unwrap().as_secs_f64().round(),
            5.0
        );
    }

    #[test]
    fn poll_intervals_are_per_device() {
        let h = health();
        let now = Instant::now();
        for (n, t) in [(1, 0.0), (2, 10.0), (1, 1024.0), (2, 20.0), (1, 2048.0)] {
            h.observe("meters", &sample(device(n), t, 0.0), now);
        }
        assert_eq!(h.polls.with_label_values(&["meters"]).get_sample_count(), 3);
        assert_eq!(count_le(&h.polls, "meters", 16.0), 1, "device 2: 10 s");
        assert_eq!(count_le(&h.polls, "meters", 1024.0), 3, "device 1: 1024 s");
    }

    #[test]
    fn clients_count_distinct_devices_of_the_last_hour() {
        let h = health();
        h.set_groups(["meters".to_string(), "cameras".to_string()]);
        let start = Instant::now();
        h.observe("meters", &sample(device(1), 0.0, 0.0), start);
        h.observe("meters", &sample(device(1), 10.0, 0.0), start);
        let counts = |after: u64| h.clients(start + Duration::from_secs(after));
        assert_eq!(counts(60)["meters"], 1);
        assert_eq!(counts(60)["cameras"], 0, "every group of the policy");
        h.observe(
            "meters",
            &sample(device(2), 1800.0, 0.0),
            start + Duration::from_secs(1800),
        );
        assert_eq!(counts(1800)["meters"], 2);
        assert_eq!(counts(3_700)["meters"], 1, "device 1 left the window");
        assert_eq!(counts(5_500)["meters"], 0);
        // A device's group is the one of its last request.
        h.observe(
            "cameras",
            &sample(device(2), 1900.0, 0.0),
            start + Duration::from_secs(1900),
        );
        assert_eq!(counts(1900)["meters"], 1);
        assert_eq!(counts(1900)["cameras"], 1);
    }

    #[test]
    fn the_table_is_capped_and_counts_what_it_cannot_hold() {
        let h = health();
        let start = Instant::now();
        for n in 0..MAX_TRACKED_DEVICES as u32 {
            h.observe("meters", &sample(device(n), 0.0, 1.0), start);
        }
        let late = start + Duration::from_secs(10);
        let newcomer = device(MAX_TRACKED_DEVICES as u32);
        h.observe("meters", &sample(newcomer, 10.0, 1.0), late);
        assert_eq!(h.untracked.get(), 1);
        assert_eq!(h.clients(late)["meters"], MAX_TRACKED_DEVICES as u64);
        // A day later the old devices are forgotten and make room.
        let next_day = start + FORGET_AFTER + Duration::from_secs(1);
        h.observe("meters", &sample(newcomer, 86_401.0, 1.0), next_day);
        assert_eq!(h.untracked.get(), 1);
        assert_eq!(h.clients(next_day)["meters"], 1);
    }

    #[test]
    fn a_full_table_is_swept_at_most_once_a_minute() {
        let h = health();
        let start = Instant::now();
        for n in 0..MAX_TRACKED_DEVICES as u32 {
            h.observe("meters", &sample(device(n), 0.0, 1.0), start);
        }
        let mut now = start + FORGET_AFTER - Duration::from_secs(30);
        h.observe("meters", &sample(device(1_000_000), 0.0, 1.0), now);
        assert_eq!(h.untracked.get(), 1, "swept, nothing forgotten yet");
        now += Duration::from_secs(31);
        h.observe("meters", &sample(device(1_000_001), 0.0, 1.0), now);
        assert_eq!(h.untracked.get(), 2, "no second sweep within a minute");
        now += Duration::from_secs(60);
        h.observe("meters", &sample(device(1_000_002), 0.0, 1.0), now);
        assert_eq!(h.untracked.get(), 2, "the next sweep made room");
    }

    #[test]
    fn largest_offsets_first_and_skew_hints_beyond_five_minutes() {
        let h = health();
        let now = Instant::now();
        for (n, offset) in [(1, 0.01), (2, -86_400.0), (3, 301.0), (4, 299.0)] {
            told_twice(&h, "meters", device(n), offset, now);
        }
        let top = h.largest_offsets(2, now);
        assert_eq!(
            top.iter().map(|d| d.address).collect::<Vec<_>>(),
            [device(2), device(3)]
        );
        assert_eq!(top[0].group, "meters");
        assert_eq!(top[0].last_seen_unix, T0.as_secs() + 64);
        assert!(h.clock_skew(device(3), now).is_some());
        assert!(h.clock_skew(device(4), now).is_none());
        assert!(h.clock_skew(device(1), now).is_none());
        assert!(h.clock_skew(device(9), now).is_none(), "never seen");
    }
}
