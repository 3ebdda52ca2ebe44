//! tasktrace among other processes: two tracers on one target and one on another at the
//! same time, a target in its own pid and mount namespace (a container's view), and a
//! tracer holding exactly CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE, no more.

mod common;

use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use common::*;
use serde_json::Value;

/// Attached late to the demo: the leaks are exactly the demo's, and nothing is flagged
/// that the demo did not build to be (never-polled tasks show as notified and not run
/// since attach: stuck, starved; `tests/e2e_late.rs`).
fn assert_late_verdicts(report: &Value, truth: &Truth, who: &str) {
    assert_eq!(ids_with(report, "leaked"), truth.leaked, "{who}: leaked");
    let stuck: BTreeSet<u64> = truth.stuck.union(&truth.never_polled).copied().collect();
    let got = ids_with(report, "stuck");
    assert!(
        got.is_subset(&stuck),
        "{who}: stuck {got:?}, truth {stuck:?}"
    );
    assert!(
        ids_with(report, "never_polled").is_subset(&truth.never_polled),
        "{who}"
    );
}

#[test]
fn two_tracers_on_one_target_and_a_third_on_another_are_independent() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (a, truth_a) = start_with_truth(&fixture("demo"), &[]);
    let (b, truth_b) = start_with_truth(&fixture("demo"), &[]);
    let (truth_a, truth_b) = (truth_of(&truth_a), truth_of(&truth_b));
    let files: Vec<PathBuf> = ["two-a1.json", "two-a2.json", "two-b.json"]
        .iter()
        .map(|n| tmp(n))
        .collect();
    let tracers = vec![
        record_in_background(a.id(), &files[0], "6s"),
        record_in_background(a.id(), &files[1], "5s"),
        record_in_background(b.id(), &files[2], "6s"),
    ];
    sleep(Duration::from_secs(2));
    assert_eq!(our_programs(), 6, "three tracers, two programs each");
    for t in tracers {
        let out = t.wait_with_output().unwrap();
        assert_success(&out, "tasktrace record");
    }
    for (file, truth, who) in [
        (&files[0], &truth_a, "first on A"),
        (&files[1], &truth_a, "second on A"),
        (&files[2], &truth_b, "on B"),
    ] {
        let report = read_report(file);
        assert_late_verdicts(&report, truth, who);
        assert_eq!(report["summary"]["lost_events"], 0, "{who}");
    }
    assert_eq!(our_programs_after_exit(), 0, "every tracer detached");
    assert!(a.0.id() != b.0.id());
}

/// The demo in its own pid and mount namespace, run from a path that exists only inside
/// (a tmpfs mounted in its namespace): attached from the host by its host pid.
#[test]
fn a_target_in_its_own_pid_and_mount_namespace() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let inside = tmp("only-inside");
    let _ = std::fs::create_dir_all(&inside);
    let script = format!(
        "mount -t tmpfs tmpfs {d} && cp {demo} {d}/app && exec {d}/app",
        d = inside.display(),
        demo = fixture("demo").display()
    );
    let mut outer = Target(
        Command::new("unshare")
            .args([
                "--pid",
                "--mount",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "sh",
                "-c",
                &script,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = outer.0.stdout.take().unwrap();
    let truth: Value = {
        use std::io::BufRead;
        let line = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("TASKTRACE_GROUND_TRUTH ").map(str::to_owned))
            .expect("the namespaced demo printed its ground truth");
        serde_json::from_str(&line).unwrap()
    };
    let truth = truth_of(&truth);
    // The demo: unshare's child, pid 1 of its namespace.
    let children =
        std::fs::read_to_string(format!("/proc/{p}/task/{p}/children", p = outer.id())).unwrap();
    let host_pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        !inside.join("app").exists(),
        "the binary's path exists only inside the namespace"
    );
    let json = tmp("namespaced.json");
    let out = tasktrace()
        .args(["record", "--duration", "5s", "--pid"])
        .arg(host_pid.to_string())
        .arg("--json")
        .arg(&json)
        .args(THRESHOLDS)
        .output()
        .unwrap();
    let (text, _) = assert_success(&out, "tasktrace record");
    let report = read_report(&json);
    assert_eq!(report["target"]["pid"], host_pid);
    assert_eq!(
        report["target"]["pid_in_namespace"], 1,
        "the container's view"
    );
    assert!(text.contains("(pid 1 in its pid namespace)"), "{text}");
    assert!(
        report["target"]["binary"]
            .as_str()
            .is_some_and(|b| b.ends_with("/only-inside/app")),
        "{}",
        report["target"]
    );
    assert_late_verdicts(&report, &truth, "namespaced");
    let dump = tasktrace()
        .args(["dump", "--pid"])
        .arg(host_pid.to_string())
        .output()
        .unwrap();
    let (dump_text, _) = assert_success(&dump, "tasktrace dump");
    assert!(
        dump_text.contains("(pid 1 in its pid namespace)"),
        "{dump_text}"
    );
    let inspect = tasktrace()
        .args(["inspect", "--pid"])
        .arg(host_pid.to_string())
        .output()
        .unwrap();
    let (inspect_text, _) = assert_success(&inspect, "tasktrace inspect --pid");
    assert!(
        inspect_text.contains("tokio:         1.54.1"),
        "{inspect_text}"
    );
    assert_eq!(our_programs_after_exit(), 0);
}

/// A copy of tasktrace that an unprivileged user can run, and a directory it can write.
fn for_nobody(name: &str) -> (PathBuf, PathBuf) {
    let dir = tmp(name);
    let _ = std::fs::create_dir_all(&dir);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(
        dir.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let exe = dir.join("tasktrace");
    std::fs::copy(env!("CARGO_BIN_EXE_tasktrace"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    (exe, dir)
}

/// `setpriv` as `nobody` keeping only `caps` (inheritable, ambient and bounding sets).
fn as_nobody_with(caps: &str, exe: &std::path::Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps=-all{caps}"),
        &format!("--ambient-caps=-all{caps}"),
        &format!("--bounding-set=-all{caps}"),
        "--",
    ])
    .arg(exe);
    c
}

/// Least privilege: exactly CAP_BPF + CAP_PERFMON + CAP_SYS_PTRACE, as `nobody`, traces a
/// root process; without CAP_PERFMON it is refused with exit 4, naming it.
#[test]
fn exactly_cap_bpf_perfmon_and_sys_ptrace_suffice() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (exe, dir) = for_nobody("least-privilege");
    let (target, truth) = start_with_truth(&fixture("demo"), &[]);
    let truth = truth_of(&truth);
    let json = dir.join("report.json");
    let out = as_nobody_with(",+bpf,+perfmon,+sys_ptrace", &exe)
        .args(["record", "--duration", "5s", "--pid"])
        .arg(target.id().to_string())
        .arg("--json")
        .arg(&json)
        .args(THRESHOLDS)
        .output()
        .unwrap();
    assert_success(&out, "tasktrace as nobody with three capabilities");
    let report = read_report(&json);
    assert_late_verdicts(&report, &truth, "least privilege");
    assert_eq!(our_programs_after_exit(), 0);
    let out = as_nobody_with(",+bpf,+sys_ptrace", &exe)
        .args(["record", "--duration", "2s", "--pid"])
        .arg(target.id().to_string())
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("(this process lacks CAP_PERFMON)"),
        "names the missing capability: {stderr}"
    );
    assert_eq!(our_programs_after_exit(), 0);
}
