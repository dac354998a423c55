//! Hand-built compiled tables for tests of the dataplane's mechanics
//! (parsing, swaps, pins), independent of the policy compiler.

use tollgate::tables::{
    CompiledPolicy, CounterOwner, Decider, DestinationEntry, GroupTable, RuleEntry,
    UNKNOWN_GROUP_NAME,
};
use tollgate_common::Verdict;

pub struct Tables {
    policy: CompiledPolicy,
    /// The policy's `device_exact`, in the order given.
    device_exact: Vec<(std::net::IpAddr, u32)>,
    /// (group, destination) → rule entries, in precedence order.
    rules: Vec<(u32, ipnet::IpNet, Vec<RuleEntry>)>,
}

impl Tables {
    pub fn new(unknown_deny: bool) -> Tables {
        let mut t = Tables {
            policy: CompiledPolicy::default(),
            device_exact: Vec::new(),
            rules: Vec::new(),
        };
        t.add_group(UNKNOWN_GROUP_NAME, unknown_deny, false);
        t
    }

    fn counter(&mut self, owner: CounterOwner) -> u32 {
        self.policy.counters.push(owner);
        self.policy.counters.len() as u32 - 1
    }

    fn add_group(&mut self, name: &str, default: impl Action, audit: bool) -> u32 {
        let decision = |decider| CounterOwner::Decision {
            group: name.into(),
            decider,
        };
        let verdict = |verdict| CounterOwner::Verdict {
            group: name.into(),
            verdict,
        };
        let g = GroupTable {
            name: name.into(),
            default: default.verdict(),
            audit,
            default_counter: self.counter(decision(Decider::GroupDefault)),
            allow_counter: self.counter(verdict(Verdict::Allow)),
            deny_counter: self.counter(verdict(Verdict::Deny)),
            audit_deny_counter: self.counter(verdict(Verdict::AuditDeny)),
            reject_counter: self.counter(verdict(Verdict::Reject)),
        };
        self.policy.groups.push(g);
        self.policy.groups.len() as u32 - 1
    }

    /// Adds a group whose devices are `devices` (prefixes or addresses).
    pub fn group(&mut self, name: &str, default: impl Action, devices: &[&str]) -> u32 {
        let gid = self.add_group(name, default, false);
        for d in devices {
            let net: ipnet::IpNet = if d.contains('/') {
                d.parse().unwrap()
            } else {
                ipnet::IpNet::from(d.parse::<std::net::IpAddr>().unwrap())
            };
            if net.prefix_len() == net.max_prefix_len() {
                self.device_exact.push((net.addr(), gid));
            } else {
                self.policy.device_prefixes.push((net, gid));
            }
        }
        gid
    }

    /// Puts group `gid` in audit mode.
    pub fn audit(&mut self, gid: u32) {
        self.policy.groups[gid as usize].audit = true;
    }

    /// Appends a rule to group `gid` at destination `dst`; returns its
    /// logical counter.
    pub fn rule(
        &mut self,
        gid: u32,
        dst: &str,
        proto: Option<u8>,
        ports: Option<(u16, u16)>,
        action: impl Action,
        id: &str,
    ) -> u32 {
        let group = self.policy.groups[gid as usize].name.as_str().into();
        let counter = self.counter(CounterOwner::Decision {
            group,
            decider: Decider::Rule(id.into()),
        });
        let entry = RuleEntry {
            proto,
            ports,
            verdict: action.verdict(),
            builtin: false,
            counter,
        };
        let dst: ipnet::IpNet = dst.parse().unwrap();
        match self
            .rules
            .iter_mut()
            .find(|(g, d, _)| *g == gid && *d == dst)
        {
            Some((_, _, entries)) => entries.push(entry),
            None => self.rules.push((gid, dst, vec![entry])),
        }
        counter
    }

    /// Adds an address of the gateway (for neighbour discovery).
    pub fn gateway(&mut self, addr: &str) {
        self.policy.gateway.push(addr.parse().unwrap());
    }

    pub fn build(mut self) -> CompiledPolicy {
        for (gid, prefix, entries) in self.rules {
            self.policy.rulesets.push(&entries);
            self.policy.destinations.push(DestinationEntry {
                group: gid,
                prefix,
                ruleset: self.policy.rulesets.len() as u32 - 1,
            });
        }
        self.policy.device_exact = self.device_exact.into();
        self.policy
    }
}

/// What a rule or default does: `true` denies, `false` allows, or a
/// [`Verdict`] (allow, deny or reject) said outright.
pub trait Action {
    fn verdict(self) -> Verdict;
}

impl Action for bool {
    fn verdict(self) -> Verdict {
        if self { Verdict::Deny } else { Verdict::Allow }
    }
}

impl Action for Verdict {
    fn verdict(self) -> Verdict {
        self
    }
}
