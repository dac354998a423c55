//! The private NTP endpoint with real clients, in namespaces.
//!
//! Topology: a device namespace (`eth0`: 192.0.2.10 and 192.0.2.200,
//! fd00:1::10) ↔ veth ↔ a gateway namespace (`devices0`: 192.0.2.1,
//! fd00:1::1) that holds the private NTP addresses 100.127.0.123 and
//! fd00:123::123 on its loopback; the device routes to them via the gateway.
//! Tollgate's service runs in this process with its sockets created inside
//! the gateway namespace, exactly as the controller creates them. 192.0.2.10
//! and fd00:1::/64 are the policy group `meters`; 192.0.2.200 is in no group.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use prometheus::{Encoder as _, Registry, TextEncoder};
use testkit::{chrony_server::ChronyServer, ntp_clients::chronyd_accepts};
use tollgate::{
    config::{Config, NtpConfig},
    netns::{Namespace, veth},
    ntp::{NtpService, NtpStatus, SourceGroups},
    tables::{CompiledPolicy, GroupTable, UNKNOWN_GROUP_NAME},
};

const NTP_V4: &str = "100.127.0.123";
const NTP_V6: &str = "fd00:123::123";
const DEVICE: &str = "192.0.2.10";
const STRANGER: &str = "192.0.2.200";
const UPSTREAM_PORT: u16 = 11123;

/// Namespaces, a runtime and the service. Field order is drop order: the
/// service stops before the runtime, and the namespaces go last.
struct Rig {
    service: Option<NtpService>,
    registry: Registry,
    runtime: tokio::runtime::Runtime,
    device: Namespace,
    gateway: Namespace,
}

impl Rig {
    fn new(tag: &str) -> Rig {
        testkit::require_root();
        let device = testkit::namespace(&format!("{tag}-dev"));
        let gateway = testkit::namespace(&format!("{tag}-gw"));
        veth((&device, "eth0"), (&gateway, "devices0")).unwrap();
        for args in [
            &["addr", "add", "192.0.2.10/24", "dev", "eth0"][..],
            &["addr", "add", "192.0.2.200/24", "dev", "eth0"],
            &["addr", "add", "fd00:1::10/64", "dev", "eth0", "nodad"],
            &["route", "add", "100.127.0.123/32", "via", "192.0.2.1"],
            &["route", "add", "fd00:123::123/128", "via", "fd00:1::1"],
        ] {
            device.ip(args).unwrap();
        }
        for args in [
            &["addr", "add", "192.0.2.1/24", "dev", "devices0"][..],
            &["addr", "add", "fd00:1::1/64", "dev", "devices0", "nodad"],
            &["addr", "add", "100.127.0.123/32", "dev", "lo"],
            &["addr", "add", "fd00:123::123/128", "dev", "lo", "nodad"],
        ] {
            gateway.ip(args).unwrap();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Rig {
            service: None,
            registry: Registry::new(),
            runtime,
            device,
            gateway,
        }
    }

    /// Starts the service from the `ntp:` section `yaml`, inside the gateway.
    fn start(&mut self, yaml: &str) {
        let config = ntp_config(yaml);
        let (runtime, registry) = (&self.runtime, &self.registry);
        let service = self
            .gateway
            .enter(|| {
                let _runtime = runtime.enter();
                NtpService::start(&config, meters(&[]), registry)
            })
            .unwrap()
            .unwrap();
        self.service = Some(service);
    }

    fn service(&self) -> &NtpService {
        self.service.as_ref().expect("service started")
    }

    fn status(&self) -> NtpStatus {
        self.service().status()
    }

    /// Waits (at most 20 s) for the status to satisfy `done`.
    fn wait_for(&self, what: &str, done: impl Fn(&NtpStatus) -> bool) -> NtpStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {status:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ntpdig -j` from the device: the JSON answer, or the reason it
    /// refused the server. Four samples (`-p 4`), of which ntpdig reports
    /// the one with the smallest synchronisation distance, as an NTP client's
    /// clock filter does: on a loaded machine one sample can catch the
    /// (Python) client descheduled between its timestamp and its packet.
    fn ntpdig(&self, server: &str) -> Result<serde_json::Value, String> {
        let out = self
            .device
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

    /// A UDP socket in the device namespace, bound to `source`.
    fn device_socket(&self, source: &str) -> UdpSocket {
        let source: IpAddr = source.parse().unwrap();
        let socket = self
            .device
            .enter(|| UdpSocket::bind((source, 0)).unwrap())
            .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        socket
    }

    /// The registry in the text format, checked by `promtool check metrics`.
    fn metrics_text(&self) -> String {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        testkit::promtool_check_metrics(&text);
        text
    }
}

fn ntp_config(yaml: &str) -> NtpConfig {
    let text = format!("interfaces: [devices0]\npolicy-dir: /nonexistent\nntp:\n{yaml}");
    Config::parse(Path::new("test.yaml"), &text)
        .unwrap_or_else(|d| panic!("{d}"))
        .ntp
}

/// The policy: 192.0.2.10 and fd00:1::/64 are group `meters`, and so are
/// `extra` addresses.
fn meters(extra: &[&str]) -> SourceGroups {
    let group = |name: &str| GroupTable {
        name: name.into(),
        default: tollgate_common::Verdict::Deny,
        audit: false,
        default_counter: 0,
        allow_counter: 0,
        deny_counter: 0,
        audit_deny_counter: 0,
        reject_counter: 0,
    };
    let mut device_exact: Vec<(IpAddr, u32)> = std::iter::once(DEVICE)
        .chain(extra.iter().copied())
        .map(|a| (a.parse().unwrap(), 1))
        .collect();
    device_exact.sort();
    let policy = CompiledPolicy {
        groups: vec![group(UNKNOWN_GROUP_NAME), group("meters")],
        device_exact: device_exact.into(),
        device_prefixes: vec![("fd00:1::/64".parse().unwrap(), 1)],
        ..CompiledPolicy::default()
    };
    SourceGroups::from_policy(&policy, &[])
}

/// A 48-byte request of `version` and `mode` with transmit timestamp `xmt`.
fn request(version: u8, mode: u8, xmt: u64) -> [u8; 48] {
    let mut r = [0u8; 48];
    r[0] = (version << 3) | mode;
    r[40..48].copy_from_slice(&xmt.to_be_bytes());
    r
}

/// Sends `datagram` to the server and returns the reply, if one comes.
fn ask(socket: &UdpSocket, server: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(datagram, server).unwrap();
    let mut buf = [0u8; 2048];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) => {
            assert_eq!(from, server);
            Some(buf[..n].to_vec())
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv: {e}"),
    }
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::new(NTP_V4.parse().unwrap(), port)
}

/// The value of one sample in the text format, 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn real_clients_accept_the_time_over_ipv4_and_ipv6() {
    let mut rig = Rig::new("ntp-ok");
    rig.start(&format!(
        "  listen: [\"{NTP_V4}:123\", \"[{NTP_V6}]:123\"]\n  reference: local\n  stratum: 3\n  \
         workers: 2\n"
    ));
    let status = rig.status();
    assert!(status.synchronized);
    assert_eq!((status.stratum, status.leap_indicator), (3, 0));

    for server in [NTP_V4, NTP_V6] {
        let answer = rig
            .ntpdig(server)
            .unwrap_or_else(|e| panic!("ntpdig {server}: {e}"));
        eprintln!("ntpdig {server}: {answer}");
        assert_eq!(answer["stratum"], 3, "{answer}");
        assert_eq!(answer["leap"], "no-leap", "{answer}");
        let offset = answer["offset"].as_f64().unwrap();
        assert!(offset.abs() < 0.001, "|offset| {offset} s ≥ 1 ms");
    }
    assert!(
        chronyd_accepts(&rig.device, NTP_V4),
        "chronyd -Q refused the time"
    );

    // NTPv3 gets an NTPv3 reply.
    let socket = rig.device_socket(DEVICE);
    let reply = ask(&socket, v4(123), &request(3, 3, 42)).expect("a v3 reply");
    assert_eq!(reply.len(), 48);
    assert_eq!(reply[0], (3 << 3) | 4, "leap 0, v3, mode server");
    assert_eq!(&reply[24..32], &42u64.to_be_bytes(), "origin timestamp");

    let text = rig.metrics_text();
    let served = sample(
        &text,
        "tollgate_ntp_requests_total{group=\"meters\",result=\"served\"}",
    );
    assert!(served >= 4.0, "ntpdig ×2, chronyd, v3: {served}\n{text}");
    assert_eq!(sample(&text, "tollgate_ntp_stratum"), 3.0);
    assert_eq!(sample(&text, "tollgate_ntp_leap_indicator"), 0.0);
    assert_eq!(sample(&text, "tollgate_ntp_upstream_reachable"), 1.0);
    assert!(
        text.contains("tollgate_ntp_kernel_unsynchronized "),
        "{text}"
    );
    assert!(text.contains("tollgate_ntp_root_delay_seconds 0"), "{text}");
    assert!(
        text.contains("tollgate_ntp_root_dispersion_seconds 0"),
        "{text}"
    );
    assert!(
        status.kernel.is_some(),
        "the kernel clock status is readable"
    );
}

#[test]
fn clients_refuse_the_time_when_the_upstream_is_gone_past_the_holdover() {
    let mut rig = Rig::new("ntp-hold");
    rig.start(&format!(
        "  listen: [\"{NTP_V4}:123\"]\n  reference: upstream\n  \
         servers: [\"127.0.0.1:{UPSTREAM_PORT}\"]\n  poll-interval: 1s\n  holdover: 3s\n"
    ));

    // The upstream is not there yet: nothing to vouch for the clock.
    let status = rig.status();
    assert!(!status.synchronized, "{status:#?}");
    assert_eq!(status.leap_indicator, 3);
    let refused = rig.ntpdig(NTP_V4).expect_err("ntpdig must refuse");
    assert!(refused.contains("Response dropped"), "{refused}");

    // The upstream appears: stratum 3 upstream, we are stratum 4.
    // chronyd as the upstream server in the gateway, on loopback.
    let upstream = ChronyServer::start(
        &rig.gateway,
        ([127, 0, 0, 1], UPSTREAM_PORT).into(),
        3,
        "127.0.0.1",
    )
    .unwrap();
    let status = rig.wait_for("synchronisation", |s| s.synchronized);
    assert_eq!(status.stratum, 4);
    assert_eq!(status.reference_id, "127.0.0.1");
    assert!(status.upstream_reachable);
    assert!(status.root_dispersion_seconds > 0.0 && status.root_dispersion_seconds < 0.01);
    let answer = rig
        .ntpdig(NTP_V4)
        .expect("ntpdig accepts a synchronised server");
    assert_eq!(answer["stratum"], 4, "{answer}");
    assert_eq!(answer["leap"], "no-leap", "{answer}");
    assert!(answer["offset"].as_f64().unwrap().abs() < 0.001, "{answer}");
    // The same host's clock upstream: a tiny offset, a fresh sample (polled
    // every second).
    let text = rig.metrics_text();
    let offset = sample(&text, "tollgate_ntp_upstream_offset_seconds");
    assert!(offset.abs() < 0.01, "offset {offset}\n{text}");
    let age = sample(&text, "tollgate_ntp_last_sample_age_seconds");
    assert!(age < 2.5, "sample age {age}\n{text}");

    // The upstream dies. After the holdover, clients are told not to trust us.
    drop(upstream);
    let status = rig.wait_for("the alarm", |s| !s.synchronized);
    assert_eq!((status.leap_indicator, status.stratum), (3, 4));
    assert!(!status.upstream_reachable);
    let refused = rig.ntpdig(NTP_V4).expect_err("ntpdig must refuse");
    assert!(refused.contains("leap not in sync"), "{refused}");
    assert!(
        !chronyd_accepts(&rig.device, NTP_V4),
        "chronyd -Q accepted an unsynchronised server"
    );
    let text = rig.metrics_text();
    assert_eq!(sample(&text, "tollgate_ntp_leap_indicator"), 3.0);
    assert_eq!(sample(&text, "tollgate_ntp_upstream_reachable"), 0.0);
    let age = sample(&text, "tollgate_ntp_last_sample_age_seconds");
    assert!(
        age > 3.0,
        "the alarm comes past the 3 s holdover: age {age}"
    );
}

#[test]
fn abuse_gets_no_reply_and_the_server_stays_up() {
    let mut rig = Rig::new("ntp-abuse");
    rig.start(&format!(
        "  listen: [\"{NTP_V4}:123\"]\n  reference: local\n  stratum: 2\n"
    ));
    let server = v4(123);
    let socket = rig.device_socket(DEVICE);
    assert!(
        ask(&socket, server, &request(4, 3, 1)).is_some(),
        "baseline"
    );

    // A mode 6 (control, ntpq) query, and a mode 7 (private) monlist query
    // as ntpdc sends it (NTPv2).
    let mode6 = [0x16, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(ask(&socket, server, &mode6), None, "mode 6");
    assert_eq!(
        ask(&socket, server, &request(4, 6, 2)),
        None,
        "mode 6, 48 bytes"
    );
    let mut monlist = [0u8; 48];
    monlist[..4].copy_from_slice(&[0x17, 0x00, 0x03, 0x2a]);
    assert_eq!(ask(&socket, server, &monlist), None, "mode 7");
    // Truncated, oversize, and versions we do not serve.
    assert_eq!(
        ask(&socket, server, &request(4, 3, 3)[..47]),
        None,
        "truncated"
    );
    let mut oversize = vec![0u8; 1500];
    oversize[..48].copy_from_slice(&request(4, 3, 4));
    assert_eq!(ask(&socket, server, &oversize), None, "oversize");
    assert_eq!(ask(&socket, server, &request(2, 3, 5)), None, "NTPv2");
    assert_eq!(ask(&socket, server, &request(5, 3, 6)), None, "NTPv5");
    // A server-mode packet: no reply, or two servers could ping-pong.
    assert_eq!(ask(&socket, server, &request(4, 4, 7)), None, "mode 4");

    // A source in no group: no reply, counted as denied.
    let stranger = rig.device_socket(STRANGER);
    assert_eq!(
        ask(&stranger, server, &request(4, 3, 8)),
        None,
        "non-member"
    );

    // Still serving.
    assert!(
        ask(&socket, server, &request(4, 3, 9)).is_some(),
        "still up"
    );
    let status = rig.status();
    assert_eq!(status.requests["meters"].served, 2);
    assert_eq!(status.requests["meters"].malformed, 8);
    assert_eq!(status.requests[UNKNOWN_GROUP_NAME].denied, 1);
    for (reason, n) in [
        ("not_client_mode", 2),
        ("truncated", 2),
        ("oversize", 1),
        ("unsupported_version", 3),
        ("not_member", 1),
    ] {
        assert_eq!(status.refused[reason], n, "{reason}: {:?}", status.refused);
    }

    // A policy reload that adds the stranger to `meters`: now answered.
    rig.service().update_sources(meters(&[STRANGER]));
    assert!(
        ask(&stranger, server, &request(4, 3, 10)).is_some(),
        "member now"
    );
    let text = rig.metrics_text();
    assert_eq!(
        sample(
            &text,
            "tollgate_ntp_requests_total{group=\"_unknown\",result=\"denied\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "tollgate_ntp_requests_total{group=\"meters\",result=\"served\"}"
        ),
        3.0
    );
}

#[test]
fn a_burst_over_the_rate_limit_gets_the_leak_ratio() {
    let mut rig = Rig::new("ntp-rate");
    // One reply per 64 s, a burst of 8, then one in 4 (leak 2).
    rig.start(&format!(
        "  listen: [\"{NTP_V4}:123\"]\n  reference: local\n  stratum: 2\n  \
         rate-limit: {{interval: 6, burst: 8, leak: 2}}\n"
    ));
    const SENT: usize = 808;
    let socket = rig.device_socket(DEVICE);
    let replies = flood(&socket, v4(123), SENT);
    let status = rig.status();
    let counts = status.requests["meters"];
    assert_eq!(
        counts.served as usize, replies,
        "every served request got its reply"
    );
    assert_eq!(counts.served + counts.rate_limited, SENT as u64);
    // 8 + Binomial(800, 1/4): mean 208, sd 12.2; ±5 sd.
    assert!(
        (147..=269).contains(&replies),
        "{replies} replies to {SENT}"
    );
    eprintln!("{replies} replies to {SENT} requests (expected 8 + 800/4 = 208)");
    assert_eq!(status.refused["source_rate"], counts.rate_limited);
}

#[test]
fn the_global_cap_limits_replies_across_sources() {
    let mut rig = Rig::new("ntp-cap");
    // No per-source limit to speak of; 20 replies/s in all (a bucket of 2).
    rig.start(&format!(
        "  listen: [\"{NTP_V4}:123\"]\n  reference: local\n  stratum: 2\n  \
         rate-limit: {{interval: -4, burst: 100000}}\n  max-rate: 20\n"
    ));
    rig.service().update_sources(meters(&[STRANGER]));
    let started = Instant::now();
    let a = flood(&rig.device_socket(DEVICE), v4(123), 200);
    let b = flood(&rig.device_socket(STRANGER), v4(123), 200);
    let elapsed = started.elapsed().as_secs_f64();
    let bound = 2.0 + 20.0 * elapsed;
    eprintln!("{a} + {b} replies to 400 requests in {elapsed:.2} s (cap allows {bound:.0})");
    assert!(a >= 1 && b >= 1, "the bucket refills for everyone");
    assert!((a + b) as f64 <= bound, "{} > {bound}", a + b);
    let status = rig.status();
    assert_eq!(
        status.refused["global_rate"],
        400 - status.requests["meters"].served
    );
}

/// Sends `n` requests in bursts of 50 (pausing 10 ms between bursts, so no
/// socket buffer overflows), then collects replies until none arrives for
/// 300 ms; returns how many came.
fn flood(socket: &UdpSocket, server: SocketAddr, n: usize) -> usize {
    let mut buf = [0u8; 64];
    let mut replies = 0;
    for i in 0..n {
        socket
            .send_to(&request(4, 3, i as u64 + 1), server)
            .unwrap();
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(10));
            socket.set_nonblocking(true).unwrap();
            while socket.recv_from(&mut buf).is_ok() {
                replies += 1;
            }
            socket.set_nonblocking(false).unwrap();
        }
    }
    while socket.recv_from(&mut buf).is_ok() {
        replies += 1;
    }
    replies
}
