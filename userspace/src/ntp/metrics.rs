//! The NTP server's Prometheus metrics, registered into the controller's
//! registry, and the numbers `tollgate status` shows.
//!
//! Request counters are labelled by policy group, so cardinality is bounded
//! by the groups a policy defines (plus `_unknown` and `allow-list`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::SystemTime,
};

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;

use super::{kernel_clock::KernelClock, reference::Advertised};

/// Why a request got no reply (`tollgate_ntp_refused_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The source is in no policy group and not in `ntp.allow`.
    NotMember,
    /// The source's rate limit (its leak did not pick this request).
    SourceRate,
    /// The global cap (`ntp.max-rate`).
    GlobalRate,
    /// Larger than any request Tollgate answers.
    Oversize,
    Truncated,
    NotClientMode,
    UnsupportedVersion,
    Unparsable,
    ReplyTooLarge,
}

impl Refusal {
    const ALL: [Refusal; 9] = [
        Refusal::NotMember,
        Refusal::SourceRate,
        Refusal::GlobalRate,
        Refusal::Oversize,
        Refusal::Truncated,
        Refusal::NotClientMode,
        Refusal::UnsupportedVersion,
        Refusal::Unparsable,
        Refusal::ReplyTooLarge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::NotMember => "not_member",
            Refusal::SourceRate => "source_rate",
            Refusal::GlobalRate => "global_rate",
            Refusal::Oversize => "oversize",
            Refusal::Truncated => "truncated",
            Refusal::NotClientMode => "not_client_mode",
            Refusal::UnsupportedVersion => "unsupported_version",
            Refusal::Unparsable => "unparsable",
            Refusal::ReplyTooLarge => "reply_too_large",
        }
    }
}

/// One group's request counters (`tollgate_ntp_requests_total{group, result}`).
#[derive(Clone)]
pub struct RequestCounters {
    pub served: IntCounter,
    pub rate_limited: IntCounter,
    pub denied: IntCounter,
    pub malformed: IntCounter,
}

/// One group's request counts, for `tollgate status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    pub served: u64,
    pub rate_limited: u64,
    pub denied: u64,
    pub malformed: u64,
}

pub struct NtpMetrics {
    requests: IntCounterVec,
    refused: Vec<IntCounter>,
    pub send_errors: IntCounter,
    stratum: IntGauge,
    leap_indicator: IntGauge,
    root_dispersion: Gauge,
    root_delay: Gauge,
    upstream_reachable: IntGauge,
    kernel_unsynchronized: IntGauge,
    kernel_maxerror: Gauge,
    upstream_offset: Gauge,
    last_sample_age: Gauge,
    groups: Mutex<HashMap<String, RequestCounters>>,
}

impl NtpMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        fn reg<T: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            metric: T,
        ) -> prometheus::Result<T> {
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        }
        let requests = reg(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "tollgate_ntp_requests_total",
                    "NTP requests by policy group and result (served, rate_limited, denied, malformed).",
                ),
                &["group", "result"],
            )?,
        )?;
        let refused_vec = reg(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "tollgate_ntp_refused_total",
                    "NTP requests that got no reply, by reason.",
                ),
                &["reason"],
            )?,
        )?;
        let refused = Refusal::ALL
            .iter()
            .map(|r| refused_vec.with_label_values(&[r.label()]))
            .collect();
        Ok(NtpMetrics {
            requests,
            refused,
            send_errors: reg(
                registry,
                IntCounter::new(
                    "tollgate_ntp_send_errors_total",
                    "NTP replies the kernel refused to send.",
                )?,
            )?,
            stratum: reg(
                registry,
                IntGauge::new("tollgate_ntp_stratum", "Stratum the NTP server advertises.")?,
            )?,
            leap_indicator: reg(
                registry,
                IntGauge::new(
                    "tollgate_ntp_leap_indicator",
                    "Leap indicator the NTP server advertises (3: unsynchronised, clients refuse the time).",
                )?,
            )?,
            root_dispersion: reg(
                registry,
                Gauge::new(
                    "tollgate_ntp_root_dispersion_seconds",
                    "Root dispersion the NTP server advertises.",
                )?,
            )?,
            root_delay: reg(
                registry,
                Gauge::new(
                    "tollgate_ntp_root_delay_seconds",
                    "Root delay the NTP server advertises.",
                )?,
            )?,
            upstream_reachable: reg(
                registry,
                IntGauge::new(
                    "tollgate_ntp_upstream_reachable",
                    "1 if an upstream server answered the last poll (always 1 for `reference: local`).",
                )?,
            )?,
            kernel_unsynchronized: reg(
                registry,
                IntGauge::new(
                    "tollgate_ntp_kernel_unsynchronized",
                    "1 if the kernel reports the host clock unsynchronised (STA_UNSYNC).",
                )?,
            )?,
            kernel_maxerror: reg(
                registry,
                Gauge::new(
                    "tollgate_ntp_kernel_maxerror_seconds",
                    "The kernel's maximum error estimate for the host clock.",
                )?,
            )?,
            upstream_offset: reg(
                registry,
                Gauge::new(
                    "tollgate_ntp_upstream_offset_seconds",
                    "Offset of the upstream's clock from the host's (upstream minus host) in the last good sample; 0 for `reference: local`.",
                )?,
            )?,
            last_sample_age: reg(
                registry,
                Gauge::new(
                    "tollgate_ntp_last_sample_age_seconds",
                    "Age of the last good upstream sample, as of the last poll (since the server started when there was none yet; 0 for `reference: local`).",
                )?,
            )?,
            groups: Mutex::new(HashMap::new()),
        })
    }

    /// The counters of one group label; created on first use, then cached.
    pub fn group(&self, label: &str) -> RequestCounters {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups
            .entry(label.to_string())
            .or_insert_with(|| {
                let c = |result: &str| self.requests.with_label_values(&[label, result]);
                RequestCounters {
                    served: c("served"),
                    rate_limited: c("rate_limited"),
                    denied: c("denied"),
                    malformed: c("malformed"),
                }
            })
            .clone()
    }

    pub fn refused(&self, reason: Refusal) -> &IntCounter {
        let index = Refusal::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every refusal is in ALL");
        &self.refused[index]
    }

    pub fn publish_reference(&self, advertised: &Advertised, reachable: bool) {
        self.stratum.set(advertised.stratum.into());
        self.leap_indicator.set(advertised.leap.code().into());
        self.root_delay.set(advertised.root_delay);
        self.root_dispersion
            .set(advertised.root_dispersion_at(SystemTime::now()));
        self.upstream_reachable.set(reachable.into());
    }

    pub fn publish_sample(&self, offset: f64, age: std::time::Duration) {
        self.upstream_offset.set(offset);
        self.last_sample_age.set(age.as_secs_f64());
    }

    pub fn publish_kernel(&self, kernel: &KernelClock) {
        self.kernel_unsynchronized.set(kernel.unsynchronized.into());
        self.kernel_maxerror.set(kernel.maxerror_seconds);
    }

    pub fn upstream_reachable(&self) -> bool {
        self.upstream_reachable.get() == 1
    }

    /// Request counts by group label.
    pub fn request_counts(&self) -> BTreeMap<String, RequestCounts> {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups
            .iter()
            .map(|(label, c)| {
                (
                    label.clone(),
                    RequestCounts {
                        served: c.served.get(),
                        rate_limited: c.rate_limited.get(),
                        denied: c.denied.get(),
                        malformed: c.malformed.get(),
                    },
                )
            })
            .collect()
    }

    /// Refusal counts by reason label.
    pub fn refusal_counts(&self) -> BTreeMap<&'static str, u64> {
        Refusal::ALL
            .iter()
            .zip(&self.refused)
            .map(|(r, c)| (r.label(), c.get()))
            .collect()
    }
}
