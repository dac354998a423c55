//! Loads the embedded BPF object, attaches it and reads its maps.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode, tc},
};
use tollgate_common::{Counter, MAP_STATS, PROG_TC, PROG_XDP, Stat};

/// The BPF object built by `build.rs` from `ebpf/program`.
pub static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tollgate"));

/// XDP return codes (`enum xdp_action`), as `BPF_PROG_TEST_RUN` reports them.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    XdpNative,
    XdpGeneric,
    Tc,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::XdpNative => "xdp-native",
            AttachMode::XdpGeneric => "xdp-generic",
            AttachMode::Tc => "tc",
        })
    }
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
}

impl Dataplane {
    /// Loads and verifies both entry points.
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(PROGRAM_OBJECT).context("load BPF object")?;
        let xdp: &mut Xdp = program(&mut ebpf, PROG_XDP)?;
        xdp.load().context("verify XDP program")?;
        let tc: &mut SchedClassifier = program(&mut ebpf, PROG_TC)?;
        tc.load().context("verify TC program")?;
        Ok(Dataplane { ebpf })
    }

    /// Attaches to `interface` (in the calling thread's network namespace)
    /// in the first of `modes` that works, returning which one did.
    pub fn attach(&mut self, interface: &str, modes: &[AttachMode]) -> Result<AttachMode> {
        let mut errors = Vec::new();
        for &mode in modes {
            match self.attach_one(interface, mode) {
                Ok(()) => return Ok(mode),
                Err(e) => errors.push(format!("{mode}: {e:#}")),
            }
        }
        Err(anyhow!(
            "cannot attach to {interface}: {}",
            errors.join("; ")
        ))
    }

    fn attach_one(&mut self, interface: &str, mode: AttachMode) -> Result<()> {
        match mode {
            AttachMode::XdpNative | AttachMode::XdpGeneric => {
                let xdp_mode = if mode == AttachMode::XdpNative {
                    XdpMode::Driver
                } else {
                    XdpMode::Skb
                };
                let xdp: &mut Xdp = program(&mut self.ebpf, PROG_XDP)?;
                xdp.attach(interface, xdp_mode)?;
            }
            AttachMode::Tc => {
                // Kernels with tcx (>= 6.6) need no qdisc; older ones need clsact.
                if let Err(e) = tc::qdisc_add_clsact(interface) {
                    tracing::debug!("clsact on {interface}: {e}");
                }
                let prog: &mut SchedClassifier = program(&mut self.ebpf, PROG_TC)?;
                prog.attach(interface, TcAttachType::Ingress)?;
            }
        }
        Ok(())
    }

    /// Sums the per-CPU statistic `stat`.
    pub fn stat(&self, stat: Stat) -> Result<Counter> {
        let map = self
            .ebpf
            .map(MAP_STATS)
            .ok_or_else(|| anyhow!("no map {MAP_STATS}"))?;
        let stats = PerCpuArray::<_, Counter>::try_from(map)?;
        let per_cpu = stats.get(&(stat as u32), 0)?;
        Ok(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        }))
    }

    /// Runs the XDP program once on `frame` with `BPF_PROG_TEST_RUN` and
    /// returns its action.
    pub fn test_run_xdp(&self, frame: &[u8]) -> Result<u32> {
        let xdp: &Xdp = self
            .ebpf
            .program(PROG_XDP)
            .ok_or_else(|| anyhow!("no program {PROG_XDP}"))?
            .try_into()?;
        let result = xdp.test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })?;
        Ok(result.return_value)
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("BPF object has no program {name}"))?;
    Ok(prog.try_into()?)
}
