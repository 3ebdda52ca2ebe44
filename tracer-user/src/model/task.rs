//! One task's life as rebuilt from events, kept small: a traced process may hold millions
//! of tasks, so rare fields live behind one pointer and absent instants cost no flag.

use serde::Serialize;

use crate::{model::verdict::Judgement, stream::records::Status};

/// An instant (CLOCK_MONOTONIC ns) that may not have happened: `Option<u64>` in 8 bytes
/// (`u64::MAX`, 584 years after boot, stands for "none").
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u64);

impl Stamp {
    pub const NONE: Stamp = Stamp(u64::MAX);

    /// The instant `ns`. No clock reads `u64::MAX`; a forged recording may say it, and
    /// it is taken as the instant just before (never as "none": a fuzz finding).
    pub fn at(ns: u64) -> Self {
        Stamp(ns.min(u64::MAX - 1))
    }

    pub fn get(self) -> Option<u64> {
        (self.0 != u64::MAX).then_some(self.0)
    }

    pub fn is_some(self) -> bool {
        self.0 != u64::MAX
    }

    pub fn is_none(self) -> bool {
        self.0 == u64::MAX
    }

    pub fn take(&mut self) -> Option<u64> {
        std::mem::replace(self, Self::NONE).get()
    }

    /// Sets it unless already set (`Option::get_or_insert`).
    pub fn set_if_none(&mut self, ns: u64) {
        if self.is_none() {
            *self = Self::at(ns);
        }
    }

    pub fn map(self, f: impl FnOnce(u64) -> u64) -> Stamp {
        self.get().map_or(Self::NONE, |v| Self::at(f(v)))
    }
}

impl Default for Stamp {
    fn default() -> Self {
        Self::NONE
    }
}

impl From<Option<u64>> for Stamp {
    fn from(v: Option<u64>) -> Self {
        v.map_or(Self::NONE, Self::at)
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// `tokio::spawn`, `Handle::spawn`, `JoinSet::spawn`: bound to a runtime's owned list.
    Async,
    /// `spawn_blocking` (and the blocking tasks that host multi-thread workers).
    Blocking,
    /// `spawn_local` on a `LocalSet`.
    Local,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Scheduled,
    Running,
    Idle,
    Completed,
    Cancelled,
    Freed,
}

/// A poll that lasted at least the stuck threshold and ended.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LongPoll {
    pub task_id: u64,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub tid: u32,
}

/// What few tasks ever need (hosting a worker, a shutdown, a proof it cannot run, a
/// wake during a poll): allocated on first use.
#[derive(Clone, Debug, Default)]
pub struct Rare {
    /// A wake arrived during the poll in progress (tokio's OkNotified).
    pub woken_during_poll: Stamp,
    /// Cancelled by its runtime shutting down.
    pub shutdown_ns: Stamp,
    /// Running when a task-list reading found it (the poll's start is unknown): the
    /// attach-time reading, or in lifecycle mode the first of consecutive readings.
    pub running_at_attach: Stamp,
    /// A reading of the task list at this instant found it unable to ever run again.
    pub no_way_to_run_at: Stamp,
    /// Polls of other tasks ran inside this task's poll: a blocking task hosting a
    /// multi-thread worker (runtime plumbing, not verdict material).
    pub hosted_polls: u64,
    /// Verdict frozen when the runtime began shutting down the task.
    pub frozen: Option<Judgement>,
    /// Where it was parked at the last reading that read chains (`Rec::Awaits`).
    pub await_chain: Option<std::sync::Arc<crate::stream::records::AwaitChain>>,
}

static NO_RARE: Rare = Rare {
    woken_during_poll: Stamp::NONE,
    shutdown_ns: Stamp::NONE,
    running_at_attach: Stamp::NONE,
    no_way_to_run_at: Stamp::NONE,
    hosted_polls: 0,
    frozen: None,
    await_chain: None,
};

/// How a task's spawn site was found (reports say it per task: `site_source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SiteSource {
    #[default]
    None,
    /// A probe at the spawn: the `Location` a spawn call received, or its caller.
    Probe,
    /// The code: the one place its future type is spawned from, or the Location the
    /// spawning code loads next to its id draw (`static_sites`, `spawn_ids`).
    Code,
    /// A copy of the stack at the spawn, unwound to the first frame outside tokio and std.
    Stack,
    /// Learned: the one site a probe saw other tasks of its future type (task vtable)
    /// spawned at; the task itself was spawned unprobed (sample mode's spawn gate was
    /// shut, or before attach).
    Learned,
}

/// `null` when unknown, else its name: one byte in the report's per-task record.
impl serde::Serialize for SiteSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_str() {
            Some(name) => s.serialize_str(name),
            None => s.serialize_none(),
        }
    }
}

impl SiteSource {
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            SiteSource::None => None,
            SiteSource::Probe => Some("probe"),
            SiteSource::Code => Some("code"),
            SiteSource::Stack => Some("stack"),
            SiteSource::Learned => Some("learned"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Task {
    pub id: u64,
    pub header: u64,
    pub owner_id: u64,
    /// Task vtable address in the target (names the future's type).
    pub vtable: u64,
    /// Spawn time; none when the task existed before tracing started.
    pub spawned_ns: Stamp,
    pub first_seen_ns: u64,
    pub polls: u64,
    pub busy_ns: u64,
    pub longest_poll_ns: u64,
    pub wakes: u64,
    pub last_poll_end_ns: Stamp,
    /// Start of the poll in progress.
    pub running_since: Stamp,
    /// Woken (or newly spawned) and waiting to be polled since.
    pub scheduled_since: Stamp,
    pub completed_ns: Stamp,
    pub freed_ns: Stamp,
    /// Lifecycle mode: a hash of its `Core` at the previous reading (0: none yet).
    pub digest: u64,
    rare: Option<Box<Rare>>,
    pub running_tid: u32,
    /// Where it was spawned, as an index into the aggregator's site names (0: unknown).
    pub site: u32,
    /// Reference count at the last reading of its state word (`u32::MAX`: never read;
    /// see [`Task::refs`]); a plain word keeps the record within its size.
    refs_read: u32,
    /// The task-list reading (by count) that last listed it.
    pub listed_in: u32,
    pub kind: TaskKind,
    /// How its spawn site was found.
    pub site_source: SiteSource,
    pub cancelled: bool,
    /// Found in its runtime's task list when tasktrace attached: alive before attach.
    pub before_attach: bool,
    pub join_handle: Option<bool>,
    /// What its state word said at the last task-list reading that listed it.
    pub listed_as: Option<Status>,
}

impl Task {
    pub fn new(id: u64, header: u64, kind: TaskKind, spawned_ns: Option<u64>, now: u64) -> Self {
        let spawned_ns = Stamp::from(spawned_ns);
        Self {
            id,
            header,
            owner_id: 0,
            vtable: 0,
            spawned_ns,
            first_seen_ns: now,
            polls: 0,
            busy_ns: 0,
            longest_poll_ns: 0,
            wakes: 0,
            last_poll_end_ns: Stamp::NONE,
            running_since: Stamp::NONE,
            // A spawned task starts notified: tokio schedules it at once.
            scheduled_since: spawned_ns,
            completed_ns: Stamp::NONE,
            freed_ns: Stamp::NONE,
            digest: 0,
            rare: None,
            running_tid: 0,
            site: 0,
            refs_read: u32::MAX,
            listed_in: 0,
            kind,
            site_source: SiteSource::None,
            cancelled: false,
            before_attach: false,
            join_handle: None,
            listed_as: None,
        }
    }

    pub fn rare(&self) -> &Rare {
        self.rare.as_deref().unwrap_or(&NO_RARE)
    }

    pub fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    /// The rare fields if any was ever set (to clear one without allocating).
    pub fn rare_if_any(&mut self) -> Option<&mut Rare> {
        self.rare.as_deref_mut()
    }

    /// Clears the wake seen during the poll (every poll start: no allocation).
    pub fn clear_woken_during_poll(&mut self) -> Option<u64> {
        self.rare.as_deref_mut()?.woken_during_poll.take()
    }

    /// Drops the proof it could not run; true if there was one (it was wrong).
    pub fn take_no_way_to_run(&mut self) -> bool {
        self.rare
            .as_deref_mut()
            .is_some_and(|r| r.no_way_to_run_at.take().is_some())
    }

    pub fn is_plumbing(&self) -> bool {
        self.kind == TaskKind::Blocking && self.rare().hosted_polls > 0
    }
    /// Reference count at the last reading of its state word.
    pub fn refs(&self) -> Option<u32> {
        (self.refs_read != u32::MAX).then_some(self.refs_read)
    }

    pub fn set_refs(&mut self, refs: u32) {
        self.refs_read = refs.min(u32::MAX - 1);
    }

    pub fn is_finished(&self) -> bool {
        self.completed_ns.is_some() || self.freed_ns.is_some()
    }

    pub fn state(&self) -> TaskState {
        if self.freed_ns.is_some() {
            TaskState::Freed
        } else if self.completed_ns.is_some() {
            if self.cancelled {
                TaskState::Cancelled
            } else {
                TaskState::Completed
            }
        } else if self.running_since.is_some() {
            TaskState::Running
        } else if self.scheduled_since.is_some() {
            TaskState::Scheduled
        } else {
            TaskState::Idle
        }
    }
}
