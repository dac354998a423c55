//! Per-group time health with real parts: the real daemon in a gateway
//! namespace, real clients (ntpdig, sntp, `chronyd -Q`) and crafted requests from a
//! device whose clock is half an hour behind (its transmit timestamp says so;
//! no clock is ever changed), through the XDP fast path and through the
//! userspace server. Real scrapes, checked with promtool, show the offsets,
//! polling intervals and client counts under the right group; `tollgate
//! status` lists the skewed device; its deny events carry `clock_skew`.

use std::{
    net::UdpSocket,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;
use testkit::{
    daemon_process::Daemon,
    exposition::sample,
    ntp_clients::{ask, chronyd_accepts},
};
use tollgate::netns::{RIG_DEVICE_IFACE, Rig};

/// The device namespace's first address: the real clients ask from it.
const METER: &str = "10.64.0.10";
/// Only crafted requests come from here, with a clock half an hour behind.
const CAMERA: &str = "10.65.0.20";
const SERVICE: &str = "203.0.113.40";
const NTP: &str = "100.127.0.123";
/// How far behind the camera's clock is: inside the (300 s, 3600 s] bucket.
const BEHIND: Duration = Duration::from_secs(1800);

const POLICY: &str = "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n  \
                      cameras:\n    devices: [10.65.0.0/16]\n    default: deny\n";

/// The rig and the daemon (JSON logs), attached as `attach` says, with
/// `ntp` lines added to its `ntp:` section.
fn start(tag: &str, attach: &str, ntp: &str) -> (Rig, Daemon) {
    testkit::require_root();
    let rig = Rig::create(&format!("tg-{tag}-{}", std::process::id())).unwrap();
    rig.devices
        .sysctl("net.ipv6.conf.all.disable_ipv6=1")
        .unwrap();
    rig.add_device(METER).unwrap();
    rig.add_device(CAMERA).unwrap();
    rig.add_service(SERVICE).unwrap();
    rig.gateway
        .ip(&["addr", "add", &format!("{NTP}/32"), "dev", "lo"])
        .unwrap();
    let mut daemon = Daemon::prepare(
        &rig.gateway,
        tag,
        &[RIG_DEVICE_IFACE],
        &format!(
            "attach: {attach}\nntp:\n  listen: [\"{NTP}:123\"]\n  reference: local\n  \
             stratum: 3\n{ntp}"
        ),
        &[("devices.yaml", POLICY)],
    );
    daemon.args = vec!["--log-format".into(), "json".into()];
    daemon.spawn();
    (rig, daemon)
}

/// An NTPv4 client request from `source` whose clock is `behind` the
/// gateway's; returns whether it was answered.
fn request_behind(rig: &Rig, source: &str, behind: Duration) -> bool {
    let transmit = tollgate::ntp::ntp_timestamp(SystemTime::now() - behind);
    ask(&rig.devices, source, NTP, transmit)
}

fn scrape(rig: &Rig) -> String {
    let (status, body) = rig.gateway.http_get("127.0.0.1:9187", "/metrics").unwrap();
    assert_eq!(status, 200);
    testkit::promtool_check_metrics(&body);
    body
}

/// A scrape taken after one where `ready` held: samples of the fast path
/// reach the controller asynchronously, in batches, and one scrape
/// collects its metrics one after the other, so the scrape where a batch
/// first shows may show another metric from before it (the offsets of a
/// batch's samples, but not yet their device in `tollgate_ntp_clients`).
fn scrape_until(rig: &Rig, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = scrape(rig);
        if ready(&body) {
            return scrape(rig);
        }
        assert!(Instant::now() < deadline, "never ready:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn value(m: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(m, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{m}"))
}

fn offsets(m: &str, group: &str, le: &str) -> f64 {
    value(
        m,
        "tollgate_ntp_client_offset_seconds_bucket",
        &[("group", group), ("le", le)],
    )
}

/// The camera half an hour behind, with its group, at the head of the status's
/// largest offsets.
fn assert_status_lists_the_camera(daemon: &Daemon) {
    let status = daemon.status();
    let ntp = status.ntp.expect("NTP status");
    let first = &ntp["largest_offsets"][0];
    assert_eq!(first["address"], CAMERA, "{ntp:#}");
    assert_eq!(first["group"], "cameras", "{ntp:#}");
    let offset = first["offset_seconds"].as_f64().unwrap();
    assert!((offset - 1800.0).abs() < 5.0, "{offset}");
    assert!(first["last_seen_unix"].as_u64().unwrap() > 0);
    assert_eq!(ntp["clients"]["cameras"], 1, "{ntp:#}");
    assert_eq!(ntp["clients"]["meters"], 1, "{ntp:#}");
}

#[test]
fn the_fast_paths_samples_reach_the_group_metrics_and_status() {
    let (rig, daemon) = start("ntphealth-fast", "xdp-generic", "");
    let out = rig
        .devices
        .exec("ntpdig", &["-j", "-p", "4", "-t", "2", NTP])
        .unwrap();
    assert!(
        out.status.success(),
        "ntpdig: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Twice: the second request confirms the first's offset.
    for _ in 0..2 {
        assert!(request_behind(&rig, CAMERA, BEHIND), "the camera's request");
    }

    let m = scrape_until(&rig, |m| {
        sample(
            m,
            "tollgate_ntp_client_offset_seconds_count",
            &[("group", "cameras")],
        ) == Some(1.0)
            && sample(
                m,
                "tollgate_ntp_client_offset_seconds_count",
                &[("group", "meters")],
            ) >= Some(3.0)
    });
    assert!(
        value(
            m.as_str(),
            "tollgate_ntp_fast_path_total",
            &[("result", "answered")]
        ) >= 6.0,
        "answered in XDP"
    );
    // The server saw none of the camera's requests: its sample came from
    // the fast path's ring.
    for result in ["served", "rate_limited"] {
        assert_eq!(
            value(
                &m,
                "tollgate_ntp_requests_total",
                &[("group", "cameras"), ("result", result)]
            ),
            0.0
        );
    }
    assert_eq!(offsets(&m, "cameras", "300"), 0.0);
    assert_eq!(offsets(&m, "cameras", "3600"), 1.0, "half an hour behind");
    // ntpdig tells its clock, the gateway's own: four requests, three
    // confirmed offsets.
    assert_eq!(offsets(&m, "meters", "-1"), 0.0);
    assert!(offsets(&m, "meters", "1") >= 3.0);
    assert!(
        value(
            &m,
            "tollgate_ntp_client_poll_interval_seconds_count",
            &[("group", "meters")]
        ) >= 3.0,
        "ntpdig's four requests, three intervals"
    );
    assert_eq!(
        value(&m, "tollgate_ntp_clients", &[("group", "cameras")]),
        1.0
    );
    assert_eq!(
        value(&m, "tollgate_ntp_clients", &[("group", "meters")]),
        1.0
    );
    assert_eq!(
        value(&m, "tollgate_ntp_fast_path_samples_lost_total", &[]),
        0.0
    );
    assert_status_lists_the_camera(&daemon);
}

#[test]
fn the_servers_samples_reach_the_metrics_status_and_deny_hints() {
    let (rig, daemon) = start("ntphealth-user", "xdp-generic", "  fast-path: off\n");
    let out = rig.devices.exec("sntp", &["-t", "2", NTP]).unwrap();
    assert!(
        out.status.success(),
        "sntp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(chronyd_accepts(&rig.devices, NTP), "chronyd -Q");
    // Twice: the second request confirms the first's offset.
    for _ in 0..2 {
        assert!(request_behind(&rig, CAMERA, BEHIND), "the camera's request");
    }

    let m = scrape(&rig);
    assert_eq!(
        value(
            &m,
            "tollgate_ntp_fast_path_total",
            &[("result", "answered")]
        ),
        0.0,
        "the server answered"
    );
    assert_eq!(
        value(
            &m,
            "tollgate_ntp_requests_total",
            &[("group", "cameras"), ("result", "served")]
        ),
        2.0
    );
    assert_eq!(offsets(&m, "cameras", "300"), 0.0);
    assert_eq!(offsets(&m, "cameras", "3600"), 1.0, "half an hour behind");
    assert_eq!(
        value(&m, "tollgate_ntp_clients", &[("group", "meters")]),
        1.0,
        "sntp's and chronyd's requests"
    );
    // sntp asked once, which confirms nothing, and chronyd fills its
    // requests' transmit timestamps with random bits, which never agree.
    assert_eq!(
        value(
            &m,
            "tollgate_ntp_client_offset_seconds_count",
            &[("group", "meters")]
        ),
        0.0
    );
    assert_status_lists_the_camera(&daemon);
    let human = testkit::tollgate(&[
        "status",
        "--socket",
        daemon.control_socket.to_str().unwrap(),
    ]);
    assert_eq!(human.status, 0, "{}", human.stderr);
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.starts_with("NTP client offset")
                && l.contains(&format!("{CAMERA} (cameras): +180"))),
        "{}",
        human.stdout
    );

    // Both devices try a denied service: only the camera's event carries
    // the hint.
    for source in [CAMERA, METER] {
        let s = rig
            .devices
            .enter(|| UdpSocket::bind((source, 0)).unwrap())
            .unwrap();
        s.send_to(b"hello", (SERVICE, 7001)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events: Vec<Value> = daemon
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "tollgate::deny" && v["port"] == "7001")
            .collect();
        if events.len() >= 2 || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let event = |src: &str| {
        events
            .iter()
            .find(|e| e["src"] == src)
            .unwrap_or_else(|| panic!("no deny event from {src} in {events:#?}"))
    };
    let skew = event(CAMERA)["clock_skew"]
        .as_f64()
        .expect("a clock_skew hint");
    assert!((skew - 1800.0).abs() < 5.0, "{skew}");
    assert_eq!(event(CAMERA)["group"], "cameras");
    assert!(
        event(METER).get("clock_skew").is_none(),
        "the meter's clock is right"
    );
}
