//! Compiles a validated [`Policy`] into the dataplane's lookup tables
//! ([`CompiledPolicy`]). Pure: no IO, same input, same tables.
//!
//! The kernel does a fixed number of lookups per packet whatever the rule
//! count: one or two for the group, one longest-prefix match for the
//! destination, then a scan of at most [`RULESET_ENTRIES`] entries. To make
//! "first matching entry" equal "winner by the policy semantics" (steps 6-9
//! of [`tollgate_common::precedence`], tagged `// step N:` below), each
//! destination prefix P of a group gets a rule set holding every entry whose
//! prefix equals or contains P (rules inherited from less specific prefixes
//! are resolved here, not in the kernel), sorted in step 9's order; its last
//! tie, the first in the file, is the rule's position, then the item's
//! position in its `ports` list.
//!
//! A rule expands to one entry per destination prefix and per `ports` item.
//! Entries that can never be first to match (everything a higher entry's
//! conditions already cover) are pruned before the capacity check.

use std::{cmp::Reverse, collections::HashMap, net::IpAddr, path::Path};

use ipnet::IpNet;
use tollgate_common::{
    LEARNED_RULES, MAX_GATEWAY_ADDRESSES, MAX_GROUPS, RECORD_ENTRIES, RULESET_ENTRIES, Verdict,
};

use crate::{
    config::Limits,
    diagnostic::Diagnostic,
    policy::{ALL_PORTS_WIDTH, Action, Group, NTP_PORT, Origin, PROTO_UDP, Policy, PortRange},
    tables::{
        CompiledPolicy, CounterOwner, Decider, DestinationEntry, FqdnRule, GroupTable, RuleEntry,
        UNKNOWN_GROUP_NAME,
    },
};

/// Compiles `policy` within `limits` (and the fixed limits of the ABI).
/// `Err` lists every capacity that is exceeded, each naming the group,
/// prefix or map concerned, the count and the limit.
pub fn compile(policy: &Policy, limits: &Limits) -> Result<CompiledPolicy, Vec<Diagnostic>> {
    let mut c = Compiler {
        policy,
        tables: CompiledPolicy::default(),
        rulesets: HashMap::new(),
        records: 0,
        record_limit: limits.rule_records as usize,
        errors: Vec::new(),
    };
    if policy.groups.len() > MAX_GROUPS as usize - 1 {
        let extra = &policy.groups[MAX_GROUPS as usize - 1];
        c.error(
            &extra.origin,
            &format!("groups.{}", extra.name),
            format!(
                "{} groups; at most {} fit (MAX_GROUPS, one id is the unknown-device group)",
                policy.groups.len(),
                MAX_GROUPS - 1
            ),
        );
        return Err(c.errors);
    }
    c.unknown_group();
    for (index, group) in policy.groups.iter().enumerate() {
        c.group(index as u32 + 1, group);
    }
    c.tables.device_exact.sort();
    c.tables.device_prefixes.sort();
    c.tables.destinations.sort();
    c.tables.learn_guards.sort();
    c.tables.learn_guards.dedup();
    c.tables.gateway = policy.gateway.clone();
    if c.tables.gateway.len() > MAX_GATEWAY_ADDRESSES as usize {
        c.errors.push(Diagnostic::error(
            Path::new("interfaces"),
            0,
            0,
            "",
            format!(
                "the device-facing interfaces have {} addresses; the dataplane knows at most \
                 {MAX_GATEWAY_ADDRESSES} (MAX_GATEWAY_ADDRESSES)",
                c.tables.gateway.len()
            ),
        ));
    }
    c.check_map_limits(limits);
    if c.errors.is_empty() {
        Ok(c.tables)
    } else {
        Err(c.errors)
    }
}

struct Compiler<'p> {
    policy: &'p Policy,
    tables: CompiledPolicy,
    /// Rule set contents to their index, to share identical ones.
    rulesets: HashMap<Vec<RuleEntry>, u32>,
    /// Dataplane records the distinct rule sets take (RECORD_ENTRIES each).
    records: usize,
    record_limit: usize,
    errors: Vec<Diagnostic>,
}

/// One entry before sorting: its match, action and where it came from.
#[derive(Clone, Copy)]
struct Entry {
    prefix: IpNet,
    proto: Option<u8>,
    ports: Option<PortRange>,
    action: Action,
    builtin: bool,
    /// Source order: rule index, then index in its `ports` list.
    order: (usize, usize),
    counter: u32,
}

/// Sort key: the order of step 9, smallest first.
type Precedence = (Reverse<u8>, bool, u32, Reverse<u8>, bool, (usize, usize));

impl Entry {
    fn precedence(&self) -> Precedence {
        // step 9: prefix, proto, ports, deny/reject/allow; then explicit, file order
        (
            Reverse(self.prefix.prefix_len()),
            self.proto.is_none(),
            self.ports.map_or(ALL_PORTS_WIDTH, |p| p.width()),
            Reverse(self.action.strictness()),
            self.builtin,
            self.order,
        )
    }

    /// Whether every packet `other` matches is also matched by `self`.
    fn covers(&self, other: &Entry) -> bool {
        let proto = self.proto.is_none() || self.proto == other.proto;
        let ports = match (self.ports, other.ports) {
            (None, _) => true,
            // `other` also matches packets with no known port; `self` not.
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => mine.lo <= theirs.lo && theirs.hi <= mine.hi,
        };
        proto && ports
    }

    fn entry(&self) -> RuleEntry {
        RuleEntry {
            proto: self.proto,
            ports: self.ports.map(|p| (p.lo, p.hi)),
            verdict: self.action.verdict(false),
            builtin: self.builtin,
            counter: self.counter,
        }
    }
}

impl Compiler<'_> {
    fn error(&mut self, origin: &Origin, field: &str, message: String) {
        self.errors.push(Diagnostic::error(
            Path::new(&origin.file),
            origin.line,
            origin.column,
            field,
            message,
        ));
    }

    fn counter(&mut self, group: &str, decider: Decider) -> u32 {
        self.tables.counters.push(CounterOwner::Decision {
            group: group.to_string(),
            decider,
        });
        self.tables.counters.len() as u32 - 1
    }

    /// Appends a group's table with its default counter and its four
    /// verdict totals (added last, after its rule counters).
    fn group_table(&mut self, name: &str, default: Action, audit: bool, default_counter: u32) {
        let mut verdict_counter = |verdict| {
            self.tables.counters.push(CounterOwner::Verdict {
                group: name.to_string(),
                verdict,
            });
            self.tables.counters.len() as u32 - 1
        };
        let table = GroupTable {
            name: name.to_string(),
            default: default.verdict(false),
            audit,
            default_counter,
            allow_counter: verdict_counter(Verdict::Allow),
            deny_counter: verdict_counter(Verdict::Deny),
            audit_deny_counter: verdict_counter(Verdict::AuditDeny),
            reject_counter: verdict_counter(Verdict::Reject),
        };
        self.tables.groups.push(table);
    }

    /// Group 0: sources in no group. Its default is `unknown-devices`; it has
    /// no destinations, so no rule and no built-in NTP allow applies.
    fn unknown_group(&mut self) {
        // step 5: group 0 has no destinations, only its default
        let default = self.counter(UNKNOWN_GROUP_NAME, Decider::GroupDefault);
        self.group_table(
            UNKNOWN_GROUP_NAME,
            self.policy.unknown_devices,
            false,
            default,
        );
    }

    fn group(&mut self, id: u32, group: &Group) {
        let default = self.counter(&group.name, Decider::GroupDefault);
        let builtin =
            (!self.policy.ntp.is_empty()).then(|| self.counter(&group.name, Decider::BuiltinNtp));
        let rule_counters: Vec<u32> = group
            .rules
            .iter()
            .map(|r| self.counter(&group.name, Decider::Rule(r.id.as_str().to_string())))
            .collect();
        // step 10: the group's default
        // step 11: audit mode
        self.group_table(&group.name, group.default, group.audit, default);

        // step 4: exact addresses apart from shorter prefixes
        for device in &group.devices {
            let prefix = device.prefix;
            if prefix.prefix_len() == prefix.max_prefix_len() {
                self.tables.device_exact.push((prefix.addr(), id));
            } else {
                self.tables.device_prefixes.push((prefix, id));
            }
        }

        self.learned_destinations(id, group, &rule_counters);
        let mut candidates = self.candidates(group, &rule_counters);
        // step 8: the built-in NTP allow, an entry at full length
        if let Some(counter) = builtin {
            for (i, addr) in self.policy.ntp.iter().enumerate() {
                candidates.push(builtin_ntp(*addr, i, counter));
            }
        }
        self.destinations(id, group, candidates);
    }

    /// What step 12 needs: the group's FQDN rules, each with one allow
    /// entry per `ports` item, and the prefixes of its deny and reject
    /// rules. The FQDN rules of a group have at most [`LEARNED_RULES`]
    /// entries together: one address may be answered for every one of them
    /// (a CDN serves many names), and one learned address carries that many
    /// entries, so none is ever left out.
    fn learned_destinations(&mut self, id: u32, group: &Group, counters: &[u32]) {
        let mut group_entries = 0;
        for (index, rule) in group.rules.iter().enumerate() {
            if rule.action.refuses() {
                // step 12: no address inside a deny or reject rule is learned
                let guards = rule.prefixes().map(|net| (id, *net));
                self.tables.learn_guards.extend(guards);
            }
            if rule.fqdn.is_empty() {
                continue;
            }
            // step 12: an FQDN rule matches learned addresses on its proto and ports
            let entries: Vec<RuleEntry> = match &rule.ports {
                None => vec![None],
                Some(ports) => ports.iter().map(|p| Some((p.lo, p.hi))).collect(),
            }
            .into_iter()
            .map(|ports| RuleEntry {
                proto: rule.proto,
                ports,
                verdict: Verdict::Allow,
                builtin: false,
                counter: counters[index],
            })
            .collect();
            group_entries += entries.len();
            if group_entries > LEARNED_RULES {
                self.error(
                    &rule.origin,
                    &format!("groups.{}.rules", group.name),
                    format!(
                        "FQDN rule \"{}\" brings the group's FQDN rules to {group_entries} \
                         ports items; an address may be learned for all of them and carries \
                         at most {LEARNED_RULES} (LEARNED_RULES): merge ports into ranges or \
                         drop some",
                        rule.id
                    ),
                );
                continue;
            }
            self.tables.fqdn_rules.push(FqdnRule {
                group: id,
                rule: rule.id.as_str().to_string(),
                patterns: rule.fqdn.clone(),
                entries,
                counter: counters[index],
            });
        }
    }

    /// The group's rules expanded to entries: one per destination prefix
    /// (each once per rule) and `ports` item. A flat vector, not a map of
    /// vectors: lists run to 10^5 prefixes.
    fn candidates(&self, group: &Group, counters: &[u32]) -> Vec<Entry> {
        let mut all = Vec::new();
        for (index, rule) in group.rules.iter().enumerate() {
            let ports: Vec<Option<PortRange>> = match &rule.ports {
                None => vec![None],
                Some(ports) => ports.iter().copied().map(Some).collect(),
            };
            // step 6: one entry per destination prefix
            // step 7: and per `ports` item, matched on protocol and ports
            let mut prefixes: Vec<IpNet> = rule.prefixes().copied().collect();
            prefixes.sort_unstable();
            prefixes.dedup();
            for prefix in prefixes {
                for (port_index, ports) in ports.iter().enumerate() {
                    all.push(Entry {
                        prefix,
                        proto: rule.proto,
                        ports: *ports,
                        action: rule.action,
                        builtin: false,
                        order: (index, port_index),
                        counter: counters[index],
                    });
                }
            }
        }
        all
    }

    /// One destination entry per distinct prefix, with its rule set.
    fn destinations(&mut self, id: u32, group: &Group, mut candidates: Vec<Entry>) {
        // Normalised prefixes sort by (family, address, length): a prefix
        // comes after every prefix containing it, and the prefixes between
        // them lie inside them too. So, walking the prefixes in order, a
        // stack holds exactly the current prefix's ancestors, shortest
        // first: one pass, instead of probing every shorter length.
        candidates.sort_unstable_by_key(|c| c.prefix);
        let mut ancestors: Vec<&[Entry]> = Vec::new();
        // Buffers reused from prefix to prefix.
        let mut entries: Vec<Entry> = Vec::new();
        let mut kept: Vec<Entry> = Vec::new();
        let mut rules: Vec<RuleEntry> = Vec::new();
        let mut overflows = Vec::new();
        for own in candidates.chunk_by(|a, b| a.prefix == b.prefix) {
            let prefix = own[0].prefix;
            while ancestors
                .last()
                .is_some_and(|ancestor| !ancestor[0].prefix.contains(&prefix))
            {
                ancestors.pop();
            }
            // step 6: a prefix inherits the entries of every less specific one
            entries.clear();
            entries.extend(ancestors.iter().copied().flatten().chain(own));
            ancestors.push(own);
            // step 9: in precedence order, the first match is the winner.
            // Precedence is a total order here (no two entries of one
            // prefix share it), so the sort's stability does not matter.
            entries.sort_unstable_by_key(Entry::precedence);
            kept.clear();
            for entry in &entries {
                if !kept.iter().any(|k| k.covers(entry)) {
                    kept.push(*entry);
                }
            }
            if kept.len() > RULESET_ENTRIES {
                overflows.push((prefix, kept.len()));
                continue;
            }
            rules.clear();
            rules.extend(kept.iter().map(Entry::entry));
            let ruleset = match self.rulesets.get(rules.as_slice()) {
                Some(&index) => index,
                None => {
                    let index = self.rulesets.len() as u32;
                    self.rulesets.insert(rules.clone(), index);
                    self.tables.rulesets.push(rules.clone());
                    self.records += rules.len().div_ceil(RECORD_ENTRIES).max(1);
                    index
                }
            };
            self.tables.destinations.push(DestinationEntry {
                group: id,
                prefix,
                ruleset,
            });
        }
        self.report_overflows(group, &overflows);
        if self.records > self.record_limit {
            let message = format!(
                "the policy needs {} rule records ({} distinct rule lists, {RECORD_ENTRIES} \
                 entries a record) once this group is added; limits.rule-records is {}",
                self.records,
                self.tables.rulesets.len(),
                self.record_limit
            );
            self.error(&group.origin, &format!("groups.{}", group.name), message);
            // Said once, at the group that crossed the limit.
            self.record_limit = usize::MAX;
        }
    }

    fn report_overflows(&mut self, group: &Group, overflows: &[(IpNet, usize)]) {
        const SHOWN: usize = 5;
        for (prefix, count) in overflows.iter().take(SHOWN) {
            let message = format!(
                "destination {prefix} needs {count} rule entries (its own and those inherited \
                 from less specific prefixes, one per `to` prefix and `ports` item); at most \
                 {RULESET_ENTRIES} fit (RULESET_ENTRIES): merge ports into ranges or split the group"
            );
            self.error(&group.origin, &format!("groups.{}", group.name), message);
        }
        if overflows.len() > SHOWN {
            let message = format!(
                "and {} more destination prefixes over {RULESET_ENTRIES} rule entries",
                overflows.len() - SHOWN
            );
            self.error(&group.origin, &format!("groups.{}", group.name), message);
        }
    }

    /// The per-map limits of the controller config. Each excess is reported
    /// once, at the group that first goes over.
    fn check_map_limits(&mut self, limits: &Limits) {
        let policy = self.policy;
        let mut destinations_of = vec![0usize; policy.groups.len() + 1];
        for d in &self.tables.destinations {
            destinations_of[d.group as usize] += 1;
        }
        let totals = [
            self.tables.device_exact.len(),
            self.tables.device_prefixes.len(),
            self.tables.destinations.len(),
            self.tables.counters.len(),
        ];
        let names = [
            ("device addresses (/32, /128)", "device-addresses"),
            ("device prefixes", "device-prefixes"),
            ("(group, destination prefix) entries", "destinations"),
            (
                "counters (a default, the verdict totals and one per rule, per group)",
                "counters",
            ),
        ];
        let limits = [
            limits.device_addresses,
            limits.device_prefixes,
            limits.destinations,
            limits.counters,
        ];
        // Group 0 has its default and four verdict counters.
        let verdict_totals = Verdict::ALL.len();
        let mut so_far = [0, 0, 0, 1 + verdict_totals];
        let mut reported = [false; 4];
        let builtin = usize::from(!policy.ntp.is_empty());
        for (index, group) in policy.groups.iter().enumerate() {
            let exact = group
                .devices
                .iter()
                .filter(|d| d.prefix.prefix_len() == d.prefix.max_prefix_len())
                .count();
            so_far[0] += exact;
            so_far[1] += group.devices.len() - exact;
            so_far[2] += destinations_of[index + 1];
            so_far[3] += 1 + verdict_totals + builtin + group.rules.len();
            for i in 0..4 {
                if reported[i] || so_far[i] <= limits[i] as usize {
                    continue;
                }
                reported[i] = true;
                let ((what, key), total, limit) = (names[i], totals[i], limits[i]);
                let message = format!(
                    "the policy needs {total} {what}, over the limit of {limit} \
                     (limits.{key} in the controller config); this group brings it to {}",
                    so_far[i]
                );
                self.error(&group.origin, &format!("groups.{}", group.name), message);
            }
        }
    }
}

/// The implicit allow of UDP/123 to one NTP address, at full length.
fn builtin_ntp(addr: IpAddr, index: usize, counter: u32) -> Entry {
    Entry {
        prefix: IpNet::from(addr),
        proto: Some(PROTO_UDP),
        ports: Some(PortRange::new(NTP_PORT, NTP_PORT)),
        action: Action::Allow,
        builtin: true,
        order: (usize::MAX, index),
        counter,
    }
}

#[cfg(test)]
mod tests;
