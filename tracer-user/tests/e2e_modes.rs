//! What tracing costs the target: `--mode sample` (no probe at all), `--mode lifecycle`
//! (no per-poll probe: polls are sampled and read from memory) and full mode's one probe
//! hit per poll (the poll's end inferred). All on the demo, against its ground truth, by
//! task id.

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
    let (report, truth) = sampled_mode_on_the_demo("lifecycle");
    let kinds = by_kind(&report);
    assert!(
        kinds.contains("spawn") && kinds.contains("complete"),
        "{kinds:?}"
    );
    let ok = ids_with(&report, "ok");
    assert!(ok.len() >= 20, "healthy tasks judged ok: {ok:?}");
    // Every spawn was probed: tokio's task-id counter agrees with the spawn events.
    let spawned = report["summary"]["spawned"]["tasks"].as_u64().unwrap();
    assert_eq!(spawned, report["summary"]["tasks_seen"].as_u64().unwrap());
    assert!(spawned >= max_id(&truth), "{spawned}");
}

/// The highest task id the demo names: ids are drawn 1, 2, … so at least this many
/// tasks were spawned.
fn max_id(truth: &Truth) -> u64 {
    [
        &truth.leaked,
        &truth.stuck,
        &truth.never_polled,
        &truth.long_poll,
    ]
    .iter()
    .flat_map(|s| s.iter())
    .copied()
    .max()
    .unwrap()
}

/// Sample mode: spawn probes alone, and only while the target spawns under the budget
/// (the demo always does). The verdicts come from the task lists, the thread sampler and
/// tokio's task-id counter, and equal lifecycle mode's; the sites are the probes'.
#[test]
fn sample_mode_finds_the_pitfalls_with_spawn_probes_only() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (report, truth) = sampled_mode_on_the_demo("sample");
    assert!(
        report["probes"]["sites"].as_u64().unwrap() > 0,
        "{}",
        report["probes"]
    );
    let spawn_kinds = [
        "spawn",
        "spawn_local",
        "spawn_blocking",
        "spawn_call",
        "spawn_id",
    ];
    let kinds = by_kind(&report);
    assert!(kinds.contains("spawn"), "{kinds:?}");
    // And the runtime-shutdown probe, which fires only while a runtime shuts down.
    assert!(
        kinds
            .iter()
            .all(|k| spawn_kinds.contains(&k.as_str()) || k == "shutdown"),
        "only spawn and shutdown probes: {kinds:?}"
    );
    let lost = unavailable(&report);
    for what in [
        "spawn and completion times",
        "blocking-pool tasks",
        "spawn sites of tasks spawned unprobed",
    ] {
        assert!(lost.iter().any(|w| w == what), "{what} said lost: {lost:?}");
    }
    // The demo spawns far under the budget: the probes stayed attached.
    let gate = &report["summary"]["spawn_probes"];
    assert_eq!(gate["disarms"], 0, "{gate}");
    let armed = gate["armed_fraction"].as_f64().unwrap();
    assert!(armed > 0.95, "attached {armed} of the window: {gate}");
    // Every spawn counted: tokio drew ids 1..=N.
    let spawned = report["summary"]["spawned"]["tasks"].as_u64().unwrap();
    assert!(spawned >= max_id(&truth), "every spawn counted: {spawned}");
    // Every pitfall at its site, each site a spawn call of the demo's.
    let (resolved, user) = assert_spawn_sites(&report, &truth, "demo");
    assert!(resolved >= 20, "sites named: {resolved}/{user}");
}

/// Runs the demo in a mode that probes no poll and checks what both such modes must
/// give; returns the report and the demo's ground truth.
fn sampled_mode_on_the_demo(mode: &str) -> (Value, Truth) {
    let trace = tmp(&format!("{mode}.trace"));
    let json = tmp(&format!("{mode}.json"));
    let out = tasktrace()
        .args(["run", "-q", "--mode", mode, "--duration", "6s", "-o"])
        .arg(&trace)
        .arg("--json")
        .arg(&json)
        .args(THRESHOLDS)
        .arg("--")
        .arg(fixture("demo"))
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, &format!("tasktrace run --mode {mode}"));
    let truth = ground_truth(&stdout);
    let report = read_report(&json);
    assert_eq!(report["probes"]["mode"], mode);
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
    let lost = unavailable(&report);
    for what in ["poll times", "wakes", "idle time"] {
        assert!(lost.iter().any(|w| w == what), "{what} said lost: {lost:?}");
    }
    assert_eq!(report["summary"]["lost_events"], 0);

    // Leaks: from readings of the task lists (a future unchanged in memory), exactly.
    assert_matches_truth_without_polls(&report, &truth);
    // Blocking polls: the thread sampler found the two tasks holding a worker.
    let blocking = with_reason(&report, "blocking_poll");
    assert_eq!(blocking.len(), 2, "two blocking polls: {blocking:?}");
    assert!(
        blocking.is_subset(&truth.stuck),
        "{blocking:?} {:?}",
        truth.stuck
    );
    // Each on its thread: the sampler read the worker's current task. Both workers sleep
    // inside their poll, so no probe and hardly a CPU sample ever runs on them: the
    // thread iterator is what found them.
    let on_threads: BTreeSet<u64> = report["stuck_polls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["thread"].as_u64().is_some_and(|t| t != 0))
        .filter_map(|p| p["task_id"].as_u64())
        .collect();
    assert_eq!(on_threads, blocking, "{}", report["stuck_polls"]);

    // The recording replays to the same verdicts (samples, readings and counts included).
    let replay_json = tmp(&format!("{mode}-replay.json"));
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
    assert_eq!(replay["summary"]["spawned"], report["summary"]["spawned"]);
    (report, truth)
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
