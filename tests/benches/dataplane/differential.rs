//! The kernel-versus-model differential run (`testkit::differential`) at
//! the bench's scale: ≥ 10⁶ cases with the tries' largest shape (big
//! roots, wide nodes) and a fifth of that each with 8-bit roots and with
//! every trie narrow, where the test runs ≥ 10⁵. Nothing here is compared
//! with a target: the seconds say what the run costs, and a disagreement
//! panics with the policy and the packet, so a printed line always reads
//! 0 disagreements.

use anyhow::Result;
use testkit::differential::{PACKETS_PER_POLICY, Tries, agree};

use crate::report::count;

const POLICIES_VAR: &str = "DATAPLANE_BENCH_DIFFERENTIAL_POLICIES";
/// The wide run's policies by default: each gives at least
/// `PACKETS_PER_POLICY` cases, so ≥ 10⁶ cases in all.
const POLICIES: u32 = 1_000_000_usize.div_ceil(PACKETS_PER_POLICY) as u32;

/// The section as the environment asks for it.
pub enum Differential {
    /// The wide run's policies; the narrow run gets a fifth of them.
    Run(u32),
    /// Why the section is skipped.
    Skipped(&'static str),
}

impl Differential {
    /// From `DATAPLANE_BENCH_DIFFERENTIAL_POLICIES` (0 skips); a `quick` run
    /// (`DATAPLANE_BENCH_TARGET_ONLY=1`) skips it unless that is set.
    pub fn from_env(quick: bool) -> Result<Differential> {
        if quick && std::env::var_os(POLICIES_VAR).is_none() {
            return Ok(Differential::Skipped(
                "DATAPLANE_BENCH_TARGET_ONLY=1 is a quick run (set \
                 DATAPLANE_BENCH_DIFFERENTIAL_POLICIES to run it)",
            ));
        }
        Ok(match crate::env_number(POLICIES_VAR, POLICIES)? {
            0 => Differential::Skipped("DATAPLANE_BENCH_DIFFERENTIAL_POLICIES=0"),
            policies => Differential::Run(policies),
        })
    }

    /// Runs the three shapes' runs and prints their table (or why
    /// not); panics on a disagreement, or when the random cases missed a
    /// path they are there for.
    pub fn run(&self) {
        println!();
        let policies = match *self {
            Differential::Run(policies) => policies,
            Differential::Skipped(why) => {
                println!("differential (kernel = model): skipped: {why}");
                return;
            }
        };
        let fifth = policies.div_ceil(5);
        let runs = [
            (policies, Tries::Largest),
            (fifth, Tries::SmallRoots),
            (fifth, Tries::Narrow),
        ]
        .map(|(policies, tries)| {
            let agreement = agree(policies, tries);
            eprintln!("{agreement}");
            agreement
        });
        println!(
            "{:<30} {:>8} {:>9} {:>10} {:>18} {:>14} {:>10} {:>8} {:>13}",
            "what",
            "tries",
            "policies",
            "cases",
            "denied or rejected",
            "through raw-IP",
            "through TC",
            "seconds",
            "disagreements"
        );
        for run in &runs {
            println!(
                "{:<30} {:>8} {:>9} {:>10} {:>18} {:>14} {:>10} {:>8.1} {:>13}",
                "differential (kernel = model)",
                run.tries.name(),
                count(run.policies as usize),
                count(run.cases as usize),
                count(run.denied as usize),
                count(run.raw_ip as usize),
                count(run.tc as usize),
                run.elapsed.as_secs_f64(),
                0
            );
        }
        for run in &runs {
            run.check_exercised();
        }
    }
}
