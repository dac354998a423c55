//! The real daemon under a stand-in for systemd: `STATUS=` and watchdog
//! pings on `NOTIFY_SOCKET`, and native journald logging with structured
//! deny-event fields, caught on a datagram socket mounted (in a private
//! mount namespace) where journald's would be.

use std::{
    collections::BTreeMap,
    net::UdpSocket,
    os::unix::{fs::MetadataExt as _, net::UnixDatagram},
    time::{Duration, Instant},
};

use testkit::daemon_process::Daemon;
use tollgate::netns::{RIG_DEVICE_IFACE, Rig};

const SERVICE: &str = "203.0.113.40";
const METER: &str = "10.64.0.10";

const POLICY: &str = "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n    rules:\n      \
                      - allow: {to: 203.0.113.0/24, proto: udp, ports: [7000], id: broker}\n";

fn rig(tag: &str) -> Rig {
    let rig = Rig::create(&format!("tg-{tag}-{}", std::process::id())).unwrap();
    rig.add_device(METER).unwrap();
    rig.add_service(SERVICE).unwrap();
    rig
}

#[test]
fn status_lines_and_watchdog_pings_reach_the_notify_socket() {
    testkit::require_root();
    let rig = rig("sdnotify");
    let mut daemon = Daemon::prepare(
        &rig.gateway,
        "sdnotify",
        &[RIG_DEVICE_IFACE],
        "",
        &[("meters.yaml", POLICY)],
    );
    // 200 ms: a ping every 100 ms.
    daemon.env = vec![("WATCHDOG_USEC".into(), "200000".into())];
    daemon.spawn();
    let messages = daemon.notifications(Duration::from_millis(1100));
    let pings = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        (5..=15).contains(&pings),
        "{pings} WATCHDOG=1 in 1.1 s at a 100 ms period: {messages:?}"
    );
    let status = |messages: &[String]| {
        messages
            .iter()
            .rev()
            .find_map(|m| m.strip_prefix("STATUS=").map(str::to_string))
            .unwrap_or_else(|| panic!("no STATUS= in {messages:?}"))
    };
    let first = status(&messages);
    assert!(
        first.starts_with("generation 1 (commit none), attached: ")
            && first.contains(&format!("{RIG_DEVICE_IFACE} xdp-")),
        "{first}"
    );

    // A reload updates it.
    daemon.write_policy(
        "meters.yaml",
        &format!("{POLICY}      - deny: {{to: 198.51.100.0/24, id: docs}}\n"),
    );
    daemon.wait_status(Duration::from_secs(5), |s| s.policy.generation == 2);
    let messages = daemon.notifications(Duration::from_millis(300));
    let second = status(&messages);
    assert!(
        second.starts_with("generation 2 (commit none), attached: "),
        "{second}"
    );

    // A WATCHDOG_PID of another process: no pings.
    assert!(daemon.stop().success());
    daemon.env = vec![
        ("WATCHDOG_USEC".into(), "200000".into()),
        ("WATCHDOG_PID".into(), "1".into()),
    ];
    daemon.spawn();
    let messages = daemon.notifications(Duration::from_millis(600));
    assert!(
        !messages.iter().any(|m| m == "WATCHDOG=1"),
        "pinged for another pid: {messages:?}"
    );
}

/// One journal export datagram: `KEY=value` lines, or `KEY\n`, a 64-bit
/// little-endian length and the value (for values that may hold newlines).
fn journal_fields(datagram: &[u8]) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = datagram;
    while let Some(end) = rest.iter().position(|b| *b == b'\n') {
        let line = &rest[..end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            rest = &rest[end + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(rest[end + 1..end + 9].try_into().unwrap()) as usize;
            let value = &rest[end + 9..end + 9 + len];
            fields.insert(name, String::from_utf8_lossy(value).into_owned());
            rest = &rest[(end + 10 + len).min(rest.len())..];
        }
    }
    fields
}

/// The deny event of the meter's datagram. Not just any deny event: the
/// device namespace's own IPv6 traffic after its link came up (multicast
/// listener reports from the link-local address, sent at a random delay)
/// is denied too, as from an unknown device, and may come first.
fn is_the_meters_deny(entry: &BTreeMap<String, String>) -> bool {
    entry.contains_key("TOLLGATE_VERDICT")
        && entry.get("TOLLGATE_SRC").map(String::as_str) == Some(METER)
}

#[test]
fn under_systemd_logs_go_to_journald_with_priorities_and_fields() {
    testkit::require_root();
    let rig = rig("journal");
    let _listener = rig
        .upstream
        .enter(|| UdpSocket::bind((SERVICE, 7001)).unwrap())
        .unwrap();
    let mut daemon = Daemon::prepare(
        &rig.gateway,
        "journal",
        &[RIG_DEVICE_IFACE],
        "",
        &[("meters.yaml", POLICY)],
    );
    let socket_path = daemon.root.join("journal.sock");
    let journal = UnixDatagram::bind(&socket_path).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // In a private mount namespace, our socket where journald's is; the
    // daemon then enters the rig's network namespace itself.
    let script = format!(
        "set -e; mount -t tmpfs tollgate-test /run/systemd; mkdir /run/systemd/journal; \
         touch /run/systemd/journal/socket; mount --bind {} /run/systemd/journal/socket; \
         exec \"$@\" --netns {}",
        socket_path.display(),
        rig.gateway.name()
    );
    // systemd names the stream it connected stderr to; here, the log file
    // the harness gives the daemon as stderr.
    std::fs::write(&daemon.log, "").unwrap();
    let log = std::fs::metadata(&daemon.log).unwrap();
    daemon.env = vec![(
        "JOURNAL_STREAM".into(),
        format!("{}:{}", log.dev(), log.ino()),
    )];
    let prefix: Vec<String> = vec![
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        script,
        "sh".into(),
    ];
    daemon.spawn_under(&prefix);

    // A denied datagram: the meters' default.
    let s = rig
        .devices
        .enter(|| UdpSocket::bind((METER, 0)).unwrap())
        .unwrap();
    s.send_to(b"x", (SERVICE, 7001)).unwrap();

    let mut entries = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        if let Ok(n) = journal.recv(&mut buf) {
            entries.push(journal_fields(&buf[..n]));
            // The deny may be logged before the `ready` line (READY=1 goes
            // out first): read on until both are in.
            let ready = entries
                .iter()
                .any(|e| e.get("MESSAGE").map(String::as_str) == Some("ready"));
            if ready && entries.iter().any(is_the_meters_deny) {
                break;
            }
        }
    }
    let ready = entries
        .iter()
        .find(|e| e.get("MESSAGE").map(String::as_str) == Some("ready"))
        .unwrap_or_else(|| panic!("no `ready` entry in {entries:#?}"));
    assert_eq!(ready["PRIORITY"], "6", "info is journald's informational");
    assert_eq!(ready["SYSLOG_IDENTIFIER"], "tollgate");
    let deny = entries
        .iter()
        .find(|e| is_the_meters_deny(e))
        .unwrap_or_else(|| panic!("no deny event from {METER} in {entries:#?}"));
    assert_eq!(deny["MESSAGE"], "deny", "{deny:#?}");
    assert_eq!(deny["TOLLGATE_VERDICT"], "deny");
    assert_eq!(deny["TOLLGATE_GROUP"], "meters");
    assert_eq!(deny["TOLLGATE_RULE"], "default");
    assert_eq!(deny["TOLLGATE_SRC"], METER);
    assert_eq!(deny["TOLLGATE_DST"], SERVICE);
    assert_eq!(deny["TOLLGATE_PROTO"], "udp");
    assert_eq!(deny["TOLLGATE_PORT"], "7001");
    // journald stamps entries itself: no timestamp in the message, and
    // nothing on stderr.
    assert!(
        !daemon.logs().contains("ready"),
        "logged to stderr as well:\n{}",
        daemon.logs()
    );
    // A warning is priority 4: a bad policy makes one reload fail (error, 3).
    daemon.write_policy("meters.yaml", "groups: [\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut error = None;
    while Instant::now() < deadline && error.is_none() {
        if let Ok(n) = journal.recv(&mut buf) {
            let fields = journal_fields(&buf[..n]);
            if fields.get("PRIORITY").map(String::as_str) == Some("3") {
                error = Some(fields);
            }
        }
    }
    let error = error.expect("the failed reload logs at priority 3");
    assert!(error["MESSAGE"].contains("policy reload"), "{error:#?}");

    // A JOURNAL_STREAM that is not our stderr (inherited, stderr redirected
    // elsewhere): text on stderr, nothing to the journal.
    daemon.write_policy("meters.yaml", POLICY);
    assert!(daemon.stop().success());
    while journal.recv(&mut buf).is_ok() {}
    daemon.env = vec![("JOURNAL_STREAM".into(), "1:1".into())];
    daemon.spawn_under(&prefix);
    // READY=1 goes out just before the `ready` line.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !daemon.logs().contains("tollgate::daemon: ready") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        daemon.logs().contains(" INFO tollgate::daemon: ready"),
        "{}",
        daemon.logs()
    );
    assert!(
        journal.recv(&mut buf).is_err(),
        "logged to the journal although stderr is not its stream"
    );
}
