//! `tollgate lab`: the whole appliance on one machine. It builds network
//! namespaces ([`topology`]), runs the real `tollgate run` on the gateway
//! with the example policies ([`gateway_process`]), drives a narrated
//! traffic script ([`script`]) — allowed and denied flows, NTP from every
//! group, an edit the policy's own `expect:` cases refuse, a live policy
//! edit — then stays up for exploring until Ctrl-C or
//! `--duration`.
//! Everything is torn down on the way out, and a lab a crash left behind is
//! replaced by the next run.

mod gateway_process;
pub mod resolver;
mod script;
mod topology;

use std::{
    net::UdpSocket,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tollgate_common::Verdict;

use self::{
    gateway_process::GatewayProcess,
    resolver::{Records, Resolver},
    script::{Probe, Services, Step},
    topology::*,
};
use crate::{
    addresses,
    config::Limits,
    policy::Environment,
    reload::{PrepareCache, Prepared, prepare},
    verdict_diff,
};

const PIN_DIR: &str = "/sys/fs/bpf/tollgate-lab";
const METRICS: &str = "127.0.0.1:9187";

pub struct LabOptions {
    /// The example policies to copy into the lab.
    pub policies: PathBuf,
    /// Tear down after this long (from the start); `None`: at Ctrl-C.
    pub duration: Option<Duration>,
}

pub fn run(options: &LabOptions) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab needs root (network namespaces, BPF)");
    }
    let started = Instant::now();
    // Ctrl-C and SIGTERM are waited for below; block them in every thread.
    let signals = block_exit_signals();

    let work = std::env::temp_dir().join("tollgate-lab");
    let _ = std::fs::remove_dir_all(&work);
    let policy_dir = work.join("policies");
    copy_dir(&options.policies, &policy_dir)
        .with_context(|| format!("copy {}", options.policies.display()))?;
    crate::datapath::remove_pins(Path::new(PIN_DIR))?;

    println!("Tollgate lab: building namespaces tollgate-lab-{{meters,cameras,others,gw,cloud}}");
    let topology = Topology::create()?;
    let services = Services::start(&topology.cloud, &SERVICES, &[443, 8883], &[3478], None)?;
    Services::start(
        &topology.gateway,
        &[GATEWAY_DNS],
        &[22],
        &[],
        Some(&services),
    )?;
    let _resolver = Resolver::start(
        &topology.cloud,
        UPSTREAM_RESOLVER,
        &Records {
            hosts: &[
                (AWS_IOT_ENDPOINT, AWS_TOKYO),
                (AWS_IOT_ENDPOINT, AWS_TOKYO_V6),
            ],
            cnames: &[],
            ttl: 300,
        },
    )?;
    Services::start(&topology.cameras, &[CAMERA], &[554], &[], Some(&services))?;

    let config = work.join("tollgate.yaml");
    std::fs::write(
        &config,
        format!(
            "# The lab's configuration (see deploy/tollgate.yaml for every key).\n\
             interfaces: [{}]\n\
             policy-dir: {}\n\
             pin-dir: {PIN_DIR}\n\
             control-socket: {}\n\
             metrics:\n  listen: {METRICS}\n\
             ntp:\n  listen: [\"{NTP_ADDR}:123\"]\n  reference: local\n  stratum: 10\n\
             dns:\n  listen: [\"{GATEWAY_DNS}:53\"]\n  upstream: [\"{UPSTREAM_RESOLVER}:53\"]\n\
             on-exit: detach\n",
            DEVICE_LINKS.join(", "),
            policy_dir.display(),
            work.join("control.sock").display(),
        ),
    )?;
    println!(
        "starting `tollgate run --netns {GATEWAY} --config {}`",
        config.display()
    );
    let daemon = GatewayProcess::start(GATEWAY, &config)?;

    let policy = || -> Result<Prepared> {
        let gateway = topology
            .gateway
            .enter(|| addresses::current(&DEVICE_LINKS.map(String::from)))??;
        let env = Environment {
            gateway,
            ntp: vec![NTP_ADDR.parse()?],
        };
        prepare(
            &policy_dir,
            &env,
            &Limits::default(),
            &mut PrepareCache::default(),
        )
        .map_err(|d| {
            anyhow::anyhow!(
                "{}",
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
    };

    println!("\nTraffic (each row: what explain predicts, then what real packets did)");
    let steps = [
        Step {
            what: "meter resolves its AWS IoT endpoint",
            src: METER,
            dst: GATEWAY_DNS,
            probe: Probe::Resolve(AWS_IOT_ENDPOINT),
        },
        Step {
            what: "meter publishes to AWS IoT (MQTT)",
            src: METER,
            dst: AWS_TOKYO,
            probe: Probe::Tcp(8883),
        },
        Step {
            what: "meter calls AWS over IPv6",
            src: METER_V6,
            dst: AWS_TOKYO_V6,
            probe: Probe::Tcp(443),
        },
        Step {
            what: "meter tries an AWS address it never resolved",
            src: METER,
            dst: AWS_UNASKED,
            probe: Probe::Tcp(8883),
        },
        Step {
            what: "meter tries DNS over HTTPS",
            src: METER,
            dst: PUBLIC_RESOLVER,
            probe: Probe::Tcp(443),
        },
        Step {
            what: "meter tries the open internet",
            src: METER,
            dst: INTERNET,
            probe: Probe::Tcp(443),
        },
        Step {
            what: "meter probes a camera (lateral)",
            src: METER_2,
            dst: CAMERA,
            probe: Probe::Tcp(554),
        },
        Step {
            what: "meter tries the gateway's SSH",
            src: METER,
            dst: "10.64.0.1",
            probe: Probe::Tcp(22),
        },
        Step {
            what: "camera streams to the ingest edge",
            src: CAMERA,
            dst: VIDEO_INGEST,
            probe: Probe::Tcp(443),
        },
        Step {
            what: "camera WebRTC to the ingest edge",
            src: CAMERA,
            dst: VIDEO_INGEST,
            probe: Probe::Udp(3478),
        },
        Step {
            what: "camera calls the internet (audit)",
            src: CAMERA,
            dst: INTERNET,
            probe: Probe::Tcp(443),
        },
        Step {
            what: "quarantined device gets firmware",
            src: QUARANTINED,
            dst: UPDATE_SERVER,
            probe: Probe::Tcp(443),
        },
        Step {
            what: "quarantined device tries AWS",
            src: QUARANTINED,
            dst: AWS_TOKYO,
            probe: Probe::Tcp(8883),
        },
        Step {
            what: "unknown device tries anything",
            src: STRANGER,
            dst: AWS_TOKYO,
            probe: Probe::Tcp(443),
        },
    ];
    let mut current = policy()?;
    let mut mismatches = 0;
    let control_socket = work.join("control.sock");
    for (i, step) in steps.iter().enumerate() {
        let leases = crate::control::query_leases(&control_socket)?;
        if !script::run(step, i + 1, &topology, (&current, &leases), &services)?.agrees() {
            mismatches += 1;
        }
    }

    println!("\nTime (the private NTP server at {NTP_ADDR}, one query per group)");
    for (who, ns) in [
        ("meters", &topology.meters),
        ("cameras", &topology.cameras),
        ("quarantine", &topology.others),
    ] {
        let out = ns.exec("ntpdig", &["-j", "-t", "2", NTP_ADDR])?;
        let text = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<serde_json::Value>(text.trim()) {
            Ok(v) => println!(
                "  {who:<10} ntpdig: stratum {}, leap {}, offset {:+.6} s",
                v["stratum"],
                v["leap"],
                v["offset"].as_f64().unwrap_or(f64::NAN)
            ),
            Err(_) => {
                println!(
                    "  {who:<10} ntpdig: no answer: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                mismatches += 1;
            }
        }
    }
    let answered = ntp_answer_from(&topology.others, STRANGER)?;
    println!(
        "  {:<10} raw NTP query from {STRANGER}: {}",
        "unknown",
        if answered {
            "answered (unexpected)"
        } else {
            "no answer (in no group)"
        }
    );
    if answered {
        mismatches += 1;
    }

    let meters = policy_dir.join("meters.yaml");
    let text = std::fs::read_to_string(&meters)?;
    if !refused_edit(&daemon, &meters, &text)? {
        mismatches += 1;
    }

    println!("\nLive policy edit: meters get a new backend at {INTERNET} tcp/443");
    let rule = format!(
        "      - allow:\n          id: new-backend\n          to: {INTERNET}\n          proto: tcp\n          ports: [443]\n"
    );
    let marker = "      - allow:\n          id: dns";
    let edited = text.replacen(marker, &format!("{rule}{marker}"), 1);
    if edited == text {
        bail!(
            "{} does not have the rule the lab edits around",
            meters.display()
        );
    }
    let tmp = meters.with_extension("yaml.tmp~");
    std::fs::write(&tmp, edited)?;
    std::fs::rename(&tmp, &meters)?;
    // The daemon's own line about the reload is printed as it arrives.
    daemon.next_reload(Duration::from_secs(10))?;
    let before = std::mem::replace(&mut current, policy()?);
    print_verdict_diff(&before, &current);
    let again = Step {
        what: "meter reaches the new backend",
        src: METER,
        dst: INTERNET,
        probe: Probe::Tcp(443),
    };
    let leases = crate::control::query_leases(&control_socket)?;
    if !script::run(
        &again,
        steps.len() + 1,
        &topology,
        (&current, &leases),
        &services,
    )?
    .agrees()
    {
        mismatches += 1;
    }

    println!("\nCounters from http://{METRICS}/metrics (in {GATEWAY}):");
    print_counters(&topology)?;

    let exe = std::env::current_exe()?;
    println!(
        "\nThe lab is up. Try, in another terminal:\n\
         \x20 ip netns exec {GATEWAY} curl -s http://{METRICS}/metrics | grep ^tollgate_packets\n\
         \x20 {exe} status --socket {}\n\
         \x20 {exe} explain --policy {} --gateway 10.64.0.1 --ntp {NTP_ADDR} --src {METER} --dst {INTERNET} --dport 443\n\
         \x20 {exe} explain --policy {} --gateway 10.64.0.1 --socket {} --fqdn {AWS_IOT_ENDPOINT}\n\
         \x20 ip netns exec tollgate-lab-meters ping -c 1 {AWS_TOKYO}\n\
         \x20 ip netns exec tollgate-lab-meters ntpdig {NTP_ADDR}\n\
         \x20 edit {} and watch the reload",
        control_socket.display(),
        policy_dir.display(),
        policy_dir.display(),
        control_socket.display(),
        meters.display(),
        exe = exe.display(),
    );
    wait_for_exit(&signals, options.duration.map(|d| started + d));

    println!("\nTearing the lab down.");
    daemon.stop();
    drop(topology);
    let _ = std::fs::remove_dir_all(&work);
    if mismatches > 0 {
        bail!("{mismatches} step(s) did not go as predicted");
    }
    println!("Done: every flow went as explain predicted.");
    Ok(())
}

/// One NTP client request from `src`; whether an answer came back.
fn ntp_answer_from(ns: &crate::netns::Namespace, src: &str) -> Result<bool> {
    ns.enter(|| -> Result<bool> {
        let s = UdpSocket::bind((src, 0))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        let mut request = [0u8; 48];
        request[0] = 0x23; // version 4, mode 3 (client)
        s.send_to(&request, (NTP_ADDR, 123))?;
        Ok(s.recv(&mut [0u8; 128]).is_ok())
    })?
}

/// Packets per group and verdict, from a real scrape.
fn print_counters(topology: &Topology) -> Result<()> {
    let (_, body) = topology.gateway.http_get(METRICS, "/metrics")?;
    let value = |name: &str, labels: &[(&str, &str)]| -> u64 {
        body.lines()
            .filter(|l| {
                l.starts_with(name)
                    && labels
                        .iter()
                        .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    println!(
        "  {:<12} {:>8} {:>8} {:>8} {:>11} {:>12}",
        "group",
        Verdict::Allow.label(),
        Verdict::Deny.label(),
        Verdict::Reject.label(),
        Verdict::AuditDeny.label(),
        "ntp served"
    );
    for group in ["meters", "cameras", "quarantine", "_unknown"] {
        let g = ("group", group);
        let packets = |verdict: Verdict| {
            value(
                "tollgate_packets_total",
                &[g, ("verdict", verdict.metric_label())],
            )
        };
        println!(
            "  {group:<12} {:>8} {:>8} {:>8} {:>11} {:>12}",
            packets(Verdict::Allow),
            packets(Verdict::Deny),
            packets(Verdict::Reject),
            packets(Verdict::AuditDeny),
            value("tollgate_ntp_requests_total", &[g, ("result", "served")]),
        );
    }
    Ok(())
}

fn block_exit_signals() -> libc::sigset_t {
    // SAFETY: building a signal set and masking it on this thread; threads
    // started later inherit the mask, so only `wait_for_exit` sees them.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Until Ctrl-C / SIGTERM, or `deadline`.
fn wait_for_exit(signals: &libc::sigset_t, deadline: Option<Instant>) {
    match deadline {
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            println!(
                "\n(tearing down in {} s; Ctrl-C to stop now)",
                left.as_secs()
            );
            let ts = libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            // SAFETY: waits on the blocked set with a timeout.
            unsafe { libc::sigtimedwait(signals, std::ptr::null_mut(), &ts) };
        }
        None => {
            println!("\n(Ctrl-C to tear the lab down)");
            let mut sig = 0;
            // SAFETY: waits on the blocked set.
            unsafe { libc::sigwait(signals, &mut sig) };
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Writes an edit of `meters.yaml` (its text is `text`) that turns the
/// `lateral` deny into an allow: the policy's own `expect:` cases say
/// lateral traffic is denied, so the daemon must refuse it and keep the
/// policy in force (the failed cases are printed from its log). Restores
/// the file; returns whether the edit was refused.
fn refused_edit(daemon: &GatewayProcess, meters: &Path, text: &str) -> Result<bool> {
    println!("\nGuarded edit: the lateral deny of the meters becomes an allow");
    let marker = "      - deny:\n          id: lateral";
    let edited = text.replacen(marker, "      - allow:\n          id: lateral", 1);
    if edited == text {
        bail!("{} does not have the rule the lab edits", meters.display());
    }
    let tmp = meters.with_extension("yaml.tmp~");
    std::fs::write(&tmp, edited)?;
    std::fs::rename(&tmp, meters)?;
    // The daemon's lines about the refusal are printed as they arrive.
    let refused = daemon.next_refusal(Duration::from_secs(10)).is_ok();
    println!(
        "  {}",
        if refused {
            "refused by the expect: cases: the last good policy stays in force"
        } else {
            "MISMATCH: the edit was not refused"
        }
    );
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, meters)?;
    Ok(refused)
}

/// What `tollgate diff` says about the live edit: the verdicts it changed.
fn print_verdict_diff(before: &Prepared, after: &Prepared) {
    fn side(p: &Prepared) -> verdict_diff::Side<'_> {
        verdict_diff::Side {
            policy: &p.policy,
            tables: &p.tables,
        }
    }
    let diff = verdict_diff::diff(side(before), side(after));
    println!("  tollgate diff of the edit:");
    let lines = verdict_diff::render::lines(&diff, &after.policy);
    for line in verdict_diff::render::text(&lines, 20).lines() {
        println!("    {line}");
    }
}
