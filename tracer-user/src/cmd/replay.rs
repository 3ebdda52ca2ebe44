//! `tasktrace report FILE`: replays a trace file through the same aggregator and
//! detectors as a live window, so a recording reports exactly what the live run did.

use std::path::Path;

use crate::{
    error::Result,
    model::{Aggregator, fold::Retention, verdict::Thresholds},
    report::{Meta, Report},
    stream::{EndRecord, EndedBy, Rec, tracefile},
};

pub fn report_from_file(
    path: &Path,
    thresholds: Thresholds,
    timeline: bool,
    keep: Retention,
) -> Result<Report> {
    if path.is_dir() {
        return Err(crate::error::Error::TraceFileIsDirectory {
            path: path.to_owned(),
        });
    }
    let file = std::fs::File::open(path).map_err(|e| crate::error::Error::io_for(path, e))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    // A bar for long replays, on a terminal only (by bytes: records are not counted ahead).
    let bar = (size > 64 << 20 && crate::cmd::term::on_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "replaying {bar:40} {bytes}/{total_bytes} ({eta} left)",
            )
            .expect("template"),
        );
        bar
    });
    let reader = match &bar {
        Some(bar) => Box::new(bar.wrap_read(file)) as Box<dyn std::io::Read>,
        None => Box::new(file),
    };
    let mut agg: Option<Aggregator> = None;
    let mut last_ts = 0;
    let info = tracefile::stream(path, reader, |rec| {
        match &rec {
            Rec::Meta(meta) => {
                agg = Some(Aggregator::for_window(meta, thresholds, timeline, keep));
                last_ts = meta.start_ns;
            }
            Rec::Task(ev) => last_ts = last_ts.max(ev.ts_ns),
            Rec::TaskList { at_ns, .. }
            | Rec::Samples { at_ns, .. }
            | Rec::TaskIds { at_ns, .. }
            | Rec::SpawnProbes { at_ns, .. }
            | Rec::Awaits { at_ns, .. }
            | Rec::Lost { at_ns, .. }
            | Rec::Stopped { to_ns: at_ns, .. } => last_ts = last_ts.max(*at_ns),
            Rec::Site { .. } | Rec::Future { .. } => {}
        }
        agg.as_mut().expect("metadata comes first").apply(&rec);
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut agg = agg.expect("stream checked the metadata");
    let trace = info;
    let end = match trace.end {
        Some(end) => {
            agg.diagnostics.after_window = end.after_window;
            end
        }
        None => EndRecord {
            end_ns: last_ts,
            ended_by: EndedBy::Truncated,
            lost_events: 0,
            detach_ms: 0.0,
            after_window: 0,
            warnings: vec![format!(
                "the recording has no end record (the tracer was stopped abruptly){}; verdicts are judged at its last event",
                trace
                    .truncated_at
                    .map(|o| format!(", and its last record is cut at byte {o}"))
                    .unwrap_or_default()
            )],
        },
    };
    Ok(Report::build(agg, Meta::of_window(&trace.meta, &end)))
}

#[cfg(test)]
mod tests {
    use tracer_common::{EventKind, TaskEvent};

    use super::*;
    use crate::{
        plan::PlanSummary,
        stream::{EndRecord, MetaRecord, TargetInfo, tracefile::Writer},
    };

    fn meta() -> MetaRecord {
        MetaRecord {
            start_ns: 1_000,
            ..MetaRecord::synthetic(TargetInfo::synthetic("/x"), PlanSummary::all_probed())
        }
    }

    fn ev(kind: EventKind, ts: u64, header: u64, id: u64) -> TaskEvent {
        TaskEvent {
            ts_ns: ts,
            header,
            task_id: id,
            owner_id: 1,
            tid: 7,
            kind: kind as u8,
            ..Default::default()
        }
    }

    /// Where the file is: at `path` with its end record, else still partial.
    fn write_sample(path: &Path, with_end: bool) -> std::path::PathBuf {
        let mut w = Writer::create(path).unwrap();
        w.meta(&meta());
        w.record(&Rec::Site {
            tid: 7,
            location: Some("src/app.rs:3:5".into()),
            caller: None,
            stack: false,
            code: false,
        });
        w.task(&ev(EventKind::Spawn, 2_000, 0x10, 1));
        w.task(&ev(EventKind::PollStart, 3_000, 0x10, 1));
        w.task(&ev(EventKind::PollEnd, 4_000, 0, 0));
        w.record(&Rec::Future {
            vtable: 0,
            name: "app::f".into(),
            site: None,
        });
        // A task found in a LocalSet's list at attach, unable to ever run again.
        w.record(&Rec::TaskList {
            at_ns: 5_000,
            attach: true,
            tasks: vec![crate::stream::records::ListedTask {
                header: 0x30,
                id: 3,
                owner_id: 2,
                vtable: 0,
                state: 0x40,
                digest: 0,
                refs: 1,
                list: crate::stream::records::ListKind::LocalSet,
                stable: true,
                status: crate::stream::records::Status::Idle,
                join_handle: false,
                no_way_to_run: true,
            }],
            complete_owners: Some(vec![2]),
            until_ns: Some(5_500),
        });
        w.task(&ev(EventKind::WakeByVal, 60_000_000_000, 0x99, 2));
        if with_end {
            w.end(&EndRecord {
                end_ns: 61_000_000_000,
                ended_by: EndedBy::Duration,
                lost_events: 0,
                detach_ms: 1.0,
                after_window: 0,
                warnings: vec![],
            });
        } else {
            w.flush();
        }
        w.partial_path().unwrap_or(path).to_owned()
    }

    fn th() -> Thresholds {
        Thresholds::new(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(5),
        )
    }

    #[test]
    fn round_trip_reports_the_same_verdicts() {
        let path = std::env::temp_dir().join(format!("tt-rt-{}.trace", std::process::id()));
        write_sample(&path, true);
        let r = report_from_file(&path, th(), false, Retention::default()).unwrap();
        assert_eq!(r.summary.leaked, 2);
        assert_eq!(r.summary.leaked_definite, 1);
        assert_eq!(r.summary.alive_before_attach, 1);
        let listed = r.tasks.iter().find(|t| t.id == 3).unwrap();
        assert_eq!(listed.kind, crate::model::TaskKind::Local);
        assert_eq!(listed.refs, Some(1));
        assert_eq!(r.tasks[0].spawned_at.as_deref(), Some("src/app.rs:3:5"));
        assert_eq!(r.window.ended_by, EndedBy::Duration);
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_or_a_partial_report_never_a_panic() {
        let path = std::env::temp_dir().join(format!("tt-cut-{}.trace", std::process::id()));
        write_sample(&path, true);
        let full = std::fs::read(&path).unwrap();
        for cut in 0..full.len() {
            let _ = tracefile::parse(&path, &full[..cut]);
        }
        // Deterministic byte flips over the whole file.
        let mut seed = 0x9e3779b97f4a7c15u64;
        for _ in 0..5_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bad = full.clone();
            let i = (seed as usize) % bad.len();
            bad[i] ^= (seed >> 32) as u8 | 1;
            let _ = tracefile::parse(&path, &bad);
        }
        let err = tracefile::parse(&path, b"TTRACE01\x09\x00\x00\x00\x00").unwrap_err();
        assert!(err.to_string().contains("offset 8"), "{err}");
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn a_file_cut_mid_record_still_reports_its_complete_part() {
        let path = std::env::temp_dir().join(format!("tt-kill-{}.trace", std::process::id()));
        let path = write_sample(&path, false);
        assert!(
            path.to_str().unwrap().contains(".partial-"),
            "{}",
            path.display()
        );
        let mut data = std::fs::read(&path).unwrap();
        data.extend_from_slice(&[2, 200, 0, 0, 0, 1, 2, 3]);
        std::fs::write(&path, &data).unwrap();
        let r = report_from_file(&path, th(), false, Retention::default()).unwrap();
        assert_eq!(r.window.ended_by, EndedBy::Truncated);
        assert_eq!(r.summary.tasks_seen, 3);
        assert!(r.warnings.iter().any(|w| w.contains("cut at byte")));
        std::fs::remove_file(&path).ok();
    }
}
