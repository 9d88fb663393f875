//! `cargo bench -p haswarm-crds --bench fuzz`: the properties of `tests/fuzz.rs`
//! for many more cases (20,000 per property; `HASWARM_FUZZ_CASES=N` for N),
//! printing cases run, cases/s, how many yielded resources or errors, and the
//! longest parse. A failed property prints its minimal input and exits 1.

#[path = "../tests/fuzz_gen/mod.rs"]
mod fuzz_gen;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use fuzz_gen::{Case, Outcome};
use haswarm_crds::manifest::ErrorKind;
use proptest::strategy::Strategy;
use proptest::test_runner::TestRunner;

#[derive(Default)]
struct Figures {
    cases: u64,
    resources: u64,
    errors: u64,
    empty: u64,
    by_kind: [u64; 4],
    bytes: u64,
    longest: Duration,
    longest_bytes: usize,
}

impl Figures {
    fn add(&mut self, case: &Case, o: &Outcome) {
        self.cases += 1;
        self.bytes += case.text.len() as u64;
        if !o.errors.is_empty() {
            self.errors += 1;
        } else if o.resources > 0 {
            self.resources += 1;
        } else {
            self.empty += 1;
        }
        for k in &o.errors {
            self.by_kind[match k {
                ErrorKind::Syntax => 0,
                ErrorKind::Limit => 1,
                ErrorKind::Shape => 2,
                ErrorKind::Invalid => 3,
            }] += 1;
        }
        if o.elapsed > self.longest {
            self.longest = o.elapsed;
            self.longest_bytes = case.text.len();
        }
    }
}

fn fail(name: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("{name}: {e}");
    std::process::exit(1)
}

fn run(name: &str, strategy: impl Strategy<Value = Case>, cases: u32) {
    let figures = RefCell::new(Figures::default());
    let start = Instant::now();
    let mut runner = TestRunner::new(fuzz_gen::config(cases));
    let result = runner.run(&strategy, |case| {
        let outcome = fuzz_gen::check(&case)?;
        figures.borrow_mut().add(&case, &outcome);
        Ok(())
    });
    if let Err(e) = result {
        fail(name, e);
    }
    let f = figures.into_inner();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name}: {} cases in {secs:.1} s ({:.0} cases/s, {:.0} bytes on average)",
        f.cases,
        f.cases as f64 / secs,
        f.bytes as f64 / f.cases.max(1) as f64
    );
    println!(
        "  {} yielded resources, {} errors, {} nothing (no document); errors by kind: syntax {}, limit {}, shape {}, invalid {}",
        f.resources, f.errors, f.empty, f.by_kind[0], f.by_kind[1], f.by_kind[2], f.by_kind[3]
    );
    println!(
        "  longest parse and validation: {:.1} ms ({} bytes)",
        f.longest.as_secs_f64() * 1e3,
        f.longest_bytes
    );
}

fn main() {
    let cases = fuzz_gen::cases(20_000);
    run("near the schema", fuzz_gen::near_schema(), cases);
    run("random text", fuzz_gen::random_text(), cases);

    let start = Instant::now();
    let mut runner = TestRunner::new(fuzz_gen::config(cases));
    if let Err(e) = runner.run(&fuzz_gen::rerendered_examples(), |r| {
        fuzz_gen::check_round_trip(&r)
    }) {
        fail("examples rewritten", e);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "examples rewritten in other styles: {cases} cases in {secs:.1} s ({:.0} cases/s), all the same resources",
        f64::from(cases) / secs
    );
}
