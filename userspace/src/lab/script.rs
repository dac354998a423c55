//! The lab's traffic script: each step sends real traffic from a device and
//! shows, side by side, what `explain` predicts and what happened.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use tollgate_common::Verdict;

use super::topology::Topology;
use crate::{
    control::Lease, explain::explain_live, netns::Namespace, reload::Prepared, tables::PacketFacts,
};

#[derive(Clone, Copy)]
pub enum Probe {
    Tcp(u16),
    Udp(u16),
    /// A DNS query (A and AAAA) for the name, with `dig`, to port 53.
    Resolve(&'static str),
}

pub struct Step {
    pub what: &'static str,
    pub src: &'static str,
    pub dst: &'static str,
    pub probe: Probe,
}

/// Listeners standing in for the services; UDP ones record what arrives.
pub struct Services {
    seen: Arc<Mutex<HashSet<String>>>,
}

impl Services {
    /// TCP listeners accept and drop; UDP receivers remember each datagram.
    pub fn start(
        ns: &Namespace,
        addrs: &[&str],
        tcp: &[u16],
        udp: &[u16],
        shared: Option<&Services>,
    ) -> Result<Services> {
        let seen = shared.map_or_else(|| Arc::new(Mutex::new(HashSet::new())), |s| s.seen.clone());
        for a in addrs {
            let addr: IpAddr = a.parse()?;
            for &port in tcp {
                let l = ns.enter(|| TcpListener::bind((addr, port)))??;
                std::thread::spawn(move || for _ in l.incoming() {});
            }
            for &port in udp {
                let s = ns.enter(|| UdpSocket::bind((addr, port)))??;
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 256];
                    while let Ok(n) = s.recv(&mut buf) {
                        seen.lock()
                            .expect("lock")
                            .insert(String::from_utf8_lossy(&buf[..n]).into_owned());
                    }
                });
            }
        }
        Ok(Services { seen })
    }
}

/// What one step showed.
pub struct Outcome {
    pub predicted: Verdict,
    pub passed: bool,
}

impl Outcome {
    pub fn agrees(&self) -> bool {
        self.passed != matches!(self.predicted, Verdict::Deny | Verdict::Reject)
    }
}

/// Runs `step`; `leases` are what the gateway's DNS forwarder has learned
/// so far (its control socket's answer), which `explain` judges with.
pub fn run(
    step: &Step,
    n: usize,
    topology: &Topology,
    (policy, leases): (&Prepared, &[Lease]),
    services: &Services,
) -> Result<Outcome> {
    let src: IpAddr = step.src.parse()?;
    let dst: IpAddr = step.dst.parse()?;
    let (proto, port, name) = match step.probe {
        Probe::Tcp(p) => (6, p, "tcp"),
        Probe::Udp(p) => (17, p, "udp"),
        Probe::Resolve(_) => (17, 53, "udp"),
    };
    let e = explain_live(
        &policy.policy,
        &policy.tables,
        leases,
        &PacketFacts {
            src,
            dst,
            proto,
            dport: Some(port),
        },
    );
    let ns = topology.device_ns(step.src);
    let mut answered = String::new();
    let passed = match step.probe {
        Probe::Tcp(port) => ns.enter(|| connect_from(src, SocketAddr::new(dst, port)))?,
        Probe::Udp(port) => {
            let token = format!("{n}:{src}>{dst}:{port}");
            ns.enter(|| -> Result<()> {
                UdpSocket::bind((src, 0))?.send_to(token.as_bytes(), (dst, port))?;
                Ok(())
            })??;
            std::thread::sleep(Duration::from_millis(300));
            services.seen.lock().expect("lock").contains(&token)
        }
        Probe::Resolve(name) => {
            let out = ns.exec(
                "dig",
                &[
                    "+short",
                    "+time=2",
                    "+tries=1",
                    "-b",
                    step.src,
                    &format!("@{dst}"),
                    name,
                    "A",
                    name,
                    "AAAA",
                ],
            )?;
            let text = String::from_utf8_lossy(&out.stdout);
            let answer: Vec<&str> = text
                .lines()
                .filter(|l| l.parse::<IpAddr>().is_ok())
                .collect();
            answered = answer.join(", ");
            !answer.is_empty()
        }
    };
    let rule = e.rule_id.as_deref().unwrap_or(e.reason.label());
    let result = match (step.probe, passed) {
        (Probe::Tcp(_), true) => "connected",
        (Probe::Udp(_), true) => "delivered",
        (Probe::Resolve(_), true) => "answered",
        (_, false) => "blocked",
    };
    let outcome = Outcome {
        predicted: e.verdict,
        passed,
    };
    println!(
        "{n:>3}. {:<34} {:>13} -> {:<15} {name}/{port:<5} explain: {:<10} {:<14} traffic: {result:<9} {}",
        step.what,
        step.src,
        step.dst,
        e.verdict.label(),
        format!("({rule})"),
        if outcome.agrees() { "ok" } else { "MISMATCH" }
    );
    if let Probe::Resolve(name) = step.probe
        && passed
    {
        println!("     {name} is {answered}");
    }
    Ok(outcome)
}

/// A TCP connect from a chosen source address (the device's).
fn connect_from(src: IpAddr, dst: SocketAddr) -> bool {
    use socket2::{Domain, Socket, Type};
    let Ok(socket) = Socket::new(Domain::for_address(dst), Type::STREAM, None) else {
        return false;
    };
    socket.bind(&SocketAddr::new(src, 0).into()).is_ok()
        && socket
            .connect_timeout(&dst.into(), Duration::from_millis(800))
            .is_ok()
}
