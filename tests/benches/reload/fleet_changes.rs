//! The changes shape (b) is reloaded after, the same for the in-process
//! run (`fleet.rs`) and the daemon's (`fleet_daemon.rs`): what each writes,
//! the probe packet that must then get the model's verdict, and what the
//! policy in force must then say (for the changes that touch many files,
//! which a reload could catch half-written).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, ensure};
use ipnet::IpNet;
use testkit::{
    bench,
    explicit_fleet::{self, Shape},
};
use tollgate::{policy::Policy, tables::PacketFacts};

use super::fleet_git::GitChain;

/// Versions of the fleet the full replacements cycle through (as shape
/// (a)'s: the slot written never already holds the new one).
pub const VERSIONS: usize = 3;
/// Every hundredth rule of each group is one a `git pull` changes.
pub const PULL_STRIDE: usize = 100;
/// The ports the one-line edit cycles through.
const EDIT_PORTS: [u16; 3] = [40_001, 40_002, 40_003];

pub struct Changes {
    pub shape: Shape,
    /// The rules' prefixes, per version; version 0 is the starting policy
    /// and the base commit of the `git pull`s.
    pub versions: Vec<Vec<IpNet>>,
    /// The states the `git pull`s cycle through: version 0, then version 0
    /// with every `PULL_STRIDE`th rule of each group moved to its prefix
    /// in version 1, then in version 2.
    pub pull_states: Vec<Vec<IpNet>>,
    /// The rule the edits change: the last TCP allow to an IPv4 prefix in
    /// g000.
    edited: usize,
    g000: String,
    original_line: String,
}

impl Changes {
    pub fn new(pool: &bench::Pool, shape: Shape) -> Result<Changes> {
        let rules = shape.rules();
        // Every rule gets another prefix of the same pool share: fresh
        // prefixes from further along the pool are IPv6 ones mostly, whose
        // deeper tries would not fit the slot's `TG_TRIE` (the dataplane's
        // bound), and would measure a different policy.
        let base = pool.range(0, rules);
        let versions: Vec<Vec<IpNet>> = (0..VERSIONS)
            .map(|v| {
                let mut prefixes = base.clone();
                prefixes.rotate_left(v * (shape.rules_per_group + 1) % rules);
                prefixes
            })
            .collect();
        let pull_states = (0..VERSIONS)
            .map(|v| {
                let mut state = versions[0].clone();
                for (i, prefix) in state.iter_mut().enumerate() {
                    if pulled_rule(&shape, i) {
                        *prefix = versions[v][i];
                    }
                }
                state
            })
            .collect();
        let edited = (0..shape.rules_per_group)
            .rev()
            .find(|&j| j % 3 == 0 && j % 7 != 6 && versions[0][j].addr().is_ipv4())
            .context("g000 has no TCP allow to an IPv4 prefix")?;
        let g000 = explicit_fleet::group_file(&shape, &versions[0], 0);
        let original_line =
            explicit_fleet::rule_line(edited, &versions[0][edited], explicit_fleet::port(edited));
        ensure!(g000.contains(&original_line), "the edited rule's line");
        Ok(Changes {
            shape,
            versions,
            pull_states,
            edited,
            g000,
            original_line,
        })
    }

    /// Every file of version `v`.
    pub fn files(&self, v: usize) -> Vec<(String, String)> {
        explicit_fleet::files(&self.shape, &self.versions[v])
    }

    /// Every file of pull state `s`.
    pub fn pull_files(&self, s: usize) -> Vec<(String, String)> {
        explicit_fleet::files(&self.shape, &self.pull_states[s])
    }

    /// The policy directory `dir`, holding version 0, made the git
    /// checkout the pulls fast-forward, with `count` pulls ready.
    pub fn git_chain(&self, dir: &Path, scratch: &Path, count: usize) -> Result<GitChain> {
        GitChain::create(dir, scratch, VERSIONS, |s| self.pull_files(s), count)
    }

    /// New group file `k`: `a-new-NN`, named so that each sorts before the
    /// ones added earlier and before every fleet group, with one device of
    /// its own and one rule. (Its path, its text, a packet it allows.)
    pub fn new_group(&self, dir: &Path, k: usize) -> (PathBuf, String, PacketFacts) {
        let name = format!("a-new-{:02}", 99 - k);
        let device = Ipv4Addr::new(172, 16, 0, 1 + k as u8);
        let path = dir.join(format!("groups/{name}.yaml"));
        let text = explicit_fleet::small_group_file(&name, device, "192.0.2.0/24");
        let probe = PacketFacts {
            src: device.into(),
            dst: Ipv4Addr::new(192, 0, 2, 9).into(),
            proto: 6,
            dport: Some(443),
        };
        (path, text, probe)
    }

    /// The path of g000, the largest file (the last group takes the
    /// remainder of the devices, but the others are as big).
    pub fn g000_path(&self, dir: &Path) -> PathBuf {
        dir.join(explicit_fleet::group_path(0))
    }

    /// Edit `i`: g000 with the edited rule on port `EDIT_PORTS[i % 3]`,
    /// and a packet to it.
    pub fn edit(&self, i: usize) -> (String, PacketFacts) {
        let port = EDIT_PORTS[i % EDIT_PORTS.len()];
        let prefix = self.versions[0][self.edited];
        let line = explicit_fleet::rule_line(self.edited, &prefix, port);
        let probe = PacketFacts {
            src: explicit_fleet::device(0).into(),
            // The last address: inside the prefix, whatever its length.
            dst: prefix.broadcast(),
            proto: 6,
            dport: Some(port),
        };
        (self.g000.replacen(&self.original_line, &line, 1), probe)
    }

    /// g000 as it was before the edits.
    pub fn g000(&self) -> &str {
        &self.g000
    }

    /// A packet to the first rule (TCP, allow) of the first group whose
    /// first rule goes to an IPv4 prefix in `prefixes`.
    pub fn first_rule_probe(&self, prefixes: &[IpNet]) -> Result<PacketFacts> {
        let g = (0..self.shape.groups)
            .find(|&g| prefixes[g * self.shape.rules_per_group].addr().is_ipv4())
            .context("no group's first rule goes to an IPv4 prefix")?;
        let first_device = explicit_fleet::devices_of(&self.shape, g).start;
        Ok(PacketFacts {
            src: explicit_fleet::device(first_device).into(),
            dst: prefixes[g * self.shape.rules_per_group].broadcast(),
            proto: 6,
            dport: Some(explicit_fleet::port(0)),
        })
    }

    /// Whether `policy` is the fleet with `prefixes` as far as the first
    /// rule of every group tells (the full replacements and the pulls
    /// change all of them): false while some files are still the old ones.
    pub fn first_rules_are(&self, policy: &Policy, prefixes: &[IpNet]) -> bool {
        (0..self.shape.groups).all(|g| {
            let name = explicit_fleet::group_name(g);
            let written = prefixes[g * self.shape.rules_per_group].to_string();
            policy.groups.iter().any(|group| {
                group.name == name
                    && group
                        .rules
                        .first()
                        .and_then(|r| r.targets.first())
                        .is_some_and(|t| t.written == written)
            })
        })
    }
}

/// Whether rule `i` of the fleet (numbered across groups) is one the pulls
/// change: every `PULL_STRIDE`th of each group, from its first.
fn pulled_rule(shape: &Shape, i: usize) -> bool {
    (i % shape.rules_per_group).is_multiple_of(PULL_STRIDE)
}

/// Writes `files` (relative path, text) under `dir`, one after another,
/// each as [`write_file`] does.
pub fn write_all(dir: &Path, files: &[(String, String)]) -> Result<()> {
    for (path, text) in files {
        write_file(&dir.join(path), text)?;
    }
    Ok(())
}

/// Writes `path` the way editors and deploy tools do: a temporary file
/// (hidden, so never read as policy) renamed over it. Written in place, a
/// reload that starts between the truncation and the end of the write (the
/// machine busy for longer than the debounce) reads the file empty or cut
/// short, which can be a valid policy without that file's group: the
/// daemon put one in force in this bench's first runs.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    let name = path.file_name().context("a file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}
