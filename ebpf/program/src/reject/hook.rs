//! How each hook puts the answer on the wire: the packet is cut or grown to
//! the link header plus the reply, the reply written after the link header,
//! and on Ethernet the MAC addresses swapped. XDP then returns `XDP_TX`; TC
//! redirects the skb to the egress of the interface it arrived on, its
//! equivalent.

use aya_ebpf::{
    bindings::BPF_F_RECOMPUTE_CSUM,
    helpers::{bpf_skb_change_tail, bpf_xdp_adjust_tail},
    programs::{TcContext, XdpContext},
};

use super::MAX_L3;

/// A hook that can send a reply back out of the interface.
pub trait Hook {
    /// Replaces everything after the link header (`l3` bytes) with `reply`;
    /// false when the packet could not be reshaped.
    fn emit<const N: usize>(&self, l3: usize, ethernet: bool, reply: &[u8; N]) -> bool;
}

/// The source and destination MAC addresses exchanged.
#[inline(always)]
fn swapped(macs: [u8; 12]) -> [u8; 12] {
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    swapped
}

impl Hook for XdpContext {
    #[inline(always)]
    fn emit<const N: usize>(&self, l3: usize, ethernet: bool, reply: &[u8; N]) -> bool {
        let l3 = l3 & MAX_L3;
        // Opaque to LLVM, so it subtracts the packet's length as a number and
        // never folds `data_end` itself into the arithmetic (the verifier
        // forbids arithmetic on `data_end`).
        let len = core::hint::black_box(self.data_end() - self.data()) as i32;
        // SAFETY: the helper checks the new size against the buffer.
        if unsafe { bpf_xdp_adjust_tail(self.ctx, (l3 + N) as i32 - len) } != 0 {
            return false;
        }
        let (start, end) = (self.data(), self.data_end());
        // The MAC swap first: checked after the reply's bounds, its own check
        // would be folded into theirs, which the verifier cannot follow.
        if ethernet {
            if start + 12 > end {
                return false;
            }
            // SAFETY: bounds checked above; packet memory may be unaligned.
            unsafe {
                let macs = core::ptr::read_unaligned(start as *const [u8; 12]);
                core::ptr::write_unaligned(start as *mut [u8; 12], swapped(macs));
            }
        }
        if start + l3 + N > end {
            return false;
        }
        // SAFETY: bounds checked above; the scratch buffer is not packet
        // memory.
        unsafe { core::ptr::copy_nonoverlapping(reply.as_ptr(), (start + l3) as *mut u8, N) };
        true
    }
}

impl Hook for TcContext {
    /// Through the skb helpers, which keep the skb's metadata consistent:
    /// a length change drops a receive checksum (`CHECKSUM_COMPLETE`) the
    /// stack could no longer trust, and `BPF_F_RECOMPUTE_CSUM` keeps it
    /// right when the length stays. A VLAN tag the driver took off stays in
    /// the skb and is put back on the way out.
    #[inline(always)]
    fn emit<const N: usize>(&self, l3: usize, ethernet: bool, reply: &[u8; N]) -> bool {
        let l3 = l3 & MAX_L3;
        let macs = if ethernet {
            match self.load::<[u8; 12]>(0) {
                Ok(macs) => Some(macs),
                Err(_) => return false,
            }
        } else {
            None
        };
        // SAFETY: the helper checks the new length against the skb.
        if unsafe { bpf_skb_change_tail(self.skb.skb, (l3 + N) as u32, 0) } != 0 {
            return false;
        }
        // Swapping the two 6-byte halves keeps their one's complement sum:
        // no checksum to recompute.
        if let Some(macs) = macs
            && self.store(0, &swapped(macs), 0).is_err()
        {
            return false;
        }
        self.store(l3, reply, u64::from(BPF_F_RECOMPUTE_CSUM))
            .is_ok()
    }
}
