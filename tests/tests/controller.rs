//! The daemon (`tollgate run`) as an operator runs it: hot reload from the
//! policy directory, last-good policy on bad input, deploy-style directory
//! swaps, and filtering that never lapses across `kill -9` and restart.
//! Real daemon process, real packets between namespaces.

use std::{
    net::UdpSocket,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use testkit::daemon_process::{Daemon, write_atomically};
use tollgate::netns::{RIG_DEVICE_IFACE, Rig};

const SERVICE: &str = "203.0.113.30";
const DEVICE: &str = "10.64.0.10";

fn rig(tag: &str) -> Rig {
    let rig = Rig::create(&format!("tg-{tag}-{}", std::process::id())).unwrap();
    rig.add_device(DEVICE).unwrap();
    rig.add_service(SERVICE).unwrap();
    rig
}

fn receiver(rig: &Rig, port: u16) -> UdpSocket {
    let s = rig
        .upstream
        .enter(|| UdpSocket::bind((SERVICE, port)).unwrap())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    testkit::large_receive_buffer(&s);
    s
}

fn sender(rig: &Rig) -> UdpSocket {
    rig.devices
        .enter(|| UdpSocket::bind((DEVICE, 0)).unwrap())
        .unwrap()
}

fn drain(r: &UdpSocket) -> usize {
    let mut buf = [0u8; 64];
    let mut n = 0;
    while r.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// Sends `n` datagrams to each port; returns how many arrived per port.
fn probe(rig: &Rig, ports: &[u16], n: usize) -> Vec<usize> {
    let receivers: Vec<_> = ports.iter().map(|p| receiver(rig, *p)).collect();
    let s = sender(rig);
    for p in ports {
        for _ in 0..n {
            s.send_to(b"probe", (SERVICE, *p)).unwrap();
        }
    }
    receivers.iter().map(drain).collect()
}

/// The entries of generation `generation` and the map writes of its
/// install, from its "in force" log line.
fn entries_and_writes(logs: &str, generation: u64) -> (usize, usize) {
    let line = logs
        .lines()
        .find(|l| l.contains(&format!("policy generation {generation} in force")))
        .unwrap_or_else(|| panic!("no install of generation {generation} logged:\n{logs}"));
    let number_before = |what: &str| -> usize {
        let head = &line[..line
            .find(what)
            .unwrap_or_else(|| panic!("{what} in {line}"))];
        head.trim_end()
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a number before {what} in {line}"))
    };
    (number_before(" entries,"), number_before(" map writes,"))
}

#[test]
fn a_policy_edit_takes_effect_and_the_latency_is_measured() {
    testkit::require_root();
    let rig = rig("reload");
    let daemon = Daemon::start(
        &rig.gateway,
        "reload",
        &[RIG_DEVICE_IFACE],
        "",
        &[("meters.yaml", &testkit::policy_allowing(7000))],
    );
    assert_eq!(probe(&rig, &[7000, 7001], 5), [5, 0]);
    // After the start the inactive slot is filled with the policy in force,
    // so that the first edit writes its difference only.
    daemon.wait_log(
        "inactive slot filled with the policy in force",
        Duration::from_secs(10),
    );

    let receiver = receiver(&rig, 7001);
    receiver.set_nonblocking(true).unwrap();
    let sender = sender(&rig);
    let written = Instant::now();
    daemon.write_policy("meters.yaml", &testkit::policy_allowing(7001));
    let latency = loop {
        sender.send_to(b"x", (SERVICE, 7001)).unwrap();
        std::thread::sleep(Duration::from_micros(500));
        if receiver.recv(&mut [0u8; 8]).is_ok() {
            break written.elapsed();
        }
        assert!(
            written.elapsed() < Duration::from_secs(10),
            "new verdict never took effect"
        );
    };
    eprintln!(
        "file write to verdict live: {:.1} ms (includes the {} ms debounce)",
        latency.as_secs_f64() * 1e3,
        tollgate::reload::watch::DEBOUNCE.as_millis()
    );
    drop(receiver);
    assert_eq!(probe(&rig, &[7000, 7001], 5), [0, 5]);
    let s = daemon.status();
    assert_eq!(s.policy.generation, 2);
    assert!(s.last_reload.unwrap().success);
    let (entries, writes) = entries_and_writes(&daemon.logs(), 2);
    assert!(
        writes < entries,
        "the edit wrote {writes} map entries of the policy's {entries}: the slot was not filled"
    );

    // What the edit did to verdicts is logged after the flip.
    let wanted = [
        "verdict diff of generation 2 from 1: 2 line(s)",
        "verdict diff: meters: 203.0.113.0/24 udp/7000 allow → deny (default, was rule ",
        "verdict diff: meters: 203.0.113.0/24 udp/7001 deny → allow (rule ",
    ];
    let logged = Instant::now();
    while !wanted.iter().all(|w| daemon.logs().contains(w)) {
        assert!(
            logged.elapsed() < Duration::from_secs(10),
            "no verdict diff in the log:\n{}",
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_policy_is_rejected_loudly_and_the_last_good_one_stays() {
    testkit::require_root();
    let rig = rig("bad");
    let daemon = Daemon::start(
        &rig.gateway,
        "bad",
        &[RIG_DEVICE_IFACE],
        "",
        &[("meters.yaml", &testkit::policy_allowing(7000))],
    );
    daemon.write_policy(
        "meters.yaml",
        "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n    rules:\n      \
         - allow: {to: 203.0.113.0/24, proto: udp, ports: [70000]}\n",
    );
    let s = daemon.wait_status(Duration::from_secs(5), |s| {
        s.last_reload.as_ref().is_some_and(|r| !r.success)
    });
    let errors = s.last_reload.unwrap().errors.join("\n");
    assert!(
        errors.contains("meters.yaml:6:") && errors.contains("70000"),
        "error names file, line and value: {errors}"
    );
    assert_eq!(s.policy.generation, 1, "nothing was installed");
    assert_eq!(
        probe(&rig, &[7000, 7001], 5),
        [5, 0],
        "the last good policy is in force"
    );
    assert!(daemon.logs().contains("generation 1 stays in force"));

    daemon.write_policy("meters.yaml", &testkit::policy_allowing(7001));
    daemon.wait_status(Duration::from_secs(5), |s| s.policy.generation == 2);
    assert_eq!(probe(&rig, &[7000, 7001], 5), [0, 5]);
}

/// A policy with an error at line 6 (a port past 65535).
const BAD_POLICY: &str = "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n    \
    rules:\n      - allow: {to: 203.0.113.0/24, proto: udp, ports: [70000]}\n";

#[test]
fn a_start_on_a_bad_policy_refuses_when_fresh_and_keeps_the_pinned_one_on_restart() {
    testkit::require_root();
    let rig = rig("badstart");
    let mut daemon = Daemon::prepare(
        &rig.gateway,
        "badstart",
        &[RIG_DEVICE_IFACE],
        "",
        &[("meters.yaml", BAD_POLICY)],
    );
    // The policy is read while the programs are verified: the start still
    // reports the policy's errors and refuses an empty dataplane.
    let fresh = std::process::Command::new(&daemon.binary)
        .args(["run", "--netns", rig.gateway.name(), "--config"])
        .arg(&daemon.config)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&fresh.stderr);
    assert!(
        !fresh.status.success(),
        "a fresh start on a bad policy ran:\n{said}"
    );
    assert!(
        said.contains("meters.yaml:6:") && said.contains("refusing to attach an empty dataplane"),
        "{said}"
    );

    daemon.write_policy("meters.yaml", &testkit::policy_allowing(7000));
    daemon.spawn();
    assert_eq!(probe(&rig, &[7000, 7001], 5), [5, 0]);
    assert_eq!(daemon.stop().code(), Some(0));
    daemon.write_policy("meters.yaml", BAD_POLICY);
    daemon.spawn();
    assert!(
        daemon
            .logs()
            .contains("the last good policy from the previous run stays in force"),
        "{}",
        daemon.logs()
    );
    assert_eq!(
        probe(&rig, &[7000, 7001], 5),
        [5, 0],
        "the pinned policy is in force"
    );
}

#[test]
fn a_symlink_swap_of_the_directory_is_one_reload() {
    testkit::require_root();
    let rig = rig("swapdir");
    let mut daemon = Daemon::start(
        &rig.gateway,
        "swapdir",
        &[RIG_DEVICE_IFACE],
        "",
        &[("meters.yaml", &testkit::policy_allowing(7000))],
    );
    // Re-point the configuration at `current -> v1`, as deploy tools lay it out.
    let v1 = daemon.root.join("v1");
    let v2 = daemon.root.join("v2");
    std::fs::rename(&daemon.policy_dir, &v1).unwrap();
    let current = daemon.root.join("current");
    std::os::unix::fs::symlink(&v1, &current).unwrap();
    let config = std::fs::read_to_string(&daemon.config).unwrap().replace(
        &format!("policy-dir: {}", daemon.policy_dir.display()),
        &format!("policy-dir: {}", current.display()),
    );
    std::fs::write(&daemon.config, config).unwrap();
    daemon.stop();
    daemon.spawn();
    let before = daemon.status().policy.generation;

    std::fs::create_dir_all(&v2).unwrap();
    for i in 0..20 {
        // A checkout of many files, then one atomic swap.
        std::fs::write(v2.join(format!("extra{i}.yaml")), "lists: {}\n").unwrap();
    }
    std::fs::write(v2.join("meters.yaml"), testkit::policy_allowing(7001)).unwrap();
    let tmp = daemon.root.join("current.tmp");
    std::os::unix::fs::symlink(&v2, &tmp).unwrap();
    std::fs::rename(&tmp, &current).unwrap();
    daemon.wait_status(Duration::from_secs(5), |s| {
        s.policy.generation == before + 1
    });
    std::thread::sleep(Duration::from_secs(1));
    let s = daemon.status();
    assert_eq!(s.policy.generation, before + 1, "exactly one reload");
    assert_eq!(probe(&rig, &[7000, 7001], 5), [0, 5]);

    // Later edits in the new target are followed.
    write_atomically(&v2.join("meters.yaml"), &testkit::policy_allowing(7002));
    daemon.wait_status(Duration::from_secs(5), |s| {
        s.policy.generation == before + 2
    });
    assert_eq!(probe(&rig, &[7001, 7002], 5), [0, 5]);
}

#[test]
fn kill_9_and_restart_never_let_a_denied_packet_through() {
    testkit::require_root();
    let rig = rig("restart");
    let mut daemon = Daemon::start(
        &rig.gateway,
        "restart",
        &[RIG_DEVICE_IFACE],
        "",
        &[("meters.yaml", &testkit::policy_allowing(7000))],
    );
    let denied = receiver(&rig, 7001);
    denied.set_nonblocking(true).unwrap();
    let sender = sender(&rig);
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                sender.send_to(b"flood", (SERVICE, 7001)).unwrap();
                let n = sent.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(64) {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        daemon.kill9();
        // No controller at all for a while.
        std::thread::sleep(Duration::from_millis(700));
        daemon.spawn();
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
    });
    std::thread::sleep(Duration::from_millis(100));
    let leaked = drain(&denied);
    drop(denied);
    eprintln!(
        "{} denied datagrams sent across kill -9 and restart, {leaked} reached upstream",
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(leaked, 0);
    let s = daemon.status();
    assert_eq!(s.dataplane_start, "adopted");
    assert_eq!(s.interfaces[0].adoption.as_deref(), Some("kept"));
    assert_eq!(probe(&rig, &[7000, 7001], 5), [5, 0]);
}

#[test]
fn a_hundred_reloads_under_traffic_drop_nothing_allowed_and_pass_nothing_denied() {
    testkit::require_root();
    let rig = rig("churn");
    // Two policies with the same verdicts written differently.
    let a = testkit::policy_allowing(7000);
    let b = format!(
        "{a}      - deny: {{to: 198.51.100.0/24, id: never-used}}\n      \
         - allow: {{to: 203.0.113.30, proto: udp, ports: [\"7000-7000\"], id: same-port}}\n"
    );
    let daemon = Daemon::start(
        &rig.gateway,
        "churn",
        &[RIG_DEVICE_IFACE],
        "",
        &[("meters.yaml", &a)],
    );
    let allowed = receiver(&rig, 7000);
    let denied = receiver(&rig, 7001);
    let sender = sender(&rig);
    let stop = AtomicBool::new(false);
    let (sent_allowed, got_allowed, reloads) = std::thread::scope(|s| {
        // Receive while sending: a socket buffer holds only so many.
        let receiving = s.spawn(|| drain(&allowed));
        let traffic = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                sender.send_to(b"ok", (SERVICE, 7000)).unwrap();
                sender.send_to(b"no", (SERVICE, 7001)).unwrap();
                n += 1;
                if n.is_multiple_of(32) {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
            n
        });
        let started = Instant::now();
        for i in 0..100u64 {
            daemon.write_policy("meters.yaml", if i % 2 == 0 { &b } else { &a });
            daemon.signal(libc::SIGHUP);
            daemon.wait_status(Duration::from_secs(5), |s| s.policy.generation >= i + 2);
        }
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        (traffic.join().unwrap(), receiving.join().unwrap(), took)
    });
    let got_denied = drain(&denied);
    eprintln!(
        "100 reloads in {reloads:?} under traffic: {sent_allowed} allowed sent, {got_allowed} arrived; \
         {sent_allowed} denied sent, {got_denied} arrived"
    );
    assert_eq!(got_denied, 0, "no denied datagram passed");
    assert_eq!(
        got_allowed as u64, sent_allowed,
        "no allowed datagram dropped"
    );
}

#[test]
fn deny_events_are_structured_log_lines_naming_the_rule() {
    testkit::require_root();
    let rig = rig("events");
    let mut daemon = Daemon::prepare(
        &rig.gateway,
        "events",
        &[RIG_DEVICE_IFACE],
        "",
        &[(
            "meters.yaml",
            &format!(
                "{}      - deny: {{to: 203.0.113.30, proto: udp, ports: [7009], id: no-debug}}\n",
                testkit::policy_allowing(7000)
            ),
        )],
    );
    daemon.args = vec!["--log-format".into(), "json".into()];
    daemon.spawn();
    probe(&rig, &[7009], 1);
    std::thread::sleep(Duration::from_millis(300));
    let logs = daemon.logs();
    let event = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "tollgate::deny" && v["rule"] == "no-debug")
        .unwrap_or_else(|| panic!("no deny event for the rule in:\n{logs}"));
    assert_eq!(event["message"], "deny");
    assert_eq!(event["group"], "meters");
    assert_eq!(event["src"], DEVICE);
    assert_eq!(event["dst"], SERVICE);
    assert_eq!(event["proto"], "udp");
    assert_eq!(event["verdict"], "deny");
    assert_eq!(event["port"], "7009");
    assert_eq!(event["reason"], "rule");
    assert!(
        event["at"].as_str().unwrap().ends_with("meters.yaml:7"),
        "rule file:line: {event}"
    );
}

#[test]
fn status_and_check_config_commands() {
    testkit::require_root();
    let rig = rig("status");
    let mut daemon = Daemon::start(
        &rig.gateway,
        "status",
        &[RIG_DEVICE_IFACE],
        "",
        &[("meters.yaml", &testkit::policy_allowing(7000))],
    );
    let run = |args: &[&str]| {
        let out = std::process::Command::new(testkit::tollgate_binary())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let config = daemon.config.to_str().unwrap().to_string();
    let (code, out, _) = run(&["status", "--config", &config]);
    assert_eq!(code, 0);
    // `Key : value` lines, the separators aligned (as `chronyc tracking`).
    let value = |key: &str| {
        out.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(" : ")?;
                (k.trim_end() == key).then(|| v.to_string())
            })
            .unwrap_or_else(|| panic!("no {key:?} line in\n{out}"))
    };
    let colon = out.find(" : ").unwrap();
    assert!(
        out.lines().all(|l| l.find(" : ") == Some(colon)),
        "aligned:\n{out}"
    );
    assert!(
        value("Interface").starts_with("devices0: attached, xdp-native, ethernet link"),
        "{out}"
    );
    assert_eq!(
        value("Policy"),
        "generation 1, commit none, 1 groups, 1 rules"
    );
    assert!(value("Last reload").starts_with("ok (start), "), "{out}");
    assert!(value("PID").parse::<u32>().is_ok(), "{out}");
    assert_eq!(value("NTP"), "off (no ntp.listen)");
    let (code, out, _) = run(&["status", "--config", &config, "--format", "json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["policy"]["generation"], 1);
    assert_eq!(json["interfaces"][0]["mode"], "xdp-native");

    let (code, out, _) = run(&["run", "--check-config", "--config", &config]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": ok (policy "), "{out}");
    daemon.write_policy(
        "broken.yaml",
        "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n",
    );
    let (code, _, err) = run(&["run", "--check-config", "--config", &config]);
    assert_eq!(code, 1);
    assert!(
        err.contains("meters.yaml:2:3: groups.meters: group \"meters\" is also defined at")
            && err.contains("broken.yaml:2:3"),
        "{err}"
    );

    // A clean stop with `on-exit: detach` removes everything.
    std::fs::remove_file(daemon.policy_dir.join("broken.yaml")).unwrap();
    let text = std::fs::read_to_string(&daemon.config).unwrap() + "on-exit: detach\n";
    std::fs::write(&daemon.config, text).unwrap();
    assert!(daemon.stop().success());
    daemon.spawn();
    assert!(daemon.stop().success());
    assert!(!daemon.pins.0.exists(), "pins removed");
    let after = testkit::once_detached(Duration::from_secs(3), vec![5, 5], || {
        probe(&rig, &[7000, 7001], 5)
    });
    assert_eq!(after, [5, 5], "no longer filtered");
}

#[test]
fn a_new_gateway_address_is_covered_by_the_gateway_keyword_at_once() {
    testkit::require_root();
    let rig = rig("addr");
    let daemon = Daemon::start(
        &rig.gateway,
        "addr",
        &[RIG_DEVICE_IFACE],
        "",
        &[(
            "meters.yaml",
            "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: allow\n    rules:\n      \
             - deny: {to: gateway, proto: udp, ports: [5353]}\n",
        )],
    );
    rig.gateway
        .ip(&["addr", "add", "10.0.0.2/8", "dev", RIG_DEVICE_IFACE])
        .unwrap();
    let new: std::net::IpAddr = "10.0.0.2".parse().unwrap();
    let s = daemon.wait_status(Duration::from_secs(5), |s| s.policy.gateway.contains(&new));
    assert_eq!(s.last_reload.unwrap().trigger, "addresses");
    let mdns = rig
        .gateway
        .enter(|| UdpSocket::bind(("10.0.0.2", 5353)).unwrap())
        .unwrap();
    mdns.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let other = rig
        .gateway
        .enter(|| UdpSocket::bind(("10.0.0.2", 5354)).unwrap())
        .unwrap();
    other
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let s = sender(&rig);
    for _ in 0..3 {
        s.send_to(b"x", ("10.0.0.2", 5353)).unwrap();
        s.send_to(b"x", ("10.0.0.2", 5354)).unwrap();
    }
    assert_eq!(drain(&mdns), 0, "the new address is `gateway`: denied");
    assert_eq!(drain(&other), 3);
}

/// The fault (`fault-injection`, see userspace/Cargo.toml) writes every port
/// range one port higher into the kernel than compiled: the model still
/// says port 7001 is allowed, the kernel would allow 7002 instead. The
/// expectation of the new policy catches it before the flip.
#[test]
fn a_policy_whose_expectation_fails_on_the_kernel_is_never_flipped() {
    testkit::require_root();
    let rig = rig("expect");
    // The first policy has no port ranges, so the fault cannot touch it.
    let mut daemon = Daemon::prepare(
        &rig.gateway,
        "expect",
        &[RIG_DEVICE_IFACE],
        "",
        &[(
            "meters.yaml",
            "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n    rules:\n      \
             - allow: {id: all-udp, to: 203.0.113.0/24, proto: udp}\n",
        )],
    );
    daemon
        .env
        .push(("TOLLGATE_FAULT".into(), "shift-ports".into()));
    daemon.spawn();
    assert_eq!(probe(&rig, &[7001, 7002], 5), [5, 5]);

    daemon.write_policy(
        "meters.yaml",
        "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n    rules:\n      \
         - allow: {id: telemetry, to: 203.0.113.0/24, proto: udp, ports: [7001]}\nexpect:\n  \
         - {from: 10.64.0.10, to: 203.0.113.30, proto: udp, port: 7001, verdict: allow, rule: telemetry}\n",
    );
    let s = daemon.wait_status(Duration::from_secs(5), |s| {
        s.last_reload.as_ref().is_some_and(|r| !r.success)
    });
    let errors = s.last_reload.unwrap().errors.join("\n");
    assert!(
        errors.contains(
            "meters.yaml:8:5: expect[0]: 10.64.0.10 → 203.0.113.30 udp/7001: expected allow \
             (rule telemetry), got deny (rule default, group meters) on the kernel"
        ),
        "the failure names the case's file and line: {errors}"
    );
    assert_eq!(
        s.policy.generation, 1,
        "the new policy was never flipped to"
    );
    assert_eq!(
        probe(&rig, &[7001, 7002], 5),
        [5, 5],
        "the last good policy is in force"
    );
    assert!(daemon.logs().contains("generation 1 stays in force"));
    assert!(daemon.logs().contains("on the kernel"));
    let (status, metrics) = rig.gateway.http_get("127.0.0.1:9187", "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l == "tollgate_policy_expectations_failed_total 1"),
        "{metrics}"
    );
}
