//! Command-line interface: verbs and options.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::model::verdict::Verdict;

#[derive(Parser, Debug)]
#[command(
    name = "tasktrace",
    version,
    about = "Find leaked, stuck and never-polled tasks in a live, unmodified tokio process (eBPF)",
    after_help = "Exit status: 0 ok, 2 bad input, 3 --fail-on matched, 4 insufficient privileges, 5 tracing failed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Launch a command and trace it from its first instruction.
    Run {
        #[command(flatten)]
        opts: TraceArgs,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true)]
        cmd: Vec<OsString>,
    },
    /// Attach to a running process.
    Record {
        /// Process id of the tokio program.
        #[arg(long)]
        pid: u32,
        #[command(flatten)]
        opts: TraceArgs,
    },
    /// Show what a binary contains and what tasktrace can see in it (attaches nothing).
    Inspect {
        /// Path of the binary (or use --pid).
        #[arg(required_unless_present = "pid")]
        path: Option<PathBuf>,
        /// Inspect the executable of a running process.
        #[arg(long, conflicts_with = "path")]
        pid: Option<u32>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Symbols for a stripped binary: an unstripped copy of the same build.
        #[arg(long, value_name = "FILE")]
        symbols: Option<PathBuf>,
    },
    /// Snapshot every task of a running process from its memory, no probes: state,
    /// reference count, future type, grouped by future (like a goroutine dump).
    Dump {
        /// Process id of the tokio program.
        #[arg(long)]
        pid: u32,
        /// Also write the snapshot as JSON to this file (`-` for standard output).
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Symbols for a stripped binary: an unstripped copy of the same build.
        #[arg(long, value_name = "FILE")]
        symbols: Option<PathBuf>,
        #[command(flatten)]
        debug: DebugArgs,
    },
    /// A live view of a process's tasks by spawn site, refreshed every second (like
    /// py-spy top): attach with --pid, or launch a command after `--`.
    Top {
        /// Process id of the tokio program.
        #[arg(long, required_unless_present = "cmd", conflicts_with = "cmd")]
        pid: Option<u32>,
        /// `sample` (default: no per-task cost), `lifecycle` (every spawn and completion)
        /// or `full` (every poll).
        #[arg(long, value_enum, default_value_t = crate::plan::Mode::Sample)]
        mode: crate::plan::Mode,
        /// Print one snapshot after one refresh period, as text, and end (also what
        /// happens when stdout is not a terminal).
        #[arg(long)]
        once: bool,
        /// How often the view is refreshed.
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        refresh: Duration,
        /// End after this long.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Also record to this trace file (`s` names it with the report it saves).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// Symbols for a stripped target: an unstripped copy of the same build.
        #[arg(long, value_name = "FILE")]
        symbols: Option<PathBuf>,
        /// Ring buffer size in bytes (power of two; K/M suffixes accepted).
        #[arg(long, value_parser = parse_size, default_value = "8M")]
        ring_size: u32,
        /// Where `s` saves the report (default: tasktrace-top-PID.json and .html here).
        #[command(flatten)]
        verdicts: VerdictArgs,
        /// The command to launch and watch (after `--`).
        #[arg(last = true)]
        cmd: Vec<OsString>,
    },
    /// Always on: trace every selected process of this host (rescanned every few
    /// seconds, restarts followed) and serve them on one HTTP address: /metrics
    /// (Prometheus), /debug/pprof/tasks and /debug/pprof/leaked (pprof), /report.json and
    /// /report.html (?pid=). Runs until SIGINT or SIGTERM (docs/tasktrace-agent.service).
    Agent {
        /// Trace this process (repeatable).
        #[arg(long)]
        pid: Vec<u32>,
        /// Trace processes of this executable: a file name, or a whole path (repeatable).
        #[arg(long)]
        exe: Vec<String>,
        /// Trace every process whose executable holds tokio.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR")]
        listen: String,
        /// How often to look for new processes.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        rescan: Duration,
        /// `sample` (the default: no per-task cost), `lifecycle` (every spawn and
        /// completion) or `full` (every poll).
        #[arg(long, value_enum, default_value_t = crate::plan::Mode::Sample)]
        mode: crate::plan::Mode,
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        leak_after: Duration,
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        stuck_after: Duration,
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        never_polled_after: Duration,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Ask the flight recorder (`record --flight`) tracing PID to write an incident now.
    Snapshot {
        /// The traced process.
        #[arg(long)]
        pid: u32,
    },
    /// Report on a trace file written by `run -o` or `record -o`, without the target.
    Report {
        /// The trace file (or, with `--baseline`, a trace file or a JSON report).
        file: PathBuf,
        /// Compare with this earlier window (a trace file or a JSON report): per spawn
        /// site, live, leaked, stuck and never-polled counts and poll percentiles before
        /// and after, sorted by change; `--json` and `--html` then write the comparison.
        #[arg(long, value_name = "FILE")]
        baseline: Option<PathBuf>,
        #[command(flatten)]
        opts: VerdictArgs,
    },
    /// Write a synthetic service-like trace file of about N events (`cargo xtask bench
    /// report`): written by the same writer and event type as a real recording.
    #[command(hide = true)]
    SynthTrace {
        file: PathBuf,
        /// At most ten billion (about 560 GB of file).
        #[arg(long, default_value_t = 10_000_000,
              value_parser = clap::value_parser!(u64).range(1..=10_000_000_000))]
        events: u64,
        /// Instead, a long window of short tasks spawned at this rate (`cargo xtask bench
        /// long`), for `--seconds` of simulated time.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        spawns_per_s: Option<u64>,
        #[arg(long, default_value_t = 3600,
              value_parser = clap::value_parser!(u64).range(1..=86_400))]
        seconds: u64,
    },
}

/// Where the target's type information is, for await chains.
#[derive(Args, Debug, Clone)]
pub struct DebugArgs {
    /// The binary's type information, for await chains: its separate debug file
    /// (default: the binary itself, else found by build-id or `.gnu_debuglink` under
    /// --debug-dir or beside the binary, else fetched from the debuginfod servers
    /// DEBUGINFOD_URLS names).
    #[arg(long, value_name = "FILE")]
    pub debuginfo: Option<PathBuf>,
    /// Where separate debug files are installed (gdb's debug-file-directory).
    #[arg(long, value_name = "DIR", default_value = "/usr/lib/debug")]
    pub debug_dir: PathBuf,
}

impl DebugArgs {
    pub fn info(&self) -> crate::cmd::awaits::DebugInfo {
        crate::cmd::awaits::DebugInfo {
            file: self.debuginfo.clone(),
            dir: self.debug_dir.clone(),
            stacks: true,
        }
    }
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// End the window after this long (e.g. 30s, 2m); `run` then terminates the command.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Also record the window to this trace file (docs/trace-format.md), for
    /// `tasktrace report` later, anywhere.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Symbols for a stripped target: an unstripped copy of the same build (matched by
    /// GNU build-id).
    #[arg(long, value_name = "FILE")]
    pub symbols: Option<PathBuf>,
    /// Do not capture where tasks were spawned (saves the spawn-call probes and the
    /// stack copy at each spawn).
    #[arg(long)]
    pub no_spawn_sites: bool,
    /// In full mode, on a binary without type information, do not copy the stack at each
    /// new await point of a task (its await chain from the stack: one more probe hit at
    /// each waker clone, a stack copy once per point).
    #[arg(long)]
    pub no_await_stacks: bool,
    /// `full`: every poll (one probe hit per poll); `lifecycle`: no per-poll probes at all
    /// (spawns, completions, sampled polls); `sample`: task-list readings and spawn
    /// probes under a budget, no per-task cost (see docs/user-guide.md for what each
    /// loses). Default: `full` for `run`, `sample` for `record`.
    #[arg(long, value_enum)]
    pub mode: Option<crate::plan::Mode>,
    /// Sample mode: probe spawns (for their sites and times) while the target spawns
    /// fewer tasks a second than this; above it, for 0.1 s every 10 s or more, so that
    /// the probes never cost more than this many hits a second. 0: never.
    #[arg(long, value_name = "N", default_value_t = crate::cmd::spawn_gate::DEFAULT_BUDGET)]
    pub spawn_budget: u64,
    /// Serve the window's Prometheus metrics on this HOST:PORT while it runs
    /// (`GET /metrics`, OpenMetrics text; docs/user-guide.md lists them).
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<String>,
    /// Flight recorder: trace until stopped, keep the last D of the stream in memory
    /// (not written), and write an incident trace into the `-o` directory (default: here)
    /// on SIGUSR1 or `tasktrace snapshot`, when a `--trigger` verdict appears, and when the
    /// target exits. Each incident reports with `tasktrace report`.
    #[arg(long, value_parser = parse_duration, value_name = "D")]
    pub flight: Option<Duration>,
    /// The flight ring's memory cap (a power of two, K/M suffixes); beyond it older spans
    /// go first.
    #[arg(long, value_parser = parse_size, default_value = "256M")]
    pub flight_size: u32,
    /// Write a flight incident when a verdict appears or grows: `leaked:definite`,
    /// `leaked`, `stuck`, `never_polled`; or when a spawn site's live tasks grow faster
    /// than RATE a second over the last 30 s: `growth:RATE` (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = crate::cmd::flight::parse_trigger)]
    pub trigger: Vec<crate::cmd::flight::Trigger>,
    /// Ring buffer size in bytes (power of two; K/M suffixes accepted).
    #[arg(long, value_parser = parse_size, default_value = "8M")]
    pub ring_size: u32,
    /// Force an attach path (default: uprobe_multi where the kernel has a usable one,
    /// per-site perf-event uprobes otherwise); for testing every path on one kernel.
    #[arg(long, value_enum, hide = true)]
    pub attach: Option<crate::plan::AttachMode>,
    #[command(flatten)]
    pub debug: DebugArgs,
    #[command(flatten)]
    pub verdicts: VerdictArgs,
}

/// How verdicts are judged and reported: shared by live tracing and `report`.
#[derive(Args, Debug)]
pub struct VerdictArgs {
    /// Write the JSON report here (schema: docs/report-format.md).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with charts here.
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// Write a timeline for ui.perfetto.dev here (one track per task).
    #[arg(long, value_name = "PATH")]
    pub perfetto: Option<PathBuf>,
    /// Also write the tasks alive at the window's end as a pprof profile (gzipped
    /// protobuf, sample type tasks/count, by spawn site, labelled by verdict, state,
    /// certainty and age) for `go tool pprof`, Pyroscope or Grafana.
    #[arg(long, value_name = "PATH")]
    pub pprof: Option<PathBuf>,
    /// `recent`: tasks that finished healthy are counted per spawn site once the model
    /// holds 100 000 tasks, so memory and the report follow the live tasks; `all`: every
    /// task stays in the model and the report's `tasks` (memory grows with the window).
    #[arg(long, value_enum, default_value_t = crate::model::fold::Keep::Recent)]
    pub keep: crate::model::fold::Keep,
    /// Fold from this many held tasks on (tests fold small windows with it).
    #[arg(long, hide = true, default_value_t = crate::model::fold::FOLD_FLOOR)]
    pub fold_from: usize,
    /// A task idle this long since its last poll is leaked.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub leak_after: Duration,
    /// A poll this long blocks a worker; a task woken this long ago and not polled is starved.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub stuck_after: Duration,
    /// A task spawned this long ago and never polled is never_polled.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub never_polled_after: Duration,
    /// Exit with status 3 when any task gets one of these verdicts (comma-separated:
    /// leaked, stuck, never_polled).
    #[arg(long, value_delimiter = ',', value_parser = parse_verdict)]
    pub fail_on: Vec<Verdict>,
    /// Print only the summary (no progress lines on stderr).
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 500ms, 30s, 5m, 1h)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" | "mins" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a valid duration"));
    }
    // Deadlines are instants: a duration past them would overflow (and mean "forever",
    // which is what leaving the option out says).
    const LONGEST: f64 = 10.0 * 365.0 * 86_400.0;
    if secs > LONGEST {
        return Err(format!(
            "`{s}` is longer than ten years; leave the option out to wait without a limit"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

impl VerdictArgs {
    pub fn retention(&self) -> crate::model::fold::Retention {
        crate::model::fold::Retention {
            keep: self.keep,
            fold_from: self.fold_from,
        }
    }
}

fn parse_verdict(s: &str) -> Result<Verdict, String> {
    Verdict::parse(s.trim())
        .ok_or_else(|| format!("`{s}` is not a verdict: use leaked, stuck, never_polled"))
}

fn parse_size(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (try 8M)"))?;
    let bytes = n.saturating_mul(mult);
    if !bytes.is_power_of_two() || !(4096..=(1 << 30)).contains(&bytes) {
        return Err(format!(
            "a size must be a power of two between 4K and 1G, got `{s}`"
        ));
    }
    Ok(bytes as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        // Absurd values are refused with a message, never a panic.
        for bad in [
            "99999999999999999999999h",
            "1e400",
            "-1s",
            "",
            "NaN",
            "11000d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("87600h").is_ok(), "ten years is the limit");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert!(parse_size("3M").is_err());
        assert!(parse_size("1K").is_err());
    }
}
