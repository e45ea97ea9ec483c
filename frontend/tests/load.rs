//! `load_model` on good and bad files.

use std::error::Error;
use std::path::{Path, PathBuf};

use terafab_frontend::{FrontendError, load_model};

/// A fresh directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("frontend-load")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The error and its sources, one per line.
fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push('\n');
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

const GOOD: &str = "\
// doubles its input
func @main(%x: f32[2]) -> (y: f32[2]) {
  %y = add(%x, %x) : f32[2]
  return %y
}
";

#[test]
fn loads_ir_text() {
    let dir = scratch("good");
    let m = load_model(&write(&dir, "double.tfir", GOOD)).unwrap();
    assert_eq!(m.functions.len(), 1);
    assert_eq!(m.entry().unwrap().num_nodes(), 1);
    // The extension is matched case-insensitively.
    assert!(load_model(&write(&dir, "DOUBLE.TFIR", GOOD)).is_ok());
}

#[test]
fn loads_the_bundled_examples() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for name in ["mlp.tfir", "symbolic_batch.tfir"] {
        let m =
            load_model(&examples.join(name)).unwrap_or_else(|e| panic!("{name}: {}", chain(&e)));
        assert_eq!(m.functions.len(), 1, "{name}");
    }
}

#[test]
fn parse_errors_name_the_file_and_line() {
    let dir = scratch("parse");
    let text = "func @main(%x: f32[2]) -> (y: f32[2]) {\n  %y = add(%x, %x) : f32[2]\n  %z = add(%x, %nope) : f32[2]\n  return %y\n}\n";
    let path = write(&dir, "bad.tfir", text);
    let e = load_model(&path).unwrap_err();
    assert!(matches!(e, FrontendError::Parse { .. }), "{e:?}");
    assert_eq!(e.path(), path);
    let msg = chain(&e);
    assert!(msg.contains("bad.tfir"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
}

#[test]
fn verifier_errors_are_reported() {
    let dir = scratch("verify");
    let text =
        "func @main(%x: f32[2]) -> (y: f32[3]) {\n  %y = add(%x, %x) : f32[3]\n  return %y\n}\n";
    let path = write(&dir, "ill_typed.tfir", text);
    let e = load_model(&path).unwrap_err();
    assert!(matches!(e, FrontendError::Verify { .. }), "{e:?}");
    let msg = chain(&e);
    assert!(
        msg.contains("ill_typed.tfir") && msg.contains("@main"),
        "{msg}"
    );
}

#[test]
fn unknown_extensions_list_the_supported_formats() {
    let dir = scratch("unknown");
    for name in ["model.pt", "model", "model.txt"] {
        let e = load_model(&write(&dir, name, GOOD)).unwrap_err();
        assert!(matches!(e, FrontendError::UnknownFormat { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(name) && msg.contains(".tfir"), "{msg}");
    }
}

#[test]
fn missing_files_directories_and_binary_files_are_errors() {
    let dir = scratch("io");
    let missing = dir.join("missing.tfir");
    let e = load_model(&missing).unwrap_err();
    assert!(matches!(e, FrontendError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.tfir"), "{e}");
    assert!(e.source().is_some());

    let sub = dir.join("model.tfir");
    std::fs::create_dir_all(&sub).unwrap();
    let e = load_model(&sub).unwrap_err();
    assert!(matches!(e, FrontendError::IsDirectory { .. }), "{e:?}");

    let bin = dir.join("binary.tfir");
    std::fs::write(&bin, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let e = load_model(&bin).unwrap_err();
    assert!(matches!(e, FrontendError::NotUtf8 { .. }), "{e:?}");
}
