//! The aggregator: the single owner of all task state. Its one input is the stream's
//! records ([`Aggregator::apply`]), in the order they were recorded: a live window and a
//! replay of its trace file apply the same records. The detectors and renderers read the
//! tasks afterwards.

use std::{collections::HashMap, sync::Arc};

use serde::Serialize;
use tracer_common::{EVENT_FLAG_UNREADABLE, EventKind, TaskEvent};

use super::verdict::{Judgement, Thresholds, Verdict, judge};
use super::{
    PollTimes,
    fold::{FOLD_AFTER_NS, Fold, Keep, RECENT_KEPT, Retention},
    index::TaskIndex,
    task::{LongPoll, SiteSource, Stamp, Task, TaskKind},
};
use crate::{
    plan::PlanSummary,
    stream::{
        MetaRecord, Rec,
        records::{AwaitsFrom, ChainOf, ListKind, ListedTask, Status},
    },
    tokio_versions::StateBits,
};

/// Anything the stream did that a perfect stream would not: reported, never hidden.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Diagnostics {
    pub events: u64,
    /// A poll end on a thread with no poll in progress (its start was lost or predates
    /// the trace).
    pub unmatched_poll_ends: u64,
    /// A header address reappeared with another task id while its task had not finished
    /// (its completion was lost).
    pub address_reuse: u64,
    /// Events whose task header could not be read.
    pub unreadable_headers: u64,
    /// Events with an unknown kind byte.
    pub unknown_events: u64,
    /// Events stamped after the window closed (while detaching): not ingested.
    pub after_window: u64,
    /// Stacks copied at spawn sites (fat LTO) and how many of them unwound to a caller.
    pub spawn_stacks: u64,
    pub spawn_stacks_resolved: u64,
    /// Spawns whose site came from the code (the plan's `static_sites`, which `inspect`
    /// lists), with no spawn-call probe hit.
    pub spawn_sites_from_code: u64,
    /// Events received, by kind.
    pub by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Tasks found in the runtimes' lists at attach that no event had shown.
    pub listed_before_attach: u64,
    /// A task a list reading had proven unable to run was then polled or woken: the
    /// proof was wrong. Zero unless tokio's reference counting changed.
    pub definite_contradicted: u64,
    /// Spawns seen at a task-id draw (a spawn path no other spawn probe covers), how many
    /// of them were joined to their task when it showed up, and how many never showed up
    /// (finished before any poll or reading saw them: lifecycle mode, blocking tasks).
    pub spawn_ids: u64,
    pub spawn_ids_joined: u64,
    pub spawn_ids_unjoined: u64,
    /// Tasks a reading listed at an address the events show a newer task at (the reading
    /// saw the address before it changed): not taken.
    pub stale_listings: u64,
    /// Events about a task a task-list reading had already replaced at its address (they
    /// were still in the ring when the reading was applied): applied to that task.
    pub events_after_reading: u64,
    /// The model's live set against the last complete task-list reading (`null`: no
    /// complete reading, e.g. the target exited first).
    pub alive_check: Option<AliveCheck>,
    /// Spans `[since, at]` (relative to the window in reports) in which the kernel dropped
    /// events: histories crossing them may have holes.
    pub lost_spans: Vec<(u64, u64)>,
    /// Spans the target spent stopped (SIGSTOP, a debugger), which count toward no
    /// threshold.
    pub stopped_spans: Vec<(u64, u64)>,
}

/// The model's live set against the final task-list reading (`Aggregator::alive_check`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AliveCheck {
    /// When the walk of the lists began and ended (monotonic ns; reports make them
    /// relative).
    pub at_ns: u64,
    pub until_ns: u64,
    /// Tasks the reading listed, and tasks the model held alive all through its walk.
    pub listed: u64,
    pub model_alive: u64,
    /// Ids alive in the model but in no list, and listed but finished in the model.
    pub alive_not_listed: Vec<u64>,
    pub listed_not_alive: Vec<u64>,
}

/// What the spawn calls on one thread said since its last task was bound.
#[derive(Clone, Debug, Default)]
struct PendingSpawn {
    location: Option<Arc<str>>,
    caller: Option<Arc<str>>,
    location_source: SiteSource,
    caller_source: SiteSource,
}

impl PendingSpawn {
    /// The best answer: the exact location, else the calling function.
    fn site(self) -> (Option<Arc<str>>, SiteSource) {
        match (self.location, self.caller) {
            (Some(l), _) => (Some(l), self.location_source),
            (None, Some(c)) => (Some(c), self.caller_source),
            _ => (None, SiteSource::None),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    task: usize,
    /// tokio really polled the future (the task was neither running nor complete).
    real: bool,
    /// The latest instant the poll was known to be running (its start, or a thread
    /// sample that found the thread in it): where an inferred end is put.
    seen_ns: u64,
}

/// What the thread sampler last found a thread polling (lifecycle mode, no poll events).
#[derive(Clone, Copy, Debug)]
struct SampledPoll {
    task: usize,
    last_ns: u64,
    /// Samples since that found the thread in no known task: one is forgiven (a read
    /// between two words of a switch, a task not yet known by id), two end the poll.
    misses: u8,
}

/// How long after its spawn event a task may still be missing from its runtime's list:
/// the probe fires as the spawn path starts, the list insertion follows under a lock, and
/// a thread preempted in between (seen: 2 ms on a loaded 2-core machine) is not listed by
/// a walk that begins meanwhile.
const SPAWN_TO_LIST: u64 = 100_000_000;

/// The instant by which a spawned task is surely in its runtime's list: a poll seen
/// proves the insertion (tokio lists a task before it can be scheduled); without one,
/// [`SPAWN_TO_LIST`] after its spawn. Using the poll keeps a task whose completion was
/// lost from staying alive when it was spawned just before the last reading.
/// How long after a task's first poll its spawn function can return (the spawn is probed
/// at that return, and another worker may poll the task first).
const SPAWN_RETURN_LAG_NS: u64 = 50_000_000;

/// Whether two sightings at one address can be the same task (0: the vtable is unknown).
fn same_vtable(a: u64, b: u64) -> bool {
    a == b || a == 0 || b == 0
}

fn listed_by(t: &Task) -> u64 {
    let polled = t
        .running_since
        .get()
        .into_iter()
        .chain(t.last_poll_end_ns.get())
        .min();
    let spawned = t.spawned_ns.get().unwrap_or(t.first_seen_ns);
    polled.unwrap_or(spawned.saturating_add(SPAWN_TO_LIST))
}

/// Room for every `EventKind` byte.
const KINDS: usize = 32;

/// What a timeline renderer needs beyond the per-task state: every poll and instant.
/// Kept only on request (`--perfetto`): it grows with the event count.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// (task index, start, end, thread).
    pub polls: Vec<(usize, u64, u64, u32)>,
    /// (task index, time, what).
    pub instants: Vec<(usize, u64, &'static str)>,
}

/// tokio's task-id counter at its first and last reading: (when, the next id).
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskIds {
    pub first: Option<(u64, u64)>,
    pub last: Option<(u64, u64)>,
}

impl TaskIds {
    /// Tasks spawned between the first and the last reading, and over how long (ns).
    pub fn spawned(&self) -> Option<(u64, u64)> {
        let ((t0, a), (t1, b)) = (self.first?, self.last?);
        Some((b.saturating_sub(a), t1.saturating_sub(t0)))
    }
}

/// Sample mode's spawn probes over the window (`Rec::SpawnProbes`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SpawnProbing {
    /// The most spawns a second they were to probe.
    pub budget: u64,
    /// Attached since then, now.
    pub armed_since: Option<u64>,
    /// Time attached before `armed_since`.
    pub armed_ns: u64,
    /// Detached this many times (the target spawned faster than the budget).
    pub disarms: u32,
    /// The highest spawn rate any of its records measured.
    pub peak_rate: Option<f64>,
}

impl SpawnProbing {
    /// How long they were attached by `until`.
    pub fn armed_by(&self, until: u64) -> u64 {
        self.armed_ns + self.armed_since.map_or(0, |s| until.saturating_sub(s))
    }
}

/// A site learned for a task vtable: one site, or several (then none is given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Learned {
    Site(u32),
    Several,
}

/// Cloned only to report mid-window (a live view's save) while tracing goes on.
#[derive(Clone)]
pub struct Aggregator {
    pub tasks: Vec<Task>,
    /// Header address → the task currently living there.
    pub(super) live: TaskIndex,
    /// Per target thread, the polls in progress (innermost last).
    stacks: HashMap<u32, Vec<Frame>>,
    /// Per target thread, the spawn site of the spawn call in progress.
    pending_spawns: HashMap<u32, PendingSpawn>,
    /// Future type → the one place the code spawns it from (the plan's `static_sites`).
    sites_from_code: HashMap<Arc<str>, Arc<str>>,
    /// The same, resolved once per task vtable: a spawn looks up a number, not a name.
    vtable_sites: HashMap<u64, Option<Arc<str>>>,
    /// Spawns seen at a task-id draw whose task has not shown up yet: id → (when, site).
    pending_ids: HashMap<u64, (u64, u32, SiteSource)>,
    /// The plan's id sites' spawn sites, by the site number id events carry.
    id_sites: Vec<Option<Arc<str>>>,
    /// Tasks a reading found replaced at their address (a new task there) while the model
    /// still held them: their last events, still in the ring, find them by id. Id → task.
    replaced_by_reading: HashMap<u64, usize>,
    /// When the reading at attach was taken (`record`; none for a launched command).
    attach_reading_at: Option<u64>,
    /// The smallest task id a spawn event named (ids only grow: a task with a smaller id
    /// was spawned before the probes went in).
    min_spawned_id: u64,
    /// The latest reading that ended (its number, start, end, and the lists it read
    /// whole), and the end of the reading being applied (`reading_until`).
    last_reading: Option<(u32, u64, u64, Vec<u64>)>,
    until: Option<u64>,
    /// Tasks the current task-list reading found before any event: their id draw may
    /// still be in the ring (drawn after the last drain). Id → task.
    listed_unspawned: HashMap<u64, usize>,
    /// Future type names by task vtable address (the stream's future records).
    pub futures: HashMap<u64, Arc<str>>,
    /// Ids of tasks freed since the last reading was applied, and when: the next reading
    /// may still list them (it walked while they ran), and must not bring them back.
    freed_since_reading: HashMap<u64, u64>,
    /// Runtime (owner id) → when it began shutting its tasks down.
    pub shutdown_began: HashMap<u64, u64>,
    pub long_polls: Vec<LongPoll>,
    pub diagnostics: Diagnostics,
    /// Ended polls of async and local tasks, by duration.
    pub poll_times: PollTimes,
    pub timeline: Option<Timeline>,
    /// Spawn sites by index (`Task::site`; 0: unknown), each name held once however many
    /// tasks share it, with the poll durations of its tasks for per-site percentiles.
    pub(super) site_names: Vec<Option<Arc<str>>>,
    site_polls: Vec<PollTimes>,
    site_slots: HashMap<Arc<str>, u32>,
    /// No probe sees completions (stripped binary): a task that leaves its runtime's list
    /// between two task-list readings has finished.
    pub completion_from_lists: bool,
    /// No probe sees a poll's end (one hit per poll): it ends at the thread's next poll,
    /// at the task's completion, or when the thread sampler finds the thread elsewhere.
    pub poll_ends_inferred: bool,
    /// No probe sees polls at all (lifecycle mode): the thread samples stand in for them.
    pub polls_sampled: bool,
    /// Task id → task, kept only when polls are sampled (samples name tasks by id).
    pub(super) by_id: TaskIndex,
    sampled: HashMap<u32, SampledPoll>,
    /// Task-list readings so far, and the instant of the latest (a reading may come in
    /// several parts); each listed task is stamped with the count.
    readings: u32,
    reading_at: u64,
    alive: usize,
    /// Runtimes (owner ids) the events named: a task-list reading rescans the target's
    /// memory when one of them has no known list yet (created since the last scan).
    pub owners: std::collections::HashSet<u64>,
    /// Events by kind byte; `diagnostics_with_kinds` names them.
    kind_counts: [u64; KINDS],
    bits: StateBits,
    thresholds: Thresholds,
    /// Spans `(since, at]` in which the kernel dropped events (`Rec::Lost`), merged.
    losses: Vec<(u64, u64)>,
    /// tokio's task-id counter, first and last read (`Rec::TaskIds`).
    pub task_ids: TaskIds,
    /// Where the await chains came from (`Rec::Awaits`); `None`: none were read.
    pub awaits_from: Option<AwaitsFrom>,
    /// Sample mode's spawn probes (`Rec::SpawnProbes`); `None` in the other modes.
    pub spawn_probing: Option<SpawnProbing>,
    /// Task vtable → the site probed spawns of it named: tasks of it spawned unprobed
    /// take it (`SiteSource::Learned`).
    learned_sites: HashMap<u64, Learned>,
    /// A site was learned since tasks last took theirs.
    learned_new: bool,
    /// Blocking-pool spawns are not followed (sample mode: nothing would see them end).
    ignore_blocking: bool,
    /// Spans the target spent stopped (`Rec::Stopped`).
    stops: Vec<(u64, u64)>,
    /// Finished healthy tasks counted per site instead of held (`fold`).
    pub(super) fold: Fold,
    /// The latest instant a record carried: folding waits `FOLD_AFTER_NS` past a task's end.
    latest_ns: u64,
}

impl Aggregator {
    pub fn new(bits: StateBits, thresholds: Thresholds) -> Self {
        Self {
            tasks: Vec::new(),
            live: TaskIndex::new(|t| t.header),
            stacks: HashMap::new(),
            pending_spawns: HashMap::new(),
            sites_from_code: HashMap::new(),
            vtable_sites: HashMap::new(),
            pending_ids: HashMap::new(),
            id_sites: Vec::new(),
            listed_unspawned: HashMap::new(),
            last_reading: None,
            until: None,
            attach_reading_at: None,
            min_spawned_id: u64::MAX,
            replaced_by_reading: HashMap::new(),
            futures: HashMap::new(),
            freed_since_reading: Default::default(),
            shutdown_began: HashMap::new(),
            long_polls: Vec::new(),
            diagnostics: Diagnostics::default(),
            poll_times: PollTimes::default(),
            timeline: None,
            site_names: vec![None],
            site_polls: vec![PollTimes::default()],
            site_slots: HashMap::new(),
            completion_from_lists: false,
            poll_ends_inferred: false,
            polls_sampled: false,
            by_id: TaskIndex::new(|t| t.id),
            sampled: HashMap::new(),
            readings: 0,
            reading_at: 0,
            alive: 0,
            owners: Default::default(),
            kind_counts: [0; KINDS],
            bits,
            thresholds,
            losses: Vec::new(),
            stops: Vec::new(),
            task_ids: TaskIds::default(),
            awaits_from: None,
            spawn_probing: None,
            learned_sites: HashMap::new(),
            learned_new: false,
            ignore_blocking: false,
            fold: Fold::default(),
            latest_ns: 0,
        }
    }

    /// The model of one window, configured from its metadata record.
    /// A timeline names every task by its index: it keeps them all, as `Keep::All` does.
    pub fn for_window(
        meta: &MetaRecord,
        thresholds: Thresholds,
        timeline: bool,
        retention: Retention,
    ) -> Self {
        let mut agg = Self::new(meta.state_bits, thresholds);
        agg.configure(&meta.summary);
        if timeline {
            agg.timeline = Some(Default::default());
        }
        agg.fold.enabled = retention.keep == Keep::Recent && !timeline;
        agg.fold.floor = retention.fold_from.max(1);
        agg.fold.next_at = agg.fold.floor;
        agg.fold.origin = Some(meta.start_ns);
        agg
    }

    /// Sets what the attach plan leaves to inference: completions from task lists, poll
    /// ends from thread samples, polls from samples and readings (lifecycle mode); and
    /// the spawn sites the code shows.
    pub(in crate::model) fn configure(&mut self, plan: &PlanSummary) {
        self.completion_from_lists = !plan.completion_probed;
        self.poll_ends_inferred = plan.polls_probed && !plan.poll_ends_probed;
        self.ignore_blocking = plan.mode == crate::plan::Mode::Sample;
        self.polls_sampled = plan.mode.polls_sampled();
        self.thresholds.lifecycle = self.polls_sampled;
        self.vtable_sites.clear();
        self.id_sites = plan
            .id_sites
            .iter()
            .map(|s| s.as_deref().map(Arc::from))
            .collect();
        self.sites_from_code = plan
            .static_sites
            .iter()
            .map(|(future, site)| (Arc::from(future.as_str()), Arc::from(site.as_str())))
            .collect();
    }

    /// The one input: a record of the stream, applied in stream order (by reference: a
    /// replay applies millions, and moving each costs more than reading it).
    pub fn apply(&mut self, rec: &Rec) {
        match rec {
            Rec::Task(ev) => {
                // Only a spawn looks its future up (a lookup per event costs).
                if matches!(
                    EventKind::from_u8(ev.kind),
                    Some(EventKind::Spawn | EventKind::SpawnLocal)
                ) {
                    let future = self.futures.get(&ev.vtable).cloned();
                    self.site_from_code(ev, future.as_deref());
                }
                self.ingest(ev);
            }
            // The stream's first record configured the model (`for_window`).
            Rec::Meta(_) => {}
            Rec::Site {
                tid,
                caller,
                stack: true,
                ..
            } => {
                self.diagnostics.spawn_stacks += 1;
                self.diagnostics.spawn_stacks_resolved += u64::from(caller.is_some());
                self.spawn_stack(*tid, caller.as_deref().map(Arc::from));
            }
            Rec::Site {
                tid,
                location,
                code: true,
                ..
            } => self.spawn_code_site(*tid, location.as_deref().map(Arc::from)),
            Rec::Site {
                tid,
                location,
                caller,
                ..
            } => self.spawn_call(
                *tid,
                location.as_deref().map(Arc::from),
                caller.as_deref().map(Arc::from),
            ),
            Rec::Future { vtable, name, site } => {
                if !name.is_empty() {
                    self.futures.insert(*vtable, Arc::from(name.as_str()));
                }
                self.vtable_site(*vtable, site.as_deref().map(Arc::from));
            }
            Rec::TaskList {
                at_ns,
                attach,
                tasks,
                complete_owners,
                until_ns,
            } => {
                if let Some(until) = until_ns {
                    self.reading_until(*until);
                }
                self.task_list(tasks, *at_ns, *attach, complete_owners.as_deref());
            }
            Rec::Samples { at_ns, samples } => self.thread_samples(*at_ns, samples),
            Rec::Lost {
                since_ns, at_ns, ..
            } => self.events_lost(*since_ns, *at_ns),
            Rec::Stopped { from_ns, to_ns } => self.stops.push((*from_ns, *to_ns)),
            Rec::TaskIds { at_ns, next_id } => {
                self.task_ids.first.get_or_insert((*at_ns, *next_id));
                self.task_ids.last = Some((*at_ns, *next_id));
            }
            Rec::SpawnProbes {
                at_ns,
                armed,
                rate,
                budget,
            } => self.spawn_probes(*at_ns, *armed, *rate, *budget),
            Rec::Awaits { from, chains, .. } => self.await_chains(from, chains),
        }
        if self.fold.enabled && self.tasks.len() >= self.fold.next_at {
            self.fold_finished(false);
        }
    }

    /// Where the tasks a reading listed are parked: each live one takes its chain.
    /// A chain of a task no longer live (cancelled by its runtime's shutdown, where the
    /// stack source keeps it) goes to the last task its cell held.
    fn await_chains(&mut self, from: &AwaitsFrom, chains: &[ChainOf]) {
        self.awaits_from = Some(from.clone());
        let mut ended: Option<HashMap<u64, usize>> = None;
        for c in chains {
            let i = match self.live.get(c.header, &self.tasks) {
                Some(i) => i,
                None => {
                    let tasks = &self.tasks;
                    let by_header = ended.get_or_insert_with(|| {
                        tasks
                            .iter()
                            .enumerate()
                            .map(|(i, t)| (t.header, i))
                            .collect()
                    });
                    match by_header.get(&c.header) {
                        Some(&i) => i,
                        None => continue,
                    }
                }
            };
            if c.id == 0 || self.tasks[i].id == 0 || self.tasks[i].id == c.id {
                self.tasks[i].rare_mut().await_chain = Some(Arc::new(c.chain.clone()));
            }
        }
    }

    /// The kernel dropped events in `(since, at]`. Any task's history may have a hole
    /// there: a lost completion would leave it alive for good, so from now on a task
    /// missing from a list read whole has finished, as where completions are not probed;
    /// and verdicts whose evidence spans the hole are settled against the readings
    /// ([`Self::final_judgement`]).
    fn events_lost(&mut self, since: u64, at: u64) {
        match self.losses.last_mut() {
            Some(last) if since <= last.1 => last.1 = last.1.max(at),
            _ => self.losses.push((since, at)),
        }
        self.completion_from_lists = true;
    }

    /// Spans of the window the target spent stopped.
    pub fn stops(&self) -> &[(u64, u64)] {
        &self.stops
    }

    /// Spans of the window in which the kernel dropped events.
    pub fn losses(&self) -> &[(u64, u64)] {
        &self.losses
    }

    /// A task's verdict at the end of the window, settled against the task-list readings
    /// where events were lost while it lived (`verdict::under_losses`).
    pub fn final_judgement(&self, t: &Task, window_end: u64) -> Judgement {
        let j = super::verdict::final_judgement(t, window_end, &self.thresholds);
        let j = super::verdict::without_stops(j, &self.stops, &self.thresholds);
        if self.losses.is_empty() {
            return j;
        }
        let listed = self
            .last_reading
            .as_ref()
            .filter(|r| r.0 == t.listed_in)
            .and_then(|r| Some((t.listed_as?, r.1)));
        super::verdict::under_losses(j, &self.losses, listed, &self.thresholds)
    }

    /// The last complete task-list reading: its number and instant.
    pub fn last_reading(&self) -> Option<(u32, u64)> {
        self.last_reading.as_ref().map(|r| (r.0, r.1))
    }

    /// Closes the window's model before it is reported: draws whose spawn never showed,
    /// tasks spawned before the probes went in, sites of tasks known from their vtable.
    pub fn finish(&mut self) {
        self.finish_pending_ids();
        self.mark_spawned_before_attach();
        self.fold.decide_before_attach(self.first_id_after_attach());
        self.learned_new = false;
        self.sites_by_vtable(true);
        // A window that folded reports its live, flagged and latest finished tasks only.
        if self.fold.enabled && (self.fold.total > 0 || self.tasks.len() >= self.fold.floor) {
            self.fold_finished(true);
        }
    }

    /// A spawn of a future type spawned from one place only (the plan's `static_sites`)
    /// takes that place as its site, unless a spawn call on the thread already named one.
    /// `future`: the type the event's task vtable belongs to. Call before [`Self::ingest`].
    pub(in crate::model) fn site_from_code(&mut self, ev: &TaskEvent, future: Option<&str>) {
        if !matches!(
            EventKind::from_u8(ev.kind),
            Some(EventKind::Spawn | EventKind::SpawnLocal)
        ) || self.has_pending_location(ev.tid)
        {
            return;
        }
        let site = match self.vtable_sites.get(&ev.vtable) {
            Some(site) => site.clone(),
            None => {
                let site = future.and_then(|f| self.sites_from_code.get(f)).cloned();
                self.vtable_sites.insert(ev.vtable, site.clone());
                site
            }
        };
        if let Some(site) = site {
            self.diagnostics.spawn_sites_from_code += 1;
            let p = self.pending_spawns.entry(ev.tid).or_default();
            p.location = Some(site);
            p.location_source = SiteSource::Code;
        }
    }

    /// Where the code says a task vtable's tasks are spawned (the plan's `vtable_sites`,
    /// resolved to the target's addresses): their spawns and the tasks no spawn probe
    /// saw take it.
    pub(in crate::model) fn vtable_site(&mut self, vtable: u64, site: Option<Arc<str>>) {
        if let Some(site) = site {
            self.vtable_sites.insert(vtable, Some(site));
        }
    }

    /// Poll durations of the tasks spawned at `site` (`None`: site unknown).
    pub fn site_poll_times(&self, site: Option<&str>) -> Option<&PollTimes> {
        let slot = match site {
            None => 0,
            Some(s) => *self.site_slots.get(s)?,
        };
        self.site_polls.get(slot as usize)
    }

    /// Site indices in use are `0..=site_count()`.
    pub fn site_count(&self) -> u32 {
        self.site_names.len().saturating_sub(1) as u32
    }

    /// Where the tasks of site index `site` were spawned (`None`: unknown).
    pub fn site_name(&self, site: u32) -> Option<&Arc<str>> {
        self.site_names.get(site as usize)?.as_ref()
    }

    fn intern_site(&mut self, site: Option<Arc<str>>) -> u32 {
        let Some(site) = site else { return 0 };
        let next = self.site_names.len() as u32;
        let slot = *self.site_slots.entry(site.clone()).or_insert(next);
        if slot == next {
            self.site_names.push(Some(site));
            self.site_polls.push(PollTimes::default());
        }
        slot
    }

    /// The diagnostics, with the events counted by kind name.
    pub fn diagnostics_with_kinds(&self) -> Diagnostics {
        let mut d = self.diagnostics.clone();
        for (byte, &n) in self.kind_counts.iter().enumerate() {
            if let Some(kind) = EventKind::from_u8(byte as u8).filter(|_| n > 0) {
                d.by_kind.insert(kind.name(), n);
            }
        }
        d
    }

    /// Hands the tasks over (to the report) and drops the indexes that only ingestion
    /// needs, so that their memory is free before the report is built.
    pub fn take_tasks(&mut self) -> Vec<Task> {
        self.live.clear();
        self.by_id.clear();
        self.stacks = HashMap::new();
        self.sampled = HashMap::new();
        self.pending_spawns = HashMap::new();
        std::mem::take(&mut self.tasks)
    }

    /// Tasks neither completed nor freed (O(1): tracked as events arrive).
    pub fn tasks_alive(&self) -> usize {
        self.alive
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// A `#[track_caller]` spawn function was entered on `tid`. Spawn paths nest (e.g.
    /// `JoinSet::spawn` → `bind_new_task`): the outermost answer is kept until the task
    /// is bound on the same thread.
    pub(in crate::model) fn spawn_call(
        &mut self,
        tid: u32,
        location: Option<Arc<str>>,
        caller: Option<Arc<str>>,
    ) {
        self.spawn_answer(tid, location, caller, SiteSource::Probe);
    }

    /// The code at the caller of an out-of-line id draw on `tid` names the spawn.
    pub(in crate::model) fn spawn_code_site(&mut self, tid: u32, location: Option<Arc<str>>) {
        self.spawn_answer(tid, location, None, SiteSource::Code);
    }

    /// A stack copied at a spawn on `tid` unwound to `caller`.
    pub(in crate::model) fn spawn_stack(&mut self, tid: u32, caller: Option<Arc<str>>) {
        self.spawn_answer(tid, None, caller, SiteSource::Stack);
    }

    fn spawn_answer(
        &mut self,
        tid: u32,
        location: Option<Arc<str>>,
        caller: Option<Arc<str>>,
        source: SiteSource,
    ) {
        self.diagnostics.events += 1;
        let p = self.pending_spawns.entry(tid).or_default();
        if p.location.is_none() && location.is_some() {
            p.location = location;
            p.location_source = source;
        }
        if p.caller.is_none() && caller.is_some() {
            p.caller = caller;
            p.caller_source = source;
        }
    }

    /// A spawn call on `tid` already named the exact location of the spawn in progress.
    pub fn has_pending_location(&self, tid: u32) -> bool {
        self.pending_spawns
            .get(&tid)
            .is_some_and(|p| p.location.is_some())
    }

    pub(in crate::model) fn ingest(&mut self, ev: &TaskEvent) {
        self.diagnostics.events += 1;
        if ev.flags & EVENT_FLAG_UNREADABLE != 0 {
            self.diagnostics.unreadable_headers += 1;
            return;
        }
        let Some(kind) = EventKind::from_u8(ev.kind) else {
            self.diagnostics.unknown_events += 1;
            return;
        };
        // Counted in an array: a map keyed by name costs a string compare per event.
        self.kind_counts[kind as usize % KINDS] += 1;
        if matches!(
            kind,
            EventKind::Spawn
                | EventKind::SpawnBlocking
                | EventKind::SpawnLocal
                | EventKind::SpawnId
        ) && ev.task_id != 0
        {
            self.min_spawned_id = self.min_spawned_id.min(ev.task_id);
        }
        let ts = ev.ts_ns;
        self.latest_ns = self.latest_ns.max(ts);
        match kind {
            EventKind::SpawnBlocking if self.ignore_blocking => {
                // Its spawn call's Location is its own, not the thread's next spawn's.
                self.pending_spawns.remove(&ev.tid);
            }
            EventKind::Spawn | EventKind::SpawnBlocking | EventKind::SpawnLocal => {
                let task_kind = match kind {
                    EventKind::SpawnBlocking => TaskKind::Blocking,
                    EventKind::SpawnLocal => TaskKind::Local,
                    _ => TaskKind::Async,
                };
                if let Some(old) = self.live.get(ev.header, &self.tasks) {
                    let t = &mut self.tasks[old];
                    // A spawn seen at the spawn function's return can follow the task's
                    // first poll on another worker: same task, not a new one.
                    // Known by its header only (before tokio 1.23 only spawns and readings
                    // read ids): the same task if first seen about when it was spawned.
                    let same = match t.id {
                        0 => t.first_seen_ns + SPAWN_RETURN_LAG_NS >= ts,
                        id => id == ev.task_id,
                    };
                    // Before 1.23 one spawn can be probed twice (`bind` and the scheduler
                    // function it was not inlined into): the outer one adds nothing.
                    if same && t.spawned_ns.is_some() && ev.task_id != 0 {
                        return;
                    }
                    if t.spawned_ns.is_none() && same {
                        if t.id == 0 && ev.task_id != 0 {
                            self.adopt_id(old, ev.task_id);
                        }
                        let t = &mut self.tasks[old];
                        t.spawned_ns = Stamp::at(t.first_seen_ns.min(ts));
                        t.kind = task_kind;
                        // Read in the attach-time list, but spawned after the probes went in.
                        t.before_attach = false;
                        let (site, source) = self
                            .pending_spawns
                            .remove(&ev.tid)
                            .map_or((None, SiteSource::None), PendingSpawn::site);
                        self.tasks[old].site = self.intern_site(site);
                        self.tasks[old].site_source = source;
                        self.learn_site(old);
                        return;
                    }
                    self.retire(old, ts);
                }
                let mut task = Task::new(ev.task_id, ev.header, task_kind, Some(ts), ts);
                task.owner_id = ev.owner_id;
                task.vtable = ev.vtable;
                let (site, source) = self
                    .pending_spawns
                    .remove(&ev.tid)
                    .map_or((None, SiteSource::None), PendingSpawn::site);
                task.site = self.intern_site(site);
                task.site_source = source;
                let i = self.insert(task);
                self.learn_site(i);
                self.instant(i, ts, "spawn");
            }
            EventKind::PollStart => {
                let Some(i) = self.task_for(ev) else {
                    return;
                };
                if self.poll_ends_inferred {
                    // The thread's previous poll ended before this one began, unless this
                    // one runs inside it (a blocking task hosting a worker).
                    self.end_async_polls(ev.tid, ts);
                }
                let stack = self.stacks.entry(ev.tid).or_default();
                if let Some(parent) = stack.last() {
                    self.tasks[parent.task].rare_mut().hosted_polls += 1;
                }
                let real = ev.state & (self.bits.running | self.bits.complete) == 0;
                stack.push(Frame {
                    task: i,
                    real,
                    seen_ns: ts,
                });
                let t = &mut self.tasks[i];
                if t.owner_id != ev.owner_id {
                    // Unset (0) at a spawn probed at bind_inner's entry: the first poll says.
                    t.owner_id = ev.owner_id;
                    if ev.owner_id != 0 {
                        self.owners.insert(ev.owner_id);
                    }
                }
                let t = &mut self.tasks[i];
                if !real {
                    return;
                }
                if t.take_no_way_to_run() {
                    self.diagnostics.definite_contradicted += 1;
                }
                if ev.state & self.bits.cancelled != 0 {
                    // Aborted while idle: this "poll" only runs the cancellation.
                    t.cancelled = true;
                } else {
                    t.polls += 1;
                }
                t.running_since = Stamp::at(ts);
                t.running_tid = ev.tid;
                t.scheduled_since = Stamp::NONE;
                t.clear_woken_during_poll();
            }
            EventKind::PollEnd => {
                if self.stacks.get(&ev.tid).is_none_or(|s| s.is_empty()) {
                    self.diagnostics.unmatched_poll_ends += 1;
                    return;
                }
                self.end_poll(ev.tid, ts);
            }
            EventKind::WakeByVal | EventKind::WakeByRef => {
                let Some(i) = self.task_for(ev) else {
                    return;
                };
                let t = &mut self.tasks[i];
                if t.is_finished() {
                    return;
                }
                t.wakes += 1;
                if t.take_no_way_to_run() {
                    self.diagnostics.definite_contradicted += 1;
                }
                if t.running_since.is_some() {
                    t.rare_mut().woken_during_poll.set_if_none(ts);
                } else {
                    t.scheduled_since.set_if_none(ts);
                }
                self.instant(i, ts, "wake");
            }
            EventKind::Complete => {
                let Some(i) = self.task_for(ev) else {
                    return;
                };
                // Completing (not by cancellation) takes a poll.
                if self.polls_sampled && ev.state & self.bits.cancelled == 0 {
                    self.tasks[i].polls = self.tasks[i].polls.max(1);
                }
                // Completion is the last thing a poll does.
                if self.poll_ends_inferred
                    && self
                        .stacks
                        .get(&ev.tid)
                        .and_then(|s| s.last())
                        .is_some_and(|f| f.task == i)
                {
                    self.end_poll(ev.tid, ts);
                }
                let cancelled = ev.state & self.bits.cancelled != 0;
                self.alive = self
                    .alive
                    .saturating_sub(usize::from(!self.tasks[i].is_finished()));
                self.forget_id(i);
                let t = &mut self.tasks[i];
                t.completed_ns.set_if_none(ts);
                t.cancelled |= cancelled;
                t.scheduled_since = Stamp::NONE;
                t.clear_woken_during_poll();
                self.instant(i, ts, if cancelled { "cancel" } else { "complete" });
            }
            EventKind::Shutdown => {
                let began = *self.shutdown_began.entry(ev.owner_id).or_insert(ts);
                let Some(i) = self.task_for(ev) else {
                    return;
                };
                let thresholds = self.thresholds;
                let t = &mut self.tasks[i];
                if t.rare().shutdown_ns.is_none() && !t.is_finished() {
                    let frozen = judge(t, began, &thresholds);
                    let rare = t.rare_mut();
                    rare.shutdown_ns = Stamp::at(ts);
                    rare.frozen = Some(frozen);
                }
            }
            EventKind::Park => self.end_async_polls(ev.tid, ts),
            EventKind::SpawnId => {
                self.diagnostics.spawn_ids += 1;
                // Best first: the Location a spawn call on this thread just received, the
                // site the code shows at the draw, the spawn call's caller.
                let from_code = self.id_sites.get(ev.state as usize).cloned().flatten();
                let p = self.pending_spawns.remove(&ev.tid).unwrap_or_default();
                let (site, source) = match (p.location, from_code, p.caller) {
                    (Some(l), _, _) => (Some(l), p.location_source),
                    (None, Some(c), _) => (Some(c), SiteSource::Code),
                    (None, None, Some(c)) => (Some(c), p.caller_source),
                    _ => (None, SiteSource::None),
                };
                let site = self.intern_site(site);
                match self.listed_unspawned.remove(&ev.task_id) {
                    Some(i) => self.join_spawn(i, ts, site, source),
                    None => {
                        self.pending_ids.insert(ev.task_id, (ts, site, source));
                    }
                }
            }
            EventKind::SpawnCall
            | EventKind::SpawnStack
            | EventKind::WakerClone
            | EventKind::AwaitStack => self.diagnostics.unknown_events += 1,
            // The window ends at it (the session stops there); nothing of a task.
            EventKind::Exec => {}
            EventKind::Dealloc => {
                let Some(i) = self.live.remove(ev.header, &self.tasks) else {
                    self.fold.tombstones.remove(&ev.header);
                    return;
                };
                {
                    self.alive = self
                        .alive
                        .saturating_sub(usize::from(!self.tasks[i].is_finished()));
                    self.forget_id(i);
                    if self.tasks[i].id != 0 {
                        self.freed_since_reading.insert(self.tasks[i].id, ts);
                    }
                    let t = &mut self.tasks[i];
                    if ev.task_id == 0 || t.id == 0 || t.id == ev.task_id {
                        t.freed_ns = Stamp::at(ts);
                    } else {
                        // Not the task we knew at this address: ours was freed unseen.
                        self.diagnostics.address_reuse += 1;
                        t.freed_ns = Stamp::at(ts);
                    }
                }
            }
        }
    }

    /// Ends the polls of async and local tasks in progress on `tid` (not the blocking task
    /// that may host the thread's worker).
    fn end_async_polls(&mut self, tid: u32, ts: u64) {
        while let Some(top) = self.stacks.get(&tid).and_then(|s| s.last()).copied() {
            if self.tasks[top.task].kind == TaskKind::Blocking {
                break;
            }
            self.end_poll(tid, ts);
        }
    }

    /// Ends the innermost poll on `tid` at `ts`.
    fn end_poll(&mut self, tid: u32, ts: u64) {
        let Some(frame) = self.stacks.get_mut(&tid).and_then(Vec::pop) else {
            return;
        };
        if !frame.real {
            return;
        }
        let stuck_after = self.thresholds.stuck_after_ns;
        let t = &mut self.tasks[frame.task];
        let Some(start) = t.running_since.take() else {
            return;
        };
        let dur = ts.saturating_sub(start);
        t.busy_ns = t.busy_ns.saturating_add(dur);
        t.longest_poll_ns = t.longest_poll_ns.max(dur);
        t.last_poll_end_ns = Stamp::at(ts);
        if !t.is_finished() {
            t.scheduled_since = t.clear_woken_during_poll().into();
        }
        if t.kind != TaskKind::Blocking {
            self.poll_times.record(dur);
        }
        // Worker-hosting tasks' one long poll is the runtime's life, not a poll.
        if t.rare().hosted_polls == 0 {
            self.site_polls[t.site as usize].record(dur);
        }
        if let Some(tl) = self.timeline.as_mut() {
            tl.polls.push((frame.task, start, ts, tid));
        }
        // A blocking task runs its closure to the end in its one poll: where no probe sees
        // completions (stripped), the end of that poll is its completion.
        let t = &self.tasks[frame.task];
        if self.completion_from_lists && t.kind == TaskKind::Blocking && !t.is_finished() {
            self.alive = self.alive.saturating_sub(1);
            self.forget_id(frame.task);
            let t = &mut self.tasks[frame.task];
            t.completed_ns = Stamp::at(ts);
            t.scheduled_since = Stamp::NONE;
            self.instant(frame.task, ts, "complete");
        }
        let t = &mut self.tasks[frame.task];
        if dur >= stuck_after && t.kind != TaskKind::Blocking {
            self.long_polls.push(LongPoll {
                task_id: t.id,
                start_ns: start,
                duration_ns: dur,
                tid,
            });
        }
    }

    /// What the thread sampler found at `at`: for each target thread, the id of the task
    /// it was polling (`None`: none). A poll whose end no probe sees ends at the last
    /// instant it was known to run (a lower bound: never a false long poll); in lifecycle
    /// mode a run of samples finding one task on one thread stands in for its poll.
    pub(in crate::model) fn thread_samples(&mut self, at: u64, samples: &[(u32, Option<u64>)]) {
        for &(tid, current) in samples {
            if self.poll_ends_inferred {
                let Some(top) = self.stacks.get_mut(&tid).and_then(|s| s.last_mut()) else {
                    continue;
                };
                let t = &self.tasks[top.task];
                if t.kind == TaskKind::Blocking {
                    continue;
                }
                // A task known by its header only (before 1.23, until a reading names it)
                // cannot be told from another: a thread in some poll is in its.
                if current.is_some_and(|id| id == t.id || t.id == 0) {
                    top.seen_ns = top.seen_ns.max(at);
                } else {
                    let seen = top.seen_ns;
                    self.end_poll(tid, seen);
                }
            } else if self.polls_sampled {
                self.sampled_poll(tid, current, at);
            }
        }
    }

    fn sampled_poll(&mut self, tid: u32, current: Option<u64>, at: u64) {
        let task = current.and_then(|id| self.by_id.get(id, &self.tasks));
        match (self.sampled.get(&tid).copied(), task) {
            (Some(prev), Some(i)) if prev.task == i => {
                self.sampled.insert(
                    tid,
                    SampledPoll {
                        task: i,
                        last_ns: at,
                        misses: 0,
                    },
                );
            }
            // Not seen in it once: its poll may go on (a blocking poll split in two would
            // never reach the stuck threshold); it ends, when it does, where last seen.
            (Some(prev), None) if prev.misses == 0 => {
                self.sampled.insert(tid, SampledPoll { misses: 1, ..prev });
            }
            (prev, now) => {
                if let Some(prev) = prev {
                    self.sampled.remove(&tid);
                    let t = &mut self.tasks[prev.task];
                    if t.running_tid == tid && t.running_since.take().is_some() {
                        t.last_poll_end_ns = Stamp::at(prev.last_ns);
                    }
                }
                if let Some(i) = now {
                    self.sampled.insert(
                        tid,
                        SampledPoll {
                            task: i,
                            last_ns: at,
                            misses: 0,
                        },
                    );
                    let t = &mut self.tasks[i];
                    if t.take_no_way_to_run() {
                        self.diagnostics.definite_contradicted += 1;
                    }
                    if !t.is_finished() {
                        t.polls += 1;
                        t.running_since = Stamp::at(at);
                        t.running_tid = tid;
                        t.scheduled_since = Stamp::NONE;
                    }
                }
            }
        }
    }

    /// What a reading of the runtimes' task lists (`tasklist`) found at `at`: tasks no
    /// event has shown join as alive before attach (`attach`: the reading taken right
    /// after the probes went in), and every listed task gets what its state word says.
    ///
    /// `complete_owners`, given with the last part of a reading, names the lists that were
    /// read whole: where completions are not probed, their tasks missing from the reading
    /// have finished.
    pub(in crate::model) fn task_list(
        &mut self,
        tasks: &[ListedTask],
        at: u64,
        attach: bool,
        complete_owners: Option<&[u64]>,
    ) {
        if attach {
            self.attach_reading_at = Some(at);
        }
        self.latest_ns = self.latest_ns.max(at);
        if self.reading_at != at || self.readings == 0 {
            self.readings += 1;
            self.reading_at = at;
            self.listed_unspawned.clear();
            self.replaced_by_reading.clear();
        }
        for lt in tasks {
            if lt.status == Status::Complete {
                continue;
            }
            let i = match self.live.get(lt.header, &self.tasks) {
                Some(i) if self.tasks[i].id == lt.id => i,
                // Known by its header only (before tokio 1.23 no probe reads ids): the
                // reading names it.
                Some(i)
                    if (self.tasks[i].id == 0 || lt.id == 0)
                        && same_vtable(self.tasks[i].vtable, lt.vtable) =>
                {
                    if lt.id != 0 {
                        self.adopt_id(i, lt.id);
                    }
                    i
                }
                Some(old) if self.listing_is_stale(old, lt.id) => {
                    self.diagnostics.stale_listings += 1;
                    continue;
                }
                // Freed since the walk saw it (its whole life fits in the walk): the
                // model already knows its end.
                None if self.freed_since_reading.contains_key(&lt.id)
                    || self.fold.tombstones.get(&lt.header) == Some(&lt.id) =>
                {
                    self.diagnostics.stale_listings += 1;
                    continue;
                }
                found => {
                    if let Some(old) = found {
                        // Its last events may still be in the ring: they find it by id.
                        self.replaced_by_reading.insert(self.tasks[old].id, old);
                        self.retire(old, at);
                    }
                    let kind = match lt.list {
                        ListKind::Runtime => TaskKind::Async,
                        ListKind::LocalSet => TaskKind::Local,
                    };
                    // Found notified by a later reading and never seen polled: spawned
                    // during the window, at or before this reading.
                    let spawned = (!attach && lt.status == Status::Notified).then_some(at);
                    let mut task = Task::new(lt.id, lt.header, kind, spawned, at);
                    task.owner_id = lt.owner_id;
                    task.vtable = lt.vtable;
                    task.before_attach = attach;
                    if let Some(site) = self.code_site_of_vtable(lt.vtable) {
                        task.site = self.intern_site(Some(site));
                        task.site_source = SiteSource::Code;
                    } else if let Some(site) = self.learned_site(lt.vtable) {
                        task.site = site;
                        task.site_source = SiteSource::Learned;
                    }
                    match lt.status {
                        Status::Idle => {
                            task.last_poll_end_ns = Stamp::at(at);
                            // Spawned notified and now idle: polled, though no event of
                            // it arrived (all lost); its idle time counts from here.
                            task.polls = u64::from(!attach);
                        }
                        Status::Notified => task.scheduled_since = Stamp::at(at),
                        Status::Running => task.rare_mut().running_at_attach = Stamp::at(at),
                        Status::Complete => {}
                    }
                    self.diagnostics.listed_before_attach += u64::from(attach);
                    let i = self.insert(task);
                    if !attach {
                        self.listed_unspawned.insert(lt.id, i);
                    }
                    i
                }
            };
            let t = &mut self.tasks[i];
            t.listed_in = self.readings;
            t.listed_as = Some(lt.status);
            // A spawn probed at `bind_inner`'s entry comes before the owner id is set.
            if t.owner_id == 0 {
                t.owner_id = lt.owner_id;
            }
            // Without spawn probes (stripped) the list is what tells a LocalSet task.
            if lt.list == ListKind::LocalSet && t.kind == TaskKind::Async {
                t.kind = TaskKind::Local;
            }
            t.set_refs(lt.refs);
            t.join_handle = Some(lt.join_handle);
            if t.is_finished() {
                continue;
            }
            if self.polls_sampled {
                // 0: no digest (not asked for, or not read yet).
                let old = std::mem::replace(&mut t.digest, lt.digest);
                let changed = old != 0 && lt.digest != 0 && old != lt.digest;
                lifecycle_reading(t, lt.status, changed, at, attach);
            }
            let t = &mut self.tasks[i];
            // Running at attach and still inside a poll no event has started: one poll
            // lasting at least from attach until now.
            if let Some(since) = t.rare().running_at_attach.get()
                && !attach
                && t.polls == 0
                && t.running_since.is_none()
            {
                match lt.status {
                    Status::Running => {
                        t.running_since = Stamp::at(since);
                        t.polls = 1;
                    }
                    _ => t.last_poll_end_ns.set_if_none(at),
                }
            }
            // Notified but idle in the model: a wake the probes did not show (stripped
            // binaries have no wake probes); it waits since this reading at the latest.
            if lt.status == Status::Notified && t.running_since.is_none() {
                t.scheduled_since.set_if_none(at);
            }
            if lt.no_way_to_run && t.running_since.is_none() && t.scheduled_since.is_none() {
                t.rare_mut().no_way_to_run_at.set_if_none(at);
            }
        }
        if complete_owners.is_some() {
            self.take_learned_sites();
        }
        if let Some(owners) = complete_owners {
            self.freed_since_reading.clear();
            self.prune_pending_ids(at);
            let until = self.until.take().unwrap_or(at).max(at);
            self.last_reading = Some((self.readings, at, until, owners.to_vec()));
        }
        if let Some(owners) = complete_owners
            && self.completion_from_lists
        {
            self.finish_unlisted(owners, at);
        }
    }

    /// A reading walks the lists over some milliseconds while the target runs, so what it
    /// found at an address can be older than what the events (all ingested up to the
    /// reading's end) say is there now. Task ids only grow: a listed task with a smaller
    /// id than the model's task at its address was that address's earlier occupant, seen
    /// before the newer one replaced it.
    fn listing_is_stale(&self, old: usize, listed: u64) -> bool {
        listed < self.tasks[old].id
    }

    /// Tasks of fully read lists that the reading did not find have finished (at their
    /// last poll, the latest thing seen of them).
    fn finish_unlisted(&mut self, owners: &[u64], at: u64) {
        let gone: Vec<usize> = self
            .live
            .values()
            .filter(|&i| {
                let t = &self.tasks[i];
                !t.is_finished()
                    && t.kind != TaskKind::Blocking
                    && owners.contains(&t.owner_id)
                    && t.listed_in != self.readings
                    // Spawned while the reading walked its list, or just before: maybe
                    // not in it yet.
                    && t.spawned_ns.get().is_none_or(|_| listed_by(t) < at)
            })
            .collect();
        for i in gone {
            self.alive = self.alive.saturating_sub(1);
            self.forget_id(i);
            let t = &mut self.tasks[i];
            let when = t.last_poll_end_ns.get().unwrap_or(at).min(at);
            t.completed_ns = Stamp::at(when);
            t.running_since = Stamp::NONE;
            t.scheduled_since = Stamp::NONE;
            self.instant(i, when, "complete");
        }
    }

    /// The task an event is about, created on first sight (tasks that predate tracing).
    /// `None`: the event is about a task a task-list reading already replaced at that
    /// address and that is no longer known (the event was still in the ring).
    fn task_for(&mut self, ev: &TaskEvent) -> Option<usize> {
        if let Some(i) = self.live.get(ev.header, &self.tasks) {
            let t = &mut self.tasks[i];
            if t.id == 0 && ev.task_id != 0 {
                // A first event that could not read it.
                self.adopt_id(i, ev.task_id);
            }
            let t = &self.tasks[i];
            // Before 1.23 no event names its task: a task's vtable never changes, so one
            // of another vtable is the address's next occupant.
            if (ev.task_id == 0 || t.id == ev.task_id) && same_vtable(t.vtable, ev.vtable) {
                return Some(i);
            }
            // Older than the task a reading found at this address: about the address's
            // previous occupant, which that reading retired.
            if ev.ts_ns < t.first_seen_ns {
                self.diagnostics.events_after_reading += 1;
                return self.replaced_by_reading.get(&ev.task_id).copied();
            }
            // Reuse after completion is normal (most frees bypass the probed dealloc); reuse
            // of a task that never finished means its end was lost.
            self.diagnostics.address_reuse +=
                u64::from(!self.tasks[i].is_finished() && !self.completion_from_lists);
            self.retire(i, ev.ts_ns);
        } else if let Some(&id) = self.fold.tombstones.get(&ev.header)
            && (ev.task_id == 0 || ev.task_id == id)
        {
            // About a finished task folded away (a late wake): nothing to change.
            return None;
        }
        let kind = if ev.owner_id == 0 {
            TaskKind::Blocking
        } else {
            TaskKind::Async
        };
        let mut task = Task::new(ev.task_id, ev.header, kind, None, ev.ts_ns);
        task.owner_id = ev.owner_id;
        task.vtable = ev.vtable;
        Some(self.insert(task))
    }

    fn instant(&mut self, task: usize, ts: u64, what: &'static str) {
        if let Some(tl) = self.timeline.as_mut() {
            tl.instants.push((task, ts, what));
        }
    }

    /// The id of a task known until now by its header only (its first events could not
    /// read it, or, before tokio 1.23, none can): its draw, if seen, was its spawn.
    fn adopt_id(&mut self, i: usize, id: u64) {
        self.tasks[i].id = id;
        if self.polls_sampled && !self.tasks[i].is_finished() {
            self.by_id.insert(i, &self.tasks);
        }
        if let Some((ts, site, source)) = self.pending_ids.remove(&id) {
            self.join_spawn(i, ts, site, source);
        }
    }

    /// A task's id draw, seen before or after the task showed up: that was its spawn.
    fn join_spawn(&mut self, i: usize, ts: u64, site: u32, source: SiteSource) {
        self.diagnostics.spawn_ids_joined += 1;
        let t = &mut self.tasks[i];
        if t.spawned_ns.get().is_none_or(|s| ts < s) {
            t.spawned_ns = Stamp::at(ts);
        }
        t.before_attach = false;
        if t.site == 0 && site != 0 {
            t.site = site;
            t.site_source = source;
        }
        self.learn_site(i);
    }

    /// A task whose spawn a probe saw: its site becomes its vtable's, for the tasks of
    /// that future type spawned unprobed (once it is the only site seen for it).
    fn learn_site(&mut self, i: usize) {
        let t = &self.tasks[i];
        if t.vtable == 0
            || t.site == 0
            || !matches!(t.site_source, SiteSource::Probe | SiteSource::Stack)
        {
            return;
        }
        let (vtable, site) = (t.vtable, t.site);
        match self.learned_sites.get(&vtable) {
            Some(Learned::Site(s)) if *s == site => {}
            Some(Learned::Several) => {}
            Some(Learned::Site(_)) => {
                self.learned_sites.insert(vtable, Learned::Several);
            }
            None => {
                self.learned_sites.insert(vtable, Learned::Site(site));
                self.learned_new = true;
            }
        }
    }

    /// The site learned for a task vtable, if one only.
    fn learned_site(&self, vtable: u64) -> Option<u32> {
        match self.learned_sites.get(&vtable) {
            Some(Learned::Site(s)) => Some(*s),
            _ => None,
        }
    }

    /// Tasks spawned unprobed take the sites learned since they were first seen.
    fn take_learned_sites(&mut self) {
        if std::mem::take(&mut self.learned_new) {
            self.sites_by_vtable(false);
        }
    }

    fn spawn_probes(&mut self, at: u64, armed: bool, rate: Option<f64>, budget: u64) {
        let p = self.spawn_probing.get_or_insert_with(SpawnProbing::default);
        p.budget = budget;
        match (armed, p.armed_since) {
            (true, None) => {
                p.armed_since = Some(at);
            }
            (false, Some(since)) => {
                p.armed_ns += at.saturating_sub(since);
                p.armed_since = None;
                p.disarms += 1;
            }
            _ => {}
        }
        if let Some(r) = rate {
            p.peak_rate = Some(p.peak_rate.map_or(r, |m: f64| m.max(r)));
        }
    }

    /// Tasks whose site no spawn event named (first seen in a poll or a task-list
    /// reading, alive before attach, spawned while sample mode's probes were off): with
    /// `code`, the one place their future type is spawned from (`static_sites`), else the
    /// one site probed spawns of it showed (`learned`).
    fn sites_by_vtable(&mut self, code: bool) {
        for i in 0..self.tasks.len() {
            let t = &self.tasks[i];
            if t.site != 0 || t.vtable == 0 {
                continue;
            }
            let vtable = t.vtable;
            let (slot, source) = match code.then(|| self.code_site_of_vtable(vtable)).flatten() {
                Some(site) => (self.intern_site(Some(site)), SiteSource::Code),
                None => match self.learned_site(vtable) {
                    Some(slot) => (slot, SiteSource::Learned),
                    None => continue,
                },
            };
            let t = &mut self.tasks[i];
            t.site = slot;
            t.site_source = source;
        }
    }

    /// Where the code says the tasks of a task vtable are spawned (by the vtable, or by
    /// its future type spawned from one place only).
    fn code_site_of_vtable(&self, vtable: u64) -> Option<Arc<str>> {
        match self.vtable_sites.get(&vtable) {
            Some(Some(site)) => Some(site.clone()),
            _ => self
                .futures
                .get(&vtable)
                .and_then(|f| self.sites_from_code.get(f))
                .cloned(),
        }
    }

    /// Id draws whose task no reading found by `at` (with a margin for a spawn racing
    /// the reading): their task finished unseen. Keeps the map as small as the spawn
    /// rate times the reading period.
    fn prune_pending_ids(&mut self, at: u64) {
        const MARGIN_NS: u64 = 2_000_000_000;
        let before = self.pending_ids.len();
        self.pending_ids
            .retain(|_, (ts, _, _)| ts.saturating_add(MARGIN_NS) >= at);
        self.diagnostics.spawn_ids_unjoined += (before - self.pending_ids.len()) as u64;
    }

    /// The end of the walk of the reading about to be applied (its last part): what it
    /// found holds somewhere between its start and this.
    pub(in crate::model) fn reading_until(&mut self, until: u64) {
        self.until = Some(until);
    }

    /// The model's live tasks against the runtimes' own lists at the last complete
    /// reading, which walked them over `[start, end]` while the target ran: a task the
    /// model holds alive all through it that the lists did not have lost its completion;
    /// a listed task the model holds finished or unborn all through it was ended (or
    /// begun) by a wrong inference. Tasks of lists not read whole and blocking tasks (in
    /// no list) are left out.
    pub fn alive_check(&self) -> Option<AliveCheck> {
        let (number, start, end, owners) = self.last_reading.as_ref()?;
        let (start, end) = (*start, *end);
        let mut check = AliveCheck {
            at_ns: start,
            until_ns: end,
            ..Default::default()
        };
        for t in &self.tasks {
            if t.kind == TaskKind::Blocking || !owners.contains(&t.owner_id) {
                continue;
            }
            let (must, may) = self.alive_during(t, start, end);
            let listed = t.listed_in == *number;
            check.listed += u64::from(listed);
            check.model_alive += u64::from(must);
            if must && !listed {
                check.alive_not_listed.push(t.id);
            }
            if listed && !may {
                check.listed_not_alive.push(t.id);
            }
        }
        Some(check)
    }

    /// Whether `t` was alive throughout a walk over `[start, end]` (it must be listed),
    /// and at some point of it (it may be).
    fn alive_during(&self, t: &Task, start: u64, end: u64) -> (bool, bool) {
        let born = t.spawned_ns.get().unwrap_or(t.first_seen_ns);
        let (completed, freed) = (t.completed_ns.get(), t.freed_ns.get());
        let ended = completed.into_iter().chain(freed).min().unwrap_or(u64::MAX);
        // Without completion probes, a task freed and not seen completing (its free
        // drained before the reading was applied) may have finished any time before.
        let surely_ended_after = if self.completion_from_lists && completed.is_none() {
            freed.map_or(u64::MAX, |_| 0)
        } else {
            ended
        };
        (
            listed_by(t).max(born) < start && surely_ended_after > end,
            born <= end && ended > start,
        )
    }

    /// Attached to a running process: a task no spawn event named whose id is smaller
    /// than every id a spawn event named was spawned before the probes went in (ids only
    /// grow) — a blocking task (in no list), or one that ended before the attach-time
    /// reading saw it. It existed before tracing began, as the listed ones did.
    pub(in crate::model) fn mark_spawned_before_attach(&mut self) {
        if self.attach_reading_at.is_none() {
            return;
        }
        let first = self.first_id_after_attach();
        for t in &mut self.tasks {
            if t.spawned_ns.is_none() && !t.before_attach && t.id != 0 && t.id < first {
                t.before_attach = true;
            }
        }
    }

    /// The smallest id a task spawned after attach can have: tokio's counter at the
    /// first reading, or the smallest id a spawn event carried.
    fn first_id_after_attach(&self) -> u64 {
        let counter = self.task_ids.first.map_or(u64::MAX, |(_, next)| next);
        self.min_spawned_id.min(counter)
    }

    /// Id draws never joined to a task by the end of the window.
    pub(in crate::model) fn finish_pending_ids(&mut self) {
        self.diagnostics.spawn_ids_unjoined += self.pending_ids.len() as u64;
        self.pending_ids.clear();
    }

    /// When `t` can be folded: its end, if it finished healthy long enough ago that no
    /// event still in the ring, no reading and no detector can change what the report
    /// says of it. `last`: the latest complete reading (its number, start, end, lists).
    /// `ended_by`: the latest end a fold takes (none past the window's end).
    fn fold_end(
        &self,
        t: &Task,
        last: Option<(u32, u64, u64, &[u64])>,
        ended_by: u64,
    ) -> Option<u64> {
        let ended = t
            .completed_ns
            .get()
            .into_iter()
            .chain(t.freed_ns.get())
            .min()?;
        if ended > ended_by
            || t.is_plumbing()
            // A blocking poll is reported with its task.
            || t.longest_poll_ns >= self.thresholds.stuck_after_ns
            || t.rare().frozen.is_some_and(|j| j.verdict != Verdict::Ok || j.certainty.is_some())
        {
            return None;
        }
        if let Some((number, start, end, owners)) = last {
            // The alive check counts what the last reading listed, and what it should have.
            let checked = t.kind != TaskKind::Blocking && owners.contains(&t.owner_id);
            if t.listed_in == number || (checked && self.alive_during(t, start, end).0) {
                return None;
            }
        }
        Some(ended)
    }

    /// Folds every finished healthy task into its site's aggregate (`fold`), keeping the
    /// others in order, and renumbers what holds task indices. Runs when the held tasks
    /// reach `fold.next_at`, which then doubles the tasks kept: O(1) per task. `last_fold`:
    /// the window has ended (no event can come): every such task but the latest
    /// `RECENT_KEPT` is folded, whenever it ended.
    pub(in crate::model) fn fold_finished(&mut self, last_fold: bool) {
        let n = self.tasks.len();
        let mut pinned = vec![false; n];
        for f in self.stacks.values().flatten() {
            pinned[f.task] = true;
        }
        for &i in self
            .sampled
            .values()
            .map(|s| &s.task)
            .chain(self.replaced_by_reading.values())
            .chain(self.listed_unspawned.values())
        {
            pinned[i] = true;
        }
        let mut indexed = vec![0u8; n];
        for i in self.live.values() {
            indexed[i] |= 1;
        }
        for i in self.by_id.values() {
            indexed[i] |= 2;
        }
        let last = self
            .last_reading
            .as_ref()
            .map(|(number, start, end, owners)| (*number, *start, *end, owners.as_slice()));
        let ended_by = if last_fold {
            u64::MAX
        } else {
            self.latest_ns.saturating_sub(FOLD_AFTER_NS)
        };
        let mut ends: Vec<Option<u64>> = (0..n)
            .map(|i| {
                (!pinned[i])
                    .then(|| self.fold_end(&self.tasks[i], last, ended_by))
                    .flatten()
            })
            .collect();
        if last_fold {
            // The latest finished tasks stay, for a reader who wants some in full.
            for e in ends
                .iter_mut()
                .rev()
                .filter(|e| e.is_some())
                .take(RECENT_KEPT)
            {
                *e = None;
            }
        }
        // A folded task's site is final: where the code names it, as `finish` would.
        for (i, end) in ends.iter().enumerate() {
            let t = &self.tasks[i];
            if end.is_some()
                && t.site == 0
                && t.vtable != 0
                && let Some(site) = self.code_site_of_vtable(t.vtable)
            {
                let slot = self.intern_site(Some(site));
                let t = &mut self.tasks[i];
                t.site = slot;
                t.site_source = SiteSource::Code;
            }
        }
        let attach = self.attach_reading_at.is_some();
        let first = self.min_spawned_id;
        let mut fold = std::mem::take(&mut self.fold);
        let mut remap = vec![u32::MAX; n];
        let (mut i, mut kept) = (0usize, 0u32);
        self.tasks.retain(|t| {
            let at = i;
            i += 1;
            let Some(ended) = ends[at] else {
                remap[at] = kept;
                kept += 1;
                return true;
            };
            let unspawned = attach && !t.before_attach && t.spawned_ns.is_none() && t.id != 0;
            if unspawned && t.id < first {
                fold.undecided.push((t.site, t.id));
            }
            fold.add(t, ended, t.before_attach);
            if indexed[at] & 1 != 0 && t.freed_ns.is_none() {
                fold.tombstones.insert(t.header, t.id);
            }
            false
        });
        fold.next_at = fold.floor.max(2 * self.tasks.len());
        self.tasks.shrink_to(fold.next_at);
        self.fold = fold;
        let new = |i: usize| remap[i] as usize;
        self.live.clear();
        self.by_id.clear();
        for (old, &flags) in indexed.iter().enumerate() {
            if remap[old] == u32::MAX {
                continue;
            }
            if flags & 1 != 0 {
                self.live.insert(new(old), &self.tasks);
            }
            if flags & 2 != 0 {
                self.by_id.insert(new(old), &self.tasks);
            }
        }
        for f in self.stacks.values_mut().flatten() {
            f.task = new(f.task);
        }
        for s in self.sampled.values_mut() {
            s.task = new(s.task);
        }
        for i in self
            .replaced_by_reading
            .values_mut()
            .chain(self.listed_unspawned.values_mut())
        {
            *i = new(*i);
        }
        // A reading started this long ago has been applied: its frees are settled.
        let settled = self.latest_ns.saturating_sub(5 * FOLD_AFTER_NS);
        self.freed_since_reading.retain(|_, &mut at| at >= settled);
    }

    /// Finished healthy tasks folded away, per site index.
    pub fn folded(&self) -> &Fold {
        &self.fold
    }

    /// Folds from `held` tasks on instead of `FOLD_FLOOR` (tests: a small window folds).
    #[cfg(test)]
    pub fn fold_at(&mut self, held: usize) {
        self.fold.next_at = held;
        self.fold.floor = held;
    }

    fn insert(&mut self, task: Task) -> usize {
        let i = self.tasks.len();
        if !self.fold.tombstones.is_empty() {
            self.fold.tombstones.remove(&task.header);
        }
        if task.owner_id != 0 {
            self.owners.insert(task.owner_id);
        }
        self.alive += 1;
        let by_id = self.polls_sampled && task.id != 0;
        self.tasks.push(task);
        if by_id {
            self.by_id.insert(i, &self.tasks);
        }
        self.live.insert(i, &self.tasks);
        if let Some((ts, site, source)) = self.pending_ids.remove(&self.tasks[i].id) {
            self.join_spawn(i, ts, site, source);
        }
        i
    }

    /// A finished task leaves the id index: samples only look for tasks that can still
    /// run, and the index stays the size of the live population instead of growing with
    /// every task a spawn-heavy target ever ran (its rehashes dominated the tracer's CPU).
    fn forget_id(&mut self, i: usize) {
        let id = self.tasks[i].id;
        if self.polls_sampled && id != 0 && self.by_id.get(id, &self.tasks) == Some(i) {
            self.by_id.remove(id, &self.tasks);
        }
    }

    /// The task at this address is gone although its dealloc was never seen.
    fn retire(&mut self, i: usize, ts: u64) {
        self.alive = self
            .alive
            .saturating_sub(usize::from(!self.tasks[i].is_finished()));
        self.forget_id(i);
        let t = &mut self.tasks[i];
        t.freed_ns.set_if_none(ts);
        let header = t.header;
        self.live.remove(header, &self.tasks);
    }
}

/// What one task-list reading says of a task's polls when no probe sees them (lifecycle
/// mode). A task starts notified, so one found idle or running was polled; a `Core` that
/// changed since the previous reading was polled in between (its future moved), and a
/// task whose `Core` did not change was not, as far as anyone can tell from outside.
fn lifecycle_reading(t: &mut Task, status: Status, changed: bool, at: u64, attach: bool) {
    let active = changed || status == Status::Running;
    if active || (status == Status::Idle && t.polls == 0 && !t.before_attach) {
        t.polls = t.polls.max(1);
        t.last_poll_end_ns = Stamp::at(at);
    }
    match status {
        // Not waiting to run: any wake seen before was served.
        Status::Idle | Status::Running => t.scheduled_since = Stamp::NONE,
        // Polled since the last reading: whatever wake it waits on is newer than that.
        Status::Notified if changed => t.scheduled_since = Stamp::at(at),
        _ => {}
    }
    // Running in two readings with nothing changed in between: one poll, at least since
    // the first (the thread sampler sees the same with 100 ms resolution where it can
    // read the thread; a thread asleep inside a poll may never have been recorded).
    if status == Status::Running {
        match t.rare().running_at_attach.get() {
            Some(since) if !changed => {
                if t.running_since.is_none() {
                    t.running_since = Stamp::at(since);
                    t.running_tid = 0;
                }
            }
            _ => t.rare_mut().running_at_attach = Stamp::at(at),
        }
    } else {
        if let Some(r) = t.rare_if_any() {
            r.running_at_attach = Stamp::NONE;
        }
        if t.running_tid == 0 && t.running_since.take().is_some() {
            t.last_poll_end_ns = Stamp::at(at);
        }
    }
    if attach && status == Status::Idle {
        t.last_poll_end_ns.set_if_none(at);
    }
}
