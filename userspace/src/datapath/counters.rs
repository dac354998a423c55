//! Kernel counter allocation: each [`CounterOwner`] keeps one kernel counter
//! index for as long as any loaded policy references it, so counters never go
//! backwards across reloads, and `TG_OWNERS` (pinned beside the counters)
//! lets a restarted controller find them again.

use std::{
    collections::HashMap,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::Arc,
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, IterableMap as _, MapData, PerCpuArray, PerCpuValues};
use tollgate_common::Counter;

use super::slots::batch;
use crate::tables::{CounterOwner, Decider, GroupSpan};

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
    /// How many references the two slots' policies hold to each index: it
    /// is released when none is left.
    refs: Vec<u32>,
    /// Each slot's counters, part by part, as its last `assign` left them.
    in_slot: [Vec<Part>; 2],
    /// Whether each index may hold counts: not one of a new map that no
    /// owner has had yet. Zeroing every counter of a fresh start's policy
    /// took a syscall each, 10^5 of them at fleet scale (0.2 s of the start).
    counted: Vec<bool>,
    cpus: usize,
}

/// The kernel indices of one group's counters in a slot.
#[derive(Clone, Debug)]
struct Part {
    /// The owners they were assigned for (the group's compiled fragment's,
    /// shared): a group unchanged since brings the very same list, and
    /// takes the indices without hashing a single owner. `None` for the
    /// counters a previous run left, or a policy without groups' spans.
    source: Option<Arc<[CounterOwner]>>,
    indices: Arc<[u32]>,
}

impl CounterRegistry {
    /// Reads the owners left by a previous run when `adopted` (new maps
    /// are all free and zero: reading their 2^18 entries would only slow
    /// every start). Until the first install every owned counter counts as
    /// in use by the active slot, whose policy we do not know.
    pub fn adopt(
        owners: Array<MapData, u64>,
        counters: PerCpuArray<MapData, Counter>,
        active_slot: usize,
        adopted: bool,
    ) -> Result<Self> {
        let mut owner_of = vec![FREE; owners.len() as usize];
        if adopted {
            read_owners(&owners, &mut owner_of)?;
        }
        let index_of: HashMap<u64, u32> = owner_of
            .iter()
            .enumerate()
            .filter(|(_, h)| **h != FREE)
            .map(|(i, h)| (*h, i as u32))
            .collect();
        let refs = owner_of.iter().map(|h| u32::from(*h != FREE)).collect();
        let mut in_slot = [Vec::new(), Vec::new()];
        in_slot[active_slot].push(Part {
            source: None,
            indices: index_of.values().copied().collect(),
        });
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let capacity = owner_of.len();
        Ok(CounterRegistry {
            owners,
            counters,
            owner_of,
            index_of,
            refs,
            in_slot,
            // What an earlier run's counters hold is not known.
            counted: vec![adopted; capacity],
            cpus,
        })
    }

    /// Maps a policy's logical counters (`owners`, in `spans` by group:
    /// see [`GroupSpan`]; none for a policy built by hand) to kernel
    /// indices for `slot`, reusing an owner's index when it has one and
    /// allocating (zeroed) indices otherwise. A group whose owners are the
    /// list a slot's indices were assigned for keeps those indices without
    /// hashing its owners. Indices only the slot's previous policy used are
    /// released; the caller guarantees no packet reads that slot any more.
    pub fn assign(
        &mut self,
        slot: usize,
        owners: &[CounterOwner],
        spans: &[GroupSpan],
    ) -> Result<Vec<u32>> {
        let sources = tiles(owners, spans);
        let known: HashMap<*const CounterOwner, &Arc<[u32]>> = self
            .in_slot
            .iter()
            .flatten()
            .filter_map(|p| Some((p.source.as_ref()?.as_ptr(), &p.indices)))
            .collect();
        // Each part's indices, or (for a part not assigned before) each
        // owner's hash and the index it holds, if any.
        let mut parts = Vec::with_capacity(sources.len());
        let mut missing = 0;
        for (source, owners) in &sources {
            let held = source.and_then(|s| known.get(&s.as_ptr()));
            parts.push(match held {
                Some(&indices) => Ok(Arc::clone(indices)),
                None => {
                    let hashed: Vec<(u64, Option<u32>)> = owners
                        .iter()
                        .map(|o| {
                            let hash = owner_hash(o);
                            (hash, self.index_of.get(&hash).copied())
                        })
                        .collect();
                    missing += hashed.iter().filter(|(_, i)| i.is_none()).count();
                    Err(hashed)
                }
            });
        }
        drop(known);

        let mut held: Vec<u32> = Vec::with_capacity(owners.len());
        for part in &parts {
            match part {
                Ok(indices) => held.extend_from_slice(indices),
                Err(hashed) => held.extend(hashed.iter().filter_map(|(_, i)| *i)),
            }
        }
        for &i in &held {
            self.refs[i as usize] += 1;
        }
        let old = std::mem::take(&mut self.in_slot[slot]);
        let mut released = Vec::new();
        for &i in old.iter().flat_map(|p| p.indices.iter()) {
            self.refs[i as usize] -= 1;
            if self.refs[i as usize] == 0 {
                released.push(i);
            }
        }
        let free = self.owner_of.iter().filter(|h| **h == FREE).count();
        if missing > free + released.len() {
            // Nothing changed yet: the slot keeps its counters.
            for &i in &held {
                self.refs[i as usize] -= 1;
            }
            for &i in old.iter().flat_map(|p| p.indices.iter()) {
                self.refs[i as usize] += 1;
            }
            self.in_slot[slot] = old;
            bail!(
                "out of counters ({} in use, limits.counters is {}); raise limits.counters",
                self.index_of.len() + missing - released.len(),
                self.owner_of.len()
            );
        }
        // `TG_OWNERS` as it changes, in order, written in one batch.
        let mut owner_writes: Vec<(u32, u64)> = Vec::with_capacity(released.len() + missing);
        for &i in &released {
            self.index_of.remove(&self.owner_of[i as usize]);
            self.owner_of[i as usize] = FREE;
            owner_writes.push((i, FREE));
        }

        // Lowest first, as `pop` takes them.
        let mut free: Vec<u32> = (0..self.owner_of.len() as u32)
            .filter(|&i| self.owner_of[i as usize] == FREE)
            .take(missing)
            .collect();
        free.reverse();
        let mut indices = Vec::with_capacity(owners.len());
        let mut assigned = Vec::with_capacity(parts.len());
        for ((source, owners), part) in sources.iter().zip(parts) {
            let part = match part {
                Ok(held) => held,
                Err(hashed) => {
                    let mut mine = Vec::with_capacity(hashed.len());
                    for (owner, (hash, index)) in owners.iter().zip(hashed) {
                        let index = match index {
                            Some(i) => i,
                            None => {
                                let i = free.pop().expect("counted above");
                                self.allocate(i, hash)?;
                                owner_writes.push((i, hash));
                                tracing::trace!(?owner, index = i, "counter allocated");
                                i
                            }
                        };
                        mine.push(index);
                    }
                    mine.into()
                }
            };
            indices.extend_from_slice(&part);
            assigned.push(Part {
                source: source.cloned(),
                indices: part,
            });
        }
        self.in_slot[slot] = assigned;
        let owners = &mut self.owners;
        batch::write_all(
            owners.map().fd().as_fd().as_raw_fd(),
            &owner_writes,
            |&i, hash| Ok(owners.set(i, hash, 0)?),
        )
        .map_err(|(_, e)| e.context("write TG_OWNERS"))?;
        Ok(indices)
    }

    /// Gives free index `i`, zeroed, to the owner `hash` (whose `TG_OWNERS`
    /// entry the caller writes).
    fn allocate(&mut self, i: u32, hash: u64) -> Result<()> {
        if std::mem::replace(&mut self.counted[i as usize], true) {
            let zero = PerCpuValues::try_from(vec![Counter::default(); self.cpus])?;
            self.counters
                .set(i, zero, 0)
                .context("zero TG_COUNTERS entry")?;
        }
        self.owner_of[i as usize] = hash;
        self.index_of.insert(hash, i);
        self.refs[i as usize] += 1;
        Ok(())
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

/// Reads every `TG_OWNERS` entry into `owner_of` (as long as the map).
fn read_owners(owners: &Array<MapData, u64>, owner_of: &mut [u64]) -> Result<()> {
    let entries = batch::entries_of(owners, |m| {
        m.iter()
            .enumerate()
            .map(|(i, owner)| Ok((i as u32, owner?)))
            .collect()
    })
    .context("read TG_OWNERS")?;
    for (i, owner) in entries {
        if let Some(slot) = owner_of.get_mut(i as usize) {
            *slot = owner;
        }
    }
    Ok(())
}

pub fn sum<'a>(per_cpu: impl Iterator<Item = &'a Counter>) -> Counter {
    per_cpu.fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

/// A part of a policy's counter owners: the group's shared list, if known,
/// and its owners.
type Tile<'a> = (Option<&'a Arc<[CounterOwner]>>, &'a [CounterOwner]);

/// `owners` in parts: one per group of `spans` when they cover `owners` in
/// order, else (a policy built by hand) one part without a source.
fn tiles<'a>(owners: &'a [CounterOwner], spans: &'a [GroupSpan]) -> Vec<Tile<'a>> {
    let mut next = 0;
    // Trusted as `compile` numbers them: positions checked, not contents.
    let tiled = spans.iter().all(|s| {
        let at = s.first_counter as usize == next;
        next += s.owners.len();
        at
    });
    if !tiled || next != owners.len() {
        return vec![(None, owners)];
    }
    spans
        .iter()
        .map(|s| {
            let first = s.first_counter as usize;
            (Some(&s.owners), &owners[first..first + s.owners.len()])
        })
        .collect()
}
