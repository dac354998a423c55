//! Keeps the XDP NTP fast path's state current: at every refresh of the
//! advertised state (every poll) the NTP service's view goes into
//! `TG_NTP_STATE`; when the service stops refreshing, the state is
//! withdrawn and the program leaves every request to the server. And
//! hands what it answered (`TG_NTP_SAMPLES`) to the service's time health,
//! and watches that the replies sent back on native XDP interfaces leave.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use aya::maps::{MapData, RingBuf};

use crate::{
    datapath::{Dataplane, NtpFastMaps, decode_sample},
    links::{XdpTx, xdp_tx_counts},
    ntp::NtpService,
};

/// Publishes until the service's refresh task ends or the service goes,
/// then withdraws. Holds the service weakly: its last owner stops it.
pub async fn keep_current(service: Weak<NtpService>, mut maps: NtpFastMaps) {
    let Some(mut refreshes) = service.upgrade().map(|s| s.refreshes()) else {
        return;
    };
    while let Some(state) = service.upgrade().and_then(|s| s.fast_state()) {
        if let Err(e) = maps.publish(&state) {
            tracing::warn!("cannot publish the NTP fast path's state: {e:#}");
        }
        if refreshes.changed().await.is_err() {
            break;
        }
    }
    if let Err(e) = maps.withdraw() {
        tracing::warn!("cannot withdraw the NTP fast path's state: {e:#}");
    }
}

/// The pause after each drain of the fast path's samples. The program
/// wakes the controller only when it had caught up with the ring, so the
/// pause makes a busy fast path wake it at most once per pause rather than
/// once per answer (a wake-up costs the answering CPU an irq_work and the
/// daemon a scheduling round); the ring holds 87 ms of answers at
/// 250 000 requests/s.
const NTP_SAMPLE_BATCH: std::time::Duration = std::time::Duration::from_millis(10);

/// Drains the fast path's samples into the service's time health as they
/// arrive, in batches, until the service goes. Holds the service weakly,
/// as above.
pub async fn record_samples(service: Weak<NtpService>, ring: RingBuf<MapData>) {
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut ring = match unsafe { tokio::io::unix::AsyncFd::register(ring) } {
        Ok(ring) => ring,
        Err(e) => {
            tracing::warn!("cannot watch the NTP fast path's samples: {e}");
            return;
        }
    };
    loop {
        let Ok(mut guard) = ring.readable_mut().await else {
            return;
        };
        let Some(service) = service.upgrade() else {
            return;
        };
        // Cleared before the drain: the program's wake-up for a record
        // that arrives after it then marks the ring ready again, and is
        // not cleared away.
        guard.clear_ready();
        drain(&service, guard.get_inner_mut());
        drop(service);
        tokio::time::sleep(NTP_SAMPLE_BATCH).await;
    }
}

fn drain(service: &NtpService, ring: &mut RingBuf<MapData>) {
    while let Some(record) = ring.next() {
        match decode_sample(&record) {
            Ok(s) => service.record_fast_path(s.source, s.received, s.transmit),
            Err(e) => tracing::warn!("NTP fast path sample: {e:#}"),
        }
    }
}

/// How often the native attachments' `XDP_TX` counts are read.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Leaves a native XDP interface to the server when its driver fails every
/// `XDP_TX` reply over a second (a veth whose peer runs no XDP program
/// drops them all: see `Dataplane::note_ntp_replies`), and says how to fix
/// it. Some failures among successes are a full ring under load, which
/// clients retry; the fast path stays. An interface comes back at its next
/// attach (restart, or the interface recreated).
pub async fn watch_replies(dataplane: Arc<Mutex<Dataplane>>) {
    let mut last: HashMap<(String, u32), XdpTx> = HashMap::new();
    let mut ticks = tokio::time::interval(WATCH_INTERVAL);
    loop {
        ticks.tick().await;
        let watched = match dataplane
            .lock()
            .expect("dataplane lock")
            .ntp_replies_to_watch()
        {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("NTP fast path: cannot list the interfaces it answers on: {e:#}");
                continue;
            }
        };
        last.retain(|key, _| watched.contains(key));
        for (interface, index) in watched {
            let now = match xdp_tx_counts(&interface) {
                Ok(Some(n)) => n,
                // The driver does not count them: nothing to watch.
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!("NTP fast path: {e:#}");
                    continue;
                }
            };
            let Some(before) = last.insert((interface.clone(), index), now) else {
                continue;
            };
            let failed = now.errors.saturating_sub(before.errors);
            if failed == 0 || now.sent > before.sent {
                continue;
            }
            match dataplane
                .lock()
                .expect("dataplane lock")
                .answer_ntp_on(index, false)
            {
                Ok(()) => tracing::warn!(
                    "NTP fast path off on {interface}: its driver failed to send all {failed} \
                     XDP_TX replies of the last second (native XDP on a veth needs an XDP \
                     program on the peer, e.g. `xdp-loader load -m native PEER xdp-pass.o`); \
                     the server answers there until the next attach"
                ),
                Err(e) => {
                    tracing::error!("NTP fast path: cannot turn it off on {interface}: {e:#}")
                }
            }
        }
    }
}
