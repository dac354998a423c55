use std::{net::IpAddr, time::Duration};

use super::*;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(Path::new("tollgate.yaml"), text).map_err(|d| d.to_string())
}

#[test]
fn the_documented_example_parses_with_defaults() {
    let c = parse(
        "interfaces: [eth1]\nattach: auto\npolicy-dir: /etc/tollgate/policies\n\
         metrics:\n  listen: 127.0.0.1:9187\nntp:\n  listen: [\"100.127.0.123:123\"]\n\
         deny-events:\n  rate: 100\non-exit: keep\n",
    )
    .unwrap();
    assert_eq!(c.interfaces, ["eth1"]);
    assert_eq!(c.attach, AttachPolicy::Auto);
    assert_eq!(c.ntp.addresses(), [IpAddr::from([100, 127, 0, 123])]);
    assert_eq!(
        c.ntp.reference,
        NtpReference::Upstream {
            servers: vec![DEFAULT_UPSTREAM.into()]
        }
    );
    assert_eq!(c.ntp.holdover, Duration::from_secs(600));
    assert_eq!(c.on_exit, OnExit::Keep);
    assert_eq!(c.pin_dir, Path::new("/sys/fs/bpf/tollgate"));
}

#[test]
fn unknown_keys_are_errors_with_their_position() {
    let e =
        parse("interfaces: [eth1]\npolicy-dir: /p\nmetrics:\n  lisen: 1.2.3.4:5\n").unwrap_err();
    assert!(
        e.starts_with("tollgate.yaml:4:3: metrics: unknown field `lisen`"),
        "{e}"
    );
}

#[test]
fn local_reference_needs_a_valid_stratum() {
    let e = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  reference: local\n").unwrap_err();
    assert!(
        e.contains("tollgate.yaml:4:3: ntp: `reference: local` needs"),
        "{e}"
    );
    let e = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  reference: local\n  stratum: 16\n")
        .unwrap_err();
    assert!(e.contains("stratum: 16 is not a valid stratum"), "{e}");
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  reference: local\n  stratum: 8\n")
        .unwrap();
    assert_eq!(c.ntp.reference, NtpReference::Local { stratum: 8 });
}

#[test]
fn wildcard_ntp_listen_is_rejected() {
    let e = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  listen: [\"0.0.0.0:123\"]\n")
        .unwrap_err();
    assert!(e.contains("is a wildcard"), "{e}");
}

#[test]
fn durations_are_human_readable() {
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  holdover: 90s\n").unwrap();
    assert_eq!(c.ntp.holdover, Duration::from_secs(90));
}

#[test]
fn poll_interval_defaults_to_16s_and_is_bounded() {
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\n").unwrap();
    assert_eq!(c.ntp.poll_interval, Duration::from_secs(16));
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  poll-interval: 2s\n").unwrap();
    assert_eq!(c.ntp.poll_interval, Duration::from_secs(2));
    let e = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  poll-interval: 64s\n").unwrap_err();
    assert!(
        e.contains("ntp: poll-interval: 1m 4s is out of range"),
        "{e}"
    );
    let e = parse(
        "interfaces: [eth1]\npolicy-dir: /p\nntp:\n  reference: local\n  stratum: 8\n  \
         poll-interval: 4s\n",
    )
    .unwrap_err();
    assert!(e.contains("poll-interval is only valid with"), "{e}");
}

#[test]
fn ntp_fast_path_is_on_by_default_and_takes_on_or_off() {
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\n").unwrap();
    assert!(c.ntp.fast_path);
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  fast-path: off\n").unwrap();
    assert!(!c.ntp.fast_path);
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  fast-path: on\n").unwrap();
    assert!(c.ntp.fast_path);
    let e = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  fast-path: maybe\n").unwrap_err();
    assert!(e.contains("fast-path"), "{e}");
}

#[test]
fn ntp_workers_default_to_one() {
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\n").unwrap();
    assert_eq!(c.ntp.workers, 1);
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  workers: 4\n").unwrap();
    assert_eq!(c.ntp.workers, 4);
    let e = parse("interfaces: [eth1]\npolicy-dir: /p\nntp:\n  workers: 0\n").unwrap_err();
    assert!(
        e.contains("ntp: workers: 0 is out of range (1..=64)"),
        "{e}"
    );
}

#[test]
fn pass_ethertypes_take_numbers_or_hex_strings_and_refuse_what_tollgate_parses() {
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\n").unwrap();
    assert!(c.pass_ethertypes.is_empty());
    let c =
        parse("interfaces: [eth1]\npolicy-dir: /p\npass-ethertypes: [0x88cc, \"0x8863\", 35143]\n")
            .unwrap();
    assert_eq!(c.pass_ethertypes, [0x88cc, 0x8863, 0x8947]);
    for (bad, why) in [
        ("0x0800", "is IP"),
        ("0x86dd", "is IP"),
        ("0x0806", "is ARP"),
        ("0x8100", "is a VLAN tag"),
        ("0x05dc", "802.3 length"),
        ("0x10000", "is not an EtherType"),
        ("\"lldp\"", "is not an EtherType"),
        ("[0x88cc, 0x88cc]", "listed twice"),
    ] {
        let list = if bad.starts_with('[') {
            bad.to_string()
        } else {
            format!("[{bad}]")
        };
        let e = parse(&format!(
            "interfaces: [eth1]\npolicy-dir: /p\npass-ethertypes: {list}\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("pass-ethertypes: ") && e.contains(why),
            "{bad}: {e}"
        );
        assert!(e.starts_with("tollgate.yaml:3:"), "{bad}: {e}");
    }
}

#[test]
fn fragment_limits_default_to_the_kernel_reassembly_timeout() {
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\n").unwrap();
    assert_eq!(c.limits.fragment_lifetime, Duration::from_secs(30));
    assert_eq!(c.limits.fragments_per_source, 256);
    let c = parse(
        "interfaces: [eth1]\npolicy-dir: /p\nlimits:\n  fragment-lifetime: 2s\n  fragments-per-source: 8\n",
    )
    .unwrap();
    assert_eq!(c.limits.fragment_lifetime, Duration::from_secs(2));
    assert_eq!(c.limits.fragments_per_source, 8);
}

#[test]
fn everything_run_would_reject_is_rejected_with_its_position() {
    let base = "interfaces: [eth1]\npolicy-dir: /p\n";
    for (extra, want) in [
        (
            "metrics:\n  listen: 0.0.0.0:9187\n",
            "tollgate.yaml:4:11: metrics.listen: 0.0.0.0 listens on every address",
        ),
        (
            "metrics:\n  listen: \"[::]:9187\"\n",
            "metrics.listen: :: listens on every address",
        ),
        (
            "limits:\n  reload-timeout: 1ms\n",
            "limits.reload-timeout: 1ms is out of range",
        ),
        (
            "limits:\n  fragments: 16\n  fragments-per-source: 17\n",
            "limits: limits.fragments-per-source: 17 is more than limits.fragments",
        ),
        (
            "limits:\n  counters: 0\n",
            "limits.counters: 0 is out of range",
        ),
        (
            "limits:\n  counters: 0x100\n",
            "limits.counters: \"0x100\" is not a decimal",
        ),
        (
            "pin-dir: /tmp/pins\n",
            "pin-dir: /tmp/pins is not under /sys/fs/bpf",
        ),
        (
            "control-socket: run/x.sock\n",
            "control-socket: run/x.sock is not an absolute",
        ),
        (
            "control-socket: /etc/hostname\n",
            "exists and is not a socket",
        ),
        ("a: &x 1\nb: *x\n", "anchors and aliases"),
    ] {
        let e = parse(&format!("{base}{extra}")).unwrap_err();
        assert!(e.contains(want), "{extra}: {e}");
    }
    for (interfaces, want) in [
        ("[eth1, eth1]", "interfaces[1]: \"eth1\" is listed twice"),
        (
            "[\"a/b\"]",
            "interfaces[0]: \"a/b\" is not an interface name",
        ),
        ("[averyveryverylongname]", "is not an interface name"),
    ] {
        let e = parse(&format!("interfaces: {interfaces}\npolicy-dir: /p\n")).unwrap_err();
        assert!(e.contains(want), "{interfaces}: {e}");
    }
    let deep = format!(
        "interfaces: [eth1]\npolicy-dir: /p\nx: {}",
        "[".repeat(10_000)
    );
    assert!(parse(&deep).unwrap_err().contains("nested more than 64"));
    let c = parse(&format!(
        "{base}metrics:\n  listen: 0.0.0.0:9187\n  allow-remote: true\n"
    ))
    .unwrap();
    assert!(c.metrics.allow_remote);
}

#[test]
fn open_ntp_and_a_rate_limit_that_is_off_are_warned_about() {
    let c = parse(
        "interfaces: [eth1]\npolicy-dir: /p\nntp:\n  listen: [\"100.127.0.123:123\"]\n  \
         allow: [0.0.0.0/0]\n  rate-limit:\n    interval: -2\n",
    )
    .unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("ntp.allow covers every address"));
    assert!(w[1].contains("effectively off"));
    assert!(
        parse("interfaces: [eth1]\npolicy-dir: /p\n")
            .unwrap()
            .warnings()
            .is_empty()
    );
}

#[test]
fn the_obsolete_flow_cache_limit_still_loads_and_is_warned_about() {
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\nlimits:\n  flow-cache: 65536\n").unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("limits.flow-cache is obsolete"), "{w:?}");
}

#[test]
fn interfaces_are_required() {
    let e = parse("interfaces: []\npolicy-dir: /p\n").unwrap_err();
    assert!(e.contains("interfaces: name at least one"), "{e}");
    let e = parse("policy-dir: /p\n").unwrap_err();
    assert!(e.contains("missing field `interfaces`"), "{e}");
}

#[test]
fn the_dns_forwarder_is_off_by_default_and_checked_when_on() {
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\n").unwrap();
    assert!(c.dns.listen.is_empty());
    assert!(!c.dns.filter.filters("meters"));
    let c = parse(
        "interfaces: [eth1]\npolicy-dir: /p\ndns:\n  listen: [\"10.64.0.1:53\"]\n  \
         upstream: [\"192.0.2.53:53\"]\n  min-ttl: 30s\n  max-ttl: 10m\n  filter: [meters]\n",
    )
    .unwrap();
    assert!(c.dns.filter.filters("meters") && !c.dns.filter.filters("cameras"));
    // The TTL is clamped, then the grace (30 s by default) is added.
    assert_eq!(c.dns.lifetime(5), Duration::from_secs(60));
    assert_eq!(c.dns.lifetime(86_400), Duration::from_secs(630));
    let c = parse("interfaces: [eth1]\npolicy-dir: /p\ndns:\n  filter: true\n").unwrap();
    assert!(c.dns.filter.filters("anything"));
    for (body, why) in [
        (
            "  listen: [\"0.0.0.0:53\"]\n  upstream: [\"192.0.2.53:53\"]\n",
            "wildcard",
        ),
        ("  listen: [\"10.64.0.1:53\"]\n", "at least one resolver"),
        ("  min-ttl: 2h\n  max-ttl: 1h\n", "min-ttl <= max-ttl"),
        ("  max-ttl: 2d\n", "<= 24h"),
        ("  filter: maybe\n", "true, false or a list of group names"),
    ] {
        let e = parse(&format!("interfaces: [eth1]\npolicy-dir: /p\ndns:\n{body}")).unwrap_err();
        assert!(e.starts_with("tollgate.yaml:4:"), "{e}");
        assert!(e.contains(why), "{body}: {e}");
    }
}
