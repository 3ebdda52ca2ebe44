//! `tasktrace inspect` on real binaries: what it finds, what it says is unavailable.

mod common;

use common::*;
use serde_json::Value;

fn inspect_json(args: &[&std::ffi::OsStr]) -> Value {
    let out = tasktrace()
        .arg("inspect")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "tasktrace");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn inspect_the_demo() {
    let demo = fixture("demo");
    let v = inspect_json(&[demo.as_os_str()]);
    assert_eq!(v["tokio_version"], "1.54.1");
    assert_eq!(v["traits"]["symbols"], true);
    assert_eq!(v["traits"]["pie"], true);
    assert_eq!(v["traits"]["lto_likely"], false);
    for event in ["spawn", "poll_start", "park", "complete", "spawn_call"] {
        let sites = v["plan"][event]
            .as_object()
            .unwrap_or_else(|| panic!("{event} planned"));
        assert!(sites.values().all(|n| n.as_u64() > Some(0)));
    }
    // One probe hit per poll: the thread sampler infers the poll's end; wakes unprobed.
    for event in ["poll_end", "wake_by_val", "wake_by_ref"] {
        assert!(v["plan"][event].is_null(), "{event} planned: {}", v["plan"]);
    }
    assert_eq!(unavailable(&v), ["wakes", "await chains"]);
    // `tokio::spawn` names the site: the multi-thread `bind_new_task` it calls is probed
    // only for futures no `spawn::spawn` instance has, not for all 14 (a second probe hit
    // per spawn). Of the `spawn::spawn` instances, those of futures spawned from one
    // place are named from the code and carry no probe; those of `spawn_at` (a generic
    // `#[track_caller]` helper passing its caller's Location on) keep theirs, and so does
    // the one of `--churn`'s yield loops (7 in all, with the demo's churn load). Each site
    // named is where a spawn call starts (a method call's Location is at its name).
    let calls = &v["plan"]["spawn_call"];
    assert_eq!(calls["tokio::task::spawn::spawn"], 7, "{calls}");
    assert_eq!(
        calls["tokio::runtime::scheduler::multi_thread::handle::Handle::bind_new_task"], 1,
        "{calls}"
    );
    // The short tasks' spawn (`--short`, `--churn`), in a loop inside their ticker, loads
    // no Location next to it in this build: its vtable names it as a function offset
    // (`vtable_sites`), not from this map.
    let from_code = v["sites_from_code"].as_object().unwrap();
    assert_eq!(from_code.len(), 11, "{from_code:?}");
    let by_vtable = v["vtable_sites"].as_object().unwrap();
    assert!(
        by_vtable.values().any(|s| s
            .as_str()
            .is_some_and(|s| s.starts_with("fixture_demo::short_tasks::"))),
        "{by_vtable:?}"
    );
    let source = std::fs::read_to_string(root().join("fixtures/demo/src/main.rs")).unwrap();
    let lines: Vec<&str> = source.lines().collect();
    let helper = lines
        .iter()
        .position(|l| l.contains("let h = tokio::spawn(fut);"))
        .unwrap();
    for (future, site) in from_code {
        let site = site.as_str().unwrap();
        let mut parts = site.strip_prefix("src/main.rs:").unwrap().split(':');
        let line: usize = parts.next().unwrap().parse().unwrap();
        let col: usize = parts.next().unwrap().parse().unwrap();
        assert_ne!(
            line,
            helper + 1,
            "{future}: the helper's call is not a site"
        );
        let at = &lines[line - 1][col - 1..];
        assert!(
            ["tokio::spawn(", "tokio::task::spawn_local(", "spawn("]
                .iter()
                .any(|call| at.starts_with(call)),
            "{future} at {site}: {at}"
        );
    }
    for i in 0..3 {
        let future = format!("fixture_demo::healthy_background::{{closure#{i}}}");
        assert!(from_code.contains_key(&future), "{future}: {from_code:?}");
    }
    // Where each probe runs: every one of the demo's on a kernel-emulated instruction.
    for (event, functions) in v["execution"].as_object().unwrap() {
        for (function, e) in functions.as_object().unwrap() {
            assert_eq!(e["single_stepped"], 0, "{event} {function}: {e}");
            assert_eq!(
                e["emulated"], v["plan"][event][function],
                "{event} {function}"
            );
        }
    }
    let text = tasktrace().arg("inspect").arg(&demo).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("emulated, 0 single-stepped"), "{text}");
}

#[test]
fn inspect_says_what_a_stripped_build_hides() {
    let stripped = stripped_copy(&fixture("demo"), "inspect-stripped");
    let v = inspect_json(&[stripped.as_os_str()]);
    assert_eq!(
        v["tokio_version"], "1.54.1",
        "the version survives stripping"
    );
    assert_eq!(v["traits"]["symbols"], false);
    assert_eq!(v["tier"], "vtable scan");
    // Spawns are seen at their task-id draws (the same as the symbols find), and the code
    // names many of their sites; the others are said to be missing, their code's address
    // standing in.
    assert_eq!(
        unavailable(&v),
        ["some spawn sites", "futures", "await chains"]
    );
    let full_draws = inspect_json(&[fixture("demo").as_os_str()])["id_draws"].clone();
    assert_eq!(
        v["id_draws"], full_draws,
        "the same task-id draws as the symbols find"
    );
    let source = std::fs::read_to_string(root().join("fixtures/demo/src/main.rs")).unwrap();
    let mut named = 0;
    for d in v["id_draws_probed"].as_array().unwrap() {
        let Some(site) = d["site"].as_str() else {
            continue;
        };
        // No Location in the code: the spawning code's own address stands in.
        if let Some(at) = site.strip_prefix("stripped+") {
            assert_eq!(at, format!("{:#x}", d["vaddr"].as_u64().unwrap()), "{d}");
            continue;
        }
        let line: usize = site
            .strip_prefix("src/main.rs:")
            .and_then(|r| r.split(':').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{site} is not a line of the demo"));
        let text = source.lines().nth(line - 1).unwrap();
        assert!(text.contains("spawn"), "{site} is not a spawn call: {text}");
        named += 1;
    }
    assert!(named >= 10, "only {named} draws named from the code: {v}");
    // The pattern scan finds exactly the vtables the unstripped build's symbols name.
    let full = inspect_json(&[fixture("demo").as_os_str()]);
    assert_eq!(full["task_vtables"]["scan_matches_symbols"], true);
    assert_eq!(full["task_vtables"]["waker_matches_symbols"], true);
    assert_eq!(v["task_vtables"]["waker_by_scan"], true);
    assert_eq!(
        v["task_vtables"]["by_scan"],
        full["task_vtables"]["by_symbols"]
    );
    assert!(v["task_vtables"]["by_scan"].as_u64() > Some(10));
}

#[test]
fn inspect_a_running_process_and_bad_targets() {
    let mut child = Target(
        std::process::Command::new(fixture("demo"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.id().to_string();
    let v = inspect_json(&["--pid".as_ref(), pid.as_ref()]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(v["binary"].as_str().unwrap().ends_with("fixture-demo"));
    let out = tasktrace()
        .args(["inspect", "--pid", "4194305"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = tasktrace()
        .args(["inspect", "/nonexistent/binary"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A program without tokio is said to be one, not given tokio's layout.
    let out = tasktrace().args(["inspect", "/bin/ls"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not contain the tokio runtime"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
}
