//! Prometheus metrics, served as text on `metrics.listen`.
//!
//! Controller events (reloads, generation) are ordinary `prometheus`
//! metrics. Kernel counters are read at scrape time by
//! [`DataplaneCollector`], per-CPU values summed; they never go backwards
//! because each rule, default and verdict keeps its kernel counter across
//! reloads and, pinned, across restarts (`collector.rs`). The endpoint
//! serving them is in `http.rs`.

mod collector;
mod http;

use anyhow::Result;
use prometheus::{
    Encoder as _, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub use collector::{DataplaneCollector, RuleLabels, ScrapeView};
pub use http::{bind, serve};

/// The log target of everything the metrics say, whichever file says it.
const LOG_TARGET: &str = "tollgate::metrics";

/// Label value of the pseudo-rule summing rules beyond the series limit.
pub const OTHER_RULES: &str = "_other";

/// Controller-side metrics and the registry everything is gathered from.
pub struct Metrics {
    registry: Registry,
    pub reloads: IntCounterVec,
    pub expectations_failed: IntCounter,
    pub generation: IntGauge,
    pub last_reload_timestamp: Gauge,
    pub last_reload_duration: Gauge,
    pub last_reload_success: IntGauge,
    pub policy_rules: IntGaugeVec,
    pub policy_info: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics> {
        let registry = Registry::new();
        let m = Metrics {
            reloads: IntCounterVec::new(
                Opts::new("tollgate_policy_reloads_total", "Policy reloads by result."),
                &["result"],
            )?,
            expectations_failed: IntCounter::new(
                "tollgate_policy_expectations_failed_total",
                "expect: cases of new policies that failed, on the model or on the kernel \
                 against the written slot; a policy with a failed case is never made live.",
            )?,
            generation: IntGauge::new(
                "tollgate_policy_generation",
                "Number of policies installed since the controller started.",
            )?,
            last_reload_timestamp: Gauge::new(
                "tollgate_policy_last_reload_timestamp_seconds",
                "Unix time of the last reload attempt.",
            )?,
            last_reload_duration: Gauge::new(
                "tollgate_policy_last_reload_duration_seconds",
                "Duration of the last reload attempt, load to swap.",
            )?,
            last_reload_success: IntGauge::new(
                "tollgate_policy_last_reload_success",
                "1 if the last reload attempt succeeded, else 0.",
            )?,
            policy_rules: IntGaugeVec::new(
                Opts::new(
                    "tollgate_policy_rules",
                    "Rules in the installed policy per group.",
                ),
                &["group"],
            )?,
            policy_info: IntGaugeVec::new(
                Opts::new(
                    "tollgate_policy_info",
                    "The installed policy's git commit (empty outside git).",
                ),
                &["commit"],
            )?,
            registry,
        };
        for r in ["success", "failure"] {
            m.reloads.with_label_values(&[r]);
        }
        let build = IntGaugeVec::new(
            Opts::new("tollgate_build_info", "Tollgate version and git commit."),
            &["version", "revision"],
        )?;
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("TOLLGATE_GIT_REVISION")])
            .set(1);
        m.registry.register(Box::new(build))?;
        m.registry.register(Box::new(m.reloads.clone()))?;
        m.registry
            .register(Box::new(m.expectations_failed.clone()))?;
        m.registry.register(Box::new(m.generation.clone()))?;
        m.registry
            .register(Box::new(m.last_reload_timestamp.clone()))?;
        m.registry
            .register(Box::new(m.last_reload_duration.clone()))?;
        m.registry
            .register(Box::new(m.last_reload_success.clone()))?;
        m.registry.register(Box::new(m.policy_rules.clone()))?;
        m.registry.register(Box::new(m.policy_info.clone()))?;
        // process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds, process_max_fds, process_start_time_seconds...
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(m)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every registered metric.
    pub fn render(&self) -> Result<String> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}
