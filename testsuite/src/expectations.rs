//! Expectations lists: the cases a backend must pass, one `set/name` per line (`#` comments).

use std::collections::BTreeSet;
use std::path::Path;

use crate::{CaseResult, Outcome};

/// Read an expectations list; a missing file is an empty list.
pub fn read_expectations(path: &Path) -> std::io::Result<BTreeSet<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e),
    }
}

/// Write the passing cases as an expectations list.
pub fn write_expectations(
    path: &Path,
    backend: &str,
    results: &[CaseResult],
) -> std::io::Result<()> {
    let mut s = format!(
        "# Conformance cases that must pass on the `{backend}` backend (one set/name per line).\n\
         # Regenerate with: terafab conformance --backend {backend} --update-expectations\n"
    );
    for r in results.iter().filter(|r| r.outcome == Outcome::Pass) {
        s.push_str(&r.id);
        s.push('\n');
    }
    std::fs::write(path, s)
}

/// Expected cases that did not pass, and passing cases not yet expected.
#[derive(Debug, Default)]
pub struct Comparison {
    pub regressions: Vec<(String, String)>,
    pub new_passes: Vec<String>,
}

/// Compare results with an expectations list (cases not run are ignored).
pub fn compare_expectations(results: &[CaseResult], expected: &BTreeSet<String>) -> Comparison {
    let mut c = Comparison::default();
    for r in results {
        let want = expected.contains(&r.id);
        match (&r.outcome, want) {
            (Outcome::Pass, false) => c.new_passes.push(r.id.clone()),
            (Outcome::Fail(m) | Outcome::Unsupported(m), true) => {
                c.regressions.push((r.id.clone(), m.clone()))
            }
            _ => {}
        }
    }
    c
}
