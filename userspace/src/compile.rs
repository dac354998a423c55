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
//!
//! Each group compiles on its own into a [`GroupFragment`] numbered from 0
//! (its counters, rule sets), which depends only on the group and the NTP
//! addresses; [`assemble`] numbers the fragments into one policy. A reload
//! keeps the fragments of the groups it did not touch ([`CompileCache`]):
//! rule sets never repeat across groups (each group has its own counters),
//! so assembling fragments gives what compiling the whole policy gives.

use std::{cmp::Reverse, collections::HashMap, net::IpAddr, path::Path, sync::Arc};

use ipnet::IpNet;
use tollgate_common::{
    LEARNED_RULES, MAX_GATEWAY_ADDRESSES, MAX_GROUPS, RECORD_ENTRIES, RULESET_ENTRIES, Verdict,
};

use crate::{
    config::Limits,
    diagnostic::Diagnostic,
    policy::{ALL_PORTS_WIDTH, Action, Group, NTP_PORT, Origin, PROTO_UDP, Policy, PortRange},
    tables::{
        CompiledPolicy, CounterOwner, Decider, DestinationEntry, FqdnRule, GroupSpan, GroupTable,
        RuleEntry, Rulesets, UNKNOWN_GROUP_NAME,
    },
};

/// Compiles `policy` within `limits` (and the fixed limits of the ABI).
/// `Err` lists every capacity that is exceeded, each naming the group,
/// prefix or map concerned, the count and the limit.
pub fn compile(policy: &Policy, limits: &Limits) -> Result<CompiledPolicy, Vec<Diagnostic>> {
    compile_cached(policy, limits, &mut CompileCache::default())
}

/// The fragments of the groups compiled last, by group: a group a reload
/// reused unchanged (the same `Arc` from `policy::load_cached`) is not
/// compiled again.
#[derive(Default)]
pub struct CompileCache {
    /// The NTP addresses the fragments were compiled with.
    ntp: Vec<IpAddr>,
    /// By the group's address; the `Arc` kept with it keeps that address
    /// the group's.
    fragments: HashMap<usize, (Arc<Group>, Arc<GroupFragment>)>,
    /// Groups compiled by the last call.
    compiled: usize,
    /// The device table assembled last.
    devices: DeviceTable,
}

impl CompileCache {
    /// Groups compiled by the last call (the others came from the cache).
    pub fn groups_compiled(&self) -> usize {
        self.compiled
    }
}

/// [`compile`], reusing the fragments of the groups `cache` has compiled.
pub fn compile_cached(
    policy: &Policy,
    limits: &Limits,
    cache: &mut CompileCache,
) -> Result<CompiledPolicy, Vec<Diagnostic>> {
    if policy.groups.len() > MAX_GROUPS as usize - 1 {
        let extra = &policy.groups[MAX_GROUPS as usize - 1];
        return Err(vec![Diagnostic::error(
            Path::new(&*extra.origin.file),
            extra.origin.line,
            extra.origin.column,
            &format!("groups.{}", extra.name),
            format!(
                "{} groups; at most {} fit (MAX_GROUPS, one id is the unknown-device group)",
                policy.groups.len(),
                MAX_GROUPS - 1
            ),
        )]);
    }
    if cache.ntp != policy.ntp {
        cache.fragments.clear();
        cache.ntp = policy.ntp.clone();
    }
    let mut previous = std::mem::take(&mut cache.fragments);
    cache.compiled = 0;
    let mut fragments = Vec::with_capacity(policy.groups.len());
    for group in &policy.groups {
        let key = Arc::as_ptr(group) as usize;
        let entry = match previous.remove(&key) {
            Some(entry) => entry,
            None => {
                cache.compiled += 1;
                let fragment = GroupFragment::compile(group, &policy.ntp);
                (Arc::clone(group), Arc::new(fragment))
            }
        };
        fragments.push(Arc::clone(&entry.1));
        cache.fragments.insert(key, entry);
    }
    assemble(policy, &fragments, limits, &mut cache.devices)
}

/// One group compiled on its own: counters and rule sets numbered from 0,
/// devices and destinations without the group id.
#[derive(Debug)]
pub struct GroupFragment {
    /// In the order they are numbered: the default, the built-in NTP
    /// allow (when there are NTP addresses), one per rule, then the four
    /// verdict totals. Shared with every policy assembled from this
    /// fragment ([`GroupSpan`]).
    counters: Arc<[CounterOwner]>,
    table: GroupTable,
    /// Sorted; shared with every policy assembled from this fragment.
    device_exact: Arc<[IpAddr]>,
    device_prefixes: Vec<IpNet>,
    /// Sorted by prefix; rule set indices are the fragment's.
    destinations: Vec<(IpNet, u32)>,
    rulesets: Rulesets,
    /// Dataplane records the rule sets take.
    records: usize,
    /// Group 0 and counters numbered from 0.
    fqdn_rules: Vec<FqdnRule>,
    /// Sorted, each once.
    learn_guards: Vec<IpNet>,
    /// Capacities of one group exceeded (rule set entries, FQDN ports).
    errors: Vec<Diagnostic>,
}

impl GroupFragment {
    fn compile(group: &Group, ntp: &[IpAddr]) -> GroupFragment {
        let mut counters = Vec::new();
        // One name shared by all the group's counter owners.
        let name: Arc<str> = group.name.as_str().into();
        let default = decision_counter(&mut counters, &name, Decider::GroupDefault);
        let builtin =
            (!ntp.is_empty()).then(|| decision_counter(&mut counters, &name, Decider::BuiltinNtp));
        let rule_counters: Vec<u32> = group
            .rules
            .iter()
            .map(|r| {
                let decider = Decider::Rule(r.id.as_str().into());
                decision_counter(&mut counters, &name, decider)
            })
            .collect();
        // step 10: the group's default
        // step 11: audit mode
        let table = group_table(&mut counters, &name, group.default, group.audit, default);
        // step 4: exact addresses apart from shorter prefixes
        let (exact, prefixes): (Vec<IpNet>, Vec<IpNet>) = group
            .devices
            .iter()
            .map(|d| d.prefix)
            .partition(|p| p.prefix_len() == p.max_prefix_len());
        // Sorted once here, so that assembling merges sorted runs.
        let mut device_exact: Vec<IpAddr> = exact.iter().map(|p| p.addr()).collect();
        device_exact.sort_unstable();
        let mut f = GroupFragment {
            counters: counters.into(),
            table,
            device_exact: device_exact.into(),
            device_prefixes: prefixes,
            destinations: Vec::new(),
            rulesets: Rulesets::default(),
            records: 0,
            fqdn_rules: Vec::new(),
            learn_guards: Vec::new(),
            errors: Vec::new(),
        };

        f.learned_destinations(group, &rule_counters);
        f.learn_guards.sort_unstable();
        f.learn_guards.dedup();
        let mut candidates = candidates(group, &rule_counters);
        // step 8: the built-in NTP allow, an entry at full length
        if let Some(counter) = builtin {
            for (i, addr) in ntp.iter().enumerate() {
                candidates.push(builtin_ntp(*addr, i, counter));
            }
        }
        f.destinations(group, candidates);
        f
    }

    fn error(&mut self, origin: &Origin, field: &str, message: String) {
        self.errors.push(Diagnostic::error(
            Path::new(&*origin.file),
            origin.line,
            origin.column,
            field,
            message,
        ));
    }

    /// What step 12 needs: the group's FQDN rules, each with one allow
    /// entry per `ports` item, and the prefixes of its deny and reject
    /// rules. The FQDN rules of a group have at most [`LEARNED_RULES`]
    /// entries together: one address may be answered for every one of them
    /// (a CDN serves many names), and one learned address carries that many
    /// entries, so none is ever left out.
    fn learned_destinations(&mut self, group: &Group, counters: &[u32]) {
        let mut group_entries = 0;
        for (index, rule) in group.rules.iter().enumerate() {
            if rule.action.refuses() {
                // step 12: no address inside a deny or reject rule is learned
                self.learn_guards.extend(rule.prefixes().copied());
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
            self.fqdn_rules.push(FqdnRule {
                group: 0,
                rule: rule.id.as_str().to_string(),
                patterns: rule.fqdn.clone(),
                entries,
                counter: counters[index],
            });
        }
    }

    /// One destination entry per distinct prefix, with its rule set.
    fn destinations(&mut self, group: &Group, mut candidates: Vec<Entry>) {
        // Normalised prefixes sort by (family, address, length): a prefix
        // comes after every prefix containing it, and the prefixes between
        // them lie inside them too. So, walking the prefixes in order, a
        // stack holds exactly the current prefix's ancestors, shortest
        // first: one pass, instead of probing every shorter length.
        candidates.sort_unstable_by_key(|c| c.prefix);
        let mut ancestors: Vec<&[Entry]> = Vec::new();
        // Rule set contents to their index, to share identical ones.
        let mut shared: HashMap<Vec<RuleEntry>, u32> = HashMap::new();
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
            let ruleset = match shared.get(rules.as_slice()) {
                Some(&index) => index,
                None => {
                    let index = self.rulesets.len() as u32;
                    shared.insert(rules.clone(), index);
                    self.rulesets.push(&rules);
                    self.records += rules.len().div_ceil(RECORD_ENTRIES).max(1);
                    index
                }
            };
            self.destinations.push((prefix, ruleset));
        }
        self.report_overflows(group, &overflows);
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
}

/// Appends a decision counter of `group` to `counters`; its index.
fn decision_counter(counters: &mut Vec<CounterOwner>, group: &Arc<str>, decider: Decider) -> u32 {
    counters.push(CounterOwner::Decision {
        group: Arc::clone(group),
        decider,
    });
    counters.len() as u32 - 1
}

/// A group's table with its default counter and its four verdict totals,
/// appended to `counters` (after its rule counters).
fn group_table(
    counters: &mut Vec<CounterOwner>,
    name: &Arc<str>,
    default: Action,
    audit: bool,
    default_counter: u32,
) -> GroupTable {
    let mut verdict_counter = |verdict| {
        counters.push(CounterOwner::Verdict {
            group: Arc::clone(name),
            verdict,
        });
        counters.len() as u32 - 1
    };
    GroupTable {
        name: name.to_string(),
        default: default.verdict(false),
        audit,
        default_counter,
        allow_counter: verdict_counter(Verdict::Allow),
        deny_counter: verdict_counter(Verdict::Deny),
        audit_deny_counter: verdict_counter(Verdict::AuditDeny),
        reject_counter: verdict_counter(Verdict::Reject),
    }
}

/// The group's rules expanded to entries: one per destination prefix
/// (each once per rule) and `ports` item. A flat vector, not a map of
/// vectors: lists run to 10^5 prefixes.
fn candidates(group: &Group, counters: &[u32]) -> Vec<Entry> {
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

/// Numbers the fragments of `policy`'s groups (in group order) into one
/// compiled policy and checks what crosses groups: the record and map
/// limits, the gateway addresses.
fn assemble(
    policy: &Policy,
    fragments: &[Arc<GroupFragment>],
    limits: &Limits,
    devices: &mut DeviceTable,
) -> Result<CompiledPolicy, Vec<Diagnostic>> {
    let mut tables = CompiledPolicy::default();
    let mut errors = Vec::new();
    // step 5: group 0 has no destinations, only its default
    let unknown: Arc<str> = UNKNOWN_GROUP_NAME.into();
    decision_counter(&mut tables.counters, &unknown, Decider::GroupDefault);
    let table = group_table(
        &mut tables.counters,
        &unknown,
        policy.unknown_devices,
        false,
        0,
    );
    tables.groups.push(table);
    tables.group_devices.push(Arc::from([]));
    tables.group_spans.push(GroupSpan {
        owners: tables.counters.as_slice().into(),
        first_counter: 0,
        destinations: 0..0,
    });
    let destinations: usize = fragments.iter().map(|f| f.destinations.len()).sum();
    tables.destinations.reserve_exact(destinations);
    let mut records = 0;
    let mut record_limit = limits.rule_records as usize;
    for (index, (group, f)) in policy.groups.iter().zip(fragments).enumerate() {
        let id = index as u32 + 1;
        let counters = tables.counters.len() as u32;
        let rulesets = tables.rulesets.len() as u32;
        let renumber = |e: &RuleEntry| RuleEntry {
            counter: e.counter + counters,
            ..*e
        };
        tables.counters.extend(f.counters.iter().cloned());
        let first_destination = tables.destinations.len();
        let t = &f.table;
        tables.groups.push(GroupTable {
            name: t.name.clone(),
            default: t.default,
            audit: t.audit,
            default_counter: t.default_counter + counters,
            allow_counter: t.allow_counter + counters,
            deny_counter: t.deny_counter + counters,
            audit_deny_counter: t.audit_deny_counter + counters,
            reject_counter: t.reject_counter + counters,
        });
        tables.group_devices.push(Arc::clone(&f.device_exact));
        tables
            .device_prefixes
            .extend(f.device_prefixes.iter().map(|p| (*p, id)));
        tables
            .learn_guards
            .extend(f.learn_guards.iter().map(|p| (id, *p)));
        tables
            .fqdn_rules
            .extend(f.fqdn_rules.iter().map(|r| FqdnRule {
                group: id,
                rule: r.rule.clone(),
                patterns: r.patterns.clone(),
                entries: r.entries.iter().map(renumber).collect(),
                counter: r.counter + counters,
            }));
        tables.rulesets.extend_mapped(&f.rulesets, renumber);
        tables
            .destinations
            .extend(
                f.destinations
                    .iter()
                    .map(|(prefix, ruleset)| DestinationEntry {
                        group: id,
                        prefix: *prefix,
                        ruleset: ruleset + rulesets,
                    }),
            );
        tables.group_spans.push(GroupSpan {
            owners: Arc::clone(&f.counters),
            first_counter: counters,
            destinations: first_destination..tables.destinations.len(),
        });
        errors.extend(f.errors.iter().cloned());
        records += f.records;
        if records > record_limit {
            let message = format!(
                "the policy needs {records} rule records ({} distinct rule lists, \
                 {RECORD_ENTRIES} entries a record) once this group is added; \
                 limits.rule-records is {}",
                tables.rulesets.len(),
                limits.rule_records
            );
            errors.push(group_error(group, message));
            // Said once, at the group that crossed the limit.
            record_limit = usize::MAX;
        }
    }
    tables.device_exact = devices.table(&tables.group_devices);
    tables.device_prefixes.sort_unstable();
    // Already in order: by group, then by prefix within each fragment.
    debug_assert!(tables.destinations.is_sorted());
    // Already in order and each once: by group, then as each fragment has them.
    debug_assert!(tables.learn_guards.is_sorted());
    tables.gateway = policy.gateway.clone();
    if tables.gateway.len() > MAX_GATEWAY_ADDRESSES as usize {
        errors.push(Diagnostic::error(
            Path::new("interfaces"),
            0,
            0,
            "",
            format!(
                "the device-facing interfaces have {} addresses; the dataplane knows at most \
                 {MAX_GATEWAY_ADDRESSES} (MAX_GATEWAY_ADDRESSES)",
                tables.gateway.len()
            ),
        ));
    }
    check_map_limits(policy, fragments, &tables, limits, &mut errors);
    if errors.is_empty() {
        Ok(tables)
    } else {
        Err(errors)
    }
}

/// [`CompiledPolicy::device_exact`] as assembled last, and the device
/// lists by group id it was assembled from.
#[derive(Default)]
struct DeviceTable {
    lists: Vec<Arc<[IpAddr]>>,
    table: Arc<[(IpAddr, u32)]>,
}

impl DeviceTable {
    /// Every group's exact addresses (`lists`, by group id) with its id,
    /// sorted. The table of the last call when every group has the same
    /// addresses under the same id (a reload that edits only rules), else
    /// assembled afresh.
    fn table(&mut self, lists: &[Arc<[IpAddr]>]) -> Arc<[(IpAddr, u32)]> {
        // By pointer first (`==` on the `Arc`s compared every address, a
        // millisecond at 10^6 devices): only recompiled groups by content.
        let same = self.lists.len() == lists.len()
            && self
                .lists
                .iter()
                .zip(lists)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b);
        if !same {
            self.table = sorted_devices(lists);
        }
        // Kept by the groups' current lists, for the pointers to match next time.
        self.lists = lists.to_vec();
        Arc::clone(&self.table)
    }
}

/// The addresses of `lists` (each sorted, by group id) with their group
/// id, sorted by address then id. Allocated once at its final place and
/// written there once: a vector turned into an `Arc` would be copied, and
/// an `Arc` filled with placeholders first written twice, 24 MiB a pass at
/// 10^6 devices (the placeholders were a tenth of a group add's reload).
fn sorted_devices(lists: &[Arc<[IpAddr]>]) -> Arc<[(IpAddr, u32)]> {
    let mut runs: Vec<(u32, &[IpAddr])> = (0..)
        .zip(lists)
        .filter(|(_, list)| !list.is_empty())
        .map(|(id, list)| (id, &**list))
        .collect();
    // Groups usually hold ranges of addresses apart: laid end to end in
    // the order of their first addresses, the runs are then already in
    // order, with no sort. Otherwise, in group order, a stable sort merges
    // them (sorting 10^6 entries afresh took tens of milliseconds).
    runs.sort_unstable_by_key(|&(id, run)| (run[0], id));
    let apart = runs.windows(2).all(|w| {
        let ((id, run), (next_id, next)) = (w[0], w[1]);
        (run[run.len() - 1], id) < (next[0], next_id)
    });
    if !apart {
        runs.sort_unstable_by_key(|&(id, _)| id);
    }
    let total = runs.iter().map(|(_, run)| run.len()).sum();
    let mut uninit = Arc::<[(IpAddr, u32)]>::new_uninit_slice(total);
    let entries = Arc::get_mut(&mut uninit).expect("just made");
    let mut filled = 0;
    for (id, run) in runs {
        for (slot, addr) in entries[filled..].iter_mut().zip(run) {
            slot.write((*addr, id));
        }
        filled += run.len();
    }
    assert_eq!(filled, total, "every entry written");
    // SAFETY: the runs' lengths sum to `total`, and each run wrote its
    // entries in turn from where the one before stopped: all are written.
    let mut table = unsafe { uninit.assume_init() };
    if !apart {
        Arc::get_mut(&mut table).expect("not shared yet").sort();
    }
    table
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

/// The per-map limits of the controller config. Each excess is reported
/// once, at the group that first goes over.
fn check_map_limits(
    policy: &Policy,
    fragments: &[Arc<GroupFragment>],
    tables: &CompiledPolicy,
    limits: &Limits,
    errors: &mut Vec<Diagnostic>,
) {
    let totals = [
        tables.device_exact.len(),
        tables.device_prefixes.len(),
        tables.destinations.len(),
        tables.counters.len(),
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
    // Each group's share, as its fragment holds it: counting the devices
    // of the groups took milliseconds at 10^6 devices.
    for (group, f) in policy.groups.iter().zip(fragments) {
        so_far[0] += f.device_exact.len();
        so_far[1] += f.device_prefixes.len();
        so_far[2] += f.destinations.len();
        // The default, the built-in NTP allow, one per rule, the totals.
        so_far[3] += f.counters.len();
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
            errors.push(group_error(group, message));
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

/// An error about the whole group, at its name.
fn group_error(group: &Group, message: String) -> Diagnostic {
    Diagnostic::error(
        Path::new(&*group.origin.file),
        group.origin.line,
        group.origin.column,
        &format!("groups.{}", group.name),
        message,
    )
}

#[cfg(test)]
mod tests;
