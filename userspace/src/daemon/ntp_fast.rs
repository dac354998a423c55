//! Keeps the XDP NTP fast path's state current: at every refresh of the
//! advertised state (every poll) the NTP service's view goes into
//! `TG_NTP_STATE`; when the service stops refreshing, the state is
//! withdrawn and the program leaves every request to the server. And
//! hands what it answered (`TG_NTP_SAMPLES`) to the service's time health.

use std::sync::Weak;

use aya::maps::{MapData, RingBuf};

use crate::{
    datapath::{NtpFastMaps, decode_sample},
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
