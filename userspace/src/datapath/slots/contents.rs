//! What a slot means, read back from the kernel, in terms that do not
//! depend on where an install placed things: groups by name, counters by
//! owner, rule lists by content. Two slots that decide every packet alike
//! and charge the same owners have equal contents, however many installs
//! led there; the tests compare incremental installs with a from-scratch
//! one this way.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context as _, Result, bail};
use tollgate_common::{GroupInfo, RECORD_ENTRIES, UNKNOWN_GROUP};

use super::{Shape, SlotImage};
use crate::{
    datapath::{counters::owner_hash, records},
    tables::CompiledPolicy,
};

/// A slot's contents; addresses as (family, bytes), prefixes with the LPM
/// prefix length of the kernel key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotContents {
    /// Every group a device or destination entry refers to, and group 0.
    pub groups: BTreeMap<String, GroupContents>,
    pub device_exact: BTreeMap<(u8, [u8; 16]), String>,
    pub device_prefixes: BTreeMap<(u32, u8, [u8; 16]), String>,
    pub gateway: BTreeSet<(u8, [u8; 16])>,
    /// (group, prefix length, family, address) → its rule list.
    pub destinations: BTreeMap<(String, u32, u8, [u8; 16]), Vec<RuleContents>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupContents {
    pub flags: u32,
    /// Owners of the default, allow, deny, audit-deny and reject counters.
    pub counters: [u64; 5],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleContents {
    pub counter: u64,
    /// The owner of the group's total the entry charges.
    pub verdict_counter: u64,
    pub port_lo: u16,
    pub port_hi: u16,
    pub proto: u8,
    pub flags: u8,
}

impl SlotContents {
    /// What a from-scratch install of `policy` puts in a slot.
    pub fn of(policy: &CompiledPolicy) -> Result<SlotContents> {
        let counters: Vec<u32> = (0..policy.counters.len() as u32).collect();
        let group_ids: Vec<u32> = (0..policy.groups.len() as u32).collect();
        let records: usize = policy
            .rulesets
            .iter()
            .map(|list| list.len().div_ceil(RECORD_ENTRIES).max(1))
            .sum();
        let image = SlotImage::build(
            0,
            policy,
            &counters,
            &group_ids,
            &SlotImage::default(),
            u32::try_from(records)?,
            // The tries are not part of the contents: the cheaper form.
            Shape::Narrow,
        )?;
        let names = policy
            .groups
            .iter()
            .enumerate()
            .map(|(id, g)| (id as u32, g.name.clone()))
            .collect();
        SlotContents::decode(&image, &names, |i| owner_hash(&policy.counters[i as usize]))
    }

    /// Decodes `image` (a slot as read back): `names` gives each kernel
    /// group id's name, `owner` each kernel counter's owner hash. A group
    /// id without a name or a broken rule chain is an error.
    pub fn decode(
        image: &SlotImage,
        names: &HashMap<u32, String>,
        owner: impl Fn(u32) -> u64,
    ) -> Result<SlotContents> {
        let name = |id: u32| -> Result<String> {
            names
                .get(&id)
                .cloned()
                .with_context(|| format!("group id {id} is in the slot but owned by no group"))
        };
        let group = |info: &GroupInfo| GroupContents {
            flags: info.flags,
            counters: [
                owner(info.default_counter),
                owner(info.allow_counter),
                owner(info.deny_counter),
                owner(info.audit_deny_counter),
                owner(info.reject_counter),
            ],
        };
        let info = |id: u32| -> Result<&GroupInfo> {
            image
                .groups
                .get(id as usize)
                .with_context(|| format!("group id {id} past TG_GROUPS"))
        };
        let mut contents = SlotContents::default();
        let mut referenced: BTreeSet<u32> = BTreeSet::from([UNKNOWN_GROUP]);
        for (key, id) in image.device_exact.iter() {
            contents
                .device_exact
                .insert((key.family, key.addr), name(*id)?);
            referenced.insert(*id);
        }
        for ((len, key), id) in &image.device_prefixes {
            contents
                .device_prefixes
                .insert((*len, key.family, key.addr), name(*id)?);
            referenced.insert(*id);
        }
        for (key, _) in &image.gateway {
            contents.gateway.insert((key.family, key.addr));
        }
        let (mut chain, mut entries) = (Vec::new(), Vec::new());
        for ((len, key), head) in &image.destinations {
            let id = u32::from(u16::from_be_bytes(key.group));
            referenced.insert(id);
            if !records::walk(&image.records, *head, &mut chain, &mut entries) {
                bail!("the rule list at record {head} is cut short or too long");
            }
            let rules = entries
                .iter()
                .map(|e| RuleContents {
                    counter: owner(e.counter),
                    verdict_counter: owner(e.verdict_counter),
                    port_lo: e.port_lo,
                    port_hi: e.port_hi,
                    proto: e.proto,
                    flags: e.flags,
                })
                .collect();
            contents
                .destinations
                .insert((name(id)?, *len, key.family, key.addr), rules);
        }
        for id in referenced {
            let name = if id == UNKNOWN_GROUP {
                crate::tables::UNKNOWN_GROUP_NAME.to_string()
            } else {
                name(id)?
            };
            contents.groups.insert(name, group(info(id)?));
        }
        Ok(contents)
    }
}
