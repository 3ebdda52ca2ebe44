//! `cargo xtask <task>`: builds that cargo alone cannot express.
//!
//! - `fixtures`: build every fixture target (own lockfile each) in release mode, and the
//!   matrix fixture for each tokio version in every build profile.
//! - `fixture-path NAME`: print the path of a built fixture binary.
//! - `bench report [--events N]`: time `tasktrace report` on an N-event recording
//!   (default 10 million) and print its throughput and peak memory.
//! - `bench spawn`: per-spawn cost untraced, traced, and traced without spawn sites
//!   (so the cost of naming spawn sites), interleaved runs, medians.
//! - `bench dump [--tasks N]`: time reading the task lists of a process holding N live
//!   tasks (default 100 000) with `tasktrace dump`, medians.
//! - `bench poll`: per-poll cost untraced and traced, and probe hits per poll
//!   (`fixtures/bench/pollloop`, built only for this bench).
//! - `bench attach`: attach and detach time of a plan with over 2 000 probe sites
//!   (`fixtures/bench/manysites`, built only for this bench).
//! - `bench memory [--tasks N]`: tracer memory per live task, `tasktrace record` on a
//!   process holding N idle tasks (default 1 000 000) against one holding none.
//! - `bench finished [--tasks N]`: tracer peak memory and report size as finished tasks
//!   grow tenfold (N/10 and N tasks spawned and finished by `fixtures/spawnloop`), with
//!   finished tasks folded (`--keep recent`, the default) and kept (`--keep all`).
//! - `bench long [--rate R] [--seconds S]`: `tasktrace report` of a synthetic one-minute
//!   and S-second recording (default an hour; `--seconds 86400` for a day) of R short
//!   tasks spawned a second (default 10 000) and a leak every 10 s, streamed through a
//!   FIFO (no file): report size and peak memory, long against short.
//! - `bench agent [--rate R] [--seconds S]`: `tasktrace agent` on `fixtures/bench/spawnrate`
//!   spawning R tasks a second (default 10 000) for S seconds (default 120): its RSS and
//!   CPU every 10 s; then `bench http`'s server untraced against the agent attached.
//! - `bench busy [--rate R] [--live N] [--seconds S] [--mode M]`: `fixtures/bench/spawnrate`
//!   spawning R tasks a second (default 100 000) with N tasks parked (default 100 000),
//!   untraced against `tasktrace record --pid --mode M` (default sample), S seconds a round
//!   (default 20): the target's CPU both ways and the tracer's own.
//! - `bench http`: requests/s of a hyper server under `wrk` load untraced, traced in
//!   lifecycle, full and sample mode, and with console-subscriber and a console client attached;
//!   the throughput loss and CPU per request of each, for a server that spawns a task per
//!   request and for one that spawns per connection only (`fixtures/bench/http`, built
//!   only for this bench).
//! - `bench` or `bench all [OPTIONS]`: poll, http, report, memory, finished, long and attach in turn.
//! - `corpus [build] [--ci] [NAME…]`: build the real-program corpus (`fixtures/corpus/`,
//!   crates.io programs as their authors ship them) and trace each, checking the oracle
//!   of `tests/e2e_corpus.rs`; `build` only builds; `--ci`: the programs `.ci/run` traces.
//! - `demo`: build tasktrace and the demo, trace the demo, print the verdicts, write
//!   `tasktrace-demo.json`, and check the verdicts against the demo's own ground truth.
//! - `fuzz [--seconds N] [TARGET…]`: run each fuzz target of `fuzz/` (cargo-fuzz,
//!   installed on first use, with the pinned nightly) for N seconds (default 600) from
//!   seeds made here; print the inputs run; fail on a crash.
//! - `kernels [--debug] [RELEASE…]`: download Debian's kernel packages (the newest of each series
//!   the registry offers: 6.1 and 6.12 today), boot each under QEMU with virtme-ng, trace
//!   the demo inside and check its verdicts and the attach path the kernel must give;
//!   `RELEASE` prefixes (`6.1`) pick some; `--debug` traces with the debug build.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("fixtures") => build_fixtures(),
        Some("demo") => demo(),
        Some("bench") => bench(&args[1..]),
        Some("corpus") => corpus::run(&root(), &args[1..]),
        Some("kernels") => kernels(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("fixture-path") => match args.get(1) {
            Some(name) => {
                println!("{}", fixture_binary(name).display());
                Ok(())
            }
            None => Err("usage: cargo xtask fixture-path NAME".into()),
        },
        _ => Err(
            "usage: cargo xtask <fixtures | fixture-path NAME | demo | kernels [--debug] [RELEASE…] | fuzz [--seconds N] [TARGET…] | corpus [build] [--ci] [NAME…] | bench [all | report [--events N] | spawn | poll | http | attach | dump [--tasks N] | memory [--tasks N] | finished [--tasks N] | long [--rate R] [--seconds S] | agent [--rate R] [--seconds S]]>"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Cargo packages directly below `dir` (each with its own lockfile), sorted.
fn crate_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("Cargo.toml").is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Fixture crates, each outside the workspace with its own lockfile.
fn fixtures() -> Vec<PathBuf> {
    crate_dirs(&root().join("fixtures"))
}

fn fixture_binary(name: &str) -> PathBuf {
    root()
        .join("fixtures")
        .join(name)
        .join("target/release")
        .join(format!("fixture-{name}"))
}

mod bench;
mod bench_http;
mod corpus;
mod fuzz;
mod kernels;

/// What `cargo xtask bench` (or `bench all`) runs, in this order.
const ALL_BENCHES: [&str; 9] = [
    "poll", "http", "busy", "report", "memory", "finished", "long", "agent", "attach",
];

fn bench(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        None | Some("all") => {
            // Each bench prints its own section; one failing does not stop the others.
            let mut failed = Vec::new();
            for (i, name) in ALL_BENCHES.into_iter().enumerate() {
                if i > 0 {
                    println!();
                }
                let mut one = vec![name.to_owned()];
                one.extend(args.iter().skip(1).cloned());
                if let Err(e) = bench(&one) {
                    eprintln!("xtask: bench {name}: {e}");
                    failed.push(name);
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(format!("failed benchmarks: {}", failed.join(", ")))
            }
        }
        Some("report") => {
            let events = number_option(args, "--events", 10_000_000)?;
            build_tasktrace_release()?;
            bench::report(&root(), events)
        }
        Some("spawn") => {
            build_tasktrace_release()?;
            build_fixture(&root().join("fixtures/spawnloop"), "release")?;
            bench::spawn(&root())
        }
        Some("dump") => {
            let idle = number_option(args, "--tasks", 100_000)?;
            build_tasktrace_release()?;
            build_fixture(&root().join("fixtures/late"), "release")?;
            bench::dump(&root(), idle)
        }
        Some("poll") => {
            build_tasktrace_release()?;
            build_fixture(&root().join("fixtures/bench/pollloop"), "release")?;
            bench::poll(&root())
        }
        Some("http") => {
            build_tasktrace_release()?;
            let dir = root().join(bench_http::FIXTURE);
            build_fixture(&dir, "release")?;
            let console_target = dir.join(bench_http::CONSOLE_TARGET);
            build_fixture_with(
                &dir,
                "release",
                &["console"],
                &[
                    ("RUSTFLAGS", "--cfg tokio_unstable".as_ref()),
                    ("CARGO_TARGET_DIR", console_target.as_os_str()),
                ],
            )?;
            bench_http::http(&root())
        }
        Some("attach") => {
            build_tasktrace_release()?;
            build_fixture(&root().join("fixtures/bench/manysites"), "release")?;
            bench::attach(&root())
        }
        Some("agent") => {
            let rate = number_option(args, "--rate", 10_000)?;
            let seconds = number_option(args, "--seconds", 120)?;
            build_tasktrace_release()?;
            build_fixture(&root().join("fixtures/bench/spawnrate"), "release")?;
            build_fixture(&root().join(bench_http::FIXTURE), "release")?;
            bench::agent(&root(), rate, seconds)?;
            bench_http::agent_loss(&root())
        }
        Some("busy") => {
            let rate = number_option(args, "--rate", 100_000)?;
            let live = number_option(args, "--live", 100_000)?;
            let seconds = number_option(args, "--seconds", 20)?;
            let mode = args
                .iter()
                .position(|a| a == "--mode")
                .and_then(|i| args.get(i + 1))
                .map_or("sample", String::as_str);
            build_tasktrace_release()?;
            build_fixture(&root().join("fixtures/bench/spawnrate"), "release")?;
            bench::busy(&root(), rate, live, seconds, mode)
        }
        Some("long") => {
            let rate = number_option(args, "--rate", 10_000)?;
            let seconds = number_option(args, "--seconds", 3_600)?;
            if seconds > 86_400 {
                return Err("bench long: --seconds is at most a day (86400)".into());
            }
            build_tasktrace_release()?;
            bench::long(&root(), rate, seconds)
        }
        Some("finished") => {
            let tasks = number_option(args, "--tasks", 3_000_000)?;
            build_tasktrace_release()?;
            build_fixture(&root().join("fixtures/spawnloop"), "release")?;
            bench::finished(&root(), tasks)
        }
        Some("memory") => {
            let tasks = number_option(args, "--tasks", 1_000_000)?;
            build_tasktrace_release()?;
            build_fixture(&root().join("fixtures/late"), "release")?;
            bench::memory(&root(), tasks)
        }
        _ => Err(
            "usage: cargo xtask bench [all | report [--events N] | spawn | poll | http | attach | dump [--tasks N] | memory [--tasks N]]"
                .into(),
        ),
    }
}

/// `FLAG N` among the arguments, or `default`.
fn number_option<T: std::str::FromStr>(
    args: &[String],
    flag: &str,
    default: T,
) -> Result<T, String> {
    match args.iter().position(|a| a == flag) {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{flag} takes a number")),
        None => Ok(default),
    }
}

fn build_tasktrace_release() -> Result<(), String> {
    let status = cargo()
        .args(["build", "--release", "--locked", "-p", "tracer-user"])
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("building tasktrace failed".into())
    }
}

/// `cargo` of another toolchain, through rustup: not the one running xtask (whose
/// `CARGO`, `RUSTC` and `RUSTUP_TOOLCHAIN` would win).
pub fn rustup_cargo(toolchain: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", toolchain, "cargo"]);
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Build profiles of the matrix fixture (defined in each of its Cargo.toml files).
pub const MATRIX_PROFILES: [&str; 5] = ["release", "thin", "fat", "abort", "stripped"];

/// The matrix fixture's per-tokio-version crates: fixtures/matrix/tokio-*/.
fn matrix_versions() -> Vec<PathBuf> {
    crate_dirs(&root().join("fixtures/matrix"))
}

fn build_fixtures() -> Result<(), String> {
    for dir in fixtures() {
        build_fixture(&dir, "release")?;
    }
    // The demo again with DWARF line tables (spawn sites from line tables).
    build_fixture(&root().join("fixtures/demo"), "lines")?;
    // Each version keeps one target dir: the profiles share its dependency builds where
    // they can, and cargo skips cells that are already built.
    for dir in matrix_versions() {
        for profile in MATRIX_PROFILES {
            build_fixture(&dir, profile)?;
        }
    }
    build_matrix_legacy()
}

/// The toolchain of the legacy-mangled matrix cell: a stable from before v0 mangling
/// became the default (1.97), installed by scripts/setup.sh.
pub const LEGACY_TOOLCHAIN: &str = "1.95.0";

/// The newest matrix version built by an older rustc, as binaries built a while ago are:
/// legacy symbol mangling (no generic arguments in names, so no future types),
/// `drop_in_place` rather than `drop_glue`. Its own target dir: `target-legacy/`.
fn build_matrix_legacy() -> Result<(), String> {
    let dir = root().join("fixtures/matrix/tokio-1.54");
    eprintln!(
        "xtask: building {} (release, Rust {LEGACY_TOOLCHAIN}: legacy mangling)",
        dir.display()
    );
    let status = rustup_cargo(LEGACY_TOOLCHAIN)
        .args(["build", "--quiet", "--release", "--locked"])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.join("target-legacy"))
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building {} with Rust {LEGACY_TOOLCHAIN} failed",
            dir.display()
        ))
    }
}

fn build_fixture(dir: &Path, profile: &str) -> Result<(), String> {
    build_fixture_with(dir, profile, &[], &[])
}

/// A fixture build with cargo features and environment variables (e.g. RUSTFLAGS with
/// its own CARGO_TARGET_DIR, so that two variants of one crate keep their builds).
fn build_fixture_with(
    dir: &Path,
    profile: &str,
    features: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<(), String> {
    let mut what = profile.to_owned();
    if !features.is_empty() {
        what += &format!(", --features {}", features.join(","));
    }
    for (k, v) in env {
        what += &format!(", {k}={}", v.to_string_lossy());
    }
    eprintln!("xtask: building {} ({what})", dir.display());
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--quiet",
        "--profile",
        profile,
        "--locked",
        "--manifest-path",
    ])
    .arg(dir.join("Cargo.toml"));
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    let status = cmd
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building {} failed", dir.display()));
    }
    Ok(())
}

/// The fuzz targets, each for a fixed time (`fuzz.rs`); the debug tasktrace writes the
/// seed recording, the faults fixture is the seed binary.
fn fuzz(args: &[String]) -> Result<(), String> {
    build_tasktrace_debug()?;
    build_fixture(&root().join("fixtures/faults"), "release")?;
    fuzz::run(&root(), args)
}

/// `target/debug/tasktrace`, as `cargo test` builds it.
fn build_tasktrace_debug() -> Result<(), String> {
    let status = cargo()
        .args(["build", "--quiet", "--locked", "-p", "tracer-user"])
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("building tasktrace failed".into())
    }
}

/// The dated nightly of scripts/toolchain.env (eBPF crate, sanitizers).
fn ebpf_toolchain(root: &Path) -> Result<String, String> {
    let env = std::fs::read_to_string(root.join("scripts/toolchain.env"))
        .map_err(|e| format!("scripts/toolchain.env: {e}"))?;
    env.lines()
        .find_map(|l| l.strip_prefix("EBPF_TOOLCHAIN="))
        .map(|s| s.trim().to_owned())
        .ok_or_else(|| "no EBPF_TOOLCHAIN in scripts/toolchain.env".into())
}

/// The demo traced inside a booted guest of each kernel series (`kernels.rs`).
/// `--debug`: the debug build of tasktrace (what `cargo test` just built), not a release
/// build made for the purpose.
fn kernels(args: &[String]) -> Result<(), String> {
    let debug = args.iter().any(|a| a == "--debug");
    let tasktrace = if debug {
        build_tasktrace_debug()?;
        root().join("target/debug/tasktrace")
    } else {
        build_tasktrace_release()?;
        root().join("target/release/tasktrace")
    };
    build_fixture(&root().join("fixtures/demo"), "release")?;
    let releases: Vec<String> = args.iter().filter(|a| *a != "--debug").cloned().collect();
    kernels::run(&root(), &tasktrace, &releases)
}

/// The README's first command: trace the bundled demo and check its verdicts.
fn demo() -> Result<(), String> {
    let root = root();
    build_tasktrace_release()?;
    build_fixture(&root.join("fixtures/demo"), "release")?;
    let report_path = root.join("tasktrace-demo.json");
    let cmd = [
        "run",
        "--duration",
        "8s",
        "--leak-after",
        "3s",
        "--stuck-after",
        "1s",
        "--never-polled-after",
        "3s",
        "--json",
    ];
    eprintln!(
        "xtask: target/release/tasktrace {} {} -- {}",
        cmd.join(" "),
        report_path.display(),
        fixture_binary("demo").display()
    );
    let out = Command::new(root.join("target/release/tasktrace"))
        .args(cmd)
        .arg(&report_path)
        .arg("--")
        .arg(fixture_binary("demo"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run tasktrace: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if !out.status.success() {
        return Err(format!("tasktrace failed: {}", out.status));
    }
    check_demo(&stdout, &report_path)
}

/// Compares the report's verdicts with the ground truth line the demo printed.
fn check_demo(stdout: &str, report_path: &Path) -> Result<(), String> {
    use serde_json::Value;
    let truth: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TASKTRACE_GROUND_TRUTH "))
        .ok_or("the demo printed no ground truth")
        .and_then(|l| serde_json::from_str(l).map_err(|_| "bad ground truth line"))?;
    let report: Value = std::fs::read(report_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))?;
    let tasks = report["tasks"].as_array().ok_or("report without tasks")?;
    let mut mismatches = Vec::new();
    for verdict in ["leaked", "stuck", "never_polled"] {
        let mut want: Vec<u64> = truth[verdict]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        let mut got: Vec<u64> = tasks
            .iter()
            .filter(|t| t["verdict"] == verdict)
            .filter_map(|t| t["id"].as_u64())
            .collect();
        want.sort_unstable();
        got.sort_unstable();
        if want != got {
            mismatches.push(format!(
                "{verdict}: expected tasks {want:?}, tasktrace said {got:?}"
            ));
        }
    }
    if mismatches.is_empty() {
        println!(
            "\nxtask: verdicts match the demo's ground truth (leaked {}, stuck {}, never polled {}); report: {}",
            report["summary"]["leaked"],
            report["summary"]["stuck"],
            report["summary"]["never_polled"],
            report_path.display()
        );
        Ok(())
    } else {
        Err(format!(
            "verdicts differ from the demo's ground truth:\n  {}",
            mismatches.join("\n  ")
        ))
    }
}
