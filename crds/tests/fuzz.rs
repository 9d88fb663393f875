//! Property tests of manifest parsing and validation: YAML/JSON near the schema never panics and yields resources or positioned errors.
//!
//! `manifest::parse` and then `manifest::validate_batch` (what `haswarmctl
//! validate` and `apply` run) get manifests generated near the schema, and
//! random text; whatever they return must be resources, or errors that each
//! have a message and a position inside the input (see `fuzz_gen::check`).
//! The examples, written out again in other styles (block or flow YAML,
//! JSON, anchors and aliases, comments), must parse to the same resources.
//!
//! Each property runs `CASES` cases, with a random seed per run; set
//! `HASWARM_FUZZ_CASES=N` to run N per property instead. A failure prints
//! the minimal input found; nothing is written into the source tree. The
//! generators live in `fuzz_gen/`, shared with `benches/fuzz.rs`, which runs
//! them for many more cases (`cargo bench -p haswarm-crds --bench fuzz`).

mod fuzz_gen;

use fuzz_gen::{check, check_round_trip, near_schema, random_text, rerendered_examples};
use haswarm_crds::manifest::ErrorKind;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// Cases per property in CI: the whole file takes about 2-4 s in a debug
/// build on 2 cores (4 s of CPU), well under 10 s on a busy machine.
const CASES: u32 = 1000;

proptest! {
    #![proptest_config(fuzz_gen::config(fuzz_gen::cases(CASES)))]

    #[test]
    fn random_manifests_near_the_schema_never_panic_and_errors_have_positions(case in near_schema()) {
        check(&case)?;
    }

    #[test]
    fn random_text_never_panics_and_errors_have_positions(case in random_text()) {
        check(&case)?;
    }

    #[test]
    fn an_example_written_in_another_style_parses_to_the_same_resources(r in rerendered_examples()) {
        check_round_trip(&r)?;
    }
}

/// The generator is near the schema, not noise: a fixed sample of its cases
/// reaches valid resources and every kind of error.
#[test]
fn the_near_schema_generator_reaches_resources_and_every_kind_of_error() {
    let mut runner = TestRunner::deterministic();
    let strategy = near_schema();
    let n = 300;
    let (mut valid, mut kinds) = (0, std::collections::BTreeMap::new());
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..n {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let outcome = check(&case).unwrap_or_else(|e| panic!("{e}: {case:?}"));
        slowest = slowest.max(outcome.elapsed);
        if outcome.errors.is_empty() && outcome.resources > 0 {
            valid += 1;
        }
        for k in outcome.errors {
            *kinds.entry(format!("{k:?}")).or_insert(0) += 1;
        }
    }
    let seen = format!("{valid} of {n} cases valid; errors {kinds:?}; slowest parse {slowest:?}");
    assert!(valid >= n / 20, "{seen}");
    for k in [
        ErrorKind::Syntax,
        ErrorKind::Limit,
        ErrorKind::Shape,
        ErrorKind::Invalid,
    ] {
        assert!(
            kinds.get(&format!("{k:?}")).is_some_and(|c| *c >= n / 50),
            "few {k:?} errors: {seen}"
        );
    }
}
