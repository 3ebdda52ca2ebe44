//! `cargo xtask bench report [--events N]`: report generation from a large recording.
//! Writes a synthetic trace file (`docs/trace-format.md`) with N events, runs the release
//! `tasktrace report` on it, and prints wall time, events/s and peak memory (median of 3).

use std::{path::Path, process::Command, time::Instant};

/// Runs a command; returns (wall seconds, peak RSS in KiB): the process's own high-water
/// mark (VmHWM), not wait4's ru_maxrss, which starts from the forking xtask's size.
fn measure(cmd: &mut Command) -> Result<(f64, i64), String> {
    let started = Instant::now();
    let kib = peak_rss_kib(cmd)?;
    Ok((started.elapsed().as_secs_f64(), kib as i64))
}

pub fn report(root: &Path, events: u64) -> Result<(), String> {
    let tasktrace = root.join("target/release/tasktrace");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join(format!("synthetic-{events}.trace"));
    let t = Instant::now();
    // The recording's own writer and event type write it (a hidden `tasktrace` verb).
    let status = Command::new(&tasktrace)
        .arg("synth-trace")
        .arg(&file)
        .args(["--events", &events.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "tasktrace synth-trace {}: {status}",
            file.display()
        ));
    }
    let size = std::fs::metadata(&file).map_err(|e| e.to_string())?.len();
    println!(
        "bench report: wrote {} ({events} events, {:.0} MiB) in {:.1}s",
        file.display(),
        size as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    let mut runs = Vec::new();
    for i in 0..3 {
        let (wall, rss) = measure(
            Command::new(&tasktrace)
                .arg("report")
                .arg(&file)
                .args(["-q", "--json", "/dev/null"])
                .stdout(std::process::Stdio::null()),
        )?;
        println!(
            "  run {}: {wall:.2}s, peak RSS {:.0} MiB",
            i + 1,
            rss as f64 / 1024.0
        );
        runs.push((wall, rss));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (wall, _) = runs[1];
    let mut rss: Vec<i64> = runs.iter().map(|r| r.1).collect();
    rss.sort_unstable();
    println!(
        "bench report: median {wall:.2}s for {events} events = {:.2} M events/s on one core; median peak RSS {:.0} MiB ({:.1} bytes/event)",
        events as f64 / wall / 1e6,
        rss[1] as f64 / 1024.0,
        rss[1] as f64 * 1024.0 / events as f64
    );
    Ok(())
}

/// Runs the spawn-loop fixture and returns its ns per spawn.
fn ns_per_spawn(cmd: &mut Command) -> Result<f64, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("NS_PER_SPAWN "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            format!(
                "no measurement from {cmd:?}: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

pub fn spawn(root: &Path) -> Result<(), String> {
    const N: &str = "200000";
    const ROUNDS: usize = 5;
    let fixture = root.join("fixtures/spawnloop/target/release/fixture-spawnloop");
    let tasktrace = root.join("target/release/tasktrace");
    let traced = |extra: &[&str]| {
        let mut c = Command::new(&tasktrace);
        c.args(["run", "-q", "--ring-size", "64M"])
            .args(extra)
            .arg("--")
            .arg(&fixture)
            .arg(N);
        c
    };
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved (A B C A B C …) so that machine noise hits every mode alike.
    for _ in 0..ROUNDS {
        a.push(ns_per_spawn(Command::new(&fixture).arg(N))?);
        b.push(ns_per_spawn(&mut traced(&["--no-spawn-sites"]))?);
        c.push(ns_per_spawn(&mut traced(&[]))?);
    }
    let (a, b, c) = (median(&mut a), median(&mut b), median(&mut c));
    println!("bench spawn ({N} spawns of a trivial task, median of {ROUNDS} interleaved runs):");
    println!("  untraced:                      {a:>8.0} ns/spawn");
    println!(
        "  traced, --no-spawn-sites:      {b:>8.0} ns/spawn  (+{:.0})",
        b - a
    );
    println!(
        "  traced, spawn sites (default): {c:>8.0} ns/spawn  (+{:.0})",
        c - a
    );
    println!("  spawn-site capture costs {:.0} ns per spawn", c - b);
    Ok(())
}

/// Reading the task lists of a process with many live tasks: `tasktrace dump` of the late
/// fixture parked with `--idle N` tasks (default 100 000), median of five readings.
pub fn dump(root: &Path, idle: usize) -> Result<(), String> {
    let late = root.join("fixtures/late");
    dump_of(
        root,
        &late.join("target/release/fixture-late"),
        idle,
        "release build",
    )?;
    // The same target with its types: every idle task's await chain read too.
    crate::build_fixture(&late, "dwarf")?;
    dump_of(
        root,
        &late.join("target/dwarf/fixture-late"),
        idle,
        "built with debug = 2: await chains read",
    )
}

/// `tasktrace dump` of `fixture` holding `idle` idle tasks, median of 5.
fn dump_of(root: &Path, fixture: &Path, idle: usize, what: &str) -> Result<(), String> {
    const ROUNDS: usize = 5;
    let tasktrace = root.join("target/release/tasktrace");
    let (mut child, ready) = start_until(
        Command::new(fixture).args(["--idle", &idle.to_string()]),
        |l| l.starts_with("TASKTRACE_GROUND_TRUTH "),
    )?;
    let result = (|| {
        if !ready {
            return Err("the late fixture did not start".to_string());
        }
        let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        let (mut wall, mut read, mut tasks, mut chains) = (Vec::new(), Vec::new(), 0, 0);
        for _ in 0..ROUNDS {
            let t = std::time::Instant::now();
            let out = Command::new(&tasktrace)
                .args(["dump", "--json", "-", "--pid", &child.id().to_string()])
                .output()
                .map_err(|e| e.to_string())?;
            wall.push(t.elapsed().as_secs_f64());
            if !out.status.success() {
                return Err(format!(
                    "tasktrace dump failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            read.push(v["read_ms"].as_f64().unwrap_or(f64::NAN));
            tasks = v["summary"]["tasks"].as_u64().unwrap_or(0);
            chains = v["tasks"].as_array().map_or(0, |t| {
                t.iter().filter(|t| !t["await_chain"].is_null()).count()
            });
        }
        println!(
            "bench dump, {what} (target: {tasks} live tasks, RSS {:.0} MiB; median of {ROUNDS}):",
            rss_kib as f64 / 1024.0
        );
        println!(
            "  reading the task lists: {:>7.0} ms (scan, walk, second state reading)",
            median(&mut read)
        );
        println!(
            "  whole `tasktrace dump --json -`: {:>7.0} ms, {chains} await chains",
            median(&mut wall) * 1e3
        );
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Peak RSS (VmHWM, KiB) of a command, sampled from /proc while it runs.
fn peak_rss_kib(cmd: &mut Command) -> Result<u64, String> {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Some(kib) = std::fs::read_to_string(&status_path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            if !status.success() {
                return Err(format!("{cmd:?} failed: {status}"));
            }
            return Ok(peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Tracer memory per live task: `tasktrace record` attached to the late fixture holding
/// N idle tasks (read from its task lists at attach and at the end) against the same with
/// none; the difference over N.
pub fn memory(root: &Path, tasks: usize) -> Result<(), String> {
    let fixture = root.join("fixtures/late/target/release/fixture-late");
    let tasktrace = root.join("target/release/tasktrace");
    let measure = |idle: usize| -> Result<(u64, u64), String> {
        let (mut target, ready) = start_until(
            Command::new(&fixture).args(["--idle", &idle.to_string()]),
            |l| l.starts_with("TASKTRACE_GROUND_TRUTH "),
        )?;
        let json = std::env::temp_dir().join(format!("tasktrace-bench-memory-{idle}.json"));
        let result = if ready {
            peak_rss_kib(
                Command::new(&tasktrace)
                    // Full mode, the figure's history (the readings' memory is the
                    // same in every mode; `record` defaults to sample).
                    .args(["record", "-q", "--mode", "full", "--duration", "3s"])
                    .arg("--json")
                    .arg(&json)
                    .args(["--pid", &target.id().to_string()]),
            )
            .map(|kib| {
                let seen = std::fs::read(&json)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v["summary"]["tasks_seen"].as_u64())
                    .unwrap_or(0);
                (kib, seen)
            })
        } else {
            Err("the late fixture did not start".into())
        };
        let _ = target.kill();
        let _ = target.wait();
        result
    };
    let (base_kib, base_tasks) = measure(0)?;
    let (kib, seen) = measure(tasks)?;
    let per_task = (kib.saturating_sub(base_kib) * 1024) as f64 / (seen - base_tasks).max(1) as f64;
    println!("bench memory (tasktrace record --duration 3s, peak RSS):");
    println!(
        "  target with {base_tasks:>8} tasks: {:>7.1} MiB",
        base_kib as f64 / 1024.0
    );
    println!(
        "  target with {seen:>8} tasks: {:>7.1} MiB",
        kib as f64 / 1024.0
    );
    println!("  tracer memory per live task: {per_task:.0} bytes");
    Ok(())
}

/// `tasktrace report` of a synthetic one-minute recording and of one `seconds` long, both
/// at `rate` spawns a second (written by the recording's own writer: `synth-trace
/// --spawns-per-s`): the report's size and the replay's peak memory must follow the live
/// tasks, not the window's length.
pub fn long(root: &Path, rate: u64, seconds: u64) -> Result<(), String> {
    let tasktrace = root.join("target/release/tasktrace");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    println!(
        "bench long ({rate} spawns/s, a leak every 10 s; the recording streamed through a pipe into tasktrace report):"
    );
    let mut rows = Vec::new();
    for secs in [60, seconds] {
        // A FIFO, not a file: a day of recording is hundreds of gigabytes; the writer and
        // the report stream it (the same writer and reader as a file).
        let fifo = dir.join(format!("long-{rate}-{secs}.fifo"));
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
            .map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(format!(
                "mkfifo {}: {}",
                fifo.display(),
                std::io::Error::last_os_error()
            ));
        }
        let t = Instant::now();
        let mut writer = Command::new(&tasktrace)
            .arg("synth-trace")
            .arg(&fifo)
            .args([
                "--spawns-per-s",
                &rate.to_string(),
                "--seconds",
                &secs.to_string(),
            ])
            .spawn()
            .map_err(|e| e.to_string())?;
        let json = dir.join(format!("long-{rate}-{secs}.json"));
        let measured = measure(
            Command::new(&tasktrace)
                .arg("report")
                .arg(&fifo)
                .args(["-q", "--json"])
                .arg(&json),
        );
        let status = writer.wait().map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&fifo);
        let (wall, kib) = measured?;
        if !status.success() {
            return Err(format!(
                "tasktrace synth-trace {}: {status}",
                fifo.display()
            ));
        }
        let elapsed = t.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&json).map_err(|e| e.to_string())?.len();
        let s = &summary_of(&json)?;
        // A leak every 10 s, leaked once idle for the default 30 s.
        let leaks = (secs.saturating_sub(30)) / 10;
        let leaked = s["leaked"].as_u64().unwrap_or(0);
        if leaked.abs_diff(leaks) > 1 {
            return Err(format!(
                "{secs} s: {leaked} leaked, expected about {leaks}: {s}"
            ));
        }
        println!(
            "  {secs:>6} s: {:>11} tasks ({:>11} folded, {leaked} leaked); report {:>6.2} MB, peak RSS {:>6.1} MiB, {wall:.1} s ({elapsed:.0} s with the writer)",
            s["tasks_seen"],
            s["folded"],
            bytes as f64 / 1e6,
            kib as f64 / 1024.0,
        );
        rows.push((bytes as f64, kib as f64));
    }
    println!(
        "bench long: {seconds} s against 60 s: x{:.2} report size, x{:.2} peak RSS",
        rows[1].0 / rows[0].0,
        rows[1].1 / rows[0].1
    );
    Ok(())
}

#[derive(serde::Deserialize)]
struct SummaryOnly {
    summary: serde_json::Value,
}

/// A JSON report's summary, streamed (a report of millions of tasks is gigabytes); the
/// report is removed.
fn summary_of(json: &Path) -> Result<serde_json::Value, String> {
    let file = std::fs::File::open(json).map_err(|e| e.to_string())?;
    let v: SummaryOnly =
        serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(json);
    Ok(v.summary)
}

/// Tracer memory against finished tasks: `tasktrace run` over the spawn loop at N/10 and
/// N tasks (each spawned, polled once, finished), per mode and `--keep`: with folding,
/// memory and the report follow the live tasks, not the finished ones.
pub fn finished(root: &Path, tasks: usize) -> Result<(), String> {
    let fixture = root.join("fixtures/spawnloop/target/release/fixture-spawnloop");
    let tasktrace = root.join("target/release/tasktrace");
    println!("bench finished (tasktrace run over fixtures/spawnloop; peak RSS, report size):");
    for mode in ["lifecycle", "full"] {
        for keep in ["recent", "all"] {
            let mut row = Vec::new();
            for n in [tasks / 10, tasks] {
                let json = std::env::temp_dir().join(format!("tasktrace-bench-finished-{n}.json"));
                let kib = peak_rss_kib(
                    Command::new(&tasktrace)
                        .args(["run", "-q", "--mode", mode, "--keep", keep, "--json"])
                        .arg(&json)
                        .arg("--")
                        .arg(&fixture)
                        .arg(n.to_string()),
                )?;
                let bytes = std::fs::metadata(&json).map_err(|e| e.to_string())?.len();
                let s = &summary_of(&json)?;
                let seen = s["tasks_seen"].as_u64().unwrap_or(0);
                if s["ok"] != s["tasks_seen"] {
                    return Err(format!("{mode}/{keep}/{n}: not every task ok: {s}"));
                }
                println!(
                    "  {mode:>9} --keep {keep:<6} {seen:>9} tasks ({:>9} folded): peak RSS {:>7.1} MiB, report {:>8.1} MB",
                    s["folded"].as_u64().unwrap_or(0),
                    kib as f64 / 1024.0,
                    bytes as f64 / 1e6
                );
                row.push((kib as f64, bytes as f64));
            }
            println!(
                "  {mode:>9} --keep {keep:<6} 10x the finished tasks: x{:.2} peak RSS, x{:.2} report size",
                row[1].0 / row[0].0,
                row[1].1 / row[0].1
            );
        }
    }
    Ok(())
}

fn measurement(out: &std::process::Output, key: &str) -> Result<f64, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            format!(
                "no {key}in the output: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Per-poll cost: eight tasks yielding (each poll: wake, schedule, poll), untraced and
/// traced in each mode, interleaved; probe hits per poll from the traced runs' own event
/// counts (every event is one probe hit: one-hit polls have no return trampoline); the
/// tracer's CPU from the children's rusage of `tasktrace run` less the fixture's own.
pub fn poll(root: &Path) -> Result<(), String> {
    // Polls per run: full mode's ~1 µs polls would take minutes at the others' count, and
    // the others' ~70 ns polls need this many for a run of seconds (the tracer's CPU a
    // second includes its attach and detach: a short run would be mostly those).
    const N: u64 = 20_000_000;
    const ROUNDS: usize = 5;
    // Full mode on this release build (no type information) copies the stack at each
    // new await point: one more hit per waker clone; the second row turns that off.
    const MODES: [(&str, &[&str]); 4] = [
        ("full", &["--mode", "full"]),
        (
            "full, no await stacks",
            &["--mode", "full", "--no-await-stacks"],
        ),
        ("lifecycle", &["--mode", "lifecycle"]),
        ("sample", &["--mode", "sample"]),
    ];
    let polls = |mode: &str| if mode.starts_with("full") { N / 10 } else { N };
    let fixture = root.join("fixtures/bench/pollloop/target/release/fixture-pollloop");
    let tasktrace = root.join("target/release/tasktrace");
    let json = std::env::temp_dir().join("tasktrace-bench-poll.json");
    let mut plain = Vec::new();
    #[derive(Default)]
    struct Traced {
        ns: Vec<f64>,
        hits: Vec<f64>,
        ratio: Vec<f64>,
        tracer_cpu: Vec<f64>,
    }
    let mut traced: [Traced; 4] = Default::default();
    let untraced_run = || -> Result<f64, String> {
        let out = Command::new(&fixture)
            .arg(N.to_string())
            .output()
            .map_err(|e| e.to_string())?;
        measurement(&out, "NS_PER_POLL ")
    };
    for round in 0..ROUNDS {
        // Each traced run is paired with an untraced run just before it, and the modes'
        // order turns each round: a mode that always ran right after full mode's hot
        // rounds, or always last, would carry the machine's drift in its ratio.
        for k in 0..MODES.len() {
            let m = (round + k) % MODES.len();
            let ((mode, args), t) = (MODES[m], &mut traced[m]);
            let untraced = untraced_run()?;
            plain.push(untraced);
            let before = children_cpu_s();
            let started = std::time::Instant::now();
            let out = Command::new(&tasktrace)
                .args(["run", "-q", "--ring-size", "64M"])
                .args(args)
                .arg("--json")
                .arg(&json)
                .arg("--")
                .arg(&fixture)
                .arg(polls(mode).to_string())
                .output()
                .map_err(|e| e.to_string())?;
            let wall = started.elapsed().as_secs_f64();
            let both = children_cpu_s() - before;
            let ns = measurement(&out, "NS_PER_POLL ")?;
            t.ns.push(ns);
            t.ratio.push(untraced / ns);
            let target = measurement(&out, "CPU_S ")?;
            t.tracer_cpu.push((both - target).max(0.0) / wall);
            let r: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&json).map_err(|e| format!("{}: {e}", json.display()))?,
            )
            .map_err(|e| e.to_string())?;
            // Waker clones at the same await point as before are hits that send nothing.
            let events = r["diagnostics"]["events"].as_f64().unwrap_or(0.0)
                + r["await_chains"]["clone_hits"].as_f64().unwrap_or(0.0);
            // The fixture polls N times after a warm-up of N/10.
            t.hits
                .push(events / (polls(mode) + polls(mode) / 10) as f64);
        }
    }
    let a = median(&mut plain);
    println!(
        "bench poll ({N} yielding polls a run, {} in full mode; median of {ROUNDS} rounds, each traced run paired with the untraced run before it):",
        N / 10
    );
    println!("  untraced:            {a:>7.0} ns/poll");
    for ((mode, _), t) in MODES.iter().zip(traced.iter_mut()) {
        let (b, h) = (median(&mut t.ns), median(&mut t.hits));
        let lo = t.ratio.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = t.ratio.iter().copied().fold(0.0, f64::max);
        println!(
            "  {mode:<22} {b:>7.0} ns/poll  (+{:.0} ns, x{:.2}; {h:.2} probe hits per poll)",
            b - a,
            b / a
        );
        println!(
            "  {:<22} throughput x{:.3} of untraced per round (median; x{lo:.3}..x{hi:.3}), tracer CPU {:.1}% of a core (attach and detach included)",
            "",
            median(&mut t.ratio),
            median(&mut t.tracer_cpu) * 100.0
        );
    }
    Ok(())
}

/// CPU time (user + system) of this process's waited-for children, descendants they
/// waited for included, in seconds.
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Attach and detach time with a large plan: `tasktrace record` on a target with 700 task
/// types (over 2 000 probe sites), median of five windows.
pub fn attach(root: &Path) -> Result<(), String> {
    const ROUNDS: usize = 5;
    let fixture = root.join("fixtures/bench/manysites/target/release/fixture-manysites");
    let tasktrace = root.join("target/release/tasktrace");
    let json = std::env::temp_dir().join("tasktrace-bench-attach.json");
    let (mut target, ready) = start_until(&mut Command::new(&fixture), |l| l == "READY")?;
    let result = (|| {
        if !ready {
            return Err("the manysites fixture did not start".to_string());
        }
        let (mut attach, mut detach, mut sites) = (Vec::new(), Vec::new(), 0);
        for _ in 0..ROUNDS {
            let out = Command::new(&tasktrace)
                // Full mode attaches every probe site: the case this measures.
                .args([
                    "record",
                    "-q",
                    "--mode",
                    "full",
                    "--duration",
                    "1s",
                    "--json",
                ])
                .arg(&json)
                .args(["--pid", &target.id().to_string()])
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "tasktrace record failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&json).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            attach.push(r["probes"]["attach_ms"].as_f64().unwrap_or(f64::NAN));
            detach.push(r["probes"]["detach_ms"].as_f64().unwrap_or(f64::NAN));
            sites = r["probes"]["sites"].as_u64().unwrap_or(0);
        }
        let (a, d) = (median(&mut attach), median(&mut detach));
        println!("bench attach ({sites} probe sites, median of {ROUNDS}):");
        println!(
            "  attach {a:.0} ms, detach {d:.0} ms, together {:.0} ms",
            a + d
        );
        Ok(())
    })();
    let _ = target.kill();
    let _ = target.wait();
    result
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Starts a benchmark target and reads its output until a line satisfies `ready`:
/// (the process, whether such a line came before the output ended).
pub(crate) fn start_until(
    cmd: &mut Command,
    ready: impl Fn(&str) -> bool,
) -> Result<(std::process::Child, bool), String> {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let found = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| ready(&l));
    Ok((child, found))
}

/// Resident memory of a process now, in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time (user + system) of a process so far, in seconds.
fn cpu_s(pid: u32) -> Option<f64> {
    crate::bench_http::cpu_us(pid).map(|us| us / 1e6)
}

/// `cargo xtask bench agent`: `tasktrace agent` on a target spawning `rate` tasks a second
/// for `seconds`: its memory and CPU every 10 s (bounded: the model folds finished tasks),
/// and the tasks it saw, from its own /metrics.
pub fn agent(root: &Path, rate: u64, seconds: u64) -> Result<(), String> {
    use std::time::{Duration, Instant};
    let (target, ready) = start_until(
        Command::new(root.join("fixtures/bench/spawnrate/target/release/fixture-spawnrate"))
            .arg(rate.to_string()),
        |l| l.starts_with("SPAWNING"),
    )?;
    let mut target = scopeguard(target);
    if !ready {
        return Err("fixture-spawnrate did not start".into());
    }
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let agent = Command::new(root.join("target/release/tasktrace"))
        .args(["agent", "--pid", &target.0.id().to_string(), "--listen"])
        .arg(listen.to_string())
        .arg("-q")
        .spawn()
        .map_err(|e| e.to_string())?;
    let agent = scopeguard(agent);
    let apid = agent.0.id();
    let started = Instant::now();
    println!(
        "bench agent: tasktrace agent --pid (its default, sample mode) on fixture-spawnrate {rate} (spawns/s), {seconds} s:"
    );
    println!(
        "  {:>6}  {:>10}  {:>14}  {:>12}",
        "t (s)", "RSS (MiB)", "CPU (% core)", "tasks seen"
    );
    let (mut last_cpu, mut last_t) = (cpu_s(apid).unwrap_or(0.0), 0.0f64);
    let mut rss = Vec::new();
    let mut cpu = Vec::new();
    let mut t = 10u64;
    while t <= seconds {
        let at = started + Duration::from_secs(t);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let now_s = started.elapsed().as_secs_f64();
        let c = cpu_s(apid).ok_or("the agent exited")?;
        let r = rss_kib(apid).ok_or("the agent exited")? as f64 / 1024.0;
        let share = (c - last_cpu) / (now_s - last_t) * 100.0;
        let seen = spawned(&listen.to_string());
        println!("  {t:>6}  {r:>10.1}  {share:>14.2}  {seen:>12}");
        rss.push(r);
        cpu.push(share);
        (last_cpu, last_t) = (c, now_s);
        t += 10;
    }
    drop(agent);
    target.0.kill().ok();
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        let mut c = cpu.clone();
        println!(
            "  RSS at 10 s {first:.1} MiB, at {seconds} s {last:.1} MiB (x{:.2}); agent CPU median {:.2} % of one core",
            last / first,
            median(&mut c)
        );
    }
    Ok(())
}

/// The tasks the agent saw spawned so far: its `tasktrace_spawned_tasks_total`, summed.
fn spawned(addr: &str) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with("tasktrace_spawned_tasks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A child killed (SIGINT, then reaped) when dropped, unless already reaped (`.1`).
struct Guard(std::process::Child, bool);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.1 {
            return;
        }
        // SAFETY: signalling our own child, not reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

impl Guard {
    /// SIGINT, then reaped: how it ended.
    fn stop(mut self) -> std::io::Result<std::process::ExitStatus> {
        // SAFETY: signalling our own child, not reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        self.1 = true;
        self.0.wait()
    }
}

fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c, false)
}

/// `cargo xtask bench busy`: a target spawning `rate` tasks a second with `live` tasks
/// parked for good, untraced and under `tasktrace record --pid --mode MODE`, interleaved
/// rounds of `seconds` each: the target's CPU a second both ways (what tracing costs a
/// target that does not saturate its cores), the tracer's own, and the spawn rate and probe
/// time the report gives.
pub fn busy(root: &Path, rate: u64, live: u64, seconds: u64, mode: &str) -> Result<(), String> {
    use std::time::{Duration, Instant};
    const ROUNDS: usize = 3;
    let fixture = root.join("fixtures/bench/spawnrate/target/release/fixture-spawnrate");
    let json = std::env::temp_dir().join("tasktrace-bench-busy.json");
    let start = || -> Result<Guard, String> {
        let (target, ready) = start_until(
            Command::new(&fixture)
                .arg(rate.to_string())
                .args(["--live", &live.to_string()]),
            |l| l.starts_with("SPAWNING"),
        )?;
        let target = scopeguard(target);
        if !ready {
            return Err("fixture-spawnrate did not start".into());
        }
        // The parked tasks spawned, the rate steady.
        std::thread::sleep(Duration::from_secs(2));
        Ok(target)
    };
    // CPU a second of each process over `seconds`.
    let over = |pids: &[u32]| -> Result<Vec<f64>, String> {
        let before: Vec<f64> = pids.iter().map(|&p| cpu_s(p).unwrap_or(0.0)).collect();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(seconds));
        let wall = t0.elapsed().as_secs_f64();
        pids.iter()
            .zip(before)
            .map(|(&p, b)| Ok((cpu_s(p).ok_or("a process exited")? - b) / wall))
            .collect()
    };
    let (mut plain, mut target_traced, mut tracer, mut ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last = serde_json::Value::Null;
    for round in 1..=ROUNDS {
        let t = start()?;
        let untraced = over(&[t.0.id()])?[0];
        drop(t);
        let t = start()?;
        let _ = std::fs::remove_file(&json);
        let rec = Command::new(root.join("target/release/tasktrace"))
            .args([
                "record",
                "-q",
                "--pid",
                &t.0.id().to_string(),
                "--mode",
                mode,
            ])
            .args(["--duration", "600s", "--json"])
            .arg(&json)
            .spawn()
            .map_err(|e| e.to_string())?;
        let rec = scopeguard(rec);
        // Attached, and the attach-time reading of the live tasks done.
        std::thread::sleep(Duration::from_secs(5));
        let m = over(&[t.0.id(), rec.0.id()])?;
        // SIGINT ends the window: the report is written.
        let status = rec.stop().map_err(|e| e.to_string())?;
        drop(t);
        if !status.success() {
            return Err(format!("tasktrace record ended with {status}"));
        }
        last = summary_of(&json)?;
        eprintln!(
            "xtask: bench busy round {round}: target {:.1}% untraced, {:.1}% traced; tracer {:.1}% of a core",
            untraced * 100.0,
            m[0] * 100.0,
            m[1] * 100.0
        );
        plain.push(untraced);
        target_traced.push(m[0]);
        tracer.push(m[1]);
        ratio.push(untraced / m[0]);
    }
    let lo = ratio.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratio.iter().copied().fold(0.0, f64::max);
    println!(
        "bench busy: fixture-spawnrate {rate} spawns/s, {live} tasks alive, tasktrace record --pid --mode {mode}, {seconds} s, median of {ROUNDS} interleaved rounds:"
    );
    println!(
        "  target CPU: {:.1}% of a core untraced, {:.1}% traced (untraced/traced per round x{:.3} median, x{lo:.3}..x{hi:.3})",
        median(&mut plain) * 100.0,
        median(&mut target_traced) * 100.0,
        median(&mut ratio)
    );
    println!(
        "  tracer CPU: {:.1}% of a core",
        median(&mut tracer) * 100.0
    );
    println!(
        "  last report: {:.0} spawns/s counted, spawn probes {} , {} lost events",
        last["spawned"]["per_second"].as_f64().unwrap_or(f64::NAN),
        last["spawn_probes"],
        last["lost_events"]
    );
    Ok(())
}
