//! Shared by the end-to-end tests: privileges check, fixture builds, running tasktrace,
//! and comparing its report with the ground truth the fixture prints.
#![allow(dead_code)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Mutex, MutexGuard, OnceLock},
};

use serde_json::Value;

/// e2e tests attach real probes: they need root and fail loudly without it, unless the
/// caller opts out explicitly with TASKTRACE_SKIP_BPF_TESTS=1 (CI never does).
pub fn require_bpf() -> bool {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("TASKTRACE_SKIP_BPF_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: not root and TASKTRACE_SKIP_BPF_TESTS=1");
        return false;
    }
    panic!(
        "e2e tests attach eBPF uprobes and need root; run them as root (sudo), or set TASKTRACE_SKIP_BPF_TESTS=1 to skip them explicitly"
    );
}

/// One traced scenario at a time: the timings of the fixtures assume a quiet machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The tasktrace under test. A machine whose environment names debuginfod servers (some
/// distributions set `DEBUGINFOD_URLS` for every login) would have every window of a
/// binary without types ask them: the tests that want a server set their own.
pub fn tasktrace() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tasktrace"));
    c.env_remove("DEBUGINFOD_URLS");
    c
}

/// The release-built fixture binary, built on first use (the test command builds all of
/// them up front through `cargo xtask fixtures`).
pub fn fixture(name: &str) -> PathBuf {
    fixture_built(name, None)
}

/// The fixture built with one of its cargo features (in `target/FEATURE/`): the same
/// source, another build, as a deploy would ship it.
pub fn fixture_with(name: &str, feature: &str) -> PathBuf {
    fixture_built(name, Some(feature))
}

fn fixture_built(name: &str, feature: Option<&str>) -> PathBuf {
    // (fixture, feature) pairs built by this test process.
    type Builds = BTreeSet<(String, Option<String>)>;
    static BUILT: OnceLock<Mutex<Builds>> = OnceLock::new();
    let dir = root().join("fixtures").join(name);
    let target = match feature {
        Some(f) => dir.join("target").join(f),
        None => dir.join("target"),
    };
    let bin = target.join("release").join(format!("fixture-{name}"));
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if built.insert((name.to_owned(), feature.map(str::to_owned))) {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["build", "--release", "--locked", "--quiet"]);
        if let Some(f) = feature {
            cargo
                .args(["--features", f])
                .arg("--target-dir")
                .arg(&target);
        }
        let status = cargo
            .arg("--manifest-path")
            .arg(dir.join("Cargo.toml"))
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "building fixture {name} ({feature:?}) failed"
        );
    }
    bin
}

pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tasktrace-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Ids the fixture says must get each verdict.
#[derive(Debug, Default)]
pub struct Truth {
    pub leaked: BTreeSet<u64>,
    pub stuck: BTreeSet<u64>,
    pub never_polled: BTreeSet<u64>,
    pub long_poll: BTreeSet<u64>,
    /// Leaked tasks that can never run again (`certainty: definite`); none unless listed.
    pub definite: BTreeSet<u64>,
    /// Task id → the `file:line:col` tokio received for its spawn.
    pub sites: std::collections::BTreeMap<u64, String>,
}

pub fn ground_truth(stdout: &str) -> Truth {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TASKTRACE_GROUND_TRUTH "))
        .unwrap_or_else(|| panic!("fixture printed no ground truth; stdout:\n{stdout}"));
    let v: Value = serde_json::from_str(line).expect("ground truth is JSON");
    let ids = |k: &str| {
        v[k].as_array()
            .map(|a| a.iter().map(|x| x.as_u64().unwrap()).collect())
            .unwrap_or_default()
    };
    let sites = v["sites"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.parse().unwrap(), v.as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    Truth {
        leaked: ids("leaked"),
        stuck: ids("stuck"),
        never_polled: ids("never_polled"),
        long_poll: ids("long_poll"),
        definite: ids("definite"),
        sites,
    }
}

/// `tasktrace record --pid PID --duration D --json JSON` with the e2e thresholds, in the
/// background (stdout and stderr piped).
pub fn record_in_background(pid: u32, json: &Path, duration: &str) -> std::process::Child {
    record_in_background_with(pid, json, duration, &[])
}

/// [`record_in_background`] with more options (`--mode full` …).
pub fn record_in_background_with(
    pid: u32,
    json: &Path,
    duration: &str,
    extra: &[&str],
) -> std::process::Child {
    tasktrace()
        .args(["record", "--duration", duration, "--pid"])
        .arg(pid.to_string())
        .args(extra)
        .arg("--json")
        .arg(json)
        .args(THRESHOLDS)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The ground truth [`start_with_truth`] returned, as [`ground_truth`] reads it.
pub fn truth_of(v: &Value) -> Truth {
    ground_truth(&format!("TASKTRACE_GROUND_TRUTH {v}"))
}

pub fn read_report(path: &Path) -> Value {
    let body = std::fs::read(path).unwrap_or_else(|e| panic!("report {}: {e}", path.display()));
    serde_json::from_slice(&body).expect("report is JSON")
}

/// Ids of the leaked tasks the report calls certain.
pub fn definite_ids(report: &Value) -> BTreeSet<u64> {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["certainty"] == "definite")
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

pub fn ids_with(report: &Value, verdict: &str) -> BTreeSet<u64> {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["verdict"] == verdict)
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

/// Every flagged task is exactly the ground truth's, every other task is ok, and the
/// summary agrees with the task list.
pub fn assert_matches_truth(report: &Value, truth: &Truth) {
    assert_eq!(ids_with(report, "leaked"), truth.leaked, "leaked tasks");
    // No false `definite`: only tasks the fixture built to be unreachable.
    assert_eq!(definite_ids(report), truth.definite, "definite leaks");
    assert_eq!(
        report["diagnostics"]["definite_contradicted"], 0,
        "no proven-dead task ran again"
    );
    assert_eq!(ids_with(report, "stuck"), truth.stuck, "stuck tasks");
    assert_eq!(
        ids_with(report, "never_polled"),
        truth.never_polled,
        "never-polled tasks"
    );
    let long: BTreeSet<u64> = report["long_polls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["task_id"].as_u64().unwrap())
        .collect();
    assert_eq!(long, truth.long_poll, "long polls");
    let s = &report["summary"];
    for (k, n) in [
        ("leaked", truth.leaked.len()),
        ("stuck", truth.stuck.len()),
        ("never_polled", truth.never_polled.len()),
        ("long_polls", truth.long_poll.len()),
    ] {
        assert_eq!(s[k].as_u64(), Some(n as u64), "summary.{k}");
    }
    for k in ["tasks_seen", "alive", "lost_events"] {
        assert!(s[k].is_u64(), "summary.{k} is an integer");
    }
    assert_eq!(s["lost_events"], 0, "no events lost");
    let tasks = report["tasks"].as_array().unwrap();
    // Tasks that finished healthy may be counted per site instead of listed (`--keep`).
    assert_eq!(
        s["tasks_seen"].as_u64(),
        Some(tasks.len() as u64 + s["folded"].as_u64().expect("summary.folded"))
    );
    // Healthy traffic was traced (so "ok" is a verdict, not an absence of data).
    let healthy_polled = tasks
        .iter()
        .filter(|t| t["verdict"] == "ok" && t["polls"].as_u64() > Some(5))
        .count();
    assert!(
        healthy_polled >= 2,
        "the ticker and the consumer were traced as ok"
    );
    for t in tasks {
        for k in ["id", "kind", "verdict", "polls"] {
            assert!(!t[k].is_null(), "tasks[].{k}");
        }
        assert!(t.get("spawned_at_ns").is_some(), "tasks[].spawned_at_ns");
    }
}

/// [`assert_matches_truth`] for the modes that probe no poll (`lifecycle`, `sample`):
/// leaks exact, definite leaks exact; the starved task, polled once before the first
/// reading, may come out never polled instead of stuck (both flagged); no poll counts.
pub fn assert_matches_truth_without_polls(report: &Value, truth: &Truth) {
    assert_eq!(ids_with(report, "leaked"), truth.leaked, "leaked tasks");
    assert_eq!(definite_ids(report), truth.definite, "definite leaks");
    assert_eq!(report["diagnostics"]["definite_contradicted"], 0);
    let flagged: BTreeSet<u64> = ids_with(report, "stuck")
        .union(&ids_with(report, "never_polled"))
        .copied()
        .collect();
    let expected: BTreeSet<u64> = truth.stuck.union(&truth.never_polled).copied().collect();
    assert_eq!(flagged, expected, "stuck or never polled");
    assert!(
        truth
            .never_polled
            .is_subset(&ids_with(report, "never_polled")),
        "never-polled tasks"
    );
    assert_eq!(report["summary"]["lost_events"], 0, "no events lost");
}

/// Names of the loaded BPF programs (bpftool), to prove tasktrace leaves none behind.
pub fn loaded_programs() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .expect("bpftool (scripts/setup.sh installs it)");
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn our_programs() -> usize {
    loaded_programs()
        .iter()
        .filter(|n| {
            [
                "task_entry",
                "task_return",
                "task_entry_one",
                "task_return_one",
            ]
            .contains(&n.as_str())
        })
        .count()
}

/// tasktrace's programs once the kernel has finished releasing them: the last reference
/// goes away asynchronously (RCU), so give it up to two seconds.
pub fn our_programs_after_exit() -> usize {
    for _ in 0..20 {
        if our_programs() == 0 {
            return 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    our_programs()
}

/// Spawn sites: every site the fixture recorded is reported exactly, and every other
/// resolved `file:line:col` points at a spawn call in the fixture's own source (never at
/// tokio or std). Returns (resolved, user tasks) for the caller's coverage checks.
pub fn assert_spawn_sites(report: &Value, truth: &Truth, fixture: &str) -> (usize, usize) {
    let tasks = report["tasks"].as_array().unwrap();
    for (id, site) in &truth.sites {
        let t = tasks
            .iter()
            .find(|t| t["id"].as_u64() == Some(*id))
            .unwrap_or_else(|| panic!("task {id} missing"));
        assert_eq!(
            t["spawned_at"].as_str(),
            Some(site.as_str()),
            "spawn site of task {id}"
        );
    }
    let source =
        std::fs::read_to_string(root().join("fixtures").join(fixture).join("src/main.rs")).unwrap();
    let lines: Vec<&str> = source.lines().collect();
    // Tasks the program spawned: not runtime plumbing, and not the blocking tasks tokio
    // spawns for itself (worker threads that never hosted a poll have no site).
    let user: Vec<&Value> = tasks
        .iter()
        .filter(|t| t["runtime_plumbing"] == false)
        .filter(|t| !(t["kind"] == "blocking" && t["spawned_at"].is_null()))
        .collect();
    let mut resolved = 0;
    for t in &user {
        let Some(site) = t["spawned_at"].as_str() else {
            continue;
        };
        resolved += 1;
        assert!(
            !site.contains("tokio-1.") && !site.starts_with("/rustc/"),
            "runtime-internal site {site}"
        );
        let Some(rest) = site.strip_prefix("src/main.rs:") else {
            // Otherwise the calling function: one of the fixture's own (possibly inlined
            // into std, e.g. a thread's closure), at an offset.
            assert!(
                site.starts_with(&format!("fixture_{fixture}::")) && site.contains("+0x"),
                "{site} is not a function of the fixture"
            );
            continue;
        };
        let mut parts = rest.split(':');
        let line: usize = parts.next().unwrap().parse().unwrap();
        let col: usize = parts.next().unwrap().parse().unwrap();
        let text = &lines[line - 1][col - 1..];
        let call = text.split('(').next().unwrap();
        // A runtime's worker threads are blocking tasks its `Builder::build` spawns.
        let runtime_build = t["kind"] == "blocking" && call == "build";
        assert!(
            call.contains("spawn") || runtime_build,
            "{site} does not point at a spawn call: {text}"
        );
    }
    (resolved, user.len())
}

/// A fixture built with another profile of its Cargo.toml (e.g. the demo's `lines`).
pub fn fixture_profile(name: &str, profile: &str) -> PathBuf {
    built(
        &root().join("fixtures").join(name),
        &format!("fixture-{name}"),
        profile,
    )
}

/// A matrix cell's binary: fixtures/matrix/tokio-VERSION built with PROFILE (built on
/// first use; the test command builds them all up front through `cargo xtask fixtures`).
pub fn matrix_fixture(version: &str, profile: &str) -> PathBuf {
    let dir = root()
        .join("fixtures/matrix")
        .join(format!("tokio-{version}"));
    built(&dir, "fixture-matrix", profile)
}

/// `dir`'s binary `name` built with `profile`, built now if it is not yet.
fn built(dir: &Path, name: &str, profile: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<BTreeSet<(PathBuf, String)>>> = OnceLock::new();
    let bin = dir.join("target").join(profile).join(name);
    // Built once per test process, always: cargo rebuilds what changed since the last run
    // (a binary that merely exists may predate the source the test reads).
    let mut done = BUILT.get_or_init(Default::default).lock().unwrap();
    if done.insert((dir.to_path_buf(), profile.to_owned())) {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "--locked",
                "--profile",
                profile,
                "--manifest-path",
            ])
            .arg(dir.join("Cargo.toml"))
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "building {} ({profile}) failed",
            dir.display()
        );
    }
    bin
}

/// A copy of `bin` without its symbol table (`strip`), in the test directory.
pub fn stripped_copy(bin: &Path, name: &str) -> PathBuf {
    let out = tmp(name);
    let status = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .expect("run strip");
    assert!(status.success(), "strip {}", bin.display());
    out
}

/// Starts a fixture and waits for its ground-truth line: (the process, the truth JSON).
pub fn start_with_truth(bin: &Path, args: &[&str]) -> (Target, Value) {
    use std::io::BufRead;
    let mut target = Target(
        Command::new(bin)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = target.0.stdout.take().unwrap();
    let line = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("TASKTRACE_GROUND_TRUTH ").map(str::to_owned))
        .unwrap_or_else(|| panic!("{} printed no ground truth", bin.display()));
    (target, serde_json::from_str(&line).unwrap())
}

/// A process a test started: killed and reaped when dropped, so a failing assertion never
/// leaves a target running.
pub struct Target(pub std::process::Child);

impl std::ops::Deref for Target {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Target {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The run succeeded (exit 0); its stdout and stderr, shown in full when it did not.
pub fn assert_success(out: &Output, what: &str) -> (String, String) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// Thresholds for the demo's windows: every pitfall passes them within the first seconds,
/// no healthy task comes near them.
pub const THRESHOLDS: [&str; 6] = [
    "--leak-after",
    "2s",
    "--stuck-after",
    "1s",
    "--never-polled-after",
    "2s",
];

/// The matrix fixture's thresholds: its ground truth holds 300 ms after it starts.
pub const MATRIX_THRESHOLDS: [&str; 6] = [
    "--leak-after",
    "1500ms",
    "--stuck-after",
    "1s",
    "--never-polled-after",
    "1500ms",
];

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a report or an inspection lists as unavailable (`unavailable[].what`).
pub fn unavailable(v: &Value) -> Vec<String> {
    v["unavailable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["what"].as_str().unwrap().to_owned())
        .collect()
}

/// `tasktrace run -q --duration D --json … THRESHOLDS EXTRA -- BIN` on a demo-like fixture
/// (one that prints its ground truth), checked against that truth: (stdout, report, truth).
pub fn run_checked(
    bin: &Path,
    name: &str,
    duration: &str,
    extra: &[&str],
) -> (String, Value, Truth) {
    let json = tmp(&format!("{name}.json"));
    let out = tasktrace()
        .args(["run", "-q", "--duration", duration, "--json"])
        .arg(&json)
        .args(THRESHOLDS)
        .args(extra)
        .arg("--")
        .arg(bin)
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, name);
    let report = read_report(&json);
    let truth = ground_truth(&stdout);
    assert_matches_truth(&report, &truth);
    (stdout, report, truth)
}

/// The summary and per-site counts a fold must leave alone.
pub fn fold_counts(r: &Value) -> Vec<(String, Value)> {
    let s = &r["summary"];
    let mut v: Vec<(String, Value)> = [
        "tasks_seen",
        "alive",
        "completed",
        "leaked",
        "leaked_definite",
        "stuck",
        "never_polled",
        "uncertain",
        "ok",
        "alive_before_attach",
    ]
    .iter()
    .map(|k| (k.to_string(), s[*k].clone()))
    .collect();
    for site in r["spawn_sites"].as_array().unwrap() {
        for k in [
            "spawned",
            "completed",
            "alive",
            "leaked",
            "stuck",
            "never_polled",
            "ok",
        ] {
            v.push((format!("{} {k}", site["site"]), site[k].clone()));
        }
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
