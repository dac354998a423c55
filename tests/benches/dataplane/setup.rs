//! Tollgate's side: the real program, opened with a policy compiled by the
//! real compiler, its probes checked against the reference model, and the
//! first packets of new flows.

use std::net::IpAddr;

use anyhow::{Context as _, Result, ensure};
use testkit::bench;
use tollgate::{
    compile::compile,
    config::Limits,
    datapath::{Dataplane, Options, XDP_DROP, XDP_PASS},
    model,
    tables::{CompiledPolicy, PacketFacts},
};
use tollgate_common::{DecisionReason, Verdict};

use crate::{
    bpf::ProgType,
    fixtures::{Family, PORT, Probes, devices_for, fleet_policy, frame, with_last_byte},
    measure::{Cell, Floor, Measure, median},
};

/// First packets per trial for *allow (new flow)*.
pub const NEW_FLOWS: u8 = 250;

/// A compiled policy in a freshly opened dataplane, and its probe packets.
pub struct Setup {
    pub dataplane: Dataplane,
    pub tables: CompiledPolicy,
    pub sources: [IpAddr; 2],
    pub writes: usize,
}

impl Setup {
    /// `TG_TRIE` nodes in use, both slots.
    pub fn trie_nodes(&self) -> usize {
        self.dataplane.trie_nodes()
    }

    /// The fleet policy of `rules` destinations and `devices` devices,
    /// installed; with `narrow_tries`, every trie narrow (what a slot
    /// without room for wide ones gets).
    pub fn build(
        pool: &bench::Pool,
        rules: usize,
        devices: usize,
        narrow_tries: bool,
    ) -> Result<Setup> {
        let destinations = pool.take(rules);
        let (device_list, sources) = devices_for(devices);
        let policy = fleet_policy(&destinations, device_list);
        let limits = Limits {
            device_addresses: 1 << 20,
            device_prefixes: 1 << 16,
            destinations: 1 << 18,
            counters: 1 << 17,
            ..Limits::default()
        };
        let tables = compile(&policy, &limits).map_err(|errors| {
            anyhow::anyhow!(
                "compile: {}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        let mut dataplane = Dataplane::open(&Options {
            pin_dir: None,
            limits,
            narrow_tries,
            ..Options::default()
        })?;
        let report = dataplane.install(&tables)?;
        Ok(Setup {
            dataplane,
            tables,
            sources,
            writes: report.writes.inserted + report.writes.removed,
        })
    }

    /// The probes of `family`, each checked against the reference model.
    pub fn probes(&self, family: Family) -> Result<Probes> {
        let src = self.sources[family as usize];
        let decide = |dst: IpAddr| {
            model::verdict(
                &self.tables,
                &PacketFacts {
                    src,
                    dst,
                    proto: 6,
                    dport: Some(PORT),
                },
            )
        };
        // The last entry of the family whose own rule set decides a packet
        // to its last address with `verdict` (a later, more specific entry
        // may take that address).
        let last_deciding = |verdict: Verdict| -> Result<IpAddr> {
            self.tables
                .destinations
                .iter()
                .rev()
                .filter(|d| Family::of(&d.prefix) == family)
                .map(|d| (d.prefix, d.prefix.broadcast()))
                .find(|(prefix, dst)| {
                    let d = decide(*dst);
                    d.verdict == verdict
                        && d.reason == DecisionReason::Rule
                        && d.destination == Some(*prefix)
                })
                .map(|(_, dst)| dst)
                .with_context(|| format!("no {family:?} destination decides {verdict:?}"))
        };
        let allow = last_deciding(Verdict::Allow)?;
        let deny_rule = last_deciding(Verdict::Deny)?;
        let frames = Probes::frames_for(family, &self.sources);
        let default = decide(frames.deny_default_dst);
        ensure!(
            default.verdict == Verdict::Deny && default.reason == DecisionReason::GroupDefault,
            "{:?} is not decided by the group default: {default:?}",
            frames.deny_default_dst
        );
        Ok(Probes {
            allow: frame(src, allow),
            allow_dst: allow,
            deny_rule: frame(src, deny_rule),
            deny_rule_dst: deny_rule,
            ..frames
        })
    }
}

impl Setup {
    /// *Allow (new flow)* for `probes`' family: per trial, a new generation
    /// (the same policy installed again: no map writes, every remembered
    /// flow retired), then the allow probe's destination from 250 devices,
    /// each frame once, with the floor run on the same frame in between.
    /// A trial's value is the median of its 250 first packets; the cells
    /// show the lowest and the median trial, as elsewhere.
    pub fn first_packets(&mut self, measure: &Measure, probes: &Probes) -> Result<FirstPackets> {
        let floor = Floor::load(ProgType::Xdp)?;
        let src = self.sources[probes.family as usize];
        let frames: Vec<(Vec<u8>, Vec<u8>)> = (1..=NEW_FLOWS)
            .map(|host| {
                let src = with_last_byte(src, host);
                let d = model::verdict(
                    &self.tables,
                    &PacketFacts {
                        src,
                        dst: probes.allow_dst,
                        proto: 6,
                        dport: Some(PORT),
                    },
                );
                ensure!(
                    d.verdict == Verdict::Allow,
                    "{src} -> {} is not allowed: {d:?}",
                    probes.allow_dst
                );
                Ok((
                    frame(src, probes.allow_dst),
                    frame(src, probes.deny_default_dst),
                ))
            })
            .collect::<Result<_>>()?;
        // Once into the other slot, so that both hold this policy and the
        // installs below write nothing.
        self.dataplane.install(&self.tables)?;
        let mut trials = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..measure.trials {
            let report = self.dataplane.install(&self.tables)?;
            ensure!(report.writes.inserted + report.writes.removed == 0);
            let mut runs = [Vec::new(), Vec::new(), Vec::new()];
            for (allow, deny) in &frames {
                let (action, d) = self.dataplane.test_run_xdp(allow, 1)?;
                ensure!(action == XDP_PASS, "a new flow was not allowed");
                runs[0].push(d.as_nanos() as u64);
                runs[1].push(floor.test_run(allow, 1)?.1);
                let (action, d) = self.dataplane.test_run_xdp(deny, 1)?;
                ensure!(action == XDP_DROP, "a deny(default) probe passed");
                runs[2].push(d.as_nanos() as u64);
            }
            for (trial, runs) in trials.iter_mut().zip(&mut runs) {
                trial.push(median(runs));
            }
        }
        let [allow, floor, deny_default] = trials.map(|mut t| Cell::of(&mut t));
        Ok(FirstPackets {
            allow,
            floor,
            deny_default,
        })
    }
}

/// One packet at a time (`repeat` 1), each from another device.
#[derive(Clone, Copy)]
pub struct FirstPackets {
    /// A flow's first packet: the full decision and the cache insert.
    pub allow: Cell,
    /// The floor program on the same frames.
    pub floor: Cell,
    /// The deny(default) probe from the same devices: a full decision
    /// without an insert, just as cold.
    pub deny_default: Cell,
}
