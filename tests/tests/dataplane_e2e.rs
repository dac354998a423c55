//! Real traffic through the real dataplane, in both attach modes: from a
//! device namespace, through the gateway namespace where the program sits on
//! the device-facing veth, to listeners in the upstream namespace. Real TCP
//! connects, UDP datagrams and pings (iputils `ping`), IPv4 and IPv6, are
//! allowed or blocked exactly as `explain` predicts.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    sync::{Arc, Mutex},
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};
use tollgate::{
    addresses,
    compile::compile,
    config::{AttachPolicy, Limits},
    datapath::{Dataplane, Options},
    netns::{RIG_DEVICE_IFACE, Rig},
    policy::{self, Environment, Policy, Source},
    tables::CompiledPolicy,
};

use testkit::fleet::{self, DEVICES, POLICY, Probe, SERVICES, TCP_PORTS, UDP_PORTS};

/// The policy, with `gateway` the addresses of the gateway's device-facing
/// interface (as the daemon reads them), so IPv6 neighbour discovery to it
/// passes.
fn load(rig: &Rig) -> (Policy, CompiledPolicy) {
    let gateway = rig
        .gateway
        .enter(|| addresses::current(&[RIG_DEVICE_IFACE.to_string()]))
        .unwrap()
        .unwrap();
    let loaded = policy::from_sources(
        &[Source {
            path: "e2e.yaml".into(),
            text: POLICY.into(),
        }],
        &Environment {
            gateway,
            ntp: Vec::new(),
        },
    )
    .unwrap_or_else(|d| panic!("{d:#?}"));
    let tables = compile(&loaded.policy, &Limits::default()).unwrap();
    (loaded.policy, tables)
}

/// Runs one probe from the device namespace; true if it got through.
fn run_probe(
    rig: &Rig,
    src: IpAddr,
    dst: IpAddr,
    probe: Probe,
    udp_seen: &Mutex<HashSet<String>>,
) -> bool {
    match probe {
        Probe::Tcp(port) => rig
            .devices
            .enter(|| {
                let socket = Socket::new(
                    Domain::for_address(SocketAddr::new(src, 0)),
                    Type::STREAM,
                    Some(Protocol::TCP),
                )
                .unwrap();
                socket.bind(&SocketAddr::new(src, 0).into()).unwrap();
                socket
                    .connect_timeout(
                        &SocketAddr::new(dst, port).into(),
                        Duration::from_millis(700),
                    )
                    .is_ok()
            })
            .unwrap(),
        Probe::Udp(port) => {
            let token = format!("{src}>{dst}:{port}");
            rig.devices
                .enter(|| {
                    let s = UdpSocket::bind((src, 0)).unwrap();
                    s.send_to(token.as_bytes(), (dst, port)).unwrap();
                })
                .unwrap();
            std::thread::sleep(Duration::from_millis(500));
            udp_seen.lock().unwrap().contains(&token)
        }
        Probe::Ping => rig
            .devices
            .exec(
                "ping",
                &[
                    "-c",
                    "1",
                    "-W",
                    "1",
                    "-I",
                    &src.to_string(),
                    &dst.to_string(),
                ],
            )
            .unwrap()
            .status
            .success(),
    }
}

#[test]
fn real_traffic_is_allowed_and_blocked_as_explain_predicts_in_xdp_and_tc() {
    testkit::require_root();
    let rig = Rig::create(&format!("tg-e2e-{}", std::process::id())).unwrap();
    for d in DEVICES {
        rig.add_device(d).unwrap();
    }
    for s in SERVICES {
        rig.add_service(s).unwrap();
    }
    // Listeners: TCP accepts and drops; UDP records what it receives.
    let udp_seen = Arc::new(Mutex::new(HashSet::new()));
    for service in SERVICES {
        let addr: IpAddr = service.parse().unwrap();
        for port in TCP_PORTS {
            let listener = rig
                .upstream
                .enter(|| TcpListener::bind((addr, port)).unwrap())
                .unwrap();
            std::thread::spawn(move || for _ in listener.incoming() {});
        }
        for port in UDP_PORTS {
            let socket = rig
                .upstream
                .enter(|| UdpSocket::bind((addr, port)).unwrap())
                .unwrap();
            let seen = udp_seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 128];
                while let Ok(n) = socket.recv(&mut buf) {
                    seen.lock()
                        .unwrap()
                        .insert(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            });
        }
    }

    let (policy, tables) = load(&rig);
    let cases = fleet::cases(&policy, &tables);
    let allowed = cases.iter().filter(|c| c.3).count();
    assert!(
        allowed > 10 && allowed < cases.len() - 10,
        "both outcomes covered"
    );

    for mode in [AttachPolicy::XdpNative, AttachPolicy::Tc] {
        let mut dataplane = Dataplane::open(&Options::default()).unwrap();
        dataplane.install(&tables).unwrap();
        let attachment = rig
            .gateway
            .enter(|| dataplane.attach_by_name(RIG_DEVICE_IFACE, mode))
            .unwrap()
            .unwrap();
        udp_seen.lock().unwrap().clear();
        let outcomes: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = cases
                .iter()
                .map(|&(src, dst, probe, _)| {
                    let (rig, seen) = (&rig, &udp_seen);
                    scope.spawn(move || run_probe(rig, src, dst, probe, seen))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wrong: Vec<String> = cases
            .iter()
            .zip(&outcomes)
            .filter(|((.., want), got)| *want != **got)
            .map(|((src, dst, probe, want), got)| {
                format!(
                    "{src} -> {dst} {probe:?}: explain says {}, traffic {}",
                    if *want { "allow" } else { "deny" },
                    if *got { "passed" } else { "was blocked" }
                )
            })
            .collect();
        eprintln!(
            "{}: {} probes ({allowed} predicted allowed), {} disagreements",
            attachment.mode,
            cases.len(),
            wrong.len()
        );
        assert!(
            wrong.is_empty(),
            "{} mode:\n{}",
            attachment.mode,
            wrong.join("\n")
        );
        drop(dataplane);
    }
}
