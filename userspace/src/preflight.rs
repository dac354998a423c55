//! Checks a configuration against this host before anything is loaded or
//! pinned: `tollgate run` and `tollgate run --check-config` both run them,
//! so the check rejects everything the run would.
//!
//! - Each configured interface that exists must be of a link type Tollgate
//!   can parse. One that does not exist yet is only a warning: VPN and modem
//!   interfaces appear later, and are attached when they do.
//! - `metrics.listen` must not be one of the device-facing addresses unless
//!   `metrics.allow-remote` says so: devices must not reach the metrics.
//! - What the configuration allows but probably does not mean
//!   ([`Config::warnings`]).

use anyhow::{Result, bail};

use crate::{addresses, config::Config, links};

/// Runs the checks; returns the warnings.
pub fn check(config: &Config) -> Result<Vec<String>> {
    let mut warnings = config.warnings();
    let present = links::snapshot()?;
    for name in &config.interfaces {
        match present.iter().find(|l| &l.name == name) {
            Some(link) => {
                link.kind()?;
            }
            None => warnings.push(format!(
                "interface {name} does not exist (yet): it is attached when it appears, and \
                 until then tollgate_dataplane_attached{{interface=\"{name}\"}} is 0"
            )),
        }
    }
    let listen = config.metrics.listen.ip();
    if !config.metrics.allow_remote && addresses::current(&config.interfaces)?.contains(&listen) {
        bail!(
            "metrics.listen {listen} is an address of a device-facing interface: devices \
             could read the metrics; use the management address, or set \
             metrics.allow-remote: true"
        );
    }
    Ok(warnings)
}
