//! What the daemon tells systemd: readiness and reloads (`Type=notify`), a
//! one-line `STATUS=` for `systemctl status`, and watchdog pings
//! (`WatchdogSec=`), all through `$NOTIFY_SOCKET` (sd_notify(3)).

use std::time::Duration;

/// Tells systemd (`Type=notify`) about our state through `$NOTIFY_SOCKET`.
/// Never blocks: if the manager is not reading, the message is dropped
/// rather than stalling the daemon.
pub fn notify(state: &str) {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(name)?
            }
            None => SocketAddr::from_pathname(&path)?,
        };
        socket.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    })();
    if let Err(e) = result {
        tracing::debug!("sd_notify {state:?}: {e}");
    }
}

/// CLOCK_MONOTONIC in microseconds, which systemd wants with RELOADING=1.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// The `STATUS=` line `systemctl status` shows, e.g.
/// `generation 3 (commit abc123), attached: eth1 xdp-native`.
pub fn status_line(generation: u64, commit: Option<&str>, attached: &[(String, String)]) -> String {
    let commit = match commit {
        Some(c) if !c.is_empty() => c,
        _ => "none",
    };
    let attached = if attached.is_empty() {
        "none".to_string()
    } else {
        attached
            .iter()
            .map(|(name, how)| format!("{name} {how}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("generation {generation} (commit {commit}), attached: {attached}")
}

/// How often to send `WATCHDOG=1`: half the interval systemd set in
/// `$WATCHDOG_USEC`, when the watchdog is meant for this process
/// (`$WATCHDOG_PID` is ours or unset). `None`: no watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// `WATCHDOG=1` pings for systemd (`WatchdogSec=`). The main loop's task
/// sends them, also while it waits for a reload: a stuck loop stops
/// pinging, and systemd restarts it.
pub struct Watchdog(Option<tokio::time::Interval>);

impl Watchdog {
    /// Pings every [`watchdog_interval`]; never, without a watchdog.
    pub fn from_env() -> Watchdog {
        Watchdog(watchdog_interval().map(|every| {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        }))
    }

    /// How often it pings, if it does.
    pub fn period(&self) -> Option<Duration> {
        self.0.as_ref().map(tokio::time::Interval::period)
    }

    /// Waits for the next ping and sends it. Never finishes without a
    /// watchdog, so it can sit in any `select!`.
    pub async fn ping(&mut self) {
        match &mut self.0 {
            Some(interval) => {
                interval.tick().await;
                notify("WATCHDOG=1");
            }
            None => std::future::pending().await,
        }
    }
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, own: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_the_interval_for_its_own_pid() {
        let half = Some(Duration::from_millis(15_000));
        assert_eq!(watchdog_interval_from(Some("30000000"), None, 7), half);
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("x"), None, 7), None);
    }

    #[test]
    fn the_status_line_names_generation_commit_and_attachments() {
        assert_eq!(
            status_line(3, Some("abc123"), &[("eth1".into(), "xdp-native".into())]),
            "generation 3 (commit abc123), attached: eth1 xdp-native"
        );
        assert_eq!(
            status_line(0, None, &[]),
            "generation 0 (commit none), attached: none"
        );
    }
}
