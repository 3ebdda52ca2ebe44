//! The detectors: judge one task at one instant against the thresholds. Pure functions
//! of a task's rebuilt state, so they are tested on synthetic tasks.

use std::time::Duration;

use serde::Serialize;

use crate::{
    model::{Task, TaskKind},
    stream::records::Status,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Leaked,
    Stuck,
    NeverPolled,
    Ok,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Leaked => "leaked",
            Verdict::Stuck => "stuck",
            Verdict::NeverPolled => "never_polled",
            Verdict::Ok => "ok",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "leaked" => Verdict::Leaked,
            "stuck" => Verdict::Stuck,
            "never_polled" | "never-polled" => Verdict::NeverPolled,
            _ => return None,
        })
    }
}

/// Why a verdict was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Idle since its last poll for at least `leak_after`.
    IdleSinceLastPoll,
    /// Alive before attach and idle ever since, for at least `leak_after`.
    IdleSinceAttach,
    /// Idle, not notified, no JoinHandle, and its reference count leaves no room for a
    /// waker or an AbortHandle: nothing can ever run it again.
    NoWayToRun,
    /// Inside one poll for at least `stuck_after`: it blocks a worker thread.
    BlockingPoll,
    /// Woken, and not polled again for at least `stuck_after`.
    Starved,
    /// Spawned at least `never_polled_after` ago and never polled.
    NeverPolled,
    /// Finished (completed, cancelled or freed).
    Finished,
    /// A blocking task hosting a runtime worker thread.
    RuntimePlumbing,
    /// Alive and recently active.
    Active,
    /// Flagged on its events, but events were lost while it lived and a later task-list
    /// reading shows it was polled (or its poll ended) all the same: not flagged.
    ShownActiveByReading,
}

/// How sure a verdict is: `leaked` is `definite` or `suspected`; any verdict whose
/// evidence spans events the kernel lost, and that no task-list reading settles, is
/// `uncertain` (counted apart, never a plain verdict).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Certainty {
    /// Proven by the task's state word: it can never run again (no false positives).
    Definite,
    /// Idle for longer than the threshold; something may still wake it.
    Suspected,
    /// Events were lost while the condition lasted: it may not hold.
    Uncertain,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reason: Reason,
    /// Set for `leaked` only.
    pub certainty: Option<Certainty>,
    /// The instant the task was judged at (window end, or its runtime's shutdown start).
    pub at_ns: u64,
    /// How long the condition behind the verdict had lasted at that instant.
    pub for_ns: u64,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Thresholds {
    pub leak_after_ns: u64,
    pub stuck_after_ns: u64,
    pub never_polled_after_ns: u64,
    /// Lifecycle mode: polls are inferred from task-list readings (see `judge`).
    #[serde(skip)]
    pub lifecycle: bool,
}

impl Thresholds {
    pub fn new(leak: Duration, stuck: Duration, never_polled: Duration) -> Self {
        Self {
            leak_after_ns: leak.as_nanos() as u64,
            stuck_after_ns: stuck.as_nanos() as u64,
            never_polled_after_ns: never_polled.as_nanos() as u64,
            lifecycle: false,
        }
    }
}

/// Judges `t` as of instant `at`.
pub fn judge(t: &Task, at: u64, th: &Thresholds) -> Judgement {
    let j = |verdict, reason, since: u64| Judgement {
        verdict,
        reason,
        certainty: (verdict == Verdict::Leaked).then_some(if reason == Reason::NoWayToRun {
            Certainty::Definite
        } else {
            Certainty::Suspected
        }),
        at_ns: at,
        for_ns: at.saturating_sub(since),
    };
    if t.is_plumbing() {
        return j(Verdict::Ok, Reason::RuntimePlumbing, at);
    }
    let finished_by = t
        .completed_ns
        .get()
        .into_iter()
        .chain(t.freed_ns.get())
        .min();
    if finished_by.is_some_and(|f| f <= at) {
        return j(Verdict::Ok, Reason::Finished, at);
    }
    if let Some(start) = t.running_since.get().filter(|&s| s <= at) {
        // spawn_blocking exists to block: its long runs are not a worker being blocked.
        if t.kind != TaskKind::Blocking && at - start >= th.stuck_after_ns {
            return j(Verdict::Stuck, Reason::BlockingPoll, start);
        }
        return j(Verdict::Ok, Reason::Active, start);
    }
    // A task alive before attach may have been polled long ago: "never polled" is
    // unknowable for it; its idle time counts from the attach-time reading.
    // Lifecycle mode learns polls from task-list readings, which never list blocking
    // tasks: whether one was polled, or waits to be, is unknowable.
    let polls_unknowable = th.lifecycle && t.kind == TaskKind::Blocking;
    if t.polls == 0 && !t.before_attach && !polls_unknowable {
        if let Some(spawned) = t.spawned_ns.get().filter(|&s| s <= at)
            && at - spawned >= th.never_polled_after_ns
        {
            return j(Verdict::NeverPolled, Reason::NeverPolled, spawned);
        }
        return j(Verdict::Ok, Reason::Active, at);
    }
    if let Some(woken) = t
        .scheduled_since
        .get()
        .filter(|&s| s <= at && !polls_unknowable)
    {
        if at - woken >= th.stuck_after_ns {
            return j(Verdict::Stuck, Reason::Starved, woken);
        }
        return j(Verdict::Ok, Reason::Active, woken);
    }
    if t.rare().no_way_to_run_at.get().is_some_and(|r| r <= at) {
        let since = t.last_poll_end_ns.get().unwrap_or(t.first_seen_ns).min(at);
        return j(Verdict::Leaked, Reason::NoWayToRun, since);
    }
    if let Some(end) = t.last_poll_end_ns.get().filter(|&e| e <= at) {
        if t.kind != TaskKind::Blocking && at - end >= th.leak_after_ns {
            let reason = if t.before_attach && t.polls == 0 {
                Reason::IdleSinceAttach
            } else {
                Reason::IdleSinceLastPoll
            };
            return j(Verdict::Leaked, reason, end);
        }
        return j(Verdict::Ok, Reason::Active, end);
    }
    j(Verdict::Ok, Reason::Active, at)
}

/// A verdict measured on the target's running time: the spans it spent stopped (SIGSTOP,
/// a debugger; `stops`) are taken out of how long the condition lasted, since no task
/// runs, is polled or is woken meanwhile. Below its threshold, the task is not flagged.
pub fn without_stops(j: Judgement, stops: &[(u64, u64)], th: &Thresholds) -> Judgement {
    if j.verdict == Verdict::Ok || j.certainty == Some(Certainty::Definite) || stops.is_empty() {
        return j;
    }
    let since = j.at_ns.saturating_sub(j.for_ns);
    let stopped: u64 = stops
        .iter()
        .map(|&(from, to)| to.min(j.at_ns).saturating_sub(from.max(since)))
        .sum();
    if stopped == 0 {
        return j;
    }
    let ran = j.for_ns.saturating_sub(stopped);
    let threshold = match j.reason {
        Reason::BlockingPoll | Reason::Starved => th.stuck_after_ns,
        Reason::NeverPolled => th.never_polled_after_ns,
        _ => th.leak_after_ns,
    };
    if ran >= threshold {
        Judgement { for_ns: ran, ..j }
    } else {
        Judgement {
            verdict: Verdict::Ok,
            reason: Reason::Active,
            certainty: None,
            for_ns: ran,
            ..j
        }
    }
}

/// A verdict whose evidence runs through events the kernel lost (`losses`: spans
/// `(since, at]`, in order), settled where it can be: by what came after the last such
/// span (events are complete from there on), and by the task's state word at the last
/// task-list reading that listed it, taken after that span (`listed`: status, when).
///
/// - a suspected leak holds when the task was idle at a reading after the losses and the
///   complete events since show no poll for `leak_after`;
/// - a blocking poll holds when a reading after the losses found it running and the
///   events since show no end for `stuck_after`; a reading that found it not running
///   clears it (its end was lost);
/// - never polled, or woken and not polled: a reading after the losses that found it
///   idle or running clears it (it was polled);
/// - what stays unsettled is `uncertain`. A definite leak rests on the state word alone.
pub fn under_losses(
    j: Judgement,
    losses: &[(u64, u64)],
    listed: Option<(Status, u64)>,
    th: &Thresholds,
) -> Judgement {
    if j.verdict == Verdict::Ok || j.certainty == Some(Certainty::Definite) {
        return j;
    }
    let since = j.at_ns.saturating_sub(j.for_ns);
    let Some(lost_until) = losses
        .iter()
        .filter(|&&(from, to)| to > since && from < j.at_ns)
        .map(|&(_, to)| to.min(j.at_ns))
        .max()
    else {
        return j;
    };
    let after = listed.filter(|&(_, at)| at >= lost_until && at <= j.at_ns);
    let cleared = Judgement {
        verdict: Verdict::Ok,
        reason: Reason::ShownActiveByReading,
        certainty: None,
        ..j
    };
    let uncertain = Judgement {
        certainty: Some(Certainty::Uncertain),
        ..j
    };
    let clean_for = j.at_ns - lost_until.max(since);
    match (j.reason, after.map(|(s, _)| s)) {
        (Reason::IdleSinceLastPoll | Reason::IdleSinceAttach, Some(Status::Idle))
            if clean_for >= th.leak_after_ns =>
        {
            Judgement {
                for_ns: clean_for,
                ..j
            }
        }
        (
            Reason::IdleSinceLastPoll | Reason::IdleSinceAttach,
            Some(Status::Notified | Status::Running),
        ) => cleared,
        (Reason::BlockingPoll, Some(Status::Running)) if clean_for >= th.stuck_after_ns => {
            Judgement {
                for_ns: clean_for,
                ..j
            }
        }
        (Reason::BlockingPoll, Some(Status::Idle | Status::Notified | Status::Complete)) => cleared,
        (Reason::NeverPolled | Reason::Starved, Some(Status::Idle | Status::Running)) => cleared,
        (_, Some(Status::Complete)) => cleared,
        _ => uncertain,
    }
}

/// The verdict of a task at the end of the window: frozen at its runtime's shutdown if it
/// was cancelled by one, judged at `window_end` otherwise.
pub fn final_judgement(t: &Task, window_end: u64, th: &Thresholds) -> Judgement {
    t.rare().frozen.unwrap_or_else(|| judge(t, window_end, th))
}
