//! The four hook programs (XDP and TC, each for Ethernet and raw-IP
//! links) are verified when first needed, not all at `open`.
//!
//! The kernel's verifier takes 0.3–0.6 s for each hook at this size, 2 s
//! for the four on the 2-vCPU machine, and at a cold start that was the
//! longest step before READY=1. A gateway's interfaces are usually of one
//! kind and all run one of them. So `Dataplane::open` verifies the hooks its
//! caller names (the daemon: those the configured interfaces present at the
//! start will run, `Options::hooks_at_open`); an attach verifies the one
//! its mode needs if that has not happened; and the daemon verifies the
//! rest right after READY=1 ([`LateHooks`], which holds the BPF object's
//! own lock and not the dataplane's: a reload, a scrape or the deny log
//! does not wait for it), so that an interface appearing later does not
//! wait for the verifier. A hook the verifier rejects then fails the
//! attach that needs it, which the daemon reports as it reports any failed
//! attach.

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Map, MapData},
    programs::{Program, ProgramError},
};
use tollgate_common::PROGRAMS;

/// Verifies the hooks the start did not, holding only the BPF object.
pub struct LateHooks {
    pub(super) object: Arc<Mutex<Ebpf>>,
    pub(super) pin_dir: Option<PathBuf>,
}

impl LateHooks {
    /// The hook programs not verified yet.
    pub fn unverified(&self) -> Vec<&'static str> {
        let object = self.object.lock().expect("BPF object lock");
        PROGRAMS
            .into_iter()
            .filter(|name| !object.program(name).is_some_and(is_loaded))
            .collect()
    }

    /// Verifies the hook program `name` (and pins it) unless it was.
    pub fn verify(&self, name: &str) -> Result<()> {
        let mut object = self.object.lock().expect("BPF object lock");
        load_hook(&mut object, name, self.pin_dir.as_deref())
    }
}

/// Verifies the hook program `name` unless it was, and pins it in
/// `pin_dir`, replacing the previous run's pin (whose identity `open` read
/// before; its links keep that program running until they are replaced).
pub fn load_hook(ebpf: &mut Ebpf, name: &str, pin_dir: Option<&Path>) -> Result<()> {
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("no program {name}"))?;
    if is_loaded(program) {
        return Ok(());
    }
    match program {
        Program::Xdp(xdp) => verify(name, || xdp.load())?,
        Program::SchedClassifier(tc) => verify(name, || tc.load())?,
        _ => bail!("{name} is not a hook program"),
    }
    match pin_dir {
        Some(dir) => pin_hook(ebpf, name, dir),
        None => Ok(()),
    }
}

/// Pins the loaded hook `name` in `dir` in place of the previous run's.
pub fn pin_hook(ebpf: &mut Ebpf, name: &str, dir: &Path) -> Result<()> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("no program {name}"))?
        .pin(&path)
        .with_context(|| format!("pin {}", path.display()))
}

/// A second handle on the map `name`, for a task that may drop it: the
/// object keeps its own open. A hook verified late refers to its maps by
/// the descriptors the object was loaded with; were one closed, the
/// verifier would refuse the hook, or bind it to whatever map reused that
/// number. So no map the hooks use leaves the object or the `Dataplane`
/// before they are all verified: tasks get duplicates.
pub fn duplicate(ebpf: &Ebpf, name: &str) -> Result<Map> {
    let map = ebpf
        .map(name)
        .ok_or_else(|| anyhow!("BPF object has no map {name}"))?;
    let again = |data: &MapData| -> Result<MapData> {
        let fd = data.fd().as_fd().try_clone_to_owned()?;
        Ok(MapData::from_fd(fd)?)
    };
    let copy = match map {
        Map::Array(data) => Map::Array(again(data).with_context(|| format!("map {name}"))?),
        Map::HashMap(data) => Map::HashMap(again(data).with_context(|| format!("map {name}"))?),
        Map::RingBuf(data) => Map::RingBuf(again(data).with_context(|| format!("map {name}"))?),
        _ => bail!("map {name}: no second handle for its type"),
    };
    Ok(copy)
}

/// Whether `program` has been loaded into the kernel (and verified).
pub fn is_loaded(program: &Program) -> bool {
    program.fd().is_ok()
}

/// Loads the program `name` with `load`, which runs the kernel's verifier
/// on it: the bulk of the dataplane's start, hence timed.
pub fn verify(name: &str, load: impl FnOnce() -> Result<(), ProgramError>) -> Result<()> {
    let begin = Instant::now();
    load().with_context(|| format!("verify {name}"))?;
    tracing::debug!("verified {name} in {} ms", begin.elapsed().as_millis());
    Ok(())
}
