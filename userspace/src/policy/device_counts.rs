//! How many groups list each device prefix: the one check across groups
//! (a source belongs to one group), kept from load to load so that a
//! reload counts only the devices of the groups that changed.
//!
//! A sorted vector of (prefix, count), 24 bytes a prefix. A hash map of
//! the same counts took 50 MiB at 10^6 devices (its slack included),
//! twice this. Changes come in batches, one per load: a batch is merged
//! in one pass, never element by element.

use ipnet::IpNet;

#[derive(Debug, Default)]
pub(super) struct DeviceCounts {
    /// Sorted by prefix; every count is at least 1.
    counts: Vec<(IpNet, u32)>,
    /// Prefixes counted more than once.
    shared: usize,
}

impl DeviceCounts {
    pub(super) fn clear(&mut self) {
        self.counts = Vec::new();
        self.shared = 0;
    }

    /// Prefixes listed by more than one group.
    pub(super) fn shared(&self) -> usize {
        self.shared
    }

    /// Counts each of `prefixes` once more (a prefix may come several
    /// times).
    pub(super) fn add(&mut self, prefixes: impl IntoIterator<Item = IpNet>) {
        let mut batch: Vec<IpNet> = prefixes.into_iter().collect();
        batch.sort_unstable();
        // All of them are new on the first load: sized exactly, with no
        // growth slack to keep.
        let mut fresh = if self.counts.is_empty() {
            Vec::with_capacity(batch.chunk_by(|a, b| a == b).count())
        } else {
            Vec::new()
        };
        for run in batch.chunk_by(|a, b| a == b) {
            let (prefix, more) = (run[0], run.len() as u32);
            let before = match self.counts.binary_search_by(|(p, _)| p.cmp(&prefix)) {
                Ok(i) => {
                    let count = &mut self.counts[i].1;
                    let before = *count;
                    *count += more;
                    before
                }
                Err(_) => {
                    fresh.push((prefix, more));
                    0
                }
            };
            if before < 2 && before + more >= 2 {
                self.shared += 1;
            }
        }
        drop(batch);
        if self.counts.is_empty() {
            // The first load: no second copy to merge into.
            self.counts = fresh;
        } else if !fresh.is_empty() {
            // Two sorted runs: the stable sort merges them in one pass.
            self.counts.extend(fresh);
            self.counts.sort_by_key(|(prefix, _)| *prefix);
        }
    }

    /// Counts `removed` once less and `added` once more, as [`remove`]
    /// then [`add`] would (`removed` must be counted), but a prefix in both
    /// is left alone: a reload that edits a group's rules and keeps its
    /// devices touches no count. At 10^6 devices that matters: removing a
    /// 10^4-device group's counts and adding them back took a one-line
    /// edit's load stage from 20 to 30 ms (BENCHMARKS.md, issue 14).
    ///
    /// [`remove`]: Self::remove
    /// [`add`]: Self::add
    pub(super) fn replace(
        &mut self,
        removed: impl IntoIterator<Item = IpNet>,
        added: impl IntoIterator<Item = IpNet>,
    ) {
        let mut removed: Vec<IpNet> = removed.into_iter().collect();
        let mut added: Vec<IpNet> = added.into_iter().collect();
        removed.sort_unstable();
        added.sort_unstable();
        let (mut only_removed, mut only_added) = (Vec::new(), Vec::new());
        let (mut r, mut a) = (removed.into_iter().peekable(), added.into_iter().peekable());
        loop {
            match (r.peek(), a.peek()) {
                (Some(x), Some(y)) if x == y => {
                    r.next();
                    a.next();
                }
                (Some(x), Some(y)) if x > y => only_added.extend(a.next()),
                (Some(_), _) => only_removed.extend(r.next()),
                (None, Some(_)) => only_added.extend(a.next()),
                (None, None) => break,
            }
        }
        self.remove(only_removed);
        self.add(only_added);
    }

    /// Counts each of `prefixes` once less; a prefix not counted is
    /// ignored.
    pub(super) fn remove(&mut self, prefixes: impl IntoIterator<Item = IpNet>) {
        let mut emptied = false;
        for prefix in prefixes {
            let Ok(i) = self.counts.binary_search_by(|(p, _)| p.cmp(&prefix)) else {
                continue;
            };
            let count = &mut self.counts[i].1;
            if *count == 0 {
                continue;
            }
            if *count == 2 {
                self.shared -= 1;
            }
            *count -= 1;
            emptied |= *count == 0;
        }
        if emptied {
            self.counts.retain(|(_, count)| *count > 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn net(i: u32) -> IpNet {
        IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(i)))
    }

    /// Random batches of adds and removes keep the same counts and the
    /// same number of shared prefixes as a hash map kept one by one.
    #[test]
    fn agrees_with_a_map_counted_one_by_one() {
        let mut counts = DeviceCounts::default();
        let mut reference: HashMap<IpNet, u32> = HashMap::new();
        let mut added: Vec<Vec<IpNet>> = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for step in 0..600 {
            if step % 5 == 4 && !added.is_empty() {
                // A group edited: some of its prefixes kept, some new.
                let old = added.swap_remove(next() as usize % added.len());
                let mut new: Vec<IpNet> = old.iter().copied().filter(|_| next() % 3 != 0).collect();
                new.extend((0..next() % 5).map(|_| net(next() % 64)));
                for p in &old {
                    let c = reference.get_mut(p).unwrap();
                    *c -= 1;
                    if *c == 0 {
                        reference.remove(p);
                    }
                }
                for p in &new {
                    *reference.entry(*p).or_default() += 1;
                }
                counts.replace(old, new.iter().copied());
                added.push(new);
            } else if step % 3 == 2 && !added.is_empty() {
                let batch = added.swap_remove(next() as usize % added.len());
                for p in &batch {
                    let c = reference.get_mut(p).unwrap();
                    *c -= 1;
                    if *c == 0 {
                        reference.remove(p);
                    }
                }
                counts.remove(batch);
            } else {
                let batch: Vec<IpNet> = (0..next() % 20).map(|_| net(next() % 64)).collect();
                for p in &batch {
                    *reference.entry(*p).or_default() += 1;
                }
                counts.add(batch.iter().copied());
                added.push(batch);
            }
            let mut expected: Vec<(IpNet, u32)> = reference.iter().map(|(p, c)| (*p, *c)).collect();
            expected.sort();
            assert_eq!(counts.counts, expected, "step {step}");
            let shared = reference.values().filter(|c| **c > 1).count();
            assert_eq!(counts.shared(), shared, "step {step}");
        }
    }
}
