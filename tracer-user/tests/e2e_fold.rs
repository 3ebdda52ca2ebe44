//! End to end: a window that folds its finished healthy tasks into per-site counts
//! (`--keep recent`, the default) judges and counts exactly as one that keeps them all,
//! live and on replay, and its report lists only the live, flagged and latest finished.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

fn flagged(r: &Value) -> Vec<BTreeSet<u64>> {
    ["leaked", "stuck", "never_polled"]
        .iter()
        .map(|v| ids_with(r, v))
        .collect()
}

fn replay(trace: &std::path::Path, name: &str, extra: &[&str]) -> Value {
    let json = tmp(name);
    let out = tasktrace()
        .arg("report")
        .arg(trace)
        .arg("--json")
        .arg(&json)
        .args(THRESHOLDS)
        .args(extra)
        .output()
        .unwrap();
    assert_success(&out, "tasktrace report");
    read_report(&json)
}

/// The demo with short tasks finishing by the thousand each second, folded from 200
/// held tasks on: the ground truth holds
/// in both modes, and the recording replays to the same counts kept whole or folded.
#[test]
fn folding_the_demo_keeps_every_verdict() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    for mode in ["full", "lifecycle"] {
        let trace = tmp(&format!("fold-{mode}.trace"));
        let json = tmp(&format!("fold-{mode}.json"));
        let out = tasktrace()
            .args([
                "run",
                "-q",
                "--mode",
                mode,
                "--duration",
                "6s",
                "--fold-from",
                "200",
            ])
            .arg("-o")
            .arg(&trace)
            .arg("--json")
            .arg(&json)
            .args(THRESHOLDS)
            .arg("--")
            .arg(fixture("demo"))
            .args(["--short", "2"])
            .output()
            .unwrap();
        let (stdout, _) = assert_success(&out, "tasktrace run --fold-from 200");
        let truth = ground_truth(&stdout);
        let report = read_report(&json);
        let s = &report["summary"];
        let folded = s["folded"].as_u64().unwrap();
        assert!(folded > 1_000, "{mode}: the churn was folded: {s}");
        let tasks = report["tasks"].as_array().unwrap().len() as u64;
        assert_eq!(tasks + folded, s["tasks_seen"].as_u64().unwrap(), "{mode}");
        let by_site: u64 = report["spawn_sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["folded"].as_u64().unwrap())
            .sum();
        assert_eq!(by_site, folded, "{mode}: every folded task has its site");
        assert_eq!(definite_ids(&report), truth.definite, "{mode}: definite");
        if mode == "full" {
            assert_matches_truth(&report, &truth);
        } else {
            // Lifecycle mode under this load can miss a suspected leak: a reading may find
            // an idle task's `Core` hash changed (seen once in three runs, three tasks of
            // one site at one reading), and the kept-whole replay below agrees, so it is
            // in the records, not the fold. No task is ever flagged that should not be.
            let leaked = ids_with(&report, "leaked");
            assert!(
                leaked.is_subset(&truth.leaked) && truth.definite.is_subset(&leaked),
                "lifecycle: leaked {leaked:?}, truth {:?}",
                truth.leaked
            );
            let flagged: BTreeSet<u64> = ids_with(&report, "stuck")
                .union(&ids_with(&report, "never_polled"))
                .copied()
                .collect();
            let expected: BTreeSet<u64> = truth.stuck.union(&truth.never_polled).copied().collect();
            assert_eq!(flagged, expected, "lifecycle: stuck or never polled");
        }
        // The same records, folded the same way, and kept whole: the same counts.
        let again = replay(
            &trace,
            &format!("fold-{mode}-replay.json"),
            &["--fold-from", "200"],
        );
        assert_eq!(
            fold_counts(&again),
            fold_counts(&report),
            "{mode}: replayed"
        );
        assert_eq!(flagged(&again), flagged(&report), "{mode}: replayed");
        let whole = replay(&trace, &format!("fold-{mode}-all.json"), &["--keep", "all"]);
        assert_eq!(whole["summary"]["folded"], 0);
        assert_eq!(
            fold_counts(&whole),
            fold_counts(&report),
            "{mode}: kept whole"
        );
        assert_eq!(flagged(&whole), flagged(&report), "{mode}: kept whole");
    }
}

/// Three hundred thousand tasks spawned and finished at full speed, with the default
/// floor: the report lists the latest two thousand, and counts the rest per site.
#[test]
fn a_spawn_storm_is_reported_by_site_not_task_by_task() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let json = tmp("fold-storm.json");
    let out = tasktrace()
        // The whole storm's events fit the ring: a slow (debug) tracer loses none.
        .args(["run", "-q", "--ring-size", "256M", "--json"])
        .arg(&json)
        .arg("--")
        .arg(fixture("spawnloop"))
        .arg("300000")
        .output()
        .unwrap();
    assert_success(&out, "tasktrace run spawnloop");
    let r = read_report(&json);
    let s = &r["summary"];
    let seen = s["tasks_seen"].as_u64().unwrap();
    assert_eq!(s["lost_events"], 0, "{s}");
    assert!(seen >= 330_000, "{s}");
    assert_eq!(s["ok"], s["tasks_seen"], "{s}");
    assert_eq!(s["completed"], s["tasks_seen"], "{s}");
    let tasks = r["tasks"].as_array().unwrap();
    assert!(tasks.len() <= 2_000 + 16, "{} tasks listed", tasks.len());
    assert_eq!(tasks.len() as u64 + s["folded"].as_u64().unwrap(), seen);
    let site = r["spawn_sites"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|x| x["spawned"].as_u64())
        .unwrap();
    assert!(site["spawned"].as_u64().unwrap() >= 330_000, "{site}");
    assert_eq!(site["spawned"], site["completed"], "{site}");
    // Polls whose end is inferred (full mode: one probe hit per poll) may end uncounted.
    assert!(site["polls"].as_u64().unwrap() >= 300_000, "{site}");
}
