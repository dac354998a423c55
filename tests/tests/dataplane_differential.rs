//! The kernel decides exactly what the reference model decides, on random
//! policies and packets: ≥ 10⁵ cases with the tries' largest shape (big
//! roots, wide nodes), and runs of 2·10⁴ cases with 8-bit roots and with
//! every trie narrow. What is tested, and how, is the
//! harness's documentation: `testkit::differential` (`tests/src/differential.rs`),
//! which the dataplane bench also runs, at ≥ 10⁶ cases.

use testkit::differential::{Tries, agree};

const POLICIES: u32 = 500;

#[test]
fn kernel_agrees_with_the_model_on_random_policies_and_packets() {
    let agreement = agree(POLICIES, Tries::Largest);
    eprintln!("{agreement}");
    agreement.check_exercised();
}

/// The same with 8-bit roots, the shape the controller gives a trie when
/// a slot has no room for its big root (the random policies' tries are
/// small, so they all have big roots in the test above).
#[test]
fn kernel_agrees_with_the_model_with_small_roots() {
    let agreement = agree(POLICIES / 5, Tries::SmallRoots);
    eprintln!("{agreement}");
    agreement.check_exercised();
}

/// The same with every trie narrow, the form the controller falls back to
/// when a slot has no room for wide ones.
#[test]
fn kernel_agrees_with_the_model_with_narrow_tries() {
    let agreement = agree(POLICIES / 5, Tries::Narrow);
    eprintln!("{agreement}");
    agreement.check_exercised();
}
