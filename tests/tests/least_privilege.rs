//! The controller as `deploy/systemd/tollgate.service` runs it: as the
//! unprivileged `tollgate` user (`tollgate.sysusers`) with only the four
//! capabilities the unit gives it as ambient ones, pinning into a directory
//! laid out by `tollgate.tmpfiles`. Real daemon, real packets between
//! namespaces: it filters, serves NTP, metrics and status, follows policy
//! edits, keeps its pinned links across a restart and detaches cleanly. And
//! without any one of the four capabilities it does not start, with the
//! error the unit's comments quote.
//!
//! systemd is not needed: `nsenter --net` enters the gateway namespace (the
//! mount namespace stays the host's, so /sys/fs/bpf is the host's bpffs, as
//! under the unit; `tollgate run --netns` would need CAP_SYS_ADMIN for
//! setns), and `setpriv` switches user and capabilities as the unit's
//! `User=`, `AmbientCapabilities=`, `CapabilityBoundingSet=` and
//! `NoNewPrivileges=` do. The unit's sandbox (read-only file system, system
//! call filter) is not reproduced; `tests/tests/deploy.rs` rates it.

use std::{
    collections::BTreeSet,
    net::UdpSocket,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use testkit::daemon_process::Daemon;
use tollgate::netns::{Namespace, RIG_DEVICE_IFACE, Rig};

/// What the unit gives (setpriv's names for them).
const CAPABILITIES: [&str; 4] = ["bpf", "net_admin", "perfmon", "net_bind_service"];
/// Their bits: CAP_NET_BIND_SERVICE 10, CAP_NET_ADMIN 12, CAP_PERFMON 38,
/// CAP_BPF 39.
const CAPABILITY_MASK: u64 = (1 << 10) | (1 << 12) | (1 << 38) | (1 << 39);

const SERVICE: &str = "203.0.113.50";
const DEVICE: &str = "10.64.0.10";
const NTP: &str = "100.127.0.123";

/// NTP on port 123, so CAP_NET_BIND_SERVICE is needed.
fn ntp_config() -> String {
    format!("ntp:\n  listen: [\"{NTP}:123\"]\n  reference: local\n  stratum: 10\n")
}

struct User {
    uid: u32,
    gid: u32,
}

fn lookup_user() -> Option<User> {
    let out = Command::new("getent")
        .args(["passwd", "tollgate"])
        .output()
        .expect("run getent");
    let line = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = line.trim().split(':').collect();
    (fields.len() == 7).then(|| User {
        uid: fields[2].parse().unwrap(),
        gid: fields[3].parse().unwrap(),
    })
}

/// The `tollgate` user, created from the repository's sysusers file (as
/// the install does) when missing.
fn tollgate_user() -> User {
    if lookup_user().is_none() {
        let file = testkit::repo_root().join("deploy/systemd/tollgate.sysusers");
        let out = Command::new("systemd-sysusers")
            .arg(&file)
            .output()
            .expect("run systemd-sysusers (Debian package systemd)");
        assert!(
            out.status.success(),
            "systemd-sysusers {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let user = lookup_user().expect("systemd-sysusers created no `tollgate` user");
    assert_ne!(user.uid, 0, "the tollgate user must not be root");
    user
}

/// The capabilities the unit lists, in setpriv's spelling.
fn unit_capabilities() -> BTreeSet<String> {
    let unit =
        std::fs::read_to_string(testkit::repo_root().join("deploy/systemd/tollgate.service"))
            .unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit sets AmbientCapabilities=");
    line.split_whitespace()
        .map(|c| c.strip_prefix("CAP_").unwrap().to_lowercase())
        .collect()
}

/// `nsenter` into the gateway namespace, then `setpriv` to the tollgate
/// user with exactly `capabilities` (inheritable, ambient and bounding).
fn prefix(gateway: &Namespace, capabilities: &[&str]) -> Vec<String> {
    let set = std::iter::once("-all".to_string())
        .chain(capabilities.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    [
        "nsenter".to_string(),
        format!("--net=/run/netns/{}", gateway.name()),
        "setpriv".to_string(),
        "--reuid=tollgate".to_string(),
        "--regid=tollgate".to_string(),
        "--init-groups".to_string(),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
        format!("--bounding-set={set}"),
        "--no-new-privs".to_string(),
        "--".to_string(),
    ]
    .to_vec()
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Whether a user other than the owner may run `path`: every directory on
/// the way searchable by others, the file readable and executable.
fn others_may_run(path: &Path) -> bool {
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.mode()).unwrap_or(0);
    mode(path) & 0o005 == 0o005 && path.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0)
}

/// Prepares `d` (made by [`Daemon::prepare`], as root) for the tollgate
/// user, the way an install does for the unit:
/// - the pin directory comes from the repository's tmpfiles file, applied
///   below the test's own bpffs directory instead of /sys/fs/bpf: the test
///   directory root's, 0711, and `tollgate` in it the user's, 0700;
/// - the control socket goes in a directory of the user's, as the unit's
///   RuntimeDirectory=;
/// - configuration and policies readable, the notify socket writable.
fn unprivileged(d: &mut Daemon, user: &User) {
    // bpffs's root must let the user pass (tollgate.tmpfiles sets 0711
    // on a gateway); never take permissions away.
    let bpffs = Path::new("/sys/fs/bpf");
    let mode = std::fs::metadata(bpffs).unwrap().mode() & 0o7777;
    if mode & 0o001 == 0 {
        eprintln!(
            "note: /sys/fs/bpf is {mode:o}; adding search permission, as tollgate.tmpfiles does"
        );
        set_mode(bpffs, mode | 0o011);
    }
    let base = d.pins.0.clone();
    std::fs::create_dir(&base).unwrap();
    let pin_dir = base.join("tollgate");
    let text =
        std::fs::read_to_string(testkit::repo_root().join("deploy/systemd/tollgate.tmpfiles"))
            .unwrap();
    let mut here = String::new();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let path = match fields[1] {
            "/sys/fs/bpf" => &base,
            "/sys/fs/bpf/tollgate" => &pin_dir,
            other => panic!(
                "tollgate.tmpfiles: {other}: only bpffs's root and the pin directory expected"
            ),
        };
        here += &format!(
            "{} {} {}\n",
            fields[0],
            path.display(),
            fields[2..].join(" ")
        );
    }
    let conf = d.root.join("tollgate.tmpfiles.conf");
    std::fs::write(&conf, here).unwrap();
    let out = Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(&conf)
        .output()
        .expect("run systemd-tmpfiles (Debian package systemd)");
    assert!(
        out.status.success(),
        "systemd-tmpfiles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::metadata(&pin_dir).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid));
    assert_eq!(meta.mode() & 0o7777, 0o700);
    assert_eq!(std::fs::metadata(&base).unwrap().mode() & 0o7777, 0o711);

    let run = d.root.join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(user.uid), Some(user.gid)).unwrap();
    set_mode(&run, 0o755);
    let control_socket = run.join("control.sock");

    let config = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace(
            &format!("pin-dir: {}\n", base.display()),
            &format!("pin-dir: {}\n", pin_dir.display()),
        )
        .replace(
            &format!("control-socket: {}\n", d.control_socket.display()),
            &format!("control-socket: {}\n", control_socket.display()),
        );
    assert!(config.contains(&*pin_dir.to_string_lossy()) && config.contains("/run/control.sock"));
    std::fs::write(&d.config, config).unwrap();
    d.control_socket = control_socket;

    for dir in [&d.root, &d.policy_dir] {
        set_mode(dir, 0o755);
    }
    set_mode(&d.config, 0o644);
    for e in std::fs::read_dir(&d.policy_dir).unwrap() {
        set_mode(&e.unwrap().path(), 0o644);
    }
    set_mode(&d.root.join("notify.sock"), 0o666);
    // A checkout in a directory others may not enter (/root) is no place
    // to run the binary from as another user: run a copy.
    if !others_may_run(&d.binary) {
        let copy = d.root.join("tollgate");
        std::fs::copy(&d.binary, &copy).unwrap();
        set_mode(&copy, 0o755);
        d.binary = copy;
    }
}

/// A field of /proc/PID/status.
fn proc_status(pid: u32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn capabilities_of(pid: u32, field: &str) -> u64 {
    u64::from_str_radix(&proc_status(pid, field), 16).unwrap()
}

fn receiver(rig: &Rig, port: u16) -> UdpSocket {
    let s = rig
        .upstream
        .enter(|| UdpSocket::bind((SERVICE, port)).unwrap())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

/// Sends `n` datagrams to each port; returns how many arrived per port.
fn probe(rig: &Rig, ports: &[u16], n: usize) -> Vec<usize> {
    let receivers: Vec<_> = ports.iter().map(|p| receiver(rig, *p)).collect();
    let sender = rig
        .devices
        .enter(|| UdpSocket::bind((DEVICE, 0)).unwrap())
        .unwrap();
    for p in ports {
        for _ in 0..n {
            sender.send_to(b"probe", (SERVICE, *p)).unwrap();
        }
    }
    receivers
        .iter()
        .map(|r| {
            let mut n = 0;
            while r.recv(&mut [0u8; 64]).is_ok() {
                n += 1;
            }
            n
        })
        .collect()
}

/// One NTPv4 client request from the device; whether it was answered.
fn ntp_answered(rig: &Rig) -> bool {
    let s = rig
        .devices
        .enter(|| UdpSocket::bind((DEVICE, 0)).unwrap())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut request = [0u8; 48];
    request[0] = 0x23; // LI 0, version 4, mode 3 (client)
    s.send_to(&request, (NTP, 123)).unwrap();
    s.recv(&mut [0u8; 128]).is_ok_and(|n| n == 48)
}

fn rig(tag: &str) -> Rig {
    let rig = Rig::create(&format!("tg-{tag}-{}", std::process::id())).unwrap();
    rig.add_device(DEVICE).unwrap();
    rig.add_service(SERVICE).unwrap();
    rig.gateway
        .ip(&["addr", "add", &format!("{NTP}/32"), "dev", "lo"])
        .unwrap();
    rig
}

#[test]
fn runs_as_the_tollgate_user_with_only_the_units_capabilities() {
    testkit::require_root();
    // SAFETY: umask has no preconditions; files the test writes later
    // (policy edits) must be readable by the tollgate user.
    unsafe { libc::umask(0o022) };
    assert_eq!(
        unit_capabilities(),
        CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        "the test gives what the unit gives"
    );
    let user = tollgate_user();
    let rig = rig("lp");
    let mut daemon = Daemon::prepare(
        &rig.gateway,
        "lp",
        &[RIG_DEVICE_IFACE],
        &ntp_config(),
        &[("meters.yaml", &testkit::policy_allowing(7000))],
    );
    unprivileged(&mut daemon, &user);
    let prefix = prefix(&rig.gateway, &CAPABILITIES);
    daemon.spawn_under(&prefix);

    // Who it runs as, and with what.
    let pid = daemon.pid();
    let ids = |field| {
        proc_status(pid, field)
            .split_whitespace()
            .map(|id| id.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("Uid"), [user.uid; 4], "real, effective, saved, fs uid");
    assert_eq!(ids("Gid"), [user.gid; 4], "real, effective, saved, fs gid");
    assert!(!ids("Groups").contains(&0), "no root group");
    for field in ["CapEff", "CapPrm", "CapAmb", "CapBnd"] {
        assert_eq!(
            capabilities_of(pid, field),
            CAPABILITY_MASK,
            "{field}: CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_NET_BIND_SERVICE, nothing else"
        );
    }
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");

    // It filters, serves NTP, status and metrics.
    assert_eq!(probe(&rig, &[7000, 7001], 5), [5, 0]);
    assert!(ntp_answered(&rig), "NTP on port 123 answers");
    let status = daemon.status();
    assert_eq!(status.pid, pid);
    assert_eq!(status.policy.generation, 1);
    assert_eq!(status.interfaces.len(), 1);
    assert_eq!(status.interfaces[0].state, "attached");
    let cli = testkit::tollgate(&[
        "status",
        "--socket",
        daemon.control_socket.to_str().unwrap(),
    ]);
    assert_eq!(cli.status, 0, "tollgate status: {}", cli.stderr);
    assert!(cli.stdout.contains("devices0: attached"), "{}", cli.stdout);
    let (code, body) = rig.gateway.http_get("127.0.0.1:9187", "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("tollgate_policy_generation 1"), "{body}");

    // Well within the unit's TasksMax=64 and LimitNOFILE=4096.
    let threads: usize = proc_status(pid, "Threads").parse().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    eprintln!("{threads} threads, {fds} open files");
    assert!(threads <= 32, "{threads} threads");
    assert!(fds <= 512, "{fds} open files");

    // What it pinned and created is its own.
    let pin_dir = daemon.pins.0.join("tollgate");
    let pins: Vec<_> = std::fs::read_dir(&pin_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(pins.len() > 10, "pins in {}: {pins:?}", pin_dir.display());
    for path in pins.iter().chain([&daemon.control_socket]) {
        let meta = std::fs::symlink_metadata(path).unwrap();
        assert_eq!(meta.uid(), user.uid, "{} is the user's", path.display());
    }

    // A policy edit is followed (the directory watch works as the user).
    daemon.write_policy("meters.yaml", &testkit::policy_allowing(7001));
    daemon.wait_status(Duration::from_secs(10), |s| s.policy.generation == 2);
    assert_eq!(probe(&rig, &[7000, 7001], 5), [0, 5]);

    // A restart adopts the pins and keeps the running link: it can read
    // back what it pinned without CAP_SYS_ADMIN.
    assert!(daemon.stop().success(), "{}", daemon.logs());
    daemon.spawn_under(&prefix);
    let status = daemon.status();
    assert_eq!(status.dataplane_start, "adopted", "{status:#?}");
    assert_eq!(
        status.interfaces[0].adoption.as_deref(),
        Some("kept"),
        "{status:#?}"
    );
    assert_eq!(probe(&rig, &[7000, 7001], 5), [0, 5]);

    // `on-exit: detach` removes every pin and stops filtering; the
    // directory stays (the user may not remove it), and that is no error.
    std::fs::write(
        &daemon.config,
        std::fs::read_to_string(&daemon.config).unwrap() + "on-exit: detach\n",
    )
    .unwrap();
    assert!(daemon.stop().success(), "{}", daemon.logs());
    daemon.spawn_under(&prefix);
    assert!(daemon.stop().success(), "{}", daemon.logs());
    assert!(pin_dir.is_dir());
    assert_eq!(
        std::fs::read_dir(&pin_dir).unwrap().count(),
        0,
        "all unpinned"
    );
    let after = testkit::once_detached(Duration::from_secs(3), vec![5, 5], || {
        probe(&rig, &[7000, 7001], 5)
    });
    assert_eq!(after, [5, 5], "filtering stopped");
}

/// Runs the daemon until it exits (at most `timeout`); returns whether it
/// succeeded and what it logged.
fn run_to_exit(d: &Daemon, prefix: &[String], timeout: Duration) -> (bool, String) {
    let log = std::fs::File::create(&d.log).unwrap();
    let mut child = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(&d.binary)
        .arg("run")
        .arg("--config")
        .arg(&d.config)
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.success(), d.logs());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {timeout:?}:\n{}", d.logs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn without_any_one_of_the_capabilities_it_does_not_start() {
    testkit::require_root();
    // SAFETY: as above.
    unsafe { libc::umask(0o022) };
    let user = tollgate_user();
    let rig = rig("lpcap");
    // What the daemon reports without each; the unit's comments quote it.
    let expected: [(&str, &[&str]); 4] = [
        ("bpf", &["failed to create map", "Operation not permitted"]),
        (
            "net_admin",
            &[
                "verify tollgate_xdp",
                "BPF_PROG_LOAD",
                "Operation not permitted",
            ],
        ),
        ("perfmon", &["verify tollgate_xdp", "Permission denied"]),
        (
            "net_bind_service",
            &["cannot bind 100.127.0.123:123: Permission denied"],
        ),
    ];
    for (missing, messages) in expected {
        let others: Vec<&str> = CAPABILITIES
            .iter()
            .copied()
            .filter(|c| *c != missing)
            .collect();
        assert_eq!(others.len(), 3);
        let mut daemon = Daemon::prepare(
            &rig.gateway,
            &format!("lpcap-{missing}"),
            &[RIG_DEVICE_IFACE],
            &ntp_config(),
            &[("meters.yaml", &testkit::policy_allowing(7000))],
        );
        unprivileged(&mut daemon, &user);
        let (success, logs) = run_to_exit(
            &daemon,
            &prefix(&rig.gateway, &others),
            Duration::from_secs(60),
        );
        assert!(!success, "started without CAP_{missing}:\n{logs}");
        for m in messages {
            assert!(
                logs.contains(m),
                "without CAP_{missing} the log says {m:?}:\n{logs}"
            );
        }
    }
}
