//! The report: built once from the aggregator's final state, then rendered as JSON
//! (`docs/report-format.md`) or as the text summary. Renderers only read it.

pub mod compare;
mod compare_html;
mod html;
pub mod metrics;
mod perfetto;
mod pprof;
mod sites;
mod text;
pub mod top;

use serde::Serialize;

pub use compare_html::render_compare_html;
pub use html::render_html;
pub use perfetto::render_perfetto;
pub use pprof::{render_pprof, render_pprof_of};
pub use sites::SpawnSite;
pub use text::render_text;

use crate::{
    model::{
        Aggregator, Diagnostics, LongPoll, Stamp, TaskKind, TaskState,
        verdict::{Certainty, Judgement, Reason, Thresholds, Verdict},
    },
    plan::{AttachMode, Unavailable},
    stream::{EndRecord, EndedBy, MetaRecord, TargetInfo},
};

/// A string from the target (a path in a `Location`, a symbol, a future type) made safe
/// for a terminal: control characters (escape sequences, newlines that would forge a
/// line of the report) are shown as `\u{..}` instead of acting.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

pub const SCHEMA: &str = "tasktrace.report/1";

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub target: TargetInfo,
    pub window: Window,
    pub thresholds: ThresholdsMs,
    pub probes: ProbeInfo,
    pub summary: Summary,
    pub tasks: Vec<TaskReport>,
    pub spawn_sites: Vec<SpawnSite>,
    pub long_polls: Vec<LongPollReport>,
    /// Every poll that blocked its thread for at least `stuck_after`: ended ones and the
    /// ones still in progress when judged, by thread.
    pub stuck_polls: Vec<StuckPoll>,
    /// Ended polls of async and local tasks by duration.
    pub poll_histogram: Vec<HistogramBucket>,
    pub diagnostics: Diagnostics,
    pub warnings: Vec<String>,
    /// Verdicts and signals this binary cannot give, and why (e.g. spawn sites of a
    /// stripped binary); what is listed here is absent, not zero.
    pub unavailable: Vec<Unavailable>,
    /// Where the tasks' await chains came from (`source`, `file`), or why there are none
    /// (`unavailable`); `null` when no reading read them (a window that ended with its
    /// target).
    pub await_chains: Option<crate::stream::records::AwaitsFrom>,
    /// Every poll and instant, when a timeline was requested (`--perfetto`).
    #[serde(skip)]
    pub timeline: Option<TimelineView>,
}

#[derive(Debug, Serialize)]
pub struct StuckPoll {
    pub task_id: u64,
    pub thread: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The poll was still running when the task was judged.
    pub in_progress: bool,
}

#[derive(Debug, Serialize)]
pub struct HistogramBucket {
    /// Polls shorter than this many microseconds (and at least half of it).
    pub below_us: u64,
    pub polls: u64,
}

/// The aggregator's timeline with task ids and window-relative times.
#[derive(Debug, Default)]
pub struct TimelineView {
    /// (task id, start, end, thread).
    pub polls: Vec<(u64, u64, u64, u32)>,
    /// (task id, time, what).
    pub instants: Vec<(u64, u64, &'static str)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// CLOCK_MONOTONIC at the start of the window; every `*_ns` field below is relative to it.
    pub start_monotonic_ns: u64,
    pub duration_ns: u64,
    /// `duration`, `target_exit`, `interrupted` or `truncated`.
    pub ended_by: EndedBy,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThresholdsMs {
    pub leak_after_ms: u64,
    pub stuck_after_ms: u64,
    pub never_polled_after_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeInfo {
    pub sites: usize,
    /// `multi`: one uprobe_multi link per program; `perf`: one perf-event link per site.
    pub attach: AttachMode,
    pub attach_ms: f64,
    pub detach_ms: f64,
    /// `full` or `lifecycle` (`--mode`).
    pub mode: String,
    /// Sites whose probed instruction the kernel emulates (~1 µs a hit) and sites it
    /// single-steps (~12 µs), after placement.
    pub emulated: usize,
    pub single_stepped: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub tasks_seen: u64,
    /// Tasks that finished healthy and were counted per spawn site instead of listed in
    /// `tasks` (`--keep recent`, once the model held 100 000 tasks); included in
    /// `tasks_seen`, `completed`, `ok` and the sites' counts.
    pub folded: u64,
    pub alive: u64,
    pub completed: u64,
    pub leaked: u64,
    /// Leaked tasks proven unable to ever run again.
    pub leaked_definite: u64,
    /// Tasks found in the runtimes' own task lists at attach (alive before it).
    pub alive_before_attach: u64,
    pub stuck: u64,
    pub never_polled: u64,
    /// Flagged on evidence that spans lost events no reading settled (`certainty:
    /// "uncertain"`): counted here, not under their verdict.
    pub uncertain: u64,
    pub ok: u64,
    pub long_polls: u64,
    pub lost_events: u64,
    pub runtime_plumbing: u64,
    /// Tasks spawned between the first and the last reading of tokio's task-id counter
    /// (every spawn, the ones too short for any reading included), and over how long:
    /// `null` where the counter's symbol is unknown (stripped binaries).
    pub spawned: Option<SpawnCount>,
    /// Sample mode: how long its spawn probes were attached (`null` in other modes).
    pub spawn_probes: Option<SpawnProbes>,
}

/// Sample mode's spawn probes over the window (`cmd::spawn_gate`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SpawnProbes {
    /// The most spawns a second they were to probe (`--spawn-budget`).
    pub budget: u64,
    pub armed_ns: u64,
    /// `armed_ns` over the window.
    pub armed_fraction: f64,
    /// Times they were detached because the target spawned faster than the budget.
    pub disarms: u32,
    /// The highest spawn rate they were detached at.
    pub peak_rate: Option<f64>,
}

/// What tokio's task-id counter says was spawned.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SpawnCount {
    pub tasks: u64,
    pub over_ns: u64,
    pub per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct TaskReport {
    pub id: u64,
    /// Task header address, written as hex (`"0x7f…"`).
    #[serde(serialize_with = "hex")]
    pub header: u64,
    pub kind: TaskKind,
    pub verdict: Verdict,
    pub reason: Reason,
    /// `definite` or `suspected` for `leaked`; `uncertain` for any verdict resting on
    /// lost events; `null` otherwise.
    pub certainty: Option<Certainty>,
    /// How long the condition behind the verdict had lasted when judged.
    pub for_ns: u64,
    pub judged_at_ns: u64,
    pub state: TaskState,
    pub polls: u64,
    pub wakes: u64,
    pub busy_ns: u64,
    pub longest_poll_ns: u64,
    /// `null` when the task existed before tracing began.
    pub spawned_at_ns: Stamp,
    /// Where it was spawned: `file:line:col`, `function+0xoff`, or `null` when unknown.
    pub spawned_at: Option<std::sync::Arc<str>>,
    /// How `spawned_at` was found: `probe` (a spawn call's Location or caller), `code`
    /// (the place the code spawns its future type from, or the Location the spawning code
    /// loads), `stack` (a stack copy unwound), `learned` (spawned unprobed: the one site
    /// the probes saw its future type spawned at); `null` when unknown.
    pub site_source: crate::model::SiteSource,
    /// The future's type (`myapp::handlers::analytics::{closure#0}`), when the binary's
    /// symbols carry it.
    pub future: Option<std::sync::Arc<str>>,
    pub first_seen_ns: u64,
    pub last_poll_end_ns: Stamp,
    pub completed_at_ns: Stamp,
    pub freed: bool,
    pub freed_at_ns: Stamp,
    pub cancelled: bool,
    pub cancelled_by_shutdown: bool,
    pub runtime_plumbing: bool,
    /// It existed before tracing began: found in its runtime's task list at attach, or
    /// (a blocking task, in no list, or one that ended before that reading) its id is
    /// older than every spawn the probes saw.
    pub alive_before_attach: bool,
    /// From the last reading of its state word (`null` if none was read): its reference
    /// count, and whether a JoinHandle still holds it.
    pub refs: Option<u32>,
    pub join_handle: Option<bool>,
    /// Where it was parked at the last reading that read chains (the window's end): its
    /// async fn frames and the leaf it waits on; `null` when none was read (see
    /// `await_chains`).
    pub await_chain: Option<std::sync::Arc<crate::stream::records::AwaitChain>>,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:#x}"))
}

impl TaskReport {
    /// Its verdict as counted: an uncertain one (resting on lost events) is no verdict.
    pub fn counted_verdict(&self) -> Verdict {
        if self.uncertain() {
            Verdict::Ok
        } else {
            self.verdict
        }
    }

    /// Flagged on evidence spanning events the kernel lost that no reading settled.
    pub fn uncertain(&self) -> bool {
        self.certainty == Some(Certainty::Uncertain)
    }

    /// When the task stopped being alive (completed or freed), relative to the window.
    pub fn ended_at_ns(&self) -> Option<u64> {
        self.completed_at_ns
            .get()
            .into_iter()
            .chain(self.freed_at_ns.get())
            .min()
    }
}

#[derive(Debug, Serialize)]
pub struct LongPollReport {
    pub task_id: u64,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub thread: u32,
}

pub struct Meta {
    pub target: TargetInfo,
    pub start_ns: u64,
    pub end_ns: u64,
    pub ended_by: EndedBy,
    pub probes: ProbeInfo,
    pub lost_events: u64,
    pub warnings: Vec<String>,
    pub unavailable: Vec<Unavailable>,
}

impl Meta {
    /// The report's view of a window, from its first and last records: the one way both a
    /// live window and a replayed recording describe themselves.
    pub fn of_window(meta: &MetaRecord, end: &EndRecord) -> Self {
        let summary = &meta.summary;
        let mut warnings = meta.warnings.clone();
        warnings.extend(end.warnings.iter().cloned());
        Self {
            target: meta.target.clone(),
            start_ns: meta.start_ns,
            end_ns: end.end_ns,
            ended_by: end.ended_by,
            probes: ProbeInfo {
                sites: meta.probe_sites,
                attach: meta.attach,
                attach_ms: meta.attach_ms,
                detach_ms: end.detach_ms,
                mode: summary.mode.as_str().into(),
                emulated: summary.emulated,
                single_stepped: summary.single_stepped,
            },
            lost_events: end.lost_events,
            warnings,
            unavailable: summary.unavailable.clone(),
        }
    }
}

impl Report {
    /// Consumes the aggregator: each task is turned into its report entry and dropped, so
    /// the peak holds one copy of every task, not two (a million tasks cost ~160 MiB each).
    pub fn build(mut agg: Aggregator, meta: Meta) -> Self {
        agg.finish();
        agg.diagnostics.alive_check = agg.alive_check().map(|mut c| {
            c.at_ns = c.at_ns.saturating_sub(meta.start_ns);
            c.until_ns = c.until_ns.saturating_sub(meta.start_ns);
            c
        });
        let th: Thresholds = *agg.thresholds();
        let rel = |ns: u64| ns.saturating_sub(meta.start_ns);
        agg.diagnostics.lost_spans = agg
            .losses()
            .iter()
            .map(|&(s, e)| (rel(s), rel(e)))
            .collect();
        agg.diagnostics.stopped_spans =
            agg.stops().iter().map(|&(s, e)| (rel(s), rel(e))).collect();
        let mut summary = Summary {
            lost_events: meta.lost_events,
            spawned: agg.task_ids.spawned().map(|(tasks, over_ns)| SpawnCount {
                tasks,
                over_ns,
                per_second: if over_ns > 0 {
                    tasks as f64 * 1e9 / over_ns as f64
                } else {
                    0.0
                },
            }),
            spawn_probes: agg.spawn_probing.map(|p| {
                let armed_ns = p.armed_by(meta.end_ns);
                let window = meta.end_ns.saturating_sub(meta.start_ns);
                SpawnProbes {
                    budget: p.budget,
                    armed_ns,
                    armed_fraction: if window > 0 {
                        (armed_ns as f64 / window as f64).min(1.0)
                    } else {
                        0.0
                    },
                    disarms: p.disarms,
                    peak_rate: p.peak_rate,
                }
            }),
            ..Default::default()
        };
        // Needs the tasks by index: before they are consumed.
        let timeline = agg.timeline.as_ref().map(|tl| TimelineView {
            polls: tl
                .polls
                .iter()
                .map(|&(i, s, e, tid)| (agg.tasks[i].id, rel(s), rel(e), tid))
                .collect(),
            instants: tl
                .instants
                .iter()
                .map(|&(i, ts, w)| (agg.tasks[i].id, rel(ts), w))
                .collect(),
        });
        let mut model = agg.take_tasks();
        let mut tasks = Vec::with_capacity(model.len());
        let mut in_progress = Vec::new();
        // Last task first, giving back the model's memory as the reports grow.
        while let Some(t) = model.pop() {
            if model.len().is_multiple_of(65_536) {
                model.shrink_to_fit();
            }
            let j: Judgement = agg.final_judgement(&t, meta.end_ns);
            summary.tasks_seen += 1;
            if t.is_finished() {
                summary.completed += 1;
            } else {
                summary.alive += 1;
            }
            if t.is_plumbing() {
                summary.runtime_plumbing += 1;
            }
            summary.alive_before_attach += u64::from(t.before_attach);
            match j.verdict {
                _ if j.certainty == Some(Certainty::Uncertain) => summary.uncertain += 1,
                Verdict::Leaked => {
                    summary.leaked += 1;
                    summary.leaked_definite += u64::from(j.certainty == Some(Certainty::Definite));
                }
                Verdict::Stuck => summary.stuck += 1,
                Verdict::NeverPolled => summary.never_polled += 1,
                Verdict::Ok => summary.ok += 1,
            }
            if j.reason == Reason::BlockingPoll
                && let Some(start) = t.running_since.get()
            {
                in_progress.push(StuckPoll {
                    task_id: t.id,
                    thread: t.running_tid,
                    start_ns: rel(start),
                    end_ns: rel(j.at_ns),
                    in_progress: true,
                });
            }
            tasks.push(TaskReport {
                id: t.id,
                header: t.header,
                kind: t.kind,
                verdict: j.verdict,
                reason: j.reason,
                certainty: j.certainty,
                for_ns: j.for_ns,
                judged_at_ns: rel(j.at_ns),
                state: t.state(),
                polls: t.polls,
                wakes: t.wakes,
                busy_ns: t.busy_ns,
                longest_poll_ns: t.longest_poll_ns,
                spawned_at_ns: t.spawned_ns.map(rel),
                // Shared with the model: a million tasks of one site hold one string.
                spawned_at: agg.site_name(t.site).cloned(),
                site_source: t.site_source,
                future: agg.futures.get(&t.vtable).cloned(),
                first_seen_ns: rel(t.first_seen_ns),
                last_poll_end_ns: t.last_poll_end_ns.map(rel),
                completed_at_ns: t.completed_ns.map(rel),
                freed: t.freed_ns.is_some(),
                freed_at_ns: t.freed_ns.map(rel),
                cancelled: t.cancelled,
                cancelled_by_shutdown: t.rare().shutdown_ns.is_some(),
                runtime_plumbing: t.is_plumbing(),
                alive_before_attach: t.before_attach,
                refs: t.refs(),
                join_handle: t.join_handle,
                await_chain: t.rare().await_chain.clone(),
            });
        }
        drop(model);
        tasks.reverse();
        in_progress.reverse();
        let long_polls: Vec<_> = agg
            .long_polls
            .iter()
            .map(|p: &LongPoll| LongPollReport {
                task_id: p.task_id,
                start_ns: rel(p.start_ns),
                duration_ns: p.duration_ns,
                thread: p.tid,
            })
            .collect();
        summary.long_polls = long_polls.len() as u64;
        let window_ns = meta.end_ns.saturating_sub(meta.start_ns);
        let await_chains = agg.awaits_from.clone();
        let mut warnings = meta.warnings;
        if meta.lost_events > 0 {
            warnings.push(format!(
                "{} events lost: the ring buffer was full; raise --ring-size",
                meta.lost_events
            ));
        }
        let d = &agg.diagnostics;
        if d.definite_contradicted > 0 {
            warnings.push(format!(
                "{} task(s) proven unable to run were then polled or woken: tokio's reference \
                 counting differs from what this version file says; treat `definite` as suspected",
                d.definite_contradicted
            ));
        }
        let stopped_ns: u64 = d
            .stopped_spans
            .iter()
            .map(|&(s, e)| e.saturating_sub(s))
            .sum();
        if stopped_ns > 0 {
            warnings.push(format!(
                "the target was stopped (SIGSTOP or a debugger) for {:.1}s of the window: no task \
                 runs then, so that time counts toward no threshold",
                stopped_ns as f64 / 1e9
            ));
        }
        if summary.uncertain > 0 {
            warnings.push(format!(
                "{} verdict(s) are uncertain: their evidence spans events the kernel lost, and no \
                 task-list reading settled them (certainty \"uncertain\"; not counted as leaked, \
                 stuck or never polled)",
                summary.uncertain
            ));
        }
        if d.unmatched_poll_ends + d.address_reuse + d.unreadable_headers > 0 {
            warnings.push(format!(
                "stream anomalies: {} unmatched poll ends, {} address reuses, {} unreadable headers",
                d.unmatched_poll_ends, d.address_reuse, d.unreadable_headers
            ));
        }
        let folded = agg.folded();
        let folded_sites: Vec<(Option<&str>, &crate::model::fold::FoldedSite)> = (0..=agg
            .site_count())
            .filter_map(|i| Some((agg.site_name(i).map(|s| &**s), folded.site(i)?)))
            .collect();
        for (_, f) in &folded_sites {
            summary.tasks_seen += f.tasks;
            summary.completed += f.tasks;
            summary.ok += f.tasks;
            summary.folded += f.tasks;
            summary.alive_before_attach += f.before_attach;
        }
        let spawn_sites = sites::spawn_sites(
            &tasks,
            &folded_sites,
            window_ns,
            |t| folded.relative(meta.start_ns, t),
            |s| agg.site_poll_times(s),
        );
        let mut stuck_polls: Vec<StuckPoll> = long_polls
            .iter()
            .map(|p| StuckPoll {
                task_id: p.task_id,
                thread: p.thread,
                start_ns: p.start_ns,
                end_ns: p.start_ns + p.duration_ns,
                in_progress: false,
            })
            .collect();
        stuck_polls.extend(in_progress);
        let poll_histogram = agg
            .poll_times
            .by_power_of_two_us()
            .into_iter()
            .map(|(below_us, polls)| HistogramBucket { below_us, polls })
            .collect();
        Report {
            schema: SCHEMA,
            target: meta.target,
            window: Window {
                start_monotonic_ns: meta.start_ns,
                duration_ns: meta.end_ns.saturating_sub(meta.start_ns),
                ended_by: meta.ended_by,
            },
            thresholds: ThresholdsMs {
                leak_after_ms: th.leak_after_ns / 1_000_000,
                stuck_after_ms: th.stuck_after_ns / 1_000_000,
                never_polled_after_ms: th.never_polled_after_ns / 1_000_000,
            },
            probes: meta.probes,
            summary,
            tasks,
            spawn_sites,
            long_polls,
            stuck_polls,
            poll_histogram,
            diagnostics: agg.diagnostics_with_kinds(),
            warnings,
            unavailable: meta.unavailable,
            await_chains,
            timeline,
        }
    }

    pub fn count(&self, v: Verdict) -> u64 {
        match v {
            Verdict::Leaked => self.summary.leaked,
            Verdict::Stuck => self.summary.stuck,
            Verdict::NeverPolled => self.summary.never_polled,
            Verdict::Ok => self.summary.ok,
        }
    }
}

#[cfg(test)]
mod tests;
