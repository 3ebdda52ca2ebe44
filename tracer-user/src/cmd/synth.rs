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
        let mut push = |kind: EventKind, ts: u64| {
            w.record(&Rec::Task(TaskEvent {
                ts_ns: ts,
                header,
                task_id: task,
                state: 0xcc,
                owner_id: 1,
                vtable: 0x1000,
                tid,
                kind: kind as u8,
                ..Default::default()
            }))
        };
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
