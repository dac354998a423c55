//! The controller's configuration file (`tollgate run --config FILE`).
//!
//! Keys are kebab-case and unknown keys are errors. Every error carries
//! file:line:col. Structural errors come from yaml_serde; cross-field checks
//! run in `TryFrom` conversions during deserialisation, so they carry the
//! position of the mapping they concern.
//!
//! The sections with rules of their own have their own files: `limits.rs`,
//! `ntp.rs`, `dns.rs` and `ethertypes.rs` (`pass-ethertypes`).

mod dns;
mod ethertypes;
mod limits;
mod ntp;
#[cfg(test)]
mod tests;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::diagnostic::{Diagnostic, quote, validated_map};

pub use dns::{DnsConfig, DnsFilter, DnsRateLimit};
pub use limits::Limits;
pub use ntp::{
    DEFAULT_NTP_MAX_RATE, DEFAULT_UPSTREAM, MAX_NTP_POLL_INTERVAL, MAX_NTP_WORKERS,
    MIN_NTP_POLL_INTERVAL, NtpConfig, NtpRateLimit, NtpReference,
};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/tollgate/tollgate.yaml";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Device-facing interfaces the dataplane attaches to.
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub attach: AttachPolicy,
    /// The policy directory (a git checkout), watched for changes.
    pub policy_dir: PathBuf,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(
        default,
        deserialize_with = "validated_map::<_, ntp::RawNtpConfig, NtpConfig>"
    )]
    pub ntp: NtpConfig,
    #[serde(
        default,
        deserialize_with = "validated_map::<_, dns::RawDnsConfig, DnsConfig>"
    )]
    pub dns: DnsConfig,
    #[serde(default)]
    pub deny_events: DenyEventsConfig,
    #[serde(default)]
    pub reject_replies: RejectRepliesConfig,
    #[serde(default)]
    pub on_exit: OnExit,
    /// Where the program, links and maps are pinned (bpffs).
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// Unix socket `tollgate status` asks.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    #[serde(default)]
    pub limits: Limits,
    /// Non-IP EtherTypes passed on purpose on Ethernet links. ARP always
    /// passes; every other non-IP frame is dropped (`reason="non_ip"`).
    #[serde(default, deserialize_with = "ethertypes::deserialize")]
    pub pass_ethertypes: Vec<u16>,
}

/// Which attach modes to try, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachPolicy {
    /// Native XDP, else generic XDP, else TC.
    #[default]
    Auto,
    XdpNative,
    XdpGeneric,
    Tc,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint; loopback by default.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
    /// Most rules exported with their own `tollgate_rule_*` series; beyond
    /// it, the busiest rules are exported and the rest summed per group as
    /// `rule="_other"`, bounding cardinality for very large policies.
    #[serde(default = "default_rule_series_limit")]
    pub rule_series_limit: usize,
    /// Allows `listen` on a wildcard or a device-facing address, which
    /// devices could reach.
    #[serde(default)]
    pub allow_remote: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
            rule_series_limit: default_rule_series_limit(),
            allow_remote: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DenyEventsConfig {
    /// Deny events per second per CPU before suppression (0: none).
    #[serde(default = "default_event_rate")]
    pub rate: u32,
    /// Events a CPU may send in a burst above the rate (default: `rate`).
    pub burst: Option<u32>,
}

impl Default for DenyEventsConfig {
    fn default() -> Self {
        DenyEventsConfig {
            rate: default_event_rate(),
            burst: None,
        }
    }
}

/// The answers to rejected packets (TCP RST, ICMP unreachable), limited
/// per CPU so that a device hammering a rejected destination cannot make the
/// gateway transmit at line rate. Past the limit a reject is a deny.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RejectRepliesConfig {
    /// Replies per second per CPU (0: none, every reject is a deny).
    #[serde(default = "default_reject_rate")]
    pub rate: u32,
    /// Replies a CPU may send in a burst above the rate (default: `rate`).
    pub burst: Option<u32>,
}

impl Default for RejectRepliesConfig {
    fn default() -> Self {
        RejectRepliesConfig {
            rate: default_reject_rate(),
            burst: None,
        }
    }
}

fn default_reject_rate() -> u32 {
    100
}

/// What happens to the dataplane when the controller exits cleanly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnExit {
    /// Filtering continues with the last policy; a restart re-adopts it.
    #[default]
    Keep,
    /// Detach and unpin everything.
    Detach,
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from(tollgate_common::PIN_DIR)
}
/// Where `tollgate run` listens for `tollgate status` by default.
pub fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/tollgate/control.sock")
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9187))
}
fn default_rule_series_limit() -> usize {
    10_000
}
fn default_event_rate() -> u32 {
    100
}

/// A configuration file larger than this is not one.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl Config {
    /// Reads and validates a configuration file (a regular file of at most
    /// 1 MiB).
    pub fn load(path: &Path) -> Result<Config, Diagnostic> {
        use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
        let unreadable =
            |e: std::io::Error| Diagnostic::error(path, 0, 0, "", format!("cannot read: {e}"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() || meta.len() > MAX_CONFIG_BYTES {
            return Err(Diagnostic::error(
                path,
                0,
                0,
                "",
                format!("not a regular file of at most {MAX_CONFIG_BYTES} bytes"),
            ));
        }
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES)
            .read_to_string(&mut text)
            .map_err(unreadable)?;
        Self::parse(path, &text)
    }

    /// Parses configuration text; `path` only labels errors. Everything
    /// that can be checked without the host is checked here, so `run`,
    /// `run --check-config` and `check --config` agree.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Diagnostic> {
        // The bounds policy files have: no deep nesting, no aliases.
        let positions = crate::policy::positions::Positions::index(text);
        if let Some((mark, field, message)) = positions.problems().iter().find(|(_, field, _)| {
            positions.refuses_parsing() || !field.starts_with("pass-ethertypes")
        }) {
            return Err(Diagnostic::error(
                path,
                mark.line,
                mark.column,
                field,
                message.clone(),
            ));
        }
        let config: Config =
            yaml_serde::from_str(text).map_err(|e| Diagnostic::from_yaml(path, &e))?;
        let at = |field: &str| {
            let mark = positions.value(field);
            let field = field.to_string();
            move |message: String| Diagnostic::error(path, mark.line, mark.column, &field, message)
        };
        if config.interfaces.is_empty() {
            return Err(Diagnostic::error(
                path,
                0,
                0,
                "interfaces",
                "name at least one device-facing interface".into(),
            ));
        }
        for (i, name) in config.interfaces.iter().enumerate() {
            let field = format!("interfaces[{i}]");
            check_interface_name(name).map_err(at(&field))?;
            if config.interfaces[..i].contains(name) {
                return Err(at(&field)(format!("{} is listed twice", quote(name))));
            }
        }
        config
            .limits
            .check()
            .map_err(|(field, message)| at(field)(message))?;
        let listen = config.metrics.listen.ip();
        if listen.is_unspecified() && !config.metrics.allow_remote {
            return Err(at("metrics.listen")(format!(
                "{listen} listens on every address, the device-facing ones included; use the \
                 management address, or set metrics.allow-remote: true"
            )));
        }
        for (field, p) in [
            ("policy-dir", &config.policy_dir),
            ("pin-dir", &config.pin_dir),
            ("control-socket", &config.control_socket),
        ] {
            if !p.is_absolute() {
                return Err(at(field)(format!(
                    "{} is not an absolute path",
                    p.display()
                )));
            }
        }
        if !config.pin_dir.starts_with("/sys/fs/bpf") {
            return Err(at("pin-dir")(format!(
                "{} is not under /sys/fs/bpf (bpffs)",
                config.pin_dir.display()
            )));
        }
        if let Ok(meta) = std::fs::symlink_metadata(&config.control_socket) {
            use std::os::unix::fs::FileTypeExt as _;
            if !meta.file_type().is_socket() {
                return Err(at("control-socket")(format!(
                    "{} exists and is not a socket; it would be replaced",
                    config.control_socket.display()
                )));
            }
        }
        Ok(config)
    }

    /// What is allowed but probably not meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.limits.flow_cache.is_some() {
            out.push(
                "limits.flow-cache is obsolete and ignored: there is no flow cache any more \
                 (every packet takes the full decision); remove the key"
                    .into(),
            );
        }
        if self.ntp.allow.iter().any(|net| net.prefix_len() == 0) {
            out.push(
                "ntp.allow covers every address: anyone who can reach ntp.listen gets the time"
                    .into(),
            );
        }
        let limit = self.ntp.rate_limit;
        if !self.ntp.listen.is_empty() && (limit.interval < 0 || limit.burst > 256) {
            out.push(format!(
                "ntp.rate-limit (interval {}, burst {}) lets a source get more than one reply a \
                 second: it is effectively off against a flood",
                limit.interval, limit.burst
            ));
        }
        out
    }
}

/// A Linux interface name: 1-15 bytes, no '/', ':' or whitespace, not `.`
/// or `..` (what the kernel accepts for a new interface).
fn check_interface_name(name: &str) -> Result<(), String> {
    let ok = (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not an interface name (1-15 bytes, no '/', ':' or spaces)",
            quote(name)
        ))
    }
}
