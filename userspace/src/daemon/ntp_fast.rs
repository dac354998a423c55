//! Keeps the XDP NTP fast path's state current: at every refresh of the
//! advertised state (every poll) the NTP service's view goes into
//! `TG_NTP_STATE`; when the service stops refreshing, the state is
//! withdrawn and the program leaves every request to the server.

use std::sync::Weak;

use crate::{datapath::NtpFastMaps, ntp::NtpService};

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
