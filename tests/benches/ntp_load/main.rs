//! NTP load benchmark: Tollgate's XDP fast path, Tollgate's userspace
//! server and chronyd, side by side in one run, over the device-facing veth
//! of a gateway namespace, with the same load generator for each.
//!
//! The setup (`servers.rs`): the real `tollgate run` (release build)
//! attached in native XDP to the gateway's `devices0`, serving
//! 100.127.0.123:123 with rate limits out of the way, restarted with
//! `ntp.fast-path: on` (the fast path) or `off` (its userspace server) as
//! the steps need.
//! `chronyd -x` (never touches the clock) with the same access and the same
//! 2 MiB receive buffer on 100.127.0.125:123. A blackhole route on
//! 100.127.0.126 is the sink that measures the generator alone. The
//! gateway's receive processing (threaded NAPI), the delivery of the
//! replies and the servers run on CPU 0, the generator on CPU 1, all at
//! nice −10.
//!
//! The generator (`generator.rs`) is open loop: NTPv4 requests from 64
//! source ports, `sendmmsg` batches of up to 32, paced to a fixed rate per
//! step; the targets take turns at each rate. Per step:
//!
//! - loss: requests without a reply (replies up to 300 ms after the step
//!   count);
//! - response time p50/p99: from just before the request's `sendmmsg` to
//!   the kernel's receive timestamp of the reply;
//! - server CPU per reply (µs): the gateway's NAPI thread (the XDP
//!   program, hence all of the fast path, and the stack's delivery to the
//!   server's socket) plus the server process (Tollgate's daemon or
//!   chronyd), user + system time from `/proc/PID/stat`, divided by the
//!   replies; the replies' delivery to the generator's socket runs in the
//!   softirq of whichever of the two sent them, and counts there.
//!
//! Per step, the kernel's drop counters say where the lost requests went:
//! the gateway's receive ring (full while its NAPI thread waited or could
//! not keep up), the replies' `XDP_TX`, a full server socket or a full
//! generator socket.
//!
//! The device-facing link receives like a NIC's (`servers::Link`): four
//! queues of 256 frames and NAPI threads that preempt the servers, as
//! interrupts do.
//!
//! Run as root: `cargo bench --bench ntp_load`. `NTP_BENCH_STEP_SECONDS`
//! (default 2) sets the step length, `NTP_BENCH_RATES` (comma-separated
//! requests/s) the rates, `NTP_BENCH_LINK=veth` a plain veth instead (one
//! ring, NAPI at the bench's priority).

mod generator;
mod servers;

use std::{net::SocketAddrV4, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use generator::Generator;
use servers::{CHRONY, GENERATOR_CPU, Gateway, Link, MEMBER, SINK, TOLLGATE};

/// Finer steps from 100k, where chronyd's limit lies on this machine.
const RATES: [u32; 17] = [
    5_000, 10_000, 20_000, 30_000, 50_000, 75_000, 100_000, 110_000, 125_000, 150_000, 175_000,
    200_000, 250_000, 300_000, 400_000, 500_000, 600_000,
];
/// The loss a rate may have and still count as served.
const LOSS_LIMIT_PERCENT: f64 = 0.5;
/// A step whose generator sent less than this share of its rate measured
/// the generator, not the server.
const GENERATOR_KEPT_UP: f64 = 0.98;

/// Who is measured.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    FastPath,
    Userspace,
    Chronyd,
    /// No replies: the generator's own ceiling.
    Sink,
}

impl Server {
    const ALL: [Server; 4] = [
        Server::FastPath,
        Server::Userspace,
        Server::Chronyd,
        Server::Sink,
    ];

    fn name(self) -> &'static str {
        match self {
            Server::FastPath => "tollgate-xdp",
            Server::Userspace => "tollgate-user",
            Server::Chronyd => "chronyd",
            Server::Sink => "sink",
        }
    }

    fn address(self) -> SocketAddrV4 {
        match self {
            Server::FastPath | Server::Userspace => TOLLGATE,
            Server::Chronyd => CHRONY,
            Server::Sink => SINK,
        }
    }

    /// The server CPU seconds so far: the NAPI threads and the server's
    /// process.
    fn cpu(self, gateway: &Gateway) -> Result<(f64, f64)> {
        let (napi, tollgate, chronyd) = gateway.cpu()?;
        Ok((
            napi,
            match self {
                Server::FastPath | Server::Userspace => tollgate,
                Server::Chronyd => chronyd,
                Server::Sink => 0.0,
            },
        ))
    }
}

struct Step {
    rate: u32,
    sent: u64,
    replies: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_reply: f64,
    /// The NAPI threads' part of it.
    napi_us_per_reply: f64,
}

impl Step {
    fn loss_percent(&self) -> f64 {
        100.0 * (1.0 - self.replies as f64 / self.sent.max(1) as f64)
    }

    fn sent_per_second(&self) -> f64 {
        self.sent as f64 / self.seconds
    }

    /// The generator sent (nearly) the whole rate.
    fn generator_kept_up(&self) -> bool {
        self.sent_per_second() >= GENERATOR_KEPT_UP * f64::from(self.rate)
    }

    /// The server answered the rate within the loss limit.
    fn served(&self) -> bool {
        self.generator_kept_up() && self.within_loss_limit()
    }

    fn within_loss_limit(&self) -> bool {
        self.loss_percent() <= LOSS_LIMIT_PERCENT
    }
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    if std::env::args().skip(1).any(|a| a != "--bench") {
        bail!("usage: cargo bench --bench ntp_load");
    }
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "needs root (network namespaces, XDP)"
    );
    ensure!(
        std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2,
        "needs two CPUs: one for the gateway, one for the generator"
    );
    let step = Duration::from_secs_f64(env_or("NTP_BENCH_STEP_SECONDS", 2.0)?);
    let rates: Vec<u32> = match std::env::var("NTP_BENCH_RATES") {
        Ok(list) => list
            .split(',')
            .map(|r| r.trim().parse().context("NTP_BENCH_RATES"))
            .collect::<Result<_>>()?,
        Err(_) => RATES.to_vec(),
    };
    let link = match std::env::var("NTP_BENCH_LINK").as_deref() {
        Err(_) | Ok("nic") => Link::NIC_LIKE,
        Ok("veth") => Link::PLAIN_VETH,
        Ok(other) => bail!("NTP_BENCH_LINK: {other:?} is neither `nic` nor `veth`"),
    };
    // Other jobs share this machine: run the servers and the generator at a
    // higher priority (inherited by the daemon and chronyd alike).
    // SAFETY: setpriority on this process, before any other thread exists.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } != 0 {
        eprintln!(
            "warning: cannot raise priority: {}",
            std::io::Error::last_os_error()
        );
    }
    let tollgate = testkit::bench::release_tollgate_binary()?;
    testkit::bench::print_machine_facts();
    println!(
        "tollgate: {}\nchronyd: {}\nlink: {}",
        tollgate.display(),
        chrony_version(),
        link.describe()
    );

    let mut gateway = Gateway::start(tollgate, link)?;
    let generator = gateway.rig.devices.enter(|| Generator::open(MEMBER))??;
    wait_for_tollgate(&gateway, &generator, true)?;
    generator.wait_for_server(CHRONY)?;
    gateway.raise_chrony_buffer()?;
    // Requests answered in XDP and passed to the server, by server.
    let mut fast_path_counts = [(0.0, 0.0); 2];

    println!(
        "\n{:>13} {:>9} {:>10} {:>8} {:>9} {:>9} {:>11} {:>8}  \
         dropped at: gateway ring / XDP_TX / server socket / generator socket",
        "server", "rate/s", "sent/s", "loss %", "p50 µs", "p99 µs", "CPU µs/req", "of NAPI",
    );
    let mut results: Vec<(Server, Vec<Step>)> = Server::ALL.iter().map(|&s| (s, vec![])).collect();
    for (i, &rate) in rates.iter().enumerate() {
        // One daemon restart per rate: the userspace path last at even
        // steps and first at odd ones.
        if i % 2 == 1 {
            results.rotate_left(1);
        }
        for (server, steps) in &mut results {
            // Past saturation twice in a row (for the sink: the
            // generator's): stop loading this server.
            let saturated = |s: &Step| match server {
                Server::Sink => !s.generator_kept_up(),
                _ => !s.served(),
            };
            if steps.len() >= 2 && steps.iter().rev().take(2).all(saturated) {
                continue;
            }
            let tollgate = match server {
                Server::FastPath => Some(0),
                Server::Userspace => Some(1),
                _ => None,
            };
            if let Some(t) = tollgate {
                gateway.fast_path(t == 0)?;
                wait_for_tollgate(&gateway, &generator, t == 0)?;
            }
            let counts_before = fast_path_counts_now(&gateway)?;
            let cpu_before = server.cpu(&gateway)?;
            let drops_before = gateway.drops()?;
            let sent = generator.step(server.address(), rate, step, GENERATOR_CPU)?;
            let cpu_after = server.cpu(&gateway)?;
            let (napi_cpu, process_cpu) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
            let drops = gateway.drops()? - drops_before;
            if let Some(t) = tollgate {
                let after = fast_path_counts_now(&gateway)?;
                fast_path_counts[t].0 += after.0 - counts_before.0;
                fast_path_counts[t].1 += after.1 - counts_before.1;
            }
            let mut latencies = sent.latencies;
            latencies.sort_unstable();
            let percentile = |p: f64| -> f64 {
                match latencies.len() {
                    0 => f64::NAN,
                    n => f64::from(latencies[((n - 1) as f64 * p) as usize]) / 1e3,
                }
            };
            let replies = latencies.len() as u64;
            let s = Step {
                rate,
                sent: sent.sent,
                replies,
                seconds: step.as_secs_f64(),
                p50_us: percentile(0.50),
                p99_us: percentile(0.99),
                cpu_us_per_reply: (napi_cpu + process_cpu) * 1e6 / replies.max(1) as f64,
                napi_us_per_reply: napi_cpu * 1e6 / replies.max(1) as f64,
            };
            println!(
                "{:>13} {:>9} {:>10.0} {:>8.3} {:>9.1} {:>9.1} {:>11.2} {:>8.2}  {} / {} / {} / {}",
                server.name(),
                rate,
                s.sent_per_second(),
                if *server == Server::Sink {
                    f64::NAN
                } else {
                    s.loss_percent()
                },
                s.p50_us,
                s.p99_us,
                if *server == Server::Sink {
                    f64::NAN
                } else {
                    s.cpu_us_per_reply
                },
                if *server == Server::Sink {
                    f64::NAN
                } else {
                    s.napi_us_per_reply
                },
                drops.gateway_ring,
                drops.xdp_tx,
                drops.gateway_socket,
                drops.generator_socket,
            );
            steps.push(s);
        }
    }
    results.sort_by_key(|(s, _)| Server::ALL.iter().position(|a| a == s));
    summary(&results, fast_path_counts);
    Ok(())
}

/// The side-by-side summary: for each server the highest rate served with
/// loss ≤ 0.5 %, and its response time and CPU there.
fn summary(results: &[(Server, Vec<Step>)], fast_path_counts: [(f64, f64); 2]) {
    let ceiling = results
        .iter()
        .find(|(s, _)| *s == Server::Sink)
        .map_or(0.0, |(_, steps)| {
            steps.iter().map(Step::sent_per_second).fold(0.0, f64::max)
        });
    println!(
        "\nsummary: highest rate with loss ≤ {LOSS_LIMIT_PERCENT} % (the generator sending ≥ {:.0} % of it)",
        GENERATOR_KEPT_UP * 100.0
    );
    println!(
        "{:>13} {:>11} {:>9} {:>9} {:>11}",
        "server", "req/s", "p50 µs", "p99 µs", "CPU µs/req"
    );
    let mut best = std::collections::HashMap::new();
    for (server, steps) in results {
        if *server == Server::Sink {
            continue;
        }
        let served = steps.iter().filter(|s| s.served()).max_by_key(|s| s.rate);
        let Some(s) = served else {
            println!("{:>13} {:>11}", server.name(), "none");
            continue;
        };
        // Within the loss limit at every higher rate, which the generator
        // could not send: the limit is the generator's, not the server's.
        let generator_bound = steps
            .iter()
            .filter(|t| t.rate > s.rate)
            .all(|t| !t.generator_kept_up() && t.within_loss_limit());
        println!(
            "{:>13} {:>11} {:>9.1} {:>9.1} {:>11.2}{}",
            server.name(),
            if generator_bound {
                format!("≥ {}", s.rate)
            } else {
                s.rate.to_string()
            },
            s.p50_us,
            s.p99_us,
            s.cpu_us_per_reply,
            if generator_bound {
                "  (generator-bound)"
            } else {
                ""
            }
        );
        best.insert(server.name(), s.rate);
    }
    println!("generator ceiling (sink, no replies): {ceiling:.0} requests/s");
    if let (Some(fast), Some(chrony)) = (best.get("tollgate-xdp"), best.get("chronyd")) {
        println!(
            "fast path / chronyd: {:.2}×",
            f64::from(*fast) / f64::from(*chrony)
        );
    }
    for (name, (answered, passed)) in ["tollgate-xdp", "tollgate-user"]
        .iter()
        .zip(fast_path_counts)
    {
        println!(
            "{name}: tollgate_ntp_fast_path_total answered {answered}, passed {passed} during its steps"
        );
    }
}

/// Waits until the daemon answers, in XDP if `fast_path` (it publishes
/// the state the program answers with only after its server started).
fn wait_for_tollgate(gateway: &Gateway, generator: &Generator, fast_path: bool) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let before = fast_path_counts_now(gateway)?.0;
        generator
            .wait_for_server(TOLLGATE)
            .with_context(|| format!("the daemon's log:\n{}", gateway.daemon.logs()))?;
        if !fast_path || fast_path_counts_now(gateway)?.0 > before {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the fast path does not answer; the daemon's log:\n{}",
            gateway.daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `tollgate_ntp_fast_path_total` {answered, passed} from the daemon.
fn fast_path_counts_now(gateway: &Gateway) -> Result<(f64, f64)> {
    let (status, body) = gateway.rig.gateway.http_get("127.0.0.1:9187", "/metrics")?;
    ensure!(status == 200, "metrics: HTTP {status}");
    let count = |result: &str| -> Result<f64> {
        let series = format!("tollgate_ntp_fast_path_total{{result=\"{result}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&series))
            .with_context(|| format!("no {series}"))?
            .parse()
            .context("counter value")
    };
    Ok((count("answered")?, count("passed")?))
}

fn chrony_version() -> String {
    std::process::Command::new("chronyd")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split(" (+")
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default()
}

fn env_or(name: &str, default: f64) -> Result<f64> {
    std::env::var(name)
        .ok()
        .map(|s| s.parse::<f64>())
        .transpose()
        .with_context(|| name.to_string())
        .map(|v| v.unwrap_or(default))
}
