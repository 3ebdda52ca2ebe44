//! The attach plan: which functions of the target get a probe, at which file offset, and
//! what each hit means (the cookie the kernel side decodes).

pub mod placement;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use serde::Serialize;
use tracer_common::{EventKind, HeaderArg, cookie};

use crate::{
    binary::elf::BinaryInfo,
    binary::locations::LocationTable,
    error::{Error, Result},
    tokio_versions::Knowledge,
};

/// One probe site.
#[derive(Clone, Debug, Serialize)]
pub struct Site {
    /// Function name (normalized).
    pub function: &'static str,
    /// The function's entry.
    pub vaddr: u64,
    /// Where the probe goes in the file (the entry, or a cheaper instruction after it).
    pub file_offset: u64,
    #[serde(skip)]
    pub cookie: u64,
    /// How the probed instruction runs; `None` until placed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::plan::placement::Placement>,
}

/// A future type whose spawn site the code names (`static_sites`): its spawn calls carry
/// no probe, its spawns take the site from their task vtable.
#[derive(Clone, Debug, Serialize)]
pub struct StaticSite {
    pub future: String,
    pub site: String,
    /// The future type's task vtables (file addresses).
    pub vtables: Vec<u64>,
}

/// A verdict or signal this binary cannot give, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Unavailable {
    pub what: String,
    pub why: String,
}

/// How much tasktrace watches, traded against what it costs the target.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every poll (one probe hit per poll where the thread sampler can tell when a poll
    /// ended), plus the lifecycle.
    #[default]
    Full,
    /// Spawn, completion, cancellation and deallocation only; which task each thread is
    /// polling is sampled, and task states are read from memory about once a second.
    Lifecycle,
    /// No uprobe at all: the task lists read from memory about once a second (every task
    /// that lives longer than that), tokio's task-id counter (how many were spawned) and
    /// the thread sampler. Its cost follows the live tasks, not the spawn or poll rate.
    Sample,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Lifecycle => "lifecycle",
            Mode::Sample => "sample",
        }
    }

    /// Polls are not probed: the task-list readings and the thread sampler stand for them.
    pub fn polls_sampled(self) -> bool {
        self != Mode::Full
    }
}

/// How the plan's sites are attached; the running kernel decides (`live::kernel`), or
/// `--attach` forces one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// One `uprobe_multi` link per program for every site (Linux 6.10+, or 6.6+ with the
    /// process-wide pid filter backported).
    #[default]
    Multi,
    /// One perf-event uprobe link per site, each with its attach cookie (Linux 5.15+).
    Perf,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Multi => "multi",
            AttachMode::Perf => "perf",
        }
    }
}

/// What the caller wants from the plan.
#[derive(Clone, Copy, Debug)]
pub struct PlanOpts {
    pub spawn_sites: bool,
    pub mode: Mode,
    /// Where the running kernel keeps a thread's TLS pointer in its `task_struct` (from
    /// its BTF; `live::kernel_btf`), if known: the thread sampler needs it. The plan
    /// is about the host it will run on, so the caller says.
    pub host_fsbase: Option<u64>,
    /// Capture await chains from the stack at waker clones (full mode only: the binary
    /// has no type information to read them with).
    pub await_stacks: bool,
}

/// Where tokio keeps the id of the task a thread is polling, relative to the thread's TLS
/// pointer: what the thread sampler reads.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize)]
pub struct CurrentTask {
    /// Offset from `fsbase` of `CONTEXT.current_task_id` (of its tag word when `tagged`).
    pub fsbase_offset: i64,
    pub tagged: bool,
}

/// Sites for the entry program and for the return program.
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    /// How the sites were found: `symbols`, or `vtable scan` in a stripped binary.
    pub tier: &'static str,
    /// Task completion is observed by a probe; when not (stripped), it is inferred from
    /// the task-list readings (a finished task leaves its runtime's list).
    pub completion_probed: bool,
    /// Wakes are observed by a probe.
    pub wakes_probed: bool,
    pub mode: Mode,
    /// Poll starts are observed by a probe (not in lifecycle mode).
    pub polls_probed: bool,
    /// Poll ends are observed by a return probe; when not, a poll ends at the thread's
    /// next event or when the thread sampler sees the thread elsewhere.
    pub poll_ends_probed: bool,
    /// Target threads are sampled for the task they are polling (`current_task`).
    pub thread_sampling: bool,
    pub current_task: Option<CurrentTask>,
    /// Verdicts and signals this binary cannot give.
    pub unavailable: Vec<Unavailable>,
    /// Copy this many bytes of user stack at spawn probes, to name spawn sites by
    /// unwinding where no spawn function survived inlining (0: spawn sites are off).
    pub stack_bytes: u32,
    /// Waker clones are probed to copy the stack at each new await point: the binary's
    /// code range (file addresses), which the kernel side keys the points by.
    #[serde(skip)]
    pub await_stacks: Option<tracer_common::TextRange>,
    pub entry: Vec<Site>,
    #[serde(rename = "return")]
    pub ret: Vec<Site>,
    /// Functions the plan would use but the binary lacks (not fatal for optional ones).
    pub absent: Vec<&'static str>,
    /// Spawn sites named from the code, whose spawn calls need no probe.
    pub static_sites: Vec<StaticSite>,
    /// Probed task-id draws (`spawn_ids`), indexed by the site number their events carry:
    /// spawn paths no other spawn probe covers.
    pub id_sites: Vec<crate::binary::spawn_ids::IdSite>,
    /// Task-id draws found in the code: one per spawn path instance.
    pub id_draws: usize,
    /// File address of tokio's task-id counter, read with every task-list reading: how
    /// many tasks were spawned (sample mode's only spawn count).
    pub id_counter: Option<u64>,
    /// Its value in the file: what it holds when the program starts (a launched target's
    /// first reading, taken before its first instruction).
    pub id_counter_initial: Option<u64>,
    /// Task vtables whose spawn site the code shows (`spawn_ids::vtable_sites`): names
    /// the site of tasks no spawn probe saw, those alive before attach included.
    pub vtable_sites: Vec<VtableSite>,
    /// The spawn sites are attached only while the spawn gate says (sample mode); the
    /// others ([`Plan::always_attached`]: runtime shutdown) stay attached all along.
    pub spawns_gated: bool,
}

/// A task vtable (file address) and where its tasks are spawned.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct VtableSite {
    pub vtable: u64,
    pub site: String,
}

/// What the model and the report need of a plan, typed: recorded in the trace file's
/// metadata, so that a replay configures the model exactly as the live window did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PlanSummary {
    pub mode: Mode,
    /// Completions are probed; when not (stripped), a task that leaves its runtime's list
    /// between two readings has finished.
    pub completion_probed: bool,
    pub polls_probed: bool,
    /// When polls are probed but not their ends, a poll ends at the thread's next event.
    pub poll_ends_probed: bool,
    /// Per probed task-id draw (the site number its events carry): the site the code
    /// shows there.
    pub id_sites: Vec<Option<String>>,
    /// Future type → its one spawn site, for types spawned from one place.
    pub static_sites: Vec<(String, String)>,
    /// Probe sites run emulated / single-stepped.
    pub emulated: usize,
    pub single_stepped: usize,
    pub unavailable: Vec<Unavailable>,
}

impl PlanSummary {
    /// A plan whose probes see everything (synthetic recordings, tests).
    pub fn all_probed() -> Self {
        Self {
            completion_probed: true,
            polls_probed: true,
            poll_ends_probed: true,
            ..Default::default()
        }
    }
}

impl Plan {
    pub fn summary(&self) -> PlanSummary {
        let (emulated, single_stepped) = self.execution_counts();
        PlanSummary {
            mode: self.mode,
            completion_probed: self.completion_probed,
            polls_probed: self.polls_probed,
            poll_ends_probed: self.poll_ends_probed,
            id_sites: self.id_sites.iter().map(|s| s.site.clone()).collect(),
            static_sites: self
                .static_sites
                .iter()
                .map(|s| (s.future.clone(), s.site.clone()))
                .collect(),
            emulated,
            single_stepped,
            unavailable: self.unavailable.clone(),
        }
    }

    /// Task vtables (file addresses) whose tasks' spawn site the code shows: the vtable
    /// sites and the future types spawned from one place.
    pub fn code_sites(&self) -> impl Iterator<Item = (u64, String)> + '_ {
        self.vtable_sites
            .iter()
            .map(|v| (v.vtable, v.site.clone()))
            .chain(
                self.static_sites
                    .iter()
                    .flat_map(|s| s.vtables.iter().map(move |&v| (v, s.site.clone()))),
            )
    }

    /// Await chains from the stack: tokio's waker clone, found by its symbol or, stripped,
    /// in the waker vtable the scan recognises. Each site's cookie carries its own file
    /// address (the kernel side derives the load bias from it).
    fn add_clone_sites(&mut self, bin: &BinaryInfo, table: &LocationTable, k: &Knowledge) {
        let is_clone =
            |s: &Site| tracer_common::cookie_kind(s.cookie) == EventKind::WakerClone as u8;
        if !self.entry.iter().any(is_clone) {
            let slot = k.layout.slots.waker_clone;
            for waker in table.scan_waker_vtables(1u64 << k.refs.ref_shift, &k.layout) {
                if let Some(vaddr) = table.vtable_slot(waker, slot.index)
                    && let Some(file_offset) = bin.file_offset(vaddr)
                {
                    self.entry.push(Site {
                        function: slot.label,
                        vaddr,
                        file_offset,
                        cookie: tracer_common::clone_cookie(vaddr),
                        placement: None,
                    });
                }
            }
            self.entry.sort_by_key(|s| (s.vaddr, s.cookie));
            self.entry.dedup_by_key(|s| (s.vaddr, s.cookie));
        }
        let mut any = false;
        for s in self.entry.iter_mut() {
            if is_clone(s) {
                s.cookie = tracer_common::clone_cookie(s.vaddr);
                any = true;
            }
        }
        let text = table.text_range();
        self.await_stacks = match (any, text) {
            (true, Some(r)) => Some(tracer_common::TextRange {
                lo: r.start,
                hi: r.end,
            }),
            _ => None,
        };
        if self.await_stacks.is_none() {
            self.entry.retain(|s| !is_clone(s));
        }
    }

    pub fn site_count(&self) -> usize {
        self.entry.len() + self.ret.len()
    }

    /// Whether this site stays attached while the spawn gate detaches the others
    /// (sample mode's runtime-shutdown probes).
    pub fn always_attached(&self, site: &Site) -> bool {
        self.spawns_gated
            && EventKind::from_u8(tracer_common::cookie_kind(site.cookie))
                == Some(EventKind::Shutdown)
    }

    /// Builds the plan for a binary with symbols. Refuses binaries whose symbols cannot
    /// support the verdicts (stripped, not tokio, required functions missing).
    pub fn for_binary(
        path: &Path,
        bin: &BinaryInfo,
        k: &Knowledge,
        opts: PlanOpts,
    ) -> Result<Self> {
        let spawn_sites = opts.spawn_sites;
        if !bin.has_symtab && bin.tokio_version.is_none() {
            return Err(Error::NotTokio {
                path: path.to_owned(),
            });
        }
        if !bin.has_symtab {
            return Err(Error::Stripped {
                path: path.to_owned(),
                tokio_version: bin.tokio_version.map(|v| v.to_string()),
            });
        }
        if bin.tokio_symbols == 0 {
            return Err(Error::NotTokio {
                path: path.to_owned(),
            });
        }
        let s = &k.symbols;
        let current_task = current_task(bin, k, opts.host_fsbase);
        // One hit per poll: the sampler tells when a thread left its poll, so neither the
        // poll's return nor wakes need a probe. Without it, the classic three.
        let sampled = current_task.is_some();
        let lifecycle = opts.mode.polls_sampled();
        let mut plan = Plan {
            tier: "symbols",
            // Lifecycle mode reads the task lists every second anyway: an async task gone
            // from its list has completed, no probe needed (blocking tasks keep theirs).
            completion_probed: !lifecycle,
            mode: opts.mode,
            polls_probed: opts.mode == Mode::Full,
            poll_ends_probed: opts.mode == Mode::Full && !sampled,
            wakes_probed: opts.mode == Mode::Full && !sampled,
            thread_sampling: sampled,
            current_task,
            ..Default::default()
        };
        let mut missing = Vec::new();
        // (function, kind, where the header is, required, return probe)
        let await_stacks = opts.await_stacks && opts.mode == Mode::Full;
        let table: [(&'static str, EventKind, HeaderArg, bool, bool); 11] = [
            (
                s.raw_poll,
                EventKind::PollStart,
                HeaderArg::Arg0,
                true,
                false,
            ),
            (s.raw_poll, EventKind::PollEnd, HeaderArg::None, true, true),
            (
                s.harness_complete,
                EventKind::Complete,
                HeaderArg::Arg0,
                true,
                false,
            ),
            (
                s.raw_dealloc,
                EventKind::Dealloc,
                HeaderArg::Arg0,
                true,
                false,
            ),
            (
                s.raw_shutdown,
                EventKind::Shutdown,
                HeaderArg::Arg0,
                false,
                false,
            ),
            (
                s.owned_bind_inner,
                EventKind::Spawn,
                HeaderArg::Arg1,
                true,
                false,
            ),
            (
                s.blocking_spawn_task,
                EventKind::SpawnBlocking,
                HeaderArg::Arg1,
                false,
                false,
            ),
            (
                s.local_owned_bind,
                EventKind::SpawnLocal,
                s.local_bind_return,
                false,
                true,
            ),
            (
                s.wake_by_val,
                EventKind::WakeByVal,
                HeaderArg::Arg0,
                // Absent when no task ever builds a waker (then there is nothing to see).
                false,
                false,
            ),
            (
                s.wake_by_ref,
                EventKind::WakeByRef,
                HeaderArg::Arg0,
                // Absent when no task ever builds a waker (then there is nothing to see).
                false,
                false,
            ),
            (
                s.clone_waker,
                EventKind::WakerClone,
                HeaderArg::Arg0,
                false,
                false,
            ),
        ];
        for (function, kind, arg, required, is_return) in table {
            let wanted = match kind {
                EventKind::PollStart => plan.polls_probed,
                EventKind::PollEnd => plan.poll_ends_probed,
                EventKind::WakeByVal | EventKind::WakeByRef => plan.wakes_probed,
                EventKind::WakerClone => await_stacks,
                _ => true,
            };
            if !wanted {
                continue;
            }
            let addrs = bin.instances(function);
            if addrs.is_empty() {
                if required {
                    missing.push(function);
                } else if !plan.absent.contains(&function) {
                    plan.absent.push(function);
                }
                continue;
            }
            let mut found = sites(bin, function, kind, arg);
            if kind == EventKind::Complete && lifecycle {
                found.retain(|s| bin.blocking_instances.contains(&s.vaddr));
            }
            if is_return {
                plan.ret.extend(found)
            } else {
                plan.entry.extend(found)
            }
        }
        // One-hit polls: a worker's park ends its last poll (parks are rare under load).
        if plan.polls_probed && !plan.poll_ends_probed {
            for alternatives in s.parks {
                if let Some(kept) = alternatives
                    .iter()
                    .find(|alt| alt.iter().any(|f| !bin.instances(f).is_empty()))
                {
                    for &function in *kept {
                        plan.entry
                            .extend(sites(bin, function, EventKind::Park, HeaderArg::None));
                    }
                }
            }
        }
        // Spawn-site capture: optional, every instance that survived inlining.
        let spawn_calls = if spawn_sites { s.spawn_calls } else { &[] };
        plan.stack_bytes = if spawn_sites {
            tracer_common::STACK_COPY as u32
        } else {
            0
        };
        // `tokio::spawn` reaches the multi-thread `bind_new_task` for the same future type:
        // probing both costs a second hit per spawn for an answer the outer call already
        // gave. The inner one stays for futures no outer instance exists for (other spawn
        // paths); a spawn of such a future through an inlined path still gets its site
        // from the stack copy.
        let [outer, inner_spawn, inner] = crate::tokio_versions::SPAWN_PATHS;
        let outer_futures: std::collections::HashSet<&str> = [outer, inner_spawn]
            .iter()
            .flat_map(|f| bin.instances(f))
            .filter_map(|&a| bin.spawned_future(a))
            .collect();
        for &function in spawn_calls {
            let mut found = sites(bin, function, EventKind::SpawnCall, HeaderArg::None);
            if function == inner {
                found.retain(|s| {
                    bin.spawned_future(s.vaddr)
                        .is_none_or(|f| !outer_futures.contains(f))
                });
            }
            plan.entry.extend(found);
        }
        // bind_inner inlined into its only callers: take the spawn at their return. The
        // task may already have been polled by then; the aggregator merges the two.
        if missing.contains(&s.owned_bind_inner) {
            let before = plan.ret.len();
            for &(function, arg) in s.spawn_returns {
                plan.ret.extend(sites(bin, function, EventKind::Spawn, arg));
            }
            let found = plan.ret.len() > before;
            // Inlined all the way into the callers (fat LTO before 1.30): each spawn is
            // still seen where it draws its task id (`add_id_sites`), found by the
            // counter's symbol.
            if found || s.id_counter(&bin.tokio_data).is_some() {
                missing.retain(|m| *m != s.owned_bind_inner);
            }
        }
        // Identical functions may share one address: one probe per (address, meaning).
        for list in [&mut plan.entry, &mut plan.ret] {
            list.sort_by_key(|s| (s.vaddr, s.cookie));
            list.dedup_by_key(|s| (s.vaddr, s.cookie));
        }
        if !missing.is_empty() {
            missing.dedup();
            return Err(Error::MissingProbeSites {
                path: path.to_owned(),
                missing,
            });
        }
        plan.note_losses(k);
        Ok(plan)
    }

    /// What lifecycle mode, a missing thread sampler or the tokio version gives up: said
    /// in every report.
    fn note_losses(&mut self, k: &Knowledge) {
        self.note_mode_losses();
        for d in k.degraded {
            self.unavailable.push(Unavailable {
                what: d.what.into(),
                why: d.why.into(),
            });
        }
    }

    fn note_mode_losses(&mut self) {
        let m = self.mode.as_str();
        let mut lose = |what: &str, why: &str| {
            self.unavailable.push(Unavailable {
                what: what.into(),
                why: why.into(),
            })
        };
        if self.mode == Mode::Full && self.tier == "symbols" && !self.wakes_probed {
            lose(
                "wakes",
                "one probe hit per poll: wakes are not probed (no wake counts); a starved \
                 task (woken, not run) is found by the task-state readings, about 1 s apart",
            );
        }
        if self.mode == Mode::Sample {
            lose(
                "spawn and completion times",
                "sample mode probes spawns only while the target spawns fewer tasks a \
                 second than --spawn-budget (above it, for 0.1 s every 10 s or more), and no \
                 completion: a task spawned while the spawn probes are off is first seen by \
                 a task-list reading, about 1 s apart, so one that lives shorter than that \
                 is only counted (tokio's task-id counter); a task's end is known to within \
                 a reading, and a cancelled task cannot be told from a completed one \
                 (except those a runtime's shutdown cancels: that is probed)",
            );
            lose(
                "blocking-pool tasks",
                "sample mode probes no completion and spawn_blocking tasks are in no task \
                 list: they are not seen",
            );
            lose(
                "spawn sites of tasks spawned unprobed",
                "a task spawned while the spawn probes were off takes its site from the \
                 code (its future type's one spawn site; `inspect` lists them) or from \
                 spawns of its future type the probes saw (`learned`); other tasks have \
                 none",
            );
        }
        if self.mode.polls_sampled() {
            lose(
                "poll times",
                &format!(
                    "{m} mode probes no poll: no poll counts, durations or per-site \
                     percentiles, no long polls"
                ),
            );
            lose(
                "wakes",
                &format!(
                    "{m} mode probes no wake: a starved task (woken, not run) is seen by \
                     the task-state readings, about 1 s apart"
                ),
            );
            lose(
                "idle time",
                &format!(
                    "{m} mode cannot see a task's polls: `leaked` needs the state-word \
                     proof (definite) or a task whose future did not change between \
                     readings at least --leak-after apart (suspected)"
                ),
            );
            if !self.thread_sampling {
                lose(
                    "blocking polls",
                    "the thread sampler is unavailable (no kernel BTF, no tokio CONTEXT \
                     thread-local symbol, or a tokio before 1.22, whose thread context keeps \
                     no current task id): a blocking poll is seen by the task-list readings \
                     only (running in two readings a second apart, its future unchanged)",
                );
            }
        }
    }
}

/// Where the sampler finds `CONTEXT.current_task_id`: needs the thread-local's symbol in
/// the binary and the kernel's BTF (for each thread's TLS pointer).
fn current_task(bin: &BinaryInfo, k: &Knowledge, host_fsbase: Option<u64>) -> Option<CurrentTask> {
    host_fsbase?;
    let context = k.context.as_ref()?;
    let storage = bin.tls_offset(context.symbol)?;
    Some(CurrentTask {
        fsbase_offset: storage + context.task_id as i64,
        tagged: context.tagged,
    })
}

impl Plan {
    /// The plan for a binary: from its symbols, or, stripped, from a scan of its
    /// read-only data for task vtables (whose slots are the poll, dealloc and shutdown
    /// functions of every task type).
    pub fn choose(
        path: &Path,
        bin: &BinaryInfo,
        table: &LocationTable,
        k: &Knowledge,
        opts: PlanOpts,
    ) -> Result<Self> {
        let mut plan = if bin.has_symtab || bin.tokio_version.is_none() {
            Self::for_binary(path, bin, k, opts)?
        } else {
            Self::for_stripped(path, bin, table, k, opts.mode)?
        };
        let sample = opts.mode == Mode::Sample;
        if (plan.stack_bytes > 0 || sample) && bin.has_symtab {
            plan.name_sites_from_code(bin, table, k);
        }
        plan.add_id_sites(bin, table, k);
        // A stack whose frames nothing can name is not worth a probe hit per clone.
        if opts.await_stacks && opts.mode == Mode::Full && table.names_code() {
            plan.add_clone_sites(bin, table, k);
        }
        plan.id_counter = k.symbols.id_counter(&bin.tokio_data);
        plan.id_counter_initial = plan.id_counter.and_then(|v| table.u64_at(v));
        if sample {
            plan.keep_spawn_probes_only();
        }
        // Stripped: where the code names some spawn sites, say which are missing instead.
        let named = plan
            .id_sites
            .iter()
            .any(|s| s.site.is_some() || s.callers.iter().any(|c| c.1.is_some()))
            || !plan.vtable_sites.is_empty();
        if plan.tier == "vtable scan" && named {
            for u in plan
                .unavailable
                .iter_mut()
                .filter(|u| u.what == "spawn sites")
            {
                u.what = "some spawn sites".into();
                u.why = "the binary is stripped: a spawn's site is named where the code shows \
                         it (the Location its inlined spawn path loads, or its callers pass; \
                         `inspect` lists them); other spawns name the spawning code's file \
                         address (`stripped+0x…`: addr2line or --symbols on an unstripped copy)"
                    .into();
            }
        }
        plan.place(table);
        Ok(plan)
    }

    /// Sample mode: the sites were planned (so that the binary is known to be a tokio
    /// the version files describe, and the code's spawn sites are named); only the spawn
    /// sites stay, and those only while the session's spawn gate holds them attached
    /// (`cmd::spawn_gate`): no poll, completion or deallocation is probed. The runtime
    /// shutdown probes stay too, always attached: they fire only while a runtime shuts
    /// down (once per task it cancels), and without them a reading taken during the
    /// shutdown sees the cancelled leaks gone, as if they had finished.
    fn keep_spawn_probes_only(&mut self) {
        let spawn = |s: &Site| {
            matches!(
                EventKind::from_u8(tracer_common::cookie_kind(s.cookie)),
                Some(
                    EventKind::Spawn
                        | EventKind::SpawnLocal
                        | EventKind::SpawnBlocking
                        | EventKind::SpawnCall
                        | EventKind::SpawnId
                        | EventKind::Shutdown
                )
            )
        };
        self.entry.retain(spawn);
        self.ret.retain(spawn);
        self.completion_probed = false;
        self.spawns_gated = true;
    }

    /// Drops the spawn-call probes of future types whose every spawn call the code shows
    /// with one Location (`static_sites`): a hit per spawn saved. Only types a task vtable
    /// names qualify, since that is how a spawn event finds its site again.
    fn name_sites_from_code(&mut self, bin: &BinaryInfo, table: &LocationTable, k: &Knowledge) {
        if table.text().is_none() {
            return;
        }
        let mut vtables: HashMap<String, Vec<u64>> = HashMap::new();
        for v in table.task_vtables(bin.instances(k.symbols.raw_poll), &k.layout) {
            if let Some(f) = table.future_of_vtable(v.vaddr) {
                vtables.entry(f).or_default().push(v.vaddr);
            }
        }
        // Every instance of every spawn function, probed or not, grouped by future type.
        let mut groups: HashMap<String, Vec<u64>> = HashMap::new();
        let spawn_functions = k
            .symbols
            .spawn_calls
            .iter()
            .chain(crate::tokio_versions::SPAWN_PATHS.iter());
        for function in spawn_functions {
            for &vaddr in bin.instances(function) {
                if let Some(f) = table
                    .future_of_function(vaddr)
                    .filter(|f| vtables.contains_key(f))
                {
                    groups.entry(f).or_default().push(vaddr);
                }
            }
        }
        let mut groups: Vec<(String, Vec<u64>)> = groups.into_iter().collect();
        groups.sort();
        for (_, addrs) in &mut groups {
            addrs.sort_unstable();
            addrs.dedup();
        }
        let lists: Vec<Vec<u64>> = groups.iter().map(|g| g.1.clone()).collect();
        let found = crate::binary::static_sites::callers_in(table, &lists);
        let instances: HashSet<u64> = lists.iter().flatten().copied().collect();
        let address_taken = table.pointed_at_from_data(&instances);
        let mut skipped = HashSet::new();
        for ((future, addrs), callers) in groups.into_iter().zip(found) {
            if callers.other_references > 0 || addrs.iter().any(|a| address_taken.contains(a)) {
                continue;
            }
            let sites: Option<HashSet<String>> = callers
                .calls
                .iter()
                .map(|c| c.and_then(|a| table.location_at(a)))
                .collect();
            let Some(sites) = sites.filter(|s| s.len() == 1) else {
                continue;
            };
            skipped.extend(addrs);
            self.static_sites.push(StaticSite {
                vtables: vtables.remove(&future).unwrap_or_default(),
                future,
                site: sites.into_iter().next().unwrap_or_default(),
            });
        }
        self.entry.retain(|s| {
            EventKind::from_u8(tracer_common::cookie_kind(s.cookie)) != Some(EventKind::SpawnCall)
                || !skipped.contains(&s.vaddr)
        });
    }

    /// Probes the task-id draws of spawn paths that no spawn probe covers (inlined all the
    /// way into their caller, or every path in a stripped binary): every spawn then has
    /// a spawn event, whatever the compiler inlined.
    fn add_id_sites(&mut self, bin: &BinaryInfo, table: &LocationTable, k: &Knowledge) {
        let counter = k.symbols.id_counter(&bin.tokio_data);
        let draws = crate::binary::spawn_ids::find(table, counter, k.symbols.id_draw_retries);
        self.id_draws = draws.len();
        let is_spawn = |s: &Site| {
            matches!(
                EventKind::from_u8(tracer_common::cookie_kind(s.cookie)),
                Some(EventKind::Spawn | EventKind::SpawnBlocking | EventKind::SpawnLocal)
            )
        };
        let mut probed: HashSet<u64> = self
            .entry
            .iter()
            .chain(&self.ret)
            .filter(|s| is_spawn(s))
            .map(|s| s.vaddr)
            .collect();
        // No async spawn probe at all (every spawn path inlined): a function reaching the
        // blocking pool's probe may draw ids for async spawns too, so no draw is covered.
        let async_spawn_probed = self.entry.iter().chain(&self.ret).any(|s| {
            EventKind::from_u8(tracer_common::cookie_kind(s.cookie)) == Some(EventKind::Spawn)
        });
        if !async_spawn_probed {
            probed.clear();
        }
        // Every draw's site, probed or not: the vtables its path stores are named by it.
        let vtables: Vec<u64> = if bin.has_symtab {
            table.task_vtables(bin.instances(k.symbols.raw_poll), &k.layout)
        } else {
            table.scan_task_vtables(&k.layout)
        }
        .iter()
        .map(|v| v.vaddr)
        .collect();
        let vtable_set: HashSet<u64> = vtables.iter().copied().collect();
        let (described, points) =
            crate::binary::spawn_ids::describe_all(table, &draws, &vtable_set);
        self.vtable_sites = crate::binary::spawn_ids::vtable_sites(table, &points, &vtables)
            .into_iter()
            .map(|(vtable, site)| VtableSite { vtable, site })
            .collect();
        let uncovered: HashSet<u64> =
            crate::binary::spawn_ids::uncovered(table, draws.clone(), &probed)
                .iter()
                .map(|d| d.vaddr)
                .collect();
        for (d, site) in draws.into_iter().zip(described) {
            if !uncovered.contains(&d.vaddr) {
                continue;
            }
            let Some(file_offset) = bin.file_offset(d.vaddr) else {
                continue;
            };
            self.entry.push(Site {
                function: "task-id draw (spawn path inlined)",
                vaddr: d.vaddr,
                file_offset,
                cookie: tracer_common::id_cookie(
                    d.reg,
                    d.out_of_line.is_some(),
                    self.id_sites.len() as u32,
                ),
                placement: None,
            });
            self.id_sites.push(site);
        }
    }

    /// Moves each entry probe to the cheapest instruction that still sees what it reads
    /// (`placement`); return probes stay at the entry (they read the return address).
    fn place(&mut self, table: &LocationTable) {
        use iced_x86::Register;
        use tracer_common::{cookie_arg, cookie_kind};
        let stack_copy = self.stack_bytes > 0;
        for (list, is_return) in [(&mut self.entry, false), (&mut self.ret, true)] {
            for site in list.iter_mut() {
                let Some(code) = table.code(site.vaddr, 4096) else {
                    continue;
                };
                let kind = EventKind::from_u8(cookie_kind(site.cookie));
                let keeps = match cookie_arg(site.cookie) {
                    a if a == HeaderArg::Arg0 as u8 => Some(Register::RDI),
                    a if a == HeaderArg::Arg1 as u8 => Some(Register::RSI),
                    _ => None,
                };
                // Spawn calls read every argument register and [rsp]; a stack copy wants
                // the entry's frame; return probes hook the return address at [rsp].
                let movable = !is_return
                    && !matches!(kind, Some(EventKind::SpawnCall | EventKind::SpawnId))
                    && !(stack_copy
                        && matches!(kind, Some(EventKind::Spawn | EventKind::SpawnBlocking)));
                let clone = kind == Some(EventKind::WakerClone);
                let p = crate::plan::placement::place_with(code, site.vaddr, keeps, movable, clone);
                site.file_offset += p.offset;
                // A poll start tells await stacks where the poll's entry frame begins: a
                // probe moved past prologue pushes adds them back (bits 16 and up).
                if kind == Some(EventKind::PollStart) && self.await_stacks.is_some() {
                    let delta = crate::plan::placement::stack_delta(code, site.vaddr, p.offset);
                    site.cookie |= delta.unwrap_or(0).min(0xffff) << 16;
                }
                // The kernel side finds the load bias from the probed instruction's address.
                if clone {
                    site.cookie = tracer_common::clone_cookie(site.vaddr + p.offset);
                }
                site.placement = Some(p);
            }
        }
    }

    /// Probe sites by how the kernel runs their instruction: (emulated, single-stepped).
    pub fn execution_counts(&self) -> (usize, usize) {
        let all = || self.entry.iter().chain(&self.ret);
        let emulated = all()
            .filter(|s| {
                s.placement
                    .as_ref()
                    .is_some_and(|p| p.execution == crate::plan::placement::Execution::Emulated)
            })
            .count();
        (emulated, all().count() - emulated)
    }

    fn for_stripped(
        path: &Path,
        bin: &BinaryInfo,
        table: &LocationTable,
        k: &Knowledge,
        mode: Mode,
    ) -> Result<Self> {
        let vtables = table.scan_task_vtables(&k.layout);
        if vtables.is_empty() {
            return Err(Error::Stripped {
                path: path.to_owned(),
                tokio_version: bin.tokio_version.map(|v| v.to_string()),
            });
        }
        // No thread-local symbols to sample: full mode keeps the poll-end probe.
        let full = mode == Mode::Full;
        let mut plan = Plan {
            tier: "vtable scan",
            mode,
            polls_probed: full,
            poll_ends_probed: full,
            ..Default::default()
        };
        // (vtable slot, kind, header, return probe)
        let s = &k.layout.slots;
        let slots = [
            (s.poll, EventKind::PollStart, HeaderArg::Arg0, false),
            (s.poll, EventKind::PollEnd, HeaderArg::None, true),
            (s.dealloc, EventKind::Dealloc, HeaderArg::Arg0, false),
            (s.shutdown, EventKind::Shutdown, HeaderArg::Arg0, false),
        ];
        for (slot, kind, arg, is_return) in slots {
            if !full && matches!(kind, EventKind::PollStart | EventKind::PollEnd) {
                continue;
            }
            for vt in &vtables {
                let Some(vaddr) = table.vtable_slot(vt.vaddr, slot.index) else {
                    continue;
                };
                let Some(file_offset) = bin.file_offset(vaddr) else {
                    continue;
                };
                let site = Site {
                    function: slot.label,
                    vaddr,
                    file_offset,
                    cookie: cookie(kind, arg),
                    placement: None,
                };
                if is_return {
                    plan.ret.push(site);
                } else {
                    plan.entry.push(site);
                }
            }
        }
        // Wakes: tokio's waker vtable, recognised by its clone function.
        let ref_one = 1u64 << k.refs.ref_shift;
        let wakers = if full {
            table.scan_waker_vtables(ref_one, &k.layout)
        } else {
            Vec::new()
        };
        for &waker in &wakers {
            for (slot, kind) in [
                (s.wake_by_val, EventKind::WakeByVal),
                (s.wake_by_ref, EventKind::WakeByRef),
            ] {
                if let Some(vaddr) = table.vtable_slot(waker, slot.index)
                    && let Some(file_offset) = bin.file_offset(vaddr)
                {
                    plan.entry.push(Site {
                        function: slot.label,
                        vaddr,
                        file_offset,
                        cookie: cookie(kind, HeaderArg::Arg0),
                        placement: None,
                    });
                }
            }
        }
        if !wakers.is_empty() {
            plan.wakes_probed = true;
        }
        for list in [&mut plan.entry, &mut plan.ret] {
            list.sort_by_key(|s| (s.vaddr, s.cookie));
            list.dedup_by_key(|s| (s.vaddr, s.cookie));
        }
        let no_symbols = "the binary is stripped and no --symbols FILE was given";
        for (what, why) in [
            (
                "spawn sites",
                format!(
                    "{no_symbols}: spawns are seen where they draw their task id, but the code \
                     shows no site for them"
                ),
            ),
            (
                "futures",
                format!("{no_symbols}: future types are named by symbols"),
            ),
            (
                "wakes",
                format!(
                    "{no_symbols}, and tokio's waker vtable was not recognised: `stuck` \
                     (starved) is seen only through the task-list readings (about 1 s apart)"
                ),
            ),
        ] {
            if what == "wakes" && plan.wakes_probed {
                continue;
            }
            if what == "wakes" && !full {
                continue;
            }
            plan.unavailable.push(Unavailable {
                what: what.into(),
                why,
            });
        }
        plan.note_losses(k);
        Ok(plan)
    }
}

/// A probe site at every instance of `function` that the file maps.
fn sites(bin: &BinaryInfo, function: &'static str, kind: EventKind, arg: HeaderArg) -> Vec<Site> {
    bin.instances(function)
        .iter()
        .filter_map(|&vaddr| {
            let file_offset = bin.file_offset(vaddr)?;
            Some(Site {
                function,
                vaddr,
                file_offset,
                cookie: cookie(kind, arg),
                placement: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
