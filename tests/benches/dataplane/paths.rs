//! How many machine instructions one packet's path runs. While the kernel
//! loops one frame through a program, `perf record` samples this process
//! with the software clock; a sample lands on the instruction the CPU was
//! about to run, so every address sampled in the program's JITed code is
//! on the path. The instructions of a basic block run together, so a
//! block sampled as often as its length says ([`RARE`]) is on the path
//! whole: the path is those blocks, counted in instructions
//! (`jited::disassemble`), which a few thousand samples find where single
//! addresses would need far more.
//! Static counts (`jited::functions`) say how big an image is; this says
//! how much of it one packet runs, which is what one run on its own pays
//! for (BENCHMARKS.md, thirteenth round).
//!
//! A program's path also runs kernel code outside its image: the helpers
//! its map lookups call (a hash map's lookup is a call into the kernel's
//! hash table code; an array's is inlined into the image). Those samples
//! are counted by kernel function, beside what the floor program's loop
//! spends in the same test-run machinery, so a program whose lookups are
//! calls is not shown shorter than it is (BENCHMARKS.md, fourteenth
//! round).

use std::{
    collections::BTreeMap,
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::jited::Code;

/// How long each path is looped under `perf record`.
const LOOP: Duration = Duration::from_secs(2);

/// Samples a second asked of perf's software clock.
const FREQUENCY: &str = "20000";

/// A block with fewer than one in `RARE` of the samples per instruction
/// that the function's sampled blocks get on average is not on every
/// packet's path: a deny's event, sent once in many packets under the
/// rate limit, and the clock read once a tick run blocks that samples
/// still find (more often than their share: they run right after the
/// kernel's tick, as the sampling timer fires).
const RARE: usize = 20;

/// How long `perf record` takes to attach before the loop starts.
const PERF_START: Duration = Duration::from_millis(300);

/// One path: the instructions of the blocks sampled in each function of
/// the program, and the samples taken in it and outside it.
pub struct Path {
    pub what: String,
    pub functions: Vec<(String, usize)>,
    pub samples: usize,
    /// Samples of the loop in the kernel outside the program, by function,
    /// the most sampled first.
    pub outside: Vec<(String, usize)>,
}

/// How many of the kernel functions outside the program the table names.
const OUTSIDE_NAMED: usize = 4;

impl Path {
    /// The instructions of the path in all its functions.
    pub fn instructions(&self) -> usize {
        self.functions.iter().map(|(_, n)| n).sum()
    }
}

/// Why paths cannot be measured here, if they cannot.
pub fn unavailable() -> Option<String> {
    match Command::new("perf").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("perf --version failed: {}", out.status)),
        Err(e) => Some(format!("perf is not installed ({e})")),
    }
}

/// Loops `frame` through `run` (a test run of `repeat` frames, returning
/// its action, which must be `expect`) for [`LOOP`] under `perf record`,
/// and counts the path through `code`, the program's functions.
pub fn measure(
    what: &str,
    run: impl Fn(&[u8], u32) -> Result<(u32, u64)>,
    frame: &[u8],
    expect: u32,
    code: &[Code],
) -> Result<Path> {
    let ips = sampled(what, || {
        let started = Instant::now();
        while started.elapsed() < LOOP {
            let (action, _) = run(frame, 100_000)?;
            ensure!(
                action == expect,
                "{what}: the program returned {action}, expected {expect}"
            );
        }
        Ok(())
    })?;
    let inside = |ip: u64| {
        code.iter()
            .any(|f| ip >= f.address && ip < f.address + f.bytes as u64)
    };
    // Samples by function, by offset in it.
    let per_function: Vec<BTreeMap<u64, usize>> = code
        .iter()
        .map(|f| {
            let mut at = BTreeMap::new();
            for &(ip, _) in &ips {
                if ip >= f.address && ip < f.address + f.bytes as u64 {
                    *at.entry(ip - f.address).or_default() += 1;
                }
            }
            at
        })
        .collect();
    let samples: usize = per_function.iter().flat_map(|at| at.values()).sum();
    if samples == 0 && !code.is_empty() {
        bail!("{what}: perf sampled nothing in the program");
    }
    let mut outside: BTreeMap<&str, usize> = BTreeMap::new();
    for (ip, symbol) in &ips {
        if !inside(*ip) {
            *outside.entry(symbol.as_str()).or_default() += 1;
        }
    }
    let mut outside: Vec<(String, usize)> = outside
        .into_iter()
        .map(|(symbol, n)| (symbol.to_string(), n))
        .collect();
    outside.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let functions = code
        .iter()
        .zip(&per_function)
        .map(|(f, at)| (f.name.clone(), blocks_run(f, at)))
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok(Path {
        what: what.into(),
        functions,
        samples,
        outside,
    })
}

/// The instruction addresses perf sampled in this process while `work`
/// ran, one per sample, each with the symbol perf gives it (`[unknown]`
/// where it has none).
fn sampled(what: &str, work: impl FnOnce() -> Result<()>) -> Result<Vec<(u64, String)>> {
    // Removed when dropped, whatever fails below.
    let data = tempfile::NamedTempFile::new().context("a file for perf's samples")?;
    let mut perf = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", FREQUENCY, "-p"])
        .arg(std::process::id().to_string())
        .arg("-o")
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start perf record")?;
    std::thread::sleep(PERF_START);
    let worked = work();
    // SAFETY: kill on the child's pid; SIGINT makes perf write its data,
    // and then end by the same signal.
    unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
    let status = perf.wait().context("wait for perf record")?;
    worked?;
    ensure!(
        status.success() || status.signal() == Some(libc::SIGINT),
        "{what}: perf record exited with {status}"
    );
    let script = Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(data.path())
        .output()
        .context("run perf script")?;
    ensure!(
        script.status.success(),
        "{what}: perf script failed: {}",
        String::from_utf8_lossy(&script.stderr)
    );
    String::from_utf8_lossy(&script.stdout)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut fields = line.split_whitespace();
            let ip = fields.next().unwrap_or_default();
            let ip = u64::from_str_radix(ip, 16).with_context(|| format!("perf script: {line}"))?;
            let symbol = fields.next().unwrap_or("[unknown]");
            // A symbol is printed with its offset ("name+0x1f") by some
            // perf versions.
            let symbol = symbol.split('+').next().unwrap_or(symbol);
            Ok((ip, symbol.to_string()))
        })
        .collect()
}

/// The instructions of `code`'s basic blocks that its samples (`at` each
/// offset) show on every packet's path ([`RARE`]), or that must run after
/// such a block: the target of the unconditional jump it ends in, or the
/// block it falls into. A block starts at a function's first instruction,
/// after a jump or a return, and at a jump's target. A block too short to
/// be sampled is still found when the path must pass it; one behind a
/// conditional jump is not, so the count is a lower bound.
fn blocks_run(code: &Code, at: &BTreeMap<u64, usize>) -> usize {
    let instructions = &code.instructions;
    let index_of = |offset: u64| {
        instructions
            .binary_search_by_key(&offset, |i| i.offset)
            .ok()
    };
    let mut starts = vec![false; instructions.len()];
    for (i, instruction) in instructions.iter().enumerate() {
        if i == 0 || instructions[i - 1].ends_a_block() {
            starts[i] = true;
        }
        if let Some(j) = instruction.target.and_then(index_of) {
            starts[j] = true;
        }
    }
    // Each block as the range of its instructions.
    let mut blocks: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        match blocks.last_mut() {
            Some(block) if !start => block.end = i + 1,
            _ => blocks.push(i..i + 1),
        }
    }
    let block_of = |i: usize| blocks.partition_point(|b| b.end <= i);
    let samples: Vec<usize> = blocks
        .iter()
        .map(|b| {
            instructions[b.clone()]
                .iter()
                .filter_map(|i| at.get(&i.offset))
                .sum()
        })
        .collect();
    let (sampled, length) = blocks
        .iter()
        .zip(&samples)
        .filter(|(_, n)| **n > 0)
        .fold((0, 0), |(s, l), (b, n)| (s + n, l + b.len()));
    // A block is on the path when it has at least one in RARE of the
    // samples an instruction gets on average, for each of its own.
    let mut run: Vec<bool> = blocks
        .iter()
        .zip(&samples)
        .map(|(b, &n)| n > 0 && n * length * RARE >= sampled * b.len())
        .collect();
    let mut changed = true;
    while changed {
        changed = false;
        for b in 0..blocks.len() {
            if !run[b] {
                continue;
            }
            let last = &instructions[blocks[b].end - 1];
            let next = if last.mnemonic == "jmp" {
                last.target.and_then(index_of).map(block_of)
            } else if last.ends_a_block() {
                None
            } else {
                Some(b + 1).filter(|&n| n < blocks.len())
            };
            if let Some(n) = next
                && !run[n]
            {
                run[n] = true;
                changed = true;
            }
        }
    }
    blocks
        .iter()
        .zip(&run)
        .filter(|(_, run)| **run)
        .map(|(b, _)| b.len())
        .sum()
}

/// The table of paths.
pub fn print(paths: &[Path], skipped: Option<&str>) {
    println!();
    println!(
        "instructions a path runs (JITed x86-64: the basic blocks perf's software clock sampled \
         while the kernel looped the frame for {} s)",
        LOOP.as_secs()
    );
    if let Some(reason) = skipped {
        println!("not measured: {reason}");
        return;
    }
    println!(
        "{:<44} {:>12} {:>8}  by function",
        "path", "instructions", "samples"
    );
    for path in paths {
        let functions: Vec<String> = path
            .functions
            .iter()
            .map(|(name, n)| format!("{} {n}", name.rsplit(": ").next().unwrap_or(name)))
            .collect();
        println!(
            "{:<44} {:>12} {:>8}  {}",
            path.what,
            path.instructions(),
            path.samples,
            functions.join(", ")
        );
    }
    println!();
    println!(
        "the same loops outside the program: the share of the samples in the program, and the \
         kernel functions sampled most outside it (the floor's are the test-run loop's own)"
    );
    println!("{:<44} {:>10}  outside, samples", "path", "in program");
    for path in paths {
        let all = path.samples + path.outside.iter().map(|(_, n)| n).sum::<usize>();
        let named: Vec<String> = path
            .outside
            .iter()
            .take(OUTSIDE_NAMED)
            .map(|(symbol, n)| format!("{symbol} {n}"))
            .collect();
        println!(
            "{:<44} {:>9.0}%  {}",
            path.what,
            100.0 * path.samples as f64 / all.max(1) as f64,
            named.join(", ")
        );
    }
}
