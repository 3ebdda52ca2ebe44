//! What tracing costs the target: `--mode lifecycle` (no per-poll probe at all: polls are
//! sampled and read from memory) and full mode's one probe hit per poll (the poll's end
//! inferred). Both on the demo, against its ground truth, by task id.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

fn by_kind(report: &Value) -> BTreeSet<String> {
    report["diagnostics"]["by_kind"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn with_reason(report: &Value, reason: &str) -> BTreeSet<u64> {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["reason"] == reason)
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn lifecycle_mode_finds_the_pitfalls_without_a_poll_probe() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let trace = tmp("lifecycle.trace");
    let json = tmp("lifecycle.json");
    let out = tasktrace()
        .args(["run", "-q", "--mode", "lifecycle", "--duration", "6s", "-o"])
        .arg(&trace)
        .arg("--json")
        .arg(&json)
        .args(THRESHOLDS)
        .arg("--")
        .arg(fixture("demo"))
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "tasktrace run --mode lifecycle");
    let truth = ground_truth(&stdout);
    let report = read_report(&json);
    assert_eq!(report["probes"]["mode"], "lifecycle");
    let kinds = by_kind(&report);
    for per_poll in [
        "poll_start",
        "poll_end",
        "wake_by_val",
        "wake_by_ref",
        "park",
    ] {
        assert!(!kinds.contains(per_poll), "{per_poll} probed: {kinds:?}");
    }
    assert!(
        kinds.contains("spawn") && kinds.contains("complete"),
        "{kinds:?}"
    );
    let lost = unavailable(&report);
    for what in ["poll times", "wakes", "idle time"] {
        assert!(lost.iter().any(|w| w == what), "{what} said lost: {lost:?}");
    }
    assert_eq!(report["summary"]["lost_events"], 0);

    // Leaks: from readings of the task lists (a future unchanged in memory), exactly.
    assert_eq!(ids_with(&report, "leaked"), truth.leaked, "leaked tasks");
    assert_eq!(definite_ids(&report), truth.definite, "definite leaks");
    assert_eq!(report["diagnostics"]["definite_contradicted"], 0);
    // Blocking polls: the thread sampler found the two tasks holding a worker.
    let blocking = with_reason(&report, "blocking_poll");
    assert_eq!(blocking.len(), 2, "two blocking polls: {blocking:?}");
    assert!(
        blocking.is_subset(&truth.stuck),
        "{blocking:?} {:?}",
        truth.stuck
    );
    // The starved task was polled once before the first reading: without poll probes it
    // is indistinguishable from never polled, and is flagged as one or the other.
    let flagged: BTreeSet<u64> = ids_with(&report, "stuck")
        .union(&ids_with(&report, "never_polled"))
        .copied()
        .collect();
    let expected: BTreeSet<u64> = truth.stuck.union(&truth.never_polled).copied().collect();
    assert_eq!(flagged, expected, "stuck or never polled");
    assert!(
        truth
            .never_polled
            .is_subset(&ids_with(&report, "never_polled")),
        "never-polled tasks"
    );
    let ok = ids_with(&report, "ok");
    assert!(ok.len() >= 20, "healthy tasks judged ok: {ok:?}");

    // The recording replays to the same verdicts (samples and readings included).
    let replay_json = tmp("lifecycle-replay.json");
    let out = tasktrace()
        .arg("report")
        .arg(&trace)
        .arg("--json")
        .arg(&replay_json)
        .args(THRESHOLDS)
        .output()
        .unwrap();
    assert_success(&out, "tasktrace report");
    let replay = read_report(&replay_json);
    for verdict in ["leaked", "stuck", "never_polled", "ok"] {
        assert_eq!(
            ids_with(&replay, verdict),
            ids_with(&report, verdict),
            "{verdict} after replay"
        );
    }
}

#[test]
fn full_mode_costs_one_probe_hit_per_poll() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (_, report, _) = run_checked(&fixture("demo"), "one-hit", "6s", &[]);
    assert_eq!(report["probes"]["mode"], "full");
    let by = &report["diagnostics"]["by_kind"];
    let polls = by["poll_start"].as_u64().unwrap();
    assert!(polls > 100, "{by}");
    for per_poll in ["poll_end", "wake_by_val", "wake_by_ref"] {
        assert!(by[per_poll].is_null(), "{per_poll} probed: {by}");
    }
    // A worker's park ends its last poll (the demo idles: about one park per wake-up).
    assert!(by["park"].as_u64() > Some(0), "{by}");
    assert!(unavailable(&report).iter().any(|w| w == "wakes"));
    // Every probe sits on an instruction the kernel emulates.
    let probes = &report["probes"];
    assert_eq!(probes["single_stepped"], 0, "{probes}");
    assert_eq!(probes["emulated"], probes["sites"], "{probes}");
}
