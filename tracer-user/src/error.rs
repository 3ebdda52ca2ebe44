//! The errors a user can meet, each with what to do about it and a defined exit status.

use std::path::PathBuf;

/// Exit statuses (documented in docs/user-guide.md).
pub mod exit {
    pub const OK: i32 = 0;
    pub const INTERNAL: i32 = 1;
    pub const BAD_INPUT: i32 = 2;
    pub const FAIL_ON: i32 = 3;
    pub const PRIVILEGES: i32 = 4;
    pub const TRACE_FAILED: i32 = 5;
}

/// A cause kept as the error's source.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no process with pid {0}.\n  hint: list candidates with `pgrep -a <name>`; the process may have exited"
    )]
    NoSuchProcess(u32),
    #[error(
        "command not found: {0}.\n  hint: give a path to the program, or make sure it is on PATH"
    )]
    CommandNotFound(String),
    #[error(
        "{} is not a program tasktrace can trace ({why}).\n  hint: tasktrace traces x86_64 Linux ELF binaries built from Rust with tokio",
        path.display()
    )]
    NotElf { path: PathBuf, why: String },
    #[error(
        "{} is stripped: it has no symbol table, and no task vtable was found in its read-only data, so tokio's task functions cannot be located{}.\n  hint: pass --symbols FILE (an unstripped copy of the same build), or trace a build with symbols (cargo's release default keeps them; remove `strip = \"symbols\"`/`strip = true`)",
        path.display(),
        tokio_version.as_ref().map(|v| format!(" (it does contain tokio {v})")).unwrap_or_default()
    )]
    Stripped {
        path: PathBuf,
        tokio_version: Option<String>,
    },
    #[error(
        "{} does not contain the tokio runtime (no tokio task symbols found).\n  hint: is this the right process? tasktrace traces programs that run tokio tasks",
        path.display()
    )]
    NotTokio { path: PathBuf },
    #[error(
        "{} contains tokio, but these functions tasktrace needs are missing (inlined away?): {}.\n  hint: `tasktrace inspect` shows what the binary contains",
        path.display(),
        missing.join(", ")
    )]
    MissingProbeSites {
        path: PathBuf,
        missing: Vec<&'static str>,
    },
    #[error("{0}")]
    UnsupportedTokio(String),
    #[error(
        "insufficient privileges: {what}.\n  hint: tasktrace loads eBPF programs and reads other processes: run it as root (sudo), or grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE{}",
        if missing.is_empty() { String::new() } else { format!(" (this process lacks {})", missing.join(", ")) }
    )]
    Privileges {
        what: String,
        /// The needed capabilities the process lacks (`live::caps`).
        missing: Vec<&'static str>,
    },
    #[error("{}: {err}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    /// Loading or attaching the eBPF side failed; the loader's own error is the source.
    #[error(
        "could not load or attach the eBPF probes: {what}{}.\n  hint: tasktrace needs Linux >= 5.15 (BPF ring buffer, attach cookies), run as root; `tasktrace inspect` prints what the running kernel offers",
        source.as_deref().map(|s| format!(": {}", chain(s))).unwrap_or_default()
    )]
    Bpf {
        what: String,
        #[source]
        source: Option<Cause>,
    },
    /// The running kernel lacks what an explicitly requested way of tracing needs.
    #[error("{what}.\n  hint: {hint}")]
    KernelLacks { what: String, hint: String },
    #[error("could not start the command: {what}: {err}")]
    Launch {
        what: &'static str,
        #[source]
        err: std::io::Error,
    },
    #[error(
        "cannot find where pid {pid} mapped its binary.\n  hint: the process may be exiting, or its binary was replaced on disk since it started"
    )]
    NotMapped { pid: u32 },
    #[error("cannot watch for Ctrl-C and SIGTERM: {0}")]
    Signals(#[source] std::io::Error),
    #[error("writing standard output: {0}")]
    Stdout(#[source] std::io::Error),
    #[error(
        "cannot write {}: {err}.\n  hint: check the directory exists and is writable",
        path.display()
    )]
    Output {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error(
        "{}: corrupt trace file at byte offset {offset}: {why}.\n  hint: is this a file written by `tasktrace run -o` or `record -o`? A file cut short by a killed tracer still reports; one damaged in the middle does not",
        path.display()
    )]
    TraceFile {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error(
        "{} is a directory, not a trace file.\n  hint: pass the file written by `tasktrace run -o FILE` or `record -o FILE`",
        path.display()
    )]
    TraceFileIsDirectory { path: PathBuf },
    #[error(
        "cannot compare {}: {why}.\n  hint: `report A --baseline B` takes two trace files (`-o`) or two JSON reports (`--json`), in any mix",
        path.display()
    )]
    NotComparable { path: PathBuf, why: String },
    #[error(
        "no flight recorder is tracing pid {pid}: {why}.\n  hint: start one with `tasktrace record --pid {pid} --flight 10m -o DIR`"
    )]
    NoFlightRecorder { pid: u32, why: String },
    #[error("{0}")]
    Usage(String),
    #[error(
        "cannot serve metrics on {addr}: {err}.\n  hint: give a free HOST:PORT, e.g. --prometheus 127.0.0.1:9464"
    )]
    Listen {
        addr: String,
        #[source]
        err: std::io::Error,
    },
    #[error(
        "{} is not the same build as {}: GNU build-id {} vs {}.\n  hint: --symbols needs the unstripped binary of exactly this build (same build-id); keep it from the build that produced the deployed binary",
        symbols.display(),
        target.display(),
        symbols_id.as_deref().unwrap_or("(none)"),
        target_id.as_deref().unwrap_or("(none)")
    )]
    SymbolsMismatch {
        target: PathBuf,
        symbols: PathBuf,
        target_id: Option<String>,
        symbols_id: Option<String>,
    },
    /// A bug of tasktrace's own (a worker thread panicked).
    #[error("internal error: {0}.\n  hint: please report it with the command line you ran")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Refused for lack of privileges: says which needed capabilities are missing.
    pub fn privileges(what: String) -> Self {
        Error::Privileges {
            what,
            missing: crate::live::caps::missing(),
        }
    }

    pub fn io_for(path: &std::path::Path, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::PermissionDenied {
            Error::privileges(format!("reading {}: {err}", path.display()))
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
            | Error::TraceFileIsDirectory { .. }
            | Error::NotComparable { .. }
            | Error::NoFlightRecorder { .. }
            | Error::Usage(_)
            | Error::Listen { .. }
            | Error::SymbolsMismatch { .. }
            | Error::KernelLacks { .. } => exit::BAD_INPUT,
            Error::Privileges { .. } => exit::PRIVILEGES,
            // A file the user named that is not there.
            Error::Io { err, .. } if err.kind() == std::io::ErrorKind::NotFound => exit::BAD_INPUT,
            Error::Io { .. }
            | Error::Bpf { .. }
            | Error::Launch { .. }
            | Error::NotMapped { .. }
            | Error::Signals(_)
            | Error::Stdout(_) => exit::TRACE_FAILED,
            Error::Internal(_) => exit::INTERNAL,
        }
    }
}

/// An error and its sources, outermost first: `what: why: deeper why`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
