//! What a live view (`tasktrace top`) shows at one instant, read from the model the
//! reports are built from: live tasks by spawn site, judged as of now. Its cost follows
//! the tasks the model holds (live, flagged, finished since the last fold), never the
//! whole history, so it can run every second on a process that spawns 100 000 tasks a
//! second.

use std::sync::Arc;

use super::{
    Aggregator, Task, TaskKind, TaskState,
    verdict::{Certainty, Judgement, Reason, Verdict},
};

/// One spawn site's live tasks at an instant.
#[derive(Clone, Debug, Default)]
pub struct SiteNow {
    /// `None`: tasks whose spawn site is unknown.
    pub site: Option<Arc<str>>,
    pub live: u64,
    /// Of the live tasks, those the last complete task-list reading found: where the lists
    /// tell completions, the one count that is exact at an instant (that reading's).
    pub listed: u64,
    /// Of the live tasks: scheduled (woken, waiting for a worker), running, idle.
    pub scheduled: u64,
    pub running: u64,
    pub idle: u64,
    /// Tasks of the site the model has seen so far (held or folded): a view's spawn rate
    /// is the difference between two.
    pub created: u64,
    pub leaked_definite: u64,
    pub leaked_suspected: u64,
    pub stuck: u64,
    pub never_polled: u64,
    /// Verdicts whose evidence ran through lost events and could not be settled.
    pub uncertain: u64,
    /// Ended polls of the site's tasks so far, and their summed duration.
    pub polls: u64,
    pub busy_ns: u64,
    pub poll_p50_ns: Option<u64>,
    pub poll_p99_ns: Option<u64>,
    pub poll_max_ns: Option<u64>,
}

/// The model at one instant, for a live view.
#[derive(Clone, Debug, Default)]
pub struct Now {
    pub at_ns: u64,
    pub live: u64,
    pub sites: Vec<SiteNow>,
    /// The last complete task-list reading: its number and instant.
    pub reading: Option<(u32, u64)>,
    /// Tasks the model has seen so far (held or folded).
    pub tasks_seen: u64,
}

/// One task, as a live view's drill-down lists it.
#[derive(Clone, Debug)]
pub struct TaskNow {
    pub id: u64,
    pub kind: TaskKind,
    pub state: TaskState,
    pub age_ns: Option<u64>,
    /// Since its last poll ended (idle tasks).
    pub idle_ns: Option<u64>,
    pub polls: u64,
    pub verdict: Verdict,
    pub certainty: Option<Certainty>,
    pub reason: Reason,
    pub future: Option<Arc<str>>,
    pub wakes: u64,
    pub busy_ns: u64,
    pub before_attach: bool,
}

impl Aggregator {
    /// Live tasks by site as of `at`.
    pub fn now(&self, at: u64) -> Now {
        let mut sites: Vec<SiteNow> = Vec::new();
        let mut slot_of = vec![usize::MAX; self.site_names.len()];
        let mut row = |sites: &mut Vec<SiteNow>, site: u32| -> usize {
            let s = (site as usize).min(slot_of.len().saturating_sub(1));
            if slot_of[s] == usize::MAX {
                slot_of[s] = sites.len();
                sites.push(SiteNow {
                    site: self.site_name(site).cloned(),
                    ..Default::default()
                });
            }
            slot_of[s]
        };
        let mut live = 0;
        let reading = self.last_reading();
        for i in self.live.values() {
            let t = &self.tasks[i];
            if t.is_finished() || t.is_plumbing() {
                continue;
            }
            live += 1;
            let k = row(&mut sites, t.site);
            let r = &mut sites[k];
            r.live += 1;
            r.listed += u64::from(reading.is_some_and(|(n, _)| n == t.listed_in));
            match t.state() {
                TaskState::Scheduled => r.scheduled += 1,
                TaskState::Running => r.running += 1,
                _ => r.idle += 1,
            }
            count_verdict(r, &self.final_judgement(t, at));
        }
        for t in &self.tasks {
            if !t.is_plumbing() {
                let r = row(&mut sites, t.site);
                sites[r].created += 1;
            }
        }
        for site in 0..=self.site_count() {
            if let Some(f) = self.folded().site(site) {
                let r = row(&mut sites, site);
                sites[r].created += f.tasks;
            }
        }
        for r in &mut sites {
            if let Some(p) = self.site_poll_times(r.site.as_deref()) {
                r.polls = p.polls;
                r.busy_ns = p.total_ns;
                r.poll_p50_ns = p.percentile(50.0);
                r.poll_p99_ns = p.percentile(99.0);
                r.poll_max_ns = (p.polls > 0).then_some(p.max_ns);
            }
        }
        Now {
            at_ns: at,
            live,
            sites,
            reading,
            tasks_seen: self.folded().total + self.tasks.len() as u64,
        }
    }

    /// The live tasks of one site (`None`: site unknown), oldest first.
    pub fn tasks_at_site(&self, site: Option<&str>, at: u64) -> Vec<TaskNow> {
        let mut out: Vec<TaskNow> = self
            .live
            .values()
            .map(|i| &self.tasks[i])
            .filter(|t| !t.is_finished() && !t.is_plumbing())
            .filter(|t| self.site_name(t.site).map(|s| &**s) == site)
            .map(|t| self.task_now(t, at))
            .collect();
        out.sort_by_key(|t| t.id);
        out
    }

    fn task_now(&self, t: &Task, at: u64) -> TaskNow {
        let j = self.final_judgement(t, at);
        TaskNow {
            id: t.id,
            kind: t.kind,
            state: t.state(),
            age_ns: t.spawned_ns.get().map(|s| at.saturating_sub(s)),
            idle_ns: (t.state() == TaskState::Idle)
                .then(|| t.last_poll_end_ns.get().map(|e| at.saturating_sub(e)))
                .flatten(),
            polls: t.polls,
            verdict: j.verdict,
            certainty: j.certainty,
            reason: j.reason,
            future: self.futures.get(&t.vtable).cloned(),
            wakes: t.wakes,
            busy_ns: t.busy_ns,
            before_attach: t.before_attach,
        }
    }
}

fn count_verdict(r: &mut SiteNow, j: &Judgement) {
    match (j.verdict, j.certainty) {
        (_, Some(Certainty::Uncertain)) => r.uncertain += 1,
        (Verdict::Leaked, Some(Certainty::Definite)) => r.leaked_definite += 1,
        (Verdict::Leaked, _) => r.leaked_suspected += 1,
        (Verdict::Stuck, _) => r.stuck += 1,
        (Verdict::NeverPolled, _) => r.never_polled += 1,
        (Verdict::Ok, _) => {}
    }
}
