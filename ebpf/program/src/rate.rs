//! The per-CPU GCRA limiters of deny events and reject replies
//! (`tollgate_common::RateBucket`).

use aya_ebpf::{
    btf_maps::PerCpuArray,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
};
use tollgate_common::RateBucket;

/// Whether this CPU may admit one more packet to `bucket`: at most one per
/// interval on average, running at most a burst ahead of that rate, as
/// `rate` gives them (interval, burst), read once a tick. An interval of 0
/// admits none. A refusal is counted in the bucket (`RateBucket::refused`).
#[inline(always)]
pub fn admit(
    bucket: &PerCpuArray<RateBucket, 1>,
    rate: impl FnOnce() -> Option<(u64, u64)>,
) -> bool {
    let Some(b) = bucket.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's entry; programs do not preempt each other on a CPU.
    let b = unsafe { &mut *b };
    // SAFETY: bpf_jiffies64 has no preconditions.
    let tick = unsafe { bpf_jiffies64() };
    if b.tick != tick || b.now_ns == 0 {
        b.tick = tick;
        // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
        b.now_ns = unsafe { bpf_ktime_get_coarse_ns() };
        (b.interval_ns, b.burst_ns) = rate().unwrap_or((0, 0));
    }
    let now = b.now_ns;
    let next = b.tat_ns.max(now);
    if b.interval_ns == 0 || next - now > b.burst_ns {
        b.refused += 1;
        return false;
    }
    b.tat_ns = next + b.interval_ns;
    true
}
