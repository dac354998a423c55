//! `tollgate status` for people: aligned `Key : value` lines, as
//! `chronyc tracking` prints them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tollgate::control::Status;

/// The summary, one `Key : value` line each, keys padded to one width.
pub fn render(s: &Status, now: SystemTime) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut add = |key: &str, value: String| lines.push((key.to_string(), value));
    let now_unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    add("Version", s.version.clone());
    add("PID", s.pid.to_string());
    add(
        "Uptime",
        format!(
            "{} (since {})",
            ago(now_unix, s.started_at_unix),
            timestamp(s.started_at_unix)
        ),
    );
    add("Dataplane", s.dataplane_start.clone());
    for i in &s.interfaces {
        // `NAME: STATE, ...`: one `Interface` line each.
        let mut value = format!("{}: {}", i.interface, i.state);
        if let Some(mode) = &i.mode {
            value.push_str(&format!(", {mode}"));
        }
        if let Some(link) = &i.link {
            value.push_str(&format!(", {link} link"));
        }
        if let Some(adoption) = &i.adoption {
            value.push_str(&format!(" ({adoption})"));
        }
        if let Some(error) = &i.error {
            value.push_str(&format!(": {error}"));
        }
        add("Interface", value);
    }
    let p = &s.policy;
    add(
        "Policy",
        format!(
            "generation {}, commit {}, {} groups, {} rules",
            p.generation,
            p.commit.as_deref().unwrap_or("none"),
            p.groups,
            p.rules
        ),
    );
    add("Policy directory", p.dir.display().to_string());
    if p.installed_at_unix > 0 {
        add(
            "Policy installed",
            format!(
                "{} ({} ago)",
                timestamp(p.installed_at_unix),
                ago(now_unix, p.installed_at_unix)
            ),
        );
    }
    add(
        "Gateway addresses",
        if p.gateway.is_empty() {
            "none".into()
        } else {
            p.gateway
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    match &s.last_reload {
        Some(r) => add(
            "Last reload",
            format!(
                "{} ({}), {:.1} ms, {} ago: {}",
                if r.success { "ok" } else { "FAILED" },
                r.trigger,
                r.duration_ms,
                ago(now_unix, r.at_unix),
                if r.success {
                    r.summary.clone()
                } else {
                    r.errors.join("; ")
                }
            ),
        ),
        None => add("Last reload", "none".into()),
    }
    match &s.ntp {
        Some(ntp) => ntp_lines(ntp, now_unix, &mut add),
        None => add("NTP", "off (no ntp.listen)".into()),
    }
    if let Some(learned) = &s.learned_addresses {
        let counts: Vec<String> = learned.iter().map(|(g, n)| format!("{g} {n}")).collect();
        add(
            "Learned addresses",
            if counts.is_empty() {
                "none".into()
            } else {
                counts.join(", ")
            },
        );
    }
    let width = lines
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    lines
        .iter()
        .map(|(k, v)| format!("{k:<width$} : {v}\n"))
        .collect()
}

/// The NTP server's block. The status is the NTP service's JSON; a field it
/// does not carry is left out rather than guessed.
fn ntp_lines(ntp: &Value, now_unix: u64, add: &mut impl FnMut(&str, String)) {
    let text = |key: &str| ntp.get(key).and_then(Value::as_str).map(str::to_string);
    let number = |key: &str| ntp.get(key).and_then(Value::as_f64);
    let flag = |key: &str| ntp.get(key).and_then(Value::as_bool);
    let mut server = Vec::new();
    if let Some(reference) = text("reference") {
        server.push(reference);
    }
    if let Some(synced) = flag("synchronized") {
        server.push(
            if synced {
                "synchronised"
            } else {
                "NOT SYNCHRONISED"
            }
            .into(),
        );
    }
    if let Some(listen) = ntp.get("listen").and_then(Value::as_array) {
        let listen: Vec<&str> = listen.iter().filter_map(Value::as_str).collect();
        server.push(format!("serving {}", listen.join(", ")));
    }
    add("NTP", server.join(", "));
    if let Some(stratum) = ntp.get("stratum").and_then(Value::as_u64) {
        add("NTP stratum", stratum.to_string());
    }
    if let Some(leap) = ntp.get("leap_indicator").and_then(Value::as_u64) {
        add(
            "NTP leap status",
            match leap {
                0 => "normal".into(),
                1 => "insert second".into(),
                2 => "delete second".into(),
                3 => "not synchronised (3)".into(),
                n => format!("unknown ({n})"),
            },
        );
    }
    if let Some(reference) = text("reference_id") {
        add("NTP reference", reference);
    }
    if let Some(delay) = number("root_delay_seconds") {
        add("NTP root delay", format!("{delay:.9} seconds"));
    }
    if let Some(dispersion) = number("root_dispersion_seconds") {
        add("NTP root dispersion", format!("{dispersion:.9} seconds"));
    }
    if let Some(reachable) = flag("upstream_reachable") {
        add(
            "NTP upstream",
            if reachable {
                "reachable"
            } else {
                "UNREACHABLE"
            }
            .into(),
        );
    }
    if let Some(kernel) = ntp.get("kernel").filter(|k| !k.is_null()) {
        let mut clock = Vec::new();
        if let Some(unsync) = kernel.get("unsynchronized").and_then(Value::as_bool) {
            clock.push(
                if unsync {
                    "unsynchronised"
                } else {
                    "synchronised"
                }
                .to_string(),
            );
        }
        if let Some(max) = kernel.get("maxerror_seconds").and_then(Value::as_f64) {
            clock.push(format!("max error {max:.6} s"));
        }
        if let Some(est) = kernel.get("esterror_seconds").and_then(Value::as_f64) {
            clock.push(format!("estimated error {est:.6} s"));
        }
        add("Host clock", clock.join(", "));
    }
    if let Some(groups) = ntp.get("requests").and_then(Value::as_object) {
        let sum = |field: &str| -> u64 {
            groups
                .values()
                .filter_map(|g| g.get(field).and_then(Value::as_u64))
                .sum()
        };
        add("NTP served", sum("served").to_string());
        add("NTP rate limited", sum("rate_limited").to_string());
        add("NTP denied", sum("denied").to_string());
        add("NTP malformed", sum("malformed").to_string());
    }
    if let Some(clients) = ntp.get("clients").and_then(Value::as_object) {
        let counts: Vec<String> = clients
            .iter()
            .filter_map(|(group, n)| Some(format!("{group} {}", n.as_u64()?)))
            .collect();
        add(
            "NTP clients (1h)",
            if counts.is_empty() {
                "none".into()
            } else {
                counts.join(", ")
            },
        );
    }
    // The devices with the largest offsets, one line each, largest first.
    for device in ntp
        .get("largest_offsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |key: &str| device.get(key).and_then(Value::as_str).unwrap_or("?");
        let Some(offset) = device.get("offset_seconds").and_then(Value::as_f64) else {
            continue;
        };
        let seen = device
            .get("last_seen_unix")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        add(
            "NTP client offset",
            format!(
                "{} ({}): {offset:+.3} s, last seen {} ago",
                field("address"),
                field("group"),
                ago(now_unix, seen)
            ),
        );
    }
    if let Some(refused) = ntp.get("refused").and_then(Value::as_object) {
        let counts: Vec<String> = refused
            .iter()
            .filter_map(|(reason, n)| Some(format!("{reason} {}", n.as_u64()?)))
            .collect();
        if !counts.is_empty() {
            add("NTP refused", counts.join(", "));
        }
    }
}

/// How long ago `then` was, to the second (`2h 3m 10s`).
fn ago(now: u64, then: u64) -> String {
    if then == 0 {
        return "unknown".into();
    }
    humantime::format_duration(Duration::from_secs(now.saturating_sub(then))).to_string()
}

fn timestamp(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate::control::{InterfaceStatus, PolicyStatus, ReloadStatus};

    #[test]
    fn aligned_key_value_lines() {
        let status = Status {
            version: "0.1.0".into(),
            pid: 42,
            started_at_unix: 1_000,
            dataplane_start: "fresh".into(),
            interfaces: vec![
                InterfaceStatus {
                    interface: "devices0".into(),
                    state: "attached".into(),
                    mode: Some("xdp-native".into()),
                    link: Some("ethernet".into()),
                    adoption: Some("fresh".into()),
                    error: None,
                },
                InterfaceStatus {
                    interface: "wwan0".into(),
                    state: "missing".into(),
                    ..Default::default()
                },
            ],
            policy: PolicyStatus {
                dir: "/etc/tollgate/policies".into(),
                generation: 1,
                commit: None,
                groups: 1,
                rules: 2,
                installed_at_unix: 1_000,
                gateway: vec!["10.64.0.1".parse().unwrap()],
            },
            last_reload: Some(ReloadStatus {
                success: true,
                at_unix: 1_000,
                duration_ms: 3.5,
                trigger: "start".into(),
                errors: vec![],
                summary: "1 groups".into(),
            }),
            ntp: Some(serde_json::json!({
                "reference": "upstream",
                "listen": ["100.127.0.123:123"],
                "synchronized": true,
                "stratum": 3,
                "leap_indicator": 0,
                "reference_id": "127.0.0.1",
                "root_delay_seconds": 0.0005,
                "root_dispersion_seconds": 0.001,
                "upstream_reachable": true,
                "kernel": null,
                "requests": {"meters": {"served": 5, "rate_limited": 1, "denied": 0, "malformed": 0},
                             "cameras": {"served": 2, "rate_limited": 0, "denied": 0, "malformed": 0}},
                "refused": {"not_a_member": 4},
                "clients": {"meters": 2, "cameras": 0},
                "largest_offsets": [
                    {"group": "meters", "address": "10.64.0.10", "offset_seconds": 3600.0004,
                     "last_seen_unix": 4_715},
                    {"group": "meters", "address": "10.64.0.11", "offset_seconds": -0.25,
                     "last_seen_unix": 4_000}
                ]
            })),
            learned_addresses: Some([("meters".to_string(), 2)].into()),
        };
        let text = render(&status, UNIX_EPOCH + Duration::from_secs(4_725));
        let lines: Vec<&str> = text.lines().collect();
        let colon = lines[0].find(" : ").unwrap();
        assert!(lines.iter().all(|l| l.find(" : ") == Some(colon)), "{text}");
        for expected in [
            "Version             : 0.1.0",
            "Uptime              : 1h 2m 5s (since 1970-01-01T00:16:40Z)",
            "Interface           : devices0: attached, xdp-native, ethernet link (fresh)",
            "Interface           : wwan0: missing",
            "Policy              : generation 1, commit none, 1 groups, 2 rules",
            "Last reload         : ok (start), 3.5 ms, 1h 2m 5s ago: 1 groups",
            "NTP                 : upstream, synchronised, serving 100.127.0.123:123",
            "NTP stratum         : 3",
            "NTP leap status     : normal",
            "NTP root delay      : 0.000500000 seconds",
            "NTP served          : 7",
            "Learned addresses   : meters 2",
            "NTP rate limited    : 1",
            "NTP refused         : not_a_member 4",
            "NTP clients (1h)    : cameras 0, meters 2",
            "NTP client offset   : 10.64.0.10 (meters): +3600.000 s, last seen 10s ago",
            "NTP client offset   : 10.64.0.11 (meters): -0.250 s, last seen 12m 5s ago",
        ] {
            assert!(lines.contains(&expected), "{expected:?} in\n{text}");
        }
    }
}
