//! Text-in/text-out tests of the passes, in the style of Cranelift's filetests and MLIR's lit
//! tests.
//!
//! Every `tests/filetests/*.tfir` starts with a line `// RUN: passes=PIPELINE` followed by a
//! module in the text form. The harness parses the module, runs the pipeline (which verifies
//! after every pass) and compares the result with the insta snapshot
//! `tests/filetests/snapshots/NAME.snap`: a `// changed: ...` line naming the passes that
//! changed something (or `none`), then the printed module. The snapshot's description holds
//! the input, so a snapshot reads as input and output side by side. Review new or changed
//! snapshots with `cargo insta review`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use terafab_ir::parse::parse_module;
use terafab_passes::{PipelineOptions, run_pipeline};

/// The prefix of the first line of every filetest.
const RUN: &str = "// RUN: passes=";

#[test]
fn filetests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/filetests exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "tfir"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no filetests in {}", dir.display());
    // Run every file, then report all failures at once.
    let failures: Vec<String> = files
        .iter()
        .filter(|path| catch_unwind(AssertUnwindSafe(|| check(path))).is_err())
        .map(|path| path.display().to_string())
        .collect();
    assert!(failures.is_empty(), "failing filetests: {failures:#?}");
}

/// Run one filetest and compare with its snapshot (panics on any difference or error).
fn check(path: &Path) {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("UTF-8 file name");
    let src = std::fs::read_to_string(path).expect("readable filetest");
    let pipeline = src
        .lines()
        .next()
        .and_then(|l| l.strip_prefix(RUN))
        .unwrap_or_else(|| panic!("{name}: the first line must be `{RUN}PIPELINE`"))
        .trim();
    let mut module = parse_module(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
    let timings = run_pipeline(&mut module, pipeline, PipelineOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let changed: Vec<&str> = timings
        .iter()
        .filter(|t| t.changed)
        .map(|t| t.name)
        .collect();
    let changed = if changed.is_empty() {
        "none".to_string()
    } else {
        changed.join(", ")
    };
    let output = format!("// changed: {changed}\n{module}");
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("filetests/snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_description(src.clone());
    settings.bind(|| insta::assert_snapshot!(name, output));
}
