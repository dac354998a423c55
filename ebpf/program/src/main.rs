//! Tollgate dataplane: XDP on the device-facing interface, with a TC
//! (clsact/tcx ingress) twin for interfaces where XDP is unavailable.
#![no_std]
#![no_main]

mod maps;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use tollgate_common::Stat;

#[xdp]
pub fn tollgate_xdp(ctx: XdpContext) -> u32 {
    maps::count(Stat::Seen, (ctx.data_end() - ctx.data()) as u64);
    xdp_action::XDP_PASS
}

#[classifier]
pub fn tollgate_tc(ctx: TcContext) -> i32 {
    maps::count(Stat::Seen, u64::from(ctx.len()));
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
