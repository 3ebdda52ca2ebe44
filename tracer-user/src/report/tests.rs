//! Each renderer on one fixed model: a window with a task of every verdict, built from
//! stream records as a live window or a replay builds it.

use tracer_common::{EventKind, TaskEvent};

use super::{Meta, ProbeInfo, Report, render_html, render_perfetto, render_text};
use crate::{
    model::{Aggregator, fold::Retention, verdict::Thresholds},
    plan::{PlanSummary, Unavailable},
    stream::{MetaRecord, Rec, TargetInfo},
};

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;

fn target() -> TargetInfo {
    TargetInfo {
        pid: 4242,
        pid_in_namespace: None,
        binary: "/srv/app".into(),
        build_id: None,
        tokio_version: Some("1.54.1".into()),
    }
}

fn ev(kind: EventKind, ts: u64, header: u64, id: u64) -> Rec {
    Rec::Task(TaskEvent {
        ts_ns: ts,
        header,
        task_id: id,
        state: 0xcc,
        owner_id: 1,
        tid: 7,
        kind: kind as u8,
        ..Default::default()
    })
}

fn site(location: &str) -> Rec {
    Rec::Site {
        tid: 7,
        location: Some(location.into()),
        caller: None,
        stack: false,
        code: false,
    }
}

/// Task 1 finishes, task 2 idles (leaked), task 3's poll never returns (stuck), task 4 is
/// never polled; a 60 s window.
fn report() -> Report {
    let meta = MetaRecord::synthetic(target(), PlanSummary::all_probed());
    let th = Thresholds::new(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(2),
    );
    let mut agg = Aggregator::for_window(&meta, th, true, Retention::default());
    for rec in [
        site("src/app.rs:10:5"),
        ev(EventKind::Spawn, MS, 0x1000, 1),
        ev(EventKind::PollStart, 2 * MS, 0x1000, 1),
        ev(EventKind::Complete, 3 * MS, 0x1000, 1),
        ev(EventKind::PollEnd, 3 * MS, 0x1000, 1),
        site("src/app.rs:20:9"),
        ev(EventKind::Spawn, 5 * MS, 0x2000, 2),
        ev(EventKind::PollStart, 6 * MS, 0x2000, 2),
        ev(EventKind::PollEnd, 7 * MS, 0x2000, 2),
        site("src/app.rs:30:1"),
        ev(EventKind::Spawn, 10 * MS, 0x3000, 3),
        ev(EventKind::PollStart, 20 * MS, 0x3000, 3),
        site("src/app.rs:40:7"),
        ev(EventKind::Spawn, 40 * MS, 0x4000, 4),
    ] {
        agg.apply(&rec);
    }
    Report::build(agg, meta_60s())
}

fn meta_60s() -> Meta {
    Meta {
        target: target(),
        start_ns: 0,
        end_ns: 60 * S,
        ended_by: crate::stream::EndedBy::Duration,
        probes: ProbeInfo {
            sites: 12,
            attach: crate::plan::AttachMode::Multi,
            attach_ms: 1.0,
            detach_ms: 2.0,
            mode: "full".into(),
            emulated: 12,
            single_stepped: 0,
        },
        lost_events: 3,
        warnings: vec!["a warning for the reader".into()],
        unavailable: vec![Unavailable {
            what: "futures".into(),
            why: "no symbols".into(),
        }],
    }
}

/// A churning site (400 tasks, 5 ms each, over 20 s), one leaked task and one stuck,
/// reported with every task kept and with the finished ones folded.
fn churn_report(keep: Retention) -> Report {
    let meta = MetaRecord::synthetic(target(), PlanSummary::all_probed());
    let th = Thresholds::new(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(2),
    );
    let mut agg = Aggregator::for_window(&meta, th, false, keep);
    agg.fold_at(50);
    let mut recs = vec![
        site("src/leak.rs:1:1"),
        ev(EventKind::Spawn, S, 0x10, 1),
        ev(EventKind::PollStart, S + MS, 0x10, 1),
        ev(EventKind::PollEnd, S + 2 * MS, 0x10, 1),
    ];
    for i in 0..400u64 {
        let (at, h, id) = (2 * S + i * 50 * MS, 0x1000 + i * 0x100, 10 + i);
        recs.extend([
            site("src/churn.rs:2:2"),
            ev(EventKind::Spawn, at, h, id),
            ev(EventKind::PollStart, at + MS, h, id),
            ev(EventKind::Complete, at + 5 * MS, h, id),
            ev(EventKind::PollEnd, at + 5 * MS, h, id),
        ]);
        if i % 2 == 0 {
            recs.push(ev(EventKind::Dealloc, at + 6 * MS, h, id));
        }
        // A late wake of a task long finished (its waker outlived it).
        if i == 300 {
            recs.push(ev(
                EventKind::WakeByVal,
                at + 7 * MS,
                0x1000 + 101 * 0x100,
                0,
            ));
        }
    }
    recs.extend([
        site("src/stuck.rs:3:3"),
        ev(EventKind::Spawn, 30 * S, 0x20, 9000),
        ev(EventKind::PollStart, 30 * S + MS, 0x20, 9000),
    ]);
    for rec in recs {
        agg.apply(&rec);
    }
    let mut meta = meta_60s();
    meta.lost_events = 0;
    Report::build(agg, meta)
}

#[test]
fn folding_finished_tasks_changes_no_count_verdict_or_series() {
    let (all, folded) = (
        churn_report(Retention::all()),
        churn_report(Retention::default()),
    );
    let counts = |r: &Report| {
        let s = &r.summary;
        (
            s.tasks_seen,
            s.alive,
            s.completed,
            s.leaked,
            s.stuck,
            s.never_polled,
            s.ok,
        )
    };
    assert_eq!(counts(&all), (402, 2, 400, 1, 1, 0, 400));
    assert_eq!(counts(&folded), counts(&all));
    assert_eq!(all.summary.folded, 0);
    assert!(folded.summary.folded >= 300, "{}", folded.summary.folded);
    assert_eq!(
        folded.tasks.len() as u64 + folded.summary.folded,
        all.tasks.len() as u64
    );
    let sites = |r: &Report| {
        r.spawn_sites
            .iter()
            .map(|s| {
                (
                    s.site.clone(),
                    s.spawned,
                    s.completed,
                    s.alive,
                    s.leaked,
                    s.stuck,
                    s.ok,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(sites(&folded), sites(&all));
    // Folded lives count as the mean population of a bucket (here 0.1 tasks), where the
    // kept ones count at the instant (here 1: a spawn falls on every sample).
    for (a, f) in all.spawn_sites.iter().zip(&folded.spawn_sites) {
        for (pa, pf) in a.live_series.iter().zip(&f.live_series) {
            assert!(pa[1].abs_diff(pf[1]) <= 1, "{:?}: {pa:?} {pf:?}", a.site);
        }
        assert_eq!(a.growing, f.growing);
    }
    let churn = |r: &Report| {
        r.spawn_sites
            .iter()
            .find(|s| s.site.as_deref() == Some("src/churn.rs:2:2"))
            .map(|s| (s.folded, s.live_series.iter().map(|p| p[1]).max()))
            .unwrap()
    };
    assert_eq!(churn(&all).0, 0);
    assert_eq!(churn(&folded).0, folded.summary.folded);
    // The stuck task and the leak are reported task by task.
    for id in [1, 9000] {
        assert!(folded.tasks.iter().any(|t| t.id == id));
    }
}

#[test]
fn the_model_judges_one_task_of_each_verdict() {
    let r = report();
    let s = &r.summary;
    assert_eq!(
        (s.tasks_seen, s.leaked, s.stuck, s.never_polled, s.ok),
        (4, 1, 1, 1, 1)
    );
    assert_eq!(s.lost_events, 3);
}

#[test]
fn text_groups_flagged_tasks_by_verdict_and_site() {
    let t = render_text(&report());
    assert!(
        t.starts_with(
            "tasktrace: pid 4242 (/srv/app), tokio 1.54.1, window 60.0s, ended by duration"
        ),
        "{t}"
    );
    for needle in [
        "4 tasks seen",
        "leaked 1 (0 definite), stuck 1, never polled 1, ok 1",
        "warning: a warning for the reader",
        "unavailable: futures — no symbols",
        "LEAKED (1):",
        "STUCK (1):",
        "NEVER POLLED (1):",
        "src/app.rs:20:9",
        "src/app.rs:30:1",
        "src/app.rs:40:7",
    ] {
        assert!(t.contains(needle), "no {needle:?} in:\n{t}");
    }
    // The task that finished is not listed among the flagged ones, only in the sites.
    let flagged = &t[t.find("LEAKED").unwrap()..t.find("SPAWN SITES").unwrap()];
    assert!(!flagged.contains("src/app.rs:10:5"), "{t}");
    assert!(flagged.contains("task      2 async    idle 60.0s"), "{t}");
}

#[test]
fn html_is_one_self_contained_page_with_the_verdicts_and_charts() {
    let h = render_html(&report());
    assert!(
        h.starts_with("<!DOCTYPE html>"),
        "{}",
        &h[..80.min(h.len())]
    );
    assert!(h.trim_end().ends_with("</html>"));
    assert!(h.contains("<svg"), "charts are inline SVG");
    assert!(!h.contains("src=\"http"), "no external resource");
    for needle in ["/srv/app", "src/app.rs:20:9", "src/app.rs:30:1", "leaked"] {
        assert!(h.contains(needle), "no {needle:?} in the page");
    }
}

/// The incident story on top: one mark per flagged task on the timeline, the trigger of
/// a flight incident named, and each flagged site open in the drill-down.
#[test]
fn html_timeline_marks_each_verdict_and_names_an_incidents_trigger() {
    let mut r = report();
    let h = render_html(&r);
    let timeline = &h[h.find("<h2>Timeline</h2>").unwrap()..h.find("id=\"leaked\"").unwrap()];
    assert_eq!(timeline.matches("<polygon").count(), 3, "{timeline}");
    assert!(timeline.contains("dashed: the attach."), "{timeline}");
    let drill = &h[h.find("id=\"drill-down\"").unwrap()..];
    assert!(
        drill.contains("<details open><summary><code>src/app.rs:20:9</code>"),
        "{drill}"
    );
    r.warnings.push("incident: trigger stuck 1 (was 0)".into());
    let h = render_html(&r);
    assert!(h.contains("the incident: trigger stuck 1 (was 0)"), "{h}");
}

#[test]
fn perfetto_has_a_slice_per_poll_and_an_instant_per_flag() {
    let v = render_perfetto(&report());
    let events = v["traceEvents"].as_array().unwrap();
    let count = |ph: &str| events.iter().filter(|e| e["ph"] == ph).count();
    // Three polls ended (tasks 1, 2; task 3's still runs at the window end: recorded up
    // to it in the timeline, or not at all — never a slice without its end).
    assert_eq!(count("b"), count("e"));
    assert!(count("b") >= 2, "{v}");
    let flags: Vec<&str> = events
        .iter()
        .filter(|e| e["ph"] == "n" && e["args"]["reason"].is_string())
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let mut flags = flags;
    flags.sort_unstable();
    assert_eq!(flags, ["leaked", "never_polled", "stuck"]);
    // The live-task counter ends at the tasks still alive: 2, 3 and 4.
    let last = events.iter().rev().find(|e| e["ph"] == "C").unwrap();
    assert_eq!(last["args"]["live"], 3);
}

#[test]
fn spawn_sites_count_their_tasks_by_verdict() {
    let r = report();
    let by = |s: &str| {
        r.spawn_sites
            .iter()
            .find(|x| x.site.as_deref() == Some(s))
            .unwrap_or_else(|| panic!("no site {s}"))
    };
    assert_eq!(
        (by("src/app.rs:10:5").spawned, by("src/app.rs:10:5").ok),
        (1, 1)
    );
    assert_eq!(by("src/app.rs:20:9").leaked, 1);
    assert_eq!(by("src/app.rs:30:1").stuck, 1);
    assert_eq!(by("src/app.rs:40:7").never_polled, 1);
}

/// The report holds an entry per task, built as the model shrinks: about as small as the
/// model's record (`model::Task`, its own size test), plus the pointer to its await chain
/// (shared, and held by the few tasks a reading found idle).
#[test]
fn a_task_entry_stays_small() {
    let report = std::mem::size_of::<super::TaskReport>();
    assert!(report <= 168, "TaskReport is {report} bytes");
}

/// Strings from the target reach the terminal inert and the page escaped: a source path
/// may hold markup, quotes, an escape sequence and a newline that would forge a line.
#[test]
fn hostile_strings_from_the_target_are_inert() {
    let hostile = "src/<script>alert('x')</script>\"q\".rs\x1b[31m\nLEAKED (999):";
    let mut r = report();
    for t in &mut r.tasks {
        t.spawned_at = Some(hostile.into());
        t.future = Some(hostile.into());
    }
    for s in &mut r.spawn_sites {
        s.site = Some(hostile.to_owned());
    }
    r.target.binary = hostile.into();
    let text = render_text(&r);
    assert!(
        !text.contains('\x1b'),
        "an escape sequence reached the terminal"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("LEAKED (999)")),
        "a forged line:\n{text}"
    );
    assert!(text.contains("\\u{1b}[31m"), "{text}");
    let html = render_html(&r);
    assert!(!html.contains("<script>"), "markup reached the page");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)"));
}

#[test]
fn terminal_safe_leaves_ordinary_strings_alone() {
    assert!(matches!(
        super::terminal_safe("src/main.rs:10:5"),
        std::borrow::Cow::Borrowed(_)
    ));
    assert_eq!(super::terminal_safe("a\tb\u{9b}c"), "a\\u{9}b\\u{9b}c");
}
