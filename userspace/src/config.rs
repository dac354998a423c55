//! The controller's configuration file (`tollgate run --config FILE`).
//!
//! Keys are kebab-case and unknown keys are errors. Every error carries
//! file:line:col. Structural errors come from yaml_serde; cross-field checks
//! run in `TryFrom` conversions during deserialisation, so they carry the
//! position of the mapping they concern.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::Deserialize;

use crate::diagnostic::{Diagnostic, quote, validated_map};

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
        deserialize_with = "validated_map::<_, RawNtpConfig, NtpConfig>"
    )]
    pub ntp: NtpConfig,
    #[serde(default)]
    pub deny_events: DenyEventsConfig,
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
    #[serde(default, deserialize_with = "ethertypes")]
    pub pass_ethertypes: Vec<u16>,
}

/// One `pass-ethertypes` entry: a number (`0x88cc` or `35020`) or a string
/// holding a hexadecimal one (`"0x88cc"`). Checked as it is read, so an
/// error carries the entry's own position.
struct EtherType(u16);

impl<'de> Deserialize<'de> for EtherType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = EtherType;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an EtherType (0x0600-0xffff, e.g. 0x88cc)")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<EtherType, E> {
                let t = u16::try_from(v).map_err(|_| {
                    E::custom(format!(
                        "pass-ethertypes: {v:#x} is not an EtherType (0x0600-0xffff)"
                    ))
                })?;
                check_ethertype(t).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<EtherType, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "pass-ethertypes: {v} is not an EtherType (0x0600-0xffff)"
                    ))),
                }
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EtherType, E> {
                v.strip_prefix("0x")
                    .or_else(|| v.strip_prefix("0X"))
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        E::custom(format!(
                            "pass-ethertypes: {v:?} is not an EtherType (0x0600-0xffff, e.g. 0x88cc)"
                        ))
                    })
                    .and_then(|n| self.visit_u64(n))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Refuses values that are not EtherTypes (below 0x0600 they are 802.3
/// lengths) and those Tollgate handles itself (IP, IPv6, ARP, VLAN tags).
fn check_ethertype(t: u16) -> Result<EtherType, String> {
    let reason = match t {
        ..0x0600 => "is an 802.3 length, not an EtherType (0x0600-0xffff)",
        0x0800 | 0x86dd => "is IP: it is always filtered by the policy",
        0x0806 => "is ARP: it always passes",
        0x8100 | 0x88a8 | 0x9100 => "is a VLAN tag: the frame inside it is judged",
        _ => return Ok(EtherType(t)),
    };
    Err(format!("pass-ethertypes: {t:#06x} {reason}"))
}

/// Reads `pass-ethertypes`: at most [`tollgate_common::MAX_PASS_ETHERTYPES`]
/// entries, none twice.
fn ethertypes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<u16>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of EtherTypes")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u16>, A::Error> {
            use serde::de::Error as _;
            let max = tollgate_common::MAX_PASS_ETHERTYPES as usize;
            let mut out: Vec<u16> = Vec::new();
            while let Some(EtherType(t)) = seq.next_element()? {
                if out.contains(&t) {
                    return Err(A::Error::custom(format!(
                        "pass-ethertypes: {t:#06x} is listed twice"
                    )));
                }
                if out.len() == max {
                    return Err(A::Error::custom(format!(
                        "pass-ethertypes: more than {max} entries"
                    )));
                }
                out.push(t);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Visitor)
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
struct RawNtpConfig {
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

/// Map capacities. A change takes effect at the next start: the maps are
/// rebuilt at the new size and the program is swapped atomically on the
/// pinned links (no filtering gap; the kernel counters restart from zero).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Exact device addresses (/32, /128) per policy.
    #[serde(default = "default_device_addresses")]
    pub device_addresses: u32,
    /// Device prefixes shorter than a host address per policy.
    #[serde(default = "default_device_prefixes")]
    pub device_prefixes: u32,
    /// (group, destination prefix) entries per policy.
    #[serde(default = "default_destinations")]
    pub destinations: u32,
    /// Per-rule counters (kernel memory: 16 bytes per CPU each).
    #[serde(default = "default_counters")]
    pub counters: u32,
    /// Rule records per policy: each distinct rule list of a destination
    /// prefix takes one per 8 entries (kernel memory: 104 bytes each, twice).
    #[serde(default = "default_rule_records")]
    pub rule_records: u32,
    /// Fragmented datagrams whose first fragment verdict is remembered.
    #[serde(default = "default_fragments")]
    pub fragments: u32,
    /// Allowed flows whose verdict is remembered, so that their later
    /// packets skip the group and destination lookups (least recently used
    /// go first; kernel memory: about 110 bytes each).
    #[serde(default = "default_flow_cache")]
    pub flow_cache: u32,
    /// How long the later fragments of an allowed first fragment follow its
    /// verdict; after that they are judged with the port unknown. The
    /// default is the kernel's own reassembly timeout.
    #[serde(default = "default_fragment_lifetime", with = "humantime_serde")]
    pub fragment_lifetime: Duration,
    /// Allowed first fragments one source may have remembered per
    /// fragment lifetime, so that one device cannot push every other
    /// device's datagrams out of the `fragments` cache.
    #[serde(default = "default_fragments_per_source")]
    pub fragments_per_source: u32,
    /// Bytes of one policy file.
    #[serde(default = "default_policy_file_bytes")]
    pub policy_file_bytes: u64,
    /// Bytes of all policy files together.
    #[serde(default = "default_policy_bytes")]
    pub policy_bytes: u64,
    /// Policy files in the policy directory.
    #[serde(default = "default_policy_files")]
    pub policy_files: usize,
    /// Directory levels below the policy directory.
    #[serde(default = "default_policy_depth")]
    pub policy_depth: usize,
    /// How long preparing a reload (read, validate, compile) may take; past
    /// it the reload fails and the last good policy stays in force.
    #[serde(default = "default_reload_timeout", with = "humantime_serde")]
    pub reload_timeout: Duration,
}

impl Limits {
    /// The bounds on reading the policy directory.
    pub fn read_limits(&self) -> crate::policy::ReadLimits {
        crate::policy::ReadLimits {
            file_bytes: self.policy_file_bytes,
            total_bytes: self.policy_bytes,
            files: self.policy_files,
            depth: self.policy_depth,
        }
    }

    /// Rejects limits the kernel would refuse or that could never work.
    pub fn validate(&self) -> Result<(), String> {
        for (what, value) in [
            ("device-addresses", self.device_addresses),
            ("device-prefixes", self.device_prefixes),
            ("destinations", self.destinations),
            ("counters", self.counters),
            ("rule-records", self.rule_records),
            ("fragments", self.fragments),
            ("flow-cache", self.flow_cache),
        ] {
            if value == 0 || value > 1 << 26 {
                return Err(format!(
                    "limits.{what}: {value} is out of range (1..=67108864)"
                ));
            }
        }
        let lifetime = self.fragment_lifetime;
        if !(Duration::from_secs(1)..=Duration::from_secs(120)).contains(&lifetime) {
            return Err(format!(
                "limits.fragment-lifetime: {lifetime:?} is out of range (1s..=120s; the kernel \
                 reassembles for 30s)"
            ));
        }
        if self.fragments_per_source > self.fragments {
            return Err(format!(
                "limits.fragments-per-source: {} is more than limits.fragments ({}): one source \
                 could fill the whole cache",
                self.fragments_per_source, self.fragments
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            device_addresses: default_device_addresses(),
            device_prefixes: default_device_prefixes(),
            destinations: default_destinations(),
            counters: default_counters(),
            rule_records: default_rule_records(),
            fragments: default_fragments(),
            flow_cache: default_flow_cache(),
            fragment_lifetime: default_fragment_lifetime(),
            fragments_per_source: default_fragments_per_source(),
            policy_file_bytes: default_policy_file_bytes(),
            policy_bytes: default_policy_bytes(),
            policy_files: default_policy_files(),
            policy_depth: default_policy_depth(),
            reload_timeout: default_reload_timeout(),
        }
    }
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
fn default_rate_interval() -> i8 {
    3
}
fn default_rate_burst() -> u32 {
    8
}
fn default_rate_leak() -> u8 {
    2
}
fn default_event_rate() -> u32 {
    100
}
fn default_device_addresses() -> u32 {
    tollgate_common::DEFAULT_DEVICE_EXACT_PER_SLOT
}
fn default_device_prefixes() -> u32 {
    tollgate_common::DEFAULT_DEVICE_PREFIXES_PER_SLOT
}
fn default_destinations() -> u32 {
    tollgate_common::DEFAULT_DESTINATIONS_PER_SLOT
}
fn default_counters() -> u32 {
    tollgate_common::DEFAULT_COUNTERS
}
fn default_rule_records() -> u32 {
    tollgate_common::DEFAULT_RULE_RECORDS_PER_SLOT
}
fn default_fragments() -> u32 {
    tollgate_common::DEFAULT_FRAGMENTS
}
fn default_flow_cache() -> u32 {
    tollgate_common::DEFAULT_FLOWS
}
fn default_fragment_lifetime() -> Duration {
    Duration::from_secs(30)
}
fn default_fragments_per_source() -> u32 {
    256
}
fn default_policy_file_bytes() -> u64 {
    crate::policy::ReadLimits::default().file_bytes
}
fn default_policy_bytes() -> u64 {
    crate::policy::ReadLimits::default().total_bytes
}
fn default_policy_files() -> usize {
    crate::policy::ReadLimits::default().files
}
fn default_policy_depth() -> usize {
    crate::policy::ReadLimits::default().depth
}
fn default_reload_timeout() -> Duration {
    Duration::from_secs(30)
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
        config.limits.validate().map_err(at("limits"))?;
        let timeout = config.limits.reload_timeout;
        if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&timeout) {
            return Err(at("limits.reload-timeout")(format!(
                "{} is out of range (100ms..=10m)",
                humantime_serde::re::humantime::format_duration(timeout)
            )));
        }
        if config.limits.policy_files == 0 || config.limits.policy_file_bytes == 0 {
            return Err(at("limits")(
                "policy-files and policy-file-bytes must be at least 1".into(),
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("tollgate.yaml"), text).map_err(|d| d.to_string())
    }

    #[test]
    fn the_documented_example_parses_with_defaults() {
        let c = parse(
            "interfaces: [eth1]\nattach: auto\npolicy-dir: /etc/tollgate/policies\n\
             metrics:\n  listen: 127.0.0.1:9187\nntp:\n  listen: [\"100.127.0.123:123\"]\n\
             deny-events:\n  rate: 100\non-exit: keep\n",
        )
        .unwrap();
        assert_eq!(c.interfaces, ["eth1"]);
        assert_eq!(c.attach, AttachPolicy::Auto);
        assert_eq!(c.ntp.addresses(), [IpAddr::from([100, 127, 0, 123])]);
        assert_eq!(
            c.ntp.reference,
            NtpReference::Upstream {
                servers: vec![DEFAULT_UPSTREAM.into()]
            }
        );
        assert_eq!(c.ntp.holdover, Duration::from_secs(600));
        assert_eq!(c.on_exit, OnExit::Keep);
        assert_eq!(c.pin_dir, Path::new("/sys/fs/bpf/tollgate"));
    }

    #[test]
    fn unknown_keys_are_errors_with_their_position() {
        let e = parse("interfaces: [eth1]\npolicy-dir: /p\nmetrics:\n  lisen: 1.2.3.4:5\n")
            .unwrap_err();
        assert!(
            e.starts_with("tollgate.yaml:4:3: metrics: unknown field `lisen`"),
            "{e}"
        );
    }

    #[test]
    fn local_reference_needs_a_valid_stratum() {
        let e =
            parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  reference: local\n").unwrap_err();
        assert!(
            e.contains("tollgate.yaml:4:3: ntp: `reference: local` needs"),
            "{e}"
        );
        let e =
            parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  reference: local\n  stratum: 16\n")
                .unwrap_err();
        assert!(e.contains("stratum: 16 is not a valid stratum"), "{e}");
        let c =
            parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  reference: local\n  stratum: 8\n")
                .unwrap();
        assert_eq!(c.ntp.reference, NtpReference::Local { stratum: 8 });
    }

    #[test]
    fn wildcard_ntp_listen_is_rejected() {
        let e = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  listen: [\"0.0.0.0:123\"]\n")
            .unwrap_err();
        assert!(e.contains("is a wildcard"), "{e}");
    }

    #[test]
    fn durations_are_human_readable() {
        let c = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  holdover: 90s\n").unwrap();
        assert_eq!(c.ntp.holdover, Duration::from_secs(90));
    }

    #[test]
    fn poll_interval_defaults_to_16s_and_is_bounded() {
        let c = parse("interfaces: [eth1]\npolicy-dir: /p\n").unwrap();
        assert_eq!(c.ntp.poll_interval, Duration::from_secs(16));
        let c = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  poll-interval: 2s\n").unwrap();
        assert_eq!(c.ntp.poll_interval, Duration::from_secs(2));
        let e =
            parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  poll-interval: 64s\n").unwrap_err();
        assert!(
            e.contains("ntp: poll-interval: 1m 4s is out of range"),
            "{e}"
        );
        let e = parse(
            "interfaces: [eth1]\npolicy-dir: /p\nntp:\n  reference: local\n  stratum: 8\n  \
             poll-interval: 4s\n",
        )
        .unwrap_err();
        assert!(e.contains("poll-interval is only valid with"), "{e}");
    }

    #[test]
    fn ntp_workers_default_to_one() {
        let c = parse("interfaces: [eth1]\npolicy-dir: /p\n").unwrap();
        assert_eq!(c.ntp.workers, 1);
        let c = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  workers: 4\n").unwrap();
        assert_eq!(c.ntp.workers, 4);
        let e = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  workers: 0\n").unwrap_err();
        assert!(
            e.contains("ntp: workers: 0 is out of range (1..=64)"),
            "{e}"
        );
    }

    #[test]
    fn pass_ethertypes_take_numbers_or_hex_strings_and_refuse_what_tollgate_parses() {
        let c = parse("interfaces: [eth1]\npolicy-dir: /p\n").unwrap();
        assert!(c.pass_ethertypes.is_empty());
        let c = parse(
            "interfaces: [eth1]\npolicy-dir: /p\npass-ethertypes: [0x88cc, \"0x8863\", 35143]\n",
        )
        .unwrap();
        assert_eq!(c.pass_ethertypes, [0x88cc, 0x8863, 0x8947]);
        for (bad, why) in [
            ("0x0800", "is IP"),
            ("0x86dd", "is IP"),
            ("0x0806", "is ARP"),
            ("0x8100", "is a VLAN tag"),
            ("0x05dc", "802.3 length"),
            ("0x10000", "is not an EtherType"),
            ("\"lldp\"", "is not an EtherType"),
            ("[0x88cc, 0x88cc]", "listed twice"),
        ] {
            let list = if bad.starts_with('[') {
                bad.to_string()
            } else {
                format!("[{bad}]")
            };
            let e = parse(&format!(
                "interfaces: [eth1]\npolicy-dir: /p\npass-ethertypes: {list}\n"
            ))
            .unwrap_err();
            assert!(
                e.contains("pass-ethertypes: ") && e.contains(why),
                "{bad}: {e}"
            );
            assert!(e.starts_with("tollgate.yaml:3:"), "{bad}: {e}");
        }
    }

    #[test]
    fn fragment_limits_default_to_the_kernel_reassembly_timeout() {
        let c = parse("interfaces: [eth1]\npolicy-dir: /p\n").unwrap();
        assert_eq!(c.limits.fragment_lifetime, Duration::from_secs(30));
        assert_eq!(c.limits.fragments_per_source, 256);
        let c = parse(
            "interfaces: [eth1]\npolicy-dir: /p\nlimits:\n  fragment-lifetime: 2s\n  fragments-per-source: 8\n",
        )
        .unwrap();
        assert_eq!(c.limits.fragment_lifetime, Duration::from_secs(2));
        assert_eq!(c.limits.fragments_per_source, 8);
    }

    #[test]
    fn everything_run_would_reject_is_rejected_with_its_position() {
        let base = "interfaces: [eth1]\npolicy-dir: /p\n";
        for (extra, want) in [
            (
                "metrics:\n  listen: 0.0.0.0:9187\n",
                "tollgate.yaml:4:11: metrics.listen: 0.0.0.0 listens on every address",
            ),
            (
                "metrics:\n  listen: \"[::]:9187\"\n",
                "metrics.listen: :: listens on every address",
            ),
            (
                "limits:\n  reload-timeout: 1ms\n",
                "limits.reload-timeout: 1ms is out of range",
            ),
            (
                "limits:\n  fragments: 16\n  fragments-per-source: 17\n",
                "limits: limits.fragments-per-source: 17 is more than limits.fragments",
            ),
            (
                "limits:\n  counters: 0\n",
                "limits.counters: 0 is out of range",
            ),
            (
                "limits:\n  counters: 0x100\n",
                "limits.counters: \"0x100\" is not a decimal",
            ),
            (
                "pin-dir: /tmp/pins\n",
                "pin-dir: /tmp/pins is not under /sys/fs/bpf",
            ),
            (
                "control-socket: run/x.sock\n",
                "control-socket: run/x.sock is not an absolute",
            ),
            (
                "control-socket: /etc/hostname\n",
                "exists and is not a socket",
            ),
            ("a: &x 1\nb: *x\n", "anchors and aliases"),
        ] {
            let e = parse(&format!("{base}{extra}")).unwrap_err();
            assert!(e.contains(want), "{extra}: {e}");
        }
        for (interfaces, want) in [
            ("[eth1, eth1]", "interfaces[1]: \"eth1\" is listed twice"),
            (
                "[\"a/b\"]",
                "interfaces[0]: \"a/b\" is not an interface name",
            ),
            ("[averyveryverylongname]", "is not an interface name"),
        ] {
            let e = parse(&format!("interfaces: {interfaces}\npolicy-dir: /p\n")).unwrap_err();
            assert!(e.contains(want), "{interfaces}: {e}");
        }
        let deep = format!(
            "interfaces: [eth1]\npolicy-dir: /p\nx: {}",
            "[".repeat(10_000)
        );
        assert!(parse(&deep).unwrap_err().contains("nested more than 64"));
        let c = parse(&format!(
            "{base}metrics:\n  listen: 0.0.0.0:9187\n  allow-remote: true\n"
        ))
        .unwrap();
        assert!(c.metrics.allow_remote);
    }

    #[test]
    fn open_ntp_and_a_rate_limit_that_is_off_are_warned_about() {
        let c = parse(
            "interfaces: [eth1]\npolicy-dir: /p\nntp:\n  listen: [\"100.127.0.123:123\"]\n  \
             allow: [0.0.0.0/0]\n  rate-limit:\n    interval: -2\n",
        )
        .unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("ntp.allow covers every address"));
        assert!(w[1].contains("effectively off"));
        assert!(
            parse("interfaces: [eth1]\npolicy-dir: /p\n")
                .unwrap()
                .warnings()
                .is_empty()
        );
    }

    #[test]
    fn interfaces_are_required() {
        let e = parse("interfaces: []\npolicy-dir: /p\n").unwrap_err();
        assert!(e.contains("interfaces: name at least one"), "{e}");
        let e = parse("policy-dir: /p\n").unwrap_err();
        assert!(e.contains("missing field `interfaces`"), "{e}");
    }
}
