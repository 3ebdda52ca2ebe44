//! One trace window, start to finish: read the binary, plan, attach, stream events into
//! the aggregator until the window ends, detach, and build the report.

use std::time::Duration;

use crate::{
    elf::BinaryInfo,
    error::Result,
    locations::{LocationTable, Locator},
    model::Aggregator,
    plan::Plan,
    probes::{Probes, Record},
    report::{Meta, ProbeInfo, Report, TargetInfo},
    target::{Launched, Target},
    tokio_versions,
    verdict::Thresholds,
};

pub struct WindowOpts {
    pub duration: Option<Duration>,
    pub thresholds: Thresholds,
    pub ring_bytes: u32,
    pub quiet: bool,
}

/// How often the ring is drained (the kernel side never wakes the reader per event).
const DRAIN_EVERY: Duration = Duration::from_millis(10);

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
) -> Result<Report> {
    let bin = BinaryInfo::read(&target.exe)?;
    let selection =
        tokio_versions::select(bin.tokio_version).map_err(crate::error::Error::UnsupportedTokio)?;
    let knowledge = selection.knowledge;
    let plan = Plan::for_binary(std::path::Path::new(&target.display), &bin, knowledge)?;
    let mut warnings: Vec<String> = selection.warning.into_iter().collect();

    let mut probes = Probes::attach(
        &target.exe,
        &plan,
        target.pid,
        &knowledge.layout,
        opts.ring_bytes,
    )?;
    let start_ns = monotonic_ns();
    if !opts.quiet {
        eprintln!(
            "tasktrace: attached {} probe sites to pid {} in {:.1} ms; {}",
            probes.sites,
            target.pid,
            probes.attach_time.as_secs_f64() * 1e3,
            match opts.duration {
                Some(d) => format!("tracing for {:.1}s (Ctrl-C ends early)", d.as_secs_f64()),
                None => "tracing until the target exits or Ctrl-C".into(),
            }
        );
    }
    if let Some(l) = launched.as_mut() {
        l.release();
    }

    let mut agg = Aggregator::new(knowledge.state, opts.thresholds);
    let table = LocationTable::read(&target.exe)
        .map_err(|e| crate::error::Error::io_for(&target.exe, e))?;
    let mut locator = Locator::new(std::sync::Arc::new(table), target.pid, target.exe.clone());
    // Set when the window closes: events after it (while the probes are being detached)
    // are outside the window and would only add half-seen polls.
    let cutoff = std::cell::Cell::new(u64::MAX);
    let mut sink = |r: Record| match r {
        Record::Task(ev) if ev.ts_ns > cutoff.get() => agg.diagnostics.after_window += 1,
        Record::Call(call) if call.ts_ns > cutoff.get() => agg.diagnostics.after_window += 1,
        Record::Task(ev) => agg.ingest(&ev),
        Record::Call(call) => {
            let location = locator.location(&call.args);
            let caller = if location.is_none() {
                locator.caller(call.return_address)
            } else {
                None
            };
            agg.spawn_call(call.tid, location, caller);
        }
    };
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| crate::error::Error::Launch(e.to_string()))?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut ticks = 0u64;
    let ended_by = loop {
        tokio::select! {
            _ = tick.tick() => {
                probes.drain(&mut sink);
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
    let end_ns = monotonic_ns();
    cutoff.set(end_ns);
    let detach_time = probes.detach();
    probes.drain(&mut sink);
    drop(sink);
    // Name each task's future once, per vtable, before the report reads the tasks.
    let mut names = std::collections::HashMap::new();
    for t in agg.tasks.iter_mut().filter(|t| t.vtable != 0) {
        t.future = names
            .entry(t.vtable)
            .or_insert_with(|| locator.future_name(t.vtable))
            .clone();
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
    if !opts.quiet {
        eprintln!(
            "tasktrace: detached {} probe sites in {:.1} ms",
            probes.sites,
            detach_time.as_secs_f64() * 1e3
        );
    }
    if lost > 0 {
        warnings.push(format!(
            "{lost} events lost: the ring buffer was full; raise --ring-size"
        ));
    }
    let d = &agg.diagnostics;
    if d.unmatched_poll_ends + d.address_reuse + d.unreadable_headers > 0 {
        warnings.push(format!(
            "stream anomalies: {} unmatched poll ends, {} address reuses, {} unreadable headers",
            d.unmatched_poll_ends, d.address_reuse, d.unreadable_headers
        ));
    }
    let meta = Meta {
        target: TargetInfo {
            pid: target.pid,
            binary: target.display.clone(),
            build_id: bin.build_id.clone(),
            tokio_version: bin.tokio_version.map(|v| v.to_string()),
        },
        start_ns,
        end_ns,
        ended_by,
        probes: ProbeInfo {
            sites: probes.sites,
            attach_ms: probes.attach_time.as_secs_f64() * 1e3,
            detach_ms: detach_time.as_secs_f64() * 1e3,
        },
        lost_events: lost,
        warnings,
    };
    Ok(Report::build(&agg, meta))
}
