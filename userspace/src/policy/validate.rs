//! Semantic checks over all files of a policy, and their resolution into a
//! [`Policy`]: names and keywords become prefixes, text becomes numbers.
//!
//! Every check reports and carries on, so one run lists every error. Each
//! diagnostic names the file, the position of the offending value (from
//! [`Positions`]) and its field path.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::Path,
    sync::Arc,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    Action, Device, Environment, Group, Origin, Policy, Rule, RuleId, Target,
    device_counts::DeviceCounts,
    has_ports,
    parse::ParsedFile,
    parse_proto,
    positions::Positions,
    rule_id::RESERVED_IDS,
    shadow,
    spec::{GroupSpec, MatchSpec, OneOrMany, Scalar, ToSpec},
    values::{
        KEYWORDS, check_name, edit_distance, looks_like_address, parse_port_range, parse_prefix,
        parse_unknown_devices, parse_verdict,
    },
};
use crate::{
    diagnostic::{Diagnostic, quote},
    fqdn::FqdnPattern,
};

/// Resolves and checks `files`, appending every finding to `out`. The policy
/// returned is meaningful only when `out` holds no error.
pub(super) fn validate(
    files: &[&ParsedFile],
    env: &Environment,
    out: &mut Vec<Diagnostic>,
) -> Policy {
    let mut checker = Checker {
        out: Vec::new(),
        env,
        // A file that did not parse may define the names others use: do not
        // report those as unknown on top of its own error.
        all_parsed: files.iter().all(|f| f.spec.is_some()),
        lists: BTreeMap::new(),
    };
    let (unknown_devices, unknown_devices_origin) = checker.unknown_devices(files);
    checker.lists(files);
    let groups = checker.groups(files);
    out.append(&mut checker.out);
    Policy {
        groups,
        unknown_devices,
        unknown_devices_origin,
        ntp: sorted(&env.ntp),
        gateway: sorted(&env.gateway),
    }
}

fn sorted(addrs: &[IpAddr]) -> Vec<IpAddr> {
    let mut v = addrs.to_vec();
    v.sort();
    v.dedup();
    v
}

/// One file and the serial of its text: a new serial each time the file is
/// parsed anew, so a serial names one content of one path.
pub(super) struct VersionedFile<'f> {
    /// `None` for a file of groups only whose parse was let go: the group
    /// cache must hold its groups.
    pub parsed: Option<&'f ParsedFile>,
    pub serial: u64,
    /// The names of the groups it defines.
    pub groups: &'f [String],
}

/// A group's spec and where its file is.
type GroupAt<'f> = (At<'f>, &'f GroupSpec);

/// What [`validate_incremental`] found.
pub(super) enum Incremental {
    /// The policy, the findings (no error among them) and how many groups
    /// were validated anew.
    Valid((Policy, Vec<Diagnostic>, usize)),
    /// It has an error, or one cannot be ruled out: run [`validate`].
    Invalid,
    /// A group must be validated again whose file's parse was let go:
    /// parse every file and call again.
    NeedsParse,
}

/// What validating each group gave, kept between loads so that a reload
/// validates only the groups of the files that changed. Valid for one
/// environment and one set of list-defining file texts (a group resolves
/// list names); a change of either empties it.
///
/// The checks that cross groups are kept incrementally too: how many
/// cached groups hold each device prefix. The cache holds exactly the
/// groups of the last load, whatever its outcome, so a bad edit leaves it
/// describing the files as they are.
#[derive(Default)]
pub(super) struct GroupCache {
    env: Option<Environment>,
    /// Serials of the files that define lists, in file order.
    lists_from: Vec<u64>,
    /// By (file serial, group name).
    groups: HashMap<(u64, String), CachedGroup>,
    /// How many cached groups hold each device prefix.
    devices: DeviceCounts,
}

struct CachedGroup {
    group: Arc<Group>,
    /// What validating the group on its own reported, in order.
    diagnostics: Vec<Diagnostic>,
}

impl GroupCache {
    fn clear(&mut self) {
        self.groups.clear();
        self.devices.clear();
    }
}

/// [`validate`], reusing from `cache` every group whose file is unchanged;
/// also returns how many groups it validated anew.
/// `None` when it finds an error, or cannot rule one out (a file that did
/// not parse, a group defined twice): the caller then runs [`validate`],
/// whose report is the reference. `Some` holds exactly what [`validate`]
/// returns and reports for these files: without errors, a group's checks
/// depend only on its own text, the environment and the lists, and the one
/// check across groups, a device prefix in two groups, is kept by count.
pub(super) fn validate_incremental(
    files: &[VersionedFile],
    env: &Environment,
    cache: &mut GroupCache,
) -> Incremental {
    if files
        .iter()
        .any(|f| f.parsed.is_some_and(|p| p.spec.is_none()))
    {
        return Incremental::Invalid;
    }
    if cache.env.as_ref() != Some(env) {
        cache.clear();
        cache.env = Some(env.clone());
    }
    // Files let go of define no lists and no `unknown-devices`.
    let parsed: Vec<&ParsedFile> = files.iter().filter_map(|f| f.parsed).collect();
    let mut checker = Checker {
        out: Vec::new(),
        env,
        all_parsed: true,
        lists: BTreeMap::new(),
    };
    let (unknown_devices, unknown_devices_origin) = checker.unknown_devices(&parsed);
    checker.lists(&parsed);
    let lists_from: Vec<u64> = files
        .iter()
        .filter(|f| {
            f.parsed
                .and_then(|p| p.spec.as_ref())
                .is_some_and(|s| !s.lists.is_empty())
        })
        .map(|f| f.serial)
        .collect();
    if lists_from != cache.lists_from {
        cache.clear();
        cache.lists_from = lists_from;
    }
    let cached =
        |f: &VersionedFile, name: &str| cache.groups.contains_key(&(f.serial, name.to_string()));
    if files
        .iter()
        .any(|f| f.parsed.is_none() && f.groups.iter().any(|name| !cached(f, name)))
    {
        return Incremental::NeedsParse;
    }
    // A group's spec, when its file's parse is at hand (always, for a
    // group not cached).
    let mut specs: BTreeMap<&str, (Option<GroupAt>, u64)> = BTreeMap::new();
    let mut defined_twice = false;
    for f in files {
        match f.parsed {
            Some(parsed) => {
                let Some(spec) = &parsed.spec else { continue };
                for (name, group) in &spec.groups {
                    defined_twice |= specs
                        .insert(name, (Some((At::from(parsed), group)), f.serial))
                        .is_some();
                }
            }
            None => {
                for name in f.groups {
                    defined_twice |= specs.insert(name, (None, f.serial)).is_some();
                }
            }
        }
    }
    let mut used: HashSet<(u64, String)> = HashSet::with_capacity(specs.len());
    let mut groups = Vec::with_capacity(specs.len());
    let mut diagnostics = std::mem::take(&mut checker.out);
    let mut validated = Vec::new();
    for (name, (spec, serial)) in specs {
        let key = (serial, name.to_string());
        if !cache.groups.contains_key(&key) {
            let Some((at, spec)) = spec else {
                // Not reached (checked above for every file let go of).
                // Were it, starting over keeps the cache and its counts
                // consistent.
                cache.clear();
                return Incremental::NeedsParse;
            };
            let group = Arc::new(checker.group(at, name, spec, &mut foldhash::HashMap::default()));
            validated.push(Arc::clone(&group));
            let cached = CachedGroup {
                group,
                diagnostics: std::mem::take(&mut checker.out),
            };
            cache.groups.insert(key.clone(), cached);
        }
        let cached = &cache.groups[&key];
        groups.push(Arc::clone(&cached.group));
        diagnostics.extend(cached.diagnostics.iter().cloned());
        used.insert(key);
    }
    let gone: Vec<(u64, String)> = cache
        .groups
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    let removed: Vec<CachedGroup> = gone
        .iter()
        .filter_map(|key| cache.groups.remove(key))
        .collect();
    cache.devices.replace(
        removed
            .iter()
            .flat_map(|c| c.group.devices.iter().map(|d| d.prefix)),
        validated
            .iter()
            .flat_map(|g| g.devices.iter().map(|d| d.prefix)),
    );
    if defined_twice || cache.devices.shared() > 0 || diagnostics.iter().any(Diagnostic::is_error) {
        return Incremental::Invalid;
    }
    let policy = Policy {
        groups,
        unknown_devices,
        unknown_devices_origin,
        ntp: sorted(&env.ntp),
        gateway: sorted(&env.gateway),
    };
    Incremental::Valid((policy, diagnostics, validated.len()))
}

struct Checker<'a> {
    /// Findings so far.
    out: Vec<Diagnostic>,
    env: &'a Environment,
    all_parsed: bool,
    lists: BTreeMap<String, List>,
}

struct List {
    prefixes: Vec<IpNet>,
    origin: Origin,
}

/// Where a finding is: a file and a field path in it.
#[derive(Clone, Copy)]
struct At<'f> {
    file: &'f Arc<str>,
    positions: &'f Positions,
}

impl At<'_> {
    fn value(&self, path: &str) -> Origin {
        self.origin(self.positions.value(path))
    }

    fn key(&self, path: &str) -> Origin {
        self.origin(self.positions.key(path))
    }

    fn origin(&self, mark: super::positions::Mark) -> Origin {
        Origin {
            file: Arc::clone(self.file),
            line: mark.line,
            column: mark.column,
        }
    }
}

impl<'f> From<&'f ParsedFile> for At<'f> {
    fn from(f: &'f ParsedFile) -> Self {
        At {
            file: &f.file,
            positions: &f.positions,
        }
    }
}

impl Checker<'_> {
    fn error(&mut self, origin: &Origin, field: &str, message: String) {
        let path = Path::new(&*origin.file);
        self.out.push(Diagnostic::error(
            path,
            origin.line,
            origin.column,
            field,
            message,
        ));
    }

    fn warning(&mut self, origin: &Origin, field: &str, message: String) {
        let path = Path::new(&*origin.file);
        self.out.push(Diagnostic::warning(
            path,
            origin.line,
            origin.column,
            field,
            message,
        ));
    }

    /// `unknown-devices`, set in at most one file; deny when unset.
    fn unknown_devices(&mut self, files: &[&ParsedFile]) -> (Action, Option<Origin>) {
        let mut found: Option<(Action, Origin)> = None;
        for f in files {
            let Some(value) = f.spec.as_ref().and_then(|s| s.unknown_devices.as_ref()) else {
                continue;
            };
            let at = At::from(*f);
            let field = "unknown-devices";
            if let Some((_, first)) = &found {
                let message = format!("is also set at {first}; set it in one file");
                self.error(&at.key(field), field, message);
                continue;
            }
            match parse_unknown_devices(&value.0) {
                Ok(action) => found = Some((action, at.value(field))),
                Err(message) => self.error(&at.value(field), field, message),
            }
        }
        match found {
            Some((action, origin)) => (action, Some(origin)),
            None => (Action::Deny, None),
        }
    }

    /// Named destination sets, each defined once across all files.
    fn lists(&mut self, files: &[&ParsedFile]) {
        for f in files {
            let Some(spec) = &f.spec else { continue };
            let at = At::from(*f);
            for (name, items) in &spec.lists {
                let path = format!("lists.{name}");
                if let Some(first) = self.lists.get(name) {
                    let message = format!("list \"{name}\" is also defined at {}", first.origin);
                    self.error(&at.key(&path), &path, message);
                    continue;
                }
                if let Err(message) = check_name("list", name) {
                    self.error(&at.key(&path), &path, message);
                }
                let mut prefixes: Vec<IpNet> = Vec::new();
                // Lists run to 10^5 items (cloud provider ranges): a linear
                // `contains` per item made this quadratic.
                let mut seen: foldhash::HashSet<IpNet> = foldhash::HashSet::default();
                for (i, item) in items.values().iter().enumerate() {
                    let field = || format!("{path}{}", items.suffix(i));
                    match parse_prefix(&item.0) {
                        Ok(net) if !seen.insert(net) => {
                            let (field, message) = (field(), format!("{net} is listed twice"));
                            self.warning(&at.value(&field), &field, message);
                        }
                        Ok(net) => prefixes.push(net),
                        Err(message) => {
                            let field = field();
                            self.error(&at.value(&field), &field, message);
                        }
                    }
                }
                if items.is_empty() {
                    let message = "the list is empty: rules using it match nothing".to_string();
                    self.warning(&at.key(&path), &path, message);
                }
                let origin = at.key(&path);
                self.lists.insert(name.clone(), List { prefixes, origin });
            }
        }
    }

    /// Every group, sorted by name (their ids), each defined once and no
    /// device prefix in two of them.
    fn groups(&mut self, files: &[&ParsedFile]) -> Vec<Arc<Group>> {
        let mut specs: BTreeMap<&str, (At, &GroupSpec)> = BTreeMap::new();
        for f in files {
            let Some(spec) = &f.spec else { continue };
            let at = At::from(*f);
            for (name, group) in &spec.groups {
                if let Some((first, _)) = specs.get(name.as_str()) {
                    let path = format!("groups.{name}");
                    let message =
                        format!("group \"{name}\" is also defined at {}", first.key(&path));
                    self.error(&at.key(&path), &path, message);
                    continue;
                }
                specs.insert(name, (at, group));
            }
        }
        let mut devices_seen: foldhash::HashMap<IpNet, (&str, Origin)> =
            foldhash::HashMap::default();
        specs
            .into_iter()
            .map(|(name, (at, spec))| Arc::new(self.group(at, name, spec, &mut devices_seen)))
            .collect()
    }

    /// `devices_seen`: the device prefixes of the groups checked so far,
    /// with their group's name and place.
    fn group<'n>(
        &mut self,
        at: At,
        name: &'n str,
        spec: &GroupSpec,
        devices_seen: &mut foldhash::HashMap<IpNet, (&'n str, Origin)>,
    ) -> Group {
        let path = format!("groups.{name}");
        let origin = at.key(&path);
        if let Err(message) = check_name("group", name) {
            self.error(&origin, &path, message);
        }

        let devices_path = format!("{path}.devices");
        let values = spec.devices.as_ref().map_or(&[][..], OneOrMany::values);
        // A fleet's group lists 10^4 devices: their places come from one
        // lookup, and a field path is only written out for a finding.
        let marks = match &spec.devices {
            Some(OneOrMany::Many(_)) => at.positions.items(&devices_path),
            _ => None,
        };
        let field = |i: usize| match &spec.devices {
            Some(list) => format!("{devices_path}{}", list.suffix(i)),
            None => devices_path.clone(),
        };
        let mut devices = Vec::with_capacity(values.len());
        for (i, item) in values.iter().enumerate() {
            let mark = match marks.and_then(|m| m.get(i)) {
                Some(mark) => *mark,
                None => at.positions.value(&field(i)),
            };
            let prefix = match parse_prefix(&item.0) {
                Ok(prefix) => prefix,
                Err(message) => {
                    self.error(&at.origin(mark), &field(i), message);
                    continue;
                }
            };
            match devices_seen.get(&prefix) {
                Some((group, first)) if *group == name => {
                    let message = format!("{prefix} is listed twice (first at {first})");
                    self.warning(&at.origin(mark), &field(i), message);
                    continue;
                }
                Some((group, first)) => {
                    let message = format!(
                        "{prefix} is also a device prefix of group \"{group}\" ({first}); \
                         a source belongs to one group"
                    );
                    self.error(&at.origin(mark), &field(i), message);
                    continue;
                }
                None => {
                    devices_seen.insert(prefix, (name, at.origin(mark)));
                }
            }
            devices.push(Device {
                prefix,
                line: mark.line as u32,
                column: mark.column as u32,
            });
        }
        if spec.devices.as_ref().is_none_or(OneOrMany::is_empty) {
            let message = "the group has no devices: no packet is ever in it".to_string();
            self.warning(&origin, &path, message);
        }

        let default_field = format!("{path}.default");
        let default_origin = at.value(&default_field);
        let default = match &spec.default {
            Some(value) => parse_verdict(&value.0).unwrap_or_else(|message| {
                self.error(&default_origin, &default_field, message);
                Action::Deny
            }),
            None => {
                let message =
                    "missing `default` (allow | deny | reject): the verdict when no rule matches"
                        .to_string();
                self.error(&at.value(&path), &path, message);
                Action::Deny
            }
        };

        let mode_field = format!("{path}.mode");
        let audit = match spec.mode.as_ref().map(|m| m.0.as_str()) {
            None | Some("enforce") => false,
            Some("audit") => true,
            Some(other) => {
                let message = format!("{} is not a mode (enforce | audit)", quote(other));
                self.error(&at.value(&mode_field), &mode_field, message);
                false
            }
        };

        let mut rules: Vec<(String, Rule)> = Vec::new();
        for (i, rule) in spec.rules.iter().enumerate() {
            let field = format!("{path}.rules[{i}]");
            let written: Vec<(Action, &MatchSpec)> = [
                (Action::Allow, &rule.allow),
                (Action::Deny, &rule.deny),
                (Action::Reject, &rule.reject),
            ]
            .into_iter()
            .filter_map(|(action, body)| Some((action, body.as_ref()?)))
            .collect();
            let (action, body) = match written[..] {
                [(action, body)] => (action, body),
                _ => {
                    let message = if written.len() > 1 {
                        "a rule is one of `allow:`, `deny:` or `reject:`; split it"
                    } else {
                        "empty rule: write `allow:`, `deny:` or `reject:` and what it matches"
                    };
                    self.error(&at.value(&field), &field, message.to_string());
                    continue;
                }
            };
            let field = format!("{field}.{action}");
            if let Some(rule) = self.rule(at, &field, action, body) {
                rules.push((field, rule));
            }
        }
        self.duplicate_rules(&rules);
        let views: Vec<&Rule> = rules.iter().map(|(_, r)| r).collect();
        for shadowed in shadow::find(&views) {
            let (field, rule) = &rules[shadowed.rule];
            let by: Vec<String> = shadowed
                .by
                .iter()
                .map(|&i| format!("{} ({})", rules[i].1.id, rules[i].1.origin))
                .collect();
            let actions = rivals(rules.iter().map(|(_, r)| r), &shadowed.by);
            let message = format!(
                "rule {} never decides: {actions} rule(s) {} take every destination it matches \
                 (with a longer prefix, or the same prefix where {actions} wins)",
                rule.id,
                by.join(", ")
            );
            self.warning(&rule.origin, field, message);
        }

        Group {
            name: name.to_string(),
            description: spec.description.clone(),
            devices,
            default,
            audit,
            rules: rules.into_iter().map(|(_, r)| r).collect(),
            origin,
            default_origin,
        }
    }

    /// Checks and resolves one rule; `None` when it has errors.
    fn rule(&mut self, at: At, path: &str, action: Action, body: &MatchSpec) -> Option<Rule> {
        let errors_before = self.error_count();
        let origin = at.key(path);

        let to_field = format!("{path}.to");
        let mut targets = Vec::new();
        let mut fqdn = Vec::new();
        let mut unresolved = false;
        match &body.to {
            None => {
                let message = "missing `to`: a CIDR, an address, a list name, any, gateway or \
                               ntp, or a list of these"
                    .to_string();
                self.error(&at.value(path), path, message);
            }
            Some(ToSpec::Fqdn(names)) => {
                fqdn = self.fqdn(at, &to_field, action, names);
            }
            Some(ToSpec::Items(to)) if to.is_empty() => {
                let message = "empty `to`: name at least one CIDR, address, list or keyword \
                               (any, gateway, ntp)"
                    .to_string();
                self.error(&at.value(&to_field), &to_field, message);
            }
            Some(ToSpec::Items(to)) => {
                for (suffix, item) in to.items() {
                    let field = format!("{to_field}{suffix}");
                    match self.target(item) {
                        Ok(target) => targets.push(target),
                        Err(Some(message)) => self.error(&at.value(&field), &field, message),
                        Err(None) => unresolved = true,
                    }
                }
            }
        }

        let proto_field = format!("{path}.proto");
        let mut proto_valid = true;
        let proto = match &body.proto {
            None => None,
            Some(p) => parse_proto(&p.0).unwrap_or_else(|message| {
                self.error(&at.value(&proto_field), &proto_field, message);
                proto_valid = false;
                None
            }),
        };

        let ports_field = format!("{path}.ports");
        let ports = match &body.ports {
            None => None,
            Some(list) if list.is_empty() => {
                let message = "empty `ports`: omit it to match every port".to_string();
                self.error(&at.value(&ports_field), &ports_field, message);
                None
            }
            Some(list) => {
                if proto_valid && !proto.is_some_and(has_ports) {
                    let written = body.proto.as_ref().map_or("any", |p| p.0.as_str());
                    let message = format!(
                        "ports need `proto: tcp` or `proto: udp` (proto is {written}): \
                         only TCP and UDP packets carry ports"
                    );
                    self.error(&at.key(&ports_field), &ports_field, message);
                }
                let mut ranges = Vec::new();
                for (suffix, item) in list.items() {
                    let field = format!("{ports_field}{suffix}");
                    match parse_port_range(&item.0) {
                        Ok(range) => ranges.push(range),
                        Err(message) => self.error(&at.value(&field), &field, message),
                    }
                }
                Some(ranges)
            }
        };

        let id_field = format!("{path}.id");
        let explicit_id = body.id.as_ref().and_then(|id| {
            let checked = check_name("rule id", &id.0).and_then(|()| {
                if RESERVED_IDS.contains(&id.0.as_str()) {
                    Err(format!("\"{}\" is reserved (default, builtin-ntp)", id.0))
                } else {
                    Ok(())
                }
            });
            match checked {
                Ok(()) => Some(RuleId::new(&id.0)),
                Err(message) => {
                    self.error(&at.value(&id_field), &id_field, message);
                    None
                }
            }
        });

        if unresolved || self.error_count() > errors_before {
            return None;
        }
        let written: Vec<String> = targets
            .iter()
            .map(|t| t.written.clone())
            .chain(fqdn.iter().map(|p: &FqdnPattern| format!("fqdn:{p}")))
            .collect();
        let id = explicit_id
            .unwrap_or_else(|| RuleId::derived(action, &written, proto, ports.as_deref()));
        let rule = Rule {
            id,
            action,
            targets,
            fqdn,
            proto,
            ports,
            comment: body.comment.clone(),
            origin,
        };
        self.rule_warnings(at, path, &rule);
        Some(rule)
    }

    fn rule_warnings(&mut self, at: At, path: &str, rule: &Rule) {
        let to_field = format!("{path}.to");
        if rule.fqdn.is_empty() && rule.prefixes().next().is_none() {
            let why: Vec<String> = rule.targets.iter().map(|t| self.why_empty(t)).collect();
            let message = format!(
                "`to` resolves to no address ({}): the rule never matches",
                why.join("; ")
            );
            self.warning(&at.value(&to_field), &to_field, message);
        }
        let (wrong_v6, family) = match rule.proto {
            Some(super::PROTO_ICMP) => (true, "IPv6"),
            Some(super::PROTO_ICMPV6) => (false, "IPv4"),
            _ => return,
        };
        let wrong = |net: &IpNet| matches!(net, IpNet::V6(_)) == wrong_v6;
        if rule.prefixes().next().is_some() && rule.prefixes().all(wrong) {
            let proto_field = format!("{path}.proto");
            let message = format!(
                "{} never matches {family} destinations, and this rule has only those \
                 (ICMP is icmp for IPv4, icmpv6 for IPv6)",
                super::proto_name(rule.proto)
            );
            self.warning(&at.value(&proto_field), &proto_field, message);
        }
    }

    /// Checks the names of `to: {fqdn: [...]}`: only an allow rule takes
    /// them (a deny by name cannot be enforced against addresses: the same
    /// address serves other names, and a device can reach it without
    /// asking). Empty when there are errors.
    fn fqdn(
        &mut self,
        at: At,
        to_field: &str,
        action: Action,
        names: &OneOrMany,
    ) -> Vec<FqdnPattern> {
        let field = format!("{to_field}.fqdn");
        if action != Action::Allow {
            let message = format!(
                "only allow rules take fqdn (this is a {action} rule): a {action} by name \
                 cannot be enforced, since the addresses behind a name also serve other names \
                 and a device can reach them without asking; {action} the addresses instead"
            );
            self.error(&at.key(&field), &field, message);
            return Vec::new();
        }
        if names.is_empty() {
            let message = "empty `fqdn`: name at least one domain".to_string();
            self.error(&at.value(&field), &field, message);
            return Vec::new();
        }
        let mut patterns = Vec::new();
        for (suffix, item) in names.items() {
            let item_field = format!("{field}{suffix}");
            match FqdnPattern::parse(&item.0) {
                Ok(p) => patterns.push(p),
                Err(why) => {
                    let message = format!("{} is not a domain name: {why}", quote(&item.0));
                    self.error(&at.value(&item_field), &item_field, message)
                }
            }
        }
        patterns.sort();
        patterns.dedup();
        patterns
    }

    fn why_empty(&self, target: &Target) -> String {
        match target.written.as_str() {
            "gateway" => "gateway: no gateway addresses known".into(),
            "ntp" => "ntp: no NTP listen addresses known".into(),
            name => format!("list \"{name}\" is empty"),
        }
    }

    /// Two rules of a group with one id: an id collision or a rule written
    /// twice (derived ids are equal exactly when the meaning is).
    fn duplicate_rules(&mut self, rules: &[(String, Rule)]) {
        let mut seen: HashMap<&RuleId, &Rule> = HashMap::new();
        for (field, rule) in rules {
            match seen.get(&rule.id) {
                None => {
                    seen.insert(&rule.id, rule);
                }
                Some(first) => {
                    let message = format!(
                        "duplicate rule: id \"{}\" is also the id of the rule at {} \
                         (a derived id repeats when two rules mean the same; \
                         otherwise give each an `id:`)",
                        rule.id, first.origin
                    );
                    self.error(&rule.origin, field, message);
                }
            }
        }
    }

    /// Resolves one `to` item. `Err(None)`: unresolved, but not worth
    /// reporting (it may be defined in a file that did not parse).
    fn target(&self, item: &Scalar) -> Result<Target, Option<String>> {
        let text = item.0.as_str();
        let hosts = |addrs: &[IpAddr]| addrs.iter().map(|a| IpNet::from(*a)).collect();
        let prefixes = match text {
            "" => return Err(Some("empty `to` item".into())),
            "any" => vec![IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())],
            "gateway" => hosts(&self.env.gateway),
            "ntp" => hosts(&self.env.ntp),
            _ if looks_like_address(text) => {
                let net = parse_prefix(text).map_err(Some)?;
                return Ok(Target {
                    written: net.to_string(),
                    prefixes: vec![net],
                });
            }
            name => match self.lists.get(name) {
                Some(list) => list.prefixes.clone(),
                None if !self.all_parsed => return Err(None),
                None => return Err(Some(self.unknown_name(name))),
            },
        };
        Ok(Target {
            written: text.to_string(),
            prefixes,
        })
    }

    /// The error for a name that is not a list, with a "did you mean" hint
    /// for names a list name could be (at most 48 characters): the lengths
    /// must be within 2, which keeps the hint linear in the number of lists
    /// for any input.
    fn unknown_name(&self, name: &str) -> String {
        let hint = (name.len() <= 50)
            .then(|| {
                self.lists
                    .keys()
                    .map(String::as_str)
                    .chain(KEYWORDS)
                    .filter(|candidate| candidate.len().abs_diff(name.len()) <= 2)
                    .map(|candidate| (edit_distance(candidate, name), candidate))
                    .filter(|(distance, _)| *distance <= 2)
                    .min()
            })
            .flatten()
            .map_or(String::new(), |(_, n)| format!("; did you mean \"{n}\"?"));
        format!(
            "{} is not a CIDR, an address, a defined list or a keyword \
             (any, gateway, ntp){hint}",
            quote(name)
        )
    }

    fn error_count(&self) -> usize {
        self.out.iter().filter(|d| d.is_error()).count()
    }
}

/// The actions of the rules at `by`, as a warning names them (`deny`,
/// `deny/reject`).
fn rivals<'r>(rules: impl Iterator<Item = &'r Rule>, by: &[usize]) -> String {
    let actions: std::collections::BTreeSet<Action> = rules
        .enumerate()
        .filter(|(i, _)| by.contains(i))
        .map(|(_, r)| r.action)
        .collect();
    let labels: Vec<&str> = actions.iter().map(|a| a.label()).collect();
    labels.join("/")
}
