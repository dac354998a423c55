//! Filtering survives the controller: pinned links keep the program attached
//! with the last policy when the process is gone; a restart adopts the maps
//! (policy and counters) and keeps the link; an upgrade to an incompatible
//! layout swaps the program on the existing link; detaching removes it all.

use std::{net::UdpSocket, time::Duration};

use aya::maps::{Array, Map, MapData};
use testkit::{PinDir, tables::Tables};
use tollgate::{
    config::{AttachPolicy, Limits},
    datapath::{Adoption, Dataplane, Options, Start},
    netns::{RIG_DEVICE_IFACE, Rig},
    tables::{CompiledPolicy, CounterOwner, Decider},
};
use tollgate_common::{MAP_COUNTERS, MAP_SETTINGS, Settings};

const SERVICE: &str = "203.0.113.20";

/// The device may reach UDP/7000 on the service, nothing else.
fn policy() -> CompiledPolicy {
    let mut t = Tables::new(true);
    let g = t.group("meters", true, &["10.64.0.0/16"]);
    t.rule(
        g,
        "203.0.113.0/24",
        Some(17),
        Some((7000, 7000)),
        false,
        "allow-7000",
    );
    t.build()
}

/// Sends `n` datagrams to each port and returns how many arrived per port.
fn probe(rig: &Rig, ports: &[u16], n: usize) -> Vec<usize> {
    let receivers: Vec<UdpSocket> = ports
        .iter()
        .map(|p| {
            let s = rig
                .upstream
                .enter(|| UdpSocket::bind((SERVICE, *p)).unwrap())
                .unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        })
        .collect();
    rig.devices
        .enter(|| {
            let s = UdpSocket::bind("10.64.0.10:0").unwrap();
            for p in ports {
                for _ in 0..n {
                    s.send_to(b"probe", (SERVICE, *p)).unwrap();
                }
            }
        })
        .unwrap();
    receivers
        .iter()
        .map(|r| {
            let mut buf = [0u8; 16];
            let mut got = 0;
            while r.recv(&mut buf).is_ok() {
                got += 1;
            }
            got
        })
        .collect()
}

/// Writes `encoding` into the pinned `TG_SETTINGS`, as a build that encoded
/// the tables otherwise would have left it.
fn set_pinned_encoding(pins: &PinDir, encoding: u32) {
    let map = MapData::from_pin(pins.0.join(MAP_SETTINGS)).unwrap();
    let mut settings: Array<MapData, Settings> = Array::try_from(Map::Array(map)).unwrap();
    let mut value = settings.get(&0, 0).unwrap();
    value.encoding = encoding;
    settings.set(0, value, 0).unwrap();
}

fn allowed_count(dp: &Dataplane) -> u64 {
    dp.counter_of(&CounterOwner::Decision {
        group: "meters".into(),
        decider: Decider::Rule("allow-7000".into()),
    })
    .unwrap()
    .map_or(0, |c| c.packets)
}

#[test]
fn filtering_outlives_the_controller_and_restarts_adopt_it() {
    testkit::require_root();
    let rig = Rig::create(&format!("tg-pins-{}", std::process::id())).unwrap();
    rig.add_device("10.64.0.10").unwrap();
    rig.add_service(SERVICE).unwrap();
    let pins = PinDir::new("pins");
    let options = Options {
        pin_dir: Some(pins.0.clone()),
        ..Options::default()
    };
    let attach = |dp: &mut Dataplane| {
        rig.gateway
            .enter(|| dp.attach_by_name(RIG_DEVICE_IFACE, AttachPolicy::Auto))
            .unwrap()
            .unwrap()
    };

    // First run: fresh maps, fresh link.
    let mut dp = Dataplane::open(&options).unwrap();
    assert_eq!(dp.start(), &Start::Fresh);
    dp.install(&policy()).unwrap();
    assert_eq!(attach(&mut dp).adoption, Adoption::Fresh);
    assert_eq!(probe(&rig, &[7000, 7001], 5), [5, 0]);
    assert_eq!(allowed_count(&dp), 5);

    // The controller goes away (as after kill -9): filtering goes on.
    drop(dp);
    assert_eq!(
        probe(&rig, &[7000, 7001], 5),
        [5, 0],
        "no controller running"
    );

    // Restart: the maps, the policy in force and the counters are adopted,
    // the link is kept as it is.
    let mut dp = Dataplane::open(&options).unwrap();
    assert_eq!(dp.start(), &Start::Adopted);
    assert_eq!(allowed_count(&dp), 10, "counters survive the restart");
    dp.install(&policy()).unwrap();
    assert_eq!(attach(&mut dp).adoption, Adoption::Kept);
    assert_eq!(probe(&rig, &[7000, 7001], 5), [5, 0]);
    assert_eq!(allowed_count(&dp), 15);
    drop(dp);

    // An upgrade: new maps (counting from zero), the old program filtering
    // until the new one replaces it on the existing link. Returns why the
    // pins did not fit.
    let upgrade = |options: &Options| -> (Dataplane, String) {
        let mut dp = Dataplane::open(options).unwrap();
        let reason = match dp.start() {
            Start::Upgraded { reason } => reason.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            probe(&rig, &[7000, 7001], 5),
            [5, 0],
            "old program still filters"
        );
        dp.install(&policy()).unwrap();
        assert_eq!(attach(&mut dp).adoption, Adoption::Replaced);
        assert_eq!(probe(&rig, &[7000, 7001], 5), [5, 0]);
        assert_eq!(allowed_count(&dp), 5, "the new maps count from zero");
        (dp, reason)
    };

    // Pins of a build that encoded the tables otherwise, in maps of the
    // same shapes: only TG_SETTINGS' encoding tells.
    set_pinned_encoding(&pins, 0);
    let (dp, reason) = upgrade(&options);
    assert!(reason.contains("encoding 0"), "{reason}");
    drop(dp);

    // A build whose maps differ (here: other limits).
    let (mut dp, reason) = upgrade(&Options {
        limits: Limits {
            counters: Limits::default().counters / 2,
            ..Limits::default()
        },
        ..options.clone()
    });
    assert!(reason.contains(MAP_COUNTERS), "{reason}");

    // Detach: everything goes, traffic is no longer filtered.
    dp.detach_all().unwrap();
    assert!(!pins.0.exists());
    let after = testkit::once_detached(Duration::from_secs(3), vec![5, 5], || {
        probe(&rig, &[7000, 7001], 5)
    });
    assert_eq!(after, [5, 5]);
}
