//! The ways tasktrace adapts to the kernel it runs on, each forced on this host so that
//! every path is tested on every run: per-site perf-event uprobes (kernels without a
//! usable `uprobe_multi`, before 6.10) and no kernel BTF (no thread sampler). Inside
//! booted 6.1 and 6.12 guests the same demo runs through `cargo xtask kernels`.

mod common;

use std::{
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use common::*;

#[test]
fn per_site_perf_links_give_the_demo_its_verdicts_and_all_go() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let json = tmp("attach-perf.json");
    let out = tasktrace()
        .args(["run", "--attach", "perf", "--duration", "6s", "--json"])
        .arg(&json)
        .args(THRESHOLDS)
        .arg("--")
        .arg(fixture("demo"))
        .output()
        .unwrap();
    let (stdout, stderr) = assert_success(&out, "tasktrace");
    let report = read_report(&json);
    assert_matches_truth(&report, &ground_truth(&stdout));
    assert_eq!(report["probes"]["attach"], "perf", "{}", report["probes"]);
    assert!(report["probes"]["sites"].as_u64() > Some(10));
    assert!(stderr.contains("detached"), "{stderr}");
    assert_eq!(
        our_programs_after_exit(),
        0,
        "no per-site link outlives tasktrace"
    );
}

/// A tracer killed outright cannot detach; the kernel must, since every per-site link is
/// a file descriptor of the dead process.
#[test]
fn a_killed_tracer_leaves_no_per_site_link() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let mut target = Target(
        Command::new(fixture("demo"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    sleep(Duration::from_millis(300));
    let mut tracer = tasktrace()
        .args(["record", "--attach", "perf", "-q", "--pid"])
        .arg(target.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The two programs load one after the other, then attach site by site.
    let mut loaded = 0;
    for _ in 0..100 {
        loaded = our_programs();
        if loaded == 2 {
            break;
        }
        sleep(Duration::from_millis(100));
    }
    assert_eq!(loaded, 2, "both per-site programs load while tracing");
    sleep(Duration::from_millis(500));
    tracer.kill().unwrap();
    tracer.wait().unwrap();
    // The kernel releases ~100 ms a link on this kernel; give it time.
    let mut left = our_programs();
    for _ in 0..600 {
        if left == 0 {
            break;
        }
        sleep(Duration::from_millis(100));
        left = our_programs();
    }
    assert_eq!(left, 0, "the kernel detached what the killed tracer held");
    assert!(
        target.try_wait().unwrap().is_none(),
        "the traced process keeps running"
    );
    let _ = target.kill();
    let _ = target.wait();
}

/// A kernel without BTF: the thread sampler cannot find thread-locals, so the plan probes
/// poll returns and wakes instead, says so, and the verdicts stay right.
#[test]
fn without_kernel_btf_the_plan_probes_returns_and_wakes_and_says_so() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let json = tmp("no-btf.json");
    let out = tasktrace()
        .env("TASKTRACE_KERNEL_BTF", "/nonexistent/vmlinux")
        .args(["run", "--duration", "6s", "--json"])
        .arg(&json)
        .args(THRESHOLDS)
        .arg("--")
        .arg(fixture("demo"))
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "tasktrace");
    let report = read_report(&json);
    assert_matches_truth(&report, &ground_truth(&stdout));
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("has no BTF") && warnings.contains("poll returns and wakes are probed"),
        "{warnings}"
    );
    let inspect = tasktrace()
        .env("TASKTRACE_KERNEL_BTF", "/nonexistent/vmlinux")
        .arg("inspect")
        .arg(fixture("demo"))
        .output()
        .unwrap();
    let (text, _) = assert_success(&inspect, "tasktrace inspect");
    assert!(text.contains("BTF no, thread sampler off"), "{text}");
    // With BTF the same binary gets the one-hit-per-poll plan: no return probe on polls.
    let inspect = tasktrace()
        .arg("inspect")
        .arg(fixture("demo"))
        .output()
        .unwrap();
    let (with_btf, _) = assert_success(&inspect, "tasktrace inspect");
    assert!(with_btf.contains("thread sampler on"), "{with_btf}");
    for event in ["poll_end", "wake_by_val"] {
        assert!(
            text.contains(event) && !with_btf.contains(event),
            "{event} is probed without BTF only:\n{text}\nwith BTF:\n{with_btf}"
        );
    }
}
