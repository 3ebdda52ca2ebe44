//! Real programs nobody here wrote (`fixtures/corpus/corpus.json`, built by `cargo xtask
//! corpus build`), each driven by a scripted loopback workload and traced twice: launched
//! with `run`, and attached late with `record --pid`. No ground truth exists for them, so
//! the checks are invariants any correct trace satisfies (the oracle):
//! 1. every task first seen during the window has its spawn event (`spawned_at_ns`);
//! 2. ≥ 95 % of the async tasks spawned during the window name their site, never a line
//!    inside tokio or std;
//! 3. the tasks the model holds alive equal the ones the last task-list reading found;
//! 4. a healthy server under steady load: no stuck, no never-polled task, no definite
//!    leak; idle keep-alive connections are suspected leaks at a named site;
//! 5. tokio's code shapes are recognised (its waker vtable in stripped binaries).
//!
//! `TASKTRACE_CORPUS=a,b` picks programs (default: those `corpus.json` marks `ci`).

mod common;

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

/// The traced client's load: 8 connections, a new one per request (a task each), at a
/// bounded rate.
const OHA_LOAD: [&str; 6] = ["-c", "8", "-q", "2000", "--no-tui", "--disable-keepalive"];

/// `record`'s window, in full mode as `run`'s: the oracle wants every spawn's event
/// (sample mode, `record`'s default, probes spawns only under its budget).
const RECORD: [&str; 7] = [
    "record",
    "-q",
    "--mode",
    "full",
    "--duration",
    "5s",
    "--json",
];

/// Leak threshold for the windows: idle keep-alive connections opened before it pass it.
const LEAK_AFTER: &str = "2s";

#[test]
fn corpus_oracle() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let corpus: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/corpus/corpus.json")).unwrap(),
    )
    .unwrap();
    let wanted: Option<Vec<String>> = std::env::var("TASKTRACE_CORPUS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::to_owned).collect());
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for p in corpus["programs"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let selected = match &wanted {
            Some(w) => w.iter().any(|n| n == name),
            None => p["ci"] == true,
        };
        if !selected {
            continue;
        }
        let bin = program_binary(name, p["bin"].as_str().unwrap());
        for how in [How::Run, How::Record] {
            let (report, rec) = trace(name, &bin, how);
            let mut f = Figures::of(&report);
            failures.extend(f.failures(name, how));
            match fold_check(name, how, &rec) {
                Ok(line) => f.samples.push(line),
                Err(e) => failures.push(e),
            }
            rows.push((name.to_owned(), how, f));
        }
    }
    assert!(!rows.is_empty(), "no corpus program selected");
    println!("\ncorpus oracle (per program and way of attaching):");
    println!(
        "{:<18} {:<6} {:>6} {:>7} {:>9} {:>9} {:>13}  {:<22} verdicts",
        "program", "how", "tasks", "window", "spawn ev", "site", "exact", "alive = listed",
    );
    for (name, how, f) in &rows {
        println!("{:<18} {:<6} {}", name, how.as_str(), f.row());
    }
    for (name, how, f) in &rows {
        if !f.sources.is_empty() {
            println!("  {name} {}: site sources {:?}", how.as_str(), f.sources);
        }
        for s in &f.samples {
            println!("  {name} {}: {s}", how.as_str());
        }
    }
    assert!(
        failures.is_empty(),
        "oracle failures:\n  {}",
        failures.join("\n  ")
    );
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Run,
    Record,
}

impl How {
    fn as_str(self) -> &'static str {
        match self {
            How::Run => "run",
            How::Record => "record",
        }
    }
}

/// The program's binary, built now if `cargo xtask corpus build` has not built it.
fn program_binary(name: &str, bin: &str) -> PathBuf {
    let path = root()
        .join("target/corpus")
        .join(name)
        .join("bin")
        .join(bin);
    if !path.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "run", "--quiet", "-p", "xtask", "--", "corpus", "build", name,
            ])
            .current_dir(root())
            .status()
            .expect("run cargo xtask");
        assert!(status.success(), "building corpus program {name} failed");
    }
    path
}

fn wait_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on port {port}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Traces one program under its workload; returns the report.
fn trace(name: &str, bin: &Path, how: How) -> (Value, PathBuf) {
    let json = tmp(&format!("corpus-{name}-{}.json", how.as_str()));
    let rec = json.with_extension("trace");
    let _ = std::fs::remove_file(&json);
    let port = free_port();
    let docroot = tmp("corpus-www");
    std::fs::create_dir_all(&docroot).unwrap();
    std::fs::write(
        docroot.join("index.html"),
        "<p>tasktrace corpus</p>\n".repeat(64),
    )
    .unwrap();
    // The traced program and how to drive it.
    let (args, workload): (Vec<String>, Workload) = match name {
        "mini-redis" => (vec![port.to_string()], Workload::Redis(port)),
        "static-web-server" => (
            ["--host", "127.0.0.1", "--port", &port.to_string(), "--root"]
                .iter()
                .map(|s| s.to_string())
                .chain([
                    docroot.display().to_string(),
                    "--log-level".into(),
                    "error".into(),
                ])
                .collect(),
            Workload::Http(port),
        ),
        "miniserve" => (
            ["-i", "127.0.0.1", "-p", &port.to_string()]
                .iter()
                .map(|s| s.to_string())
                .chain([docroot.display().to_string()])
                .collect(),
            Workload::Http(port),
        ),
        "tonic-health" => (
            vec![port.to_string()],
            Workload::Grpc(port, bin.with_file_name("tonic-health-client")),
        ),
        // The client is traced: it loads a server of the test's own.
        "oha" => (Vec::new(), Workload::Client),
        other => panic!("no workload for corpus program {other}"),
    };
    let thresholds = ["--leak-after", LEAK_AFTER];
    let record_to = [std::ffi::OsStr::new("-o"), rec.as_os_str()];
    match (how, &workload) {
        (How::Run, Workload::Client) => {
            let server = TinyHttp::start();
            let out = tasktrace()
                .args(["run", "-q", "--duration", "20s", "--json"])
                .arg(&json)
                .args(record_to)
                .args(thresholds)
                .arg("--")
                .arg(bin)
                .args(OHA_LOAD)
                .args(["-z", "4s", &server.url()])
                .stdout(Stdio::piped())
                .output()
                .unwrap();
            assert_success(&out, &format!("run {name}"));
        }
        (How::Record, Workload::Client) => {
            let server = TinyHttp::start();
            let mut client = Target(
                Command::new(bin)
                    .args(OHA_LOAD)
                    .args(["-z", "12s", &server.url()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
            thread::sleep(Duration::from_millis(1500));
            if let Some(status) = client.try_wait().unwrap() {
                let mut err = String::new();
                let _ = client.stderr.take().unwrap().read_to_string(&mut err);
                panic!("{name} exited before the window ({status}): {err}");
            }
            let _client = client;
            let out = tasktrace()
                .args(RECORD)
                .arg(&json)
                .args(record_to)
                .args(thresholds)
                .args(["--pid", &_client.id().to_string()])
                .output()
                .unwrap();
            assert_success(&out, &format!("record {name}"));
        }
        (How::Run, _) => {
            let tracer = tasktrace()
                .args(["run", "-q", "--duration", "7s", "--json"])
                .arg(&json)
                .args(record_to)
                .args(thresholds)
                .arg("--")
                .arg(bin)
                .args(&args)
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let mut tracer = Target(tracer);
            wait_port(port);
            let load = workload.start();
            let status = tracer.wait().unwrap();
            drop(load);
            assert!(
                status.success(),
                "run {name}: tasktrace exited with {status}"
            );
        }
        (How::Record, _) => {
            let server = Target(
                Command::new(bin)
                    .args(&args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            wait_port(port);
            let load = workload.start();
            thread::sleep(Duration::from_secs(1));
            let out = tasktrace()
                .args(RECORD)
                .arg(&json)
                .args(record_to)
                .args(thresholds)
                .args(["--pid", &server.id().to_string()])
                .output()
                .unwrap();
            drop(load);
            assert_success(&out, &format!("record {name}"));
        }
    }
    (read_report(&json), rec)
}

/// The recording replayed twice, its finished tasks folded from 100 held on and kept
/// whole: a program nobody here wrote must come out with the same counts either way.
fn fold_check(name: &str, how: How, rec: &Path) -> Result<String, String> {
    let replay = |extra: &[&str]| {
        let json = rec.with_extension(format!("{}.json", extra.join("")));
        let out = tasktrace()
            .arg("report")
            .arg(rec)
            .args(["-q", "--leak-after", LEAK_AFTER, "--json"])
            .arg(&json)
            .args(extra)
            .output()
            .unwrap();
        assert_success(&out, &format!("report {name}"));
        read_report(&json)
    };
    let (folded, whole) = (replay(&["--fold-from", "100"]), replay(&["--keep", "all"]));
    let (a, b) = (fold_counts(&folded), fold_counts(&whole));
    let n = folded["summary"]["folded"].as_u64().unwrap_or(0);
    if a != b {
        let diff: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).take(5).collect();
        return Err(format!(
            "{name} {}: folding {n} tasks changed the counts: {diff:?}",
            how.as_str()
        ));
    }
    Ok(format!(
        "{n} of {} tasks folded on replay (--fold-from 100), every count as kept whole",
        whole["summary"]["tasks_seen"]
    ))
}

enum Workload {
    /// RESP commands over short connections, plus idle connections kept open.
    Redis(u16),
    /// `wrk` keep-alive load, fresh connections, plus idle keep-alive connections.
    Http(u16),
    /// The program's own gRPC client: idle `Watch` streams and `Check` calls.
    Grpc(u16, PathBuf),
    /// The traced program is the client.
    Client,
}

/// A running workload: stops and joins its threads when dropped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    driver: Option<Target>,
    _idle: Vec<TcpStream>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        drop(self.driver.take());
    }
}

/// Idle connections the workload keeps open: keep-alive clients that went quiet.
const IDLE: usize = 4;

impl Workload {
    fn start(&self) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Load {
            stop: stop.clone(),
            threads: Vec::new(),
            driver: None,
            _idle: Vec::new(),
        };
        match *self {
            Workload::Redis(port) => {
                for i in 0..IDLE {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    resp(&mut s, &["SET", &format!("idle{i}"), "x"]);
                    load._idle.push(s);
                }
                load.threads.push(thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                            break;
                        };
                        for j in 0..20 {
                            resp(&mut s, &["SET", &format!("k{j}"), "v"]);
                            resp(&mut s, &["GET", &format!("k{j}")]);
                        }
                    }
                }));
            }
            Workload::Http(port) => {
                for _ in 0..IDLE {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    http_get(&mut s, true);
                    load._idle.push(s);
                }
                load.driver = Some(Target(
                    Command::new("wrk")
                        .args(["-t1", "-c4", "-d30s"])
                        .arg(format!("http://127.0.0.1:{port}/index.html"))
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("wrk (scripts/setup.sh installs it)"),
                ));
                load.threads.push(thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                            break;
                        };
                        http_get(&mut s, false);
                        thread::sleep(Duration::from_millis(20));
                    }
                }));
            }
            Workload::Grpc(port, ref client) => {
                load.driver = Some(Target(
                    Command::new(client)
                        .args([&port.to_string(), "30", &IDLE.to_string()])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("the tonic-health client"),
                ));
                // Its watch streams open before the window.
                thread::sleep(Duration::from_millis(300));
            }
            Workload::Client => {}
        }
        load
    }
}

/// One RESP command and (the start of) its reply.
fn resp(s: &mut TcpStream, args: &[&str]) {
    let mut msg = format!("*{}\r\n", args.len());
    for a in args {
        msg += &format!("${}\r\n{a}\r\n", a.len());
    }
    // The server may be gone (the window over): the load just stops.
    if s.write_all(msg.as_bytes()).is_ok() {
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
    }
}

/// One GET; `keep`: HTTP/1.1 keep-alive (the connection stays open after the response).
fn http_get(s: &mut TcpStream, keep: bool) {
    let conn = if keep { "keep-alive" } else { "close" };
    let _ = s.write_all(
        format!("GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {conn}\r\n\r\n")
            .as_bytes(),
    );
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = vec![0u8; 8192];
    if keep {
        let _ = s.read(&mut buf);
    } else {
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// A keep-alive HTTP/1.1 server of the test's own, for the traced client to load.
struct TinyHttp {
    port: u16,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
}

impl TinyHttp {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (st, sv) = (stop.clone(), served.clone());
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let (st, sv) = (st.clone(), sv.clone());
                        thread::spawn(move || {
                            c.set_nonblocking(false).unwrap();
                            c.set_read_timeout(Some(Duration::from_millis(200)))
                                .unwrap();
                            let mut buf = [0u8; 4096];
                            while !st.load(Ordering::Relaxed) {
                                match c.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(_) => {
                                        sv.fetch_add(1, Ordering::Relaxed);
                                        let _ = c.write_all(
                                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                                        );
                                    }
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            std::io::ErrorKind::WouldBlock
                                                | std::io::ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => break,
                                }
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { port, stop, served }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for TinyHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        assert!(
            self.served.load(Ordering::Relaxed) > 0,
            "the client sent no request"
        );
    }
}

/// What the oracle measures in one report.
#[derive(Default)]
struct Figures {
    tasks: usize,
    /// Tasks first seen during the window (not alive before attach), and how many of
    /// them have their spawn event.
    in_window: usize,
    with_spawn: usize,
    /// Async and local tasks spawned during the window, how many name a site (not in
    /// tokio or std), how many an exact `file:line:col`.
    async_spawned: usize,
    named: usize,
    exact: usize,
    internal_sites: Vec<String>,
    sources: BTreeMap<String, usize>,
    alive_check: Option<(u64, u64, Vec<u64>, Vec<u64>)>,
    leaked: u64,
    definite: u64,
    stuck: u64,
    never_polled: u64,
    leaked_unnamed: usize,
    lost: u64,
    /// What the report says it cannot show because a code shape was not recognised.
    unrecognised: Vec<String>,
    /// Where the await chains came from, the leaked tasks with one, and chains that name
    /// nothing (no frame and no leaf) or a nameless frame, or clone counts out of order.
    await_source: Option<String>,
    /// Why there are none, as the report says.
    await_unavailable: Option<String>,
    leaked_with_chain: usize,
    bad_chains: Vec<String>,
    samples: Vec<String>,
}

impl Figures {
    fn of(r: &Value) -> Self {
        let mut f = Figures::default();
        let tasks = r["tasks"].as_array().unwrap();
        f.tasks = tasks.len();
        for t in tasks {
            if t["alive_before_attach"] == true {
                continue;
            }
            f.in_window += 1;
            let spawned = !t["spawned_at_ns"].is_null();
            f.with_spawn += usize::from(spawned);
            if !spawned && f.samples.len() < 6 {
                f.samples.push(format!(
                    "no spawn event: task {} {} first seen at {} ns, {} polls, {}",
                    t["id"], t["kind"], t["first_seen_ns"], t["polls"], t["state"]
                ));
            }
            if t["kind"] == "blocking" || !spawned {
                continue;
            }
            f.async_spawned += 1;
            let Some(site) = t["spawned_at"].as_str() else {
                if f.samples.len() < 12 {
                    f.samples.push(format!(
                        "no site: task {} {} future {}",
                        t["id"], t["kind"], t["future"]
                    ));
                }
                continue;
            };
            if internal(site) {
                f.internal_sites.push(site.to_owned());
                continue;
            }
            f.named += 1;
            f.exact += usize::from(exact(site));
            *f.sources
                .entry(t["site_source"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        let s = &r["summary"];
        f.leaked = s["leaked"].as_u64().unwrap();
        f.definite = s["leaked_definite"].as_u64().unwrap();
        f.stuck = s["stuck"].as_u64().unwrap();
        f.never_polled = s["never_polled"].as_u64().unwrap();
        f.lost = s["lost_events"].as_u64().unwrap();
        f.leaked_unnamed = tasks
            .iter()
            .filter(|t| t["verdict"] == "leaked" && t["spawned_at"].is_null())
            .count();
        f.unrecognised = r["unavailable"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| {
                u["why"]
                    .as_str()
                    .is_some_and(|w| w.contains("not recognised"))
            })
            .map(|u| u["what"].as_str().unwrap_or("?").to_owned())
            .collect();
        let from = &r["await_chains"];
        f.await_source = from["source"].as_str().map(str::to_owned);
        f.await_unavailable = from["unavailable"].as_str().map(str::to_owned);
        if f.await_source.as_deref() == Some("stack") {
            let n = |k: &str| from[k].as_u64().unwrap_or(0);
            if !(n("clone_hits") >= n("point_changes") && n("point_changes") >= n("stack_copies")) {
                f.bad_chains.push(format!("counts out of order: {from}"));
            }
        }
        for t in tasks {
            let c = &t["await_chain"];
            if c.is_null() {
                continue;
            }
            f.leaked_with_chain += usize::from(t["verdict"] == "leaked");
            let frames = c["frames"].as_array().unwrap();
            let nameless = frames
                .iter()
                .any(|fr| fr["function"].as_str().is_none_or(str::is_empty));
            if (frames.is_empty() && c["leaf"].is_null()) || nameless {
                f.bad_chains.push(format!("task {}: {c}", t["id"]));
            }
        }
        let c = &r["diagnostics"]["alive_check"];
        if !c.is_null() {
            let ids = |k: &str| {
                c[k].as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_u64)
                    .collect()
            };
            f.alive_check = Some((
                c["listed"].as_u64().unwrap(),
                c["model_alive"].as_u64().unwrap(),
                ids("alive_not_listed"),
                ids("listed_not_alive"),
            ));
        }
        f
    }

    fn pct(n: usize, of: usize) -> f64 {
        if of == 0 {
            100.0
        } else {
            100.0 * n as f64 / of as f64
        }
    }

    fn row(&self) -> String {
        let alive = match &self.alive_check {
            Some((listed, alive, a, b)) if a.is_empty() && b.is_empty() => {
                format!("yes ({listed} listed, {alive} alive)")
            }
            Some((listed, alive, a, b)) => format!(
                "NO ({listed} listed, {alive} alive; +{} -{})",
                a.len(),
                b.len()
            ),
            None => "no reading".into(),
        };
        format!(
            "{:>6} {:>7} {:>8.1}% {:>8.1}% {:>12.1}%  {:<22} leaked {} ({} definite), stuck {}, never polled {}, lost {}; chains: {} ({} leaked with one)",
            self.tasks,
            self.in_window,
            Self::pct(self.with_spawn, self.in_window),
            Self::pct(self.named, self.async_spawned),
            Self::pct(self.exact, self.async_spawned),
            alive,
            self.leaked,
            self.definite,
            self.stuck,
            self.never_polled,
            self.lost,
            self.await_source.as_deref().unwrap_or("none"),
            self.leaked_with_chain
        )
    }

    fn failures(&self, name: &str, how: How) -> Vec<String> {
        let at = format!("{name} ({})", how.as_str());
        let mut out = Vec::new();
        if self.with_spawn != self.in_window {
            out.push(format!(
                "{at}: {} of {} tasks first seen in the window have no spawn event",
                self.in_window - self.with_spawn,
                self.in_window
            ));
        }
        if Self::pct(self.named, self.async_spawned) < 95.0 {
            out.push(format!(
                "{at}: only {} of {} async tasks spawned in the window name their site",
                self.named, self.async_spawned
            ));
        }
        if !self.internal_sites.is_empty() {
            out.push(format!(
                "{at}: sites inside tokio or std: {:?}",
                self.internal_sites
            ));
        }
        match &self.alive_check {
            Some((_, _, a, b)) if a.is_empty() && b.is_empty() => {}
            Some((_, _, a, b)) => out.push(format!(
                "{at}: alive in the model, not listed: {a:?}; listed, finished in the model: {b:?}"
            )),
            None => out.push(format!(
                "{at}: no complete task-list reading to compare with"
            )),
        }
        if self.stuck + self.never_polled + self.definite > 0 {
            out.push(format!(
                "{at}: a healthy program got stuck {}, never polled {}, definite leaks {}",
                self.stuck, self.never_polled, self.definite
            ));
        }
        if self.leaked_unnamed > 0 {
            out.push(format!(
                "{at}: {} leaked tasks without a site",
                self.leaked_unnamed
            ));
        }
        if self.lost > 0 {
            out.push(format!("{at}: {} events lost", self.lost));
        }
        if !self.unrecognised.is_empty() {
            out.push(format!("{at}: not recognised: {:?}", self.unrecognised));
        }
        // Full mode on a release build without type information: chains from the stack,
        // each naming something; a stripped one (nothing names a frame) says so.
        let stripped = self
            .await_unavailable
            .as_deref()
            .is_some_and(|w| w.contains("stripped"));
        if self.await_source.as_deref() != Some("stack") && !stripped {
            out.push(format!(
                "{at}: await chains from {:?}, not the stack ({:?})",
                self.await_source, self.await_unavailable
            ));
        }
        if !self.bad_chains.is_empty() {
            out.push(format!("{at}: bad await chains: {:?}", self.bad_chains));
        }
        out
    }
}

/// A site inside tokio or the standard library (never a spawn site of the program's).
fn internal(site: &str) -> bool {
    site.contains("/tokio-1.") || site.starts_with("/rustc/") || site.contains("/library/std/")
}

/// `file:line:col`, not `function+0xoff`.
fn exact(site: &str) -> bool {
    let mut it = site.rsplitn(3, ':');
    let col = it.next().and_then(|c| c.parse::<u32>().ok());
    let line = it.next().and_then(|l| l.parse::<u32>().ok());
    col.is_some() && line.is_some() && it.next().is_some_and(|f| f.ends_with(".rs"))
}
