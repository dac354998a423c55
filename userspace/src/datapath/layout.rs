//! The maps the dataplane needs, with the sizes this configuration asks for,
//! and the check that pinned maps from a previous run still fit them.

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::maps::{Array, Map, MapData, MapInfo};
use tollgate_common::{
    Counter, Destination, DeviceKey, DevicePrefix, EVENT_RING_BYTES, FRAGMENT_SOURCES, FragmentKey,
    FragmentQuota, FragmentVerdict, GroupInfo, LEARNED_BIT_WORDS, LEARNED_ENTRIES, LearnedKey,
    LearnedValue, MAP_ACTIVE, MAP_COUNTER_OWNERS, MAP_COUNTERS, MAP_DESTINATIONS, MAP_DEVICE_EXACT,
    MAP_DEVICE_PREFIX, MAP_EVENT_LIMITER, MAP_EVENTS, MAP_FRAGMENT_SOURCES, MAP_FRAGMENTS,
    MAP_GATEWAY, MAP_GRACE, MAP_GROUPS, MAP_LEARNED, MAP_LEARNED_BITS, MAP_NTP_ADDRS,
    MAP_NTP_IFACES, MAP_NTP_PORTS, MAP_NTP_PROG, MAP_NTP_RATE, MAP_NTP_SAMPLES, MAP_NTP_SCRATCH,
    MAP_NTP_STATE, MAP_NTP_TC, MAP_PASS_ETHERTYPES, MAP_REJECT_LIMITER, MAP_REJECT_PACKET,
    MAP_REJECT_REPLY, MAP_REJECT_TC, MAP_REJECT_XDP, MAP_RULESETS, MAP_SETTINGS, MAP_STATS,
    MAP_TRIE, MAP_TRIE_ROOTS, MAX_GATEWAY_ADDRESSES, MAX_GROUPS, MAX_NTP_ADDRESSES,
    MAX_NTP_INTERFACES, MAX_PASS_ETHERTYPES, NTP_PORT_WORDS, NTP_RATE_SOURCES,
    NTP_SAMPLE_RING_BYTES, NtpAddrKey, NtpFastState, NtpScratch, REJECT_REPLY_BYTES,
    ROOTS_PER_SLOT, RateBucket, RejectFacts, RuleRecord, SLOTS, Settings, SourceKey, Stat,
    TABLE_ENCODING, TrieNode, TrieSlot, device_table_entries,
};

use crate::config::Limits;

/// What a map must look like: the kernel's view of its definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// True for the maps whose size comes from `limits` (set at load time).
    pub sized_by_config: bool,
}

const fn size<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// LPM keys carry a 4-byte prefix length before the data.
const fn lpm<T>() -> u32 {
    4 + size::<T>()
}

/// Every map of the object, as this configuration sizes it.
pub fn specs(limits: &Limits) -> Vec<MapSpec> {
    let fixed = |name, key_size, value_size, max_entries| MapSpec {
        name,
        key_size,
        value_size,
        max_entries,
        sized_by_config: false,
    };
    let sized = |name, key_size, value_size, max_entries| MapSpec {
        name,
        key_size,
        value_size,
        max_entries,
        sized_by_config: true,
    };
    vec![
        fixed(MAP_ACTIVE, 4, 4, 1),
        fixed(MAP_GROUPS, 4, size::<GroupInfo>(), SLOTS * MAX_GROUPS),
        sized(
            MAP_DEVICE_EXACT,
            4,
            size::<TrieNode>(),
            device_table_entries(limits.device_addresses),
        ),
        fixed(
            MAP_GATEWAY,
            size::<DeviceKey>(),
            1,
            SLOTS * MAX_GATEWAY_ADDRESSES,
        ),
        sized(
            MAP_DEVICE_PREFIX,
            lpm::<DevicePrefix>(),
            4,
            SLOTS * limits.device_prefixes,
        ),
        sized(
            MAP_DESTINATIONS,
            lpm::<Destination>(),
            4,
            SLOTS * limits.destinations,
        ),
        fixed(MAP_TRIE, 4, size::<TrieSlot>(), SLOTS),
        fixed(MAP_TRIE_ROOTS, 4, 4, SLOTS * ROOTS_PER_SLOT),
        sized(
            MAP_RULESETS,
            4,
            size::<RuleRecord>(),
            SLOTS * limits.rule_records,
        ),
        sized(MAP_COUNTERS, 4, size::<Counter>(), limits.counters),
        sized(MAP_COUNTER_OWNERS, 4, 8, limits.counters),
        fixed(MAP_STATS, 4, size::<Counter>(), Stat::COUNT),
        sized(
            MAP_FRAGMENTS,
            size::<FragmentKey>(),
            size::<FragmentVerdict>(),
            limits.fragments,
        ),
        fixed(
            MAP_FRAGMENT_SOURCES,
            size::<SourceKey>(),
            size::<FragmentQuota>(),
            FRAGMENT_SOURCES,
        ),
        fixed(MAP_PASS_ETHERTYPES, 2, 1, MAX_PASS_ETHERTYPES),
        fixed(MAP_EVENTS, 0, 0, EVENT_RING_BYTES),
        fixed(MAP_EVENT_LIMITER, 4, size::<RateBucket>(), 1),
        fixed(MAP_REJECT_LIMITER, 4, size::<RateBucket>(), 1),
        fixed(MAP_REJECT_PACKET, 4, size::<RejectFacts>(), 1),
        fixed(MAP_REJECT_REPLY, 4, REJECT_REPLY_BYTES as u32, 1),
        fixed(MAP_SETTINGS, 4, size::<Settings>(), 1),
        fixed(MAP_NTP_STATE, 4, size::<NtpFastState>(), 1),
        fixed(MAP_NTP_PORTS, 4, 8, NTP_PORT_WORDS),
        fixed(MAP_NTP_ADDRS, size::<NtpAddrKey>(), 1, MAX_NTP_ADDRESSES),
        fixed(MAP_NTP_IFACES, 4, 1, MAX_NTP_INTERFACES),
        fixed(MAP_NTP_SCRATCH, 4, size::<NtpScratch>(), 1),
        fixed(MAP_NTP_PROG, 4, 4, 1),
        fixed(MAP_NTP_TC, 4, 4, 1),
        fixed(MAP_NTP_SAMPLES, 0, 0, NTP_SAMPLE_RING_BYTES),
        fixed(MAP_REJECT_XDP, 4, 4, 1),
        fixed(MAP_REJECT_TC, 4, 4, 1),
        fixed(MAP_NTP_RATE, size::<SourceKey>(), 8, NTP_RATE_SOURCES),
        fixed(MAP_GRACE, 4, 4, 1),
        fixed(
            MAP_LEARNED,
            size::<LearnedKey>(),
            size::<LearnedValue>(),
            LEARNED_ENTRIES,
        ),
        fixed(MAP_LEARNED_BITS, 4, 8, LEARNED_BIT_WORDS),
    ]
}

/// The state of the pins in `dir` relative to what this build expects.
#[derive(Debug, PartialEq, Eq)]
pub enum Pinned {
    /// No pinned maps: a fresh start.
    Absent,
    /// Every map is pinned and fits: adopt them, counters and all.
    Compatible,
    /// The pins belong to a build with another layout or other limits.
    Incompatible(String),
}

pub fn check_pins(dir: &Path, limits: &Limits) -> Result<Pinned> {
    let specs = specs(limits);
    let present: Vec<_> = specs.iter().filter(|s| dir.join(s.name).exists()).collect();
    if present.is_empty() {
        return Ok(Pinned::Absent);
    }
    if present.len() != specs.len() {
        let missing: Vec<_> = specs
            .iter()
            .filter(|s| !dir.join(s.name).exists())
            .map(|s| s.name)
            .collect();
        return Ok(Pinned::Incompatible(format!(
            "pins incomplete, missing {}",
            missing.join(", ")
        )));
    }
    for spec in &specs {
        let info = MapInfo::from_pin(dir.join(spec.name))?;
        let actual = (info.key_size(), info.value_size(), info.max_entries());
        let expected = (spec.key_size, spec.value_size, spec.max_entries);
        if actual != expected {
            return Ok(Pinned::Incompatible(format!(
                "{} is (key {}, value {}, entries {}), this build needs (key {}, value {}, entries {})",
                spec.name, actual.0, actual.1, actual.2, expected.0, expected.1, expected.2
            )));
        }
    }
    let settings = MapData::from_pin(dir.join(MAP_SETTINGS))
        .with_context(|| format!("open the pinned {MAP_SETTINGS}"))?;
    let settings: Array<MapData, Settings> = Array::try_from(Map::Array(settings))?;
    let encoding = settings
        .get(&0, 0)
        .with_context(|| format!("read the pinned {MAP_SETTINGS}"))?
        .encoding;
    if encoding != TABLE_ENCODING {
        return Ok(Pinned::Incompatible(format!(
            "the pinned tables are in encoding {encoding}, this build writes encoding {TABLE_ENCODING}"
        )));
    }
    Ok(Pinned::Compatible)
}
