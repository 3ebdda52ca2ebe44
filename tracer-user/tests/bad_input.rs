//! Bad input gets a clear message, a defined exit status, and never a panic or a probe
//! left behind.

mod common;

use std::{
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use common::*;

fn assert_refused(out: &std::process::Output, code: i32, needles: &[&str]) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
    assert!(
        stderr.contains("hint:"),
        "every refusal says what to do:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_pid() {
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for verb in ["record", "dump"] {
        let out = tasktrace()
            .args([verb, "--pid", &(pid_max + 1).to_string()])
            .output()
            .unwrap();
        assert_refused(&out, 2, &["no process with pid"]);
    }
}

#[test]
fn missing_command() {
    let out = tasktrace()
        .args(["run", "--", "/nonexistent/tasktrace-no-such-program"])
        .output()
        .unwrap();
    assert_refused(&out, 2, &["command not found"]);
    let out = tasktrace()
        .args(["run", "--", "tasktrace-no-such-program-on-path"])
        .output()
        .unwrap();
    assert_refused(&out, 2, &["command not found"]);
}

#[test]
fn process_that_is_not_tokio() {
    let sleeper = Target(Command::new("sleep").arg("30").spawn().unwrap());
    for verb in ["record", "dump"] {
        let out = tasktrace()
            .args([verb, "--pid", &sleeper.id().to_string()])
            .output()
            .unwrap();
        assert_refused(&out, 2, &["does not contain the tokio runtime"]);
    }
}

#[test]
fn binary_with_symbols_but_no_tokio() {
    let src = tmp("plain.c");
    let bin = tmp("plain");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let status = Command::new("cc")
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .status()
        .unwrap();
    assert!(status.success());
    let out = tasktrace().args(["run", "--"]).arg(&bin).output().unwrap();
    assert_refused(&out, 2, &["does not contain the tokio runtime"]);
}

/// A stripped tokio binary is traced from the task vtables in its read-only data (see
/// e2e_demo); one without any (tasktrace itself spawns no task) cannot be, and says so.
#[test]
fn stripped_tokio_binary_without_task_vtables() {
    let stripped = stripped_copy(
        std::path::Path::new(env!("CARGO_BIN_EXE_tasktrace")),
        "tasktrace-stripped",
    );
    let out = tasktrace()
        .args(["run", "--"])
        .arg(&stripped)
        .arg("--version")
        .output()
        .unwrap();
    assert_refused(
        &out,
        2,
        &["is stripped", "no task vtable was found", "tokio 1."],
    );
}

#[test]
fn not_an_executable_format() {
    let script = tmp("script.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = tasktrace()
        .args(["run", "--"])
        .arg(&script)
        .output()
        .unwrap();
    assert_refused(&out, 2, &["is not a program tasktrace can trace"]);
}

#[test]
fn bad_options_are_usage_errors() {
    let out = tasktrace()
        .args(["record", "--pid", "1", "--leak-after", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("not a duration"));
    let out = tasktrace()
        .args(["record", "--pid", "1", "--fail-on", "slow"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("not a verdict"));
}

/// Every option, given an absurd value, is refused with exit 2 and a message, before
/// anything is attached or launched: never a panic.
#[test]
fn absurd_values_of_every_option_are_refused_without_a_panic() {
    let dir = tmp("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.to_str().unwrap();
    let huge = "99999999999999999999999";
    let run = |opts: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["run".into()];
        v.extend(opts.iter().map(|s| s.to_string()));
        v.extend(["--".into(), "/bin/true".into()]);
        v
    };
    let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases: Vec<Vec<String>> = vec![
        run(&["--duration", &format!("{huge}h")]),
        run(&["--duration", "-5s"]),
        run(&["--duration", "1e400s"]),
        run(&["--duration", "NaN"]),
        run(&["--ring-size", "0"]),
        run(&["--ring-size", "18446744073709551615K"]),
        run(&["--ring-size", &format!("{huge}G")]),
        run(&["--ring-size", "3M"]),
        run(&["--leak-after", "inf"]),
        run(&["--stuck-after", &format!("{huge}m")]),
        run(&["--never-polled-after", "-1ms"]),
        run(&["--fail-on", "leaked,,"]),
        run(&["--mode", "turbo"]),
        run(&["-o", "/nonexistent-dir/x.trace"]),
        run(&["--html", "/nonexistent-dir/x.html"]),
        run(&["--perfetto", "/nonexistent-dir/x.json"]),
        run(&["--json", dir]),
        run(&["--symbols", "/nonexistent-symbols"]),
        owned(&["record", "--pid", "0"]),
        owned(&["record", "--pid", "-1"]),
        owned(&["record", "--pid", huge]),
        owned(&["report", dir]),
        owned(&["report", "/nonexistent.trace"]),
        owned(&["report", "/dev/null"]),
        owned(&["inspect", "/dev/null"]),
        owned(&["inspect", "--pid", "0"]),
        owned(&["dump", "--pid", "0"]),
        owned(&["dump", "--pid", huge]),
        owned(&["synth-trace", "/tmp/x.trace", "--events", "0"]),
        owned(&["synth-trace", "/tmp/x.trace", "--events", huge]),
    ];
    for args in cases {
        let out = tasktrace().args(&args).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains("error"), "{args:?} says why: {stderr}");
    }
}

#[test]
fn unwritable_report_path_fails_before_attaching() {
    let out = tasktrace()
        .args([
            "run",
            "--json",
            "/nonexistent-dir/report.json",
            "--",
            "/bin/true",
        ])
        .output()
        .unwrap();
    assert_refused(&out, 2, &["cannot write /nonexistent-dir/report.json"]);
}

/// Runs tasktrace as `nobody`: loading eBPF and reading another user's process are refused.
#[test]
fn lacking_privileges() {
    if !require_bpf() {
        return;
    }
    let demo = fixture("demo");
    // The build tree may sit where `nobody` cannot reach (e.g. under /root): run a copy
    // from the world-readable test directory.
    let tasktrace_copy = tmp("tasktrace-for-nobody");
    std::fs::copy(env!("CARGO_BIN_EXE_tasktrace"), &tasktrace_copy).unwrap();
    std::fs::set_permissions(
        &tasktrace_copy,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        tasktrace_copy.parent().unwrap(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let as_nobody = || {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&tasktrace_copy);
        c
    };
    // Tracing a root process: its executable cannot even be read.
    let mut target = Target(Command::new(&demo).stdout(Stdio::null()).spawn().unwrap());
    sleep(Duration::from_millis(200));
    for verb in ["record", "dump"] {
        let out = as_nobody()
            .args([verb, "--pid", &target.id().to_string()])
            .output()
            .unwrap();
        assert_refused(&out, 4, &["insufficient privileges"]);
    }
    let _ = target.kill();
    let _ = target.wait();
    // Launching a readable program: the eBPF load is refused.
    let copy = tmp("fixture-demo-for-nobody");
    std::fs::copy(&demo, &copy).unwrap();
    let dir = copy.parent().unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = as_nobody()
        .args(["run", "--duration", "1s", "--"])
        .arg(&copy)
        .output()
        .unwrap();
    assert_refused(&out, 4, &["insufficient privileges"]);
}

/// Reports written to streams stay streams: as root, renaming a finished report over
/// `/dev/null` replaced the system's device node with a regular file (every later reader
/// of /dev/null got old reports). Streams are written in place.
#[test]
fn streams_are_written_in_place_and_dev_null_stays_a_device() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let trace = tmp("streams.trace");
    let out = tasktrace()
        .arg("synth-trace")
        .arg(&trace)
        .args(["--events", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let before = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(
        before.file_type().is_char_device(),
        "/dev/null is a device to begin with"
    );
    let out = tasktrace()
        .arg("report")
        .arg(&trace)
        .args(["-q", "--json", "/dev/null", "--perfetto", "/dev/null"])
        .args(["--html", "/dev/stdout"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("<html"),
        "the HTML went to standard output"
    );
    let after = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(
        after.file_type().is_char_device(),
        "/dev/null is still a device"
    );
    assert_eq!(after.rdev(), before.rdev());
    assert!(
        std::fs::symlink_metadata("/dev/stdout")
            .unwrap()
            .file_type()
            .is_symlink(),
        "/dev/stdout is still the symlink it was"
    );
    // A recording to /dev/null works the same way (written, never renamed).
    let out = tasktrace()
        .args([
            "run",
            "-q",
            "--duration",
            "1s",
            "-o",
            "/dev/null",
            "--",
            "/bin/true",
        ])
        .output()
        .unwrap();
    let after = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(after.file_type().is_char_device(), "{out:?}");
    let _ = std::fs::remove_file(&trace);
}
