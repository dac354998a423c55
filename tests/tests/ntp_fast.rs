//! The NTP fast path with real clients: the real daemon in a gateway
//! namespace, attached in generic or native XDP or TC to the
//! device-facing veth, and ntpdig, sntp and `chronyd -Q` in the device
//! namespace asking over IPv4 and IPv6; on a raw-IP link (tun, TC),
//! requests written into the device. The scrape proves the program
//! answered (not the server).
//! Native XDP on a veth sends replies back only to a peer that runs XDP
//! itself (`datapath/ntp_fast.rs`): with one, the program answers; without,
//! the daemon sees the driver's `XDP_TX` errors and leaves the interface to
//! the server.

use std::time::Duration;

use testkit::{daemon_process::Daemon, ntp_clients::chronyd_accepts};
use tollgate::netns::{RIG_DEVICE_IFACE, Rig};

const METER_V4: &str = "10.64.0.10";
const METER_V6: &str = "fd00:64::10";
const NTP_V4: &str = "100.127.0.123";
/// Outside the device link's fd00::/16, so the device routes to it via the gateway.
const NTP_V6: &str = "fd7a::123";

const POLICY: &str = "groups:\n  meters:\n    devices: [10.64.0.0/16, \"fd00:64::/48\"]\n    \
                      default: deny\n";

const LOCAL: &str = "  reference: local\n  stratum: 3\n";
/// [`LOCAL`], answering in XDP on the native veth too.
const VIRTUAL: &str = "  reference: local\n  stratum: 3\n  fast-path-virtual: on\n";

/// The rig with the daemon attached in `attach` mode, serving `reference`
/// (YAML lines of `ntp:`).
fn start(tag: &str, attach: &str, reference: &str) -> (Rig, Daemon) {
    testkit::require_root();
    let rig = Rig::create(&format!("tg-{tag}-{}", std::process::id())).unwrap();
    rig.add_device(METER_V4).unwrap();
    rig.add_device(METER_V6).unwrap();
    for addr in [format!("{NTP_V4}/32"), format!("{NTP_V6}/128")] {
        rig.gateway.add_address(&addr, "lo").unwrap();
    }
    let daemon = Daemon::start(
        &rig.gateway,
        tag,
        &[RIG_DEVICE_IFACE],
        &format!(
            "attach: {attach}\nntp:\n  listen: [\"{NTP_V4}:123\", \"[{NTP_V6}]:123\"]\n{reference}"
        ),
        &[("meters.yaml", POLICY)],
    );
    // IPv6 addresses leave tentative state (DAD) before clients can bind.
    std::thread::sleep(Duration::from_secs(2));
    (rig, daemon)
}

/// `tollgate_ntp_fast_path_total{result="answered"}` from a real scrape.
fn answered(rig: &Rig) -> f64 {
    fast_path(rig, "answered")
}

/// `tollgate_ntp_fast_path_total{result}` from a real scrape.
fn fast_path(rig: &Rig, result: &str) -> f64 {
    let (status, body) = rig.gateway.http_get("127.0.0.1:9187", "/metrics").unwrap();
    assert_eq!(status, 200);
    testkit::promtool_check_metrics(&body);
    let series = format!("tollgate_ntp_fast_path_total{{result=\"{result}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no {result} count in\n{body}"))
}

/// `ntpdig -j` from the device: its JSON answer, or why it refused.
fn ntpdig(rig: &Rig, server: &str) -> Result<serde_json::Value, String> {
    let out = rig
        .devices
        .exec("ntpdig", &["-j", "-p", "4", "-t", "2", server])
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        Ok(serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("ntpdig JSON {stdout:?}: {e}")))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn real_clients_take_the_fast_paths_time_over_ipv4_and_ipv6() {
    real_clients_take_the_time("ntpfast-ok", "xdp-generic");
}

/// TC answers by redirecting the reply to the interface's egress.
#[test]
fn real_clients_take_the_tc_fast_paths_time_over_ipv4_and_ipv6() {
    real_clients_take_the_time("ntpfast-tc", "tc");
}

/// A raw-IP link (tun) with the TC hook: requests written into the tun
/// device as a device would send them are answered by the program, and
/// the replies come back out of the tun device.
#[test]
fn a_raw_ip_link_gets_the_tc_fast_paths_answer() {
    testkit::require_root();
    let rig = Rig::create(&format!("tg-ntpfast-tun-{}", std::process::id())).unwrap();
    for addr in [format!("{NTP_V4}/32"), format!("{NTP_V6}/128")] {
        rig.gateway.add_address(&addr, "lo").unwrap();
    }
    let tun = testkit::tun::Tun::create(&rig.gateway, "tun0", None);
    rig.gateway.ip(&["link", "set", "tun0", "up"]).unwrap();
    rig.gateway
        .ip(&["route", "add", "10.64.0.0/16", "dev", "tun0"])
        .unwrap();
    rig.gateway
        .ip(&["-6", "route", "add", "fd00:64::/48", "dev", "tun0"])
        .unwrap();
    let _daemon = Daemon::start(
        &rig.gateway,
        "ntpfast-tun",
        &["tun0"],
        &format!("attach: tc\nntp:\n  listen: [\"{NTP_V4}:123\", \"[{NTP_V6}]:123\"]\n{LOCAL}"),
        &[("meters.yaml", POLICY)],
    );
    let request = testkit::ntp::client_request(4, 3, 0x0123_4567_89ab_cdef, 0);
    let cases = [(METER_V4, NTP_V4, 40001), (METER_V6, NTP_V6, 40002)];
    // The daemon publishes the fast path's state once its server runs:
    // ask until the program answers.
    let send = |(src, dst, tag): (&str, &str, u16)| {
        tun.send_udp(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            123,
            tag,
            &request,
        );
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while answered(&rig) < 1.0 && std::time::Instant::now() < deadline {
        send(cases[0]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = answered(&rig);
    assert!(before >= 1.0, "the program never answered on tun0");
    tun.forget_replies();
    cases.into_iter().for_each(send);
    std::thread::sleep(testkit::tun::REPLY_WAIT);
    for (_, dst, tag) in cases {
        assert!(
            tun.answered(dst.parse().unwrap(), tag),
            "no reply from {dst} came out of tun0"
        );
    }
    assert_eq!(
        answered(&rig) - before,
        2.0,
        "both requests answered by the program, not the server"
    );
}

/// ntpdig, sntp and `chronyd -Q` over IPv4 and IPv6 accept the time the
/// program answers with, on an Ethernet veth with the daemon attached in
/// `attach` mode.
fn real_clients_take_the_time(tag: &str, attach: &str) {
    let (rig, _daemon) = start(tag, attach, LOCAL);
    for server in [NTP_V4, NTP_V6] {
        let answer = ntpdig(&rig, server).unwrap_or_else(|e| {
            let (_, body) = rig.gateway.http_get("127.0.0.1:9187", "/metrics").unwrap();
            let ntp: Vec<&str> = body
                .lines()
                .filter(|l| l.contains("ntp") || l.contains("drops"))
                .collect();
            panic!(
                "ntpdig {server}: {e}\n{}\n{:?}\n{:?}",
                ntp.join("\n"),
                rig.devices.ip(&["-6", "addr"]),
                rig.devices.ip(&["-6", "route"])
            )
        });
        eprintln!("ntpdig {server}: {answer}");
        assert_eq!(answer["stratum"], 3, "{answer}");
        assert_eq!(answer["leap"], "no-leap", "{answer}");
        let offset = answer["offset"].as_f64().unwrap();
        assert!(offset.abs() < 0.001, "|offset| {offset} s ≥ 1 ms");
    }
    let by_ntpdig = answered(&rig);
    assert!(
        by_ntpdig >= 8.0,
        "ntpdig's 2 × 4 samples, answered by the program: {by_ntpdig}"
    );
    for server in [NTP_V4, NTP_V6] {
        let out = rig.devices.exec("sntp", &["-t", "2", server]).unwrap();
        eprintln!("sntp {server}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(
            out.status.success(),
            "sntp {server}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            chronyd_accepts(&rig.devices, server),
            "chronyd -Q refused {server}"
        );
    }
    assert!(
        answered(&rig) > by_ntpdig,
        "sntp and chronyd were answered by the program"
    );
}

#[test]
fn clients_refuse_the_fast_paths_time_when_unsynchronised() {
    // An upstream nobody serves: unsynchronised from the start (leap 3),
    // as after the holdover; the fast path says so too.
    let (rig, _daemon) = start(
        "ntpfast-alarm",
        "xdp-generic",
        "  reference: upstream\n  servers: [\"127.0.0.1:11124\"]\n  poll-interval: 1s\n",
    );
    for server in [NTP_V4, NTP_V6] {
        let refused = ntpdig(&rig, server).expect_err("ntpdig must refuse");
        // Before its first sample the server is unsynchronised at stratum
        // 16, which ntpdig reports first.
        assert!(refused.contains("Response dropped"), "{server}: {refused}");
        assert!(
            !chronyd_accepts(&rig.devices, server),
            "chronyd -Q accepted {server}"
        );
    }
    assert!(
        answered(&rig) >= 8.0,
        "the refusals came from the fast path"
    );
}

#[test]
fn the_fast_path_answers_over_a_native_xdp_veth_whose_peer_runs_xdp() {
    let (rig, daemon) = start("ntpfast-native", "xdp-native", VIRTUAL);
    testkit::xdp_pass_on(&rig.devices, "eth0");
    for server in [NTP_V4, NTP_V6] {
        let answer = ntpdig(&rig, server).unwrap_or_else(|e| panic!("ntpdig {server}: {e}"));
        assert_eq!(answer["stratum"], 3, "{answer}");
    }
    let answered = answered(&rig);
    assert!(
        answered >= 8.0,
        "ntpdig's 2 × 4 samples, answered in XDP: {answered}"
    );
    assert_eq!(fast_path(&rig, "passed"), 0.0, "nothing went to the server");
    assert!(
        !daemon.logs().contains("NTP fast path off"),
        "{}",
        daemon.logs()
    );
}

#[test]
fn a_native_xdp_veth_whose_peer_runs_no_xdp_is_left_to_the_server() {
    let (rig, daemon) = start("ntpfast-nopeer", "xdp-native", VIRTUAL);
    // The kernel drops the program's first replies (and counts them); the
    // daemon sees the count within a second and turns the fast path off
    // on that interface. One request, whose answer is lost.
    rig.devices
        .exec("ntpdig", &["-p", "1", "-t", "1", NTP_V4])
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !daemon.logs().contains("NTP fast path off on devices0") {
        assert!(
            std::time::Instant::now() < deadline,
            "no fallback reported:\n{}",
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (answered_before, passed_before) = (answered(&rig), fast_path(&rig, "passed"));
    assert!(
        answered_before >= 1.0,
        "the program tried: {answered_before}"
    );
    for server in [NTP_V4, NTP_V6] {
        let answer = ntpdig(&rig, server).unwrap_or_else(|e| panic!("ntpdig {server}: {e}"));
        assert_eq!(answer["stratum"], 3, "{answer}");
    }
    assert_eq!(answered(&rig), answered_before, "no more answers in XDP");
    assert!(
        fast_path(&rig, "passed") >= passed_before + 8.0,
        "the server answered ntpdig's 2 × 4 samples"
    );
}
