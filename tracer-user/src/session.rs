//! One trace window, start to finish: read the binary, plan, attach, stream events into
//! the aggregator until the window ends, detach, and build the report.

use std::time::Duration;

use std::{collections::HashMap, path::Path, sync::Arc};

use crate::{
    elf::BinaryInfo,
    error::{Error, Result},
    locations::{LocationTable, Locator},
    model::Aggregator,
    plan::Plan,
    probes::{Probes, Record},
    report::{Meta, ProbeInfo, Report, TargetInfo},
    target::{Launched, Target},
    tasklist::{self, Reader, Snapshot},
    tokio_versions,
    tracefile::{EndRecord, MetaRecord, Writer},
    verdict::Thresholds,
};

pub struct WindowOpts {
    pub duration: Option<Duration>,
    pub thresholds: Thresholds,
    pub ring_bytes: u32,
    pub quiet: bool,
    /// Keep every poll and instant (for `--perfetto`).
    pub timeline: bool,
    /// Capture spawn sites (spawn-call probes and stack copies at spawn).
    pub spawn_sites: bool,
    /// An unstripped copy of the target's build, for its symbols.
    pub symbols: Option<std::path::PathBuf>,
    pub mode: crate::plan::Mode,
}

/// The target's binary, with symbols from `--symbols` when given.
pub fn read_binary(
    exe: &Path,
    display: &str,
    symbols: Option<&Path>,
) -> Result<(BinaryInfo, LocationTable)> {
    // Each file is read once; its bytes serve both the symbol index and the location table.
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io_for(p, e));
    let data = read(exe)?;
    let bin = BinaryInfo::parse(exe, &data)?;
    match symbols {
        Some(sym) => {
            let sym_data = read(sym)?;
            let bin =
                bin.with_symbols_from(BinaryInfo::parse(sym, &sym_data)?, sym, Path::new(display))?;
            Ok((bin, LocationTable::parse(sym_data)))
        }
        None => Ok((bin, LocationTable::parse(data))),
    }
}

/// How often the ring is drained (the kernel side never wakes the reader per event).
const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// Progress output only for a person watching: stdout and stderr both on a terminal.
pub fn on_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub async fn trace(
    target: Target,
    mut launched: Option<Launched>,
    opts: &WindowOpts,
    mut recording: Option<Writer>,
) -> Result<Report> {
    let (bin, table) = read_binary(&target.exe, &target.display, opts.symbols.as_deref())?;
    let selection = tokio_versions::select(bin.tokio_version).map_err(Error::UnsupportedTokio)?;
    let knowledge = selection.knowledge;
    let plan = Plan::choose(
        std::path::Path::new(&target.display),
        &bin,
        &table,
        knowledge,
        crate::plan::PlanOpts {
            spawn_sites: opts.spawn_sites,
            mode: opts.mode,
        },
    )?;
    let mut warnings: Vec<String> = selection.warning.into_iter().collect();
    let mut locator = Locator::new(table, target.pid, target.exe.clone());
    locator.set_vtable_sites(plan.code_sites());
    let target_info = TargetInfo {
        pid: target.pid,
        binary: target.display.clone(),
        build_id: bin.build_id.clone(),
        tokio_version: bin.tokio_version.map(|v| v.to_string()),
    };

    let mut probes = Probes::attach(
        &target.exe,
        &plan,
        target.pid,
        &knowledge.layout,
        opts.ring_bytes,
    )?;
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
    if let Some(w) = recording.as_mut() {
        w.meta(&MetaRecord {
            format: "tasktrace.trace/1".into(),
            target: target_info.clone(),
            start_ns,
            start_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            state_bits: knowledge.state,
            probe_sites: probes.sites,
            plan: serde_json::to_value(&plan).unwrap_or_default(),
            attach_ms,
            warnings: warnings.clone(),
        });
    }
    let mut agg = Aggregator::new(knowledge.state, opts.thresholds);
    if opts.timeline {
        agg.timeline = Some(Default::default());
    }
    agg.configure(&serde_json::to_value(&plan).unwrap_or_default());
    let mut lists = ListReader::new(
        target.pid,
        knowledge,
        bin.instances(knowledge.symbols.raw_poll),
        plan.mode == crate::plan::Mode::Lifecycle,
    );
    let sampler = plan
        .current_task
        .map(|at| crate::sampler::Sampler::new(target.pid, at));
    // Readings during the window stand in for what no probe sees: completions (stripped),
    // wakes (one-hit polls) or polls (lifecycle). They back off when a reading is slow.
    let periodic_readings = !plan.completion_probed || !plan.wakes_probed;
    let mut next_reading = tokio::time::Instant::now() + READ_EVERY;
    // Tasks alive before attach: only the runtimes' own lists know them (a launched
    // command has not started yet: it has none).
    if launched.is_none() {
        let read = lists.read(&mut locator, &Default::default());
        apply_task_list(
            read,
            Reading::Attach,
            &mut agg,
            &mut recording,
            &mut warnings,
            opts.quiet,
        );
    }
    if let Some(l) = launched.as_mut() {
        l.release();
    }

    // Shared by the sink (records) and the loop (flushes, list readings), never at the
    // same time.
    let recording = std::cell::RefCell::new(recording);
    let agg = std::cell::RefCell::new(agg);
    let locator = std::cell::RefCell::new(locator);
    let mut futures: HashMap<u64, Option<Arc<str>>> = HashMap::new();
    // Out-of-line id draws: the spawn site at each call site (return address, file address).
    let caller_sites: HashMap<u64, Arc<str>> = plan
        .id_sites
        .iter()
        .flat_map(|s| &s.callers)
        .filter_map(|(ret, site)| Some((*ret, Arc::from(site.as_deref()?))))
        .collect();
    let mut sites_unmarked =
        plan.static_sites.iter().any(|s| !s.vtables.is_empty()) || !plan.vtable_sites.is_empty();
    // Live-task count for the status line, published by the sink.
    let alive = std::cell::Cell::new(0usize);
    // Set when the window closes: events after it (while the probes are being detached)
    // are outside the window and would only add half-seen polls.
    let cutoff = std::cell::Cell::new(u64::MAX);
    let mut sink = |r: Record| match r {
        Record::Task(ev) if ev.ts_ns > cutoff.get() => {
            agg.borrow_mut().diagnostics.after_window += 1
        }
        Record::Call(call) if call.ts_ns > cutoff.get() => {
            agg.borrow_mut().diagnostics.after_window += 1
        }
        Record::Stack(st) if st.ts_ns > cutoff.get() => {
            agg.borrow_mut().diagnostics.after_window += 1
        }
        // A spawn whose Location was already found needs no unwinding.
        Record::Stack(st) if agg.borrow_mut().has_pending_location(st.tid) => {}
        Record::Stack(st) => {
            let stack = &st.stack[..(st.len as usize).min(st.stack.len())];
            let caller = locator
                .borrow_mut()
                .unwound_caller(st.ip, st.sp, st.bp, stack);
            agg.borrow_mut().diagnostics.spawn_stacks += 1;
            agg.borrow_mut().diagnostics.spawn_stacks_resolved += u64::from(caller.is_some());
            if let Some(w) = recording.borrow_mut().as_mut() {
                w.stack_site(st.tid, caller.as_deref());
            }
            agg.borrow_mut().spawn_stack(st.tid, caller);
        }
        Record::Task(ev) => {
            alive.set(agg.borrow_mut().tasks_alive());
            if ev.vtable != 0 && !futures.contains_key(&ev.vtable) {
                let name = locator.borrow_mut().future_name(ev.vtable);
                let site = vtable_site(&mut locator.borrow_mut(), ev.vtable);
                if let Some(w) = recording.borrow_mut().as_mut()
                    && (name.is_some() || site.is_some())
                {
                    w.vtable(ev.vtable, name.as_deref(), site.as_deref());
                }
                agg.borrow_mut().vtable_site(ev.vtable, site);
                futures.insert(ev.vtable, name);
            }
            let future = futures.get(&ev.vtable).and_then(|n| n.as_deref());
            agg.borrow_mut().site_from_code(&ev, future);
            // An out-of-line id draw: its caller (the return address the probe read) is
            // the spawn, and the code there names it.
            if ev.kind == tracer_common::EventKind::SpawnId as u8
                && ev.owner_id != 0
                && let Some(bias) = locator.borrow_mut().bias()
                && let Some(site) = caller_sites.get(&ev.owner_id.wrapping_sub(bias))
            {
                if let Some(w) = recording.borrow_mut().as_mut() {
                    w.code_site(ev.tid, site);
                }
                agg.borrow_mut().spawn_code_site(ev.tid, Some(site.clone()));
            }
            if let Some(w) = recording.borrow_mut().as_mut() {
                w.task(&ev);
            }
            agg.borrow_mut().ingest(&ev);
        }
        Record::Call(call) => {
            let location = locator.borrow_mut().location(&call.args);
            let caller = if location.is_none() {
                locator.borrow_mut().caller(call.return_address)
            } else {
                None
            };
            if let Some(w) = recording.borrow_mut().as_mut() {
                w.site(call.tid, location.as_deref(), caller.as_deref());
            }
            agg.borrow_mut().spawn_call(call.tid, location, caller);
        }
    };

    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Launch(e.to_string()))?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut ticks = 0u64;
    let mut events_seen = 0u64;
    let mut events_at_last_update = 0u64;
    // A status line while recording, only on a terminal (quiet in pipes, logs and CI).
    let progress =
        (!opts.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .expect("template"),
            );
            bar
        });
    let ended_by = loop {
        tokio::select! {
            _ = tick.tick() => {
                // Once the target's addresses are known (a launched command maps its
                // binary only when it execs), spawns of those futures stop copying stacks.
                if sites_unmarked && let Some(bias) = locator.borrow_mut().bias() {
                    sites_unmarked = false;
                    let vtables = plan
                        .static_sites
                        .iter()
                        .flat_map(|s| s.vtables.iter().copied())
                        .chain(plan.vtable_sites.iter().map(|v| v.vtable));
                    probes.mark_sites_known(vtables.map(|v| v + bias));
                }
                events_seen += probes.drain(&mut sink) as u64;
                if let Some(bar) = progress.as_ref().filter(|_| ticks.is_multiple_of(50)) {
                    let rate = (events_seen - events_at_last_update) * 2;
                    events_at_last_update = events_seen;
                    bar.set_message(format!(
                        "{rate} events/s · {} live tasks · {} lost events · Ctrl-C ends the window",
                        alive.get(),
                        probes.lost_events()
                    ));
                    bar.tick();
                }
                if let Some(sampler) = sampler.as_ref().filter(|_| ticks.is_multiple_of(SAMPLE_EVERY_TICKS)) {
                    sample_threads(sampler, &probes, &agg, &recording);
                }
                if periodic_readings && tokio::time::Instant::now() >= next_reading {
                    let owners = agg.borrow().owners.clone();
                    let read = lists.read(&mut locator.borrow_mut(), &owners);
                    // Everything that happened while the lists were walked goes in first:
                    // the reading is then never newer than the model it is applied to.
                    events_seen += probes.drain(&mut sink) as u64;
                    let took = read.as_ref().map_or(0.0, |s| s.read_ms);
                    next_reading = tokio::time::Instant::now()
                        + READ_EVERY.max(Duration::from_secs_f64(took * 20.0 / 1e3));
                    apply_task_list(
                        read,
                        Reading::Periodic,
                        &mut agg.borrow_mut(),
                        &mut recording.borrow_mut(),
                        &mut warnings,
                        opts.quiet,
                    );
                }
                if let Some(w) = recording.borrow_mut().as_mut() {
                    w.flush();
                }
                ticks += 1;
                let exited = match launched.as_mut() {
                    Some(l) => l.poll_exit().is_some(),
                    None => ticks.is_multiple_of(10) && !target.is_alive(),
                };
                if exited {
                    break "target_exit";
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break "duration";
                }
            }
            _ = &mut ctrl_c => break "interrupted",
            _ = sigterm.recv() => break "interrupted",
        }
    };
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    // What the lists say at the end decides which leaks are certain: read them while the
    // target still runs, after everything the ring holds so far.
    if ended_by != "target_exit" && target.is_alive() {
        probes.drain(&mut sink);
        if let Some(sampler) = sampler.as_ref() {
            sample_threads(sampler, &probes, &agg, &recording);
        }
        let owners = agg.borrow().owners.clone();
        let read = lists.read(&mut locator.borrow_mut(), &owners);
        probes.drain(&mut sink);
        apply_task_list(
            read,
            Reading::End,
            &mut agg.borrow_mut(),
            &mut recording.borrow_mut(),
            &mut warnings,
            opts.quiet,
        );
    }
    let end_ns = monotonic_ns();
    cutoff.set(end_ns);
    let detach_time = probes.detach();
    probes.drain(&mut sink);
    drop(sink);
    let agg = agg.into_inner();
    // Tasks known only from the task lists sent no event that named their future.
    let mut locator = locator.into_inner();
    let mut agg = agg;
    let vtables: Vec<u64> = agg.tasks.iter().map(|t| t.vtable).collect();
    for vtable in vtables {
        if vtable != 0 && !futures.contains_key(&vtable) {
            let name = locator.future_name(vtable);
            let site = vtable_site(&mut locator, vtable);
            if let Some(w) = recording.borrow_mut().as_mut()
                && (name.is_some() || site.is_some())
            {
                w.vtable(vtable, name.as_deref(), site.as_deref());
            }
            agg.vtable_site(vtable, site);
            futures.insert(vtable, name);
        }
    }
    let lost = probes.lost_events();
    if let Some(l) = launched.as_mut() {
        l.terminate().await;
        if let Some(status) = l
            .poll_exit()
            .filter(|&s| s != 0 && ended_by == "target_exit")
        {
            warnings.push(format!("the command exited with status {status}"));
        }
    }
    let detach_ms = detach_time.as_secs_f64() * 1e3;
    if !opts.quiet {
        eprintln!(
            "tasktrace: detached {} probe sites in {detach_ms:.1} ms",
            probes.sites
        );
    }
    if let Some(w) = recording.borrow_mut().as_mut() {
        w.end(&EndRecord {
            end_ns,
            ended_by: ended_by.into(),
            lost_events: lost,
            detach_ms,
            after_window: agg.diagnostics.after_window,
            warnings: warnings.clone(),
        });
        warnings.extend(w.error());
    }
    let (emulated, single_stepped) = plan.execution_counts();
    let meta = Meta {
        target: target_info,
        start_ns,
        end_ns,
        ended_by,
        probes: ProbeInfo {
            sites: probes.sites,
            attach_ms,
            detach_ms,
            mode: plan.mode.as_str().into(),
            emulated,
            single_stepped,
        },
        lost_events: lost,
        warnings,
        unavailable: plan.unavailable.clone(),
        // Each task's future, resolved once per vtable.
        futures: futures
            .into_iter()
            .filter_map(|(vtable, name)| Some((vtable, name?)))
            .collect(),
    };
    Ok(Report::build(agg, meta))
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
/// Period of the task-list readings during a window (stretched when one is slow).
const READ_EVERY: Duration = Duration::from_secs(1);

/// One round of the thread sampler into the aggregator and the recording.
fn sample_threads(
    sampler: &crate::sampler::Sampler,
    probes: &Probes,
    agg: &std::cell::RefCell<Aggregator>,
    recording: &std::cell::RefCell<Option<Writer>>,
) {
    let at = monotonic_ns();
    let samples = sampler.sample(&probes.threads());
    if let Some(w) = recording.borrow_mut().as_mut() {
        w.samples(at, &samples);
    }
    agg.borrow_mut().thread_samples(at, &samples);
}

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
}

impl ListReader {
    fn new(
        pid: u32,
        knowledge: &'static tokio_versions::Knowledge,
        polls: &[u64],
        digests: bool,
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
        }
    }

    fn read(
        &mut self,
        locator: &mut Locator,
        owners: &std::collections::HashSet<u64>,
    ) -> std::result::Result<Snapshot, String> {
        if self.reader.is_none() {
            let vtables = locator
                .task_vtables(&self.polls, &self.knowledge.layout)
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
            .snapshot_from(monotonic_ns(), known)
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

/// Feeds a reading to the aggregator and the recording; a failed one becomes a warning.
fn apply_task_list(
    read: std::result::Result<Snapshot, String>,
    reading: Reading,
    agg: &mut Aggregator,
    recording: &mut Option<Writer>,
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
        if let Some(w) = recording.as_mut() {
            w.task_list(snap.taken_ns, attach, &part, owners, until);
        }
        if let Some(until) = until {
            agg.reading_until(until);
        }
        agg.task_list(&part, snap.taken_ns, attach, owners);
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
