//! Every metric family the daemon exports (with the NTP server on): the
//! contract dashboards, alerts and users' own queries rely on. Kept in one
//! place: `tests/tests/metrics.rs` checks it against a real scrape (exactly these
//! families, no more, no fewer), `tests/tests/deploy.rs` that the dashboard shows
//! every one and the alerts use no other.

pub const METRICS: &[&str] = &[
    "tollgate_packets_total",
    "tollgate_bytes_total",
    "tollgate_rule_packets_total",
    "tollgate_rule_bytes_total",
    "tollgate_rule_info",
    "tollgate_drops_total",
    "tollgate_dataplane_packets_total",
    "tollgate_passed_unfiltered_total",
    "tollgate_fragments_followed_total",
    "tollgate_flow_cache_hits_total",
    "tollgate_fragments_expired_total",
    "tollgate_fragments_over_quota_total",
    "tollgate_collector_errors_total",
    "tollgate_deny_events_suppressed_total",
    "tollgate_deny_events_lost_total",
    "tollgate_reject_replies_total",
    "tollgate_reject_unanswered_total",
    "tollgate_map_entries",
    "tollgate_map_capacity",
    "tollgate_policy_generation",
    "tollgate_policy_reloads_total",
    "tollgate_policy_expectations_failed_total",
    "tollgate_policy_last_reload_timestamp_seconds",
    "tollgate_policy_last_reload_duration_seconds",
    "tollgate_policy_last_reload_success",
    "tollgate_policy_rules",
    "tollgate_policy_info",
    "tollgate_dataplane_attached",
    "tollgate_build_info",
    "tollgate_ntp_requests_total",
    "tollgate_ntp_fast_path_total",
    "tollgate_ntp_refused_total",
    "tollgate_ntp_send_errors_total",
    "tollgate_ntp_stratum",
    "tollgate_ntp_leap_indicator",
    "tollgate_ntp_root_dispersion_seconds",
    "tollgate_ntp_root_delay_seconds",
    "tollgate_ntp_upstream_reachable",
    "tollgate_ntp_upstream_offset_seconds",
    "tollgate_ntp_last_sample_age_seconds",
    "tollgate_ntp_kernel_unsynchronized",
    "tollgate_ntp_kernel_maxerror_seconds",
    "tollgate_ntp_client_offset_seconds",
    "tollgate_ntp_client_poll_interval_seconds",
    "tollgate_ntp_clients",
    "tollgate_ntp_clients_untracked_total",
    "tollgate_ntp_fast_path_samples_lost_total",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

/// The histograms of [`METRICS`]: queries select their `_bucket`, `_sum`
/// and `_count` series rather than the family's own name.
pub const HISTOGRAMS: &[&str] = &[
    "tollgate_ntp_client_offset_seconds",
    "tollgate_ntp_client_poll_interval_seconds",
];

/// The family of [`METRICS`] or [`DNS_METRICS`] a series name in a query
/// belongs to: the name itself, or the histogram whose `_bucket`, `_sum` or
/// `_count` it is.
pub fn family_of(series: &str) -> Option<&'static str> {
    if let Some(family) = METRICS.iter().chain(DNS_METRICS).find(|m| **m == series) {
        return Some(family);
    }
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix))?;
    HISTOGRAMS.iter().find(|h| **h == base).copied()
}

/// The DNS forwarder's families, exported with `dns.listen` set:
/// `tests/tests/fqdn_e2e.rs` finds them in a real scrape; the dashboard shows
/// them and alerts may use them, as for [`METRICS`].
pub const DNS_METRICS: &[&str] = &[
    "tollgate_dns_queries_total",
    "tollgate_fqdn_learned_addresses",
];
