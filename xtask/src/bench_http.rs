//! `cargo xtask bench http`: a real HTTP server under load. `fixtures/bench/http` (hyper,
//! two tokio worker threads, one task per connection, a spawned task and a channel round
//! trip per request) serves a fixed-concurrency `wrk` run; requests/s untraced, under
//! `tasktrace record --mode lifecycle`, `--mode full` and `--mode sample`, and as the
//! console-subscriber build with a console client attached. A fresh server per run,
//! interleaved rounds, medians, each variant's throughput loss against the untraced
//! server, the median and range of its per-round ratio to the untraced run of the same
//! round (which cancels the machine's drift between rounds), and the CPU time per request
//! of the server and of the observer. A second scenario runs the same server without the
//! task per request (`--no-spawn-per-request`): lifecycle mode's cost is per spawned task,
//! not per request; sample mode's follows neither.

use std::{
    cell::Cell,
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use crate::bench::{median, start_until};

/// The fixture, and the target dir of its console build (`--features console`, built with
/// `--cfg tokio_unstable`; kept apart so the two builds do not invalidate each other).
pub const FIXTURE: &str = "fixtures/bench/http";
pub const CONSOLE_TARGET: &str = "target-console";

const ROUNDS: usize = 5;
const WRK: [&str; 3] = ["-t1", "-c32", "-d5s"];
/// Attaching takes well under a second; this only bounds a tracer that hangs.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(15);
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(15);
/// After the tracer (or console client) is ready, before the load starts.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
enum Variant {
    Untraced,
    /// A mode and extra options.
    Traced(&'static str, &'static [&'static str]),
    Console,
    /// `tasktrace agent --pid` (its default mode, serving /metrics) attached to the server.
    Agent,
}

impl Variant {
    fn label(self) -> String {
        match self {
            Variant::Untraced => "untraced".into(),
            Variant::Traced(mode, extra) => format!("tasktrace --mode {mode} {}", extra.join(" "))
                .trim_end()
                .to_owned(),
            Variant::Console => "console-subscriber + client".into(),
            Variant::Agent => "tasktrace agent (sample)".into(),
        }
    }
}

/// One wrk run: requests/s; CPU time per request of the server and of the observer (the
/// tracer, or the console client), which machine noise disturbs far less than
/// throughput; and for traced runs probe events per request and lost events.
struct Run {
    rps: f64,
    server_us: f64,
    observer_us: Option<f64>,
    traced: Option<(f64, u64)>,
}

/// CPU time (user + system) a process has used so far, in microseconds.
pub(crate) fn cpu_us(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime is the 12th, stime 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ').skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 * 1e6 / hz)
}

/// `wrk` against the server with the CPU time the server and the observer spent on it:
/// (requests/s, server µs per request, observer µs per request, requests).
fn measured_wrk(
    port: u16,
    server: u32,
    observer: Option<u32>,
) -> Result<(f64, f64, Option<f64>, f64), String> {
    let (s0, o0) = (cpu_us(server), observer.and_then(cpu_us));
    let (rps, requests) = wrk(port)?;
    let (s1, o1) = (cpu_us(server), observer.and_then(cpu_us));
    let per = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / requests.max(1.0));
    let server_us = per(s0, s1).ok_or("cannot read the server's CPU time in /proc")?;
    Ok((rps, server_us, per(o0, o1), requests))
}

/// A child process that is signalled and reaped when dropped, so that no error path
/// leaves one behind.
struct Reaped {
    child: Option<Child>,
    signal: i32,
}

impl Reaped {
    fn new(child: Child, signal: i32) -> Self {
        Reaped {
            child: Some(child),
            signal,
        }
    }

    fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Signals the process and waits for it to exit.
    fn stop(&mut self) -> std::io::Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| std::io::Error::other("already stopped"))?;
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, self.signal) };
        child.wait()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

pub fn http(root: &Path) -> Result<(), String> {
    let per_request = scenario(
        root,
        "a task spawned per request",
        &[],
        &[
            Variant::Untraced,
            Variant::Traced("lifecycle", &[]),
            // One probe hit per spawned task instead of two: what naming spawn sites costs.
            Variant::Traced("lifecycle", &["--no-spawn-sites"]),
            Variant::Traced("full", &[]),
            Variant::Traced("sample", &[]),
            Variant::Console,
        ],
    );
    // Most servers spawn per connection only: with keep-alive no task is spawned per
    // request, and lifecycle mode's costs (per spawned task) vanish.
    let per_connection = scenario(
        root,
        "tasks per connection only (--no-spawn-per-request)",
        &["--no-spawn-per-request"],
        &[
            Variant::Untraced,
            Variant::Traced("lifecycle", &[]),
            Variant::Traced("full", &[]),
            Variant::Traced("sample", &[]),
            Variant::Console,
        ],
    );
    match (per_request, per_connection) {
        (Ok(()), Ok(())) => Ok(()),
        (a, b) => Err([a.err(), b.err()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

/// One server shape, every variant, interleaved rounds; variant 0 is the untraced base.
fn scenario(
    root: &Path,
    title: &str,
    server_args: &[&str],
    variants: &[Variant],
) -> Result<(), String> {
    let mut runs: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
    let mut failed: Vec<Option<String>> = variants.iter().map(|_| None).collect();
    // Interleaved (A B C D A B C D …) so that machine noise hits every variant alike; a
    // variant that fails once is reported and left out of the later rounds.
    for round in 1..=ROUNDS {
        for (i, &v) in variants.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            match run(root, v, server_args) {
                Ok(r) => {
                    eprintln!(
                        "xtask: bench http ({title}) round {round}: {}: {:.0} requests/s",
                        v.label(),
                        r.rps
                    );
                    runs[i].push(r);
                }
                Err(e) => {
                    eprintln!("xtask: bench http round {round}: {} failed", v.label());
                    failed[i] = Some(e);
                }
            }
        }
    }
    let machine = format!(
        "{} cores (nproc), kernel {} (uname -r)",
        first_line(&mut Command::new("nproc")),
        first_line(Command::new("uname").arg("-r"))
    );
    println!(
        "bench http, {title} (hyper HTTP/1.1 server, 2 worker threads; wrk {}; median of {ROUNDS} interleaved runs, a fresh server each):",
        WRK.join(" ")
    );
    println!("  machine: {machine}");
    let medians: Vec<Option<f64>> = runs
        .iter_mut()
        .map(|r| (!r.is_empty()).then(|| median(&mut r.iter().map(|r| r.rps).collect::<Vec<_>>())))
        .collect();
    let base = medians[0];
    let loss = |m: Option<f64>| Some(1.0 - m? / base?);
    let cpu: Vec<Option<(f64, Option<f64>)>> = runs
        .iter()
        .map(|r| {
            let server = median(&mut r.iter().map(|r| r.server_us).collect::<Vec<_>>());
            let observer: Vec<f64> = r.iter().filter_map(|r| r.observer_us).collect();
            (!r.is_empty()).then(|| {
                (
                    server,
                    (!observer.is_empty()).then(|| median(&mut observer.clone())),
                )
            })
        })
        .collect();
    for (i, v) in variants.iter().enumerate() {
        let label = format!("{}:", v.label());
        let Some(m) = medians[i] else {
            println!("  {label:<46} failed (below)");
            continue;
        };
        let mut line = format!("  {label:<46} {m:>8.0} requests/s");
        if let (Some(b), false) = (base, i == 0) {
            line += &format!(
                "  (x{:.3}, throughput loss {:.1}%",
                m / b,
                (1.0 - m / b) * 100.0
            );
            // Untraced and this variant ran back to back in each round: the ratio per round
            // cancels the drift between rounds that the medians above still carry.
            let paired = paired_ratios(&runs[i], &runs[0]);
            if let (Some(m), Some(lo), Some(hi)) = (
                paired_median(&runs[i], &runs[0]),
                paired.iter().copied().reduce(f64::min),
                paired.iter().copied().reduce(f64::max),
            ) {
                line += &format!("; per round x{m:.3} median, x{lo:.3}..x{hi:.3}");
            }
            let traced: Vec<(f64, u64)> = runs[i].iter().filter_map(|r| r.traced).collect();
            if !traced.is_empty() {
                let mut per_request: Vec<f64> = traced.iter().map(|t| t.0).collect();
                let lost: u64 = traced.iter().map(|t| t.1).sum();
                line += &format!(
                    "; {:.1} probe events/request, {lost} lost",
                    median(&mut per_request)
                );
            }
            line += ")";
        }
        println!("{line}");
        if let Some((server, observer)) = cpu[i] {
            let mut line = format!("  {:<46} server CPU {server:>5.1} µs/request", "");
            if let (Some((b, _)), false) = (cpu[0], i == 0) {
                line += &format!(" ({:+.1})", server - b);
            }
            if let Some(o) = observer {
                let who = if matches!(v, Variant::Console) {
                    "client"
                } else {
                    "tracer"
                };
                // µs per request × requests per second: µs of CPU per second.
                line += &format!(", {who} {o:.1} µs/request = {:.1}% of a core", o * m / 1e4);
            }
            println!("{line}");
        }
    }
    let console = variants.len() - 1;
    if matches!(variants.last(), Some(Variant::Console)) {
        for (i, v) in variants.iter().enumerate() {
            let Variant::Traced(mode, []) = v else {
                continue;
            };
            if mode == &"full" {
                continue;
            }
            let (Some(l), Some(c)) = (loss(medians[i]), loss(medians[console])) else {
                continue;
            };
            let per_round = match (
                paired_median(&runs[i], &runs[0]),
                paired_median(&runs[console], &runs[0]),
            ) {
                (Some(l), Some(c)) => {
                    format!(" ({:.2} from the per-round ratios)", (1.0 - l) / (1.0 - c))
                }
                _ => String::new(),
            };
            println!(
                "  {mode}'s throughput loss / console-subscriber's: {:.2}{per_round}",
                l / c
            );
        }
    }
    let errors: Vec<String> = variants
        .iter()
        .zip(&failed)
        .filter_map(|(v, e)| Some(format!("{}: {}", v.label(), e.as_ref()?)))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("bench http ({title}): {}", errors.join("\n")))
    }
}

/// Each round's requests/s of a variant over the untraced run of the same round (rounds
/// stop at a variant's first failure, so the two lists pair from the start).
fn paired_ratios(variant: &[Run], untraced: &[Run]) -> Vec<f64> {
    variant
        .iter()
        .zip(untraced)
        .map(|(r, u)| r.rps / u.rps)
        .collect()
}

fn paired_median(variant: &[Run], untraced: &[Run]) -> Option<f64> {
    let mut paired = paired_ratios(variant, untraced);
    (!paired.is_empty()).then(|| median(&mut paired))
}

/// One measurement: a fresh server, the variant's observer, one wrk run.
fn run(root: &Path, variant: Variant, server_args: &[&str]) -> Result<Run, String> {
    let fixture = root.join(FIXTURE);
    let server = match variant {
        Variant::Console => fixture.join(CONSOLE_TARGET).join("release/fixture-http"),
        _ => fixture.join("target/release/fixture-http"),
    };
    let port = Cell::new(0u16);
    let (child, ready) = start_until(Command::new(&server).args(server_args), |l| {
        l.strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .map(|p| port.set(p))
            .is_some()
    })?;
    let server = Reaped::new(child, libc::SIGKILL);
    if !ready {
        return Err(format!("{} did not start", fixture.display()));
    }
    let port = port.get();
    match variant {
        Variant::Untraced => {
            let (rps, server_us, _, _) = measured_wrk(port, server.id(), None)?;
            Ok(Run {
                rps,
                server_us,
                observer_us: None,
                traced: None,
            })
        }
        Variant::Traced(mode, extra) => traced(root, server.id(), mode, extra, port),
        Variant::Agent => agent(root, server.id(), port),
        Variant::Console => {
            let client = fixture.join(CONSOLE_TARGET).join("release/console-client");
            let mut child = Command::new(&client)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("{}: {e}", client.display()))?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            // Dropped before the server: the client closes first, so no TIME_WAIT is
            // left on the console port the next server binds.
            let client = Reaped::new(child, libc::SIGKILL);
            let (connected, _) = watch_lines(stdout, "CONNECTED", "", CONSOLE_TIMEOUT);
            // Same footing as the tracer: the observer is connected and settled.
            std::thread::sleep(SETTLE);
            if !connected {
                return Err(format!(
                    "the console client got no update from console-subscriber on 127.0.0.1:6669 within {}s",
                    CONSOLE_TIMEOUT.as_secs()
                ));
            }
            let (rps, server_us, observer_us, _) =
                measured_wrk(port, server.id(), Some(client.id()))?;
            drop(client);
            Ok(Run {
                rps,
                server_us,
                observer_us,
                traced: None,
            })
        }
    }
}

/// A wrk run under `tasktrace record --mode MODE` attached to the server.
fn traced(root: &Path, pid: u32, mode: &str, extra: &[&str], port: u16) -> Result<Run, String> {
    let json = std::env::temp_dir().join(format!("tasktrace-bench-http-{mode}.json"));
    let _ = std::fs::remove_file(&json);
    // Not -q: stderr says when the probes are live and the attach-time reading is done.
    let mut cmd = Command::new(root.join("target/release/tasktrace"));
    cmd.args(["record", "--pid", &pid.to_string(), "--mode", mode])
        .args(extra)
        .arg("--json")
        .arg(&json)
        // Long enough for any wrk run: the bench ends the window with SIGINT.
        .args(["--duration", "300s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut tracer = Reaped::new(child, libc::SIGINT);
    // Steady-state tracing is measured: attaching (probes, the attach-time scan of the
    // target's memory, loading symbols) is `bench attach`'s, and on two cores it would
    // compete with the first seconds of the wrk run.
    let (attached, stderr) = watch_lines(
        stderr,
        "tasktrace: ",
        "tasks alive at attach",
        ATTACH_TIMEOUT,
    );
    std::thread::sleep(SETTLE);
    if !attached {
        let _ = tracer.stop();
        return Err(format!(
            "tasktrace record --mode {mode} did not attach:\n{}",
            joined(stderr)
        ));
    }
    let measured = measured_wrk(port, pid, Some(tracer.id()));
    let status = tracer.stop().map_err(|e| e.to_string())?;
    let stderr = joined(stderr);
    let (rps, server_us, observer_us, requests) = measured?;
    if !status.success() {
        return Err(format!(
            "tasktrace record --mode {mode} ended with {status}:\n{stderr}"
        ));
    }
    let report: serde_json::Value = std::fs::read(&json)
        .map_err(|e| format!("{}: {e}", json.display()))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))?;
    let events = report["diagnostics"]["events"].as_f64().unwrap_or(f64::NAN);
    let lost = report["summary"]["lost_events"].as_u64().unwrap_or(0);
    Ok(Run {
        rps,
        server_us,
        observer_us,
        traced: Some((events / requests, lost)),
    })
}

/// A wrk run with `tasktrace agent --pid` attached to the server.
fn agent(root: &Path, pid: u32, port: u16) -> Result<Run, String> {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(root.join("target/release/tasktrace"));
    cmd.args(["agent", "--pid", &pid.to_string(), "--listen"])
        .arg(listen.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut tracer = Reaped::new(child, libc::SIGINT);
    let (attached, stderr) =
        watch_lines(stderr, "tasktrace agent: ", "tracing pid", ATTACH_TIMEOUT);
    std::thread::sleep(SETTLE);
    if !attached {
        let _ = tracer.stop();
        return Err(format!(
            "tasktrace agent did not attach:\n{}",
            joined(stderr)
        ));
    }
    let measured = measured_wrk(port, pid, Some(tracer.id()));
    let status = tracer.stop().map_err(|e| e.to_string())?;
    let (rps, server_us, observer_us, _) = measured?;
    if !status.success() {
        return Err(format!(
            "tasktrace agent ended with {status}:\n{}",
            joined(stderr)
        ));
    }
    Ok(Run {
        rps,
        server_us,
        observer_us,
        traced: None,
    })
}

/// `cargo xtask bench agent`'s throughput part: the server spawning a task per request,
/// untraced against the agent attached.
pub fn agent_loss(root: &Path) -> Result<(), String> {
    scenario(
        root,
        "a task spawned per request, tasktrace agent attached",
        &[],
        &[Variant::Untraced, Variant::Agent],
    )
}

/// `wrk` against the server: (requests/s, requests).
fn wrk(port: u16) -> Result<(f64, f64), String> {
    let out = Command::new("wrk")
        .args(WRK)
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .map_err(|e| format!("cannot run wrk (scripts/setup.sh installs it): {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fail = || {
        format!(
            "wrk failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    };
    if !out.status.success() || stdout.contains("Non-2xx") {
        return Err(fail());
    }
    let rps = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok());
    let requests = stdout
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok());
    match (rps, requests) {
        (Some(rps), Some(requests)) => Ok((rps, requests)),
        _ => Err(fail()),
    }
}

/// Reads `from` to its end on a thread; waits up to `timeout` for a line starting with
/// `ready`. Returns whether one came (false at once if the output ended first) and the
/// thread, which yields everything read.
fn watch_lines(
    from: impl Read + Send + 'static,
    prefix: &'static str,
    ready: &'static str,
    timeout: Duration,
) -> (bool, JoinHandle<String>) {
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if line.starts_with(prefix) && line.contains(ready) {
                let _ = tx.send(());
            }
            all += &line;
            all.push('\n');
        }
        all
    });
    (rx.recv_timeout(timeout).is_ok(), reader)
}

fn joined(reader: JoinHandle<String>) -> String {
    reader.join().unwrap_or_default()
}

/// The first line a command prints ("?" if it cannot run).
fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}
