//! Kernel counter allocation: each [`CounterOwner`] keeps one kernel counter
//! index for as long as any loaded policy references it, so counters never go
//! backwards across reloads, and `TG_OWNERS` (pinned beside the counters)
//! lets a restarted controller find them again.

use std::collections::{HashMap, HashSet};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues};
use tollgate_common::Counter;

use crate::tables::{CounterOwner, Decider};

/// `TG_OWNERS` value of an unused counter.
const FREE: u64 = 0;

/// Stable 64-bit identity of an owner (FNV-1a over a canonical text).
pub fn owner_hash(owner: &CounterOwner) -> u64 {
    let text = match owner {
        CounterOwner::Decision { group, decider } => match decider {
            Decider::Rule(id) => format!("decision\0{group}\0rule\0{id}"),
            Decider::GroupDefault => format!("decision\0{group}\0default"),
            Decider::BuiltinNtp => format!("decision\0{group}\0builtin-ntp"),
        },
        CounterOwner::Verdict { group, verdict } => {
            format!("verdict\0{group}\0{}", verdict.metric_label())
        }
    };
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    if hash == FREE { 1 } else { hash }
}

pub struct CounterRegistry {
    owners: Array<MapData, u64>,
    counters: PerCpuArray<MapData, Counter>,
    owner_of: Vec<u64>,
    index_of: HashMap<u64, u32>,
    /// Indices each slot's policy references.
    in_slot: [HashSet<u32>; 2],
    cpus: usize,
}

impl CounterRegistry {
    /// Reads the owners left by a previous run when `adopted` (new maps
    /// are all free: reading their 2^18 entries one syscall each would
    /// only slow every start). Until the first install every owned counter
    /// counts as in use by the active slot, whose policy we do not know.
    pub fn adopt(
        owners: Array<MapData, u64>,
        counters: PerCpuArray<MapData, Counter>,
        active_slot: usize,
        adopted: bool,
    ) -> Result<Self> {
        let mut owner_of = vec![FREE; owners.len() as usize];
        if adopted {
            for (i, owner) in owner_of.iter_mut().enumerate() {
                *owner = owners.get(&(i as u32), 0).context("read TG_OWNERS")?;
            }
        }
        let index_of: HashMap<u64, u32> = owner_of
            .iter()
            .enumerate()
            .filter(|(_, h)| **h != FREE)
            .map(|(i, h)| (*h, i as u32))
            .collect();
        let mut in_slot = [HashSet::new(), HashSet::new()];
        in_slot[active_slot] = index_of.values().copied().collect();
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        Ok(CounterRegistry {
            owners,
            counters,
            owner_of,
            index_of,
            in_slot,
            cpus,
        })
    }

    /// Maps a policy's logical counters to kernel indices for `slot`,
    /// reusing an owner's index when it has one and allocating (zeroed)
    /// indices otherwise. Indices only the slot's previous policy used are
    /// released; the caller guarantees no packet reads that slot any more.
    pub fn assign(&mut self, slot: usize, owners: &[CounterOwner]) -> Result<Vec<u32>> {
        let other = &self.in_slot[1 - slot];
        let hashes: Vec<u64> = owners.iter().map(owner_hash).collect();
        let wanted: HashSet<u64> = hashes.iter().copied().collect();

        // Released: used by this slot's old policy only, not wanted again.
        let released: Vec<u32> = self.in_slot[slot]
            .iter()
            .copied()
            .filter(|i| !other.contains(i) && !wanted.contains(&self.owner_of[*i as usize]))
            .collect();
        for &i in &released {
            self.index_of.remove(&self.owner_of[i as usize]);
            self.owner_of[i as usize] = FREE;
            self.owners.set(i, FREE, 0).context("write TG_OWNERS")?;
        }

        let free: Vec<u32> = self
            .owner_of
            .iter()
            .enumerate()
            .filter(|(_, h)| **h == FREE)
            .map(|(i, _)| i as u32)
            .collect();
        let mut free = free.into_iter();
        let mut indices = Vec::with_capacity(hashes.len());
        for (owner, hash) in owners.iter().zip(&hashes) {
            let index = match self.index_of.get(hash) {
                Some(&i) => i,
                None => {
                    let Some(i) = free.next() else {
                        bail!(
                            "out of counters ({} in use, limits.counters is {}); raise limits.counters",
                            self.index_of.len(),
                            self.owner_of.len()
                        );
                    };
                    let zero = PerCpuValues::try_from(vec![Counter::default(); self.cpus])?;
                    self.counters
                        .set(i, zero, 0)
                        .context("zero TG_COUNTERS entry")?;
                    self.owners.set(i, hash, 0).context("write TG_OWNERS")?;
                    self.owner_of[i as usize] = *hash;
                    self.index_of.insert(*hash, i);
                    tracing::trace!(?owner, index = i, "counter allocated");
                    i
                }
            };
            indices.push(index);
        }
        self.in_slot[slot] = indices.iter().copied().collect();
        Ok(indices)
    }

    /// The owner hash of kernel counter `index` (0 when free).
    pub fn owner_at(&self, index: u32) -> u64 {
        self.owner_of.get(index as usize).copied().unwrap_or(FREE)
    }

    /// Counters owned by a loaded policy (either slot).
    pub fn in_use(&self) -> usize {
        self.index_of.len()
    }

    /// The kernel counter `owner` holds, if any loaded policy references it.
    pub fn index_of(&self, owner: &CounterOwner) -> Option<u32> {
        self.index_of.get(&owner_hash(owner)).copied()
    }

    /// Sums one counter over all CPUs.
    pub fn read(&self, index: u32) -> Result<Counter> {
        let per_cpu = self.counters.get(&index, 0)?;
        Ok(sum(per_cpu.iter()))
    }
}

pub fn sum<'a>(per_cpu: impl Iterator<Item = &'a Counter>) -> Counter {
    per_cpu.fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}
