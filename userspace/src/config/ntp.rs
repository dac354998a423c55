//! `ntp:`: the private NTP endpoint, as written ([`RawNtpConfig`]) and
//! validated ([`NtpConfig`]).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use ipnet::IpNet;
use serde::Deserialize;

/// The private NTP endpoint.
#[derive(Clone, Debug)]
pub struct NtpConfig {
    /// Addresses to serve on; also what the policy keyword `ntp` means.
    /// Empty: no NTP server.
    pub listen: Vec<SocketAddr>,
    pub reference: NtpReference,
    /// Longest time without a good upstream sample before advertising
    /// "unsynchronised" (leap indicator 3).
    pub holdover: Duration,
    /// How often the upstream servers are polled (`reference: upstream`).
    pub poll_interval: Duration,
    /// Sources answered besides the members of policy groups.
    pub allow: Vec<IpNet>,
    pub rate_limit: NtpRateLimit,
    /// Replies per second across all sources.
    pub max_rate: u32,
    /// Server sockets (and tasks) per listen address, sharing it through
    /// SO_REUSEPORT; more than one only pays on gateways with cores to spare.
    pub workers: u8,
    /// `fast-path: on`: the dataplane (XDP or TC) answers plain client
    /// requests of group members itself (`ebpf/program/src/ntp.rs`);
    /// everything unusual still reaches the server.
    pub fast_path: bool,
    /// `fast-path-virtual: on`: answer in XDP on native attachments to
    /// virtual interfaces (veth) too, whose peers must run an XDP program
    /// to receive the replies; off, those are left to the server.
    pub fast_path_virtual: bool,
}

/// Where the advertised time quality comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NtpReference {
    /// Poll these NTP servers (host:port) and advertise their stratum + 1.
    Upstream { servers: Vec<String> },
    /// Always synchronised at this stratum (isolated networks, labs).
    Local { stratum: u8 },
}

/// Per-source response rate limiting, with chrony's `ratelimit` semantics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NtpRateLimit {
    /// Minimum mean interval between replies to one source, as log2 seconds.
    #[serde(default = "default_rate_interval")]
    pub interval: i8,
    /// Replies a source may get in a burst above that rate.
    #[serde(default = "default_rate_burst")]
    pub burst: u32,
    /// One reply in 2^leak still goes out when limited (0 disables leaking),
    /// so a spoofed flood cannot lock a device out.
    #[serde(default = "default_rate_leak")]
    pub leak: u8,
}

impl Default for NtpRateLimit {
    fn default() -> Self {
        NtpRateLimit {
            interval: default_rate_interval(),
            burst: default_rate_burst(),
            leak: default_rate_leak(),
        }
    }
}

impl NtpConfig {
    /// The addresses the policy keyword `ntp` stands for.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.listen.iter().map(SocketAddr::ip).collect()
    }
}

impl Default for NtpConfig {
    fn default() -> Self {
        RawNtpConfig::default()
            .try_into()
            .expect("the default NTP configuration is valid")
    }
}

/// The NTP section as written; [`NtpConfig`] is its validated form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawNtpConfig {
    #[serde(default)]
    listen: Vec<SocketAddr>,
    #[serde(default)]
    reference: RawReference,
    servers: Option<Vec<String>>,
    stratum: Option<u8>,
    #[serde(default, with = "humantime_serde::option")]
    holdover: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    poll_interval: Option<Duration>,
    #[serde(default)]
    allow: Vec<IpNet>,
    #[serde(default)]
    rate_limit: NtpRateLimit,
    max_rate: Option<u32>,
    workers: Option<u8>,
    fast_path: Option<OnOff>,
    fast_path_virtual: Option<OnOff>,
}

/// `on` or `off` (YAML 1.1 booleans are accepted too).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OnOff {
    Bool(bool),
    Word(String),
}

impl OnOff {
    fn value(&self, key: &str) -> Result<bool, String> {
        match self {
            OnOff::Bool(b) => Ok(*b),
            OnOff::Word(w) if w == "on" => Ok(true),
            OnOff::Word(w) if w == "off" => Ok(false),
            OnOff::Word(w) => Err(format!("{key}: `{w}` is neither `on` nor `off`")),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawReference {
    #[default]
    Upstream,
    Local,
}

impl TryFrom<RawNtpConfig> for NtpConfig {
    type Error = String;

    fn try_from(raw: RawNtpConfig) -> Result<Self, String> {
        for addr in &raw.listen {
            if addr.ip().is_unspecified() {
                return Err(format!(
                    "listen: {addr} is a wildcard; give the private address devices use, \
                     it is also what the policy keyword `ntp` allows"
                ));
            }
        }
        let reference = match raw.reference {
            RawReference::Upstream => {
                if raw.stratum.is_some() {
                    return Err("stratum is only valid with `reference: local`".into());
                }
                let servers = raw
                    .servers
                    .unwrap_or_else(|| vec![DEFAULT_UPSTREAM.to_string()]);
                if servers.is_empty() {
                    return Err("servers: `reference: upstream` needs at least one server".into());
                }
                NtpReference::Upstream { servers }
            }
            RawReference::Local => {
                if raw.servers.is_some() {
                    return Err("servers is only valid with `reference: upstream`".into());
                }
                if raw.poll_interval.is_some() {
                    return Err("poll-interval is only valid with `reference: upstream`".into());
                }
                let stratum = raw
                    .stratum
                    .ok_or("`reference: local` needs `stratum: N` (1-15)")?;
                if !(1..=15).contains(&stratum) {
                    return Err(format!("stratum: {stratum} is not a valid stratum (1-15)"));
                }
                NtpReference::Local { stratum }
            }
        };
        let poll_interval = raw.poll_interval.unwrap_or(MAX_NTP_POLL_INTERVAL);
        if !(MIN_NTP_POLL_INTERVAL..=MAX_NTP_POLL_INTERVAL).contains(&poll_interval) {
            return Err(format!(
                "poll-interval: {} is out of range (1s..=16s: the advertised state is \
                 refreshed at least every 16 s)",
                humantime_serde::re::humantime::format_duration(poll_interval)
            ));
        }
        let rate_limit = raw.rate_limit;
        if !(-4..=12).contains(&rate_limit.interval) {
            return Err(format!(
                "rate-limit.interval: {} is out of range (-4..=12, log2 seconds)",
                rate_limit.interval
            ));
        }
        if rate_limit.burst == 0 {
            return Err("rate-limit.burst: must be at least 1".into());
        }
        if rate_limit.leak > 4 {
            return Err(format!(
                "rate-limit.leak: {} is out of range (0..=4, one reply in 2^leak)",
                rate_limit.leak
            ));
        }
        let workers = raw.workers.unwrap_or(1);
        if !(1..=MAX_NTP_WORKERS).contains(&workers) {
            return Err(format!(
                "workers: {workers} is out of range (1..={MAX_NTP_WORKERS})"
            ));
        }
        Ok(NtpConfig {
            listen: raw.listen,
            reference,
            holdover: raw.holdover.unwrap_or(Duration::from_secs(600)),
            poll_interval,
            allow: raw.allow,
            rate_limit,
            max_rate: raw.max_rate.unwrap_or(DEFAULT_NTP_MAX_RATE),
            workers,
            fast_path: match &raw.fast_path {
                Some(v) => v.value("fast-path")?,
                None => true,
            },
            fast_path_virtual: match &raw.fast_path_virtual {
                Some(v) => v.value("fast-path-virtual")?,
                None => false,
            },
        })
    }
}

/// The host's own NTP daemon, the default upstream.
pub const DEFAULT_UPSTREAM: &str = "127.0.0.1:123";
pub const DEFAULT_NTP_MAX_RATE: u32 = 200_000;
pub const MAX_NTP_WORKERS: u8 = 64;
pub const MIN_NTP_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Also the default: the advertised state must be at most 16 s old.
pub const MAX_NTP_POLL_INTERVAL: Duration = Duration::from_secs(16);

fn default_rate_interval() -> i8 {
    3
}
fn default_rate_burst() -> u32 {
    8
}
fn default_rate_leak() -> u8 {
    2
}
