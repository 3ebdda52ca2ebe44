//! Faults: real targets and real probes under conditions that break naive tracers, each
//! checked against the ground truth the demo prints. The rule: never a false verdict.
//! What the tracer cannot settle is reported `uncertain`, and the count is stated.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

/// Every task the report flags with certainty is one the demo built to be flagged so;
/// returns how many were uncertain.
fn assert_no_false_verdict(report: &Value, truth: &Truth) -> usize {
    let tasks = report["tasks"].as_array().unwrap();
    let mut uncertain = 0;
    for t in tasks {
        let verdict = t["verdict"].as_str().unwrap();
        if verdict == "ok" {
            continue;
        }
        if t["certainty"] == "uncertain" {
            uncertain += 1;
            continue;
        }
        let id = t["id"].as_u64().unwrap();
        let want: &BTreeSet<u64> = match verdict {
            "leaked" => &truth.leaked,
            "stuck" => &truth.stuck,
            "never_polled" => &truth.never_polled,
            other => panic!("unknown verdict {other}"),
        };
        assert!(
            want.contains(&id),
            "task {id} is {verdict} with certainty {} but the demo says it is not: {t}",
            t["certainty"]
        );
        if t["certainty"] == "definite" {
            assert!(truth.definite.contains(&id), "false definite: {t}");
        }
    }
    assert_eq!(
        report["summary"]["uncertain"].as_u64(),
        Some(uncertain as u64),
        "summary.uncertain counts them"
    );
    uncertain
}

/// A ring far too small for a poll-heavy target: millions of events are lost. The lost
/// completions, poll starts and poll ends must not turn into leaks, stuck polls or
/// never-polled tasks; the replay of the recording says the same as the live window.
#[test]
fn lost_events_never_become_verdicts() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let json = tmp("faults-lost.json");
    let trace = tmp("faults-lost.trace");
    let out = tasktrace()
        .args(["run", "--ring-size", "4K", "--duration", "8s", "--json"])
        .arg(&json)
        .arg("-o")
        .arg(&trace)
        .args(THRESHOLDS)
        .arg("--")
        .arg(fixture("demo"))
        .args(["--churn", "4"])
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "tasktrace");
    let report = read_report(&json);
    let truth = ground_truth(&stdout);
    let lost = report["summary"]["lost_events"].as_u64().unwrap();
    assert!(
        lost > 10_000,
        "the scenario must overflow the ring: {lost} lost"
    );
    assert!(
        !report["diagnostics"]["lost_spans"]
            .as_array()
            .unwrap()
            .is_empty(),
        "the spans of the losses are reported"
    );
    assert!(
        report["warnings"]
            .to_string()
            .contains("drained every 1 ms"),
        "the reader adapted and said so: {}",
        report["warnings"]
    );
    let uncertain = assert_no_false_verdict(&report, &truth);
    eprintln!(
        "faults: {lost} events lost; {} certain verdicts (all true), {uncertain} uncertain",
        ["leaked", "stuck", "never_polled"]
            .iter()
            .map(|k| report["summary"][k].as_u64().unwrap())
            .sum::<u64>()
    );
    // The short tasks (thousands) finished: none may be left alive by a lost completion.
    let alive = report["summary"]["alive"].as_u64().unwrap();
    assert!(
        alive < 100,
        "{alive} tasks alive at the end: lost completions kept finished tasks alive"
    );
    let replayed = tmp("faults-lost-replay.json");
    let out = tasktrace()
        .arg("report")
        .arg(&trace)
        .args(["-q", "--json"])
        .arg(&replayed)
        .args(THRESHOLDS)
        .output()
        .unwrap();
    assert_success(&out, "tasktrace report");
    let replayed = read_report(&replayed);
    for k in ["leaked", "stuck", "never_polled", "uncertain", "alive"] {
        assert_eq!(
            replayed["summary"][k], report["summary"][k],
            "replay: summary.{k}"
        );
    }
    let _ = std::fs::remove_file(&trace);
}
