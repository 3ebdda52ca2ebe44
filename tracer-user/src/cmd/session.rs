//! One trace window, start to finish (`Session`): read the binary, plan, attach, stream
//! records into the model until the window ends, detach, and build the report.

use std::{collections::HashMap, sync::Arc, time::Duration};

use crate::{
    binary::read_binary,
    cmd::{
        flight::Flight,
        spawn_gate::{Change, SpawnGate},
    },
    error::{Error, Result},
    live::{
        await_stack::AwaitStacks,
        clock::monotonic_ns,
        kernel::KernelFeatures,
        locator::Locator,
        probes::{Probes, Record},
        target::{Launched, RunState, Target},
        tasklist::{self, LiveTask, Reader, Snapshot},
    },
    model::{Aggregator, verdict::Thresholds},
    plan::Plan,
    report::{Meta, Report},
    stream::{
        EndRecord, EndedBy, MetaRecord, Rec, TargetInfo, flight::FlightRing, records::AwaitsFrom,
        records::ListedTask, tracefile::Writer,
    },
    tokio_versions,
};
use tracer_common::EventKind;

pub struct WindowOpts {
    pub duration: Option<Duration>,
    pub thresholds: Thresholds,
    pub ring_bytes: u32,
    pub quiet: bool,
    /// Keep every poll and instant (for `--perfetto`).
    pub timeline: bool,
    /// Which finished tasks the model keeps individually (`--keep`).
    pub keep: crate::model::fold::Retention,
    /// Capture spawn sites (spawn-call probes and stack copies at spawn).
    pub spawn_sites: bool,
    /// An unstripped copy of the target's build, for its symbols.
    pub symbols: Option<std::path::PathBuf>,
    /// Where its type information is, for await chains.
    pub debug: crate::cmd::awaits::DebugInfo,
    pub mode: crate::plan::Mode,
    /// An attach path forced by `--attach` (else the kernel's features decide).
    pub attach: Option<crate::plan::AttachMode>,
    /// Run as a flight recorder (`--flight`): the records go to a ring, not a file.
    pub flight: Option<crate::cmd::flight::FlightOpts>,
    /// Sample mode: probe spawns while the target spawns fewer tasks a second than this
    /// (`cmd::spawn_gate`; 0: never).
    pub spawn_budget: u64,
}

/// How often the ring is drained (the kernel side never wakes the reader per event).
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// Once the ring has overflowed, it is drained this often instead.
const DRAIN_FAST: Duration = Duration::from_millis(1);
/// The tick while no probe is attached, as many drain periods.
const DRAIN_IDLE_TICKS: u64 = 10;
const DRAIN_IDLE: Duration = Duration::from_millis(10 * DRAIN_IDLE_TICKS);

/// A live view of the window (`top`): shown the model every drain tick, it says whether
/// the window goes on. It only reads; the session owns the model.
pub trait Watch {
    fn tick(&mut self, now: &Watched<'_>) -> Control;
    /// The report asked for with [`Control::Save`], built from a copy of the model.
    fn saved(&mut self, report: Report);
}

/// What a [`Watch`] is shown each tick.
pub struct Watched<'a> {
    pub agg: &'a Aggregator,
    pub meta: &'a MetaRecord,
    pub now_ns: u64,
    /// Probe records drained so far, and events the kernel could not queue.
    pub events: u64,
    pub lost: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Go,
    /// End the window (`q`): it closes as if interrupted.
    Quit,
    /// Report what the window holds so far and go on.
    Save,
}

/// Traces one window of `target` and reports it.
pub async fn trace(
    target: Target,
    launched: Option<Launched>,
    opts: &WindowOpts,
    recording: Option<Writer>,
) -> Result<Report> {
    trace_watched(target, launched, opts, recording, None).await
}

/// [`trace`], showing the model to `watch` every tick (`--prometheus`).
pub async fn trace_watched(
    target: Target,
    launched: Option<Launched>,
    opts: &WindowOpts,
    recording: Option<Writer>,
    watch: Option<&mut dyn Watch>,
) -> Result<Report> {
    let mut session = Session::attach(target, launched, opts, recording)?;
    let ended_by = session.run_watched(watch).await?;
    Ok(session.close(ended_by).await)
}

/// One window on one process: attach, tick (drain the ring, sample threads, read the
/// task lists, off the event loop), close (detach, report). Every record the probes and
/// the readings produce goes through [`Feed::emit`], so the trace file holds exactly what
/// the model was given.
pub struct Session<'o> {
    opts: &'o WindowOpts,
    target: Target,
    launched: Option<Launched>,
    plan: Plan,
    probes: Probes,
    live: Live,
    /// `None` while a reading walks the lists on a blocking thread.
    lists: Option<ListReader>,
    sampler: Option<crate::live::sampler::Sampler>,
    /// When the thread iterator last ran.
    threads_found_at: Option<std::time::Instant>,
    /// What the window says of itself at its start (the recording's first record).
    meta: MetaRecord,
    /// Warnings raised during the window (those of the start are in `meta`).
    warnings: Vec<String>,
    /// Readings during the window stand in for what no probe sees: completions
    /// (stripped), wakes (one-hit polls) or polls (lifecycle). They back off when slow.
    periodic_readings: bool,
    next_reading: tokio::time::Instant,
    /// Task vtables whose spawns need no stack copy, once the load address is known.
    sites_unmarked: bool,
    ticks: u64,
    events_seen: u64,
    events_at_last_update: u64,
    /// Events the kernel could not queue, as of the last check, and when that check was.
    lost_seen: u64,
    lost_checked_ns: u64,
    /// The target has been stopped (SIGSTOP, a debugger) since: time that counts toward
    /// no threshold.
    stopped_since: Option<u64>,
    /// When to write incidents, as a flight recorder.
    flight: Option<Flight>,
    /// Sample mode: when the spawn probes are attached.
    gate: Option<Gate>,
    /// The binary's async state machines (for await chains at the end reading), where
    /// its type information was found, or why not.
    awaits: Awaits,
}

/// What the window's end reading reads the tasks' await chains with.
struct Awaits {
    types: Option<crate::binary::async_types::AsyncTypes>,
    from: crate::stream::records::AwaitsFrom,
    poll_slot: u64,
}

/// Sample mode's spawn gate and what it measures by: tokio's task-id counter in the
/// target (read every gate tick), else the spawn events.
struct Gate {
    gate: SpawnGate,
    budget: u64,
    /// The counter's file address, then its address in the target.
    counter: Option<u64>,
    counter_at: Option<u64>,
    memory: crate::live::memory::Memory,
    last_tick_ns: u64,
}

/// The live side of the stream: what turns the probes' raw records into the stream's
/// records (resolving addresses to sites and future names in the target), and the feed
/// that writes and applies them.
struct Live {
    feed: Feed,
    locator: Locator,
    /// Task vtables described so far (future name, if the symbols say).
    futures: HashMap<u64, Option<Arc<str>>>,
    /// Out-of-line id draws: the spawn site at each call site (return address, file
    /// address).
    caller_sites: HashMap<u64, Arc<str>>,
    /// Set when the window closes: events after it (while the probes are being detached)
    /// are outside the window and would only add half-seen polls.
    cutoff: u64,
    /// When the target exec'd (its old image, and every task in it, is gone).
    exec_at: Option<u64>,
    /// A launched command's own exec into the program starts the trace: not an end.
    execs_expected: u32,
    /// Spawn events seen (the spawn gate's count where tokio's counter is unknown).
    spawn_events: u64,
    /// Await chains from the stack copies of waker clones (no type information, full
    /// mode).
    stacks: Option<AwaitStacks>,
}

/// Writes each record to the trace file (when recording), then applies it to the model:
/// a replay of the file applies the same records in the same order.
struct Feed {
    agg: Aggregator,
    recording: Option<Writer>,
    flight: Option<FlightRing>,
}

impl Feed {
    fn emit(&mut self, rec: Rec) {
        if let Some(w) = self.recording.as_mut() {
            w.record(&rec);
        }
        if let Some(ring) = self.flight.as_mut() {
            ring.push(&rec);
        }
        self.agg.apply(&rec);
    }
}

impl Live {
    fn on_probe(&mut self, r: Record) {
        let ts = match &r {
            Record::Task(ev) => ev.ts_ns,
            Record::Call(c) => c.ts_ns,
            Record::Stack(st) => st.ts_ns,
        };
        if ts > self.cutoff {
            self.feed.agg.diagnostics.after_window += 1;
            return;
        }
        match r {
            Record::Stack(st) if st.kind == EventKind::AwaitStack as u8 => {
                if let Some(s) = self.stacks.as_mut() {
                    s.on_stack(st);
                }
            }
            Record::Task(ev) if ev.kind == EventKind::WakerClone as u8 => {
                if let Some(s) = self.stacks.as_mut() {
                    s.on_clone(&ev, &mut self.locator);
                }
            }
            // A spawn whose Location was already found needs no unwinding.
            Record::Stack(st) if self.feed.agg.has_pending_location(st.tid) => {}
            Record::Stack(st) => {
                let stack = &st.stack[..(st.len as usize).min(st.stack.len())];
                let caller = self.locator.unwound_caller(st.ip, st.sp, st.bp, stack);
                self.feed.emit(Rec::Site {
                    tid: st.tid,
                    location: None,
                    caller: caller.map(|c| c.to_string()),
                    stack: true,
                    code: false,
                });
            }
            Record::Task(ev) if ev.kind == tracer_common::EventKind::Exec as u8 => {
                if self.execs_expected > 0 {
                    self.execs_expected -= 1;
                } else {
                    self.exec_at.get_or_insert(ev.ts_ns);
                    self.feed.emit(Rec::Task(ev));
                }
            }
            Record::Task(ev) => {
                if let Some(s) = self.stacks.as_mut() {
                    s.on_task(&ev);
                }
                self.describe_vtable(ev.vtable);
                self.spawn_events += u64::from(matches!(
                    tracer_common::EventKind::from_u8(ev.kind),
                    Some(
                        tracer_common::EventKind::Spawn
                            | tracer_common::EventKind::SpawnLocal
                            | tracer_common::EventKind::SpawnBlocking
                            | tracer_common::EventKind::SpawnId
                    )
                ));
                // An out-of-line id draw: its caller (the return address the probe read)
                // is the spawn, and the code there names it.
                if ev.kind == tracer_common::EventKind::SpawnId as u8
                    && ev.owner_id != 0
                    && let Some(bias) = self.locator.bias()
                    && let Some(site) = self.caller_sites.get(&ev.owner_id.wrapping_sub(bias))
                {
                    let location = Some(site.to_string());
                    self.feed.emit(Rec::Site {
                        tid: ev.tid,
                        location,
                        caller: None,
                        stack: false,
                        code: true,
                    });
                }
                self.feed.emit(Rec::Task(ev));
            }
            Record::Call(call) => {
                let location = self.locator.location(&call.args);
                let caller = if location.is_none() {
                    self.locator.caller(call.return_address)
                } else {
                    None
                };
                self.feed.emit(Rec::Site {
                    tid: call.tid,
                    location: location.map(|l| l.to_string()),
                    caller: caller.map(|c| c.to_string()),
                    stack: false,
                    code: false,
                });
            }
        }
    }

    /// The first time a task vtable shows up: what the binary says of it (its future
    /// type, its tasks' spawn site), as a future record.
    fn describe_vtable(&mut self, vtable: u64) {
        if vtable == 0 || self.futures.contains_key(&vtable) {
            return;
        }
        let name = self.locator.future_name(vtable);
        let site = vtable_site(&mut self.locator, vtable);
        if name.is_some() || site.is_some() {
            self.feed.emit(Rec::Future {
                vtable,
                name: name.as_deref().unwrap_or_default().to_owned(),
                site: site.map(|s| s.to_string()),
            });
        }
        self.futures.insert(vtable, name);
    }
}

impl<'o> Session<'o> {
    /// Reads the binary, plans, attaches, and (attached to a running process) reads the
    /// tasks alive before attach; a launched command is released to exec.
    pub fn attach(
        target: Target,
        mut launched: Option<Launched>,
        opts: &'o WindowOpts,
        mut recording: Option<Writer>,
    ) -> Result<Self> {
        let (bin, table) = read_binary(&target.exe, &target.display, opts.symbols.as_deref())?;
        let selection =
            tokio_versions::select(bin.tokio_version).map_err(Error::UnsupportedTokio)?;
        let knowledge = selection.knowledge;
        // The running kernel, asked once: its BTF serves the plan and the probes, its
        // features choose the attach path.
        let kernel = KernelFeatures::probe();
        let host_fsbase = kernel.fsbase;
        let attach = kernel.attach_mode(opts.attach)?;
        // Read before anything attaches: a --debuginfo that is not one fails here.
        let (types, mut from) = crate::cmd::awaits::types(
            &target.exe,
            opts.symbols.as_deref(),
            &opts.debug,
            &crate::cmd::awaits::poll_functions(&bin, &table, knowledge),
        )?;
        let plan = Plan::choose(
            std::path::Path::new(&target.display),
            &bin,
            &table,
            knowledge,
            crate::plan::PlanOpts {
                spawn_sites: opts.spawn_sites,
                mode: opts.mode,
                host_fsbase,
                await_stacks: types.is_none() && opts.debug.stacks,
            },
        )?;
        // No types: the chains come from the stack copies of waker clones (full mode).
        let stacks = plan.await_stacks.is_some();
        if stacks {
            from = crate::cmd::awaits::from_stacks();
        } else if types.is_none()
            && let Some(why) = from.unavailable.as_mut()
        {
            why.push_str(if plan.mode == crate::plan::Mode::Full {
                "; the stack copies at waker clones are off (--no-await-stacks, tokio's \
                 waker was not found, or the binary is stripped: nothing names the frames)"
            } else {
                "; or trace in --mode full, which copies the stack at each new await point"
            });
        }
        let mut summary = plan.summary();
        if let Some(why) = &from.unavailable {
            summary.unavailable.push(crate::plan::Unavailable {
                what: "await chains".into(),
                why: why.clone(),
            });
        }
        let awaits = Awaits {
            types,
            from,
            poll_slot: knowledge.layout.slots.poll.index,
        };
        let mut warnings: Vec<String> = selection.warning.into_iter().collect();
        if host_fsbase.is_none() {
            warnings.push(format!(
                "kernel {} {}: the thread sampler is off, so {}",
                kernel.release,
                if kernel.btf {
                    "has BTF but no task_struct.thread.fsbase in it"
                } else {
                    "has no BTF (/sys/kernel/btf/vmlinux)"
                },
                if plan.mode == crate::plan::Mode::Full {
                    "poll returns and wakes are probed instead (three probe hits a poll, not one)"
                } else {
                    "blocking polls are seen by the task-list readings only"
                }
            ));
        }
        let mut locator = Locator::new(table, target.pid, target.exe.clone());
        locator.set_vtable_sites(plan.code_sites());
        let target_pid = target.pid;
        let target_info = TargetInfo {
            pid: target.pid,
            pid_in_namespace: target.pid_in_namespace(),
            binary: target.display.clone(),
            build_id: bin.build_id.clone(),
            tokio_version: bin.tokio_version.map(|v| v.to_string()),
        };
        let probes = Probes::attach(
            &target.exe,
            &plan,
            target.pid,
            &knowledge.layout,
            opts.ring_bytes,
            kernel.task_offsets(),
            attach,
        )?;
        if let Some(why) = &probes.thread_iter_error {
            warnings.push(format!(
                "the thread iterator is off ({why}): the thread sampler sees only threads that \
                 run while it looks, so a worker blocked inside one poll since before attach \
                 may go unseen"
            ));
        }
        let start_ns = monotonic_ns();
        let attach_ms = probes.attach_time.as_secs_f64() * 1e3;
        if !opts.quiet {
            eprintln!(
                "tasktrace: attached {} probe sites to pid {} in {attach_ms:.1} ms; {}",
                probes.sites,
                target.pid,
                match opts.duration {
                    Some(d) => format!("tracing for {:.1}s (Ctrl-C ends early)", d.as_secs_f64()),
                    None => "tracing until the target exits or Ctrl-C".into(),
                }
            );
        }
        let meta = MetaRecord {
            format: "tasktrace.trace/1".into(),
            target: target_info,
            start_ns,
            start_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            state_bits: knowledge.state,
            probe_sites: probes.sites,
            attach: probes.mode,
            summary,
            plan: serde_json::to_value(&plan).unwrap_or_default(),
            attach_ms,
            warnings,
        };
        if let Some(w) = recording.as_mut() {
            w.meta(&meta);
        }
        let agg = Aggregator::for_window(&meta, opts.thresholds, opts.timeline, opts.keep);
        let lists = ListReader::new(
            target.pid,
            knowledge,
            bin.instances(knowledge.symbols.raw_poll),
            plan.mode.polls_sampled(),
            plan.id_counter,
        );
        let sampler = plan
            .current_task
            .map(|at| crate::live::sampler::Sampler::new(target.pid, at));
        let caller_sites = plan
            .id_sites
            .iter()
            .flat_map(|s| &s.callers)
            .filter_map(|(ret, site)| Some((*ret, Arc::from(site.as_deref()?))))
            .collect();
        let mut session = Session {
            awaits,
            opts,
            // A flight recorder's ring starts at a reading: readings keep coming.
            periodic_readings: !plan.completion_probed
                || !plan.wakes_probed
                || opts.flight.is_some(),
            sites_unmarked: plan.static_sites.iter().any(|s| !s.vtables.is_empty())
                || !plan.vtable_sites.is_empty(),
            target,
            launched: None,
            plan,
            probes,
            live: Live {
                feed: Feed {
                    agg,
                    recording,
                    flight: opts.flight.as_ref().map(|f| {
                        FlightRing::new(f.keep.as_nanos().min(u64::MAX as u128) as u64, f.max_bytes)
                    }),
                },
                locator,
                futures: HashMap::new(),
                caller_sites,
                cutoff: u64::MAX,
                spawn_events: 0,
                exec_at: None,
                execs_expected: u32::from(launched.is_some()),
                stacks: stacks.then(AwaitStacks::default),
            },
            lists: Some(lists),
            sampler,
            threads_found_at: None,
            meta,
            warnings: Vec::new(),
            next_reading: tokio::time::Instant::now() + READ_EVERY,
            ticks: 0,
            events_seen: 0,
            events_at_last_update: 0,
            lost_seen: 0,
            lost_checked_ns: start_ns,
            stopped_since: None,
            flight: opts.flight.clone().map(|f| Flight::start(f, target_pid)),
            gate: None,
        };
        if session.plan.spawns_gated {
            // A running process may spawn far above the budget from the first instant
            // (and the attach-time reading takes a while): its rate is measured first.
            // A launched command starts at none.
            let gate = if launched.is_none() && session.plan.id_counter.is_some() {
                SpawnGate::measuring(opts.spawn_budget, start_ns)
            } else {
                SpawnGate::new(opts.spawn_budget, start_ns)
            };
            if gate.armed() {
                session.live.feed.emit(Rec::SpawnProbes {
                    at_ns: start_ns,
                    armed: true,
                    rate: None,
                    budget: opts.spawn_budget,
                });
            } else {
                session.probes.disarm();
            }
            session.gate = Some(Gate {
                gate,
                budget: opts.spawn_budget,
                counter: session.plan.id_counter,
                counter_at: None,
                memory: crate::live::memory::Memory::new(target_pid),
                last_tick_ns: start_ns,
            });
        }
        // Tasks alive before attach: only the runtimes' own lists know them (a launched
        // command has not started yet: it has none).
        if launched.is_none() {
            session.read_lists_now(Reading::Attach);
        }
        if let Some(l) = launched.as_mut() {
            // Before its first instruction: every spawn of the window is counted.
            session.task_ids_at_start();
            l.release();
        }
        session.launched = launched;
        Ok(session)
    }

    /// Drains the ring into the model until the window ends; says why it ended.
    pub async fn run(&mut self) -> Result<EndedBy> {
        self.run_watched(None).await
    }

    /// What the window holds so far, reported while tracing goes on (the model is
    /// copied: the window continues unchanged).
    pub fn snapshot(&self) -> Report {
        let end = self.snapshot_end(self.warnings.clone());
        Report::build(
            self.live.feed.agg.clone(),
            Meta::of_window(&self.meta, &end),
        )
    }

    /// The end of the window as of now, while it goes on (a snapshot, an incident).
    fn snapshot_end(&self, warnings: Vec<String>) -> EndRecord {
        EndRecord {
            end_ns: monotonic_ns(),
            ended_by: EndedBy::Snapshot,
            lost_events: self.probes.lost_events(),
            detach_ms: 0.0,
            after_window: 0,
            warnings,
        }
    }

    /// [`Self::run`], showing the model to `watch` every tick.
    pub async fn run_watched(&mut self, mut watch: Option<&mut dyn Watch>) -> Result<EndedBy> {
        let deadline = self.opts.duration.map(|d| tokio::time::Instant::now() + d);
        let mut period = DRAIN_EVERY;
        let mut tick = tokio::time::interval(period);
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(Error::Signals)?;
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        // A flight recorder writes an incident on SIGUSR1 (`tasktrace snapshot`).
        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                .map_err(Error::Signals)?;
        // A status line while recording, only on a terminal (quiet in pipes, logs, CI).
        let progress = (!self.opts.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .then(|| {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                        .expect("template"),
                );
                bar
            });
        // A periodic reading walks the lists on a blocking thread while the ring keeps
        // being drained (100 000 tasks take a while to read).
        let mut reading: Option<std::thread::JoinHandle<(ListReader, ReadResult)>> = None;
        let ended_by = loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.tick(progress.as_ref());
                    // The ring overflowed: drained ten times as often from then on. No
                    // probe attached (sample mode between spawn windows): nothing comes
                    // into it, and a tick every 100 ms does what ten would.
                    let want = if self.lost_seen > 0 {
                        DRAIN_FAST
                    } else if self.gate.is_some() && !self.probes.armed() {
                        DRAIN_IDLE
                    } else {
                        DRAIN_EVERY
                    };
                    if want != period {
                        period = want;
                        // Every count below stays a multiple of what it is tested against.
                        if period == DRAIN_IDLE {
                            self.ticks = self.ticks.next_multiple_of(DRAIN_IDLE_TICKS);
                        }
                        tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                    }
                    if self.live.exec_at.is_some() {
                        break EndedBy::TargetExec;
                    }
                    if let Some(w) = watch.as_deref_mut() {
                        let now = Watched {
                            agg: &self.live.feed.agg,
                            meta: &self.meta,
                            now_ns: monotonic_ns(),
                            events: self.events_seen,
                            lost: self.lost_seen,
                        };
                        match w.tick(&now) {
                            Control::Go => {}
                            Control::Quit => break EndedBy::Interrupted,
                            Control::Save => w.saved(self.snapshot()),
                        }
                    }
                    if let Some(done) = reading.take_if(|h| h.is_finished()) {
                        let (lists, read) = done.join().map_err(|_| reader_panicked())?;
                        self.lists = Some(lists);
                        self.apply_reading(read, Reading::Periodic);
                    }
                    if reading.is_none()
                        && self.periodic_readings
                        && tokio::time::Instant::now() >= self.next_reading
                    {
                        reading = self.start_reading();
                    }
                    if let Some(w) = self.live.feed.recording.as_mut() {
                        w.flush();
                    }
                    // Counted in drain periods (10 ms), whatever the tick's.
                    self.ticks += if period == DRAIN_IDLE { DRAIN_IDLE_TICKS } else { 1 };
                    self.flight_tick();
                    let gone = self.ticks.is_multiple_of(10) && self.watch_target();
                    let exited = match self.launched.as_mut() {
                        Some(l) => l.poll_exit().is_some(),
                        None => gone,
                    };
                    if exited {
                        break EndedBy::TargetExit;
                    }
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        break EndedBy::Duration;
                    }
                }
                _ = &mut ctrl_c => break EndedBy::Interrupted,
                _ = sigterm.recv() => break EndedBy::Interrupted,
                _ = usr1.recv() => {
                    if self.flight.is_some() {
                        self.incident("asked (SIGUSR1 or `tasktrace snapshot`)");
                    } else if !self.opts.quiet {
                        eprintln!("tasktrace: SIGUSR1 ignored: not a flight recorder (--flight)");
                    }
                }
            }
        };
        // The minutes before the target went away are what a flight recorder is for.
        if ended_by == EndedBy::TargetExit && self.flight.is_some() {
            self.incident("the target exited");
        }
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        // A reading still walking: its result is older than the end reading; wait for
        // the reader itself.
        if let Some(h) = reading
            && let Ok((lists, _)) = h.join()
        {
            self.lists = Some(lists);
        }
        Ok(ended_by)
    }

    /// A flight recorder's upkeep: the ring trimmed to its span every 100 ms, the
    /// triggers checked every second.
    fn flight_tick(&mut self) {
        if self.flight.is_none() {
            return;
        }
        let now = monotonic_ns();
        if self.ticks.is_multiple_of(10)
            && let Some(ring) = self.live.feed.flight.as_mut()
        {
            ring.trim(now);
        }
        if self.ticks.is_multiple_of(100)
            && let Some(why) = self
                .flight
                .as_mut()
                .and_then(|f| f.due(&self.live.feed.agg, now))
        {
            self.incident(&why);
        }
    }

    /// Writes the flight ring as an incident trace, after everything the probes queued.
    fn incident(&mut self, why: &str) {
        self.drain();
        let (Some(flight), Some(ring)) = (self.flight.as_mut(), self.live.feed.flight.as_ref())
        else {
            return;
        };
        let path = flight.next_path(self.target.pid);
        let mut warnings = vec![format!("incident: {why}")];
        if ring.cut_for_size > 0 {
            warnings.push(format!(
                "the flight ring was cut {} time(s) to stay under --flight-size: it covers \
                 less than --flight",
                ring.cut_for_size
            ));
        }
        warnings.extend(self.warnings.iter().cloned());
        let end = self.snapshot_end(warnings);
        match ring.write(&path, &self.meta, &end) {
            Ok(()) => eprintln!(
                "tasktrace: incident ({why}): wrote {} ({:.1} MiB ring)",
                path.display(),
                ring.bytes() as f64 / (1 << 20) as f64
            ),
            Err(e) => {
                let w = format!("incident ({why}) not written: {e}");
                eprintln!("tasktrace: {w}");
                self.warnings.push(w);
            }
        }
    }

    /// One drain period: the ring, the status line, the thread sampler.
    fn tick(&mut self, progress: Option<&indicatif::ProgressBar>) {
        // Once the target's addresses are known (a launched command maps its binary only
        // when it execs), spawns of those futures stop copying stacks.
        if self.sites_unmarked
            && let Some(bias) = self.live.locator.bias()
        {
            self.sites_unmarked = false;
            let vtables = self
                .plan
                .static_sites
                .iter()
                .flat_map(|s| s.vtables.iter().copied())
                .chain(self.plan.vtable_sites.iter().map(|v| v.vtable));
            self.probes.mark_sites_known(vtables.map(|v| v + bias));
        }
        self.drain();
        if let Some(bar) = progress.filter(|_| self.ticks.is_multiple_of(50)) {
            let rate = (self.events_seen - self.events_at_last_update) * 2;
            self.events_at_last_update = self.events_seen;
            bar.set_message(format!(
                "{rate} events/s · {} live tasks · {} lost events · Ctrl-C ends the window",
                self.live.feed.agg.tasks_alive(),
                self.probes.lost_events()
            ));
            bar.tick();
        }
        if self.ticks.is_multiple_of(SAMPLE_EVERY_TICKS) {
            self.sample_threads();
        }
        self.gate_tick();
    }

    /// Sample mode: attaches or detaches the spawn probes as the spawn rate says, every
    /// gate window (100 ms, whatever the drain period).
    fn gate_tick(&mut self) {
        use crate::live::memory::ReadMemory;
        let Some(g) = self.gate.as_mut() else {
            return;
        };
        let now = monotonic_ns();
        if now.saturating_sub(g.last_tick_ns) < crate::cmd::spawn_gate::WINDOW_NS {
            return;
        }
        g.last_tick_ns = now;
        if g.counter_at.is_none()
            && let (Some(vaddr), Some(bias)) = (g.counter, self.live.locator.bias())
        {
            g.counter_at = Some(bias.wrapping_add(vaddr));
        }
        let counted = g.counter_at.and_then(|at| g.memory.u64(at));
        let spawned = counted.or(Some(self.live.spawn_events));
        let Some(change) = g.gate.tick(now, spawned, counted.is_some()) else {
            return;
        };
        let armed = match change {
            Change::Arm { .. } if self.probes.armed() => return,
            Change::Arm { .. } => match self.probes.arm() {
                Ok(_) => true,
                Err(e) => {
                    g.gate.arm_failed(now);
                    self.warnings.push(format!(
                        "could not attach the spawn probes again ({e}): tasks spawned from \
                         {:.1}s into the window on are seen by the task-list readings only",
                        now.saturating_sub(self.meta.start_ns) as f64 / 1e9
                    ));
                    return;
                }
            },
            Change::Disarm => {
                self.probes.disarm();
                false
            }
        };
        let rec = Rec::SpawnProbes {
            at_ns: now,
            armed,
            rate: g.gate.rate,
            budget: g.budget,
        };
        self.live.feed.emit(rec);
    }

    /// Whether the target is gone; notes the spans it spends stopped (a stopped process
    /// runs no task: that time proves no leak and no stuck poll).
    fn watch_target(&mut self) -> bool {
        let now = monotonic_ns();
        match self.target.run_state() {
            RunState::Gone => return true,
            RunState::Stopped => {
                self.stopped_since.get_or_insert(now);
            }
            RunState::Running => {
                if let Some(from) = self.stopped_since.take() {
                    self.live.feed.emit(Rec::Stopped {
                        from_ns: from,
                        to_ns: now,
                    });
                }
            }
        }
        false
    }

    fn drain(&mut self) {
        let live = &mut self.live;
        self.events_seen += self.probes.drain(|r| live.on_probe(r)) as u64;
        self.note_losses();
    }

    /// Events the kernel dropped since the last check go into the stream as a span, so
    /// the model knows which histories may have holes (and a replay knows it too).
    fn note_losses(&mut self) {
        let now = monotonic_ns();
        let total = self.probes.lost_events();
        if total > self.lost_seen {
            if self.lost_seen == 0 {
                self.warnings.push(format!(
                    "events were lost from {:.1}s into the window (the ring buffer was full): the ring was drained every {} ms from then; verdicts resting on lost events are settled against the task lists or marked uncertain; for a complete history raise --ring-size (now {} KiB) or use --mode lifecycle",
                    now.saturating_sub(self.meta.start_ns) as f64 / 1e9,
                    DRAIN_FAST.as_millis(),
                    self.opts.ring_bytes / 1024
                ));
            }
            self.live.feed.emit(Rec::Lost {
                since_ns: self.lost_checked_ns,
                at_ns: now,
                total,
            });
            self.lost_seen = total;
        }
        self.lost_checked_ns = now;
    }

    /// One round of the thread sampler.
    fn sample_threads(&mut self) {
        let Some(sampler) = self.sampler.as_ref() else {
            return;
        };
        let mut threads = self.probes.threads();
        // A thread no program has run on (asleep since before attach, or new): the
        // iterator finds it, at most once a second.
        if self
            .threads_found_at
            .is_none_or(|t| t.elapsed() >= FIND_THREADS_EVERY)
            && sampler.unknown_threads(&threads)
        {
            self.threads_found_at = Some(std::time::Instant::now());
            if self.probes.find_threads() {
                threads = self.probes.threads();
            }
        }
        let at_ns = monotonic_ns();
        let samples = sampler.sample(&threads);
        self.live.feed.emit(Rec::Samples { at_ns, samples });
    }

    /// tokio's task-id counter of a launched target, about to exec: the value the
    /// binary's file gives it (its image is not mapped yet).
    fn task_ids_at_start(&mut self) {
        if let Some(next_id) = self.plan.id_counter_initial {
            let at_ns = monotonic_ns();
            self.live.feed.emit(Rec::TaskIds { at_ns, next_id });
        }
    }

    /// Starts a periodic reading on a blocking thread (the reader's first use needs the
    /// task vtables at their addresses in the target, resolved here).
    fn start_reading(&mut self) -> Option<std::thread::JoinHandle<(ListReader, ReadResult)>> {
        let mut lists = self.lists.take()?;
        let vtables = lists.needs_vtables().then(|| {
            self.live
                .locator
                .task_vtables(&lists.polls, &lists.knowledge.layout)
        });
        if lists.counter_at.is_none()
            && let Some(vaddr) = lists.id_counter
        {
            lists.counter_at = self.live.locator.bias().map(|b| b.wrapping_add(vaddr));
        }
        let owners = self.live.feed.agg.owners.clone();
        // A plain thread: the tracer itself spawns no tokio task (a stripped tasktrace is
        // the test's tokio binary without task vtables).
        let started = std::thread::Builder::new()
            .name("task-lists".into())
            .spawn(move || {
                let read = lists.read(vtables, &owners);
                (lists, read)
            });
        match started {
            Ok(h) => Some(h),
            Err(e) => {
                self.warnings.push(format!(
                    "could not start the task-list reader ({e}): no more readings of the \
                     runtimes' task lists in this window"
                ));
                None
            }
        }
    }

    /// A reading at attach or at the end, waited for here while the ring keeps being
    /// drained (100 000 tasks take ~0.3 s to read: a busy target would fill the ring).
    /// At attach, what the walk finds predates every event: the events drained meanwhile
    /// are held back and applied after it.
    fn read_lists_now(&mut self, reading: Reading) {
        let Some(handle) = self.start_reading() else {
            return;
        };
        let mut held = Vec::new();
        while !handle.is_finished() {
            if reading == Reading::Attach {
                self.events_seen += self.probes.drain(|r| held.push(r)) as u64;
            } else {
                self.drain();
            }
            std::thread::sleep(DRAIN_EVERY);
        }
        match handle.join() {
            Ok((lists, read)) => {
                self.lists = Some(lists);
                self.apply_reading(read, reading);
            }
            Err(_) => self.warnings.push(reader_panicked().to_string()),
        }
        for r in held {
            self.live.on_probe(r);
        }
    }

    /// Feeds a reading to the model and the recording, after everything the ring holds
    /// (a later reading is then never newer than the model it is applied to); a failed
    /// one becomes a warning.
    fn apply_reading(&mut self, read: ReadResult, reading: Reading) {
        // At attach, what the lists hold predates every event: the tasks found are the
        // ones alive before attach.
        if reading != Reading::Attach {
            self.drain();
        }
        // The futures of the tasks found are named before the tasks arrive: a task known
        // only from a list takes its site from the code by its future type at once (a
        // live view shows it by site), as its spawn would have.
        if let Ok(snap) = &read {
            let vtables: std::collections::BTreeSet<u64> =
                snap.tasks.iter().map(|t| t.vtable).collect();
            for vtable in vtables {
                self.live.describe_vtable(vtable);
            }
        }
        if let Some((at_ns, next_id)) = self.lists.as_mut().and_then(|l| l.counter.take()) {
            self.live.feed.emit(Rec::TaskIds { at_ns, next_id });
        }
        let read_cpu_ms = read.as_ref().map_or(0.0, |s| s.cpu_ms);
        let applying = std::time::Instant::now();
        // Where the tasks the end reading found idle are parked, read before the model
        // takes the reading (and right after it, so the chains describe that instant).
        let chains = match (&read, reading) {
            (Ok(snap), Reading::End) => Some((snap.taken_ns, self.read_chains(snap))),
            _ => None,
        };
        apply_task_list(
            read,
            reading,
            &mut self.live.feed,
            &mut self.warnings,
            self.opts.quiet,
        );
        if let Some((at_ns, chains)) = chains.filter(|_| self.live.stacks.is_none()) {
            self.live.feed.emit(Rec::Awaits {
                at_ns,
                from: self.awaits.from.clone(),
                chains,
            });
        }
        if reading == Reading::Periodic {
            // The readings' cost follows the live tasks: the period stretches so that
            // reading and applying them takes at most 1/READ_COST_SHARE of a core.
            let cost_s = read_cpu_ms / 1e3 + applying.elapsed().as_secs_f64();
            self.next_reading = tokio::time::Instant::now()
                + READ_EVERY.max(Duration::from_secs_f64(cost_s * READ_COST_SHARE));
        }
    }

    /// The await chains of the idle and notified tasks of `snap`, read from the target's
    /// memory now (none without type information).
    fn read_chains(&mut self, snap: &Snapshot) -> Vec<crate::stream::records::ChainOf> {
        let Some(types) = &self.awaits.types else {
            return Vec::new();
        };
        crate::cmd::awaits::read_all(
            types,
            &crate::live::memory::Memory::new(self.target.pid),
            &mut self.live.locator,
            self.awaits.poll_slot,
            &snap.tasks,
        )
    }

    /// A bar for the detach of per-site links (about 0.1 s each, in parallel), on a
    /// terminal only.
    fn detach_bar(&self) -> Option<indicatif::ProgressBar> {
        if self.opts.quiet
            || self.probes.mode != crate::plan::AttachMode::Perf
            || !crate::cmd::term::on_terminal()
        {
            return None;
        }
        let bar = indicatif::ProgressBar::new(self.probes.sites as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("detaching {bar:40} {pos}/{len} probe links")
                .expect("template"),
        );
        Some(bar)
    }

    /// Reads the lists one last time (while the target runs), detaches, and reports.
    pub async fn close(mut self, ended_by: EndedBy) -> Report {
        // What the lists say at the end decides which leaks are certain: read them while
        // the target still runs, after everything the ring holds so far.
        // After an exec the memory is another program's: no end reading, and the window
        // ends where the old image did.
        if !matches!(ended_by, EndedBy::TargetExit | EndedBy::TargetExec) && self.target.is_alive()
        {
            self.drain();
            self.sample_threads();
            self.read_lists_now(Reading::End);
        }
        let end_ns = match (ended_by, self.live.exec_at) {
            (EndedBy::TargetExec, Some(at)) => at,
            _ => monotonic_ns(),
        };
        if let Some(from) = self.stopped_since.take() {
            self.live.feed.emit(Rec::Stopped {
                from_ns: from,
                to_ns: end_ns,
            });
        }
        if ended_by == EndedBy::TargetExec {
            self.warnings.push(format!(
                "the target exec'd {} {:.1}s into the window: the window ends there (its tasks are judged at that instant; the new program is not traced)",
                std::fs::read_link(format!("/proc/{}/exe", self.target.pid))
                    .map_or_else(|_| "another program".into(), |p| p.display().to_string()),
                end_ns.saturating_sub(self.meta.start_ns) as f64 / 1e9
            ));
        }
        self.live.cutoff = end_ns;
        let detach_time = {
            let bar = self.detach_bar();
            let time = self.probes.detach(&|done, _| {
                if let Some(b) = &bar {
                    b.set_position(done as u64);
                }
            });
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            time
        };
        self.drain();
        // Tasks known only from the task lists sent no event that named their future.
        let vtables: Vec<u64> = self.live.feed.agg.tasks.iter().map(|t| t.vtable).collect();
        for vtable in vtables {
            self.live.describe_vtable(vtable);
        }
        let lost = self.probes.lost_events();
        let mut warnings = std::mem::take(&mut self.warnings);
        if let Some(l) = self.launched.as_mut() {
            l.terminate().await;
            if let Some(status) = l
                .poll_exit()
                .filter(|&s| s != 0 && ended_by == EndedBy::TargetExit)
            {
                warnings.push(format!("the command exited with status {status}"));
            }
        }
        let detach_ms = detach_time.as_secs_f64() * 1e3;
        if !self.opts.quiet {
            eprintln!(
                "tasktrace: detached {} probe sites in {detach_ms:.1} ms",
                self.probes.sites
            );
        }
        // Where each task was parked at its last waker clone.
        if let Some(s) = &self.live.stacks {
            let chains = s
                .chains()
                .map(|(header, id, c)| crate::stream::records::ChainOf {
                    header,
                    id,
                    chain: crate::cmd::awaits::record_of(c.clone(), |_| None),
                })
                .collect();
            self.live.feed.emit(Rec::Awaits {
                at_ns: end_ns,
                from: AwaitsFrom {
                    clone_hits: Some(self.probes.clone_hits()),
                    point_changes: Some(s.clones),
                    stack_copies: Some(s.copies),
                    ..self.awaits.from.clone()
                },
                chains,
            });
        }
        let Live { feed, .. } = self.live;
        let Feed {
            agg, mut recording, ..
        } = feed;
        let mut end = EndRecord {
            end_ns,
            ended_by,
            lost_events: lost,
            detach_ms,
            after_window: agg.diagnostics.after_window,
            warnings,
        };
        if let Some(w) = recording.as_mut() {
            w.end(&end);
            end.warnings.extend(w.error());
        }
        Report::build(agg, Meta::of_window(&self.meta, &end))
    }
}

type ReadResult = std::result::Result<Snapshot, String>;

fn reader_panicked() -> Error {
    Error::Internal("the task-list reader thread panicked".into())
}

/// Where the code says a task vtable's tasks are spawned (`Plan::vtable_sites`), for a
/// vtable at its address in the target.
fn vtable_site(locator: &mut Locator, vtable: u64) -> Option<Arc<str>> {
    let bias = locator.bias()?;
    locator.vtable_site(vtable.checked_sub(bias)?)
}

/// Thread-sampler period, in drain ticks (100 ms): polls' ends inferred from it are lower
/// bounds, so only a poll longer than this can be missed as long.
const SAMPLE_EVERY_TICKS: u64 = 10;
/// Least time between two runs of the thread iterator.
const FIND_THREADS_EVERY: Duration = Duration::from_secs(1);
/// Period of the task-list readings during a window (stretched when one is slow).
const READ_EVERY: Duration = Duration::from_secs(1);
/// A reading's CPU time, its own and the model's, times this is the least period.
const READ_COST_SHARE: f64 = 40.0;

/// Reads the target's task lists (see `tasklist`) during a window: a memory scan finds
/// them, later readings walk them directly (with a fresh scan every tenth, for runtimes
/// created since).
struct ListReader {
    pid: u32,
    knowledge: &'static tokio_versions::Knowledge,
    polls: Vec<u64>,
    /// Built on first use: the task vtables' addresses need the target's load bias.
    reader: Option<Reader<'static>>,
    known: Vec<tasklist::OwnedList>,
    readings: u32,
    digests: bool,
    not_found: std::collections::HashSet<u64>,
    /// tokio's task-id counter: its file address, then its address in the target.
    id_counter: Option<u64>,
    counter_at: Option<u64>,
    /// The counter as the last reading started: (when, next id); read even when the
    /// lists could not be (a launched target before its runtime exists).
    counter: Option<(u64, u64)>,
}

impl ListReader {
    fn new(
        pid: u32,
        knowledge: &'static tokio_versions::Knowledge,
        polls: &[u64],
        digests: bool,
        id_counter: Option<u64>,
    ) -> Self {
        Self {
            pid,
            knowledge,
            polls: polls.to_vec(),
            reader: None,
            known: Vec::new(),
            readings: 0,
            digests,
            not_found: Default::default(),
            id_counter,
            counter_at: None,
            counter: None,
        }
    }

    /// The reader is built on first use, from the task vtables at their addresses in
    /// the target (the caller resolves them: it holds the locator).
    fn needs_vtables(&self) -> bool {
        self.reader.is_none()
    }

    fn read(
        &mut self,
        vtables: Option<Option<Vec<crate::binary::locations::TaskVtable>>>,
        owners: &std::collections::HashSet<u64>,
    ) -> ReadResult {
        use crate::live::memory::ReadMemory;
        let taken = monotonic_ns();
        self.counter = self
            .counter_at
            .and_then(|at| crate::live::memory::Memory::new(self.pid).u64(at))
            .map(|id| (taken, id));
        if self.reader.is_none() {
            let vtables = vtables
                .flatten()
                .ok_or("the target's load address is unknown")?;
            let mut reader =
                Reader::new(self.pid, self.knowledge, &vtables).map_err(|e| e.to_string())?;
            reader.digests = self.digests;
            self.reader = Some(reader);
        }
        let reader = self.reader.as_ref().expect("built above");
        // Rescan for lists now and then, and as soon as events name a runtime whose list
        // is not known yet (created since the last scan).
        let unknown_owner = owners
            .iter()
            .any(|o| !self.known.iter().any(|l| l.owner_id == *o) && !self.not_found.contains(o));
        let known: &[tasklist::OwnedList] = if self.readings.is_multiple_of(10) || unknown_owner {
            &[]
        } else {
            &self.known
        };
        self.readings += 1;
        let snap = reader
            .snapshot_from(taken, known)
            .map_err(|e| e.to_string())?;
        let full_scan = known.is_empty();
        self.known = snap.lists.clone();
        if full_scan {
            // Runtimes a full scan did not find are gone (dropped): stop rescanning for them.
            self.not_found = owners
                .iter()
                .copied()
                .filter(|o| !self.known.iter().any(|l| l.owner_id == *o))
                .collect();
        }
        Ok(snap)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Right after attaching: unknown tasks are alive before attach.
    Attach,
    /// During the window, where completions are not probed (quiet: no warnings).
    Periodic,
    /// At the window end: decides certainty.
    End,
}

/// Feeds a reading to the model and the recording, in parts; a failed one becomes a
/// warning.
fn apply_task_list(
    read: ReadResult,
    reading: Reading,
    feed: &mut Feed,
    warnings: &mut Vec<String>,
    quiet: bool,
) {
    let attach = reading == Reading::Attach;
    let when = if attach {
        "at attach"
    } else {
        "at the window end"
    };
    let mut snap = match read {
        Ok(s) => s,
        Err(_) if reading == Reading::Periodic => return,
        Err(why) => {
            warnings.push(format!(
                "could not read the runtimes' task lists {when}: {why}; {}",
                if attach {
                    "tasks alive before attach are not reported"
                } else {
                    "no leak is marked definite"
                }
            ));
            return;
        }
    };
    if reading != Reading::Periodic {
        warnings.extend(
            snap.warnings
                .iter()
                .map(|w| format!("task lists {when}: {w}")),
        );
    }
    let mut whole: Vec<u64> = snap
        .lists
        .iter()
        .filter(|l| l.incomplete_shards == 0)
        .map(|l| l.owner_id)
        .collect();
    // Every list read whole: tasks whose owner is not known yet (a spawn seen before its
    // owner id was set, never listed since) are in none of them either.
    if whole.len() == snap.lists.len() {
        whole.push(0);
    }
    let listed = snap.tasks.len();
    // Fed in parts, in list order, giving the reading's memory back as the model takes
    // the tasks in: a million listed tasks are not held twice.
    const PART: usize = 1 << 16;
    let mut rest = std::mem::take(&mut snap.tasks);
    rest.reverse();
    loop {
        let mut part = rest.split_off(rest.len().saturating_sub(PART));
        part.reverse();
        rest.shrink_to_fit();
        let owners = rest.is_empty().then_some(&whole[..]);
        // What the walk found holds somewhere in [taken, until]: the target ran meanwhile.
        let until = rest
            .is_empty()
            .then(|| snap.taken_ns + (snap.read_ms * 1e6) as u64);
        feed.emit(Rec::TaskList {
            at_ns: snap.taken_ns,
            attach,
            tasks: part.into_iter().map(listed_task).collect(),
            complete_owners: owners.map(<[u64]>::to_vec),
            until_ns: until,
        });
        if rest.is_empty() {
            break;
        }
    }
    if !quiet && attach {
        eprintln!(
            "tasktrace: {listed} tasks alive at attach in {} runtime task list(s), read in {:.1} ms",
            snap.lists.len(),
            snap.read_ms
        );
    }
}

/// The walker's find as the stream records it.
fn listed_task(t: LiveTask) -> ListedTask {
    let LiveTask {
        header,
        id,
        owner_id,
        vtable,
        state,
        digest,
        refs,
        list,
        stable,
        status,
        join_handle,
        no_way_to_run,
    } = t;
    ListedTask {
        header,
        id,
        owner_id,
        vtable,
        state,
        digest,
        refs,
        list,
        stable,
        status,
        join_handle,
        no_way_to_run,
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{EventKind, TaskEvent};

    use super::*;
    use crate::{
        live::tasklist::{ListKind, OwnedList, Status},
        model::fold::Retention,
        plan::PlanSummary,
        report::ProbeInfo,
    };

    const MS: u64 = 1_000_000;

    fn meta(completion_probed: bool) -> MetaRecord {
        MetaRecord::synthetic(
            TargetInfo::synthetic("/x"),
            PlanSummary {
                completion_probed,
                ..PlanSummary::all_probed()
            },
        )
    }

    fn th() -> Thresholds {
        Thresholds::new(
            Duration::from_secs(10),
            Duration::from_secs(1),
            Duration::from_secs(2),
        )
    }

    fn task(kind: EventKind, ts: u64, header: u64, id: u64) -> Rec {
        Rec::Task(TaskEvent {
            ts_ns: ts,
            header,
            task_id: id,
            state: 0xcc,
            owner_id: 1,
            tid: 3,
            kind: kind as u8,
            ..Default::default()
        })
    }

    fn listed(header: u64, id: u64) -> LiveTask {
        LiveTask {
            header,
            id,
            owner_id: 1,
            vtable: 0,
            state: 2 << 6,
            digest: 0,
            refs: 2,
            list: ListKind::Runtime,
            stable: true,
            status: Status::Idle,
            join_handle: true,
            no_way_to_run: false,
        }
    }

    fn reading(at: u64, tasks: Vec<LiveTask>) -> ReadResult {
        Ok(Snapshot {
            taken_ns: at,
            read_ms: 1.0,
            lists: vec![OwnedList {
                owner_id: 1,
                kind: ListKind::Runtime,
                address: 0x9000,
                shards: 1,
                declared: None,
                tasks: tasks.len() as u64,
                incomplete_shards: 0,
            }],
            tasks,
            ..Default::default()
        })
    }

    /// Every record the feed applies is the one it wrote: the file, replayed, gives the
    /// same tasks, verdicts and diagnostics as the live model.
    #[test]
    fn what_the_feed_applies_is_what_a_replay_applies() {
        let path = std::env::temp_dir().join(format!("tt-feed-{}.trace", std::process::id()));
        let meta = meta(true);
        let mut w = Writer::create(&path).unwrap();
        w.meta(&meta);
        let mut feed = Feed {
            agg: Aggregator::for_window(&meta, th(), false, Retention::default()),
            recording: Some(w),
            flight: None,
        };
        feed.emit(Rec::Site {
            tid: 3,
            location: Some("src/a.rs:1:1".into()),
            caller: None,
            stack: false,
            code: false,
        });
        feed.emit(task(EventKind::Spawn, MS, 0x1000, 1));
        feed.emit(task(EventKind::PollStart, 2 * MS, 0x1000, 1));
        feed.emit(task(EventKind::PollEnd, 3 * MS, 0x1000, 1));
        feed.emit(Rec::Future {
            vtable: 0,
            name: "app::f".into(),
            site: None,
        });
        feed.emit(Rec::Site {
            tid: 3,
            location: None,
            caller: Some("app::g+0x10".into()),
            stack: true,
            code: false,
        });
        feed.emit(task(EventKind::Spawn, 4 * MS, 0x2000, 2));
        let mut warnings = Vec::new();
        apply_task_list(
            reading(
                5 * MS,
                vec![listed(0x1000, 1), listed(0x2000, 2), listed(0x3000, 3)],
            ),
            Reading::End,
            &mut feed,
            &mut warnings,
            true,
        );
        feed.emit(Rec::Samples {
            at_ns: 6 * MS,
            samples: vec![(3, None)],
        });
        let mut w = feed.recording.take().unwrap();
        w.end(&EndRecord {
            end_ns: 20_000 * MS,
            ended_by: EndedBy::Duration,
            lost_events: 0,
            detach_ms: 0.0,
            after_window: 0,
            warnings: vec![],
        });
        w.check().unwrap();
        let live = Report::build(
            feed.agg,
            Meta {
                target: meta.target.clone(),
                start_ns: 0,
                end_ns: 20_000 * MS,
                ended_by: EndedBy::Duration,
                probes: ProbeInfo {
                    sites: 1,
                    attach: crate::plan::AttachMode::Multi,
                    attach_ms: 0.0,
                    detach_ms: 0.0,
                    mode: "full".into(),
                    emulated: 0,
                    single_stepped: 0,
                },
                lost_events: 0,
                warnings: vec![],
                unavailable: vec![],
            },
        );
        let replayed =
            crate::cmd::replay::report_from_file(&path, th(), false, Retention::default()).unwrap();
        std::fs::remove_file(&path).ok();
        let json = |r: &Report, k: &str| serde_json::to_value(r).unwrap()[k].clone();
        for k in ["tasks", "summary", "diagnostics", "spawn_sites"] {
            assert_eq!(json(&live, k), json(&replayed, k), "{k} differ");
        }
        assert_eq!(live.summary.tasks_seen, 3);
        assert_eq!(json(&live, "diagnostics")["spawn_stacks"], 1);
    }

    /// A reading larger than one part reaches the model in parts, and only the last one
    /// says which lists were read whole: were the first to say so, the tasks of the later
    /// parts (not yet listed) would be taken as finished.
    #[test]
    fn a_large_reading_is_fed_in_parts_with_the_whole_lists_on_the_last() {
        let meta = meta(false);
        let mut feed = Feed {
            agg: Aggregator::for_window(&meta, th(), false, Retention::default()),
            recording: None,
            flight: None,
        };
        const N: u64 = 70_000;
        for i in 1..=N {
            feed.emit(task(EventKind::Spawn, i, 0x10_0000 + i * 0x100, i));
        }
        let tasks = (1..=N).map(|i| listed(0x10_0000 + i * 0x100, i)).collect();
        apply_task_list(
            reading(N + 10, tasks),
            Reading::Periodic,
            &mut feed,
            &mut Vec::new(),
            true,
        );
        assert_eq!(feed.agg.tasks_alive(), N as usize);
        assert_eq!(
            feed.agg.alive_check().unwrap().alive_not_listed,
            Vec::<u64>::new()
        );
    }
}
