//! The first install after a restart that adopted the pinned maps: the
//! controller does not know what either slot holds, so it reads each slot
//! back before its first write, and learns the slot's group ids from it
//! (`GroupIds::adopt`), so that the write is the difference and not the
//! slot.
//!
//! And a restart usually installs the very policy in force: when the
//! active slot holds exactly what writing the policy there would write
//! (checked entry by entry against the kernel, the counters found by
//! owner in `TG_OWNERS`), the install adopts that slot as its own — no
//! write, no flip — and counters keep counting where they are. Anything
//! else (another policy, an entry that differs, a counter with no owner)
//! takes the ordinary install into the inactive slot, which is correct
//! whatever the slots hold.

use std::time::Instant;

use anyhow::{Context as _, Result};

use super::{Dataplane, Staged, slots::SlotImage};
use crate::tables::CompiledPolicy;

impl Dataplane {
    /// Reads back what `slot` holds and learns its group ids against
    /// `policy`'s groups.
    pub(super) fn read_back(&mut self, slot: u8, policy: &CompiledPolicy) -> Result<SlotImage> {
        let image = self
            .policy
            .read_slot(slot)
            .with_context(|| format!("read back slot {slot}"))?;
        let counters = &self.counters;
        self.group_ids
            .adopt(slot, &image, (&policy.groups, &policy.counters), |i| {
                counters.owner_at(i)
            });
        Ok(image)
    }

    /// On the first install after an adoption, when the active slot holds
    /// `policy` already: that slot, staged as it is (no write; the flip
    /// writes nothing either). `None` otherwise, and afterwards.
    pub(super) fn stage_in_force(
        &mut self,
        policy: &CompiledPolicy,
        begin: Instant,
    ) -> Result<Option<Staged>> {
        let slot = self.active_slot();
        if self.slots[usize::from(slot)].is_some() {
            return Ok(None);
        }
        let current = self.read_back(slot, policy)?;
        let known = self.group_ids.clone();
        let indices: Option<Vec<u32>> = policy
            .counters
            .iter()
            .map(|owner| self.counters.index_of(owner))
            .collect();
        let target = indices.as_ref().and_then(|indices| {
            let ids = self.group_ids.assign(slot, &policy.groups);
            let (records, largest) = (self.policy.records_per_slot, self.policy.largest_trie);
            SlotImage::build(slot, policy, indices, &ids, &current, records, largest).ok()
        });
        match (indices, target) {
            (Some(indices), Some(mut target)) if current.holds(&target) => {
                // What a write would have left: the groups past the
                // policy's stay as the kernel has them.
                target.groups = current.groups;
                self.slots[usize::from(slot)] = Some(target);
                self.learned.keep_slot(slot, policy, &indices);
                tracing::info!(
                    "the policy is in force in the adopted slot {slot} already: nothing written"
                );
                Ok(Some(Staged {
                    begin,
                    generation: self.generation,
                    indices,
                    writes: Default::default(),
                    in_force: true,
                }))
            }
            _ => {
                // The slot stays as it is; what it holds is known now.
                self.group_ids = known;
                self.slots[usize::from(slot)] = Some(current);
                Ok(None)
            }
        }
    }
}
