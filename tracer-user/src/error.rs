//! The errors a user can meet, each with what to do about it and a defined exit status.

use std::{fmt, path::PathBuf};

/// Exit statuses (documented in docs/user-guide.md).
pub mod exit {
    pub const OK: i32 = 0;
    pub const INTERNAL: i32 = 1;
    pub const BAD_INPUT: i32 = 2;
    pub const FAIL_ON: i32 = 3;
    pub const PRIVILEGES: i32 = 4;
    pub const TRACE_FAILED: i32 = 5;
}

#[derive(Debug)]
pub enum Error {
    NoSuchProcess(u32),
    CommandNotFound(String),
    NotElf {
        path: PathBuf,
        why: String,
    },
    Stripped {
        path: PathBuf,
        tokio_version: Option<String>,
    },
    NotTokio {
        path: PathBuf,
    },
    MissingProbeSites {
        path: PathBuf,
        missing: Vec<&'static str>,
    },
    UnsupportedTokio(String),
    Privileges {
        what: String,
    },
    Io {
        path: PathBuf,
        err: std::io::Error,
    },
    Bpf(String),
    Launch(String),
    Output {
        path: PathBuf,
        err: std::io::Error,
    },
    TraceFile {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    SymbolsMismatch {
        target: PathBuf,
        symbols: PathBuf,
        target_id: Option<String>,
        symbols_id: Option<String>,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io_for(path: &std::path::Path, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::PermissionDenied {
            Error::Privileges {
                what: format!("reading {}: {err}", path.display()),
            }
        } else {
            Error::Io {
                path: path.to_owned(),
                err,
            }
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoSuchProcess(_)
            | Error::CommandNotFound(_)
            | Error::NotElf { .. }
            | Error::Stripped { .. }
            | Error::NotTokio { .. }
            | Error::MissingProbeSites { .. }
            | Error::UnsupportedTokio(_)
            | Error::Output { .. }
            | Error::TraceFile { .. }
            | Error::SymbolsMismatch { .. } => exit::BAD_INPUT,
            Error::Privileges { .. } => exit::PRIVILEGES,
            Error::Io { .. } | Error::Bpf(_) | Error::Launch(_) => exit::TRACE_FAILED,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSuchProcess(pid) => write!(
                f,
                "no process with pid {pid}.\n  hint: list candidates with `pgrep -a <name>`; the process may have exited"
            ),
            Error::CommandNotFound(cmd) => write!(
                f,
                "command not found: {cmd}.\n  hint: give a path to the program, or make sure it is on PATH"
            ),
            Error::NotElf { path, why } => write!(
                f,
                "{} is not a program tasktrace can trace ({why}).\n  hint: tasktrace traces x86_64 Linux ELF binaries built from Rust with tokio",
                path.display()
            ),
            Error::Stripped {
                path,
                tokio_version,
            } => write!(
                f,
                "{} is stripped: it has no symbol table, and no task vtable was found in its read-only data, so tokio's task functions cannot be located{}.\n  hint: pass --symbols FILE (an unstripped copy of the same build), or trace a build with symbols (cargo's release default keeps them; remove `strip = \"symbols\"`/`strip = true`)",
                path.display(),
                tokio_version
                    .as_ref()
                    .map(|v| format!(" (it does contain tokio {v})"))
                    .unwrap_or_default()
            ),
            Error::NotTokio { path } => write!(
                f,
                "{} does not contain the tokio runtime (no tokio task symbols found).\n  hint: is this the right process? tasktrace traces programs that run tokio tasks",
                path.display()
            ),
            Error::MissingProbeSites { path, missing } => write!(
                f,
                "{} contains tokio, but these functions tasktrace needs are missing (inlined away?): {}.\n  hint: `tasktrace inspect` shows what the binary contains",
                path.display(),
                missing.join(", ")
            ),
            Error::UnsupportedTokio(why) => write!(f, "{why}"),
            Error::Privileges { what } => write!(
                f,
                "insufficient privileges: {what}.\n  hint: tasktrace loads eBPF programs and reads other processes: run it as root (sudo), or grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE"
            ),
            Error::Io { path, err } => write!(f, "{}: {err}", path.display()),
            Error::Bpf(why) => write!(
                f,
                "could not load or attach the eBPF probes: {why}.\n  hint: tasktrace needs Linux >= 6.6 with uprobe_multi and BTF, run as root"
            ),
            Error::Launch(why) => write!(f, "could not start the command: {why}"),
            Error::TraceFile { path, offset, why } => write!(
                f,
                "{}: corrupt trace file at byte offset {offset}: {why}.\n  hint: is this a file written by `tasktrace run -o` or `record -o`? A file cut short by a killed tracer still reports; one damaged in the middle does not",
                path.display()
            ),
            Error::SymbolsMismatch {
                target,
                symbols,
                target_id,
                symbols_id,
            } => write!(
                f,
                "{} is not the same build as {}: GNU build-id {} vs {}.\n  hint: --symbols needs the unstripped binary of exactly this build (same build-id); keep it from the build that produced the deployed binary",
                symbols.display(),
                target.display(),
                symbols_id.as_deref().unwrap_or("(none)"),
                target_id.as_deref().unwrap_or("(none)")
            ),
            Error::Output { path, err } => write!(
                f,
                "cannot write {}: {err}.\n  hint: check the directory exists and is writable",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {}
