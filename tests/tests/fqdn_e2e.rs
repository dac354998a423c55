//! FQDN rules end to end, for real: a device in the devices namespace asks
//! the gateway's DNS forwarder with `dig`; the forwarder asks a real
//! resolver (dnsmasq, authoritative for the test's names) in the upstream
//! namespace, learns the answer's addresses and only then answers; the
//! device connects at once, through the real program on the gateway.
//!
//! - the first SYN passes: no packet of the meter is denied on the way;
//! - an address no answer gave is denied;
//! - a CNAME's target is learned for the name asked;
//! - names that resolve to the gateway, to another group's device or into
//!   a prefix the group denies are not learned, and stay denied;
//! - an address learned for one group is not allowed for another, whose
//!   deny event names the group that learned it;
//! - after the TTL (clamped) and the grace period, the address is denied
//!   again;
//! - with `dns.filter`, a name of no rule gets REFUSED, counted; an
//!   unknown device is refused.
//!
//! A denied connect is told from an allowed one by its error (timed out,
//! against connected), never by how long it took.

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};
use testkit::{contract, daemon_process::Daemon, promtool_check_metrics};
use tollgate::{
    lab::resolver::{Records, Resolver},
    netns::{Namespace, RIG_DEVICE_IFACE, Rig},
};

const METER: &str = "10.64.0.10";
const STRANGER: &str = "10.66.0.5";
const CAMERA: &str = "10.65.0.30";
const GATEWAY: &str = "10.0.0.1";
const RESOLVER: &str = "198.18.0.2";

const IOT: &str = "203.0.113.10";
const NOT_ASKED: &str = "203.0.113.11";
const CNAME_TARGET: &str = "203.0.113.12";
const LATERAL: &str = "203.0.113.66";
const NEIGHBOUR: &str = "10.65.0.20";

/// Unknown devices pass the dataplane here, so that their queries reach
/// the forwarder, which must refuse them itself.
const POLICY: &str = "\
unknown-devices: allow
groups:
  meters:
    devices: [10.64.0.0/16]
    default: deny
    rules:
      - allow: {to: gateway, proto: udp, ports: [53], id: dns}
      - allow: {to: gateway, proto: tcp, ports: [53], id: dns-tcp}
      - allow:
          to:
            fqdn: [iot.example.com, alias.example.com, gw.example.com, neighbour.example.com,
                   lateral.example.com, many.example.com]
          proto: tcp
          ports: [443]
          id: iot
      - deny: {to: 203.0.113.64/26, id: lateral}
  cameras:
    devices: [10.65.0.0/16]
    default: deny
";

const DNS_CONFIG: &str = "\
dns:
  listen: [\"10.0.0.1:53\"]
  upstream: [\"198.18.0.2:53\"]
  min-ttl: 1s
  max-ttl: 2s
  grace: 4s
  filter: [meters]
";

/// How long a connect may take before it counts as dropped.
const PATIENCE: Duration = Duration::from_secs(3);

/// dnsmasq, authoritative for the test's names with a TTL of one second,
/// in the upstream namespace; killed on drop.
fn resolver(ns: &Namespace) -> Resolver {
    let records = Records {
        hosts: &[
            ("iot.example.com", IOT),
            ("target.cdn.test", CNAME_TARGET),
            ("gw.example.com", GATEWAY),
            ("neighbour.example.com", NEIGHBOUR),
            ("lateral.example.com", LATERAL),
            ("other.example.net", NOT_ASKED),
        ],
        cnames: &[("alias.example.com", "target.cdn.test")],
        ttl: 1,
    };
    Resolver::start(ns, RESOLVER, &records).unwrap()
}

/// `explain --live` asks the daemon: a packet to a learned address is
/// decided by the FQDN rule, with the name and expiry of its lease; a name
/// lists the addresses learned from its answers.
fn explain_shows_the_leases(daemon: &Daemon) {
    let socket = daemon.control_socket.to_str().unwrap();
    let policy = daemon.policy_dir.to_str().unwrap();
    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", "--policy", policy, "--gateway", GATEWAY];
        args.extend(extra);
        let run = testkit::tollgate(&args);
        assert_eq!(run.status, 0, "explain {extra:?}: {}", run.stderr);
        run.stdout
    };
    let packet = ["--src", METER, "--dst", IOT, "--dport", "443"];
    let offline: serde_json::Value =
        serde_json::from_str(&explain(&[&packet[..], &["--format", "json"]].concat())).unwrap();
    assert_eq!(offline["reason"], "group-default", "{offline}");
    assert!(offline.get("learned").is_none(), "{offline}");
    let live: serde_json::Value = serde_json::from_str(&explain(
        &[&packet[..], &["--format", "json", "--socket", socket]].concat(),
    ))
    .unwrap();
    assert_eq!(
        (&live["verdict"], &live["reason"], &live["rule_id"]),
        (
            &serde_json::json!("allow"),
            &serde_json::json!("learned"),
            &serde_json::json!("iot")
        ),
        "{live}"
    );
    let lease = &live["learned"][0];
    assert_eq!(
        (&lease["name"], &lease["rule_id"], &lease["group"]),
        (
            &serde_json::json!("iot.example.com"),
            &serde_json::json!("iot"),
            &serde_json::json!("meters")
        ),
        "{live}"
    );
    // TTL clamped to at most 2 s, plus 4 s of grace.
    let expires_in = lease["expires_in_s"].as_u64().unwrap();
    assert!((1..=6).contains(&expires_in), "{live}");
    let text = explain(&[&packet[..], &["--socket", socket]].concat());
    assert!(
        text.contains("learned   for rule iot, from the answer for iot.example.com, expires in"),
        "{text}"
    );
    // The CNAME's target is listed under the name asked.
    let name: serde_json::Value = serde_json::from_str(&explain(&[
        "--fqdn",
        "Alias.Example.com.",
        "--src",
        METER,
        "--format",
        "json",
        "--socket",
        socket,
    ]))
    .unwrap();
    assert_eq!(
        name["groups"][0]["learned"][0]["address"], CNAME_TARGET,
        "{name}"
    );
    // --live with no daemon to ask is an error, not an offline answer.
    let run = testkit::tollgate(
        &[
            &[
                "explain",
                "--policy",
                policy,
                "--socket",
                "/nonexistent.sock",
            ],
            &packet[..],
        ]
        .concat(),
    );
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains("--live: connect to /nonexistent.sock"));
}

/// A reload carries what is learned into the new slot, and the new
/// policy's `expect:` cases judge the policy as written: a case that the
/// learned address would fail passes.
fn reload_keeps_the_leases_out_of_expect_cases(rig: &Rig, daemon: &Daemon) {
    dig(rig, METER, "iot.example.com");
    let before = daemon.status().policy.generation;
    daemon.write_policy(
        "meters.yaml",
        &format!(
            "{POLICY}expect:\n  - {{from: {METER}, to: {IOT}, proto: tcp, port: 443, verdict: deny, \
             rule: default}}\n"
        ),
    );
    let status = daemon.wait_status(Duration::from_secs(20), |s| {
        s.last_reload.as_ref().is_some_and(|r| r.trigger == "watch")
    });
    let reload = status.last_reload.unwrap();
    assert!(
        reload.success,
        "the reload was refused: {:?}",
        reload.errors
    );
    assert!(status.policy.generation > before);
    assert!(
        connects(rig, IOT, 443),
        "the learned address is still allowed after the reload"
    );
}

/// `dig` from `src` through the gateway: (status, addresses answered).
fn dig(rig: &Rig, src: &str, name: &str) -> (String, Vec<String>) {
    dig_with(rig, src, name, &[])
}

/// [`dig`] with more options (`+noedns`, `+tcp`).
fn dig_with(rig: &Rig, src: &str, name: &str, options: &[&str]) -> (String, Vec<String>) {
    let server = format!("@{GATEWAY}");
    let mut args = vec!["+tries=1", "+time=5", "-b", src, &server, name, "A"];
    args.extend(options);
    let out = rig.devices.exec("dig", &args).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("dig {name}: no status in\n{text}"))
        .to_string();
    let addresses = text
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() == 5 && fields[3] == "A").then(|| fields[4].to_string())
        })
        .collect();
    (status, addresses)
}

/// A TCP connect from the meter: whether it got through.
fn connects(rig: &Rig, dst: &str, port: u16) -> bool {
    connects_from(rig, METER, dst, port)
}

/// A TCP connect from `src` in the devices namespace.
fn connects_from(rig: &Rig, src: &str, dst: &str, port: u16) -> bool {
    let to: SocketAddr = format!("{dst}:{port}").parse().unwrap();
    rig.devices
        .enter(|| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            socket
                .bind(&SocketAddr::new(src.parse().unwrap(), 0).into())
                .unwrap();
            match socket.connect_timeout(&to.into(), PATIENCE) {
                Ok(()) => true,
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => false,
                Err(e) => panic!("connect {to}: {e} (neither through nor dropped)"),
            }
        })
        .unwrap()
}

fn listen(ns: &Namespace, addr: &str, port: u16) -> TcpListener {
    ns.enter(|| TcpListener::bind((addr, port)).unwrap())
        .unwrap()
}

fn scrape(rig: &Rig) -> String {
    let (status, body) = rig.gateway.http_get("127.0.0.1:9187", "/metrics").unwrap();
    assert_eq!(status, 200);
    promtool_check_metrics(&body);
    body
}

/// The value of `name{labels…}`, 0 when the series is absent.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let rest = rest.trim_end_matches('}');
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\""))))
            .then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

#[test]
fn names_open_their_addresses_first_packet_first_and_only_while_they_live() {
    testkit::require_root();
    let rig = Rig::create(&format!("tg-fqdn-{}", std::process::id())).unwrap();
    // No IPv6 on the device side: its chatter would add denied packets.
    rig.devices
        .sysctl("net.ipv6.conf.all.disable_ipv6=1")
        .unwrap();
    rig.add_device(METER).unwrap();
    rig.add_device(STRANGER).unwrap();
    rig.add_device(CAMERA).unwrap();
    for service in [IOT, NOT_ASKED, CNAME_TARGET, LATERAL] {
        rig.add_service(service).unwrap();
    }
    let _services: Vec<TcpListener> = [IOT, NOT_ASKED, CNAME_TARGET, LATERAL]
        .iter()
        .map(|a| listen(&rig.upstream, a, 443))
        .collect();
    let _gateway_service = listen(&rig.gateway, GATEWAY, 443);
    let _resolver = resolver(&rig.upstream);
    let daemon = Daemon::start(
        &rig.gateway,
        "fqdn",
        &[RIG_DEVICE_IFACE],
        DNS_CONFIG,
        &[("meters.yaml", POLICY)],
    );

    // Asked, learned, then answered: the very first SYN passes.
    let (status, answer) = dig(&rig, METER, "iot.example.com");
    assert_eq!(
        (status.as_str(), answer.clone()),
        ("NOERROR", vec![IOT.to_string()])
    );
    assert!(
        connects(&rig, IOT, 443),
        "the answered address is reachable at once"
    );
    let m = scrape(&rig);
    let denied = sample(
        &m,
        "tollgate_rule_packets_total",
        &[("group", "meters"), ("rule", "default")],
    );
    assert_eq!(
        denied, 0.0,
        "no packet of the meter was denied, so no SYN was retried:\n{m}"
    );
    assert!(
        sample(
            &m,
            "tollgate_rule_packets_total",
            &[("group", "meters"), ("rule", "iot")]
        ) >= 1.0
    );
    assert_eq!(
        sample(
            &m,
            "tollgate_dns_queries_total",
            &[("group", "meters"), ("result", "learned")]
        ),
        1.0
    );

    // A CNAME: the target's address is learned for the name asked.
    let (_, answer) = dig(&rig, METER, "alias.example.com");
    assert_eq!(answer, vec![CNAME_TARGET.to_string()]);
    assert!(connects(&rig, CNAME_TARGET, 443));

    // Rebinding: the gateway, a neighbour, a denied prefix are answered but
    // not learned. (Asking for iot again first: what is learned lives 5 s.)
    dig(&rig, METER, "iot.example.com");
    dig(&rig, METER, "alias.example.com");
    for (name, addr) in [
        ("gw.example.com", GATEWAY),
        ("neighbour.example.com", NEIGHBOUR),
        ("lateral.example.com", LATERAL),
    ] {
        let (status, answer) = dig(&rig, METER, name);
        assert_eq!(
            (status.as_str(), answer),
            ("NOERROR", vec![addr.to_string()])
        );
    }
    let learned = daemon
        .status()
        .learned_addresses
        .expect("dns.listen is set");
    assert_eq!(
        learned.into_iter().collect::<Vec<_>>(),
        [("meters".to_string(), 2)],
        "the iot address and the CNAME's target, and nothing else"
    );
    // Fresh leases: what is learned lives 5 s.
    dig(&rig, METER, "iot.example.com");
    dig(&rig, METER, "alias.example.com");
    explain_shows_the_leases(&daemon);
    reload_keeps_the_leases_out_of_expect_cases(&rig, &daemon);
    assert!(
        !connects(&rig, GATEWAY, 443),
        "a name rebound to the gateway stays denied"
    );
    assert!(
        !connects(&rig, LATERAL, 443),
        "a name rebound into a denied prefix stays denied"
    );

    // Learned for the meters, not for the cameras; the deny says who did.
    dig(&rig, METER, "iot.example.com");
    assert!(
        !connects_from(&rig, CAMERA, IOT, 443),
        "learned for another group only"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = format!("dst={IOT}");
    while !daemon.logs().lines().any(|l| {
        l.contains("group=cameras") && l.contains(&wanted) && l.contains("learned_by=meters")
    }) {
        assert!(
            Instant::now() < deadline,
            "no deny event naming meters:\n{}",
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // What no answer gave stays shut.
    assert!(
        !connects(&rig, NOT_ASKED, 443),
        "an address not obtained through DNS is denied"
    );
    let logs = daemon.logs();
    for addr in [GATEWAY, NEIGHBOUR, LATERAL] {
        assert!(
            logs.contains(&format!("dns: {addr} not learned for group meters")),
            "{addr} is not learned:\n{logs}"
        );
    }

    // The DNS firewall: a name of no rule is refused and counted; so is an
    // unknown device.
    assert_eq!(dig(&rig, METER, "other.example.net").0, "REFUSED");
    assert_eq!(dig(&rig, STRANGER, "iot.example.com").0, "REFUSED");
    let m = scrape(&rig);
    for family in contract::DNS_METRICS {
        assert!(
            m.contains(&format!("# TYPE {family} ")),
            "{family} exported:\n{m}"
        );
    }
    for (group, result) in [("meters", "refused"), ("_unknown", "unknown_device")] {
        assert_eq!(
            sample(
                &m,
                "tollgate_dns_queries_total",
                &[("group", group), ("result", result)]
            ),
            1.0,
            "{group} {result}:\n{m}"
        );
    }

    // After TTL (1 s, within [min-ttl, max-ttl]) plus grace (4 s): gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sample(
        &scrape(&rig),
        "tollgate_fqdn_learned_addresses",
        &[("group", "meters")],
    ) > 0.0
    {
        assert!(Instant::now() < deadline, "learned addresses never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !connects(&rig, IOT, 443),
        "an expired address is denied again"
    );
    // Asking again opens it again.
    assert_eq!(dig(&rig, METER, "iot.example.com").1, vec![IOT.to_string()]);
    assert!(connects(&rig, IOT, 443));
}

/// A controller that dies (here: SIGKILL) and starts again learns again
/// what it had learned, from `dns.leases-file`: a device keeps reaching the
/// address it was answered without asking again. Then an answer too large
/// for UDP arrives over TCP, whole, and all of it is learned.
#[test]
fn learned_addresses_survive_a_restart_and_large_answers_come_over_tcp() {
    testkit::require_root();
    let rig = Rig::create(&format!("tg-fqdnr-{}", std::process::id())).unwrap();
    rig.devices
        .sysctl("net.ipv6.conf.all.disable_ipv6=1")
        .unwrap();
    rig.add_device(METER).unwrap();
    rig.add_service(IOT).unwrap();
    let _service = listen(&rig.upstream, IOT, 443);
    // An answer of 40 addresses is too large for UDP without EDNS.
    let many: Vec<String> = (1..=40)
        .map(|i| format!("198.51.100.{}", 100 + i))
        .collect();
    let mut hosts: Vec<(&str, &str)> = many
        .iter()
        .map(|a| ("many.example.com", a.as_str()))
        .collect();
    hosts.push(("iot.example.com", IOT));
    let _resolver = Resolver::start(
        &rig.upstream,
        RESOLVER,
        &Records {
            hosts: &hosts,
            cnames: &[],
            ttl: 300,
        },
    )
    .unwrap();
    let mut daemon = Daemon::start(
        &rig.gateway,
        "fqdn-restart",
        &[RIG_DEVICE_IFACE],
        "dns:\n  listen: [\"10.0.0.1:53\"]\n  upstream: [\"198.18.0.2:53\"]\n",
        &[("meters.yaml", POLICY)],
    );
    assert_eq!(dig(&rig, METER, "iot.example.com").1, vec![IOT.to_string()]);
    let kept = daemon.control_socket.with_file_name("dns-leases.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&kept).is_ok_and(|t| t.contains(IOT)) {
        assert!(
            Instant::now() < deadline,
            "{} never kept {IOT}",
            kept.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    daemon.kill9();
    daemon.spawn();
    assert_eq!(
        daemon
            .status()
            .learned_addresses
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [("meters".to_string(), 1)]
    );
    assert!(
        connects(&rig, IOT, 443),
        "the address answered before the restart is still allowed, without asking again"
    );
    assert!(
        daemon
            .logs()
            .contains("dns: learned 1 of 1 kept addresses again from"),
        "{}",
        daemon.logs()
    );

    // Truncated over UDP, whole over TCP: dig asks again over TCP, the
    // forwarder asks its upstream over TCP, and every address is learned.
    let (status, mut answer) = dig_with(&rig, METER, "many.example.com", &["+noedns"]);
    answer.sort();
    let mut expected = many.clone();
    expected.sort();
    assert_eq!((status.as_str(), answer), ("NOERROR", expected));
    let learned = daemon.status().learned_addresses.unwrap();
    assert_eq!(learned.get("meters"), Some(&41), "{learned:?}");
    let (_, over_tcp) = dig_with(&rig, METER, "many.example.com", &["+tcp"]);
    assert_eq!(over_tcp.len(), 40);
    rig.add_service(&many[39]).unwrap();
    let _last = listen(&rig.upstream, &many[39], 443);
    assert!(
        connects(&rig, &many[39], 443),
        "the last address of the TCP answer"
    );
}
