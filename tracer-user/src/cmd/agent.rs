//! `tasktrace agent`: always on across a host. It selects targets (`--pid`, `--exe`,
//! `--all` tokio processes), rescans every few seconds, traces each new one in its own
//! session (sample mode by default: no per-task cost) on a thread of its own (one failing target never stops the
//! others; a restarted service is a new pid of the same executable, picked up by the next
//! scan), and serves every target on one HTTP address: `/metrics` (Prometheus),
//! `/debug/pprof/tasks` and `/debug/pprof/leaked` (pprof), `/report.json` and
//! `/report.html` (`?pid=`). The sessions' models are bounded (finished tasks folded), so
//! the agent's memory follows the live tasks, not the days it has run.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use crate::{
    cmd::{
        serve::{self, Answer},
        session::{Control, Session, Watch, Watched, WindowOpts},
    },
    error::Result,
    live::target::Target,
    model::{verdict::Verdict, view::Now},
    report::{
        Report,
        metrics::{Counters, View, render_metrics},
        render_html, render_pprof_of,
    },
    stream::TargetInfo,
};

/// Which processes the agent traces.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub pids: Vec<u32>,
    /// A name (matched against the executable's file name) or a path (the whole path).
    pub exes: Vec<String>,
    /// Every process whose executable holds tokio (its registry paths).
    pub all: bool,
}

pub struct AgentOpts {
    pub select: Selection,
    pub listen: String,
    pub rescan: Duration,
    /// The sessions' options (mode, thresholds, no duration).
    pub window: WindowOpts,
}

/// What a request asks one target's session for.
#[derive(Clone, Copy, Debug)]
enum Want {
    Json,
    Html,
    Pprof(Option<Verdict>),
}

struct Request {
    want: Want,
    reply: mpsc::Sender<Answer>,
}

/// One traced process, as its session last published it.
struct Slot {
    info: Option<TargetInfo>,
    view: Option<(Now, Counters)>,
    requests: mpsc::Sender<Request>,
}

#[derive(Default)]
struct Shared {
    targets: Mutex<BTreeMap<u32, Slot>>,
    /// Failed attaches by executable.
    errors: Mutex<BTreeMap<String, u64>>,
    stop: AtomicBool,
}

/// Runs until SIGINT or SIGTERM; every session detaches before it returns.
pub fn run(opts: AgentOpts) -> Result<()> {
    let shared = Arc::new(Shared::default());
    let routes = shared.clone();
    let addr = serve::listen(&opts.listen, move |path, query| route(&routes, path, query))?;
    if !opts.window.quiet {
        eprintln!(
            "tasktrace agent: serving http://{addr}/metrics, /debug/pprof/tasks, /debug/pprof/leaked, /report.json, /report.html"
        );
    }
    watch_signals(shared.clone());
    let window = Arc::new(opts.window);
    let mut sessions: HashMap<u32, std::thread::JoinHandle<()>> = HashMap::new();
    // Pids that failed or are not tokio: not tried again (a restart is a new pid).
    let mut skipped: HashSet<u32> = HashSet::new();
    let mut tokio_exes: HashMap<(PathBuf, u64, i64), bool> = HashMap::new();
    let me = std::process::id();
    while !shared.stop.load(Ordering::Relaxed) {
        sessions.retain(|_, h| !h.is_finished());
        for (pid, exe) in processes() {
            if pid == me || sessions.contains_key(&pid) || skipped.contains(&pid) {
                continue;
            }
            if !selected(&opts.select, pid, &exe, &mut tokio_exes) {
                skipped.insert(pid);
                continue;
            }
            skipped.insert(pid);
            let (shared, window) = (shared.clone(), window.clone());
            let started = std::thread::Builder::new()
                .name(format!("trace-{pid}"))
                .spawn(move || trace_one(pid, &window, &shared));
            if let Ok(h) = started {
                sessions.insert(pid, h);
            }
        }
        let until = Instant::now() + opts.rescan;
        while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for (_, h) in sessions {
        let _ = h.join();
    }
    Ok(())
}

/// Sets the stop flag on SIGINT or SIGTERM (each session sees them itself as well).
fn watch_signals(shared: Arc<Shared>) {
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            });
            shared.stop.store(true, Ordering::Relaxed);
        });
}

/// Every process with an executable: (pid, `/proc/PID/exe`'s target).
fn processes() -> Vec<(u32, PathBuf)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        Some((pid, exe))
    })
    .collect()
}

fn selected(
    s: &Selection,
    pid: u32,
    exe: &std::path::Path,
    tokio_exes: &mut HashMap<(PathBuf, u64, i64), bool>,
) -> bool {
    if s.pids.contains(&pid) {
        return true;
    }
    let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if s.exes.iter().any(|e| {
        if e.contains('/') {
            exe == std::path::Path::new(e)
        } else {
            e == name
        }
    }) {
        return true;
    }
    s.all && is_tokio(pid, exe, tokio_exes)
}

/// The executable holds tokio (its registry paths survive stripping), read once per
/// (path, size, mtime).
fn is_tokio(
    pid: u32,
    exe: &std::path::Path,
    seen: &mut HashMap<(PathBuf, u64, i64), bool>,
) -> bool {
    use std::os::unix::fs::MetadataExt;
    // Through /proc: the file the process runs, even from another mount namespace.
    let file = PathBuf::from(format!("/proc/{pid}/exe"));
    let Ok(meta) = std::fs::metadata(&file) else {
        return false;
    };
    let key = (exe.to_path_buf(), meta.size(), meta.mtime());
    *seen.entry(key).or_insert_with(|| {
        std::fs::read(&file)
            .map(|data| crate::tokio_versions::version_in_bytes(&data).is_some())
            .unwrap_or(false)
    })
}

/// Traces `pid` until it exits or the agent stops; publishes its view every second.
fn trace_one(pid: u32, window: &WindowOpts, shared: &Arc<Shared>) {
    let (tx, rx) = mpsc::channel();
    shared.targets.lock().unwrap().insert(
        pid,
        Slot {
            info: None,
            view: None,
            requests: tx,
        },
    );
    let failed = |what: String, exe: String| {
        eprintln!("tasktrace agent: pid {pid}: {what}");
        *shared.errors.lock().unwrap().entry(exe).or_default() += 1;
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            failed(e.to_string(), exe);
            shared.targets.lock().unwrap().remove(&pid);
            return;
        }
    };
    rt.block_on(async {
        let session = Target::from_pid(pid).and_then(|t| Session::attach(t, None, window, None));
        let mut session = match session {
            Ok(s) => s,
            Err(e) => return failed(e.to_string(), exe.clone()),
        };
        if !window.quiet {
            eprintln!("tasktrace agent: tracing pid {pid} ({exe})");
        }
        let mut watch = AgentWatch {
            pid,
            shared: shared.clone(),
            requests: rx,
            pending: Vec::new(),
            last_ns: 0,
        };
        let ended = match session.run_watched(Some(&mut watch)).await {
            Ok(e) => e,
            Err(e) => {
                failed(e.to_string(), exe.clone());
                crate::stream::EndedBy::Interrupted
            }
        };
        let _ = session.close(ended).await;
        if !window.quiet {
            eprintln!("tasktrace agent: pid {pid} done ({})", ended.as_str());
        }
    });
    shared.targets.lock().unwrap().remove(&pid);
}

/// A session's link to the agent: publishes the view, answers report requests.
struct AgentWatch {
    pid: u32,
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    pending: Vec<Request>,
    last_ns: u64,
}

impl Watch for AgentWatch {
    fn tick(&mut self, now: &Watched<'_>) -> Control {
        if self.shared.stop.load(Ordering::Relaxed) {
            return Control::Quit;
        }
        if now.now_ns.saturating_sub(self.last_ns) >= 1_000_000_000 {
            self.last_ns = now.now_ns;
            let view = now.agg.now(now.now_ns);
            if let Some(slot) = self.shared.targets.lock().unwrap().get_mut(&self.pid) {
                slot.info = Some(now.meta.target.clone());
                slot.view = Some((
                    view,
                    Counters {
                        probe_hits: now.events,
                        lost_events: now.lost,
                    },
                ));
            }
        }
        self.pending.extend(self.requests.try_iter());
        if self.pending.is_empty() {
            Control::Go
        } else {
            Control::Save
        }
    }

    fn saved(&mut self, report: Report) {
        for req in self.pending.drain(..) {
            let _ = req.reply.send(render(&report, req.want));
        }
    }
}

fn render(r: &Report, want: Want) -> Answer {
    match want {
        Want::Json => match serde_json::to_vec_pretty(r) {
            Ok(b) => Answer::ok("application/json", b),
            Err(e) => Answer::error("500 Internal Server Error", e.to_string()),
        },
        Want::Html => Answer::ok("text/html; charset=utf-8", render_html(r).into_bytes()),
        Want::Pprof(only) => match render_pprof_of(r, only) {
            Ok(b) => Answer::ok("application/octet-stream", b),
            Err(e) => Answer::error("500 Internal Server Error", e.to_string()),
        },
    }
}

fn route(shared: &Shared, path: &str, query: &str) -> Answer {
    let want = match path {
        "/metrics" => return metrics(shared),
        "/report.json" => Want::Json,
        "/report.html" => Want::Html,
        "/debug/pprof/tasks" => Want::Pprof(None),
        "/debug/pprof/leaked" => Want::Pprof(Some(Verdict::Leaked)),
        _ => {
            return Answer::error(
                "404 Not Found",
                "tasktrace agent serves /metrics, /debug/pprof/tasks, /debug/pprof/leaked, \
                 /report.json and /report.html (?pid=PID)\n"
                    .into(),
            );
        }
    };
    let asked: Option<u32> = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("pid="))
        .and_then(|p| p.parse().ok());
    let (tx, rx) = mpsc::channel();
    {
        let targets = shared.targets.lock().unwrap();
        let pid = match asked {
            Some(p) => p,
            None if targets.len() == 1 => *targets.keys().next().expect("one"),
            None => {
                let pids: Vec<String> = targets.keys().map(u32::to_string).collect();
                return Answer::error(
                    "400 Bad Request",
                    format!("which target? add ?pid= one of: {}\n", pids.join(", ")),
                );
            }
        };
        let Some(slot) = targets.get(&pid) else {
            return Answer::error("404 Not Found", format!("pid {pid} is not traced\n"));
        };
        if slot.requests.send(Request { want, reply: tx }).is_err() {
            return Answer::error("503 Service Unavailable", format!("pid {pid} is ending\n"));
        }
    }
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            Answer::error(
                "503 Service Unavailable",
                "the target's session did not answer in 30 s\n".into(),
            )
        })
}

fn metrics(shared: &Shared) -> Answer {
    let targets = shared.targets.lock().unwrap();
    let views: Vec<View> = targets
        .values()
        .filter_map(|s| {
            let (now, counters) = s.view.as_ref()?;
            Some(View {
                now,
                target: s.info.as_ref()?,
                counters: *counters,
            })
        })
        .collect();
    let errors = shared.errors.lock().unwrap().clone();
    Answer::ok(
        serve::OPENMETRICS,
        render_metrics(&views, &errors).into_bytes(),
    )
}
