//! xdp-filter (xdp-tools), the comparison: loaded on a veth in a namespace
//! of its own, filled with the same destinations, test-run by program id.

use std::{net::IpAddr, os::fd::OwnedFd, path::Path, process::Command};

use anyhow::{Context as _, Result, ensure};
use ipnet::IpNet;
use tollgate::{datapath::XDP_PASS, netns::Namespace};

use crate::{
    DEVICE_COUNTS, bpf,
    cold::{self, once_each},
    fixtures::{Family, frame, probe_sources, with_last_byte},
    measure::{Cell, Floor},
};

/// xdp-filter's allow probe: to the last address of the family's last
/// destination prefix, which the filter holds.
pub fn xdp_filter_allow_frame(destinations: &[IpNet], family: Family) -> Result<Vec<u8>> {
    let src = probe_sources(DEVICE_COUNTS[1])[family as usize];
    Ok(frame(src, allow_destination(destinations, family)?))
}

fn allow_destination(destinations: &[IpNet], family: Family) -> Result<IpAddr> {
    destinations
        .iter()
        .rev()
        .find(|d| Family::of(d) == family)
        .map(IpNet::broadcast)
        .with_context(|| format!("no {family:?} destination"))
}

/// xdp-filter on a veth in a namespace of its own; unloaded (and its pins
/// removed) on drop.
pub struct XdpFilter {
    pub ns: Namespace,
    pub prog: OwnedFd,
    pub name: String,
    /// libxdp creates /sys/fs/bpf/xdp; remove it after if it was not there.
    pub remove_libxdp_dir: bool,
}

pub const XDP_FILTER: &str = "/usr/sbin/xdp-filter";
pub const XDP_FILTER_PINS: &str = "/sys/fs/bpf/xdp-filter";
pub const LIBXDP_DIR: &str = "/sys/fs/bpf/xdp";

/// Which of xdp-filter's programs is loaded: in allow-list mode (`-p deny`)
/// both pass a hit on the destination address and drop a miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Features {
    /// `-f ipv4,ipv6` (`xdpfilt_dny_ip`): the address lookups only, the
    /// least work xdp-filter can do per packet.
    Addresses,
    /// No `-f`, xdp-filter's default, every feature (`xdpfilt_dny_all`):
    /// the Ethernet addresses, then the IP addresses, then the TCP or UDP
    /// ports. The ports are what Tollgate's rules match on too.
    All,
}

impl XdpFilter {
    pub fn load(destinations: &[IpNet], features: Features) -> Result<XdpFilter> {
        ensure!(
            Path::new(XDP_FILTER).exists(),
            "{XDP_FILTER} is not installed"
        );
        // xdp-filter pins its maps at a fixed path: one set per machine.
        ensure!(
            !Path::new(XDP_FILTER_PINS).exists(),
            "{XDP_FILTER_PINS} exists: xdp-filter is in use elsewhere on this machine"
        );
        let remove_libxdp_dir = !Path::new(LIBXDP_DIR).exists();
        let ns = Namespace::create(&format!("tg-benchdp-{}", std::process::id()))?;
        ns.ip(&[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ])?;
        ns.ip(&["link", "set", "veth0", "up"])?;
        ns.ip(&["link", "set", "veth1", "up"])?;
        let mut filter = XdpFilter {
            ns,
            prog: bpf::placeholder_fd()?,
            name: String::new(),
            remove_libxdp_dir,
        };
        // nsenter, not `ip netns exec`: the latter gives xdp-filter a mount
        // namespace of its own, without the host's bpffs.
        let mut args = vec!["load", "-m", "skb", "-p", "deny"];
        if features == Features::Addresses {
            args.extend(["-f", "ipv4,ipv6"]);
        }
        args.push("veth0");
        filter.run(&args)?;
        let (id, name) = filter.attached_program()?;
        filter.prog = bpf::prog_fd_by_id(id)?;
        filter.name = name;
        filter.fill(destinations)?;
        Ok(filter)
    }

    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns.name()))
            .arg(XDP_FILTER)
            .args(args)
            .output()
            .context("run nsenter (util-linux)")?;
        ensure!(
            out.status.success(),
            "xdp-filter {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The id and name of the XDP program on veth0.
    pub fn attached_program(&self) -> Result<(u32, String)> {
        let json = self.ns.ip(&["-d", "-j", "link", "show", "dev", "veth0"])?;
        let links: serde_json::Value = serde_json::from_str(&json).context("ip -j link")?;
        let prog = &links[0]["xdp"]["prog"];
        let id = prog["id"]
            .as_u64()
            .with_context(|| format!("no XDP program on veth0: {json}"))?;
        Ok((id as u32, prog["name"].as_str().unwrap_or("?").to_string()))
    }

    /// Filters on the last address of each destination prefix (dst mode).
    pub fn fill(&self, destinations: &[IpNet]) -> Result<()> {
        for family in [Family::V4, Family::V6] {
            let addrs: Vec<IpAddr> = destinations
                .iter()
                .filter(|d| Family::of(d) == family)
                .map(IpNet::broadcast)
                .collect();
            let Some(first) = addrs.first() else { continue };
            self.run(&["ip", "-m", "dst", &first.to_string()])?;
            let map_name = match family {
                Family::V4 => "filter_ipv4",
                Family::V6 => "filter_ipv6",
            };
            let map = bpf::obj_get(&Path::new(XDP_FILTER_PINS).join(map_name))?;
            let key = |a: &IpAddr| match a {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            // Per-CPU values: the flags xdp-filter set, on every CPU.
            let value = bpf::map_lookup(&map, &key(first), 8 * bpf::possible_cpus()?)?;
            for addr in &addrs[1..] {
                bpf::map_update(&map, &key(addr), &value)
                    .with_context(|| format!("add {addr} to xdp-filter's {map_name}"))?;
            }
        }
        Ok(())
    }

    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, u64)> {
        bpf::test_run(&self.prog, frame, repeat)
    }

    /// Its allow probe from 250 sources, each once per trial at `repeat` 1
    /// after the CPU idled, with the floor after it (`cold::once_each`), as
    /// Tollgate's first packets are measured; then each source's probe
    /// twice in a row, as Tollgate's "right after the same allow" is: one
    /// run of the program on its own, nothing cold. (first, again, floor).
    pub fn first_packets(
        &self,
        destinations: &[IpNet],
        family: Family,
        trials: usize,
    ) -> Result<(Cell, Cell, Cell)> {
        let dst = allow_destination(destinations, family)?;
        let src = probe_sources(DEVICE_COUNTS[1])[family as usize];
        let frames: Vec<Vec<u8>> = (1..=cold::FRAMES as u8)
            .map(|host| frame(with_last_byte(src, host), dst))
            .collect();
        let floor = Floor::load(bpf::ProgType::Xdp)?;
        let allow = |i: usize| {
            let (action, ns) = self.test_run(&frames[i], 1)?;
            ensure!(action == XDP_PASS, "xdp-filter dropped its allow probe");
            Ok(ns)
        };
        let floor = |i: usize| Ok(floor.test_run(&frames[i], 1)?.1);
        let first = once_each(trials, frames.len(), &[&allow, &floor])?;
        let again = once_each(trials, frames.len(), &[&allow, &allow])?;
        Ok((first[0], again[1], first[1]))
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        if let Err(e) = self.run(&["unload", "veth0"]) {
            eprintln!("warning: {e:#}");
        }
        if self.remove_libxdp_dir {
            let _ = std::fs::remove_dir(LIBXDP_DIR);
        }
    }
}
