//! The task that keeps the advertised state fresh: every poll interval it
//! polls the upstream servers (for `reference: upstream`), turns their
//! replies into the state [`reference`](super::reference) computes, and
//! publishes it to the server tasks and the metrics.
//!
//! The state is republished at every poll (at most every 16 s), so the
//! dispersion the server computes from it never starts from a stale base.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::watch;

use super::{
    kernel_clock,
    metrics::NtpMetrics,
    reference::{Advertised, Holdover, Sample},
    upstream::Poller,
};

/// The configured reference, ready to run.
pub enum ReferenceSource {
    Upstream { poller: Poller, holdover: Holdover },
    Local { stratum: u8 },
}

/// Refreshes the advertised state every `interval` (polling the upstream
/// first), publishes it to the server tasks and the metrics, and reads the
/// kernel's view of the clock alongside.
pub async fn run(
    mut source: ReferenceSource,
    interval: Duration,
    local_precision: f64,
    advertised: watch::Sender<Advertised>,
    metrics: Arc<NtpMetrics>,
) {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (state, reachable) = match &mut source {
            ReferenceSource::Local { stratum } => {
                (Advertised::local(*stratum, SystemTime::now()), true)
            }
            ReferenceSource::Upstream { poller, holdover } => {
                let outcomes = poller.poll().await;
                let reachable = outcomes.iter().any(|o| o.result.is_ok());
                holdover.update(
                    outcomes.iter().filter_map(|o| match o.result {
                        Ok((ip, reply)) => {
                            let sample = Sample::from_reply(ip, &reply, local_precision);
                            if sample.is_none() {
                                tracing::debug!(server = %o.server, ?reply, "upstream not usable");
                            }
                            sample
                        }
                        Err(ref e) => {
                            tracing::debug!(server = %o.server, "upstream poll failed: {e}");
                            None
                        }
                    }),
                    Instant::now(),
                );
                (
                    holdover.advertised(Instant::now(), SystemTime::now()),
                    reachable,
                )
            }
        };
        let previous = advertised.send_replace(state);
        if previous.leap != state.leap {
            tracing::info!(
                leap = state.leap.code(),
                stratum = state.stratum,
                reference = %state.reference,
                "NTP advertised state changed"
            );
        }
        metrics.publish_reference(&state, reachable);
        match &source {
            // No upstream: nothing to be off from, nothing to age.
            ReferenceSource::Local { .. } => metrics.publish_sample(0.0, Duration::ZERO),
            ReferenceSource::Upstream { holdover, .. } => {
                match holdover.last_sample(Instant::now()) {
                    Some((offset, age)) => metrics.publish_sample(offset, age),
                    // Never a good sample: as old as the server, so the age
                    // alert fires as it would after losing the upstream.
                    None => metrics.publish_sample(0.0, started.elapsed()),
                }
            }
        }
        match kernel_clock::read() {
            Ok(kernel) => metrics.publish_kernel(&kernel),
            Err(e) => tracing::warn!("cannot read the kernel clock status: {e}"),
        }
    }
}
