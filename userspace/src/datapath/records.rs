//! Rule lists in the kernel: chains of fixed-size records in `TG_RULESETS`.
//!
//! Each slot owns a region of records. A list keeps the records it already
//! has in the slot when its content is unchanged, and new lists take free
//! records; so an edit writes only the lists it changed, however many rules
//! the policy has, and a list's place never depends on the lists before it.

use std::{collections::HashMap, ops::Range};

use anyhow::{Result, bail};
use tollgate_common::{MAX_CHAIN, NO_RECORD, RECORD_ENTRIES, RuleEntry, RuleRecord};

/// A rule list as the kernel holds it: entries in precedence order.
pub type List = Vec<RuleEntry>;

/// Where the lists of a new policy go in one slot.
#[derive(Debug)]
pub struct Placement {
    /// The first record of each list (by the list's index).
    pub heads: Vec<u32>,
    /// Every record the new policy's lists use, sorted by index.
    pub records: Vec<(u32, RuleRecord)>,
}

/// The record at `index` among `records` (sorted by index).
fn record_at(records: &[(u32, RuleRecord)], index: u32) -> Option<&RuleRecord> {
    let at = records.binary_search_by_key(&index, |(i, _)| *i).ok()?;
    Some(&records[at].1)
}

/// Walks the chain from `head` through `records`, filling `chain` with its
/// record indices and `content` with its entries. False if the chain is
/// cut short (a record `records` does not have) or too long to be a list.
pub(crate) fn walk(
    records: &[(u32, RuleRecord)],
    head: u32,
    chain: &mut Vec<u32>,
    content: &mut Vec<RuleEntry>,
) -> bool {
    chain.clear();
    content.clear();
    let mut next = head;
    while chain.len() < MAX_CHAIN {
        let Some(record) = record_at(records, next) else {
            return false;
        };
        chain.push(next);
        content.extend_from_slice(&record.entries[..(record.len as usize).min(RECORD_ENTRIES)]);
        if record.next == NO_RECORD {
            return true;
        }
        next = record.next;
    }
    false
}

/// The records of a slot's region and which of them are taken.
#[derive(Debug)]
pub struct Region {
    range: Range<u32>,
    used: Vec<bool>,
    /// No record below this one is free.
    free_from: u32,
}

impl Region {
    pub fn new(range: Range<u32>) -> Region {
        Region {
            used: vec![false; range.len()],
            free_from: range.start,
            range,
        }
    }

    /// Takes record `r`, inside the region; false if it is not free.
    pub fn take(&mut self, r: u32) -> bool {
        if !self.range.contains(&r) || self.used[(r - self.range.start) as usize] {
            return false;
        }
        self.used[(r - self.range.start) as usize] = true;
        true
    }

    fn is_free(&self, r: u32) -> bool {
        self.range.contains(&r) && !self.used[(r - self.range.start) as usize]
    }

    /// The lowest free record, taken.
    fn take_free(&mut self) -> Option<u32> {
        let r = (self.free_from..self.range.end).find(|&r| self.is_free(r))?;
        self.take(r);
        self.free_from = r + 1;
        Some(r)
    }
}

/// The chains among `current_records` (sorted by index, reached from
/// `current_heads`) that hold the content of some of `lists` (distinct
/// contents), taken from `region`; the other lists have no head yet
/// ([`lay_out`] gives them one).
pub fn reuse(
    lists: &[List],
    current_heads: impl IntoIterator<Item = u32>,
    current_records: &[(u32, RuleRecord)],
    region: &mut Region,
) -> Placement {
    let wanted: HashMap<&[RuleEntry], usize> = lists
        .iter()
        .enumerate()
        .map(|(i, list)| (list.as_slice(), i))
        .collect();
    let mut heads = vec![NO_RECORD; lists.len()];
    let mut records = Vec::new();
    let mut current_heads: Vec<u32> = current_heads.into_iter().collect();
    current_heads.sort_unstable();
    current_heads.dedup();
    let (mut chain, mut content) = (Vec::new(), Vec::new());
    for head in current_heads {
        if !walk(current_records, head, &mut chain, &mut content) {
            continue;
        }
        let Some(&i) = wanted.get(content.as_slice()) else {
            continue;
        };
        if heads[i] != NO_RECORD || !chain.iter().all(|&r| region.is_free(r)) {
            continue;
        }
        for &r in &chain {
            region.take(r);
            records.push((r, *record_at(current_records, r).expect("walked")));
        }
        heads[i] = head;
    }
    Placement { heads, records }
}

/// Lays out the lists `placement` has no head for in free records of
/// `region`. Called after every [`reuse`] of an install, so that no list
/// takes a record an unchanged list could have kept.
pub fn lay_out(lists: &[List], placement: &mut Placement, region: &mut Region) -> Result<()> {
    for (i, list) in lists.iter().enumerate() {
        if placement.heads[i] != NO_RECORD {
            continue;
        }
        if list.len() > RECORD_ENTRIES * MAX_CHAIN {
            bail!(
                "a rule list of {} entries is longer than the dataplane's {}",
                list.len(),
                RECORD_ENTRIES * MAX_CHAIN
            );
        }
        let chunks: Vec<&[RuleEntry]> = if list.is_empty() {
            vec![&[]]
        } else {
            list.chunks(RECORD_ENTRIES).collect()
        };
        let Some(chain) = (0..chunks.len())
            .map(|_| region.take_free())
            .collect::<Option<Vec<u32>>>()
        else {
            bail!(
                "out of rule records ({} in a slot); raise limits.rule-records",
                region.range.len()
            );
        };
        for (k, chunk) in chunks.iter().enumerate() {
            let mut record = RuleRecord {
                len: chunk.len() as u32,
                next: chain.get(k + 1).copied().unwrap_or(NO_RECORD),
                ..RuleRecord::default()
            };
            record.entries[..chunk.len()].copy_from_slice(chunk);
            placement.records.push((chain[k], record));
        }
        placement.heads[i] = chain[0];
    }
    placement.records.sort_unstable_by_key(|(i, _)| *i);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One group's lists placed in `range`, what it holds reused.
    fn place(
        lists: &[List],
        current_heads: impl IntoIterator<Item = u32>,
        current_records: &[(u32, RuleRecord)],
        range: Range<u32>,
    ) -> Result<Placement> {
        let mut region = Region::new(range);
        let mut p = reuse(lists, current_heads, current_records, &mut region);
        lay_out(lists, &mut p, &mut region)?;
        Ok(p)
    }

    fn list(counters: std::ops::Range<u32>) -> List {
        counters
            .map(|counter| RuleEntry {
                counter,
                ..RuleEntry::default()
            })
            .collect()
    }

    fn read(records: &[(u32, RuleRecord)], head: u32) -> List {
        let (mut chain, mut content) = (Vec::new(), Vec::new());
        assert!(walk(records, head, &mut chain, &mut content));
        content
    }

    #[test]
    fn long_lists_chain_and_unchanged_lists_stay_put() {
        let a = list(0..3);
        let b = list(10..30); // three records
        let p = place(&[a.clone(), b.clone()], [], &[], 100..200).unwrap();
        assert_eq!(p.records.len(), 4);
        assert_eq!(read(&p.records, p.heads[0]), a);
        assert_eq!(read(&p.records, p.heads[1]), b);

        // A new list before them moves neither.
        let c = list(40..41);
        let q = place(
            &[c.clone(), a.clone(), b.clone()],
            p.heads.clone(),
            &p.records,
            100..200,
        )
        .unwrap();
        assert_eq!(&q.heads[1..], &p.heads[..]);
        assert_eq!(read(&q.records, q.heads[0]), c);
        let new: Vec<_> = q
            .records
            .iter()
            .filter(|r| !p.records.contains(r))
            .collect();
        assert_eq!(new.len(), 1, "only the new list's record is new");
    }

    #[test]
    fn only_whole_chains_inside_the_region_are_reused() {
        let b = list(10..30);
        let p = place(std::slice::from_ref(&b), [], &[], 100..200).unwrap();
        // The other slot's region: nothing is reused from outside.
        let q = place(
            std::slice::from_ref(&b),
            p.heads.clone(),
            &p.records,
            200..300,
        )
        .unwrap();
        assert!(q.records.iter().all(|(i, _)| (200..300).contains(i)));
        // A chain missing its last record is not the list any more.
        let cut = &p.records[..p.records.len() - 1];
        let r = place(std::slice::from_ref(&b), p.heads.clone(), cut, 100..200).unwrap();
        assert_eq!(read(&r.records, r.heads[0]), b);
        assert_eq!(r.records.len(), 3, "the whole list is laid out again");
    }

    #[test]
    fn the_region_bounds_the_records() {
        let e = place(&[list(0..8), list(8..16)], [], &[], 0..1).unwrap_err();
        assert!(e.to_string().contains("raise limits.rule-records"), "{e}");
    }

    #[test]
    fn records_taken_elsewhere_are_neither_reused_nor_given_out() {
        let a = list(0..3);
        let p = place(std::slice::from_ref(&a), [], &[], 0..4).unwrap();
        assert_eq!(p.heads, vec![0]);
        // Records 0 and 2 are other groups' now: `a` goes to record 1.
        let mut region = Region::new(0..4);
        assert!(region.take(0) && region.take(2));
        let mut q = reuse(std::slice::from_ref(&a), p.heads, &p.records, &mut region);
        assert_eq!(q.heads, vec![NO_RECORD]);
        lay_out(std::slice::from_ref(&a), &mut q, &mut region).unwrap();
        assert_eq!(q.heads, vec![1]);
        assert!(!region.take(1));
    }
}
