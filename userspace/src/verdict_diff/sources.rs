//! The source space of one family, by pair of groups (old, new).
//!
//! Every device prefix and exact address of both policies cuts the space
//! ([`regions::pieces`]). At fleet scale that is two million cuts for a
//! million exact devices, and a reload that changes one rule would pay
//! ~0.4 s to find that no device moved. So an exact address that both
//! policies hold, in groups of the same name, and that no device prefix of
//! either covers, stays out of the sweep: its own longest match on both
//! sides, it only tells that its pair of groups exists and gives an address
//! standing for it. A walk over the two sorted tables finds those; only
//! the rest (prefixes, and exact addresses added, removed, moved or under a
//! prefix) is swept. The pieces the sweep then reports between the cuts it
//! has may hold such held-out addresses, but only pieces no prefix covers:
//! those are the unknown group's on both sides, and never moved, so their
//! ranges are not listed; they only must not stand for the pair.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    net::IpAddr,
};

use tollgate_common::UNKNOWN_GROUP;

use super::regions::{Family, Span, number, pieces, push_range};
use crate::tables::CompiledPolicy;

/// The source space of one family with one pair of groups.
pub(super) struct Sources {
    /// An address in it, to stand for all of it.
    pub representative: IpAddr,
    /// Its address ranges, sorted and disjoint; complete only for a pair of
    /// differently named groups (moved devices), the only ranges listed.
    pub ranges: Vec<(u128, u128)>,
}

/// Source space by (old group id, new group id).
pub(super) fn source_pieces(
    family: Family,
    old: &CompiledPolicy,
    new: &CompiledPolicy,
) -> BTreeMap<(u32, u32), Sources> {
    let prefixes = |t: &CompiledPolicy| -> Vec<Span<u32>> {
        t.device_prefixes
            .iter()
            .map(|(net, group)| Span::of(net, *group))
            .filter(|(f, _)| *f == family)
            .map(|(_, span)| span)
            .collect()
    };
    let (mut swept_old, mut swept_new) = (prefixes(old), prefixes(new));
    let covered = Covered::new(swept_old.iter().chain(&swept_new));
    let mut found: BTreeMap<(u32, u32), Sources> = BTreeMap::new();
    let host = |addr: u128, group: u32| Span {
        start: addr,
        end: addr,
        value: group,
    };
    let (old_exact, new_exact) = (exact(old, family), exact(new, family));
    // Whether the pair's groups have one name; entries come group by group,
    // so the last answer mostly serves the next.
    let mut last: Option<((u32, u32), bool)> = None;
    let mut stays = |pair: (u32, u32)| match last {
        Some((seen, answer)) if seen == pair => answer,
        _ => {
            let answer = old.groups[pair.0 as usize].name == new.groups[pair.1 as usize].name;
            last = Some((pair, answer));
            answer
        }
    };
    let (mut i, mut j) = (0, 0);
    while i < old_exact.len() || j < new_exact.len() {
        let (a, b) = (old_exact.get(i), new_exact.get(j));
        match (a, b) {
            (Some(&(x, g)), Some(&(y, h))) if x == y => {
                i += 1;
                j += 1;
                let x = number(x);
                if stays((g, h)) && !covered.contains(x) {
                    found.entry((g, h)).or_insert_with(|| Sources {
                        representative: family.addr(x),
                        ranges: Vec::new(),
                    });
                } else {
                    swept_old.push(host(x, g));
                    swept_new.push(host(x, h));
                }
            }
            (Some(&(x, g)), Some(&(y, _))) if x < y => {
                i += 1;
                swept_old.push(host(number(x), g));
            }
            (Some(&(x, g)), None) => {
                i += 1;
                swept_old.push(host(number(x), g));
            }
            (_, Some(&(y, h))) => {
                j += 1;
                swept_new.push(host(number(y), h));
            }
            (None, None) => unreachable!("the loop stops first"),
        }
    }
    for piece in pieces(family.max(), swept_old, swept_new) {
        let groups = (
            piece.old.unwrap_or(UNKNOWN_GROUP),
            piece.new.unwrap_or(UNKNOWN_GROUP),
        );
        let sources = match found.entry(groups) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(first) => {
                // Only a piece that nothing swept covers can hold addresses
                // left out of the sweep, and those are exact devices of the
                // old policy (which no other piece holds).
                let uncovered = piece.old.is_none() && piece.new.is_none();
                let start = if uncovered {
                    first_not_in(old_exact, piece.start, piece.end)
                } else {
                    Some(piece.start)
                };
                let Some(start) = start else {
                    continue;
                };
                first.insert(Sources {
                    representative: family.addr(start),
                    ranges: Vec::new(),
                })
            }
        };
        push_range(&mut sources.ranges, piece.start, piece.end);
    }
    found
}

/// The exact devices of `family` in `tables` (sorted, as the table is).
fn exact(tables: &CompiledPolicy, family: Family) -> &[(IpAddr, u32)] {
    let all = &tables.device_exact[..];
    let v6 = all.partition_point(|(addr, _)| addr.is_ipv4());
    match family {
        Family::V4 => &all[..v6],
        Family::V6 => &all[v6..],
    }
}

/// The first address of `[start, end]` that is not in `devices` (sorted,
/// of one family).
fn first_not_in(devices: &[(IpAddr, u32)], start: u128, end: u128) -> Option<u128> {
    let mut next = devices.partition_point(|(addr, _)| number(*addr) < start);
    let mut at = start;
    while devices
        .get(next)
        .is_some_and(|(addr, _)| number(*addr) == at)
    {
        if at == end {
            return None;
        }
        at += 1;
        next += 1;
    }
    Some(at)
}

/// The addresses some device prefix covers, as sorted disjoint ranges.
struct Covered(Vec<(u128, u128)>);

impl Covered {
    fn new<'a>(spans: impl Iterator<Item = &'a Span<u32>>) -> Covered {
        let mut spans: Vec<(u128, u128)> = spans.map(|s| (s.start, s.end)).collect();
        spans.sort_unstable();
        let mut ranges: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match ranges.last_mut() {
                // CIDR prefixes are nested or disjoint.
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => ranges.push((start, end)),
            }
        }
        Covered(ranges)
    }

    fn contains(&self, addr: u128) -> bool {
        let at = self.0.partition_point(|&(_, end)| end < addr);
        self.0.get(at).is_some_and(|&(start, _)| start <= addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_of_devices_only_has_no_other_address_to_stand_for_it() {
        let devices: Vec<(IpAddr, u32)> = [5u32, 6, 7]
            .iter()
            .map(|&n| (IpAddr::from(std::net::Ipv4Addr::from(n)), 1))
            .collect();
        let first = |start, end| first_not_in(&devices, start, end);
        assert_eq!(first(5, 7), None);
        assert_eq!(first(5, 9), Some(8));
        assert_eq!(first(4, 9), Some(4));
        assert_eq!(first_not_in(&[], 0, 0), Some(0));
    }

    #[test]
    fn covered_addresses_are_those_in_some_prefix() {
        let span = |start, end| Span {
            start,
            end,
            value: 0,
        };
        let spans = [span(10, 19), span(12, 13), span(30, 30)];
        let covered = Covered::new(spans.iter());
        for (addr, inside) in [(9, false), (10, true), (19, true), (20, false), (30, true)] {
            assert_eq!(covered.contains(addr), inside, "{addr}");
        }
    }
}
