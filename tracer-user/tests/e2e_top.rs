//! `tasktrace top` driven as a person would, inside tmux: attached to the demo with real
//! probes, keys sent with `send-keys`, the screen read with `capture-pane`, and checked
//! against the demo's ground truth; `--once` checked as the scripts' snapshot.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::*;

/// A tmux server of its own: the test never touches a user's sessions.
const SOCKET: &str = "tasktrace-e2e-top";

fn tmux(args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(["-L", SOCKET])
        .args(args)
        .output()
        .expect("tmux runs (scripts/setup.sh installs it)")
}

fn screen() -> String {
    String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
}

fn keys(k: &[&str]) {
    let mut args = vec!["send-keys", "-t", "top"];
    args.extend_from_slice(k);
    assert!(tmux(&args).status.success(), "send-keys {k:?}");
}

/// The screen once `pred` holds (up to `secs`), or a failure showing the last screen.
fn wait_for(what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = screen();
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < until,
            "the screen never showed {what}; it shows:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Kills the tmux server, and the demo it launched (named by its truth file), however
/// the test ends.
struct Server(String);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = tmux(&["kill-server"]);
        let _ = Command::new("pkill").args(["-f", &self.0]).status();
    }
}

/// The demo's ground truth, once it wrote its file.
fn read_truth(path: &std::path::Path) -> Truth {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return ground_truth(&s);
        }
        assert!(
            Instant::now() < until,
            "the demo wrote no ground truth to {}; the screen shows:\n{}",
            path.display(),
            screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `LEAKED(DEF/SUSP)` cell of the row naming `site`: definite + suspected.
fn leaked_on_row(screen: &str, site: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.contains(site))?;
    let cell = line.split_whitespace().find(|c| {
        c.split_once('/')
            .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok())
    })?;
    let (a, b) = cell.split_once('/')?;
    Some(a.parse::<u64>().ok()? + b.parse::<u64>().ok()?)
}

#[test]
fn top_in_a_terminal_finds_the_leaking_site_and_detaches() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let truth_file = tmp("top-truth");
    let _ = std::fs::remove_file(&truth_file);
    let json = tmp("top-saved.json");
    let html = tmp("top-saved.html");
    let _ = std::fs::remove_file(&json);
    let _ = tmux(&["kill-server"]);
    let _server = Server(truth_file.display().to_string());
    // Launched by top (its spawns are seen, with their sites); the demo's stdout is the
    // terminal top draws on, so its ground truth goes to a file.
    let cmd = format!(
        "{} top {} --json {} --html {} -- {} --truth-file {}; echo TOP_EXITED=$?; sleep 600",
        env!("CARGO_BIN_EXE_tasktrace"),
        THRESHOLDS.join(" "),
        json.display(),
        html.display(),
        fixture("demo").display(),
        truth_file.display()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "250",
        "-y",
        "50",
        &cmd,
    ]);
    assert!(started.status.success(), "tmux new-session: {started:?}");
    let truth = read_truth(&truth_file);
    // The site with the most leaked tasks, and its tasks.
    let mut by_site = std::collections::BTreeMap::<&str, Vec<u64>>::new();
    for id in &truth.leaked {
        if let Some(site) = truth.sites.get(id) {
            by_site.entry(site).or_default().push(*id);
        }
    }
    let (site, ids) = by_site
        .iter()
        .max_by_key(|(_, ids)| ids.len())
        .expect("the demo leaks at a known site");
    let short = site.trim_start_matches("src/");

    // The leaking site shows up with its ground-truth count once the threshold passed.
    let s = wait_for("the leaking site with its count", 30, |s| {
        leaked_on_row(s, short) == Some(ids.len() as u64)
    });
    assert!(s.contains("sample mode"), "the header names the mode:\n{s}");
    assert!(s.contains("spawn sites"), "{s}");

    // Sort by leaks: the site with the most comes first.
    keys(&["k"]);
    let s = wait_for("the sort by leaks", 10, |s| s.contains("sorted by leaked"));
    let first_row = s
        .lines()
        .skip_while(|l| !l.contains("LIVE"))
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(
        first_row.contains(short),
        "sorted by leaks, {short} comes first:\n{s}"
    );

    // Filter by the site's text: only matching rows remain.
    keys(&["/"]);
    keys(&["-l", short]);
    keys(&["Enter"]);
    let s = wait_for("the filter", 10, |s| {
        s.contains(&format!("filter: {short}"))
    });
    let rows: Vec<&str> = s
        .lines()
        .skip_while(|l| !l.contains("LIVE"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty() && !l.contains("live tasks over time"))
        .collect();
    assert!(!rows.is_empty(), "{s}");
    assert!(
        rows.iter().all(|r| r.contains(short)),
        "the filter keeps only rows naming {short}:\n{s}"
    );

    // Drill into the site: its live tasks, the leaked ones among them by id.
    keys(&["Enter"]);
    let s = wait_for("the site's tasks", 10, |s| s.contains("live tasks of"));
    for id in ids {
        assert!(
            s.lines()
                .any(|l| l.split_whitespace().next() == Some(&id.to_string())
                    && l.contains("leaked")),
            "the drill-down lists leaked task {id}:\n{s}"
        );
    }
    // Into the first task, and back out twice.
    keys(&["Enter"]);
    let s = wait_for("one task's detail", 10, |s| s.contains("spawned at:"));
    assert!(s.contains(short), "{s}");
    // One at a time: a terminal reads two escapes in a row as one Alt-Escape.
    keys(&["Escape"]);
    wait_for("the site's tasks again", 10, |s| {
        s.contains("live tasks of")
    });
    keys(&["Escape"]);
    wait_for("the site table again", 10, |s| s.contains("spawn sites"));

    // Save: the report written matches what the screen showed.
    keys(&["s"]);
    wait_for("the save message", 20, |s| s.contains("saved"));
    let report = read_report(&json);
    assert_eq!(report["window"]["ended_by"], "snapshot");
    let leaked = ids_with(&report, "leaked");
    for id in ids {
        assert!(leaked.contains(id), "saved report: task {id} leaked");
    }
    assert!(
        std::fs::read_to_string(&html).unwrap().contains("<html"),
        "the HTML report is saved too"
    );

    // Quit: tasktrace exits 0, the terminal is restored, and no probe is left.
    keys(&["q"]);
    let s = wait_for("tasktrace's exit", 30, |s| s.contains("TOP_EXITED="));
    assert!(s.contains("TOP_EXITED=0"), "exit status 0:\n{s}");
    assert!(
        s.contains("tasktrace: top ended"),
        "the terminal is restored:\n{s}"
    );
    assert_eq!(our_programs_after_exit(), 0, "no probe remains after q");
}

#[test]
fn top_once_prints_one_snapshot_for_scripts() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let truth_file = tmp("top-once-truth");
    let _ = std::fs::remove_file(&truth_file);
    let out = tasktrace()
        .args(["top", "--once", "--refresh", "4s"])
        .args(THRESHOLDS)
        .arg("--")
        .arg(fixture("demo"))
        .arg("--truth-file")
        .arg(&truth_file)
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "tasktrace top --once");
    let truth = ground_truth(&std::fs::read_to_string(&truth_file).unwrap());
    assert!(stdout.contains("SITE"), "{stdout}");
    // Every leaking site of the ground truth is a row with its count.
    let mut by_site = std::collections::BTreeMap::<&str, u64>::new();
    for id in &truth.leaked {
        if let Some(site) = truth.sites.get(id) {
            *by_site.entry(site).or_default() += 1;
        }
    }
    for (site, n) in by_site {
        let short = site.trim_start_matches("src/");
        assert_eq!(
            leaked_on_row(&stdout, short),
            Some(n),
            "{short}: {n} leaked\n{stdout}"
        );
    }
    assert!(
        !stdout.contains('\x1b'),
        "a snapshot for scripts has no terminal escapes"
    );
    assert_eq!(our_programs_after_exit(), 0);
}
