//! `explain --live`: the leases the running gateway reports, as the model
//! and the naive evaluator take learned addresses.

use std::net::IpAddr;

use tollgate_common::LEARNED_RULES;

use crate::{
    control::Lease,
    model::naive,
    tables::{CompiledPolicy, LearnedDestination},
};

/// The leases of `dst`, in every group.
pub(super) fn of_destination(leases: &[Lease], dst: IpAddr) -> Vec<Lease> {
    leases
        .iter()
        .filter(|l| l.address == dst)
        .cloned()
        .collect()
}

/// The leases as `TG_LEARNED` holds them for `tables`: one destination per
/// (group, address), live for good (the model is asked at time 0).
pub(super) fn destinations(tables: &CompiledPolicy, leases: &[Lease]) -> Vec<LearnedDestination> {
    let mut pairs: Vec<(&str, IpAddr)> = leases
        .iter()
        .map(|l| (l.group.as_str(), l.address))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
        .into_iter()
        .filter_map(|(group, addr)| {
            let id = tables.groups.iter().position(|g| g.name == group)? as u32;
            tables.learned_destination(
                id,
                addr,
                |rule| {
                    leases
                        .iter()
                        .any(|l| l.group == group && l.address == addr && l.rule_id == rule)
                        .then_some(u64::MAX)
                },
                LEARNED_RULES,
            )
        })
        .collect()
}

/// The leases as the naive evaluator takes them.
pub(super) fn naive(leases: &[Lease]) -> Vec<naive::Learned> {
    leases
        .iter()
        .map(|l| naive::Learned {
            group: l.group.clone(),
            addr: l.address,
            rule: l.rule_id.clone(),
        })
        .collect()
}
