//! End to end: `report --baseline` compares two runs of the growth fixture, one built
//! with its leak and one built with it fixed (`--features fixed`, the same source lines),
//! and names exactly the leaking site: as JSON reports, as a trace file against a JSON
//! report, and in the text and HTML outputs.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// Traces `bin` for a few seconds: (its ground truth, the JSON report, the trace file).
fn traced(bin: &Path, name: &str) -> (Value, std::path::PathBuf, std::path::PathBuf) {
    let (json, trace) = (tmp(&format!("{name}.json")), tmp(&format!("{name}.trace")));
    let out = tasktrace()
        .args([
            "run",
            "-q",
            "--duration",
            "5s",
            "--leak-after",
            "1s",
            "--json",
        ])
        .arg(&json)
        .arg("-o")
        .arg(&trace)
        .arg("--")
        .arg(bin)
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, name);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TASKTRACE_GROUND_TRUTH "))
        .expect("ground truth");
    (serde_json::from_str(line).unwrap(), json, trace)
}

#[test]
fn comparing_a_leaking_build_with_its_fix_names_exactly_the_leaking_site() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (truth, cur_json, cur_trace) = traced(&fixture("growth"), "compare-leaking");
    let (fixed_truth, base_json, _) = traced(&fixture_with("growth", "fixed"), "compare-fixed");
    // The same source: the same sites in both builds.
    assert_eq!(truth, fixed_truth);
    let leaking = truth["growing"].as_str().unwrap();
    let leaked_now = read_report(&cur_json)["spawn_sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == leaking)
        .map(|s| s["leaked"].as_u64().unwrap())
        .expect("the leaking site in the current report");
    assert!(
        leaked_now >= 10,
        "5 a second for 5 s, 1 s to be leaked: {leaked_now}"
    );

    for (current, what) in [(&cur_json, "json"), (&cur_trace, "trace")] {
        let (cmp, html) = (
            tmp(&format!("cmp-{what}.json")),
            tmp(&format!("cmp-{what}.html")),
        );
        let out = tasktrace()
            .arg("report")
            .arg(current)
            .arg("--baseline")
            .arg(&base_json)
            .args(["--leak-after", "1s", "--json"])
            .arg(&cmp)
            .arg("--html")
            .arg(&html)
            .output()
            .unwrap();
        let (stdout, _) = assert_success(&out, what);
        let c = read_report(&cmp);
        assert_eq!(c["schema"], "tasktrace.compare/1");
        let moved: Vec<&Value> = c["sites"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["change"] != "unchanged")
            .collect();
        assert_eq!(
            moved.len(),
            1,
            "{what}: only the leaking site changed: {moved:?}"
        );
        let s = moved[0];
        assert_eq!(s["site"], leaking, "{what}");
        assert_eq!(s["change"], "changed", "{what}");
        assert_eq!(s["baseline"]["leaked"], 0, "{what}: the fix leaks nothing");
        assert_eq!(s["delta_leaked"].as_u64(), Some(leaked_now), "{what}");
        assert!(
            s["what"].as_array().unwrap().contains(&"leaked".into()),
            "{what}: {s}"
        );
        // The steady site is there on both sides, unchanged.
        let steady = c["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["site"] == truth["steady"])
            .expect("steady site");
        assert_eq!(steady["change"], "unchanged", "{what}: {steady}");
        assert!(
            stdout.contains(&format!("changed   {leaking}")),
            "{what}: {stdout}"
        );
        assert!(
            stdout.contains("1 site(s) changed, 0 appeared, 0 vanished"),
            "{stdout}"
        );
        let page = std::fs::read_to_string(&html).unwrap();
        assert!(page.contains(leaking) && page.contains("<svg"), "{what}");
    }
}

/// A file that is neither a trace nor a report is refused, naming what to give.
#[test]
fn a_baseline_that_is_not_a_report_is_refused() {
    let bogus = tmp("not-a-report.json");
    std::fs::write(&bogus, br#"{"schema":"something/1"}"#).unwrap();
    let out = tasktrace()
        .arg("report")
        .arg(&bogus)
        .arg("--baseline")
        .arg(&bogus)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a tasktrace report"), "{stderr}");
    assert!(stderr.contains("--baseline B"), "{stderr}");
}
