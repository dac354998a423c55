//! Raw-IP links are filtered exactly like Ethernet ones, with real packets.
//!
//! The device-facing interface is a `tun` device in the gateway namespace:
//! the test writes the devices' packets into it, the gateway routes what
//! the program passes to services in the upstream namespace, and their
//! answers come back out of the tun device. `TUNSETLINK` gives the same
//! device each link type Tollgate supports (none, PPP, raw IP, the IP
//! tunnels), so the controller's choice of program variant is proven for
//! every type; the real tunnel drivers are used where the kernel has them.
//!
//! The daemon tests run the real `tollgate run`: an interface of another
//! link type is refused by name, and an interface that disappears and comes
//! back (as VPN daemons recreate `tun0`) is attached again by itself.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use testkit::{
    daemon_process::Daemon,
    tun::{self, Probe, Tun},
};
use tollgate::{
    compile::compile,
    config::{AttachPolicy, Limits},
    datapath::{AttachMode, Dataplane, Options},
    links::{self, LinkKind},
    netns::{Namespace, Rig},
    policy::{self, Environment, Source},
};

use testkit::fleet::{self, POLICY, SERVICES, UDP_PORTS};

/// `ARPHRD_*` values Tollgate parses as raw IP, with the kernel driver that
/// makes such links for real (`None`: tun itself).
const RAW_IP_TYPES: [(u16, &str, Option<&str>); 8] = [
    (65534, "none (tun, WireGuard)", None),
    (512, "ppp", None),
    (519, "rawip (cellular modems)", None),
    (768, "ipip", Some("ipip")),
    (769, "ip6tnl", Some("ip6tnl")),
    (776, "sit", Some("sit")),
    (778, "gre", Some("gre")),
    (823, "ip6gre", Some("ip6gre")),
];

/// The gateway and upstream namespaces, with services answering on TCP
/// (RST or SYN-ACK), UDP (echo) and ICMP (echo reply).
fn rig(tag: &str) -> Rig {
    let rig = Rig::create(&format!("tg-{tag}-{}", std::process::id())).unwrap();
    for s in SERVICES {
        rig.add_service(s).unwrap();
        for port in UDP_PORTS {
            tun::udp_echo(&rig.upstream, s.parse().unwrap(), port);
        }
    }
    for ns in [&rig.gateway, &rig.upstream] {
        for s in [
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            ns.sysctl(s).unwrap();
        }
    }
    rig
}

/// Brings the tun device up and routes the devices' prefixes to it.
fn route_devices(gateway: &Namespace, tun: &str) {
    gateway.ip(&["link", "set", tun, "up"]).unwrap();
    gateway
        .ip(&["route", "add", "10.64.0.0/14", "dev", tun])
        .unwrap();
    for p in ["fd00:64::/48", "fd00:65::/48", "fd00:66::/48"] {
        gateway.ip(&["-6", "route", "add", p, "dev", tun]).unwrap();
    }
}

fn load() -> (tollgate::policy::Policy, tollgate::tables::CompiledPolicy) {
    let loaded = policy::from_sources(
        &[Source {
            path: "links.yaml".into(),
            text: POLICY.into(),
        }],
        &Environment {
            gateway: Vec::new(),
            ntp: Vec::new(),
        },
    )
    .unwrap_or_else(|d| panic!("{d:#?}"));
    let tables = compile(&loaded.policy, &Limits::default()).unwrap();
    (loaded.policy, tables)
}

/// Sends every case through `tun` and returns the disagreements with
/// explain. Each case gets its own tag (source port or echo id).
fn run_cases(tun: &Tun, cases: &[(IpAddr, IpAddr, Probe, bool)], first_tag: u16) -> Vec<String> {
    tun.forget_replies();
    for (i, (src, dst, probe, _)) in cases.iter().enumerate() {
        tun.send(*src, *dst, *probe, first_tag + i as u16);
    }
    std::thread::sleep(tun::REPLY_WAIT);
    cases
        .iter()
        .enumerate()
        .filter_map(|(i, (src, dst, probe, want))| {
            let got = tun.answered(*dst, first_tag + i as u16);
            (got != *want).then(|| {
                format!(
                    "{src} -> {dst} {probe:?}: explain says {}, traffic {}",
                    if *want { "allow" } else { "deny" },
                    if got { "passed" } else { "was blocked" }
                )
            })
        })
        .collect()
}

/// Whether the kernel can make links of `kind` (`ip link add type kind`).
fn kernel_has(ns: &Namespace, kind: &str) -> Result<(), String> {
    let name = format!("probe-{kind}");
    match ns.ip(&["link", "add", &name, "type", kind]) {
        Ok(_) => {
            let _ = ns.ip(&["link", "del", &name]);
            Ok(())
        }
        Err(e) => Err(format!("{e:#}")),
    }
}

#[test]
fn raw_ip_links_filter_real_traffic_as_explain_predicts_in_xdp_and_tc() {
    testkit::require_root();
    let rig = rig("links");
    let (policy, tables) = load();
    let cases = fleet::cases(&policy, &tables);
    let allowed = cases.iter().filter(|c| c.3).count();
    assert!(allowed > 10 && allowed < cases.len() - 10, "both outcomes");

    let mut dataplane = Dataplane::open(&Options::default()).unwrap();
    dataplane.install(&tables).unwrap();
    let mut failures = Vec::new();
    let mut tag = 20000u16;
    for (link_type, label, driver) in RAW_IP_TYPES {
        if let Some(kind) = driver {
            match kernel_has(&rig.gateway, kind) {
                Ok(()) => eprintln!(
                    "{kind}: the kernel has the driver; its link type is exercised below \
                     through tun (TUNSETLINK {link_type})"
                ),
                Err(e) => eprintln!(
                    "{kind}: skipping the real {kind} driver, the kernel lacks it ({e}); \
                     its link type {link_type} is exercised through tun (TUNSETLINK)"
                ),
            }
        }
        for mode in [AttachPolicy::XdpGeneric, AttachPolicy::Tc] {
            let tun = Tun::create(&rig.gateway, "tun0", Some(link_type));
            let attachment = rig
                .gateway
                .enter(|| dataplane.attach_by_name("tun0", mode))
                .unwrap()
                .unwrap_or_else(|e| panic!("{label}: {e:#}"));
            assert_eq!(attachment.kind, LinkKind::Ip, "{label}");
            route_devices(&rig.gateway, "tun0");
            let wrong = run_cases(&tun, &cases, tag);
            tag += cases.len() as u16;
            eprintln!(
                "{label} ({link_type}), {}: {} probes ({allowed} predicted allowed), {} \
                 disagreements",
                attachment.mode,
                cases.len(),
                wrong.len()
            );
            failures.extend(
                wrong
                    .into_iter()
                    .map(|w| format!("{label}, {}: {w}", attachment.mode)),
            );
            drop(tun);
            dataplane.forget("tun0").unwrap();
        }
    }
    if kernel_has(&rig.gateway, "wireguard").is_err() {
        eprintln!(
            "wireguard: skipping the real driver, the kernel lacks it; its link type \
             (none, 65534) is the tun default exercised above"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn native_xdp_is_refused_on_raw_ip_links_and_unknown_types_are_refused_by_name() {
    testkit::require_root();
    let ns = testkit::namespace("linktypes");
    let mut dataplane = Dataplane::open(&Options::default()).unwrap();
    let tun = Tun::create(&ns, "tun0", None);
    let e = ns
        .enter(|| dataplane.attach_by_name("tun0", AttachPolicy::XdpNative))
        .unwrap()
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("xdp-native is not available on raw-IP links"),
        "{e:#}"
    );
    let a = ns
        .enter(|| dataplane.attach_by_name("tun0", AttachPolicy::Auto))
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.kind, a.mode),
        (LinkKind::Ip, AttachMode::XdpGeneric),
        "auto on a raw-IP link starts with generic XDP"
    );
    drop(tun);
    dataplane.forget("tun0").unwrap();

    // 801: IEEE 802.11, whose frames Tollgate cannot parse.
    let _wifi = Tun::create(&ns, "wlan9", Some(801));
    let e = ns
        .enter(|| dataplane.attach_by_name("wlan9", AttachPolicy::Auto))
        .unwrap()
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("interface wlan9 has link type ieee80211 (801)"),
        "{e:#}"
    );
    let lo = ns.enter(|| links::find("lo")).unwrap().unwrap().unwrap();
    assert!(dataplane.attach(&lo, AttachPolicy::Auto).is_err());
}

const DEVICE: &str = "10.64.0.10";
const SERVICE: &str = "203.0.113.5";

fn metrics(ns: &Namespace, port: u16) -> String {
    ns.http_get(&format!("127.0.0.1:{port}"), "/metrics")
        .unwrap()
        .1
}

/// The `tollgate_dataplane_attached` line of tun0.
fn attached_line(text: &str) -> String {
    text.lines()
        .find(|l| l.starts_with("tollgate_dataplane_attached{interface=\"tun0\""))
        .unwrap_or("")
        .to_string()
}

/// Sends one allowed (udp/7000) and one denied (udp/7020) datagram; returns
/// which were answered.
fn allowed_and_denied(tun: &Tun, tag: u16) -> (bool, bool) {
    let (src, dst) = (DEVICE.parse().unwrap(), SERVICE.parse().unwrap());
    tun.forget_replies();
    tun.send(src, dst, Probe::Udp(7000), tag);
    tun.send(src, dst, Probe::Udp(7020), tag + 1);
    std::thread::sleep(tun::REPLY_WAIT);
    (tun.answered(dst, tag), tun.answered(dst, tag + 1))
}

/// Polls the kernel (not the daemon) until a generic XDP program is on
/// tun0; returns how long after `since` it was seen.
fn wait_kernel_attached(ns: &Namespace, since: Instant, timeout: Duration) -> Option<Duration> {
    while since.elapsed() < timeout {
        if ns
            .ip(&["link", "show", "dev", "tun0"])
            .is_ok_and(|out| out.contains("xdpgeneric"))
        {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

#[test]
fn an_interface_of_an_unsupported_link_type_is_refused_at_start() {
    testkit::require_root();
    let ns = testkit::namespace("refuse");
    let _tun = Tun::create(&ns, "tun0", Some(801));
    let d = Daemon::prepare(
        &ns,
        "refuse",
        &["tun0"],
        "metrics:\n  listen: 127.0.0.1:19190\n",
        &[("p.yaml", &testkit::policy_allowing(7000))],
    );
    let out = std::process::Command::new(testkit::tollgate_binary())
        .args(["run", "--netns", ns.name(), "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("interface tun0 has link type ieee80211 (801), which Tollgate cannot filter"),
        "{stderr}"
    );
}

#[test]
fn an_interface_that_disappears_and_returns_is_attached_again_by_itself() {
    testkit::require_root();
    let rig = rig("hotplug");
    let port = 19191;
    let tun = Tun::create(&rig.gateway, "tun0", None);
    route_devices(&rig.gateway, "tun0");
    let d = Daemon::start(
        &rig.gateway,
        "hotplug",
        &["tun0"],
        &format!("metrics:\n  listen: 127.0.0.1:{port}\n"),
        &[("p.yaml", &testkit::policy_allowing(7000))],
    );
    let s = d.status();
    assert_eq!(s.interfaces[0].state, "attached", "{s:#?}");
    assert_eq!(s.interfaces[0].link.as_deref(), Some("ip"));
    assert_eq!(s.interfaces[0].mode.as_deref(), Some("xdp-generic"));
    // Only the hook tun0 runs was verified before READY=1.
    assert!(
        d.logs().contains(
            "hooks verified now: tollgate_xdp_ip; after READY=1: tollgate_xdp, tollgate_tc, \
             tollgate_tc_ip"
        ),
        "{}",
        d.logs()
    );
    assert_eq!(
        attached_line(&metrics(&rig.gateway, port)),
        "tollgate_dataplane_attached{interface=\"tun0\",mode=\"xdp-generic\",link=\"ip\"} 1"
    );
    assert_eq!(allowed_and_denied(&tun, 30000), (true, false));

    // The VPN goes down: the device goes.
    drop(tun);
    d.wait_status(Duration::from_secs(5), |s| {
        s.interfaces[0].state == "missing"
    });
    let text = metrics(&rig.gateway, port);
    testkit::promtool_check_metrics(&text);
    assert_eq!(
        attached_line(&text),
        "tollgate_dataplane_attached{interface=\"tun0\",mode=\"none\",link=\"none\"} 0",
        "the detach alert's series"
    );

    // A device of a type Tollgate cannot parse under the same name.
    let wifi = Tun::create(&rig.gateway, "tun0", Some(801));
    let s = d.wait_status(Duration::from_secs(5), |s| {
        s.interfaces[0].state == "refused"
    });
    assert!(
        s.interfaces[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("ieee80211 (801)")),
        "{s:#?}"
    );
    drop(wifi);
    d.wait_status(Duration::from_secs(5), |s| {
        s.interfaces[0].state == "missing"
    });

    // It comes back, down as devices are created: attached before it is up.
    let created = Instant::now();
    let tun = Tun::create(&rig.gateway, "tun0", None);
    let gap = wait_kernel_attached(&rig.gateway, created, Duration::from_secs(5))
        .expect("the recreated tun0 was never attached");
    eprintln!(
        "tun0 recreated (down): program attached {:.1} ms after the device appeared, before it \
         was brought up",
        gap.as_secs_f64() * 1e3
    );
    route_devices(&rig.gateway, "tun0");
    assert_eq!(
        allowed_and_denied(&tun, 30010),
        (true, false),
        "filtering resumed without a restart"
    );
    d.wait_status(Duration::from_secs(5), |s| {
        s.interfaces[0].state == "attached"
    });

    // A VPN daemon that brings the device up at once while a device sends:
    // measure how long the new device went unfiltered and what leaked.
    drop(tun);
    d.wait_status(Duration::from_secs(5), |s| {
        s.interfaces[0].state == "missing"
    });
    let created = Instant::now();
    let tun = Tun::create(&rig.gateway, "tun0", None);
    route_devices(&rig.gateway, "tun0");
    let (src, dst) = (DEVICE.parse().unwrap(), SERVICE.parse().unwrap());
    let mut sent = 0u16;
    let gap = loop {
        tun.send(src, dst, Probe::Udp(7020), 31000 + sent);
        sent += 1;
        if rig
            .gateway
            .ip(&["link", "show", "dev", "tun0"])
            .is_ok_and(|out| out.contains("xdpgeneric"))
        {
            break created.elapsed();
        }
        assert!(sent < 5000, "tun0 never attached");
    };
    std::thread::sleep(tun::REPLY_WAIT);
    let leaked = (0..sent).filter(|i| tun.answered(dst, 31000 + i)).count();
    eprintln!(
        "tun0 recreated and brought up at once: attached {:.1} ms after it appeared; {leaked} of \
         {sent} denied datagrams sent before the attach got through (the kernel cannot attach to \
         an interface before it exists)",
        gap.as_secs_f64() * 1e3
    );
    assert_eq!(
        allowed_and_denied(&tun, 32000),
        (true, false),
        "no denied packet passes once attached"
    );
}

#[test]
fn a_configured_interface_missing_at_start_is_reported_and_attached_when_it_appears() {
    testkit::require_root();
    let rig = rig("late");
    let port = 19192;
    let d = Daemon::start(
        &rig.gateway,
        "late",
        &["tun0"],
        &format!("metrics:\n  listen: 127.0.0.1:{port}\n"),
        &[("p.yaml", &testkit::policy_allowing(7000))],
    );
    assert_eq!(d.status().interfaces[0].state, "missing");
    assert!(
        attached_line(&metrics(&rig.gateway, port)).ends_with(" 0"),
        "missing shows as 0"
    );
    let tun = Tun::create(&rig.gateway, "tun0", None);
    d.wait_status(Duration::from_secs(5), |s| {
        s.interfaces[0].state == "attached"
    });
    route_devices(&rig.gateway, "tun0");
    assert_eq!(allowed_and_denied(&tun, 33000), (true, false));
    assert!(
        d.logs().contains("interface tun0 is missing"),
        "{}",
        d.logs()
    );
    // No interface was there to say which hook it needs: the start verified
    // none, and all four were verified after READY=1 (each pinned once it
    // is), whichever came first of that and the attach.
    assert!(
        d.logs().contains(
            "hooks verified now: none; after READY=1: tollgate_xdp, tollgate_xdp_ip, \
             tollgate_tc, tollgate_tc_ip"
        ),
        "{}",
        d.logs()
    );
    let pinned = |name: &str| d.pins.0.join(name).exists();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tollgate_common::PROGRAMS.into_iter().all(pinned) {
        assert!(
            Instant::now() < deadline,
            "hooks not all verified after READY=1:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!d.logs().contains("cannot be attached"), "{}", d.logs());
}
