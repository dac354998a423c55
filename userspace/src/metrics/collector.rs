//! The kernel's counters, read at scrape time by [`DataplaneCollector`]
//! and labelled with the installed policy's groups and rules
//! ([`ScrapeView`]).

use std::sync::{Arc, Mutex, RwLock};

use anyhow::Result;
use prometheus::{
    core::{Collector, Desc},
    proto::{self, MetricFamily, MetricType},
};
use tollgate_common::{Counter, Stat, Verdict};

use super::{LOG_TARGET, OTHER_RULES};
use crate::{
    datapath::{AttachMode, Dataplane},
    links::LinkKind,
    tables::CounterOwner,
};

/// One rule's labels, for its counters and its info series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleLabels {
    pub group: String,
    /// Stable rule id, or `default` / `builtin-ntp`.
    pub rule: String,
    pub owner: CounterOwner,
    /// allow | deny (for defaults: the default's verdict).
    pub action: &'static str,
    /// Where the rule is written; empty for defaults and the built-in.
    pub file: String,
    pub line: usize,
}

/// What the collector labels kernel counters with: the installed policy's
/// groups and rules, and the attach state. Replaced on every reload.
#[derive(Clone, Debug, Default)]
pub struct ScrapeView {
    pub groups: Vec<String>,
    /// One run per group, shared with the reload's label cache.
    pub rules: Vec<Arc<[RuleLabels]>>,
    /// Configured interfaces and the mode and link kind each is attached
    /// with, if it is.
    pub interfaces: Vec<(String, Option<(AttachMode, LinkKind)>)>,
}

/// Reads the dataplane's counters at scrape time.
pub struct DataplaneCollector {
    dataplane: Arc<Mutex<Dataplane>>,
    view: Arc<RwLock<ScrapeView>>,
    rule_series_limit: usize,
    descs: Vec<Desc>,
    /// Scrapes whose kernel counters could not be read.
    errors: std::sync::atomic::AtomicU64,
}

const FAMILIES: &[(&str, &str)] = &[
    (
        "tollgate_packets_total",
        "Packets by device group and verdict.",
    ),
    ("tollgate_bytes_total", "Bytes by device group and verdict."),
    (
        "tollgate_rule_packets_total",
        "Packets decided by each rule.",
    ),
    ("tollgate_rule_bytes_total", "Bytes decided by each rule."),
    (
        "tollgate_rule_info",
        "Where each rule is written (file, line) and its action.",
    ),
    ("tollgate_drops_total", "Packets dropped, by reason."),
    (
        "tollgate_dataplane_packets_total",
        "Packets the dataplane saw on the device-facing interfaces.",
    ),
    (
        "tollgate_passed_unfiltered_total",
        "Packets passed without a policy decision, by kind.",
    ),
    (
        "tollgate_fragments_followed_total",
        "Later IP fragments passed because their first fragment was allowed.",
    ),
    (
        "tollgate_fragments_expired_total",
        "Later IP fragments judged with the port unknown because their first fragment's verdict had outlived limits.fragment-lifetime.",
    ),
    (
        "tollgate_fragments_over_quota_total",
        "Allowed first fragments not remembered because their source was at limits.fragments-per-source.",
    ),
    (
        "tollgate_flow_cache_hits_total",
        "Always 0: there is no flow cache any more (every packet takes the decision, which costs what a cache hit did). Kept so that dashboards and alerts that read it keep working.",
    ),
    (
        "tollgate_reject_replies_total",
        "Answers sent to rejected packets, by kind: tcp_reset, icmp (IPv4 unreachable, code 13) or icmp6 (ICMPv6 unreachable, code 1).",
    ),
    (
        "tollgate_reject_unanswered_total",
        "Rejected packets dropped without an answer, by reason: rate_limit (over reject-replies.rate: a deny) or unanswerable (an ICMP error, RST, multicast, broadcast, later fragment, or IP options or extension headers under an ICMP answer).",
    ),
    (
        "tollgate_ntp_fast_path_total",
        "NTP requests to ntp.listen addresses seen by the XDP fast path, by result: answered (in XDP), passed (to the userspace server: not a plain NTPv3/v4 client request, no fresh state, or an interface not cleared for replies) or rate_limited (to the userspace server, whose limiter decides).",
    ),
    (
        "tollgate_ntp_fast_path_samples_lost_total",
        "Time-health samples of NTP requests the XDP fast path answered that did not fit its full ring (the replies were sent): these requests are missing from tollgate_ntp_client_offset_seconds and tollgate_ntp_clients.",
    ),
    (
        "tollgate_deny_events_suppressed_total",
        "Deny events not sent because of the per-CPU rate limit.",
    ),
    (
        "tollgate_deny_events_lost_total",
        "Deny events lost because the ring buffer was full.",
    ),
    (
        "tollgate_dataplane_attached",
        "1 when the dataplane is attached to the interface in that mode (link: ethernet or ip); 0 with mode and link \"none\" while it is not (missing, refused or failed).",
    ),
    (
        "tollgate_map_entries",
        "Entries in each BPF map: the policy maps (both slots) and counters as installed, the fragment cache (TG_FRAGS) counted at scrape time.",
    ),
    (
        "tollgate_map_capacity",
        "max_entries of each BPF map tollgate_map_entries reports, as limits sizes it.",
    ),
    (
        "tollgate_collector_errors_total",
        "Scrapes whose kernel counters could not be read (tollgate_dataplane_attached is exported regardless).",
    ),
];

impl DataplaneCollector {
    pub fn new(
        dataplane: Arc<Mutex<Dataplane>>,
        view: Arc<RwLock<ScrapeView>>,
        rule_series_limit: usize,
    ) -> Result<DataplaneCollector> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    vec![],
                    Default::default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DataplaneCollector {
            dataplane,
            view,
            rule_series_limit,
            descs,
            errors: Default::default(),
        })
    }

    fn gather(&self) -> Vec<MetricFamily> {
        let view = self.view.read().expect("scrape view lock").clone();
        let counters = self.read_counters(&view);
        if let Err(e) = &counters {
            tracing::warn!(target: LOG_TARGET, "reading dataplane counters: {e:#}");
            self.errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        export(
            &view,
            counters,
            self.errors.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Every family read from the kernel's counters.
    fn read_counters(&self, view: &ScrapeView) -> Result<Families> {
        let mut dp = self.dataplane.lock().expect("dataplane lock");
        let mut families = Families::default();

        for usage in dp.map_usage()? {
            let labels = [("map", usage.map)];
            families.gauge("tollgate_map_entries", &labels, usage.entries as f64);
            families.gauge("tollgate_map_capacity", &labels, usage.capacity as f64);
        }

        for group in &view.groups {
            for verdict in Verdict::ALL {
                let owner = CounterOwner::Verdict {
                    group: group.as_str().into(),
                    verdict,
                };
                let c = dp.counter_of(&owner)?.unwrap_or_default();
                let labels = [
                    ("group", group.as_str()),
                    ("verdict", verdict.metric_label()),
                ];
                families.counter("tollgate_packets_total", &labels, c.packets);
                families.counter("tollgate_bytes_total", &labels, c.bytes);
            }
        }

        let mut rules: Vec<(&RuleLabels, Counter)> = view
            .rules
            .iter()
            .flat_map(|group| group.iter())
            .map(|r| Ok((r, dp.counter_of(&r.owner)?.unwrap_or_default())))
            .collect::<Result<_>>()?;
        if rules.len() > self.rule_series_limit {
            rules.sort_by_key(|r| std::cmp::Reverse(r.1.packets));
        }
        let mut other: std::collections::BTreeMap<&str, Counter> = Default::default();
        for (i, (r, c)) in rules.iter().enumerate() {
            if i >= self.rule_series_limit {
                let o = other.entry(r.group.as_str()).or_default();
                o.packets += c.packets;
                o.bytes += c.bytes;
                continue;
            }
            let labels = [("group", r.group.as_str()), ("rule", r.rule.as_str())];
            families.counter("tollgate_rule_packets_total", &labels, c.packets);
            families.counter("tollgate_rule_bytes_total", &labels, c.bytes);
            let line = r.line.to_string();
            families.gauge(
                "tollgate_rule_info",
                &[
                    ("group", r.group.as_str()),
                    ("rule", r.rule.as_str()),
                    ("action", r.action),
                    ("file", r.file.as_str()),
                    ("line", line.as_str()),
                ],
                1.0,
            );
        }
        for (group, c) in other {
            let labels = [("group", group), ("rule", OTHER_RULES)];
            families.counter("tollgate_rule_packets_total", &labels, c.packets);
            families.counter("tollgate_rule_bytes_total", &labels, c.bytes);
        }

        // Deprecated, see its help text.
        families.counter("tollgate_flow_cache_hits_total", &[], 0);
        for stat in Stat::ALL {
            let c = dp.stat(stat)?;
            match stat {
                Stat::Seen => families.counter("tollgate_dataplane_packets_total", &[], c.packets),
                Stat::PassNonIp => families.counter(
                    "tollgate_passed_unfiltered_total",
                    &[("kind", "non_ip")],
                    c.packets,
                ),
                Stat::PassArp => families.counter(
                    "tollgate_passed_unfiltered_total",
                    &[("kind", "arp")],
                    c.packets,
                ),
                Stat::FragmentExpired => {
                    families.counter("tollgate_fragments_expired_total", &[], c.packets)
                }
                Stat::FragmentOverQuota => {
                    families.counter("tollgate_fragments_over_quota_total", &[], c.packets)
                }
                Stat::PassNeighborDiscovery => families.counter(
                    "tollgate_passed_unfiltered_total",
                    &[("kind", "neighbor_discovery")],
                    c.packets,
                ),
                Stat::FragmentCacheHit => {
                    families.counter("tollgate_fragments_followed_total", &[], c.packets)
                }
                Stat::EventsSuppressed => {
                    families.counter("tollgate_deny_events_suppressed_total", &[], c.packets)
                }
                Stat::EventsLost => {
                    families.counter("tollgate_deny_events_lost_total", &[], c.packets)
                }
                Stat::RejectReplyTcpReset | Stat::RejectReplyIcmp | Stat::RejectReplyIcmp6 => {
                    let kind = match stat {
                        Stat::RejectReplyTcpReset => "tcp_reset",
                        Stat::RejectReplyIcmp => "icmp",
                        _ => "icmp6",
                    };
                    families.counter(
                        "tollgate_reject_replies_total",
                        &[("kind", kind)],
                        c.packets,
                    )
                }
                Stat::RejectLimited => families.counter(
                    "tollgate_reject_unanswered_total",
                    &[("reason", "rate_limit")],
                    c.packets,
                ),
                Stat::RejectUnanswered => families.counter(
                    "tollgate_reject_unanswered_total",
                    &[("reason", "unanswerable")],
                    c.packets,
                ),
                Stat::NtpFastAnswered | Stat::NtpFastPassed | Stat::NtpFastLimited => {
                    let result = match stat {
                        Stat::NtpFastAnswered => "answered",
                        Stat::NtpFastPassed => "passed",
                        _ => "rate_limited",
                    };
                    families.counter(
                        "tollgate_ntp_fast_path_total",
                        &[("result", result)],
                        c.packets,
                    )
                }
                Stat::NtpSamplesLost => {
                    families.counter("tollgate_ntp_fast_path_samples_lost_total", &[], c.packets)
                }
                _ => {
                    let reason = stat.drop_reason().expect("every other stat is a drop");
                    families.counter("tollgate_drops_total", &[("reason", reason)], c.packets);
                }
            }
        }
        Ok(families)
    }
}

/// The exposition of one scrape: the counters when they could be read, and
/// always the attach state and the error count, so the detach alert can
/// fire whatever happened to the counters.
fn export(view: &ScrapeView, counters: Result<Families>, errors: u64) -> Vec<MetricFamily> {
    let mut families = counters.unwrap_or_default();
    for (interface, attached) in &view.interfaces {
        let (mode, link) = match attached {
            Some((mode, link)) => (mode.as_str(), link.as_str()),
            None => ("none", "none"),
        };
        families.gauge(
            "tollgate_dataplane_attached",
            &[("interface", interface), ("mode", mode), ("link", link)],
            if attached.is_some() { 1.0 } else { 0.0 },
        );
    }
    families.counter("tollgate_collector_errors_total", &[], errors);
    families.finish()
}

impl Collector for DataplaneCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gather()
    }
}

/// Builds metric families in `FAMILIES` order.
#[derive(Default)]
struct Families {
    metrics: std::collections::HashMap<&'static str, (MetricType, Vec<proto::Metric>)>,
}

impl Families {
    fn push(
        &mut self,
        name: &'static str,
        kind: MetricType,
        labels: &[(&str, &str)],
        m: proto::Metric,
    ) {
        let mut m = m;
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = proto::LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        );
        self.metrics
            .entry(name)
            .or_insert((kind, Vec::new()))
            .1
            .push(m);
    }

    fn counter(&mut self, name: &'static str, labels: &[(&str, &str)], value: u64) {
        let mut c = proto::Counter::default();
        c.set_value(value as f64);
        let mut m = proto::Metric::default();
        m.set_counter(c);
        self.push(name, MetricType::COUNTER, labels, m);
    }

    fn gauge(&mut self, name: &'static str, labels: &[(&str, &str)], value: f64) {
        let mut g = proto::Gauge::default();
        g.set_value(value);
        let mut m = proto::Metric::default();
        m.set_gauge(g);
        self.push(name, MetricType::GAUGE, labels, m);
    }

    fn finish(mut self) -> Vec<MetricFamily> {
        FAMILIES
            .iter()
            .filter_map(|(name, help)| {
                let (kind, metrics) = self.metrics.remove(name)?;
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(kind);
                f.set_metric(metrics);
                Some(f)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder as _, TextEncoder};

    use super::*;

    fn render(families: &[MetricFamily]) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(families, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_attached_gauge_survives_a_failed_counter_read() {
        let view = ScrapeView {
            interfaces: vec![
                ("tun0".into(), Some((AttachMode::XdpGeneric, LinkKind::Ip))),
                ("wg0".into(), None),
            ],
            ..ScrapeView::default()
        };
        let text = render(&export(&view, Err(anyhow::anyhow!("map read failed")), 3));
        assert!(
            text.contains(
                "tollgate_dataplane_attached{interface=\"tun0\",mode=\"xdp-generic\",link=\"ip\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tollgate_dataplane_attached{interface=\"wg0\",mode=\"none\",link=\"none\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains("tollgate_collector_errors_total 3"), "{text}");
        assert!(!text.contains("tollgate_drops_total"), "{text}");
    }
}
