//! The learned addresses across a restart of the controller: the sweeper
//! writes the live ones to `dns.leases-file` whenever they change (at most
//! once a second), and a starting forwarder learns them again, each checked
//! against the policy now in force, until its expiry. Devices keep the
//! answers they cached through a restart or an upgrade; without this their
//! FQDN rules would open nothing until they asked again.
//!
//! Expiries are written in wall-clock time (`expires_at_unix`): the file
//! may outlive the monotonic clock's epoch (a reboot). The file is a cache:
//! unreadable or malformed, it is ignored with a warning, and nothing is
//! learned from it.

use std::{
    io::Read as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    config::Config,
    control::{Lease, unix_now},
    datapath::learned::{LearnedAddress, MAX_LEARNED, monotonic_ns},
};

/// The largest file read back: every address a slot holds, generously.
const MAX_FILE_BYTES: u64 = MAX_LEARNED as u64 * 512;

/// `dns.leases-file`, or `dns-leases.json` beside the control socket.
pub fn path_of(config: &Config) -> PathBuf {
    config
        .dns
        .leases_file
        .clone()
        .unwrap_or_else(|| config.control_socket.with_file_name("dns-leases.json"))
}

/// The learned addresses with their expiries in wall-clock time (the
/// dataplane keeps `CLOCK_MONOTONIC`), as the control socket and the file
/// give them.
pub fn leases(learned: Vec<LearnedAddress>) -> Vec<Lease> {
    let now_ns = monotonic_ns();
    let now_unix = unix_now();
    learned
        .into_iter()
        .map(|l| {
            let expires_in_s = l.expires_ns.saturating_sub(now_ns).div_ceil(1_000_000_000);
            Lease {
                group: l.group,
                address: l.addr,
                rule_id: l.rule,
                name: l.name,
                expires_at_unix: now_unix + expires_in_s,
                expires_in_s,
            }
        })
        .collect()
}

/// A lease read back, to be learned again: (group, rule), address, name,
/// and its expiry on `CLOCK_MONOTONIC`.
#[derive(Debug)]
pub struct Restored {
    pub group: String,
    pub rule: String,
    pub addr: IpAddr,
    pub name: String,
    pub expires_ns: u64,
}

/// Writes `leases` to `path` atomically (a temporary file renamed over it),
/// readable by the daemon's user only.
pub fn save(path: &Path, leases: &[Lease]) -> Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec(leases)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename onto {}", path.display()))
}

/// The leases in `path` that have not expired, on this boot's monotonic
/// clock, none living longer than `longest` from now (what an answer can
/// give: `dns.max-ttl` plus `dns.grace`; a file written by hand or under
/// another configuration cannot extend a lease). No file: none.
pub fn load(path: &Path, longest: Duration) -> Result<Vec<Restored>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
    };
    let mut text = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        bail!("{}: over {MAX_FILE_BYTES} bytes", path.display());
    }
    let leases: Vec<Lease> =
        serde_json::from_slice(&text).with_context(|| format!("parse {}", path.display()))?;
    let (now_unix, now_ns) = (unix_now(), monotonic_ns());
    Ok(leases
        .into_iter()
        .filter(|l| l.expires_at_unix > now_unix)
        .map(|l| Restored {
            expires_ns: now_ns
                + Duration::from_secs(l.expires_at_unix - now_unix)
                    .min(longest)
                    .as_nanos() as u64,
            group: l.group,
            rule: l.rule_id,
            addr: l.address,
            name: l.name,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(address: &str, expires_at_unix: u64) -> Lease {
        Lease {
            group: "meters".into(),
            address: address.parse().unwrap(),
            rule_id: "iot".into(),
            name: "iot.example.com".into(),
            expires_at_unix,
            expires_in_s: 0,
        }
    }

    #[test]
    fn live_leases_come_back_and_expired_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dns-leases.json");
        let hour = Duration::from_secs(3_600);
        assert!(load(&path, hour).unwrap().is_empty(), "no file: nothing");
        let now = unix_now();
        save(
            &path,
            &[
                lease("203.0.113.10", now + 60),
                lease("203.0.113.11", now - 1),
            ],
        )
        .unwrap();
        let back = load(&path, hour).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].addr, "203.0.113.10".parse::<IpAddr>().unwrap());
        assert_eq!(
            (back[0].group.as_str(), back[0].rule.as_str()),
            ("meters", "iot")
        );
        let left = back[0].expires_ns - monotonic_ns();
        assert!(left <= 60_000_000_000 && left > 50_000_000_000, "{left}");
        // No lease outlives what an answer could give now.
        let short = load(&path, Duration::from_secs(10)).unwrap();
        assert!(short[0].expires_ns - monotonic_ns() <= 10_000_000_000);
    }

    #[test]
    fn a_malformed_or_oversized_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dns-leases.json");
        std::fs::write(&path, b"[{\"group\": 1}]").unwrap();
        let hour = Duration::from_secs(3_600);
        assert!(load(&path, hour).is_err());
        std::fs::write(&path, vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(load(&path, hour).unwrap_err().to_string().contains("over"));
    }
}
