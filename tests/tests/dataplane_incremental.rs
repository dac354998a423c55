//! Incremental installs are exact and proportional to the change.
//!
//! An install writes into the inactive slot only what differs from what
//! that slot holds (the policy before the one in force), and groups,
//! counters and rule lists keep their kernel identities while their content
//! is unchanged. The property test applies random edit sequences (groups
//! added, with names sorting before and after the others, and removed;
//! rules dropped and their ports changed; defaults flipped; devices moved;
//! the policy compiled afresh, so that no group's compiled fragment is the
//! one a slot was written from), compiles with the cache the daemon keeps
//! (unchanged groups keep their fragments, which the install reuses slot by
//! slot), and after every install reads both slots back from the kernel:
//! the active slot must hold exactly what a from-scratch install of the new
//! policy holds, the other slot still the previous policy, and every
//! counter owner the two policies share must keep its kernel counter.
//! Last, a fresh dataplane installs the last policy from scratch and its
//! slot must read back the same.
//!
//! The fleet test then counts the map writes of the edits issue 14 names,
//! on a fleet of explicit rules in many group files: each must write only
//! the entries of what changed. The restart test does the same across a
//! restart that adopts the pinned maps: the policy in force is installed
//! again without a write, and counters keep counting.

use std::{cell::RefCell, collections::HashMap, sync::Arc};

use proptest::{prelude::*, sample::Index};
use testkit::{
    PinDir,
    bench::Pool,
    explicit_fleet::{self, Shape},
    frames::{Frame, Transport},
    random,
};
use tollgate::{
    compile::{CompileCache, compile, compile_cached},
    config::Limits,
    datapath::{Dataplane, Options, SlotContents, Start, XDP_PASS, slots::WriteStats},
    policy::{self, Environment, Group, Policy, PortRange, Source},
    tables::{CompiledPolicy, CounterOwner},
};
use tollgate_common::Verdict;

/// Random edit sequences, on one dataplane.
const SEQUENCES: u32 = 8;
const EDITS: std::ops::Range<usize> = 4..9;

/// Small maps: these policies are small, and opening is quicker.
fn limits() -> Limits {
    Limits {
        device_addresses: 1024,
        device_prefixes: 1024,
        destinations: 4096,
        counters: 4096,
        rule_records: 4096,
        fragments: 1024,
        ..Limits::default()
    }
}

fn open() -> Dataplane {
    Dataplane::open(&Options {
        limits: limits(),
        ..Options::default()
    })
    .unwrap()
}

#[derive(Clone, Debug)]
enum Edit {
    /// A group from another random policy, named to sort first or last.
    AddGroup {
        from: Policy,
        first: bool,
    },
    RemoveGroup(Index),
    DropRule(Index, Index),
    /// One port for a TCP or UDP rule.
    SetPort(Index, Index, u16),
    FlipDefault(Index),
    /// A device of one group moves to another.
    MoveDevice(Index, Index, Index),
    /// The same policy compiled without the cache: every group's fragment
    /// is new, its content the same.
    Recompile,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (random::policy(), any::<bool>()).prop_map(|(from, first)| Edit::AddGroup { from, first }),
        any::<Index>().prop_map(Edit::RemoveGroup),
        (any::<Index>(), any::<Index>()).prop_map(|(g, r)| Edit::DropRule(g, r)),
        (any::<Index>(), any::<Index>(), 1u16..3).prop_map(|(g, r, p)| Edit::SetPort(
            g,
            r,
            8000 + p
        )),
        any::<Index>().prop_map(Edit::FlipDefault),
        (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(a, d, b)| Edit::MoveDevice(a, d, b)),
        Just(Edit::Recompile),
    ]
}

/// Applies `edit` as `validate` would leave the result: groups sorted by
/// name, each device prefix in one group.
fn apply(policy: &mut Policy, edit: &Edit, serial: usize) {
    let groups = policy.groups.len();
    match edit {
        Edit::AddGroup { from, first } => {
            let Some(group) = from.groups.first() else {
                return;
            };
            let mut group = (**group).clone();
            group.name = format!("{}{serial}", if *first { "a" } else { "z" });
            group.devices.retain(|d| {
                !policy
                    .groups
                    .iter()
                    .any(|g| g.devices.iter().any(|o| o.prefix == d.prefix))
            });
            policy.groups.push(group.into());
        }
        Edit::RemoveGroup(g) if groups > 1 => {
            policy.groups.remove(g.index(groups));
        }
        Edit::DropRule(g, r) if groups > 0 => {
            let rules = &mut Arc::make_mut(&mut policy.groups[g.index(groups)]).rules;
            if !rules.is_empty() {
                rules.remove(r.index(rules.len()));
            }
        }
        Edit::SetPort(g, r, port) if groups > 0 => {
            let rules = &mut Arc::make_mut(&mut policy.groups[g.index(groups)]).rules;
            if !rules.is_empty() {
                let at = r.index(rules.len());
                let rule = &mut rules[at];
                if matches!(rule.proto, Some(6 | 17)) {
                    rule.ports = Some(vec![PortRange::new(*port, *port)]);
                }
            }
        }
        Edit::FlipDefault(g) if groups > 0 => {
            let group = Arc::make_mut(&mut policy.groups[g.index(groups)]);
            group.default = match group.default {
                policy::Action::Allow => policy::Action::Deny,
                _ => policy::Action::Allow,
            };
        }
        Edit::MoveDevice(a, d, b) if groups > 1 => {
            let (a, b) = (a.index(groups), b.index(groups));
            let devices = &mut Arc::make_mut(&mut policy.groups[a]).devices;
            if a != b && !devices.is_empty() {
                let device = devices.remove(d.index(devices.len()));
                Arc::make_mut(&mut policy.groups[b]).devices.push(device);
            }
        }
        _ => {}
    }
    policy.groups.sort_by(|x, y| x.name.cmp(&y.name));
}

/// Kernel counter of each owner of the installed policy.
fn counter_indices(dp: &Dataplane, tables: &CompiledPolicy) -> HashMap<CounterOwner, u32> {
    tables
        .counters
        .iter()
        .enumerate()
        .map(|(i, owner)| (owner.clone(), dp.counter_index(i as u32).unwrap()))
        .collect()
}

#[test]
fn incremental_installs_equal_from_scratch_ones() {
    testkit::require_root();
    let dataplane = RefCell::new(open());
    let installs = RefCell::new(0usize);
    let final_install = RefCell::new(None);
    random::runner(SEQUENCES)
        .run(
            &(random::policy(), proptest::collection::vec(edit(), EDITS)),
            |(mut policy, edits)| {
                let mut dp = dataplane.borrow_mut();
                let mut previous: Option<(CompiledPolicy, HashMap<CounterOwner, u32>)> = None;
                let mut cache = CompileCache::default();
                let mut last = None;
                for (serial, edit) in std::iter::once(None)
                    .chain(edits.iter().map(Some))
                    .enumerate()
                {
                    if let Some(edit) = edit {
                        apply(&mut policy, edit, serial);
                    }
                    if matches!(edit, Some(Edit::Recompile)) {
                        cache = CompileCache::default();
                    }
                    // An edit may overflow a rule list; the policy stays.
                    let Ok(tables) = compile_cached(&policy, &limits(), &mut cache) else {
                        continue;
                    };
                    dp.install(&tables)
                        .map_err(|e| TestCaseError::fail(format!("install: {e:#}")))?;
                    *installs.borrow_mut() += 1;
                    let active = dp.active_slot();
                    let held = dp.slot_contents(active).unwrap();
                    prop_assert_eq!(
                        &held,
                        &SlotContents::of(&tables).unwrap(),
                        "after {:?}: the active slot differs from a from-scratch install",
                        edit
                    );
                    let indices = counter_indices(&dp, &tables);
                    if let Some((old, old_indices)) = &previous {
                        prop_assert_eq!(
                            dp.slot_contents(1 - active).unwrap(),
                            SlotContents::of(old).unwrap(),
                            "the other slot still holds the previous policy"
                        );
                        for (owner, index) in &indices {
                            if let Some(old_index) = old_indices.get(owner) {
                                prop_assert_eq!(index, old_index, "{:?} kept its counter", owner);
                            }
                        }
                    }
                    previous = Some((tables.clone(), indices));
                    last = Some((tables, held));
                }
                if last.is_some() {
                    *final_install.borrow_mut() = last;
                }
                Ok(())
            },
        )
        .unwrap();
    eprintln!("{} installs compared", installs.borrow());
    // `SlotContents::of` itself against the kernel: a fresh dataplane
    // installs the last policy of the last sequence from scratch (once:
    // opening one loads and verifies the program).
    let (tables, held) = final_install.take().expect("a sequence compiled");
    let mut fresh = open();
    fresh.install(&tables).unwrap();
    assert_eq!(fresh.slot_contents(fresh.active_slot()).unwrap(), held);
    assert_eq!(held, SlotContents::of(&tables).unwrap());
}

/// A fleet of explicit rules in one group file each, as issue 14 writes it
/// (scaled down), from sources.
struct Fleet {
    sources: Vec<Source>,
    /// The daemon's compile cache (unchanged groups keep their fragments,
    /// so the install reuses their parts), or none: every group afresh.
    cache: Option<CompileCache>,
    /// The groups loaded last: an unchanged group keeps its `Arc`, as
    /// `policy::load_cached` keeps it for the daemon.
    groups: HashMap<String, Arc<Group>>,
}

impl Fleet {
    fn new(shape: &Shape, cached: bool) -> Fleet {
        let prefixes = Pool::load().unwrap().take(shape.rules());
        let sources = explicit_fleet::sources(shape, &prefixes);
        Fleet {
            sources,
            cache: cached.then(CompileCache::default),
            groups: HashMap::new(),
        }
    }

    fn compile(&mut self) -> CompiledPolicy {
        let mut loaded = policy::from_sources(&self.sources, &Environment::default()).unwrap();
        match &mut self.cache {
            Some(cache) => {
                for group in &mut loaded.policy.groups {
                    match self.groups.get(&group.name) {
                        Some(last) if **last == **group => *group = Arc::clone(last),
                        _ => {
                            self.groups.insert(group.name.clone(), Arc::clone(group));
                        }
                    }
                }
                compile_cached(&loaded.policy, &Limits::default(), cache).unwrap()
            }
            None => compile(&loaded.policy, &Limits::default()).unwrap(),
        }
    }
}

#[test]
fn fleet_edits_write_only_what_changed() {
    fleet_edits(false);
}

/// The same with the daemon's compile cache: the install reuses the
/// unchanged groups' counters, records, destinations and tries, and must
/// write exactly as much.
#[test]
fn fleet_edits_write_only_what_changed_with_the_compile_cache() {
    fleet_edits(true);
}

fn fleet_edits(cached: bool) {
    testkit::require_root();
    let shape = Shape {
        groups: 20,
        rules_per_group: 100,
        devices: 4_000,
    };
    let mut fleet = Fleet::new(&shape, cached);
    let base = fleet.compile();
    let mut dp = open_default();
    let first = dp.install(&base).unwrap();
    assert!(first.writes.inserted > shape.devices + shape.rules());
    // Both slots hold the fleet.
    dp.install(&base).unwrap();
    let total = |w: tollgate::datapath::slots::WriteStats| w.inserted + w.removed;

    // A new group file whose group sorts before every other: its group
    // entry, its device, its destination and its rule list.
    let small =
        explicit_fleet::small_group_file("aaa", "172.16.0.1".parse().unwrap(), "192.0.2.0/24");
    fleet.sources.push(Source {
        path: "groups/aaa.yaml".into(),
        text: small,
    });
    let added = dp.install(&fleet.compile()).unwrap();
    assert!(
        total(added.writes) <= 4,
        "adding a group wrote {:?}",
        added.writes
    );

    // Deleting it: in the slot that never held it, nothing to write; in
    // the other, its entries go.
    fleet.sources.pop();
    let deleted = dp.install(&fleet.compile()).unwrap();
    assert_eq!(total(deleted.writes), 0, "{:?}", deleted.writes);
    let again = dp.install(&fleet.compile()).unwrap();
    assert!(
        total(again.writes) <= 4,
        "deleting a group wrote {:?}",
        again.writes
    );

    // A one-line port change in the first group file: that rule's list
    // and the destination that points at it.
    let text = &mut fleet.sources[0].text;
    let old = explicit_fleet::rule_line(0, &first_prefix(text), explicit_fleet::port(0));
    let new = explicit_fleet::rule_line(0, &first_prefix(text), 40_000);
    assert!(text.contains(&old));
    *text = text.replacen(&old, &new, 1);
    let edited = dp.install(&fleet.compile()).unwrap();
    assert!(
        total(edited.writes) <= 3,
        "a one-line edit wrote {:?}",
        edited.writes
    );

    // The tries (stored into the mapped TG_TRIE, counted apart): only
    // those of the groups that changed, never the slot's whole table.
    let whole: usize = first.writes.trie_words;
    for (what, install) in [
        ("adding a group", &added),
        ("deleting it (slot without it)", &deleted),
        ("deleting it", &again),
        ("a one-line edit", &edited),
    ] {
        eprintln!(
            "{what}: {} trie words stored (first install: {whole})",
            install.writes.trie_words
        );
        assert!(
            install.writes.trie_words <= TRIE_WORDS_OF_A_SMALL_GROUP,
            "{what} stored {} trie words",
            install.writes.trie_words
        );
    }
}

/// A group with one /24 destination: its big root (65,536 words, the
/// first 16 bits), one wide node (256 words) on the way to /24, and a
/// root entry, in each of the two slots an edit sequence touches; the
/// slot's whole table is 4,194,304 words.
const TRIE_WORDS_OF_A_SMALL_GROUP: usize = 2 * (65_536 + 256 + 1);

fn open_default() -> Dataplane {
    Dataplane::open(&Options::default()).unwrap()
}

/// The prefix of the first rule of a group file.
fn first_prefix(text: &str) -> ipnet::IpNet {
    let line = text.lines().find(|l| l.contains("to: \"")).expect("a rule");
    let start = line.find("to: \"").unwrap() + 5;
    let end = start + line[start..].find('"').unwrap();
    line[start..end].parse().unwrap()
}

#[test]
fn a_restart_installs_the_policy_in_force_without_writes() {
    testkit::require_root();
    let shape = Shape {
        groups: 20,
        rules_per_group: 100,
        devices: 4_000,
    };
    let mut fleet = Fleet::new(&shape, true);
    let base = fleet.compile();
    let pins = PinDir::new("restart");
    let options = Options {
        pin_dir: Some(pins.0.clone()),
        ..Options::default()
    };
    let total = |w: WriteStats| w.inserted + w.removed;
    // Rule 0 of g000 allows TCP to its prefix on its port.
    let frame = Frame::new(
        explicit_fleet::device(0).into(),
        first_prefix(&fleet.sources[0].text).network(),
        Transport::Tcp {
            dport: explicit_fleet::port(0),
        },
    )
    .build();
    let allowed = CounterOwner::Verdict {
        group: explicit_fleet::group_name(0).into(),
        verdict: Verdict::Allow,
    };
    let count = |dp: &Dataplane| dp.counter_of(&allowed).unwrap().unwrap().packets;

    // The first run installs the fleet in both slots (as after a reload
    // that changed nothing the kernel sees) and counts a packet.
    let mut dp = Dataplane::open(&options).unwrap();
    dp.install(&base).unwrap();
    dp.install(&base).unwrap();
    assert_eq!(dp.test_run_xdp(&frame, 1).unwrap().0, XDP_PASS);
    assert_eq!(count(&dp), 1);
    let (generation, active) = (dp.generation(), dp.active_slot());
    let held = dp.slot_contents(active).unwrap();
    drop(dp);

    // Restart: the same policy is in force already; nothing is written,
    // nothing flipped, and the counter goes on from where it was.
    let mut dp = Dataplane::open(&options).unwrap();
    assert_eq!(dp.start(), &Start::Adopted);
    assert_eq!(count(&dp), 1, "counters survive the restart");
    let again = dp.install(&base).unwrap();
    assert_eq!(again.writes, WriteStats::default(), "{again:?}");
    assert_eq!(
        (dp.generation(), again.slot),
        (generation, active),
        "no flip"
    );
    assert_eq!(dp.slot_contents(active).unwrap(), held);
    assert_eq!(dp.test_run_xdp(&frame, 1).unwrap().0, XDP_PASS);
    assert_eq!(count(&dp), 2, "the adopted counter keeps counting");

    // A one-line edit after the restart goes into the other slot, read
    // back with its group ids: that rule's list and its destination.
    let text = &mut fleet.sources[1].text;
    let old = explicit_fleet::rule_line(0, &first_prefix(text), explicit_fleet::port(0));
    let new = explicit_fleet::rule_line(0, &first_prefix(text), 40_000);
    *text = text.replacen(&old, &new, 1);
    let edited_policy = fleet.compile();
    let edited = dp.install(&edited_policy).unwrap();
    assert!(
        total(edited.writes) <= 3,
        "a one-line edit after a restart wrote {:?}",
        edited.writes
    );
    assert!(
        edited.writes.trie_words <= TRIE_WORDS_OF_A_SMALL_GROUP,
        "a one-line edit after a restart stored {} trie words",
        edited.writes.trie_words
    );
    assert_eq!(
        dp.slot_contents(dp.active_slot()).unwrap(),
        SlotContents::of(&edited_policy).unwrap()
    );
    assert_eq!(dp.test_run_xdp(&frame, 1).unwrap().0, XDP_PASS);
    assert_eq!(count(&dp), 3, "unchanged groups keep their counters");
    drop(dp);

    // A restart with another policy than the one in force: the ordinary
    // install into the other slot, by difference (it holds the fleet
    // before the edit, this is the fleet before the edit).
    let mut dp = Dataplane::open(&options).unwrap();
    let back = dp.install(&base).unwrap();
    assert_eq!(dp.generation(), generation + 2, "flipped");
    assert_eq!(total(back.writes), 0, "{back:?}");
    assert_eq!(
        dp.slot_contents(dp.active_slot()).unwrap(),
        SlotContents::of(&base).unwrap()
    );
}

/// Only a group with FQDN rules makes the program look up learned
/// addresses (`GROUP_LEARNS`): no other group can have any.
#[test]
fn only_a_group_with_fqdn_rules_looks_up_learned_addresses() {
    let source = Source {
        path: "p.yaml".into(),
        text: "groups:
  cloud:
    devices: [10.0.0.0/24]
    default: deny
    rules:
      - allow: {to: {fqdn: [iot.example.com]}, proto: tcp, ports: [443]}
  plain:
    devices: [10.0.1.0/24]
    default: deny
    rules:
      - allow: {to: [192.0.2.0/24], proto: tcp, ports: [443]}
"
        .into(),
    };
    let loaded = policy::from_sources(&[source], &Environment::default()).unwrap();
    let tables = compile(&loaded.policy, &Limits::default()).unwrap();
    let contents = SlotContents::of(&tables).unwrap();
    let learns = |group: &str| contents.groups[group].flags & tollgate_common::GROUP_LEARNS != 0;
    assert!(learns("cloud"));
    assert!(!learns("plain"));
}
