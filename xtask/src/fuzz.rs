//! `cargo xtask fuzz [--seconds N] [TARGET…]`: runs each coverage-guided fuzz target of
//! `fuzz/` (cargo-fuzz, libFuzzer with AddressSanitizer, built by the pinned nightly) for
//! a fixed time, from seeds made here (a synthetic recording, real fixture binaries),
//! and prints how many inputs each ran. A crash fails the run and names its input, which
//! becomes a unit test once fixed.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The fuzz targets (`fuzz/fuzz_targets/*.rs`).
const TARGETS: [&str; 2] = ["trace_file", "binary"];

pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let seconds: u64 = match args.iter().position(|a| a == "--seconds") {
        Some(i) => args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .ok_or("--seconds takes a number")?,
        None => 600,
    };
    let wanted: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| {
            let named: Vec<&String> = args
                .iter()
                .filter(|a| !a.starts_with("--") && a.parse::<u64>().is_err())
                .collect();
            named.is_empty() || named.iter().any(|n| n.as_str() == *t)
        })
        .collect();
    let nightly = crate::ebpf_toolchain(root)?;
    ensure_cargo_fuzz(&nightly)?;
    let corpus = root.join("target/fuzz-corpus");
    seed(root, &corpus)?;
    let mut lines = Vec::new();
    let mut crashed = Vec::new();
    for target in wanted {
        let dir = corpus.join(target);
        eprintln!(
            "xtask: fuzz: {target} for {seconds} s (seeds in {})",
            dir.display()
        );
        let out = crate::rustup_cargo(&nightly)
            .args(["fuzz", "run", target])
            .arg(&dir)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-print_final_stats=1",
                "-timeout=20",
                "-rss_limit_mb=4096",
                "-max_len=2000000",
            ])
            .current_dir(root.join("fuzz"))
            .output()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let runs = stderr
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map(|n| n.trim().to_owned())
            .unwrap_or_else(|| "?".into());
        if out.status.success() {
            lines.push(format!("{target}: {runs} inputs in {seconds} s, no crash"));
        } else {
            let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
            eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            crashed.push(format!(
                "{target}: failed after {runs} inputs (artifacts in fuzz/artifacts/{target}/)"
            ));
        }
    }
    for l in lines.iter().chain(&crashed) {
        println!("xtask: fuzz: {l}");
    }
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(crashed.join("; "))
    }
}

fn ensure_cargo_fuzz(nightly: &str) -> Result<(), String> {
    let have = crate::rustup_cargo(nightly)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    eprintln!("xtask: fuzz: installing cargo-fuzz (once)");
    let status = crate::rustup_cargo(nightly)
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("installing cargo-fuzz failed".into())
    }
}

/// Seeds: a synthetic recording written by tasktrace's own writer, and real binaries
/// (a tokio fixture, a non-tokio program).
fn seed(root: &Path, corpus: &Path) -> Result<(), String> {
    let traces = corpus.join("trace_file");
    let binaries = corpus.join("binary");
    for d in [&traces, &binaries] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let synthetic = traces.join("seed-synthetic.trace");
    if !synthetic.exists() {
        let status = Command::new(root.join("target/debug/tasktrace"))
            .arg("synth-trace")
            .arg(&synthetic)
            .args(["--events", "300"])
            .status()
            .map_err(|e| format!("cannot run tasktrace synth-trace: {e}"))?;
        if !status.success() {
            return Err("tasktrace synth-trace failed".into());
        }
    }
    let copies: [(PathBuf, &str); 2] = [
        (crate::fixture_binary("faults"), "seed-tokio"),
        (PathBuf::from("/bin/true"), "seed-not-tokio"),
    ];
    for (from, name) in copies {
        let to = binaries.join(name);
        if !to.exists() && from.exists() {
            std::fs::copy(&from, &to).map_err(|e| format!("{}: {e}", from.display()))?;
        }
    }
    Ok(())
}
