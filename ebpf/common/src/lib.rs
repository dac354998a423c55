//! The ABI shared by Tollgate's BPF program and its controller.
//!
//! Everything the two halves exchange through maps is defined here once:
//! map names, key and value layouts, flag bits and counter indices. Every type
//! is `repr(C)` with explicit padding fields, so its layout is identical on
//! both sides and no uninitialised byte ever reaches the kernel; the size
//! asserts at the bottom of each module catch accidental changes.
//!
//! # Double-buffered policy
//! Every table derived from a policy exists twice, once per *slot*. The slot
//! number is part of every key (or of the array index), and `TG_ACTIVE` holds
//! the policy generation, whose low bit is the slot the dataplane reads. The
//! controller rewrites the inactive slot, then writes the next generation to
//! `TG_ACTIVE` with one 4-byte store, so a packet sees either the whole old
//! policy or the whole new one. A packet reads `TG_ACTIVE` once.
#![no_std]

pub mod classifier;
pub mod device_table;
pub mod event;
pub mod learned;
pub mod maps;
pub mod ntp;
pub mod policy;
pub mod precedence;
pub mod probe;
pub mod stats;

pub use classifier::*;
pub use device_table::*;
pub use event::*;
pub use learned::*;
pub use maps::*;
pub use ntp::*;
pub use policy::*;
pub use probe::*;
pub use stats::*;

/// Address family tags stored in keys and events.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Implements `aya::Pod` for ABI types when built for userspace.
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: every listed type is `repr(C)`, `Copy`, and has explicit
            // padding fields, so every byte pattern is a valid value.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use pod;
