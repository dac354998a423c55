//! Attaching the programs to interfaces, and keeping them attached across
//! controller restarts and upgrades through links pinned in bpffs.
//!
//! A link pinned as `link:<mode>:<interface>` keeps filtering while no
//! controller runs. A restarted controller finds it and either keeps it (the
//! same program is attached) or swaps the program in place with
//! `BPF_LINK_UPDATE`, which is atomic: no packet goes unfiltered.
//!
//! The program variant follows the interface's link kind: Ethernet links get
//! the Ethernet parser, raw-IP links the one that starts at the IP header.
//! On raw-IP links only generic XDP and TC are tried: the drivers of L3
//! devices run no native XDP (tun runs a native program only in TAP mode),
//! while generic XDP runs in the core for every device.
//!
//! A pinned link outlives its interface: when a VPN daemon deletes `tun0`
//! the link stays pinned but attached to nothing. Before keeping one, its
//! interface index is compared with the interface's current one.

use std::{
    fmt,
    os::fd::{AsFd as _, BorrowedFd},
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::Map,
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        loaded_programs,
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use tollgate_common::{PROG_TC, PROG_TC_IP, PROG_XDP, PROG_XDP_IP};

use super::{bpf_obj, hooks};
use crate::{config::AttachPolicy, links::LinkKind};

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttachMode {
    XdpNative,
    XdpGeneric,
    Tc,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::XdpNative => "xdp-native",
            AttachMode::XdpGeneric => "xdp-generic",
            AttachMode::Tc => "tc",
        }
    }

    fn is_xdp(self) -> bool {
        self != AttachMode::Tc
    }

    /// The modes `policy` allows on a link of `kind`, in the order to try
    /// them.
    pub fn candidates(policy: AttachPolicy, kind: LinkKind) -> Result<&'static [AttachMode]> {
        Ok(match (policy, kind) {
            (AttachPolicy::Auto, LinkKind::Ethernet) => &[
                AttachMode::XdpNative,
                AttachMode::XdpGeneric,
                AttachMode::Tc,
            ],
            (AttachPolicy::Auto, LinkKind::Ip) => &[AttachMode::XdpGeneric, AttachMode::Tc],
            (AttachPolicy::XdpNative, LinkKind::Ethernet) => &[AttachMode::XdpNative],
            (AttachPolicy::XdpNative, LinkKind::Ip) => bail!(
                "attach: xdp-native is not available on raw-IP links (their drivers run no \
                 native XDP); use auto, xdp-generic or tc"
            ),
            (AttachPolicy::XdpGeneric, _) => &[AttachMode::XdpGeneric],
            (AttachPolicy::Tc, _) => &[AttachMode::Tc],
        })
    }

    /// The program that runs in this mode on a link of `kind`.
    pub fn program(self, kind: LinkKind) -> &'static str {
        match (self.is_xdp(), kind) {
            (true, LinkKind::Ethernet) => PROG_XDP,
            (true, LinkKind::Ip) => PROG_XDP_IP,
            (false, LinkKind::Ethernet) => PROG_TC,
            (false, LinkKind::Ip) => PROG_TC_IP,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttachMode {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "xdp-native" => Ok(AttachMode::XdpNative),
            "xdp-generic" => Ok(AttachMode::XdpGeneric),
            "tc" => Ok(AttachMode::Tc),
            _ => bail!("unknown attach mode {s:?}"),
        }
    }
}

/// What attaching did on one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adoption {
    /// Nothing was attached; now we are.
    Fresh,
    /// A previous run's link already runs this very program.
    Kept,
    /// A previous run's link now runs this program (atomic replace).
    Replaced,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub interface: String,
    /// The interface index attached to: a recreated interface has another.
    pub index: u32,
    pub kind: LinkKind,
    pub mode: AttachMode,
    pub adoption: Adoption,
}

fn link_pin(dir: &Path, mode: AttachMode, interface: &str) -> PathBuf {
    dir.join(format!("link:{mode}:{interface}"))
}

/// Links pinned for `interface` by earlier runs, with their modes. Interface
/// names cannot contain ':', so the file name parses unambiguously.
pub fn pinned_links(dir: &Path, interface: &str) -> Result<Vec<(AttachMode, PathBuf)>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(found);
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let mut parts = name.splitn(3, ':');
        if parts.next() == Some("link")
            && let (Some(mode), Some(iface)) = (parts.next(), parts.next())
            && iface == interface
        {
            found.push((mode.parse()?, entry.path()));
        }
    }
    Ok(found)
}

/// Every interface with a pinned link in `dir`.
pub fn pinned_interfaces(dir: &Path) -> Result<Vec<(String, AttachMode)>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(found);
    };
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let mut parts = name.splitn(3, ':');
        if parts.next() == Some("link")
            && let (Some(mode), Some(iface)) = (parts.next(), parts.next())
        {
            found.push((iface.to_string(), mode.parse()?));
        }
    }
    Ok(found)
}

/// Attaches to `interface` (in the calling thread's network namespace, with
/// index `index` and link kind `kind`) in the first of `modes` that works,
/// or adopts the link a previous run pinned. With `pin_dir`, the new link is
/// pinned and outlives this process. `pinned_programs` are the programs the
/// previous run pinned: the running program on a link is compared with ours
/// through them.
pub fn attach(
    ebpf: &mut Ebpf,
    pin_dir: Option<&Path>,
    (interface, index, kind): (&str, u32, LinkKind),
    modes: &[AttachMode],
    pinned_programs: &[ProgramIdentity],
) -> Result<Attachment> {
    let mut previous = match pin_dir {
        Some(dir) => pinned_links(dir, interface)?,
        None => Vec::new(),
    };
    // Links left attached to nothing (their interface was deleted, maybe
    // recreated since) filter nothing: drop them.
    let mut live = Vec::new();
    for (mode, path) in previous.drain(..) {
        if pinned_link_ifindex(&path).ok() == Some(index) {
            live.push((mode, path));
        } else {
            unpin(&path)?;
        }
    }
    let previous = live;
    if let Some((mode, path)) = previous.iter().find(|(m, _)| modes.contains(m)) {
        hooks::load_hook(ebpf, mode.program(kind), pin_dir)?;
        let adoption = adopt(ebpf, *mode, kind, path, pinned_programs)?;
        for (_, stale) in previous.iter().filter(|(_, p)| p != path) {
            unpin(stale)?;
        }
        return Ok(Attachment {
            interface: interface.to_string(),
            index,
            kind,
            mode: *mode,
            adoption,
        });
    }
    // XDP allows one mode per interface: a previous run's XDP link in a mode
    // the configuration no longer allows must go before the new one. Links
    // of the other kind go after, so the interface is never unfiltered.
    let mut errors = Vec::new();
    for &mode in modes {
        for (old, path) in &previous {
            if old.is_xdp() && mode.is_xdp() {
                unpin(path)?;
            }
        }
        let attached = hooks::load_hook(ebpf, mode.program(kind), pin_dir)
            .and_then(|()| attach_fresh(ebpf, pin_dir, interface, kind, mode));
        match attached {
            Ok(()) => {
                for (_, path) in &previous {
                    if path.exists() {
                        unpin(path)?;
                    }
                }
                return Ok(Attachment {
                    interface: interface.to_string(),
                    index,
                    kind,
                    mode,
                    adoption: Adoption::Fresh,
                });
            }
            Err(e) => errors.push(format!("{mode}: {e:#}")),
        }
    }
    Err(anyhow!(
        "cannot attach to {interface}: {}",
        errors.join("; ")
    ))
}

fn attach_fresh(
    ebpf: &mut Ebpf,
    pin_dir: Option<&Path>,
    interface: &str,
    kind: LinkKind,
    mode: AttachMode,
) -> Result<()> {
    let link: FdLink = match mode {
        AttachMode::XdpNative | AttachMode::XdpGeneric => {
            let xdp: &mut Xdp = program_mut(ebpf, mode.program(kind))?;
            let flags = if mode == AttachMode::XdpNative {
                XdpMode::Driver
            } else {
                XdpMode::Skb
            };
            let id = xdp.attach(interface, flags)?;
            if pin_dir.is_none() {
                return Ok(());
            }
            xdp.take_link(id)?
                .try_into()
                .context("XDP attached without a bpf_link (kernel < 5.9): cannot pin it")?
        }
        AttachMode::Tc => {
            let tc: &mut SchedClassifier = program_mut(ebpf, mode.program(kind))?;
            let id = tc.attach(interface, TcAttachType::Ingress)?;
            if pin_dir.is_none() {
                return Ok(());
            }
            tc.take_link(id)?
                .try_into()
                .context("TC attached without tcx (kernel < 6.6): cannot pin it")?
        }
    };
    let dir = pin_dir.expect("checked above");
    link.pin(link_pin(dir, mode, interface))
        .with_context(|| format!("pin link for {interface}"))?;
    Ok(())
}

/// Keeps or updates the program on a previous run's pinned link.
fn adopt(
    ebpf: &mut Ebpf,
    mode: AttachMode,
    kind: LinkKind,
    path: &Path,
    pinned_programs: &[ProgramIdentity],
) -> Result<Adoption> {
    let link: FdLink = PinnedLink::from_pin(path)
        .with_context(|| format!("open pinned link {}", path.display()))?
        .into();
    let running = link.info()?.program_id();
    let name = mode.program(kind);
    let ours = ebpf
        .program(name)
        .ok_or_else(|| anyhow!("no program {name}"))?
        .fd()?;
    let ours = ProgramIdentity::of(ours.as_fd())?;
    // The previous run's pinned program, else any loaded program (listing
    // those needs CAP_SYS_ADMIN; without it we cannot tell, and replace —
    // atomically, so that is safe, only not minimal).
    let running = match pinned_programs.iter().find(|p| p.id == running) {
        Some(p) => Some(p.clone()),
        None => loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == running)
            .and_then(|p| p.fd().ok())
            .map(|fd| ProgramIdentity::of(fd.as_fd()))
            .transpose()?,
    };
    let private = private_maps(ebpf)?;
    if running.is_some_and(|r| r.same_as(&ours, &private)) {
        return Ok(Adoption::Kept);
    }
    if mode.is_xdp() {
        let xdp: &mut Xdp = program_mut(ebpf, name)?;
        let id = xdp.attach_to_link(XdpLink::try_from(link)?)?;
        // The link stays pinned; release our handle without detaching.
        drop(FdLink::try_from(xdp.take_link(id)?)?);
    } else {
        let tc: &mut SchedClassifier = program_mut(ebpf, name)?;
        let id = tc.attach_to_link(SchedClassifierLink::try_from(link)?)?;
        drop(FdLink::try_from(tc.take_link(id)?)?);
    }
    Ok(Adoption::Replaced)
}

/// The interface index a pinned XDP or tcx link is attached to; 0 once its
/// interface is gone. aya's `LinkInfo` does not expose it, so this asks
/// the kernel directly (`BPF_OBJ_GET`, then `BPF_OBJ_GET_INFO_BY_FD`).
fn pinned_link_ifindex(path: &Path) -> Result<u32> {
    use std::os::fd::AsFd as _;
    let fd = bpf_obj::open_pinned(path)?;
    // struct bpf_link_info: type, id, prog_id, then an 8-byte aligned union
    // whose xdp and tcx members both start with the ifindex (offset 16).
    let mut info = [0u64; 32];
    // SAFETY: plain integers, larger than the kernel's struct (the tail
    // stays zero, as the kernel requires).
    unsafe { bpf_obj::object_info(fd.as_fd(), &mut info) }
        .with_context(|| format!("link info of {}", path.display()))?;
    Ok(info[2] as u32)
}

/// What makes two loaded programs the same: the same instructions (tag) on
/// the same pinned maps (after an upgrade to new maps the code may be
/// identical).
#[derive(Clone, Debug)]
pub struct ProgramIdentity {
    pub id: u32,
    tag: [u8; 8],
    maps: Vec<u32>,
}

impl ProgramIdentity {
    /// Whether `self`, a running program, is `ours`, whose maps that are
    /// its own load's, not pinned, are `private` (its constants,
    /// `.rodata`: every load makes new ones). The running program has as
    /// many maps, every pinned one of ours among them; its private ones
    /// hold what ours hold, since the pins it shares with us passed the
    /// layout check (`layout::check_pins`), which the constants follow
    /// (the device tables' geometry).
    fn same_as(&self, ours: &ProgramIdentity, private: &[u32]) -> bool {
        self.tag == ours.tag
            && self.maps.len() == ours.maps.len()
            && ours
                .maps
                .iter()
                .filter(|m| !private.contains(m))
                .all(|m| self.maps.contains(m))
    }

    /// The program pinned at `path`.
    pub fn pinned(path: &Path) -> Result<ProgramIdentity> {
        use std::os::fd::AsFd as _;
        ProgramIdentity::of(bpf_obj::open_pinned(path)?.as_fd())
    }

    /// The program behind `fd`. Asked through the fd itself: aya's
    /// `ProgramInfo::map_ids` reopens the program by id, which needs
    /// CAP_SYS_ADMIN, and the controller runs without it.
    pub fn of(fd: BorrowedFd<'_>) -> Result<ProgramIdentity> {
        /// The head of struct bpf_prog_info, up to the map ids; the kernel
        /// fills no more than the length it is given.
        #[repr(C)]
        #[derive(Default)]
        struct Info {
            prog_type: u32,
            id: u32,
            tag: [u8; 8],
            jited_prog_len: u32,
            xlated_prog_len: u32,
            jited_prog_insns: u64,
            xlated_prog_insns: u64,
            load_time: u64,
            created_by_uid: u32,
            nr_map_ids: u32,
            map_ids: u64,
        }
        let query = |info: &mut Info| -> Result<()> {
            // SAFETY: `Info` is the head of struct bpf_prog_info, and
            // `map_ids` points at `nr_map_ids` u32s (or is null with 0).
            unsafe { bpf_obj::object_info(fd, info) }.context("program info")
        };
        // First how many maps, then their ids.
        let mut info = Info::default();
        query(&mut info)?;
        let mut maps = vec![0u32; info.nr_map_ids as usize];
        let mut again = Info {
            nr_map_ids: maps.len() as u32,
            map_ids: maps.as_mut_ptr() as u64,
            ..Info::default()
        };
        query(&mut again)?;
        maps.truncate(again.nr_map_ids as usize);
        maps.sort_unstable();
        Ok(ProgramIdentity {
            id: again.id,
            tag: again.tag,
            maps,
        })
    }
}

/// The ids of the object's maps that belong to this load alone: its data
/// sections (`.rodata`), which aya names by section and never pins.
fn private_maps(ebpf: &Ebpf) -> Result<Vec<u32>> {
    ebpf.maps()
        .filter(|(name, _)| name.starts_with('.'))
        .map(|(name, map)| match map {
            Map::Array(data) => Ok(data.info()?.id()),
            _ => bail!("map {name} is a data section but not an array"),
        })
        .collect()
}

/// Removes a pinned link; the kernel detaches it once no fd refers to it.
pub fn unpin(path: &Path) -> Result<()> {
    std::fs::remove_file(path).with_context(|| format!("unpin {}", path.display()))
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("BPF object has no program {name}"))?;
    Ok(prog.try_into()?)
}

#[cfg(test)]
mod tests {
    use super::ProgramIdentity;

    fn program(tag: u8, maps: &[u32]) -> ProgramIdentity {
        ProgramIdentity {
            id: 1,
            tag: [tag; 8],
            maps: maps.to_vec(),
        }
    }

    #[test]
    fn a_program_is_ours_on_our_pins_whatever_its_own_constants() {
        // Ours: pinned maps 1 and 2, our constants 30.
        let ours = program(7, &[1, 2, 30]);
        let private = [30];
        // The previous run's load: the same pins, its own constants 29.
        assert!(program(7, &[1, 2, 29]).same_as(&ours, &private));
        // Other code, other pins, or a map more or less: not ours.
        assert!(!program(8, &[1, 2, 29]).same_as(&ours, &private));
        assert!(!program(7, &[1, 5, 29]).same_as(&ours, &private));
        assert!(!program(7, &[1, 2]).same_as(&ours, &private));
        assert!(!program(7, &[1, 2, 29, 31]).same_as(&ours, &private));
        // Without constants of its own, the maps must be ours exactly.
        assert!(program(7, &[1, 2]).same_as(&program(7, &[1, 2]), &[]));
        assert!(!program(7, &[1, 3]).same_as(&program(7, &[1, 2]), &[]));
    }
}
