//! Learned destinations in the kernel (`TG_LEARNED`, precedence step 12):
//! what the DNS forwarder learned, kept here as the truth and written into
//! the kernel map of each slot with that slot's group ids and counters.
//!
//! The controller holds the dataplane lock from stage to flip, so a learn
//! never interleaves with an install: a learn writes the active slot; a
//! stage empties the inactive slot (the `expect:` cases judge the policy as
//! written), and the flip first fills it from everything still live,
//! checked against the staged policy (a new deny rule removes what it
//! covers; a removed FQDN rule takes its addresses with it).

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Context as _, Result};
use aya::maps::{Array, HashMap, MapData};
use tollgate_common::{
    FAMILY_V4, FAMILY_V6, LEARNED_ENTRIES, LEARNED_RULES, LearnedKey, LearnedRule, LearnedValue,
    RULE_ANY_PROTO, RULE_PORTS, SLOTS,
};

use super::learned_bits::LearnedBits;
use crate::tables::{CompiledPolicy, LearnedDestination};

/// `CLOCK_MONOTONIC` in nanoseconds, the clock the program compares
/// expiries with (`bpf_ktime_get_coarse_ns` reads its coarse variant).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One learned address of a group, for one rule, and when it expires.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LearnedAddress {
    pub group: String,
    pub addr: IpAddr,
    pub rule: String,
    /// The name whose answer last taught or renewed it (normalised).
    pub name: String,
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub expires_ns: u64,
}

/// How long one (group, address) stays learned for one rule, and the name
/// that taught it (for `explain`: one name per rule bounds the memory).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Lease {
    /// `CLOCK_MONOTONIC` nanoseconds.
    expires_ns: u64,
    name: String,
}

/// The policy of one slot, as learning needs it.
struct SlotPolicy {
    /// Its [`CompiledPolicy::learning_view`].
    tables: CompiledPolicy,
    /// Kernel counter of each logical counter of `tables`.
    indices: Vec<u32>,
}

pub(super) struct Learned {
    map: HashMap<MapData, LearnedKey, LearnedValue>,
    /// `TG_LEARNED_BITS`: set before an entry is written, cleared after
    /// the last entry of a bit is removed.
    bits: LearnedBits,
    /// (group, address) to (rule id to lease): every live learned address.
    live: BTreeMap<(String, IpAddr), BTreeMap<String, Lease>>,
    slots: [Option<SlotPolicy>; 2],
    /// Counts the changes to `live`: whoever keeps a copy knows when it is
    /// stale.
    changes: u64,
}

/// Why a learn was not written.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No policy of ours is in force (adopted maps, none installed yet).
    NoPolicy,
    /// The address may not be learned for the group (step 12).
    Forbidden(&'static str),
    /// The rule is no FQDN rule of the group in force.
    NoSuchRule,
    /// As many addresses are live as one slot of `TG_LEARNED` holds.
    Full,
}

/// Addresses live at once: one slot's share of `TG_LEARNED`.
pub const MAX_LEARNED: usize = (LEARNED_ENTRIES / SLOTS) as usize;

impl Learned {
    pub(super) fn new(
        map: HashMap<MapData, LearnedKey, LearnedValue>,
        bits: Array<MapData, u64>,
    ) -> Result<Learned> {
        Ok(Learned {
            map,
            bits: LearnedBits::new(bits)?,
            live: BTreeMap::new(),
            slots: [None, None],
            changes: 0,
        })
    }

    /// Writes one entry, its bit first.
    fn write(&mut self, key: LearnedKey, value: LearnedValue) -> Result<()> {
        self.bits.cover(&key)?;
        self.map
            .insert(key, value, 0)
            .context("write TG_LEARNED (full: see LEARNED_ENTRIES)")
    }

    /// Clears the bits of the entries removed since the last call.
    fn trim_bits(&mut self) -> Result<()> {
        let keys: Vec<LearnedKey> = self
            .map
            .keys()
            .collect::<Result<_, _>>()
            .context("read TG_LEARNED")?;
        self.bits.keep_only(&keys)
    }

    /// Empties `slot`, where `tables` is being staged: the policy's
    /// `expect:` cases run there on the policy as written, with nothing
    /// learned. [`Learned::fill_slot`] writes what is live just before the
    /// flip.
    pub(super) fn stage_slot(
        &mut self,
        slot: u8,
        tables: &CompiledPolicy,
        indices: &[u32],
    ) -> Result<()> {
        let stale: Vec<LearnedKey> = self
            .map
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.slot == slot)
            .collect();
        let removed = !stale.is_empty();
        for key in stale {
            // Gone already is fine: the goal is its absence.
            let _ = self.map.remove(&key);
        }
        if removed {
            self.trim_bits()?;
        }
        self.slots[usize::from(slot)] = Some(SlotPolicy {
            tables: tables.learning_view(),
            indices: indices.to_vec(),
        });
        Ok(())
    }

    /// Makes `tables` the policy of `slot` without touching its entries:
    /// the slot a previous run left in force with this very policy
    /// (`adopt.rs`), whose learned addresses stay until they expire (the
    /// program ignores expired entries) or the slot is staged again.
    pub(super) fn keep_slot(&mut self, slot: u8, tables: &CompiledPolicy, indices: &[u32]) {
        self.slots[usize::from(slot)] = Some(SlotPolicy {
            tables: tables.learning_view(),
            indices: indices.to_vec(),
        });
    }

    /// Writes into the staged `slot` every address live at `now`, checked
    /// against the staged policy.
    pub(super) fn fill_slot(&mut self, slot: u8, now: u64) -> Result<()> {
        self.forget_expired(now);
        let Some(policy) = &self.slots[usize::from(slot)] else {
            return Ok(());
        };
        let entries: Vec<(LearnedKey, LearnedValue)> = self
            .live
            .iter()
            .filter_map(|((group, addr), rules)| kernel_entry(policy, slot, group, *addr, rules))
            .collect();
        for (key, value) in entries {
            self.write(key, value)?;
        }
        Ok(())
    }

    /// Learns `addr` for `rule` of `group` until `expires_ns`, in `slot`
    /// (the active one), from an answer for `name`. A later expiry of the
    /// same (group, address, rule) replaces an earlier one, never the other
    /// way round.
    pub(super) fn learn(
        &mut self,
        slot: u8,
        (group, rule): (&str, &str),
        addr: IpAddr,
        name: &str,
        expires_ns: u64,
    ) -> Result<Result<(), Refused>> {
        let Some(policy) = &self.slots[usize::from(slot)] else {
            return Ok(Err(Refused::NoPolicy));
        };
        let Some(id) = group_id(&policy.tables, group) else {
            return Ok(Err(Refused::NoSuchRule));
        };
        if let Err(why) = policy.tables.learnable(id, addr) {
            return Ok(Err(Refused::Forbidden(why)));
        }
        if !policy
            .tables
            .fqdn_rules
            .iter()
            .any(|r| r.group == id && r.rule == rule)
        {
            return Ok(Err(Refused::NoSuchRule));
        }
        let key = (group.to_string(), addr);
        if !self.live.contains_key(&key) && self.live.len() >= MAX_LEARNED {
            return Ok(Err(Refused::Full));
        }
        let rules = self.live.entry(key).or_default();
        let lease = rules.entry(rule.to_string()).or_insert(Lease {
            expires_ns: 0,
            name: String::new(),
        });
        if expires_ns >= lease.expires_ns {
            *lease = Lease {
                expires_ns,
                name: name.to_string(),
            };
            self.changes += 1;
        }
        if let Some((key, value)) = kernel_entry(policy, slot, group, addr, rules) {
            self.write(key, value)?;
        }
        Ok(Ok(()))
    }

    /// Removes what expired before `now` from the live set and from the
    /// active slot (the program ignores expired entries; this frees them).
    pub(super) fn sweep(&mut self, slot: u8, now: u64) -> Result<usize> {
        let expired = self.forget_expired(now);
        let Some(policy) = &self.slots[usize::from(slot)] else {
            return Ok(expired.len());
        };
        let mut rewrites = Vec::new();
        let mut removed = false;
        for (group, addr) in &expired {
            let Some(id) = group_id(&policy.tables, group) else {
                continue;
            };
            let key = learned_key(slot, id, *addr);
            match self.live.get(&(group.clone(), *addr)) {
                Some(rules) => rewrites.extend(kernel_entry(policy, slot, group, *addr, rules)),
                None => removed |= self.map.remove(&key).is_ok(),
            }
        }
        for (key, value) in rewrites {
            self.write(key, value)?;
        }
        if removed {
            self.trim_bits()?;
        }
        Ok(expired.len())
    }

    /// Forgets every learned address, in both slots.
    pub(super) fn forget_all(&mut self) -> Result<()> {
        self.live.clear();
        self.changes += 1;
        let keys: Vec<LearnedKey> = self.map.keys().filter_map(|k| k.ok()).collect();
        for key in keys {
            let _ = self.map.remove(&key);
        }
        self.trim_bits()
    }

    /// Drops expired (address, rule) pairs; returns the (group, address)
    /// pairs that lost one.
    fn forget_expired(&mut self, now: u64) -> Vec<(String, IpAddr)> {
        let mut touched = Vec::new();
        self.live.retain(|key, rules| {
            let before = rules.len();
            rules.retain(|_, lease| lease.expires_ns > now);
            if rules.len() != before {
                touched.push(key.clone());
            }
            !rules.is_empty()
        });
        if !touched.is_empty() {
            self.changes += 1;
        }
        touched
    }

    /// How many times the live set changed so far.
    pub(super) fn changes(&self) -> u64 {
        self.changes
    }

    /// Every live learned address, by group, address and rule.
    pub(super) fn list(&self) -> Vec<LearnedAddress> {
        self.live
            .iter()
            .flat_map(|((group, addr), rules)| {
                rules.iter().map(|(rule, lease)| LearnedAddress {
                    group: group.clone(),
                    addr: *addr,
                    rule: rule.clone(),
                    name: lease.name.clone(),
                    expires_ns: lease.expires_ns,
                })
            })
            .collect()
    }

    /// What `TG_LEARNED` holds for the active slot, as the model reads it.
    pub(super) fn destinations(&self, slot: u8) -> Vec<LearnedDestination> {
        let Some(policy) = &self.slots[usize::from(slot)] else {
            return Vec::new();
        };
        self.live
            .iter()
            .filter_map(|((group, addr), rules)| destination(&policy.tables, group, *addr, rules))
            .collect()
    }
}

fn group_id(tables: &CompiledPolicy, name: &str) -> Option<u32> {
    tables
        .groups
        .iter()
        .position(|g| g.name == name)
        .map(|i| i as u32)
}

fn destination(
    tables: &CompiledPolicy,
    group: &str,
    addr: IpAddr,
    rules: &BTreeMap<String, Lease>,
) -> Option<LearnedDestination> {
    let id = group_id(tables, group)?;
    tables.learned_destination(
        id,
        addr,
        |rule| rules.get(rule).map(|l| l.expires_ns),
        LEARNED_RULES,
    )
}

fn learned_key(slot: u8, group: u32, addr: IpAddr) -> LearnedKey {
    let (family, addr) = match addr {
        IpAddr::V4(a) => {
            let mut bytes = [0; 16];
            bytes[..4].copy_from_slice(&a.octets());
            (FAMILY_V4, bytes)
        }
        IpAddr::V6(a) => (FAMILY_V6, a.octets()),
    };
    LearnedKey {
        slot,
        family,
        group: group as u16,
        addr,
    }
}

/// The kernel's key and value of a learned address in `policy`'s slot.
fn kernel_entry(
    policy: &SlotPolicy,
    slot: u8,
    group: &str,
    addr: IpAddr,
    rules: &BTreeMap<String, Lease>,
) -> Option<(LearnedKey, LearnedValue)> {
    let d = destination(&policy.tables, group, addr, rules)?;
    let mut value = LearnedValue::default();
    for (slot_entry, (entry, expires_ns)) in value.rules.iter_mut().zip(&d.entries) {
        let (port_lo, port_hi) = entry.ports.unwrap_or((0, 0));
        *slot_entry = LearnedRule {
            expires_ns: *expires_ns,
            counter: policy.indices[entry.counter as usize],
            port_lo,
            port_hi,
            proto: entry.proto.unwrap_or(0),
            flags: if entry.proto.is_none() {
                RULE_ANY_PROTO
            } else {
                0
            } | if entry.ports.is_some() { RULE_PORTS } else { 0 },
            _pad: [0; 6],
        };
    }
    Some((learned_key(slot, d.group, addr), value))
}
