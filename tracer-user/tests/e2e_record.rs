//! End to end: record a window to a trace file, then report it without the target, after
//! a clean end, a Ctrl-C and a SIGKILL of the tracer.

mod common;

use std::{
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use common::*;
use serde_json::Value;

fn report_file(file: &std::path::Path, json: &std::path::Path) -> Value {
    let out = tasktrace()
        .arg("report")
        .arg(file)
        .args(THRESHOLDS)
        .arg("--json")
        .arg(json)
        .output()
        .unwrap();
    assert_success(&out, "tasktrace");
    read_report(json)
}

/// What must agree between two reports of the same window.
fn verdicts(r: &Value) -> Vec<(u64, String, Value, Value)> {
    r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_u64().unwrap(),
                t["verdict"].to_string(),
                t["spawned_at"].clone(),
                t["future"].clone(),
            )
        })
        .collect()
}

#[test]
fn replaying_a_recording_gives_the_live_verdicts() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (file, live, replay) = (
        tmp("clean.trace"),
        tmp("clean-live.json"),
        tmp("clean-replay.json"),
    );
    let out = tasktrace()
        .args(["run", "-q", "--duration", "5s", "-o"])
        .arg(&file)
        .arg("--json")
        .arg(&live)
        .args(THRESHOLDS)
        .arg("--")
        .arg(fixture("demo"))
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "tasktrace");
    let live = read_report(&live);
    let replayed = report_file(&file, &replay);
    assert_matches_truth(&replayed, &ground_truth(&stdout));
    assert_eq!(live["summary"], replayed["summary"]);
    assert_eq!(verdicts(&live), verdicts(&replayed));
    assert_eq!(replayed["window"], live["window"]);
}

fn record_then_signal(signal: i32, name: &str) -> (Value, Value, Option<Value>) {
    let (file, live, replay, demo_out) = (
        tmp(&format!("{name}.trace")),
        tmp(&format!("{name}-live.json")),
        tmp(&format!("{name}-replay.json")),
        tmp(&format!("{name}-demo.out")),
    );
    // The demo spawns its pitfalls 3 s after it starts: the tracer must have attached by
    // then (attach took over 0.7 s on a loaded CI machine: tasks spawned before it are
    // alive before attach, and never-polled ones then read as starved).
    let mut target = Target(
        Command::new(fixture("demo"))
            .args(["--start-after", "3"])
            .stdout(std::fs::File::create(&demo_out).unwrap())
            .spawn()
            .unwrap(),
    );
    sleep(Duration::from_millis(300));
    let tracer = tasktrace()
        // Full mode: the truth check counts polls and long polls (`record` defaults to
        // sample; e2e_demo checks it on the demo).
        .args([
            "record",
            "-q",
            "--mode",
            "full",
            "--pid",
            &target.id().to_string(),
            "-o",
        ])
        .arg(&file)
        .arg("--json")
        .arg(&live)
        .args(THRESHOLDS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sleep(Duration::from_secs(8));
    let tracer_pid = tracer.id();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer_pid as i32, signal) };
    let out = tracer.wait_with_output().unwrap();
    assert_eq!(
        our_programs_after_exit(),
        0,
        "no program outlives the tracer ({name})"
    );
    let _ = target.kill();
    let _ = target.wait();
    let truth = serde_json::to_value(std::fs::read_to_string(&demo_out).unwrap()).unwrap();
    // A window that ended cleanly renamed its file into place; a killed tracer left it
    // under its partial name, and nothing at the name asked for.
    let partial = file.with_file_name(format!(
        "{}.partial-{tracer_pid}",
        file.file_name().unwrap().to_str().unwrap()
    ));
    let file = if out.status.code() == Some(0) {
        assert!(!partial.exists(), "{name}: the partial file was renamed");
        file
    } else {
        assert!(!file.exists(), "{name}: no file appears whole that is not");
        partial
    };
    let replayed = report_file(&file, &replay);
    let live = (out.status.code() == Some(0)).then(|| read_report(&live));
    (truth, replayed, live)
}

#[test]
fn ctrl_c_recording_reports_like_the_live_run() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (demo_stdout, replayed, live) = record_then_signal(libc::SIGINT, "sigint");
    let live = live.expect("the tracer exits 0 on Ctrl-C and writes its report");
    assert_eq!(replayed["window"]["ended_by"], "interrupted");
    assert_eq!(verdicts(&live), verdicts(&replayed));
    assert_matches_truth(&replayed, &ground_truth(demo_stdout.as_str().unwrap()));
}

#[test]
fn a_killed_tracer_leaves_a_file_that_still_reports() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (demo_stdout, replayed, _) = record_then_signal(libc::SIGKILL, "sigkill");
    assert_eq!(replayed["window"]["ended_by"], "truncated");
    assert!(
        replayed["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("no end record"))
    );
    // The window was complete up to the kill: every pitfall had passed its threshold.
    assert_matches_truth(&replayed, &ground_truth(demo_stdout.as_str().unwrap()));
}

#[test]
fn a_corrupt_file_is_refused_with_its_offset() {
    let file = tmp("corrupt.trace");
    std::fs::write(&file, b"TTRACE01\x07\x00\x00\x00\x00").unwrap();
    let out = tasktrace().arg("report").arg(&file).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("corrupt trace file at byte offset 8"),
        "{stderr}"
    );
    std::fs::write(&file, b"hello").unwrap();
    let out = tasktrace().arg("report").arg(&file).output().unwrap();
    assert!(text(&out).1.contains("not a tasktrace trace file"));
}
