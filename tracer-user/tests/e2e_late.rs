//! Attaching late: a process leaked its tasks long before tasktrace attached, so no probe
//! will ever fire for them. `dump`, `record` and `report` must still list exactly those
//! tasks (from the runtimes' own task lists), say which leaks are certain, and name their
//! futures.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::*;
use serde_json::Value;

/// What the late fixture prints: ids by what they must come out as.
struct LateTruth {
    definite: BTreeSet<u64>,
    suspected: BTreeSet<u64>,
    healthy: BTreeSet<u64>,
}

fn set(v: &Value, k: &str) -> BTreeSet<u64> {
    v[k].as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn dump(pid: u32) -> Value {
    let out = tasktrace()
        .args(["dump", "--json", "-", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "dump");
    serde_json::from_str(&stdout).expect("dump --json - prints JSON")
}

fn task(r: &Value, id: u64) -> &Value {
    r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("task {id} missing"))
}

/// (id, verdict, certainty) of every task, sorted: what must not differ between runs.
fn verdicts(r: &Value) -> Vec<(u64, String, String)> {
    let mut v: Vec<_> = r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_u64().unwrap(),
                t["verdict"].as_str().unwrap().to_owned(),
                t["certainty"].to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn attaching_30s_after_the_leaks_finds_exactly_them() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (target, truth) = start_with_truth(&fixture("late"), &[]);
    let truth = LateTruth {
        definite: set(&truth, "definite"),
        suspected: set(&truth, "suspected"),
        healthy: set(&truth, "healthy"),
    };
    assert!(truth.definite.len() >= 9 && truth.suspected.len() >= 8);
    std::thread::sleep(Duration::from_secs(30));
    let pid = target.id();

    // dump: every leaked and long-lived task, certain leaks exactly the unreachable ones.
    let d = dump(pid);
    assert_eq!(
        d["lists"].as_array().unwrap().len(),
        3,
        "runtime, current-thread, LocalSet"
    );
    assert!(
        d["warnings"].as_array().unwrap().is_empty(),
        "{}",
        d["warnings"]
    );
    let dumped: BTreeSet<u64> = d["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    for id in truth
        .definite
        .iter()
        .chain(&truth.suspected)
        .chain(&truth.healthy)
    {
        assert!(dumped.contains(id), "dump lists task {id}");
    }
    let source = std::fs::read_to_string(root().join("fixtures/late/src/main.rs")).unwrap();
    let mut named = 0;
    for t in d["tasks"].as_array().unwrap() {
        let id = t["id"].as_u64().unwrap();
        assert_eq!(
            t["definite_leak"],
            truth.definite.contains(&id),
            "dump task {t}"
        );
        assert!(t["future"].is_string(), "dump names the future of {t}");
        // A site, where the code shows one for the task's vtable, is a spawn call of the
        // fixture's (a future type spawned from several places has none).
        if let Some(site) = t["spawned_at"].as_str() {
            let line: usize = site
                .strip_prefix("src/main.rs:")
                .and_then(|r| r.split(':').next())
                .and_then(|l| l.parse().ok())
                .unwrap_or_else(|| panic!("dump site {site} is not in the fixture"));
            let text = source.lines().nth(line - 1).unwrap_or("");
            assert!(text.contains("spawn"), "{site} is not a spawn call: {text}");
            named += 1;
        }
    }
    assert!(named > 0, "the dump names no spawn site");
    for &id in &truth.definite {
        let t = task(&d, id);
        assert_eq!(
            (&t["status"], &t["refs"], &t["join_handle"]),
            (&Value::from("idle"), &Value::from(1), &Value::from(false)),
            "{t}"
        );
    }
    assert_eq!(d["summary"]["definite_leaks"], truth.definite.len() as u64);

    // record: the same tasks, judged; then report from the recording: the same verdicts.
    let trace = tmp("late.trace");
    let live_json = tmp("late-live.json");
    let out = tasktrace()
        .args([
            "record",
            "-q",
            "--duration",
            "3s",
            "--leak-after",
            "2s",
            "-o",
        ])
        .arg(&trace)
        .arg("--json")
        .arg(&live_json)
        .args(["--pid", &pid.to_string()])
        .output()
        .unwrap();
    assert_success(&out, "record");
    let live = read_report(&live_json);
    let leaked: BTreeSet<u64> = truth.definite.union(&truth.suspected).copied().collect();
    assert_eq!(ids_with(&live, "leaked"), leaked, "leaked tasks");
    assert_eq!(definite_ids(&live), truth.definite, "definite leaks");
    assert_eq!(
        live["summary"]["leaked_definite"],
        truth.definite.len() as u64
    );
    for &id in &leaked {
        let t = task(&live, id);
        assert_eq!(t["alive_before_attach"], true, "{t}");
        assert!(t["future"].is_string(), "{t}");
        let reason = if truth.definite.contains(&id) {
            "no_way_to_run"
        } else {
            "idle_since_attach"
        };
        assert_eq!(t["reason"], reason, "{t}");
    }
    for &id in &truth.healthy {
        let t = task(&live, id);
        assert_eq!(t["verdict"], "ok", "{t}");
        assert_eq!(t["alive_before_attach"], true, "{t}");
        // `record`'s default, sample mode, probes no poll: a healthy task is one whose
        // future a later reading found changed since the attach-time one.
        assert!(
            t["polls"].as_u64() >= Some(1)
                && t["last_poll_end_ns"].as_u64() > t["first_seen_ns"].as_u64(),
            "healthy task {id} was seen running: {t}"
        );
    }
    for k in ["stuck", "never_polled", "lost_events"] {
        assert_eq!(live["summary"][k], 0, "summary.{k}");
    }
    assert_eq!(live["diagnostics"]["definite_contradicted"], 0);
    assert!(
        live["diagnostics"]["listed_before_attach"].as_u64()
            >= Some((leaked.len() + truth.healthy.len()) as u64)
    );

    let replay_json = tmp("late-replay.json");
    let out = tasktrace()
        .args(["report", "-q", "--leak-after", "2s", "--json"])
        .arg(&replay_json)
        .arg(&trace)
        .output()
        .unwrap();
    assert_success(&out, "report");
    let replay = read_report(&replay_json);
    assert_eq!(
        verdicts(&replay),
        verdicts(&live),
        "the recording reports the live verdicts"
    );
    for &id in &leaked {
        assert_eq!(task(&replay, id)["future"], task(&live, id)["future"]);
    }
}

/// The demo's pitfalls, attached to after they happened: the leaks of all its runtimes
/// (multi-thread, LocalSet) by id; its stuck tasks; and its never-polled ones, whose
/// history is unknowable after the fact, as notified-and-never-run (stuck, starved).
#[test]
fn attaching_to_the_demo_after_its_pitfalls_finds_them() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (target, truth) = start_with_truth(&fixture("demo"), &[]);
    let truth = ground_truth(&format!("TASKTRACE_GROUND_TRUTH {truth}"));
    let json = tmp("demo-late.json");
    let out = tasktrace()
        .args(["record", "-q", "--duration", "3s"])
        .args(THRESHOLDS)
        .arg("--json")
        .arg(&json)
        .args(["--pid", &target.id().to_string()])
        .output()
        .unwrap();
    assert_success(&out, "record");
    let r = read_report(&json);
    assert_eq!(ids_with(&r, "leaked"), truth.leaked, "leaked");
    assert!(
        definite_ids(&r).is_empty(),
        "every demo leak has a waker somewhere"
    );
    let stuck: BTreeSet<u64> = truth.stuck.union(&truth.never_polled).copied().collect();
    assert_eq!(ids_with(&r, "stuck"), stuck, "stuck");
    for id in &truth.never_polled {
        assert_eq!(task(&r, *id)["reason"], "starved");
    }
    for id in truth.leaked.iter().chain(&stuck) {
        assert_eq!(task(&r, *id)["alive_before_attach"], true);
    }
}
