//! What the benchmarks share: the machine facts they print, a
//! deterministic pool of realistic destination prefixes built from AWS's
//! published ip-ranges.json, and the release `tollgate` binary the benches
//! that run the daemon measure.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail, ensure};
use ipnet::IpNet;
use tollgate::policy::rule_id::fnv1a32;

/// Kernel, CPU, cores, date and load: printed above every table, because
/// numbers from another machine or another load do not compare.
pub fn machine_facts() -> Vec<(&'static str, String)> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".into(), |(_, m)| m.trim().to_string());
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    vec![
        (
            "kernel",
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
        ("cpu", cpu),
        (
            "nproc",
            std::thread::available_parallelism().map_or("?".into(), |n| n.to_string()),
        ),
        ("date", date),
        ("load", load_average()),
    ]
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn print_machine_facts() {
    for (key, value) in machine_facts() {
        println!("{key:>7}: {value}");
    }
}

/// AWS's ip-ranges.json as vendored for the tests (`tests/data`).
fn aws_ranges_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/aws-ip-ranges.json.gz")
}

/// Realistic destination prefixes, in a fixed order: first every distinct
/// prefix of AWS's ip-ranges.json (IPv4 and IPv6, about 9,000), shuffled by
/// a hash of their text so that any first N are a spread sample of services
/// and both families; then more-specific prefixes derived from them: each
/// AWS prefix of length L split into its 16 subnets of length L+4 (then
/// 256 of length L+8), taken round-robin over the AWS prefixes, skipping
/// any already in the pool.
pub struct Pool {
    aws: Vec<IpNet>,
}

impl Pool {
    pub fn load() -> Result<Pool> {
        use std::io::Read as _;
        let path = aws_ranges_path();
        let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .with_context(|| format!("decompress {}", path.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let mut distinct = HashSet::new();
        for (array, key) in [("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")] {
            let entries = json[array]
                .as_array()
                .with_context(|| format!("{}: no array {array}", path.display()))?;
            for entry in entries {
                let text = entry[key]
                    .as_str()
                    .with_context(|| format!("{}: {array} entry without {key}", path.display()))?;
                let net: IpNet = text
                    .parse()
                    .with_context(|| format!("{}: {text}", path.display()))?;
                distinct.insert(net.trunc());
            }
        }
        if distinct.len() < 1000 {
            bail!(
                "{} has only {} prefixes; is it AWS's ip-ranges.json?",
                path.display(),
                distinct.len()
            );
        }
        let mut aws: Vec<IpNet> = distinct.into_iter().collect();
        aws.sort_by_key(|net| (fnv1a32(net.to_string().as_bytes()), *net));
        Ok(Pool { aws })
    }

    /// How many distinct prefixes the AWS list has.
    pub fn aws_len(&self) -> usize {
        self.aws.len()
    }

    /// The first `n` prefixes of the pool.
    pub fn take(&self, n: usize) -> Vec<IpNet> {
        self.range(0, n)
    }

    /// Pool entries `start..start + n`.
    pub fn range(&self, start: usize, n: usize) -> Vec<IpNet> {
        let end = start + n;
        let mut out: Vec<IpNet> = self.aws.iter().copied().take(end).collect();
        let mut seen: HashSet<IpNet> = out.iter().copied().collect();
        'rounds: for extra_bits in [4u8, 8, 12] {
            for index in 0..1u32 << extra_bits {
                for parent in &self.aws {
                    if out.len() >= end {
                        break 'rounds;
                    }
                    if let Some(child) = subnet(parent, extra_bits, index)
                        && seen.insert(child)
                    {
                        out.push(child);
                    }
                }
            }
        }
        assert!(out.len() >= end, "the pool holds fewer than {end} prefixes");
        out.split_off(start)
    }
}

/// Subnet number `index` of `parent` that is `extra_bits` longer, if the
/// family has room for it.
fn subnet(parent: &IpNet, extra_bits: u8, index: u32) -> Option<IpNet> {
    let len = parent.prefix_len() + extra_bits;
    if len > parent.max_prefix_len() {
        return None;
    }
    let shift = u32::from(parent.max_prefix_len() - len);
    let addr = match parent.network() {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) | (index << shift))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) | (u128::from(index) << shift))),
    };
    IpNet::new(addr, len).ok()
}

/// The release `tollgate` binary, built now if needed (a no-op when it is
/// current): the benches measure the optimised daemon. `TOLLGATE_BIN`
/// overrides it; otherwise it is set to the binary built, for the test
/// kit's daemon (`daemon_process`), so call this before the bench starts
/// any thread.
pub fn release_tollgate_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TOLLGATE_BIN") {
        return Ok(path.into());
    }
    let built = build_tollgate()?;
    // SAFETY: the caller has started no thread (see above).
    unsafe { std::env::set_var("TOLLGATE_BIN", &built) };
    Ok(built)
}

fn build_tollgate() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The same features as this crate's own build of the library, so the
    // two share one build (tests/Cargo.toml).
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "tollgate",
            "--features",
            "fault-injection",
            "--bin",
            "tollgate",
            "--message-format",
            "json-render-diagnostics",
        ])
        .current_dir(crate::repo_root())
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo build")?;
    ensure!(
        out.status.success(),
        "cargo build of the tollgate binary failed"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .find(|p| p.ends_with("tollgate"))
        .context("cargo built no tollgate binary")
}
