//! `cargo xtask <task>`: builds that cargo alone cannot express.
//!
//! - `fixtures`: build every fixture target (own lockfile each) in release mode.
//! - `fixture-path NAME`: print the path of a built fixture binary.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("fixtures") => build_fixtures(),
        Some("fixture-path") => match args.get(1) {
            Some(name) => {
                println!("{}", fixture_binary(name).display());
                Ok(())
            }
            None => Err("usage: cargo xtask fixture-path NAME".into()),
        },
        _ => Err("usage: cargo xtask <fixtures | fixture-path NAME>".into()),
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

/// Fixture crates, each outside the workspace with its own lockfile.
fn fixtures() -> Vec<PathBuf> {
    let dir = root().join("fixtures");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
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

fn fixture_binary(name: &str) -> PathBuf {
    root()
        .join("fixtures")
        .join(name)
        .join("target/release")
        .join(format!("fixture-{name}"))
}

fn build_fixtures() -> Result<(), String> {
    for dir in fixtures() {
        eprintln!("xtask: building {}", dir.display());
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--locked", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building {} failed", dir.display()));
        }
    }
    Ok(())
}
