//! Helpers shared by the end-to-end tests of the `terafab` binary (`cli.rs`, `bench.rs`).
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh directory for one test.
pub fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn terafab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_terafab"))
        .args(args)
        .output()
        .expect("the terafab binary runs")
}

/// A path as a command-line argument (test paths are UTF-8).
pub fn arg(path: &Path) -> String {
    path.to_str().expect("UTF-8 test path").to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 0; returns stdout.
#[track_caller]
pub fn success(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    stdout(o)
}

/// A user error: exit code 1, `error: ...` on stderr, no panic; returns stderr.
#[track_caller]
pub fn user_error(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {}\nstderr: {err}",
        stdout(o)
    );
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A command-line usage error, reported by clap: exit code 2.
#[track_caller]
pub fn usage_error(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}
