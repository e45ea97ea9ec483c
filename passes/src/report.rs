//! The `--time-passes` table, in the style of LLVM's pass timing report.

use std::fmt::Write;
use std::time::Duration;

use crate::PassTiming;

/// A table of the pass runs in order: wall time, share of the total, whether the pass changed
/// anything and the node count after it; then the verifier (run after every pass, summed) and
/// the total; then the reports of the passes that report (`eqsat`'s saturation runs), each
/// under the pass's run number and name.
///
/// ```text
/// ===-------------------------------------------------------------------------===
///                       ... Pass execution timing report ...
/// ===-------------------------------------------------------------------------===
///   Total Execution Time: 0.0012 seconds
///
///    ---Wall Time---  --Changed--  ---Nodes---  --- Name ---
///    0.0006 ( 50.0%)          yes            9  canonicalize
///    0.0002 ( 16.7%)           no            9  fold
///    0.0004 ( 33.3%)                            (verifier)
///    0.0012 (100.0%)                            Total
/// ```
pub fn timing_report(timings: &[PassTiming]) -> String {
    let verify: Duration = timings.iter().map(|t| t.verify_time).sum();
    let total = timings.iter().map(|t| t.time).sum::<Duration>() + verify;
    let share = |d: Duration| {
        if total.is_zero() {
            0.0
        } else {
            100.0 * d.as_secs_f64() / total.as_secs_f64()
        }
    };
    let rule = "===-------------------------------------------------------------------------===";
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, "{:>54}", "... Pass execution timing report ...");
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(
        out,
        "  Total Execution Time: {:.4} seconds\n",
        total.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "   ---Wall Time---  --Changed--  ---Nodes---  --- Name ---"
    );
    let mut row = |time: Duration, changed: &str, nodes: &str, name: &str| {
        let _ = writeln!(
            out,
            "   {:.4} ({:5.1}%)  {changed:>11}  {nodes:>11}  {name}",
            time.as_secs_f64(),
            share(time)
        );
    };
    for t in timings {
        let changed = if t.changed { "yes" } else { "no" };
        row(t.time, changed, &t.nodes.to_string(), t.name);
    }
    row(verify, "", "", "(verifier)");
    row(total, "", "", "Total");
    if timings.iter().any(|t| !t.reports.is_empty()) {
        let _ = writeln!(out, "\n  Pass reports:");
        for (i, t) in timings.iter().enumerate() {
            for r in &t.reports {
                let _ = writeln!(
                    out,
                    "  #{} {}: {}",
                    i + 1,
                    t.name,
                    r.replace('\n', "\n    ")
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_run_and_the_total() {
        let t = |name, ms, changed, nodes| PassTiming {
            name,
            time: Duration::from_millis(ms),
            verify_time: Duration::from_millis(1),
            changed,
            nodes,
            reports: vec![],
        };
        let report = timing_report(&[t("canonicalize", 6, true, 9), t("fold", 2, false, 9)]);
        assert!(
            report.contains("Total Execution Time: 0.0100 seconds"),
            "{report}"
        );
        assert!(
            report.contains("   0.0060 ( 60.0%)          yes            9  canonicalize\n"),
            "{report}"
        );
        assert!(
            report.contains("   0.0020 ( 20.0%)           no            9  fold\n"),
            "{report}"
        );
        assert!(
            report.contains("(verifier)") && report.ends_with("Total\n"),
            "{report}"
        );
        assert!(!report.contains("Pass reports"), "{report}");
        // Reports follow the table, numbered by run, continuation lines indented.
        let mut eq = t("eqsat", 1, true, 7);
        eq.reports = vec!["@main: eqsat: 2 iterations\n  add-zero: 1".into()];
        let report = timing_report(&[t("fold", 1, false, 9), eq]);
        assert!(
            report.ends_with(
                "  Pass reports:\n  #2 eqsat: @main: eqsat: 2 iterations\n      add-zero: 1\n"
            ),
            "{report}"
        );
        // No division by zero on an empty pipeline.
        assert!(timing_report(&[]).contains("0.0000 (  0.0%)"));
    }
}
