//! `limits:`: map capacities and the bounds on reading and preparing a
//! policy, with their defaults and the checks the kernel and the reload
//! need.

use std::time::Duration;

use serde::Deserialize;

/// Map capacities. A change takes effect at the next start: the maps are
/// rebuilt at the new size and the program is swapped atomically on the
/// pinned links (no filtering gap; the kernel counters restart from zero).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Exact device addresses (/32, /128) per policy. The exact device
    /// table is sized for this many of either family (kernel memory: about
    /// 37 bytes each per slot, allocated at start).
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
    /// prefix takes one per 8 entries (kernel memory: 136 bytes each, twice).
    #[serde(default = "default_rule_records")]
    pub rule_records: u32,
    /// Fragmented datagrams whose first fragment verdict is remembered.
    #[serde(default = "default_fragments")]
    pub fragments: u32,
    /// Obsolete: the size of the flow cache, which is gone (every packet
    /// takes the decision, which costs what a cache hit did). Accepted so
    /// that configurations that set it still load; a start warns about it.
    #[serde(default)]
    pub flow_cache: Option<u32>,
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
            flow_cache: None,
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

impl Limits {
    /// Rejects limits the kernel would refuse or that could never work.
    pub fn validate(&self) -> Result<(), String> {
        for (what, value) in [
            ("device-addresses", self.device_addresses),
            ("device-prefixes", self.device_prefixes),
            ("destinations", self.destinations),
            ("counters", self.counters),
            ("rule-records", self.rule_records),
            ("fragments", self.fragments),
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

    /// What the configuration cannot hold: maps the kernel would refuse, a
    /// reload budget out of range, a policy allowed no file. `Err` names
    /// the field.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        self.validate().map_err(|e| ("limits", e))?;
        let timeout = self.reload_timeout;
        if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&timeout) {
            return Err((
                "limits.reload-timeout",
                format!(
                    "{} is out of range (100ms..=10m)",
                    humantime_serde::re::humantime::format_duration(timeout)
                ),
            ));
        }
        if self.policy_files == 0 || self.policy_file_bytes == 0 {
            return Err((
                "limits",
                "policy-files and policy-file-bytes must be at least 1".into(),
            ));
        }
        Ok(())
    }
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
