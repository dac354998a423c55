//! nft on shape (b)'s elements, in the same run, by shape (a)'s method
//! (`nft_full` in `reload.rs`): a table `inet tollgate` in a network
//! namespace of the bench's own, loaded with `ip netns exec NS nft`, timed
//! from just before the file is written (or the command starts) to nft's
//! exit (it has committed its netlink transaction by then). The sets hold
//! the same elements as the fleet: `devices4`, every device /32 (a plain
//! hash set: they are all /32s), and `allowed4`/`allowed6`, every rule's
//! prefix (interval sets with `auto-merge`, since the pool nests
//! prefixes); a forward chain, policy drop, accepts from `@devices4` to
//! them. It has none of the fleet's per-group rules, ports, protocols or
//! denies: nft is given the smaller job.
//! - **add element**: `nft add element inet tollgate allowed4 { P }`, a
//!   new /24 each time (198.18.0.0/15, the benchmarking range, in no
//!   version of the fleet), which then must be in the set (not timed).
//! - **full**: `nft -f` of `flush table inet tollgate` and the whole table,
//!   in one file (one transaction), the fleet's versions in turn as the
//!   tollgate full replacements have them.

use std::{fmt::Write as _, net::Ipv4Addr, path::Path, time::Instant};

use anyhow::{Result, ensure};
use ipnet::IpNet;
use testkit::explicit_fleet::{self, Shape};
use tollgate::netns::Namespace;

use super::{Samples, fleet_changes::VERSIONS, nft_load};

pub struct NftFleet {
    pub add_element: Samples,
    pub full: Samples,
}

/// The ruleset for the fleet with `prefixes`.
fn ruleset(shape: &Shape, prefixes: &[IpNet]) -> String {
    let mut devices = String::new();
    for i in 0..shape.devices {
        let _ = write!(
            devices,
            "{}{}",
            if i == 0 { "" } else { ", " },
            explicit_fleet::device(i)
        );
    }
    // An empty set takes no `elements` clause.
    let elements = |v4: bool| {
        let list: Vec<String> = prefixes
            .iter()
            .filter(|p| p.addr().is_ipv4() == v4)
            .map(ToString::to_string)
            .collect();
        if list.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }};", list.join(", "))
        }
    };
    format!(
        "table inet tollgate
flush table inet tollgate
table inet tollgate {{
  set devices4 {{ type ipv4_addr; elements = {{ {devices} }}; }}
  set allowed4 {{ type ipv4_addr; flags interval; auto-merge;{} }}
  set allowed6 {{ type ipv6_addr; flags interval; auto-merge;{} }}
  chain fleet {{
    type filter hook forward priority filter; policy drop;
    ip saddr @devices4 ip daddr @allowed4 counter accept
    ip6 daddr @allowed6 counter accept
    counter drop
  }}
}}
",
        elements(true),
        elements(false)
    )
}

pub fn run(
    ns: &Namespace,
    dir: &Path,
    shape: &Shape,
    versions: &[Vec<IpNet>],
    iterations: usize,
) -> Result<NftFleet> {
    ensure!(iterations < 256, "at most 255 iterations for the nft adds");
    std::fs::create_dir_all(dir)?;
    let file = dir.join("ruleset.nft");
    let load = |text: &str| nft_load(ns, &file, text);
    load(&ruleset(shape, &versions[0]))?;
    let mut add_element = Samples::default();
    for i in 0..iterations {
        let prefix = format!(
            "{}/24",
            Ipv4Addr::new(198, 18 + (i >> 7) as u8, (i as u8 & 127) * 2, 0)
        );
        let element = format!("{{ {prefix} }}");
        let start = Instant::now();
        let out = ns.exec(
            "nft",
            &["add", "element", "inet", "tollgate", "allowed4", &element],
        )?;
        add_element.push(start.elapsed());
        ensure!(
            out.status.success(),
            "nft add element: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let args = ["get", "element", "inet", "tollgate", "allowed4", &element];
        ensure!(
            ns.exec("nft", &args)?.status.success(),
            "nft: {prefix} is not in the set after its add"
        );
    }
    let mut full = Samples::default();
    for i in 0..iterations {
        // Built before the clock starts, as tollgate's files are.
        let text = ruleset(shape, &versions[(i + 1) % VERSIONS]);
        full.push(load(&text)?);
    }
    ns.exec("nft", &["delete", "table", "inet", "tollgate"])?;
    Ok(NftFleet { add_element, full })
}
