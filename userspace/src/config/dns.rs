//! `dns:`: the gateway's DNS forwarder, which resolves the names of FQDN
//! rules for devices and learns the addresses it answers with, as written
//! ([`RawDnsConfig`]) and validated ([`DnsConfig`]).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

/// The DNS forwarder. Empty `listen`: none (FQDN rules then never learn).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// The gateway's device-facing addresses (port 53) to answer on.
    pub listen: Vec<SocketAddr>,
    /// Resolvers queries are forwarded to, tried in order.
    pub upstream: Vec<SocketAddr>,
    /// The bounds a learned address's lifetime is clamped to: the answer's
    /// TTL, at least `min_ttl` and at most `max_ttl`.
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// Added to the clamped TTL: a device may connect a little after its
    /// cache says the answer expired.
    pub grace: Duration,
    /// The groups whose names matching no FQDN rule are refused.
    pub filter: DnsFilter,
    /// Queries one source may send per second, and in a burst.
    pub rate_limit: DnsRateLimit,
    /// How long an upstream has to answer before the next is tried.
    pub timeout: Duration,
    /// Where the live learned addresses are kept across a restart of the
    /// controller; `None`: `dns-leases.json` beside the control socket.
    pub leases_file: Option<PathBuf>,
}

/// `dns.filter`: `true` (every group), `false` (none) or group names.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "true, false or a list of group names")]
pub enum DnsFilter {
    All(bool),
    Groups(Vec<String>),
}

impl Default for DnsFilter {
    fn default() -> Self {
        DnsFilter::All(false)
    }
}

impl DnsFilter {
    /// Whether names of `group` that match none of its FQDN rules are
    /// refused (else forwarded without learning anything).
    pub fn filters(&self, group: &str) -> bool {
        match self {
            DnsFilter::All(all) => *all,
            DnsFilter::Groups(groups) => groups.iter().any(|g| g == group),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DnsRateLimit {
    /// Queries per second one source may send on average.
    #[serde(default = "default_rate")]
    pub rate: u32,
    /// Queries above the rate a source may send at once.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_rate() -> u32 {
    20
}

fn default_burst() -> u32 {
    40
}

impl Default for DnsRateLimit {
    fn default() -> Self {
        DnsRateLimit {
            rate: default_rate(),
            burst: default_burst(),
        }
    }
}

/// The longest lifetime a learned address may have, and grace it may get.
pub const MAX_DNS_TTL: Duration = Duration::from_secs(86_400);
pub const MAX_DNS_GRACE: Duration = Duration::from_secs(3_600);
/// Listen addresses and upstreams, each.
pub const MAX_DNS_ADDRESSES: usize = 16;

impl Default for DnsConfig {
    fn default() -> Self {
        RawDnsConfig::default()
            .try_into()
            .expect("the default DNS configuration is valid")
    }
}

/// The DNS section as written; [`DnsConfig`] is its validated form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDnsConfig {
    #[serde(default)]
    listen: Vec<SocketAddr>,
    #[serde(default)]
    upstream: Vec<SocketAddr>,
    #[serde(default, with = "humantime_serde::option")]
    min_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    max_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    grace: Option<Duration>,
    #[serde(default)]
    filter: Option<DnsFilter>,
    #[serde(default)]
    rate_limit: DnsRateLimit,
    #[serde(default, with = "humantime_serde::option")]
    timeout: Option<Duration>,
    #[serde(default)]
    leases_file: Option<PathBuf>,
}

impl TryFrom<RawDnsConfig> for DnsConfig {
    type Error = String;

    fn try_from(raw: RawDnsConfig) -> Result<Self, String> {
        for addr in &raw.listen {
            if addr.ip().is_unspecified() {
                return Err(format!(
                    "listen: {addr} is a wildcard; give the gateway's device-facing address \
                     (port 53) devices ask"
                ));
            }
        }
        if raw.listen.len() > MAX_DNS_ADDRESSES || raw.upstream.len() > MAX_DNS_ADDRESSES {
            return Err(format!(
                "at most {MAX_DNS_ADDRESSES} listen addresses and {MAX_DNS_ADDRESSES} upstreams"
            ));
        }
        if !raw.listen.is_empty() && raw.upstream.is_empty() {
            return Err("upstream: the forwarder needs at least one resolver".into());
        }
        let min_ttl = raw.min_ttl.unwrap_or(Duration::from_secs(60));
        let max_ttl = raw.max_ttl.unwrap_or(Duration::from_secs(3_600));
        if min_ttl > max_ttl || max_ttl > MAX_DNS_TTL || max_ttl.is_zero() {
            return Err(format!(
                "min-ttl {} and max-ttl {}: need 0 < max-ttl, min-ttl <= max-ttl <= 24h",
                humantime::format_duration(min_ttl),
                humantime::format_duration(max_ttl)
            ));
        }
        let grace = raw.grace.unwrap_or(Duration::from_secs(30));
        if grace > MAX_DNS_GRACE {
            return Err("grace: at most 1h".into());
        }
        let timeout = raw.timeout.unwrap_or(Duration::from_secs(2));
        if timeout.is_zero() || timeout > Duration::from_secs(30) {
            return Err("timeout: between 1ms and 30s".into());
        }
        if raw.rate_limit.rate == 0 || raw.rate_limit.burst == 0 {
            return Err("rate-limit: rate and burst must be at least 1".into());
        }
        Ok(DnsConfig {
            listen: raw.listen,
            upstream: raw.upstream,
            min_ttl,
            max_ttl,
            grace,
            filter: raw.filter.unwrap_or_default(),
            rate_limit: raw.rate_limit,
            timeout,
            leases_file: raw.leases_file,
        })
    }
}

impl DnsConfig {
    /// How long an address answered with `ttl` seconds stays learned.
    pub fn lifetime(&self, ttl: u32) -> Duration {
        Duration::from_secs(u64::from(ttl)).clamp(self.min_ttl, self.max_ttl) + self.grace
    }
}
