//! Start and restart times of the dataplane at fleet scale (issue 14,
//! deliverable 5), for BENCHMARKS.md: a cold open and install of the
//! fleet policy (`explicit_fleet`, 100,000 rules in 100 group files,
//! parsed and validated as a start loads them), a restart that adopts the pinned maps and installs the
//! same policy, and the install after it (into the other slot, which the
//! cold start left empty). Prints times, map writes and the load average;
//! asserts nothing. Run as root, optimised:
//! `FLEET_DEVICES=1000000 cargo test --release -p tollgate-tests --test
//! fleet_start -- --ignored --nocapture` (default 100,000 devices).
use std::time::Instant;

use testkit::{
    PinDir,
    bench::Pool,
    explicit_fleet::{self, Shape},
};
use tollgate::{
    compile::compile,
    config::Limits,
    datapath::{Dataplane, Options},
    policy::{self, Environment},
};

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
#[ignore = "a measurement: run it by hand, optimised"]
fn start_and_restart_times() {
    testkit::require_root();
    let devices = std::env::var("FLEET_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let shape = Shape {
        groups: 100,
        rules_per_group: 1000,
        devices,
    };
    let prefixes = Pool::load().unwrap().take(shape.rules());
    let sources = explicit_fleet::sources(&shape, &prefixes);
    let t = Instant::now();
    let loaded = policy::from_sources(&sources, &Environment::default()).unwrap();
    eprintln!("load (parse, validate) {:?}", t.elapsed());
    let t = Instant::now();
    let tables = compile(&loaded.policy, &Limits::default()).unwrap();
    eprintln!("compile {:?}", t.elapsed());
    let pins = PinDir::new("fleet-start");
    let options = Options {
        pin_dir: Some(pins.0.clone()),
        ..Options::default()
    };
    eprintln!("load average before: {}", loadavg());
    let t = Instant::now();
    let mut dp = Dataplane::open(&options).unwrap();
    let open = t.elapsed();
    let r = dp.install(&tables).unwrap();
    eprintln!(
        "COLD open {open:?}; install total {:?} (to flip {:?}), writes {:?}",
        t.elapsed() - open,
        r.total,
        r.writes
    );
    drop(dp);
    let t = Instant::now();
    let mut dp = Dataplane::open(&options).unwrap();
    let open = t.elapsed();
    let r = dp.install(&tables).unwrap();
    eprintln!(
        "RESTART open {open:?}; install total {:?} (to flip {:?}), writes {:?}, slot {}",
        t.elapsed() - open,
        r.total,
        r.writes,
        r.slot
    );
    let t = Instant::now();
    let r = dp.install(&tables).unwrap();
    eprintln!(
        "NEXT install {:?}, writes {:?}, slot {}",
        t.elapsed(),
        r.writes,
        r.slot
    );
    eprintln!("load average after: {}", loadavg());
}
