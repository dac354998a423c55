//! Deny and audit-deny events from the kernel's ring buffer, one log line
//! each (target `tollgate::deny`), and once a minute how many the rate
//! limit suppressed.
//!
//! The fields are what journald indexes under the `TOLLGATE_` prefix
//! (`TOLLGATE_GROUP=`, `TOLLGATE_RULE=`, `TOLLGATE_SRC=`, `TOLLGATE_DST=`,
//! `TOLLGATE_VERDICT=`, `TOLLGATE_LEARNED_BY=`, ...): see [`crate::logging::init_logging`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use anyhow::Result;
use tollgate_common::Stat;

use crate::{datapath::Dataplane, datapath::events, ntp::ClientHealth, policy::proto_name};

/// What a kernel counter stands for, to label deny events.
#[derive(Clone, Debug)]
pub struct CounterLabel {
    pub group: String,
    pub rule: String,
    pub file: String,
    pub line: usize,
}

/// Kernel counter → labels, for the current and the previous policy (an
/// event read just after a swap may name the previous one).
pub type Labels = Arc<RwLock<HashMap<u32, CounterLabel>>>;

/// Reads the deny event ring buffer until aborted. `clocks`, the NTP
/// server's time health when it runs, gives the `clock_skew` hints.
pub fn spawn(
    dataplane: Arc<Mutex<Dataplane>>,
    labels: Labels,
    clocks: Option<Arc<ClientHealth>>,
) -> Result<tokio::task::JoinHandle<()>> {
    let ring = dataplane.lock().expect("dataplane lock").take_events()?;
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut ring =
        unsafe { tokio::io::unix::AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
    Ok(tokio::spawn(async move {
        let mut suppressed = suppressed_total(&dataplane);
        let mut report = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let Ok(mut guard) = guard else { return };
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        match events::decode(&item) {
                            Ok(e) => {
                                let learned_by = dataplane
                                    .lock()
                                    .expect("dataplane lock")
                                    .learned_by(e.dst);
                                let skew = clocks
                                    .as_ref()
                                    .and_then(|c| c.clock_skew(e.src, Instant::now()));
                                log_event(
                                    &e,
                                    &labels.read().expect("labels lock"),
                                    &learned_by,
                                    skew,
                                );
                            }
                            Err(err) => tracing::warn!("deny event: {err:#}"),
                        }
                    }
                    guard.clear_ready();
                }
                _ = report.tick() => {
                    let now = suppressed_total(&dataplane);
                    if now > suppressed {
                        tracing::warn!("{} deny events suppressed by the rate limit in the last minute", now - suppressed);
                    }
                    suppressed = now;
                }
            }
        }
    }))
}

fn suppressed_total(dataplane: &Mutex<Dataplane>) -> u64 {
    dataplane
        .lock()
        .expect("dataplane lock")
        .stat(Stat::EventsSuppressed)
        .map_or(0, |c| c.packets)
}

/// Logs one event. The message is the verdict label (`deny`, `reject`,
/// `audit-deny`); the fields repeat it (`verdict`) beside the group, rule,
/// addresses, protocol name (`tcp`, `udp`, `icmp`, `icmpv6`, else the
/// number), port, where the rule is written and why it decided, and the
/// other groups the DNS forwarder learned the destination for (`learned_by`,
/// empty when none): a device trying an address another group resolved.
/// `clock_skew`, only there when the source's last confirmed NTP offset
/// is beyond five minutes (`SKEW_HINT` in `ntp/health.rs`), is that offset
/// in seconds (positive: its clock is behind): a wrong clock fails TLS in
/// ways that look like network faults.
pub fn log_event(
    e: &events::Event,
    labels: &HashMap<u32, CounterLabel>,
    learned_by: &[String],
    clock_skew: Option<f64>,
) {
    let unknown = CounterLabel {
        group: "?".into(),
        rule: "?".into(),
        file: String::new(),
        line: 0,
    };
    let l = labels.get(&e.counter).unwrap_or(&unknown);
    let verdict = e.verdict.label();
    let reason = e.reason.label();
    let port = e.dport.map_or_else(|| "-".to_string(), |p| p.to_string());
    let proto = proto_name(Some(e.proto));
    let at = if l.file.is_empty() {
        String::new()
    } else {
        format!("{}:{}", l.file, l.line)
    };
    let learned_by: Vec<&str> = learned_by
        .iter()
        .map(String::as_str)
        .filter(|g| *g != l.group)
        .collect();
    let learned_by = learned_by.join(",");
    tracing::info!(
        target: "tollgate::deny",
        group = %l.group,
        src = %e.src,
        dst = %e.dst,
        proto = %proto,
        port = %port,
        rule = %l.rule,
        at = %at,
        verdict,
        reason,
        fragment = e.fragment,
        learned_by = %learned_by,
        clock_skew = clock_skew.map(|s| (s * 1000.0).round() / 1000.0),
        "{verdict}"
    );
}
