//! A verdict diff as lines of text (the CLI's text and GitHub output, the
//! daemon's reload log) and as JSON, both bounded to `max_lines` changes
//! with a count of what was left out.
//!
//! One line per change, self-contained so that it reads alone in a pull
//! request annotation or a log:
//! `meters: 203.0.113.0/24 tcp/443 deny → allow (rule new-backend)`.

use serde::Serialize;

use super::{Change, Changes, Outcome, Ports, Protocols, VerdictDiff};
use crate::policy::{Origin, Policy, proto_name};

/// How many destinations of one change a line names before `(+N more)`.
const DESTINATIONS_PER_LINE: usize = 8;

/// What a line reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// A verdict changes.
    Verdict,
    /// The verdict stays, another rule decides it.
    Reattributed,
    /// Devices change group, a group appears or disappears.
    Membership,
    /// A rule newly never decides.
    Shadowed,
}

/// One line of the diff, and the policy place it is about, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub kind: LineKind,
    pub text: String,
    /// The rule responsible, in the new policy (for annotations).
    pub at: Option<Origin>,
}

/// Every line of `diff`, in order: per group its verdict changes then its
/// reattributions, then moved devices, added and removed groups, newly
/// shadowed rules. `new` places the responsible rules.
pub fn lines(diff: &VerdictDiff, new: &Policy) -> Vec<Line> {
    let mut out = Vec::new();
    for g in &diff.groups {
        changes_lines(&mut out, &g.group, &g.group, &g.changes, new);
    }
    for m in &diff.moved {
        out.push(Line {
            kind: LineKind::Membership,
            text: format!(
                "devices {}: {} → {}",
                list(m.devices.iter().map(ToString::to_string).collect()),
                m.from,
                m.to
            ),
            at: None,
        });
        let label = format!("{} → {}", m.from, m.to);
        changes_lines(&mut out, &label, &m.to, &m.changes, new);
    }
    for (word, names) in [
        ("added", &diff.groups_added),
        ("removed", &diff.groups_removed),
    ] {
        for name in names {
            out.push(Line {
                kind: LineKind::Membership,
                text: format!("group {name} {word}"),
                at: None,
            });
        }
    }
    for s in &diff.newly_shadowed {
        out.push(Line {
            kind: LineKind::Shadowed,
            text: format!(
                "{}: rule {} never decides now: rule(s) {} take every destination it matches",
                s.group,
                s.rule,
                s.by.join(", ")
            ),
            at: Some(s.origin.clone()),
        });
    }
    out
}

fn changes_lines(out: &mut Vec<Line>, label: &str, group: &str, changes: &Changes, new: &Policy) {
    for (kind, list) in [
        (LineKind::Verdict, &changes.verdicts),
        (LineKind::Reattributed, &changes.reattributed),
    ] {
        for c in list {
            out.push(Line {
                kind,
                text: format!("{label}: {}", change_text(c)),
                at: new
                    .rule(group, &c.new.decider)
                    .or_else(|| new.rule(group, &c.old.decider))
                    .map(|r| r.origin.clone()),
            });
        }
    }
}

/// `203.0.113.0/24 tcp/443 deny → allow (rule new-backend)`.
fn change_text(c: &Change) -> String {
    let verdicts = if c.old.verdict == c.new.verdict {
        format!("{} (same verdict)", c.old.verdict.label())
    } else {
        format!("{} → {}", c.old.verdict.label(), c.new.verdict.label())
    };
    format!(
        "{} {} {verdicts} ({})",
        list(c.destinations.iter().map(ToString::to_string).collect()),
        traffic(&c.protocols, &c.ports),
        responsible(&c.old, &c.new)
    )
}

/// At most [`DESTINATIONS_PER_LINE`] items, then how many more.
fn list(items: Vec<String>) -> String {
    if items.len() <= DESTINATIONS_PER_LINE {
        return items.join(", ");
    }
    format!(
        "{} (+{} more)",
        items[..DESTINATIONS_PER_LINE].join(", "),
        items.len() - DESTINATIONS_PER_LINE
    )
}

/// `any`, `tcp`, `tcp,udp/443`, `udp/0-52,54-65535,unknown`, `any except tcp,udp`.
fn traffic(protocols: &Protocols, ports: &Ports) -> String {
    let proto = match protocols {
        Protocols::Any => "any".to_string(),
        Protocols::Only(these) => these
            .iter()
            .map(|p| proto_name(Some(*p)))
            .collect::<Vec<_>>()
            .join(","),
        Protocols::AllBut(except) => format!(
            "any except {}",
            except
                .iter()
                .map(|p| proto_name(Some(*p)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    match ports_text(ports) {
        Some(ports) => format!("{proto}/{ports}"),
        None => proto,
    }
}

/// `443`, `1-1023`, `0-52,unknown`, `unknown`; `None` for every port.
fn ports_text(ports: &Ports) -> Option<String> {
    let Ports::Part { unknown, ranges } = ports else {
        return None;
    };
    let mut parts: Vec<String> = ranges.iter().map(ToString::to_string).collect();
    if *unknown {
        parts.push("unknown".into());
    }
    Some(parts.join(","))
}

/// What decides now, and what did before when it differs.
fn responsible(old: &Outcome, new: &Outcome) -> String {
    let name = |d: &str| match d {
        "default" | "builtin-ntp" => d.to_string(),
        id => format!("rule {id}"),
    };
    match (old.decider.as_str(), new.decider.as_str()) {
        (o, n) if o == n => name(n),
        ("default", n) => name(n),
        (o, n) => format!("{}, was {}", name(n), name(o)),
    }
}

/// The text output: the first `max_lines` lines, then how many are left
/// out; `no verdict changes` when there is nothing.
pub fn text(lines: &[Line], max_lines: usize) -> String {
    let mut out = String::new();
    for line in lines.iter().take(max_lines) {
        out.push_str(&line.text);
        out.push('\n');
    }
    if lines.len() > max_lines {
        out.push_str(&format!(
            "… {} more line(s) not shown (--max-lines)\n",
            lines.len() - max_lines
        ));
    }
    if lines.is_empty() {
        out.push_str("no verdict changes\n");
    }
    out
}

/// `diff --format json`; field names are part of the interface
/// (documented in policies/README.md).
#[derive(Serialize)]
pub struct Report {
    pub groups: Vec<GroupReport>,
    pub devices_moved: Vec<MovedReport>,
    pub groups_added: Vec<String>,
    pub groups_removed: Vec<String>,
    pub shadowed: Vec<ShadowedReport>,
    /// Whether changes were left out past `max_lines`.
    pub truncated: bool,
    /// How many.
    pub omitted: usize,
}

#[derive(Serialize)]
pub struct GroupReport {
    pub group: String,
    pub changes: Vec<ChangeReport>,
    pub reattributed: Vec<ChangeReport>,
}

#[derive(Serialize)]
pub struct MovedReport {
    pub devices: Vec<String>,
    pub from: String,
    pub to: String,
    pub changes: Vec<ChangeReport>,
    pub reattributed: Vec<ChangeReport>,
}

#[derive(Serialize)]
pub struct ChangeReport {
    pub destinations: Vec<String>,
    /// `any`, a protocol name or number, or `any except tcp,udp`.
    pub proto: String,
    /// `null` for every port; else `443`, `1-1023`, `0-52,unknown`.
    pub ports: Option<String>,
    pub from: String,
    pub to: String,
    /// A rule id, `default` or `builtin-ntp`.
    pub old_rule: String,
    pub new_rule: String,
}

#[derive(Serialize)]
pub struct ShadowedReport {
    pub group: String,
    pub rule: String,
    pub file: String,
    pub line: usize,
    pub by: Vec<String>,
}

/// The JSON report, keeping at most `max_lines` changes (in the order of
/// [`lines`]).
pub fn report(diff: &VerdictDiff, max_lines: usize) -> Report {
    let mut budget = Budget {
        left: max_lines,
        omitted: 0,
    };
    let mut changes = |c: &Changes| (budget.take(&c.verdicts), budget.take(&c.reattributed));
    let groups = diff
        .groups
        .iter()
        .map(|g| {
            let (changes, reattributed) = changes(&g.changes);
            GroupReport {
                group: g.group.clone(),
                changes,
                reattributed,
            }
        })
        .collect();
    let devices_moved = diff
        .moved
        .iter()
        .map(|m| {
            let (changes, reattributed) = changes(&m.changes);
            MovedReport {
                devices: m.devices.iter().map(ToString::to_string).collect(),
                from: m.from.clone(),
                to: m.to.clone(),
                changes,
                reattributed,
            }
        })
        .collect();
    Report {
        groups,
        devices_moved,
        groups_added: diff.groups_added.clone(),
        groups_removed: diff.groups_removed.clone(),
        shadowed: diff
            .newly_shadowed
            .iter()
            .map(|s| ShadowedReport {
                group: s.group.clone(),
                rule: s.rule.clone(),
                file: s.origin.file.to_string(),
                line: s.origin.line,
                by: s.by.clone(),
            })
            .collect(),
        truncated: budget.omitted > 0,
        omitted: budget.omitted,
    }
}

struct Budget {
    left: usize,
    omitted: usize,
}

impl Budget {
    fn take(&mut self, changes: &[Change]) -> Vec<ChangeReport> {
        let kept = changes.len().min(self.left);
        self.left -= kept;
        self.omitted += changes.len() - kept;
        changes[..kept].iter().map(change_report).collect()
    }
}

fn change_report(c: &Change) -> ChangeReport {
    ChangeReport {
        destinations: c.destinations.iter().map(ToString::to_string).collect(),
        proto: traffic(&c.protocols, &Ports::All),
        ports: ports_text(&c.ports),
        from: c.old.verdict.label().to_string(),
        to: c.new.verdict.label().to_string(),
        old_rule: c.old.decider.clone(),
        new_rule: c.new.decider.clone(),
    }
}
