//! End to end: the flight recorder (`record --flight`) on a fixture whose leak starts
//! late, on a line on stdin. The first definite leak triggers an incident; its report
//! names the leaked tasks (ground-truth ids and site) and includes the tasks alive before
//! the ring's window; `tasktrace snapshot` asks for a second incident; the ring stays
//! bounded to its span.

mod common;

use std::{
    io::{BufRead, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

/// The incident files in `dir`, oldest first (their names end in a running number).
fn incidents(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "trace"));
    v.sort_by_key(|p| {
        let s = p.file_stem().unwrap().to_string_lossy().into_owned();
        s.rsplit('-').next().unwrap().parse::<u32>().unwrap()
    });
    v
}

fn wait_for(dir: &Path, n: usize, what: &str) -> Vec<PathBuf> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let found = incidents(dir);
        if found.len() >= n {
            return found;
        }
        assert!(Instant::now() < until, "no {what} in {}", dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect()
}

#[test]
fn a_late_leak_triggers_an_incident_that_names_it_with_the_tasks_from_before() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let bin = fixture("flight");
    let mut target = Target(
        Command::new(&bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(target.0.stdout.take().unwrap()).lines();
    let mut next = |prefix: &str| -> Value {
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {prefix}"));
        serde_json::from_str(&line).unwrap()
    };
    let truth = next("TASKTRACE_GROUND_TRUTH ");
    let dir = tmp("flight-incidents");
    let _ = std::fs::remove_dir_all(&dir);
    let pid = target.id().to_string();
    let mut recorder = Target(
        tasktrace()
            .args(["record", "--pid", &pid, "--flight", "3s", "-o"])
            .arg(&dir)
            .args(["--trigger", "leaked:definite", "-q"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Long enough for the ring to have dropped its first spans (3 s kept).
    std::thread::sleep(Duration::from_secs(6));
    assert!(incidents(&dir).is_empty(), "no leak yet, no incident");
    target
        .0
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"leak\n")
        .unwrap();
    target.0.stdin.as_mut().unwrap().flush().unwrap();
    let leak = next("TASKTRACE_LATE_LEAK ");
    let first = wait_for(&dir, 1, "incident after the leak").remove(0);

    // `tasktrace snapshot` asks the same recorder for another.
    let out = tasktrace()
        .args(["snapshot", "--pid", &pid])
        .output()
        .unwrap();
    let (_, stderr) = assert_success(&out, "snapshot");
    assert!(stderr.contains(&dir.display().to_string()), "{stderr}");
    let all = wait_for(&dir, 2, "incident asked by snapshot");
    assert_eq!(all.len(), 2, "one incident per trigger: {all:?}");
    assert_eq!(all[0], first);

    // SAFETY: signalling a child we started.
    unsafe { libc::kill(recorder.id() as i32, libc::SIGINT) };
    assert!(recorder.0.wait().unwrap().success());
    let pidfile = std::env::temp_dir().join(format!("tasktrace-flight-{pid}.pid"));
    assert!(!pidfile.exists(), "the recorder removes its pid file");

    for (i, incident) in all.iter().enumerate() {
        let json = tmp(&format!("flight-{i}.json"));
        let out = tasktrace()
            .arg("report")
            .arg(incident)
            .args(["-q", "--leak-after", "1s", "--json"])
            .arg(&json)
            .output()
            .unwrap();
        assert_success(&out, "report of an incident");
        let r = read_report(&json);
        let s = &r["summary"];
        // The ring's span, plus the second a reading may start late: never the whole run.
        let window_s = r["window"]["duration_ns"].as_u64().unwrap() as f64 / 1e9;
        assert!((2.0..5.0).contains(&window_s), "incident {i}: {window_s} s");
        assert_eq!(s["lost_events"], 0);
        let tasks = r["tasks"].as_array().unwrap();
        let mut definite: Vec<u64> = tasks
            .iter()
            .filter(|t| t["certainty"] == "definite")
            .map(|t| t["id"].as_u64().unwrap())
            .collect();
        definite.sort_unstable();
        assert_eq!(definite, ids(&leak["ids"]), "incident {i}: the late leak");
        assert_eq!(s["leaked_definite"], leak["count"], "incident {i}");
        for t in tasks.iter().filter(|t| t["certainty"] == "definite") {
            assert_eq!(t["spawned_at"], leak["site"], "incident {i}: {t}");
        }
        // The tasks alive from the start are alive before the ring's window.
        let before: Vec<u64> = tasks
            .iter()
            .filter(|t| t["alive_before_attach"] == true)
            .map(|t| t["id"].as_u64().unwrap())
            .collect();
        for id in ids(&truth["early"]) {
            assert!(
                before.contains(&id),
                "incident {i}: task {id} not in {before:?}"
            );
        }
        // Short requests alive at the ring's start finished in it: none is a leak.
        let leaked: u64 = s["leaked"].as_u64().unwrap();
        assert_eq!(
            leaked,
            leak["count"].as_u64().unwrap() + truth["early_idle"].as_u64().unwrap(),
            "incident {i}: the late leak and the idle tasks from the start"
        );
        let why = r["warnings"].to_string();
        let reason = if i == 0 {
            "trigger leaked:definite"
        } else {
            "asked"
        };
        assert!(why.contains(reason), "incident {i}: {why}");
    }
}

#[test]
fn snapshot_without_a_recorder_says_how_to_start_one() {
    let out = tasktrace()
        .args(["snapshot", "--pid", "999999"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no flight recorder"), "{stderr}");
    assert!(stderr.contains("--flight"), "{stderr}");
}

/// `--trigger growth:RATE`: the growth fixture's leaking site (5 live tasks more every
/// second) fires it, named in the incident; its steady site does not.
#[test]
fn a_growing_site_triggers_an_incident_naming_it() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (target, truth) = start_with_truth(&fixture("growth"), &[]);
    let dir = tmp("flight-growth");
    let _ = std::fs::remove_dir_all(&dir);
    let pid = target.id().to_string();
    let mut recorder = Target(
        tasktrace()
            // `record`'s default, sample mode: a task's end is known at the next reading
            // only, so the steady site of short tasks saw-tooths between readings (it
            // passed the threshold when counts were compared between them: +2.4/s).
            .args(["record", "--pid", &pid, "--flight", "10s"])
            .arg("-o")
            .arg(&dir)
            .args(["--trigger", "growth:2", "-q"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let incident = wait_for(&dir, 1, "incident on growth").remove(0);
    // SAFETY: signalling a child we started.
    unsafe { libc::kill(recorder.id() as i32, libc::SIGINT) };
    assert!(recorder.0.wait().unwrap().success());
    assert_eq!(incidents(&dir).len(), 1, "one site grew, once");
    let json = tmp("flight-growth.json");
    let out = tasktrace()
        .arg("report")
        .arg(&incident)
        .args(["-q", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert_success(&out, "report of the growth incident");
    let why = read_report(&json)["warnings"].to_string();
    let growing = truth["growing"].as_str().unwrap();
    assert!(why.contains(&format!("growth {growing} +")), "{why}");
    assert!(!why.contains(truth["steady"].as_str().unwrap()), "{why}");
}
