//! The tables the benchmark prints.

use crate::{
    FQDN_ROW, RAW_IP_ROW, TARGET_DEVICES, TARGET_NS_OVER_FLOOR, TARGET_RULES, TCP_ROW, UDP_ROW,
    bpf::ProgType,
    fixtures::Family,
    measure::{Cell, Floors},
    setup::FirstPackets,
};

pub fn print_costs(title: &str, costs: &[(String, Cell)], floor: u64) {
    println!();
    println!("{title}");
    println!("{:<68} {:>14} {:>8}", "operation", "ns", "-floor");
    for (what, cell) in costs {
        println!(
            "{what:<68} {:>14} {:>+8}",
            cell.to_string(),
            cell.min as i64 - floor as i64
        );
    }
}

/// One packet at a time from cold caches (`cold.rs`), each beside the
/// floor measured the same way, between its runs.
pub fn print_cold(rows: &[(String, Cell, Cell)]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "one packet at a time from cold caches (repeat 1, 250 frames, each once per trial after \
         the CPU idled {} ms, the floor run between; a trial is the median of its frames)",
        crate::cold::IDLE.as_millis()
    );
    println!(
        "{:<68} {:>14} {:>10} {:>8}",
        "what", "ns", "floor1", "-floor1"
    );
    for (what, cell, floor) in rows {
        println!(
            "{what:<68} {:>14} {:>10} {:>+8}",
            cell.to_string(),
            floor.to_string(),
            cell.min as i64 - floor.min as i64
        );
    }
}

/// The machine code of each program measured (`jited.rs`).
pub fn print_jited(functions: &[crate::jited::Function]) {
    if functions.is_empty() {
        return;
    }
    println!();
    println!(
        "JITed x86-64 code, function by function (the image `bpftool prog dump jited` prints, \
         counted with objdump; static counts: a path runs a part of them)"
    );
    println!(
        "{:<52} {:>8} {:>13} {:>6} {:>9}",
        "program: function", "bytes", "instructions", "calls", "branches"
    );
    for f in functions {
        println!(
            "{:<52} {:>8} {:>13} {:>6} {:>9}",
            f.name, f.bytes, f.instructions, f.calls, f.branches
        );
    }
}

/// 100 000 -> "100 000" (thin groups keep the table readable).
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// One line of the table.
pub struct Row {
    pub program: String,
    pub kind: ProgType,
    pub rules: String,
    pub devices: String,
    pub family: Family,
    pub allow: Option<Cell>,
    /// The first packet of a flow, and the floor measured the same way.
    pub allow_new: Option<FirstPackets>,
    pub deny_default: Option<Cell>,
    /// `Err` says why there is no number.
    pub deny_rule: Result<Cell, String>,
    /// From a source in no group.
    pub unknown: Option<Cell>,
}

pub fn print_table(rows: &[Row], floors: &Floors) {
    let cell = |c: &Option<Cell>| c.map_or("-".to_string(), |c| c.to_string());
    println!();
    println!(
        "{:<26} {:>11} {:>9} {:>6} {:>14} {:>15} {:>15} {:>14} {:>12} {:>16} {:>10}",
        "program",
        "dst entries",
        "devices",
        "family",
        "allow ns",
        "deny(default)",
        "deny(rule)",
        "unknown dev",
        "allow-floor",
        "allow(new flow)",
        "new-floor1"
    );
    for r in rows {
        let over = r
            .allow
            .filter(|_| !r.program.starts_with("floor"))
            .map_or("-".to_string(), |c| {
                format!("{:+}", c.min as i64 - floors.of(r.kind, r.family) as i64)
            });
        if r.allow.is_none() {
            println!("{:<26} {:>11}  {}", "xdp-filter", r.rules, r.program);
            continue;
        }
        let (new, new_over) = match r.allow_new {
            Some(first) => (
                first.allow.to_string(),
                format!("{:+}", first.allow.min as i64 - first.floor.min as i64),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<26} {:>11} {:>9} {:>6} {:>14} {:>15} {:>15} {:>14} {:>12} {:>16} {:>10}",
            r.program,
            r.rules,
            r.devices,
            r.family.name(),
            cell(&r.allow),
            cell(&r.deny_default),
            match &r.deny_rule {
                Ok(c) => c.to_string(),
                Err(why) => why.clone(),
            },
            cell(&r.unknown),
            over,
            new,
            new_over
        );
    }
}

/// The target line and the allow/deny difference at the largest cell.
pub fn print_verdicts(rows: &[Row], floors: &Floors) {
    println!();
    let target = rows.iter().filter(|r| {
        [TCP_ROW, UDP_ROW, RAW_IP_ROW, FQDN_ROW].contains(&r.program.as_str())
            && r.rules == count(TARGET_RULES)
            && r.devices == count(TARGET_DEVICES)
    });
    for r in target {
        let paths_of = match r.program.as_str() {
            UDP_ROW => format!("{} UDP", r.family.name()),
            RAW_IP_ROW => format!("{} raw IP", r.family.name()),
            FQDN_ROW => format!("{} FQDN group", r.family.name()),
            _ => r.family.name().to_string(),
        };
        let paths = [
            ("allow", r.allow),
            ("deny(default)", r.deny_default),
            ("deny(rule)", r.deny_rule.as_ref().ok().copied()),
            ("unknown device", r.unknown),
        ];
        let floor = floors.of(r.kind, r.family);
        for (path, cell) in paths {
            let Some(cell) = cell else { continue };
            let over = cell.min as i64 - floor as i64;
            println!(
                "target <= floor + {TARGET_NS_OVER_FLOOR} ns at 10^5 rules / 10^6 devices, \
                 {paths_of} {path}: {} ns = floor {} + {over} ns: {}",
                cell.min,
                floor,
                if over <= TARGET_NS_OVER_FLOOR as i64 {
                    "MET"
                } else {
                    "MISSED"
                }
            );
        }
        if let Some(first) = r.allow_new {
            println!(
                "at 10^5 rules / 10^6 devices, {} allow (new flow): {} ns = floor at repeat 1 {} \
                 + {} ns; deny(default) from the same devices, one at a time: {} ns; allow right \
                 after the device's deny(default): {} ns; right after the same allow: {} ns",
                r.family.name(),
                first.allow.min,
                first.floor.min,
                first.allow.min as i64 - first.floor.min as i64,
                first.deny_default.min,
                first.allow_after_deny.min,
                first.allow_again.min
            );
        }
        if let (Some(a), Some(d)) = (r.allow, r.deny_default) {
            println!(
                "deny(default) - allow at 10^5 rules / 10^6 devices, {paths_of}: {:+} ns",
                d.min as i64 - a.min as i64
            );
        }
    }
}
