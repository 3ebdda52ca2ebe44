//! A synthetic recording for `cargo xtask bench report`: a service-like stream (tasks live
//! a while, are woken and polled many times, most complete, a few never finish) written
//! by the recording's own writer, so the benchmark reads exactly what a real window
//! writes.

use std::path::Path;

use tracer_common::{EventKind, TaskEvent};

use crate::{
    error::Result,
    plan::PlanSummary,
    stream::{EndRecord, EndedBy, MetaRecord, Rec, TargetInfo, tracefile::Writer},
};

const POLLS_PER_TASK: u64 = 20;
/// Spawn, (wake, poll start, poll end) × N, complete.
const PER_TASK: u64 = 2 + POLLS_PER_TASK * 3;

/// One event of task `task` (a single runtime, a single future type).
fn event(kind: EventKind, ts: u64, header: u64, task: u64, tid: u32) -> Rec {
    Rec::Task(TaskEvent {
        ts_ns: ts,
        header,
        task_id: task,
        state: 0xcc,
        owner_id: 1,
        vtable: 0x1000,
        tid,
        kind: kind as u8,
        ..Default::default()
    })
}

pub fn write(path: &Path, events: u64) -> Result<()> {
    let mut w = Writer::create(path)?;
    w.meta(&MetaRecord::synthetic(
        TargetInfo::synthetic("synthetic"),
        PlanSummary::all_probed(),
    ));
    let (mut written, mut task, mut ts) = (0u64, 0u64, 1_000u64);
    while written < events {
        task += 1;
        let header = 0x10_0000 + task * 0x100;
        let tid = 100 + (task % 4) as u32;
        let mut push = |kind: EventKind, ts: u64| w.record(&event(kind, ts, header, task, tid));
        push(EventKind::Spawn, ts);
        for p in 0..POLLS_PER_TASK {
            let t = ts + 1_000 + p * 10_000;
            push(EventKind::WakeByVal, t);
            push(EventKind::PollStart, t + 100);
            push(EventKind::PollEnd, t + 2_100);
        }
        if !task.is_multiple_of(1_000) {
            push(EventKind::Complete, ts + POLLS_PER_TASK * 10_000 + 5_000);
        }
        written += PER_TASK;
        ts += 50_000;
        if task.is_multiple_of(256) {
            w.flush();
        }
    }
    w.end(&EndRecord {
        end_ns: ts + 60_000_000_000,
        ended_by: EndedBy::Duration,
        lost_events: 0,
        detach_ms: 0.0,
        after_window: 0,
        warnings: vec![],
    });
    w.check()
}

/// Simulated seconds between two leaked tasks of [`write_long`].
pub const LONG_LEAK_EVERY_S: u64 = 10;

/// A long window of a spawn-heavy service (`cargo xtask bench long`): `rate` tasks a
/// second for `seconds` of simulated time, each spawned, polled twice and completed within
/// 5 ms at one of 4 096 recycled addresses, and one task every `LONG_LEAK_EVERY_S` seconds
/// that is polled once and then idles for good (leaked by the window's end if it has had
/// the leak threshold). Per-spawn-site Location records name two sites.
pub fn write_long(path: &Path, rate: u64, seconds: u64) -> Result<()> {
    const MS: u64 = 1_000_000;
    let mut w = Writer::create(path)?;
    w.meta(&MetaRecord::synthetic(
        TargetInfo::synthetic("synthetic-long"),
        PlanSummary::all_probed(),
    ));
    let gap = 1_000_000_000 / rate.max(1);
    let leak_every = (LONG_LEAK_EVERY_S * rate).max(1);
    let total = rate.saturating_mul(seconds);
    let start = 1_000_000u64;
    for task in 1..=total {
        let ts = start + task * gap;
        let leaks = task.is_multiple_of(leak_every);
        let header = if leaks {
            0x4000_0000 + task * 0x100
        } else {
            0x10_0000 + (task % 4096) * 0x100
        };
        let tid = 100 + (task % 4) as u32;
        w.record(&Rec::Site {
            tid,
            location: Some(
                if leaks {
                    "src/leak.rs:7:9"
                } else {
                    "src/handler.rs:42:5"
                }
                .into(),
            ),
            caller: None,
            stack: false,
            code: false,
        });
        let mut push = |kind: EventKind, at: u64| w.record(&event(kind, at, header, task, tid));
        push(EventKind::Spawn, ts);
        push(EventKind::PollStart, ts + MS / 10);
        push(EventKind::PollEnd, ts + MS / 5);
        if !leaks {
            push(EventKind::PollStart, ts + 4 * MS);
            push(EventKind::Complete, ts + 5 * MS);
            push(EventKind::PollEnd, ts + 5 * MS);
        }
        if task.is_multiple_of(256) {
            w.flush();
        }
    }
    w.end(&EndRecord {
        end_ns: start + total * gap + 10 * MS,
        ended_by: EndedBy::Duration,
        lost_events: 0,
        detach_ms: 0.0,
        after_window: 0,
        warnings: vec![],
    });
    w.check()
}
