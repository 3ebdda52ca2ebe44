//! End to end, with a real Prometheus server (Debian's `prometheus`, started by the test
//! on loopback, scraping every second) queried through its HTTP API:
//! - `run --prometheus ADDR`: the matrix fixture's ground truth — leaked, stuck and
//!   never-polled tasks, leaks on its two leaking sites;
//! - `tasktrace agent --all`: two fixture processes and one that is not tokio; one
//!   fixture restarted; the leaked-task series of both pids of the restarted one, and of
//!   the other, equal the ground truth, and nothing is traced of the non-tokio process.

mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's single value (`None`: no series yet).
fn query(prometheus: &str, q: &str) -> Option<f64> {
    let body = http_get(prometheus, &format!("/api/v1/query?query={}", encode(q)))?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn a_real_prometheus_scrapes_the_ground_truth_of_a_traced_process() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let metrics = format!("127.0.0.1:{}", free_port());
    // Launched by `run`: every task is seen from its spawn, so the ground truth holds as
    // printed (attached later, the never-polled tasks alive before attach read as
    // starved: their polls before attach are unknowable).
    let mut recorder = Target(
        tasktrace()
            .args(["run", "--duration", "60s", "--prometheus", &metrics])
            .args(MATRIX_THRESHOLDS)
            .args(["-q", "--"])
            .arg(matrix_fixture("1.54", "release"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Read on a thread to the end: the report printed at exit must find its pipe open.
    let stdout = recorder.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if let Some(t) = l.strip_prefix("TASKTRACE_GROUND_TRUTH ") {
                let _ = tx.send(t.to_owned());
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("ground truth");
    let truth: Value = serde_json::from_str(&line).unwrap();
    let (web, _prometheus) = prometheus_scraping(&metrics, "prometheus");
    let sum = |metric: &str| format!("sum({metric}{{job=\"tasktrace\"}})");
    let want = [
        (
            sum("tasktrace_leaked_tasks"),
            truth["leaked"].as_f64().unwrap(),
        ),
        (
            sum("tasktrace_stuck_tasks"),
            truth["stuck"].as_f64().unwrap(),
        ),
        (
            sum("tasktrace_never_polled_tasks"),
            truth["never_polled"].as_f64().unwrap(),
        ),
        // The fixture's leaks wait at two sites: a Notify and a kept channel.
        ("count(tasktrace_leaked_tasks > 0)".to_owned(), 2.0),
        ("up{job=\"tasktrace\"}".to_owned(), 1.0),
        (sum("tasktrace_lost_events_total"), 0.0),
    ];
    until_agreed(&web, &want, "run --prometheus");
    // The live-task series carry the state label, and spawns count up.
    let live = query(&web, "sum(tasktrace_live_tasks{state=\"idle\"})");
    assert!(
        live.is_some_and(|n| n >= truth["leaked"].as_f64().unwrap()),
        "{live:?}"
    );
    let spawned = query(&web, &sum("tasktrace_spawned_tasks_total"));
    assert!(spawned.is_some_and(|n| n >= 10.0), "{spawned:?}");
    // SAFETY: signalling a child we started.
    unsafe { libc::kill(recorder.id() as i32, libc::SIGINT) };
    assert!(recorder.0.wait().unwrap().success());
}

/// A Prometheus server scraping `metrics` every second: (its address, the process).
fn prometheus_scraping(metrics: &str, name: &str) -> (String, Target) {
    let prometheus_bin = which("prometheus").expect("prometheus (scripts/setup.sh installs it)");
    let dir = tmp(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tasktrace\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let server = Target(
        Command::new(prometheus_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (web, server)
}

/// Waits until every query gives its value; fails with what Prometheus said instead.
fn until_agreed(web: &str, want: &[(String, f64)], what: &str) {
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        let got: Vec<Option<f64>> = want.iter().map(|(q, _)| query(web, q)).collect();
        if want
            .iter()
            .zip(&got)
            .all(|((_, w), g)| g.is_some_and(|g| g == *w))
        {
            return;
        }
        assert!(
            Instant::now() < until,
            "{what}: Prometheus never agreed: want {want:?}, got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_agent_follows_processes_and_a_restart_into_prometheus() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let bin = matrix_fixture("1.54", "release");
    let (mut first, truth) = start_with_truth(&bin, &[]);
    let (other, _) = start_with_truth(&bin, &[]);
    let not_tokio = Target(Command::new("sleep").arg("120").spawn().unwrap());
    let metrics = format!("127.0.0.1:{}", free_port());
    // In its default, sample mode: no per-task cost, verdicts from the readings.
    let mut agent = Target(
        tasktrace()
            .args(["agent", "--all", "--rescan", "1s", "--listen", &metrics])
            .args([
                "--leak-after",
                "1500ms",
                "--never-polled-after",
                "1500ms",
                "-q",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (web, _prometheus) = prometheus_scraping(&metrics, "prometheus-agent");
    let leaked = truth["leaked"].as_f64().unwrap();
    let now = |pid: u32| format!("sum(tasktrace_leaked_tasks{{pid=\"{pid}\"}})");
    let (a, b) = (first.id(), other.id());
    until_agreed(&web, &[(now(a), leaked), (now(b), leaked)], "two fixtures");
    // Restart the first: a new pid of the same executable, found by the next scan.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let (restarted, again) = start_with_truth(&bin, &[]);
    assert_eq!(again, truth);
    let c = restarted.id();
    let ever =
        |pid: u32| format!("max_over_time(sum(tasktrace_leaked_tasks{{pid=\"{pid}\"}})[5m:1s])");
    until_agreed(
        &web,
        &[(now(c), leaked), (now(b), leaked), (ever(a), leaked)],
        "after the restart",
    );
    // The exited pid's series went stale with its session (other tokio processes of the
    // machine may be traced too: `--all`).
    let until = Instant::now() + Duration::from_secs(20);
    while query(&web, &now(a)).is_some() {
        assert!(Instant::now() < until, "pid {a} still has live series");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The non-tokio process: no series at all.
    let none = query(&web, &format!("count({{pid=\"{}\"}})", not_tokio.id()));
    assert_eq!(none, None, "a series of the non-tokio process");
    // pprof and the report of one target, through the agent.
    let body = http_get(&metrics, &format!("/report.json?pid={c}")).unwrap();
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["target"]["pid"], c);
    assert_eq!(report["summary"]["leaked"].as_f64(), Some(leaked));
    let profile = tmp("agent-leaked.pb.gz");
    let mut s = TcpStream::connect(&metrics).unwrap();
    write!(s, "GET /debug/pprof/leaked?pid={c} HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    std::fs::write(&profile, &raw[at..]).unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(&profile)
        .output()
        .expect("go (scripts/setup.sh installs golang-go)");
    let raw = String::from_utf8_lossy(&out.stdout);
    let samples = raw.split_once("Locations").unwrap().0;
    let total: f64 = samples
        .lines()
        .filter_map(|l| l.trim().split_once(": ")?.0.parse::<f64>().ok())
        .sum();
    assert_eq!(total, leaked, "the agent's leak profile: {raw}");
    // SAFETY: signalling a child we started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGINT) };
    assert!(agent.0.wait().unwrap().success(), "the agent stops cleanly");
    drop((other, restarted));
}

#[test]
fn a_taken_metrics_address_is_refused_before_attaching() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tasktrace()
        .args(["record", "--pid", "1", "--prometheus", &addr])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot serve metrics"), "{stderr}");
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The alert rules the user guide gives are valid for Prometheus (`promtool`).
#[test]
fn the_user_guides_alert_rules_pass_promtool() {
    let guide = std::fs::read_to_string(root().join("docs/user-guide.md")).unwrap();
    let start = guide.find("# rules.yml\n").expect("the guide's rules");
    let rules = &guide[start + "# rules.yml\n".len()..];
    let rules = &rules[..rules.find("```").unwrap()];
    let file = tmp("rules.yml");
    std::fs::write(&file, rules).unwrap();
    let promtool = which("promtool").expect("promtool (Debian's prometheus, scripts/setup.sh)");
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("SUCCESS: 2 rules found"), "{stdout}");
}
