//! End to end on the demo target: real uprobes on a release-built tokio binary, verdicts
//! compared with the ground truth the demo prints (by tokio task id).

mod common;

use std::{
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use common::*;

#[test]
fn run_traces_demo_from_first_instruction_until_duration() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let demo = fixture("demo");
    let json = tmp("run-duration.json");
    let out = tasktrace()
        .args(["run", "--duration", "6s", "--json"])
        .arg(&json)
        .args(THRESHOLDS)
        .arg("--")
        .arg(&demo)
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "tasktrace");
    let report = read_report(&json);
    let truth = ground_truth(&stdout);
    assert_matches_truth(&report, &truth);
    assert_eq!(report["window"]["ended_by"], "duration");
    let heading = format!("LEAKED ({})", truth.leaked.len());
    assert!(
        stdout.contains(&heading),
        "text summary groups by verdict:\n{stdout}"
    );
    let tasks = report["tasks"].as_array().unwrap();
    let kinds: std::collections::BTreeSet<&str> =
        tasks.iter().filter_map(|t| t["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["async", "blocking", "local"].into(),
        "spawn, spawn_blocking, spawn_local seen"
    );
    let (resolved, user) = assert_spawn_sites(&report, &truth, "demo");
    // Every spawn names a site: the exact Location where tokio received one; for
    // `Handle::spawn` (no Location without `tokio_unstable`) and without line tables in
    // this build, the calling function found by unwinding, as `function+0xoff`.
    assert_eq!(resolved, user, "{resolved} of {user} user spawns resolved");
    assert!(!report["spawn_sites"].as_array().unwrap().is_empty());
    // The three `tokio::spawn(async …)` of `healthy_background` are each the only spawn of
    // their future type: named from the code, with no spawn-call probe hit, at the exact
    // Location tokio receives (where each `tokio::spawn(` call starts in the source).
    assert!(
        report["diagnostics"]["spawn_sites_from_code"].as_u64() >= Some(3),
        "{}",
        report["diagnostics"]
    );
    let source = std::fs::read_to_string(root().join("fixtures/demo/src/main.rs")).unwrap();
    let start = source
        .lines()
        .position(|l| l.starts_with("fn healthy_background"))
        .unwrap();
    let calls: Vec<String> = source
        .lines()
        .enumerate()
        .skip(start)
        .filter(|(_, l)| l.trim_start().starts_with("tokio::spawn(async"))
        .take(3)
        .map(|(n, l)| {
            format!(
                "src/main.rs:{}:{}",
                n + 1,
                l.find("tokio::spawn(").unwrap() + 1
            )
        })
        .collect();
    for (i, call) in calls.iter().enumerate() {
        let future = format!("fixture_demo::healthy_background::{{closure#{i}}}");
        let spawned: Vec<&serde_json::Value> =
            tasks.iter().filter(|t| t["future"] == *future).collect();
        assert_eq!(spawned.len(), 1, "{future}");
        assert_eq!(spawned[0]["spawned_at"], *call, "{future}");
    }
    // Poll-time percentiles per site: ordered, and the 1.5 s poll's site shows it.
    for site in report["spawn_sites"].as_array().unwrap() {
        if site["polls"].as_u64() > Some(0) {
            let v: Vec<f64> = ["poll_p50_us", "poll_p90_us", "poll_p99_us", "poll_max_us"]
                .iter()
                .map(|k| site[k].as_f64().unwrap())
                .collect();
            assert!(v.windows(2).all(|w| w[0] <= w[1]), "{site}");
        }
    }
    let long_id = *truth.long_poll.iter().next().unwrap();
    let long_site = tasks.iter().find(|t| t["id"] == long_id).unwrap()["spawned_at"].clone();
    let site = report["spawn_sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == long_site)
        .unwrap();
    assert!(site["poll_max_us"].as_f64() >= Some(1_400_000.0), "{site}");
    for t in tasks.iter().filter(|t| t["verdict"] != "ok") {
        let future = t["future"].as_str().unwrap_or_default();
        assert!(
            future.starts_with("fixture_demo::"),
            "task {} names its future: {future:?}",
            t["id"]
        );
    }
    let aborted = tasks.iter().filter(|t| t["state"] == "cancelled").count();
    assert!(aborted >= 1, "the aborted task is seen as cancelled");
    eprintln!(
        "detach took {} ms for {} sites",
        report["probes"]["detach_ms"], report["probes"]["sites"]
    );
}

#[test]
fn verdicts_are_judged_when_the_runtime_shuts_down() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let demo = fixture("demo");
    let json = tmp("run-exit.json");
    let out = tasktrace()
        .args(["run", "--json"])
        .arg(&json)
        .args(THRESHOLDS)
        .arg("--")
        .arg(&demo)
        .args(["--exit-after", "5"])
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "tasktrace");
    let report = read_report(&json);
    let truth = ground_truth(&stdout);
    assert_matches_truth(&report, &truth);
    assert_eq!(report["window"]["ended_by"], "target_exit");
    // The multi-thread runtime shuts down at exit and cancels its leaked tasks; the
    // LocalSet's thread never shuts its runtime down, so its leak is judged at the end.
    for t in report["tasks"].as_array().unwrap() {
        if truth.leaked.contains(&t["id"].as_u64().unwrap()) {
            let by_shutdown = t["kind"] == "async";
            assert_eq!(
                t["cancelled_by_shutdown"], by_shutdown,
                "leaked task {}",
                t["id"]
            );
        }
    }
}

#[test]
fn record_attaches_to_a_running_process_and_survives_its_exit() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let demo = fixture("demo");
    let json = tmp("record.json");
    let out_path = tmp("record-demo.out");
    // Attached before the demo spawns anything, with room for a slow attach on a loaded
    // machine (see e2e_record).
    let mut target = Target(
        Command::new(&demo)
            .args(["--start-after", "3", "--exit-after", "8.5"])
            .stdout(std::fs::File::create(&out_path).unwrap())
            .spawn()
            .unwrap(),
    );
    sleep(Duration::from_millis(500));
    let out = tasktrace()
        .args([
            "record",
            "--pid",
            &target.id().to_string(),
            "--duration",
            "60s",
            "--json",
        ])
        .arg(&json)
        .args(THRESHOLDS)
        .output()
        .unwrap();
    let _ = target.wait();
    assert_success(&out, "tasktrace");
    let report = read_report(&json);
    // `record`'s default: sample mode, whose shutdown probes keep the leaks the demo's
    // runtime cancels at exit leaked (a reading during the shutdown sees them gone).
    assert_eq!(report["probes"]["mode"], "sample");
    assert_eq!(report["window"]["ended_by"], "target_exit");
    assert!(
        report["window"]["duration_ns"].as_u64().unwrap() < 20_000_000_000,
        "stopped at target exit"
    );
    let truth = ground_truth(&std::fs::read_to_string(&out_path).unwrap());
    assert_matches_truth_without_polls(&report, &truth);
    // The runtime's shutdown at exit cancelled the leaks: seen by its probe.
    for t in report["tasks"].as_array().unwrap() {
        if truth.leaked.contains(&t["id"].as_u64().unwrap()) && t["kind"] == "async" {
            assert_eq!(t["cancelled_by_shutdown"], true, "leaked task {t}");
        }
    }
}

#[test]
fn ctrl_c_ends_the_window_reports_and_detaches() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let demo = fixture("demo");
    let json = tmp("ctrl-c.json");
    let mut target = Target(Command::new(&demo).stdout(Stdio::null()).spawn().unwrap());
    sleep(Duration::from_millis(300));
    let tracer = tasktrace()
        // Full mode: the ticker's polls are counted (`record` defaults to sample).
        .args([
            "record",
            "--mode",
            "full",
            "--pid",
            &target.id().to_string(),
        ])
        .arg("--json")
        .arg(&json)
        .args(THRESHOLDS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sleep(Duration::from_secs(3));
    assert_eq!(our_programs(), 2, "probes are loaded while tracing");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let out = tracer.wait_with_output().unwrap();
    assert_success(&out, "tasktrace");
    let report = read_report(&json);
    assert_eq!(report["window"]["ended_by"], "interrupted");
    assert_eq!(
        our_programs_after_exit(),
        0,
        "no tasktrace program outlives tasktrace"
    );
    assert!(
        target.try_wait().unwrap().is_none(),
        "the traced process keeps running"
    );
    let _ = target.kill();
    let _ = target.wait();
    // The ticker of the demo was seen and judged ok.
    assert!(
        report["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["verdict"] == "ok" && t["polls"].as_u64() > Some(10))
    );
}

#[test]
fn fail_on_sets_exit_status_3() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let demo = fixture("demo");
    let out = tasktrace()
        .args([
            "run",
            "-q",
            "--duration",
            "4s",
            "--fail-on",
            "leaked,never_polled",
        ])
        .args(THRESHOLDS)
        .arg("--")
        .arg(&demo)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("--fail-on matched: leaked, never_polled"),
        "{stderr}"
    );
    assert_eq!(our_programs_after_exit(), 0);
}

#[test]
fn stripped_binary_traced_with_symbols_from_its_unstripped_twin() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let demo = fixture("demo");
    let stripped = stripped_copy(&demo, "fixture-demo-stripped-traced");
    let symbols = ["--symbols", demo.to_str().unwrap()];
    let (_, report, truth) = run_checked(&stripped, "stripped-twin", "5s", &symbols);
    assert_spawn_sites(&report, &truth, "demo");
    // Symbols of another build are refused before anything attaches.
    let out = tasktrace()
        .args(["run", "--symbols"])
        .arg(fixture("growth"))
        .arg("--")
        .arg(&stripped)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("is not the same build"));
}

/// The demo built with DWARF line tables (`debug = "line-tables-only"`): every user spawn,
/// including `Handle::spawn`, whose Location tokio drops without `tokio_unstable`, resolves
/// to its exact `file:line:col` (the line tables give the call inlined into the caller).
#[test]
fn line_tables_name_the_exact_line_of_every_spawn() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let demo = fixture_profile("demo", "lines");
    let (_, report, truth) = run_checked(&demo, "demo-lines", "4s", &[]);
    let (resolved, user) = assert_spawn_sites(&report, &truth, "demo");
    assert_eq!(resolved, user, "every user spawn names a line");
    let source = std::fs::read_to_string(root().join("fixtures/demo/src/main.rs")).unwrap();
    let (n, text) = source
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("undriven.handle().spawn("))
        .unwrap();
    let handle_spawn = format!("src/main.rs:{}:{}", n + 1, text.find("spawn(").unwrap() + 1);
    for id in &truth.never_polled {
        let t = report["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"].as_u64() == Some(*id))
            .unwrap();
        assert_eq!(
            t["spawned_at"].as_str(),
            Some(handle_spawn.as_str()),
            "Handle::spawn site"
        );
    }
    for t in report["tasks"].as_array().unwrap() {
        if let Some(site) = t["spawned_at"].as_str() {
            assert!(!site.contains("+0x"), "a line, not function+offset: {site}");
        }
    }
}

/// The demo stripped of its symbols, traced without `--symbols`: the plan comes from the
/// task vtables found in its read-only data, completions from the task-list readings;
/// the verdicts still equal the ground truth by task id, live and replayed. Wakes come from
/// the waker vtable found by its clone function; spawn sites and futures are reported
/// unavailable, not as zero.
#[test]
fn a_stripped_build_is_traced_from_its_task_vtables() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let stripped = stripped_copy(&fixture("demo"), "fixture-demo-stripped-e2e");
    let trace = tmp("demo-stripped.trace");
    let (stdout, report, truth) = run_checked(
        &stripped,
        "demo-stripped",
        "5s",
        &["-o", trace.to_str().unwrap()],
    );
    assert_eq!(
        unavailable(&report),
        ["some spawn sites", "futures", "await chains"]
    );
    assert!(stdout.contains("unavailable: some spawn sites"), "{stdout}");
    let by_kind = &report["diagnostics"]["by_kind"];
    assert!(
        by_kind["wake_by_val"].as_u64() > Some(0),
        "wakes probed: {by_kind}"
    );
    // Every spawn seen at its task-id draw; a site the code names is the true one.
    let tasks = report["tasks"].as_array().unwrap();
    for t in tasks {
        assert!(!t["spawned_at_ns"].is_null(), "no spawn event: {t}");
    }
    let mut named = 0;
    for (id, site) in &truth.sites {
        let t = tasks
            .iter()
            .find(|t| t["id"].as_u64() == Some(*id))
            .unwrap_or_else(|| panic!("task {id} missing"));
        if let Some(got) = t["spawned_at"].as_str() {
            assert_eq!(got, site, "spawn site of task {id}");
            named += 1;
        }
    }
    assert!(named > 0, "no flagged task's site named from the code");
    let replay = tmp("demo-stripped-replay.json");
    let out = tasktrace()
        .args(["report", "-q", "--json"])
        .arg(&replay)
        .args(THRESHOLDS)
        .arg(&trace)
        .output()
        .unwrap();
    assert_success(&out, "report");
    let replay = read_report(&replay);
    assert_matches_truth(&replay, &truth);
    assert_eq!(replay["unavailable"], report["unavailable"]);
}
