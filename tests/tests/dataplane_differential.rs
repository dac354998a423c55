//! The kernel decides exactly what the reference model decides, on random
//! policies and packets: ≥ 10⁵ cases with wide tries, and a second run of
//! 2·10⁴ cases with every trie narrow. What is tested, and how, is the
//! harness's documentation: `testkit::differential` (`tests/src/differential.rs`),
//! which the dataplane bench also runs, at ≥ 10⁶ cases.

use testkit::differential::agree;

const POLICIES: u32 = 500;

#[test]
fn kernel_agrees_with_the_model_on_random_policies_and_packets() {
    let agreement = agree(POLICIES, false);
    eprintln!("{agreement}");
    agreement.check_exercised();
}

/// The same with every trie narrow, the form the controller falls back to
/// when a slot has no room for wide ones (the random policies' tries are
/// small, so they are all wide in the test above).
#[test]
fn kernel_agrees_with_the_model_with_narrow_tries() {
    let agreement = agree(POLICIES / 5, true);
    eprintln!("{agreement}");
    agreement.check_exercised();
}
