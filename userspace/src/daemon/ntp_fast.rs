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

/// Drains the fast path's samples into the service's time health as they
/// arrive, until the service goes. Holds the service weakly, as above.
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
        let ring = guard.get_inner_mut();
        while let Some(record) = ring.next() {
            match decode_sample(&record) {
                Ok(s) => service.record_fast_path(s.source, s.received, s.transmit),
                Err(e) => tracing::warn!("NTP fast path sample: {e:#}"),
            }
        }
        guard.clear_ready();
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
