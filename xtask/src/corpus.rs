//! `cargo xtask corpus`: real tokio programs nobody here wrote (`fixtures/corpus/corpus.json`),
//! built as their authors ship them — from crates.io with `cargo install --locked` (their
//! own lockfile and release profile, stripped where they strip), or from a wrapper crate
//! with its lockfile — then traced by `tests/e2e_corpus.rs`, which checks an oracle that
//! needs no ground truth on each and prints the figures per program.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// One program of the corpus.
pub struct Program {
    pub name: String,
    pub bin: String,
    pub toolchain: String,
    /// A crate on crates.io (name, version), or a wrapper crate's directory.
    pub krate: Option<(String, String)>,
    pub path: Option<PathBuf>,
    /// Further binaries of a wrapper crate the workload runs (a client).
    pub extra_bins: Vec<String>,
    pub ci: bool,
}

pub fn programs(root: &Path) -> Result<Vec<Program>, String> {
    let file = root.join("fixtures/corpus/corpus.json");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let s = |p: &Value, k: &str| p[k].as_str().map(str::to_owned);
    v["programs"]
        .as_array()
        .ok_or("corpus.json: no programs")?
        .iter()
        .map(|p| {
            Ok(Program {
                name: s(p, "name").ok_or("corpus.json: a program without a name")?,
                bin: s(p, "bin").ok_or("corpus.json: a program without a bin")?,
                toolchain: s(p, "toolchain").ok_or("corpus.json: no toolchain")?,
                krate: s(p, "crate").zip(s(p, "version")),
                path: s(p, "path").map(|d| root.join(d)),
                extra_bins: p["extra_bins"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b.as_str().map(str::to_owned))
                    .collect(),
                ci: p["ci"] == true,
            })
        })
        .collect()
}

/// Where a program's binary is installed.
pub fn binary(root: &Path, p: &Program) -> PathBuf {
    root.join("target/corpus")
        .join(&p.name)
        .join("bin")
        .join(&p.bin)
}

/// The programs `args` name (`--ci`: those `.ci/run` traces; none: all).
pub fn select(root: &Path, args: &[String]) -> Result<Vec<Program>, String> {
    let all = programs(root)?;
    let ci = args.iter().any(|a| a == "--ci");
    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    for n in &names {
        if !all.iter().any(|p| &&p.name == n) {
            let known: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "no corpus program {n}; known: {}",
                known.join(", ")
            ));
        }
    }
    Ok(all
        .into_iter()
        .filter(|p| (!ci || p.ci) && (names.is_empty() || names.contains(&&p.name)))
        .collect())
}

/// Builds each program unless its binary is already there.
pub fn build(root: &Path, programs: &[Program]) -> Result<(), String> {
    for p in programs {
        let bin = binary(root, p);
        if bin.exists() {
            continue;
        }
        // The program's own toolchain.
        let mut cmd = crate::rustup_cargo(&p.toolchain);
        match (&p.krate, &p.path) {
            (Some((krate, version)), _) => {
                eprintln!(
                    "xtask: corpus: cargo install --locked {krate}@{version} (Rust {}; its own release profile)",
                    p.toolchain
                );
                cmd.args(["install", "--locked", "--quiet", "--root"])
                    .arg(root.join("target/corpus").join(&p.name))
                    .arg("--target-dir")
                    .arg(root.join("target/corpus-build").join(&p.name))
                    .arg(format!("{krate}@{version}"));
            }
            (None, Some(dir)) => {
                eprintln!(
                    "xtask: corpus: building {} (Rust {}, release)",
                    dir.display(),
                    p.toolchain
                );
                cmd.args([
                    "build",
                    "--release",
                    "--locked",
                    "--quiet",
                    "--manifest-path",
                ])
                .arg(dir.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(root.join("target/corpus-build").join(&p.name));
            }
            (None, None) => return Err(format!("corpus program {}: no crate and no path", p.name)),
        }
        let status = cmd
            .status()
            .map_err(|e| format!("cannot run rustup: {e}"))?;
        if !status.success() {
            return Err(format!("building corpus program {} failed", p.name));
        }
        if p.krate.is_none() {
            std::fs::create_dir_all(bin.parent().unwrap()).map_err(|e| e.to_string())?;
            // The program last: its presence says the whole build is there.
            for name in p.extra_bins.iter().chain([&p.bin]) {
                let built = root
                    .join("target/corpus-build")
                    .join(&p.name)
                    .join("release")
                    .join(name);
                let to = bin.with_file_name(name);
                std::fs::copy(&built, &to).map_err(|e| format!("{}: {e}", built.display()))?;
            }
        }
    }
    Ok(())
}

/// Builds the selected programs and traces them (`tests/e2e_corpus.rs`, its output shown).
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let build_only = args.first().map(String::as_str) == Some("build");
    let rest = if build_only { &args[1..] } else { args };
    let selected = select(root, rest)?;
    build(root, &selected)?;
    if build_only {
        return Ok(());
    }
    let names: Vec<&str> = selected.iter().map(|p| p.name.as_str()).collect();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "test",
            "--quiet",
            "-p",
            "tracer-user",
            "--test",
            "e2e_corpus",
            "--",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TASKTRACE_CORPUS", names.join(","))
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("the corpus oracle failed (see above)".into())
    }
}
