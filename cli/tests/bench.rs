//! End-to-end tests of `terafab bench`: the table's format and the command's errors, on tiny
//! models with one run (the figures themselves are wall times, never asserted).

mod common;

use std::path::Path;

use common::*;

/// Seven nodes that the default pipeline reduces to three.
const MODEL: &str = "func @main(%x: f32[2,3]) -> (y: f32[2,3]) {
  %one = constant() {value=dense<f32[]>[1.0]} : f32[]
  %two = constant() {value=dense<f32[]>[2.0]} : f32[]
  %half = div(%one, %two) : f32[]
  %a = mul(%x, %one) : f32[2,3]
  %b = mul(%a, %half) : f32[2,3]
  %c = mul(%x, %half) : f32[2,3]
  %y = add(%b, %c) : f32[2,3]
  return %y
}
";

fn write_model(dir: &Path) -> String {
    let path = dir.join("m.tfir");
    std::fs::write(&path, MODEL).unwrap();
    arg(&path)
}

/// The cells of a table line (split at runs of two or more spaces; empty cells vanish).
fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// A time cell: a non-negative number of ms with three decimals.
#[track_caller]
fn assert_ms(cell: &str) {
    let (int, frac) = cell.split_once('.').expect("a decimal point");
    assert!(int.parse::<u64>().is_ok() && frac.len() == 3, "{cell}");
}

#[test]
fn one_run_gives_a_row_per_pass_with_nodes_before_and_after() {
    let dir = scratch("bench_one_run");
    let model = write_model(&dir);
    let text = success(&terafab(&[
        "bench", &model, "--passes", "default", "--repeat", "1",
    ]));
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "pipeline `default` = canonicalize,fold,cse,dce; 1 run per model, each on a fresh \
             copy; wall times in ms"
        )
    );
    assert_eq!(lines.next(), Some(""));
    assert_eq!(
        cells(lines.next().unwrap()),
        [
            "model",
            "pass",
            "median ms",
            "min ms",
            "max ms",
            "nodes",
            "changed",
            "report"
        ]
    );
    let rows: Vec<Vec<&str>> = lines.map(cells).collect();
    // One run: a median, no min and max.
    let load = &rows[0];
    assert_eq!((load[0], load[1], load[3]), (model.as_str(), "(load)", "7"));
    assert_ms(load[2]);
    for (row, pass) in rows[1..5]
        .iter()
        .zip(["canonicalize", "fold", "cse", "dce"])
    {
        assert_eq!(row.len(), 4, "{row:?}");
        assert_eq!(row[0], pass);
        assert_ms(row[1]);
        assert_eq!(row[3], "yes", "{text}");
    }
    assert_eq!(rows[4][2], "3");
    assert_eq!(rows[5].len(), 2);
    assert_eq!(rows[5][0], "(verifier)");
    assert_eq!((rows[6][0], rows[6][2]), ("total", "3"));
    assert_ms(rows[6][1]);
    assert_eq!(rows.len(), 7, "{text}");
}

#[test]
fn reports_of_passes_go_in_the_last_column() {
    let dir = scratch("bench_reports");
    let model = write_model(&dir);
    let text = success(&terafab(&[
        "bench",
        &model,
        "--passes",
        "dce,eqsat",
        "--repeat",
        "1",
    ]));
    let header = text.lines().nth(2).unwrap();
    let col = header.find("report").expect("a report column");
    assert!(header.ends_with("report"), "{text}");
    let eqsat = text
        .lines()
        .find(|l| cells(l).first() == Some(&"eqsat"))
        .unwrap();
    // One line per function, named; dce has no report.
    assert!(eqsat[col..].starts_with("@main: "), "{text}");
    // The rest of a multi-line report (the rules applied) stays out of the table.
    assert_eq!(text.lines().count(), 3 + 5, "{text}");
    let dce = text
        .lines()
        .find(|l| cells(l).first() == Some(&"dce"))
        .unwrap();
    assert!(dce.len() < col, "{text}");
}

#[test]
fn several_models_and_runs_share_one_table() {
    let dir = scratch("bench_several");
    let model = write_model(&dir);
    let mlp = arg(&repo().join("testsuite/models/mlp.onnx"));
    let text = success(&terafab(&[
        "bench", &model, &mlp, "--passes", "dce,dce", "--repeat", "3",
    ]));
    assert!(text.starts_with("pipeline `dce,dce` = dce,dce; 3 runs per model"));
    let header = text.lines().nth(2).unwrap();
    // Every line is as wide as its table at most (the padding is shared).
    let models: Vec<&str> = text
        .lines()
        .skip(3)
        .filter(|l| !l.starts_with(' '))
        .collect();
    assert_eq!(models.len(), 2, "{text}");
    assert!(models[0].starts_with(&format!("{model}  ")), "{text}");
    assert!(models[1].starts_with(&format!("{mlp}  ")), "{text}");
    let pass_col = header.find("pass").unwrap();
    for line in text.lines().skip(3) {
        assert!(line.len() > pass_col, "{text}");
        assert!(!line[pass_col..].starts_with(' '), "{text}");
    }
    // With three runs, each dce row has a median, a min and a max; nothing is left to remove.
    let dce: Vec<Vec<&str>> = text
        .lines()
        .map(cells)
        .filter(|c| c.first() == Some(&"dce"))
        .collect();
    assert_eq!(dce.len(), 4, "{text}");
    for row in &dce {
        assert_eq!(row.len(), 6, "{row:?}");
        row[1..4].iter().for_each(|c| assert_ms(c));
        assert_eq!(row[5], "no", "{text}");
    }
}

#[test]
fn bad_models_pipelines_and_arguments_are_errors() {
    let dir = scratch("bench_errors");
    let model = write_model(&dir);
    let err = user_error(&terafab(&[
        "bench",
        &model,
        "no/such/model.onnx",
        "--passes",
        "default",
    ]));
    assert!(err.contains("no/such/model.onnx"), "{err}");
    let err = user_error(&terafab(&["bench", &model, "--passes", "fold,frobnicate"]));
    assert!(err.contains("unknown pass `frobnicate`"), "{err}");
    // A model with an unbound symbolic dim needs --dim, like `terafab opt`.
    let onnx = arg(&repo().join("examples/mlp.onnx"));
    user_error(&terafab(&[
        "bench", &onnx, "--passes", "dce", "--repeat", "1",
    ]));
    success(&terafab(&[
        "bench", &onnx, "--passes", "dce", "--repeat", "1", "--dim", "batch=4",
    ]));
    usage_error(&terafab(&["bench", "--passes", "dce"]));
    usage_error(&terafab(&["bench", &model]));
    let err = usage_error(&terafab(&[
        "bench", &model, "--passes", "dce", "--repeat", "0",
    ]));
    assert!(err.contains("--repeat"), "{err}");
    let help = success(&terafab(&["bench", "--help"]));
    assert!(
        help.contains("EXAMPLES:") && help.contains("  terafab bench ") && help.contains("--dim"),
        "{help}"
    );
}
