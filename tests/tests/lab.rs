//! `tollgate lab --duration 20`, as the README's run command ends: its
//! output shows a meter resolving its AWS IoT endpoint through the gateway's
//! DNS forwarder and connecting to what it was answered, allowed and denied
//! flows, an NTP answer per group, an edit
//! refused by the policy's `expect:` cases and a live reload with the
//! `tollgate diff` of its edit, every flow as
//! `explain` predicted.

#[test]
fn the_lab_shows_the_appliance_working_end_to_end() {
    testkit::require_root();
    let run = testkit::tollgate(&["lab", "--duration", "20"]);
    let out = &run.stdout;
    eprintln!("{out}\n{}", run.stderr);
    assert_eq!(run.status, 0, "the lab failed");
    for needle in [
        "meter resolves its AWS IoT endpoint    10.64.0.10 -> 10.64.0.1       udp/53    explain: allow      (dns)          traffic: answered  ok",
        "a1b2c3d4e5f6g7-ats.iot.ap-northeast-1.amazonaws.com is 13.112.10.10, 2406:da14::10",
        "meter publishes to AWS IoT (MQTT)     10.64.0.10 -> 13.112.10.10    tcp/8883  explain: allow      (aws-iot)      traffic: connected ok",
        "meter calls AWS over IPv6            fd00:64::10 -> 2406:da14::10   tcp/443   explain: allow      (aws-iot)      traffic: connected ok",
        "explain: deny       (encrypted-dns) traffic: blocked   ok",
        "explain: deny       (lateral)      traffic: blocked   ok",
        "explain: audit-deny (group-default) traffic: connected ok",
        "event: deny       meters 10.64.0.11 -> 10.65.0.20 tcp/554 by meters/lateral",
        "meters     ntpdig: stratum 10, leap \"no-leap\"",
        "cameras    ntpdig: stratum 10, leap \"no-leap\"",
        "quarantine ntpdig: stratum 10, leap \"no-leap\"",
        "raw NTP query from 10.99.0.99: no answer (in no group)",
        "expect: cases passed on the kernel",
        "expect[2]: 10.64.0.10 → 10.65.0.20 tcp/22: expected deny (rule lateral), got allow (rule lateral, group meters) on the model",
        "refused by the expect: cases: the last good policy stays in force",
        "daemon: policy generation 2 in force",
        "tollgate diff of the edit:",
        "meters: 198.51.100.80/32 tcp/443 deny → allow (rule new-backend)",
        "explain: allow      (new-backend)  traffic: connected ok",
        "Done: every flow went as explain predicted.",
    ] {
        assert!(out.contains(needle), "missing {needle:?}");
    }
    assert!(!out.contains("MISMATCH"));
    assert!(
        !std::path::Path::new("/run/netns/tollgate-lab-gw").exists(),
        "torn down"
    );
}
