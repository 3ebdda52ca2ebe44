//! The stream's records: everything a window produced, in the order the model consumed
//! it. They are the model's one input (`model::Aggregator::apply`), what the trace file
//! holds, and what a replay applies again.

use serde::{Deserialize, Serialize};
use tracer_common::TaskEvent;

pub use crate::tokio_versions::{ListKind, Status};
use crate::{
    plan::{AttachMode, PlanSummary},
    tokio_versions::StateBits,
};

/// One task a reading found in a runtime's list, as the model and the trace file see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListedTask {
    pub header: u64,
    pub id: u64,
    pub owner_id: u64,
    pub vtable: u64,
    /// The state word at the second reading.
    pub state: u64,
    /// A hash of the task's `Core` when the reading took one (lifecycle mode), else 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub digest: u64,
    pub refs: u32,
    /// The kind of list it was found in (the trace file stores it beside the task).
    #[serde(skip)]
    pub list: ListKind,
    /// Both readings of the state word agreed.
    pub stable: bool,
    pub status: Status,
    pub join_handle: bool,
    /// Nothing can ever wake or abort it (idle, not notified, no JoinHandle, no reference
    /// left but the list's).
    pub no_way_to_run: bool,
}

/// Where a task is parked, as a reading found it (`live::await_chain`): its async fn
/// frames outermost first, each at the `.await` it is suspended at, then the leaf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwaitChain {
    /// `dwarf`: the binary's (or its debug file's) type information; `stack`: a copy of
    /// the stack taken when the task last registered its waker, unwound.
    pub source: String,
    pub frames: Vec<AwaitFrame>,
    pub leaf: Option<String>,
    /// What the leaf holds about what it waits for (`task 42`, `deadline in 3599.8 s`).
    #[serde(default)]
    pub leaf_detail: Option<String>,
    /// The innermost machine's state when it is not suspended (`Unresumed`).
    pub state: Option<String>,
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwaitFrame {
    pub function: String,
    /// Empty (and `line` 0) for a frame known by its symbol only: then `offset` says where
    /// in the function.
    pub file: String,
    pub line: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl AwaitFrame {
    /// `file:line`, a dependency's file from its crate directory on (cargo's registry
    /// path shortened: `tokio-1.54.1/src/time/sleep.rs`).
    pub fn site(&self) -> String {
        if self.file.is_empty() {
            return format!("{}+{:#x}", self.function, self.offset.unwrap_or(0));
        }
        let file = match self.file.split_once("/registry/src/") {
            Some((_, rest)) => rest.split_once('/').map_or(rest, |(_, r)| r),
            None => &self.file,
        };
        format!("{file}:{}", self.line)
    }
}

impl AwaitChain {
    /// Where the task is parked, for people: the innermost frame in the program's own
    /// code (not a dependency's, not the standard library's), else the innermost.
    pub fn parked_at(&self) -> Option<String> {
        let own =
            |f: &&AwaitFrame| !f.file.contains("/registry/src/") && !f.file.starts_with("/rustc/");
        self.frames
            .iter()
            .rev()
            .find(own)
            .or(self.frames.last())
            .map(AwaitFrame::site)
    }

    /// One line, outermost first: `f (file:line) → g (file:line) → Leaf`.
    pub fn one_line(&self) -> String {
        let mut parts: Vec<String> = self
            .frames
            .iter()
            .map(|f| format!("{} ({})", f.function, f.site()))
            .collect();
        match (&self.leaf, &self.state) {
            (Some(leaf), _) => parts.push(match &self.leaf_detail {
                Some(d) => format!("{leaf} ({d})"),
                None => leaf.clone(),
            }),
            (None, Some(state)) => parts.push(format!("[{state}]")),
            (None, None) => {}
        }
        if self.truncated {
            parts.push("…".into());
        }
        parts.join(" → ")
    }
}

/// Where a window's await chains came from, or why it has none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwaitsFrom {
    pub source: Option<String>,
    /// The file whose type information was read.
    pub file: Option<String>,
    pub unavailable: Option<String>,
    /// `stack`: the waker clones the probe saw (one hit each), the tasks' moves to a new
    /// await point among them (an event each), and the stack copies they took (one per
    /// point first seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_hits: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_changes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_copies: Option<u64>,
}

/// One task's chain in a `Rec::Awaits`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainOf {
    pub header: u64,
    pub id: u64,
    pub chain: AwaitChain,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The traced process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetInfo {
    pub pid: u32,
    /// Its pid in its own pid namespace (a container's view), when that differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_in_namespace: Option<u32>,
    pub binary: String,
    pub build_id: Option<String>,
    pub tokio_version: Option<String>,
}

/// Written first: what is needed to interpret the events later, elsewhere.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetaRecord {
    pub format: String,
    pub target: TargetInfo,
    /// CLOCK_MONOTONIC of the window start (the clock of every event timestamp).
    pub start_ns: u64,
    /// Wall-clock time of the window start, seconds since the Unix epoch.
    pub start_unix_s: f64,
    pub state_bits: StateBits,
    pub probe_sites: usize,
    /// How the probes were attached (recordings from before there was a choice: multi).
    #[serde(default)]
    pub attach: AttachMode,
    /// What the model needs of the plan (typed: a replay configures the model from it).
    pub summary: PlanSummary,
    /// The attach plan: every probe site (function, address, file offset), for people.
    #[serde(default)]
    pub plan: serde_json::Value,
    pub attach_ms: f64,
    pub warnings: Vec<String>,
}

impl MetaRecord {
    /// The metadata of a window made up rather than traced (`synth-trace`, tests): the
    /// newest tokio layout, started at 0, nothing attached.
    pub fn synthetic(target: TargetInfo, summary: PlanSummary) -> Self {
        let newest = crate::tokio_versions::select(None).expect("a newest version file");
        Self {
            format: "tasktrace.trace/1".into(),
            target,
            start_ns: 0,
            start_unix_s: 0.0,
            state_bits: newest.knowledge.state,
            probe_sites: 0,
            attach: AttachMode::Multi,
            summary,
            plan: serde_json::Value::Null,
            attach_ms: 0.0,
            warnings: vec![],
        }
    }
}

impl TargetInfo {
    /// A target that is no process (`synth-trace`, tests).
    pub fn synthetic(binary: &str) -> Self {
        Self {
            pid: 1,
            pid_in_namespace: None,
            binary: binary.into(),
            build_id: None,
            tokio_version: Some("1.54.1".into()),
        }
    }
}

/// Why a window ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// `--duration` elapsed.
    Duration,
    /// The target exited.
    TargetExit,
    /// The target exec'd another program (or itself anew).
    TargetExec,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// A recording with no end record (the tracer was stopped abruptly).
    Truncated,
    /// Not ended: a live view saved the report while tracing went on (`top`'s `s`).
    Snapshot,
    /// An end record this version does not know.
    #[serde(other)]
    Unknown,
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Duration => "duration",
            EndedBy::TargetExit => "target_exit",
            EndedBy::TargetExec => "target_exec",
            EndedBy::Interrupted => "interrupted",
            EndedBy::Snapshot => "snapshot",
            EndedBy::Truncated => "truncated",
            EndedBy::Unknown => "unknown",
        }
    }
}

/// Written last, when the window closed cleanly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndRecord {
    pub end_ns: u64,
    pub ended_by: EndedBy,
    pub lost_events: u64,
    pub detach_ms: f64,
    pub after_window: u64,
    pub warnings: Vec<String>,
}

/// One record of the stream, in the order the aggregator saw it.
#[derive(Clone, Debug)]
pub enum Rec {
    /// Always first.
    Meta(Box<MetaRecord>),
    Task(TaskEvent),
    Site {
        tid: u32,
        location: Option<String>,
        caller: Option<String>,
        stack: bool,
        code: bool,
    },
    Future {
        vtable: u64,
        name: String,
        site: Option<String>,
    },
    TaskList {
        at_ns: u64,
        attach: bool,
        /// Each with the kind of list it was found in (`ListedTask::list`).
        tasks: Vec<ListedTask>,
        complete_owners: Option<Vec<u64>>,
        until_ns: Option<u64>,
    },
    /// The kernel could not queue some events (ring full) between `since_ns` and `at_ns`:
    /// `total` lost so far in the window. Histories crossing that span may have holes.
    Lost {
        since_ns: u64,
        at_ns: u64,
        total: u64,
    },
    /// The target was stopped (SIGSTOP, a debugger) from `from_ns` to `to_ns`: no task
    /// ran, so that time counts toward no threshold.
    Stopped {
        from_ns: u64,
        to_ns: u64,
    },
    Samples {
        at_ns: u64,
        samples: Vec<(u32, Option<u64>)>,
    },
    /// tokio's task-id counter read at `at_ns`: the id its next task will get. Ids are
    /// drawn once per spawned task, so two readings give how many tasks were spawned in
    /// between, the ones no probe and no list reading saw included.
    TaskIds {
        at_ns: u64,
        next_id: u64,
    },
    /// Sample mode's spawn probes were attached (`armed`) or detached at `at_ns`, the
    /// target spawning `rate` tasks a second as then measured, against a budget of
    /// `budget` (`cmd::spawn_gate`).
    SpawnProbes {
        at_ns: u64,
        armed: bool,
        rate: Option<f64>,
        budget: u64,
    },
    /// Await chains of the tasks a reading at `at_ns` found idle (read right after it),
    /// and where they came from.
    Awaits {
        at_ns: u64,
        from: AwaitsFrom,
        chains: Vec<ChainOf>,
    },
}
