//! `tollgate_probe`: the policy decision for one frame, for the generation
//! the controller names in `TG_PROBE` (see `tollgate_common::probe`). It is
//! never attached, so no device's packet can reach it; the controller runs
//! it with `BPF_PROG_TEST_RUN` on the slot it has just written, before the
//! flip. It shares every policy map with the attached programs and runs the
//! same [`decide::decide`], so what it returns is what they would do once
//! the slot is live; it charges nothing and remembers nothing.

use aya_ebpf::{
    bindings::xdp_action, btf_maps::Array, macros::btf_map, macros::xdp, programs::XdpContext,
};
use tollgate_common::ProbeResult;

use crate::{
    decide,
    parse::{self, Frame, Parsed},
};

#[btf_map]
pub static TG_PROBE: Array<u32, 1> = Array::new();

#[btf_map]
pub static TG_PROBE_RESULT: Array<ProbeResult, 1> = Array::new();

/// `XDP_PASS` after writing a decision to `TG_PROBE_RESULT`; `XDP_DROP`
/// when the frame is no IP packet the policy decides (nothing is written).
#[xdp]
pub fn tollgate_probe(ctx: XdpContext) -> u32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let Ok(Parsed::Ip(packet)) = parse::ethernet(&frame) else {
        return xdp_action::XDP_DROP;
    };
    let generation = TG_PROBE.get(0).copied().unwrap_or(0);
    let d = decide::decide(generation, &packet);
    let result = ProbeResult {
        counter: d.counter,
        verdict: d.verdict as u8,
        reason: d.reason as u8,
        _pad: [0; 2],
    };
    if TG_PROBE_RESULT.set(0, result, 0).is_err() {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}
