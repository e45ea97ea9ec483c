//! The shared body of the conformance tests: run every case on a backend and check the
//! interpreter's expectations list (`expectations/interp.txt`): every case named there must
//! pass. Needs the cases written by `scripts/onnx-testdata.sh` (scripts/test.sh runs it first).
//! `TERAFAB_CONFORMANCE_FILTER=REGEX` runs a subset.

use std::path::Path;

use terafab_testsuite::{
    Backend, DEFAULT_SETS, Summary, compare_expectations, default_cases_dir, discover,
    read_expectations, report, run_all,
};

/// Run the suite on `backend`; panics with the list of expected cases that do not pass.
#[allow(dead_code)] // not every test binary uses both
pub fn check_interp_expectations(backend: &dyn Backend) {
    check_expectations(backend, "interp.txt")
}

/// Run the suite on `backend` and check the expectations list `expectations/LIST`.
pub fn check_expectations(backend: &dyn Backend, list: &str) {
    let root = default_cases_dir();
    let filter = std::env::var("TERAFAB_CONFORMANCE_FILTER").ok().map(|f| {
        regex::Regex::new(&f).unwrap_or_else(|e| panic!("TERAFAB_CONFORMANCE_FILTER: {e}"))
    });
    let cases = discover(&root, DEFAULT_SETS, filter.as_ref()).unwrap_or_else(|e| panic!("{e}"));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let results = run_all(&cases, backend, threads, false);
    println!("backend {}:\n{}", backend.name(), Summary(&results));
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("conformance-{}.txt", backend.name()));
    std::fs::write(&out, report(&results)).expect("write the report");
    println!("report: {}", out.display());
    let expected = read_expectations(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("expectations")
            .join(list),
    )
    .expect("read the expectations list");
    let cmp = compare_expectations(&results, &expected);
    if !cmp.new_passes.is_empty() {
        println!(
            "{} cases pass that the expectations list does not name yet (add them):",
            cmp.new_passes.len()
        );
        for id in &cmp.new_passes {
            println!("  {id}");
        }
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !results.iter().any(|r| &&r.id == id))
        .collect();
    assert!(
        filter.is_some() || missing.is_empty(),
        "expected cases not found on disk: {missing:?}"
    );
    if !cmp.regressions.is_empty() {
        let lines: Vec<String> = cmp
            .regressions
            .iter()
            .map(|(id, m)| format!("  {id}: {m}"))
            .collect();
        panic!(
            "{} expected cases no longer pass on {}:\n{}",
            cmp.regressions.len(),
            backend.name(),
            lines.join("\n")
        );
    }
}
