//! The running daemon stays responsive whatever its peers and its policy
//! directory do: a reload slower than `limits.reload-timeout` fails like
//! an invalid policy while `status` keeps answering and SIGTERM stops it at
//! once; slow and flooding clients of the metrics endpoint and the control
//! socket do not starve the others; `run --check-config` rejects what `run`
//! would, before anything is pinned.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    time::{Duration, Instant},
};

use testkit::daemon_process::Daemon;
use tollgate::netns::Namespace;

fn namespace(tag: &str) -> Namespace {
    testkit::require_root();
    let ns = testkit::namespace(tag);
    ns.ip(&[
        "link", "add", "dev0", "type", "veth", "peer", "name", "dev1",
    ])
    .unwrap();
    ns
}

/// A valid list of `n` /32s: slow to read and compile in a debug build.
fn big_policy(n: u32) -> String {
    let mut text = String::from("lists:\n  big:\n");
    for i in 0..n {
        text.push_str(&format!(
            "    - 100.{}.{}.{}/32\n",
            (i >> 16) & 0x3f,
            (i >> 8) & 0xff,
            i & 0xff
        ));
    }
    text.push_str(
        "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n    rules:\n      \
         - allow: {to: big, proto: udp, ports: [7000]}\n",
    );
    text
}

#[test]
fn a_reload_past_its_budget_fails_and_the_daemon_answers_meanwhile() {
    let ns = namespace("budget");
    let d = Daemon::start(
        &ns,
        "budget",
        &["dev0"],
        "limits:\n  reload-timeout: 100ms\n",
        &[("p.yaml", &testkit::policy_allowing(7000))],
    );
    let generation = d.status().policy.generation;
    let text = big_policy(1 << 20);
    let started = Instant::now();
    d.write_policy("p.yaml", &text);
    // Status answers all along; the reload fails on its budget.
    let mut slowest = Duration::ZERO;
    let status = loop {
        let asked = Instant::now();
        let s = d.status();
        slowest = slowest.max(asked.elapsed());
        if s.last_reload.as_ref().is_some_and(|r| !r.success) {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{s:#?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let reload = status.last_reload.unwrap();
    assert!(
        reload.errors[0].contains("took longer than limits.reload-timeout (100ms)"),
        "{:?}",
        reload.errors
    );
    assert_eq!(status.policy.generation, generation, "the last good policy");
    eprintln!(
        "a {} MB policy overran a 100 ms budget: refused after {:.0} ms; slowest status \
         answer meanwhile {:.1} ms",
        text.len() >> 20,
        reload.duration_ms,
        slowest.as_secs_f64() * 1e3
    );

    // SIGTERM during a slow reload stops the daemon at once.
    d.write_policy("p.yaml", &text.replace("7000", "7001"));
    std::thread::sleep(Duration::from_millis(30));
    let mut d = d;
    let stopping = Instant::now();
    let exit = d.stop();
    eprintln!(
        "SIGTERM during a reload: exited ({exit}) in {:.0} ms",
        stopping.elapsed().as_secs_f64() * 1e3
    );
    assert!(exit.success(), "{exit}");
    assert!(stopping.elapsed() < Duration::from_secs(5));
}

#[test]
fn slow_and_flooding_clients_do_not_starve_metrics_or_status() {
    let ns = namespace("peers");
    let port = 19301;
    let d = Daemon::start(
        &ns,
        "peers",
        &["dev0"],
        &format!("metrics:\n  listen: 127.0.0.1:{port}\n"),
        &[("p.yaml", &testkit::policy_allowing(7000))],
    );
    let mode = std::fs::metadata(&d.control_socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o660,
        "the control socket is owner and group only"
    );

    let addr = format!("127.0.0.1:{port}");
    let held: Vec<TcpStream> = ns
        .enter(|| {
            let mut held = Vec::new();
            for i in 0..200 {
                let Ok(mut s) = TcpStream::connect(&addr) else {
                    continue;
                };
                if i % 2 == 0 {
                    // Headers dribbled in, never finished.
                    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
                }
                held.push(s);
            }
            held
        })
        .unwrap();
    let unix: Vec<UnixStream> = (0..100)
        .filter_map(|_| UnixStream::connect(&d.control_socket).ok())
        .collect();
    // A request line far longer than any request.
    let mut long = UnixStream::connect(&d.control_socket).unwrap();
    let _ = long.write_all(&vec![b's'; 1 << 20]);

    let started = Instant::now();
    let (code, body) = ns.http_get(&addr, "/metrics").unwrap();
    let scrape = started.elapsed();
    assert_eq!(code, 200);
    assert!(body.contains("tollgate_dataplane_attached"), "{body}");
    let started = Instant::now();
    let status = d.status();
    let asked = started.elapsed();
    assert_eq!(status.interfaces[0].interface, "dev0");
    eprintln!(
        "with {} idle or half-sent metrics connections and {} idle control connections: \
         scrape in {:.0} ms, status in {:.0} ms",
        held.len(),
        unix.len(),
        scrape.as_secs_f64() * 1e3,
        asked.as_secs_f64() * 1e3
    );
    let mut reply = String::new();
    long.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = long.read_to_string(&mut reply);
    assert!(
        reply.is_empty() || reply.contains("unknown request"),
        "{reply}"
    );
    drop((held, unix));
}

#[test]
fn check_config_rejects_what_run_would_before_anything_is_pinned() {
    let ns = namespace("preflight");
    // A device-facing interface of a type Tollgate cannot parse: refused
    // by name, by --check-config and by run alike.
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "dev0"])
        .unwrap();
    ns.ip(&["link", "set", "dev0", "up"]).unwrap();
    let cases = [
        (
            "interfaces: [lo]\n",
            "interface lo has link type loopback (772), which Tollgate cannot filter",
        ),
        (
            "interfaces: [dev0]\nmetrics:\n  listen: 10.9.0.1:9187\n",
            "metrics.listen 10.9.0.1 is an address of a device-facing interface",
        ),
    ];
    for (config, want) in cases {
        let d = Daemon::prepare(
            &ns,
            "preflight",
            &[],
            "",
            &[("p.yaml", &testkit::policy_allowing(7000))],
        );
        let text = std::fs::read_to_string(&d.config)
            .unwrap()
            .replace("interfaces: []\n", config);
        std::fs::write(&d.config, text).unwrap();
        for check in [true, false] {
            let mut cmd = std::process::Command::new(testkit::tollgate_binary());
            cmd.args(["run", "--netns", ns.name(), "--config"])
                .arg(&d.config);
            if check {
                cmd.arg("--check-config");
            }
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{config} {check}: {stderr}");
            assert!(stderr.contains(want), "{config} {check}: {stderr}");
            assert!(
                !d.pins.0.exists(),
                "{config}: nothing may be pinned before the checks pass"
            );
        }
    }
    // A missing interface is a warning: it is attached when it appears.
    let d = Daemon::prepare(
        &ns,
        "preflight",
        &["wg9"],
        "",
        &[("p.yaml", &testkit::policy_allowing(7000))],
    );
    let out = std::process::Command::new(testkit::tollgate_binary())
        .args(["run", "--netns", ns.name(), "--check-config", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("interface wg9 does not exist (yet)"),
        "{stderr}"
    );
}
