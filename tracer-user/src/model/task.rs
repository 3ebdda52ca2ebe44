//! One task's life as rebuilt from events.

use std::sync::Arc;

use serde::Serialize;

use crate::verdict::Judgement;

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

#[derive(Clone, Debug)]
pub struct Task {
    pub id: u64,
    pub header: u64,
    pub kind: TaskKind,
    /// Spawn time; `None` when the task existed before tracing started.
    pub spawned_ns: Option<u64>,
    pub first_seen_ns: u64,
    pub polls: u64,
    pub busy_ns: u64,
    pub longest_poll_ns: u64,
    pub wakes: u64,
    pub last_poll_end_ns: Option<u64>,
    /// Start of the poll in progress.
    pub running_since: Option<u64>,
    pub running_tid: u32,
    /// Woken (or newly spawned) and waiting to be polled since.
    pub scheduled_since: Option<u64>,
    /// A wake arrived during the poll in progress (tokio's OkNotified).
    pub woken_during_poll: Option<u64>,
    pub completed_ns: Option<u64>,
    pub cancelled: bool,
    /// Cancelled by its runtime shutting down.
    pub shutdown_ns: Option<u64>,
    pub freed_ns: Option<u64>,
    /// Polls of other tasks ran inside this task's poll: a blocking task hosting a
    /// multi-thread worker (runtime plumbing, not verdict material).
    pub hosted_polls: u64,
    pub owner_id: u64,
    /// Verdict frozen when the runtime began shutting down the task.
    pub frozen: Option<Judgement>,
    /// Where it was spawned: `file:line:col`, or `function+0xoff` of the caller.
    pub spawned_at: Option<Arc<str>>,
    /// Task vtable address in the target (names the future's type).
    pub vtable: u64,
    /// The future's type, from the vtable's poll function (filled in before reporting).
    pub future: Option<Arc<str>>,
    /// Found in its runtime's task list when tasktrace attached: alive before attach.
    pub before_attach: bool,
    /// Running when a task-list reading found it (the poll's start is unknown): the
    /// attach-time reading, or in lifecycle mode the first of consecutive readings.
    pub running_at_attach: Option<u64>,
    /// A reading of the task list at this instant found it unable to ever run again.
    pub no_way_to_run_at: Option<u64>,
    /// Reference count and JoinHandle presence at the last reading of its state word.
    pub refs: Option<u64>,
    pub join_handle: Option<bool>,
    /// Index of its spawn site's poll-time histogram in the aggregator, once known.
    pub site_slot: Option<u32>,
}

impl Task {
    pub fn new(id: u64, header: u64, kind: TaskKind, spawned_ns: Option<u64>, now: u64) -> Self {
        Self {
            id,
            header,
            kind,
            spawned_ns,
            first_seen_ns: now,
            polls: 0,
            busy_ns: 0,
            longest_poll_ns: 0,
            wakes: 0,
            last_poll_end_ns: None,
            running_since: None,
            running_tid: 0,
            // A spawned task starts notified: tokio schedules it at once.
            scheduled_since: spawned_ns,
            woken_during_poll: None,
            completed_ns: None,
            cancelled: false,
            shutdown_ns: None,
            freed_ns: None,
            hosted_polls: 0,
            owner_id: 0,
            frozen: None,
            spawned_at: None,
            vtable: 0,
            future: None,
            before_attach: false,
            running_at_attach: None,
            no_way_to_run_at: None,
            refs: None,
            join_handle: None,
            site_slot: None,
        }
    }

    pub fn is_plumbing(&self) -> bool {
        self.kind == TaskKind::Blocking && self.hosted_polls > 0
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
