//! Map definitions; layouts and names come from `tollgate-common`.

use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use tollgate_common::{Counter, Stat};

#[btf_map]
static TG_STATS: PerCpuArray<Counter, { Stat::COUNT as usize }> = PerCpuArray::new();

#[inline(always)]
pub fn count(stat: Stat, bytes: u64) {
    if let Some(c) = TG_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
