//! Reconstruction and verdicts on synthetic event streams: the edge cases a live trace
//! rarely shows on demand (lost events, address reuse, shutdown, nesting).

use tracer_common::{EVENT_FLAG_UNREADABLE, EventKind, TaskEvent};

use super::{Aggregator, Task, TaskKind, TaskState};
use crate::{
    model::verdict::{Reason, Thresholds, Verdict, final_judgement},
    plan::PlanSummary,
    tokio_versions::select,
};

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;
const RUNNING: u64 = 0x1;
const CANCELLED: u64 = 0x20;

fn agg() -> Aggregator {
    let k = select(None).unwrap().knowledge;
    Aggregator::new(
        k.state,
        Thresholds::new(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(2),
        ),
    )
}

fn ev(kind: EventKind, ts: u64, header: u64, id: u64, tid: u32) -> TaskEvent {
    TaskEvent {
        ts_ns: ts,
        header,
        task_id: id,
        state: 0xcc,
        owner_id: 1,
        tid,
        kind: kind as u8,
        ..Default::default()
    }
}

fn spawn(a: &mut Aggregator, ts: u64, h: u64, id: u64) {
    a.ingest(&ev(EventKind::Spawn, ts, h, id, 1));
}

fn poll(a: &mut Aggregator, start: u64, end: u64, h: u64, id: u64, tid: u32) {
    a.ingest(&ev(EventKind::PollStart, start, h, id, tid));
    a.ingest(&ev(EventKind::PollEnd, end, 0, 0, tid));
}

fn verdict_at(a: &Aggregator, id: u64, at: u64) -> (Verdict, Reason) {
    let t = a.tasks.iter().rev().find(|t| t.id == id).expect("task");
    let j = final_judgement(t, at, a.thresholds());
    (j.verdict, j.reason)
}

#[test]
fn idle_task_is_leaked_only_after_threshold() {
    let mut a = agg();
    spawn(&mut a, 0, 0x1000, 7);
    poll(&mut a, MS, 2 * MS, 0x1000, 7, 10);
    assert_eq!(verdict_at(&a, 7, 9 * S), (Verdict::Ok, Reason::Active));
    assert_eq!(
        verdict_at(&a, 7, 11 * S),
        (Verdict::Leaked, Reason::IdleSinceLastPoll)
    );
}

#[test]
fn periodic_task_is_never_leaked() {
    let mut a = agg();
    spawn(&mut a, 0, 0x1000, 1);
    for i in 0..100 {
        let t = i * S;
        a.ingest(&ev(EventKind::WakeByRef, t, 0x1000, 1, 3));
        poll(&mut a, t + MS, t + 2 * MS, 0x1000, 1, 10);
    }
    assert_eq!(verdict_at(&a, 1, 100 * S).0, Verdict::Ok);
    assert_eq!(a.tasks[0].polls, 100);
    assert_eq!(a.tasks[0].wakes, 100);
}

#[test]
fn never_polled_needs_threshold_and_wins_over_starved() {
    let mut a = agg();
    spawn(&mut a, 0, 0x2000, 2);
    a.ingest(&ev(EventKind::WakeByVal, 100 * MS, 0x2000, 2, 3));
    assert_eq!(verdict_at(&a, 2, S).0, Verdict::Ok);
    assert_eq!(
        verdict_at(&a, 2, 3 * S),
        (Verdict::NeverPolled, Reason::NeverPolled)
    );
}

#[test]
fn long_poll_in_progress_is_stuck_and_ended_one_is_listed() {
    let mut a = agg();
    spawn(&mut a, 0, 0x3000, 3);
    a.ingest(&ev(EventKind::PollStart, MS, 0x3000, 3, 10));
    assert_eq!(
        verdict_at(&a, 3, 2 * S),
        (Verdict::Stuck, Reason::BlockingPoll)
    );
    a.ingest(&ev(EventKind::PollEnd, 1500 * MS, 0, 0, 10));
    assert_eq!(a.long_polls.len(), 1);
    assert_eq!(a.long_polls[0].task_id, 3);
    assert_eq!(verdict_at(&a, 3, 2 * S).0, Verdict::Ok);
}

#[test]
fn blocking_tasks_may_block() {
    let mut a = agg();
    a.ingest(&ev(EventKind::SpawnBlocking, 0, 0x4000, 4, 1));
    a.ingest(&ev(EventKind::PollStart, MS, 0x4000, 4, 11));
    assert_eq!(a.tasks[0].kind, TaskKind::Blocking);
    assert_eq!(verdict_at(&a, 4, 60 * S).0, Verdict::Ok);
    a.ingest(&ev(EventKind::PollEnd, 30 * S, 0, 0, 11));
    assert!(a.long_polls.is_empty());
}

#[test]
fn woken_but_not_polled_is_starved() {
    let mut a = agg();
    spawn(&mut a, 0, 0x5000, 5);
    poll(&mut a, MS, 2 * MS, 0x5000, 5, 10);
    a.ingest(&ev(EventKind::WakeByVal, 3 * S, 0x5000, 5, 12));
    assert_eq!(a.tasks[0].state(), TaskState::Scheduled);
    assert_eq!(verdict_at(&a, 5, 3 * S + 500 * MS).0, Verdict::Ok);
    assert_eq!(verdict_at(&a, 5, 5 * S), (Verdict::Stuck, Reason::Starved));
}

#[test]
fn wake_during_poll_leaves_task_scheduled() {
    let mut a = agg();
    spawn(&mut a, 0, 0x5000, 5);
    a.ingest(&ev(EventKind::PollStart, MS, 0x5000, 5, 10));
    a.ingest(&ev(EventKind::WakeByRef, 2 * MS, 0x5000, 5, 10));
    a.ingest(&ev(EventKind::PollEnd, 3 * MS, 0, 0, 10));
    assert_eq!(a.tasks[0].state(), TaskState::Scheduled);
    assert_eq!(a.tasks[0].scheduled_since.get(), Some(2 * MS));
}

#[test]
fn completed_and_freed_tasks_are_ok() {
    let mut a = agg();
    spawn(&mut a, 0, 0x6000, 6);
    a.ingest(&ev(EventKind::PollStart, MS, 0x6000, 6, 10));
    a.ingest(&ev(EventKind::Complete, 2 * MS, 0x6000, 6, 10));
    a.ingest(&ev(EventKind::PollEnd, 3 * MS, 0, 0, 10));
    a.ingest(&ev(EventKind::Dealloc, 4 * MS, 0x6000, 6, 10));
    assert_eq!(a.tasks[0].state(), TaskState::Freed);
    assert_eq!(verdict_at(&a, 6, 100 * S), (Verdict::Ok, Reason::Finished));
    assert_eq!(a.tasks_alive(), 0);
}

#[test]
fn address_reuse_never_merges_two_tasks() {
    let mut a = agg();
    spawn(&mut a, 0, 0x7000, 70);
    poll(&mut a, MS, 2 * MS, 0x7000, 70, 10);
    // The dealloc of task 70 was lost; a new task lives at the same address.
    spawn(&mut a, 3 * MS, 0x7000, 71);
    poll(&mut a, 4 * MS, 5 * MS, 0x7000, 71, 10);
    // A stale-id event at the reused address also starts a new task rather than merging.
    a.ingest(&ev(EventKind::WakeByRef, 6 * MS, 0x7000, 72, 10));
    assert_eq!(a.tasks.len(), 3);
    assert_eq!(
        a.tasks_alive(),
        1,
        "only the last occupant of the address is alive"
    );
    assert_eq!(a.tasks[0].state(), TaskState::Freed);
    assert_eq!(a.tasks[1].polls, 1);
    assert_eq!(a.tasks[1].state(), TaskState::Freed);
    assert!(a.diagnostics.address_reuse >= 1);
    // Only the live occupant is judged as alive.
    assert_eq!(verdict_at(&a, 70, 60 * S).0, Verdict::Ok);
}

#[test]
fn lost_poll_start_is_counted_not_misattributed() {
    let mut a = agg();
    spawn(&mut a, 0, 0x8000, 8);
    a.ingest(&ev(EventKind::PollEnd, MS, 0, 0, 10));
    assert_eq!(a.diagnostics.unmatched_poll_ends, 1);
    assert_eq!(a.tasks[0].polls, 0);
}

#[test]
fn unreadable_header_is_counted() {
    let mut a = agg();
    let mut e = ev(EventKind::PollStart, 1, 0x9000, 0, 10);
    e.flags = EVENT_FLAG_UNREADABLE;
    a.ingest(&e);
    assert_eq!(a.diagnostics.unreadable_headers, 1);
    assert!(a.tasks.is_empty());
}

#[test]
fn task_from_before_the_trace_has_no_spawn_time() {
    let mut a = agg();
    poll(&mut a, 5 * S, 5 * S + MS, 0xa000, 99, 10);
    let t = &a.tasks[0];
    assert_eq!(t.spawned_ns.get(), None);
    assert_eq!(t.kind, TaskKind::Async);
    assert_eq!(verdict_at(&a, 99, 30 * S).0, Verdict::Leaked);
}

#[test]
fn shutdown_freezes_verdicts_at_its_start() {
    let mut a = agg();
    spawn(&mut a, 0, 0xb000, 1);
    poll(&mut a, MS, 2 * MS, 0xb000, 1, 10); // idle since 2 ms: leaked at 11 s
    spawn(&mut a, 8 * S, 0xb100, 2);
    poll(&mut a, 8 * S, 8 * S + MS, 0xb100, 2, 10); // idle 4 s at shutdown: ok
    a.ingest(&ev(EventKind::Shutdown, 12 * S, 0xb000, 1, 10));
    a.ingest(&ev(EventKind::Complete, 12 * S + 1, 0xb000, 1, 10));
    // The second task is shut down a little later, but judged at the runtime's start of shutdown.
    a.ingest(&ev(EventKind::Shutdown, 12 * S + 300 * MS, 0xb100, 2, 10));
    let window_end = 100 * S;
    assert_eq!(verdict_at(&a, 1, window_end).0, Verdict::Leaked);
    assert_eq!(verdict_at(&a, 2, window_end).0, Verdict::Ok);
    let j = final_judgement(&a.tasks[0], window_end, a.thresholds());
    assert_eq!(j.at_ns, 12 * S);
}

#[test]
fn aborted_idle_task_is_cancelled_not_polled() {
    let mut a = agg();
    spawn(&mut a, 0, 0xc000, 12);
    poll(&mut a, MS, 2 * MS, 0xc000, 12, 10);
    let mut start = ev(EventKind::PollStart, 3 * MS, 0xc000, 12, 10);
    start.state = CANCELLED | 0x4;
    a.ingest(&start);
    let mut done = ev(EventKind::Complete, 4 * MS, 0xc000, 12, 10);
    done.state = CANCELLED | RUNNING;
    a.ingest(&done);
    a.ingest(&ev(EventKind::PollEnd, 5 * MS, 0, 0, 10));
    let t = &a.tasks[0];
    assert_eq!(t.polls, 1);
    assert_eq!(t.state(), TaskState::Cancelled);
}

#[test]
fn raw_poll_of_a_running_task_is_not_a_poll() {
    let mut a = agg();
    spawn(&mut a, 0, 0xd000, 13);
    let mut start = ev(EventKind::PollStart, MS, 0xd000, 13, 10);
    start.state = RUNNING | 0x4;
    a.ingest(&start);
    a.ingest(&ev(EventKind::PollEnd, 2 * S, 0, 0, 10));
    assert_eq!(a.tasks[0].polls, 0);
    assert!(a.long_polls.is_empty());
}

#[test]
fn worker_hosting_blocking_task_is_plumbing() {
    let mut a = agg();
    a.ingest(&ev(EventKind::SpawnBlocking, 0, 0xe000, 20, 1));
    a.ingest(&ev(EventKind::PollStart, MS, 0xe000, 20, 10));
    spawn(&mut a, 2 * MS, 0xe100, 21);
    poll(&mut a, 3 * MS, 4 * MS, 0xe100, 21, 10);
    let host = &a.tasks[0];
    assert!(host.is_plumbing());
    assert_eq!(
        verdict_at(&a, 20, 100 * S),
        (Verdict::Ok, Reason::RuntimePlumbing)
    );
    // The nested poll ended and was attributed to the inner task, not the host.
    assert_eq!(a.tasks[1].polls, 1);
    assert_eq!(a.tasks[0].state(), TaskState::Running);
}

#[test]
fn spawn_seen_after_the_first_poll_is_the_same_task() {
    let mut a = agg();
    // bind_inner inlined: the spawn is seen at bind_new_task's return, after a worker
    // already polled the task.
    poll(&mut a, MS, 2 * MS, 0xf000, 30, 11);
    spawn(&mut a, 3 * MS, 0xf000, 30);
    assert_eq!(a.tasks.len(), 1);
    assert_eq!(a.tasks[0].spawned_ns.get(), Some(MS));
    assert_eq!(a.tasks[0].polls, 1);
    assert_eq!(a.tasks_alive(), 1);
}

// Task-list readings (tasks alive before attach, certainty of leaks).

use crate::stream::records::{ListKind, ListedTask, Status};

fn listed(h: u64, id: u64, status: Status, refs: u32, join: bool) -> ListedTask {
    let no_way_to_run = status == Status::Idle && refs == 1 && !join;
    ListedTask {
        header: h,
        id,
        owner_id: 1,
        vtable: 0x5000,
        state: u64::from(refs) << 6,
        digest: 0,
        refs,
        list: ListKind::Runtime,
        stable: true,
        status,
        join_handle: join,
        no_way_to_run,
    }
}

fn certainty(a: &Aggregator, id: u64, at: u64) -> Option<crate::model::verdict::Certainty> {
    let t = a.tasks.iter().find(|t| t.id == id).expect("task");
    final_judgement(t, at, a.thresholds()).certainty
}

#[test]
fn tasks_listed_at_attach_are_judged_from_the_attach_on() {
    use crate::model::verdict::Certainty;
    let mut a = agg();
    let attach = 100 * S;
    a.task_list(
        &[
            listed(0x1000, 1, Status::Idle, 2, false),
            listed(0x2000, 2, Status::Idle, 1, false),
            listed(0x3000, 3, Status::Notified, 2, false),
            listed(0x4000, 4, Status::Idle, 2, true),
        ],
        attach,
        true,
        None,
    );
    assert_eq!(a.diagnostics.listed_before_attach, 4);
    assert_eq!(a.tasks_alive(), 4);
    // Idle with a waker possible: suspected once idle for the threshold since attach.
    assert_eq!(
        verdict_at(&a, 1, attach + 9 * S),
        (Verdict::Ok, Reason::Active)
    );
    assert_eq!(
        verdict_at(&a, 1, attach + 11 * S),
        (Verdict::Leaked, Reason::IdleSinceAttach)
    );
    assert_eq!(
        certainty(&a, 1, attach + 11 * S),
        Some(Certainty::Suspected)
    );
    // No reference but the list's: definite at once, whatever the threshold.
    assert_eq!(
        verdict_at(&a, 2, attach + S),
        (Verdict::Leaked, Reason::NoWayToRun)
    );
    assert_eq!(certainty(&a, 2, attach + S), Some(Certainty::Definite));
    // Notified and never run since: starved, not "never polled" (its past is unknown).
    assert_eq!(
        verdict_at(&a, 3, attach + 2 * S),
        (Verdict::Stuck, Reason::Starved)
    );
    // A kept JoinHandle could abort it: never definite.
    assert_eq!(
        certainty(&a, 4, attach + 11 * S),
        Some(Certainty::Suspected)
    );
}

#[test]
fn an_event_on_a_task_proven_dead_is_counted_and_lifts_the_proof() {
    let mut a = agg();
    a.task_list(&[listed(0x2000, 2, Status::Idle, 1, false)], S, true, None);
    a.ingest(&ev(EventKind::WakeByVal, 2 * S, 0x2000, 2, 3));
    assert_eq!(a.diagnostics.definite_contradicted, 1);
    poll(&mut a, 3 * S, 3 * S + MS, 0x2000, 2, 10);
    assert_eq!(verdict_at(&a, 2, 4 * S), (Verdict::Ok, Reason::Active));
}

#[test]
fn a_task_spawned_after_attach_is_not_alive_before_it() {
    let mut a = agg();
    // The attach-time reading already saw a task whose spawn event was still in the ring.
    a.task_list(
        &[listed(0x1000, 5, Status::Notified, 3, true)],
        2 * S,
        true,
        None,
    );
    spawn(&mut a, S, 0x1000, 5);
    assert_eq!(a.tasks.len(), 1);
    assert!(!a.tasks[0].before_attach);
    assert_eq!(a.tasks[0].spawned_ns.get(), Some(S));
}

#[test]
fn a_poll_running_at_attach_and_still_at_the_end_is_stuck() {
    let mut a = agg();
    a.task_list(
        &[listed(0x1000, 9, Status::Running, 2, false)],
        S,
        true,
        None,
    );
    a.task_list(
        &[listed(0x1000, 9, Status::Running, 2, false)],
        5 * S,
        false,
        None,
    );
    assert_eq!(
        verdict_at(&a, 9, 5 * S),
        (Verdict::Stuck, Reason::BlockingPoll)
    );
    // One that finished its poll in between is not.
    let mut b = agg();
    b.task_list(
        &[listed(0x1000, 9, Status::Running, 2, false)],
        S,
        true,
        None,
    );
    b.task_list(
        &[listed(0x1000, 9, Status::Idle, 2, false)],
        5 * S,
        false,
        None,
    );
    assert_eq!(verdict_at(&b, 9, 5 * S).0, Verdict::Ok);
}

#[test]
fn the_end_reading_makes_a_leak_spawned_in_the_window_definite() {
    let mut a = agg();
    spawn(&mut a, 0, 0x1000, 7);
    poll(&mut a, MS, 2 * MS, 0x1000, 7, 10);
    a.task_list(
        &[listed(0x1000, 7, Status::Idle, 1, false)],
        3 * S,
        false,
        None,
    );
    assert!(!a.tasks[0].before_attach);
    assert_eq!(
        verdict_at(&a, 7, 3 * S),
        (Verdict::Leaked, Reason::NoWayToRun)
    );
    // A task listed with another id at a known header is a new task at a reused address.
    a.task_list(
        &[listed(0x1000, 8, Status::Idle, 2, false)],
        4 * S,
        false,
        None,
    );
    assert_eq!(a.tasks.len(), 2);
    assert!(a.tasks[0].freed_ns.is_some());
}

#[test]
fn without_completion_probes_a_task_gone_from_its_list_has_finished() {
    let mut a = agg();
    a.completion_from_lists = true;
    // Two tasks seen polling (stripped: no spawn or completion events), one blocking.
    poll(&mut a, S, S + MS, 0x1000, 1, 10);
    poll(&mut a, S, S + 2 * MS, 0x2000, 2, 10);
    let mut blocking = ev(EventKind::PollStart, S, 0x3000, 3, 11);
    blocking.owner_id = 0;
    a.ingest(&blocking);
    // The reading (owner 1 read whole) finds only task 1: task 2 finished at its last poll.
    a.task_list(
        &[listed(0x1000, 1, Status::Idle, 2, false)],
        2 * S,
        false,
        Some(&[1]),
    );
    let t2 = a.tasks.iter().find(|t| t.id == 2).unwrap();
    assert_eq!(t2.completed_ns.get(), Some(S + 2 * MS));
    assert_eq!(verdict_at(&a, 2, 60 * S), (Verdict::Ok, Reason::Finished));
    assert!(
        a.tasks
            .iter()
            .find(|t| t.id == 3)
            .unwrap()
            .completed_ns
            .is_none()
    );
    assert_eq!(verdict_at(&a, 1, 60 * S).0, Verdict::Leaked);
    // A list not read whole proves nothing.
    poll(&mut a, 3 * S, 3 * S + MS, 0x4000, 4, 10);
    a.task_list(&[], 4 * S, false, Some(&[]));
    assert!(
        a.tasks
            .iter()
            .find(|t| t.id == 4)
            .unwrap()
            .completed_ns
            .is_none()
    );
    // With completion probes, a reading never finishes a task.
    let mut b = agg();
    poll(&mut b, S, S + MS, 0x1000, 1, 10);
    b.task_list(&[], 2 * S, false, Some(&[1]));
    assert!(b.tasks[0].completed_ns.is_none());
}

#[test]
fn a_notified_task_first_found_by_a_later_reading_is_never_polled_since() {
    let mut a = agg();
    a.task_list(
        &[listed(0x1000, 8, Status::Notified, 2, false)],
        S,
        false,
        Some(&[1]),
    );
    assert_eq!(
        verdict_at(&a, 8, 4 * S),
        (Verdict::NeverPolled, Reason::NeverPolled)
    );
}

/// A traced process may hold millions of tasks: the model's per-task record is what the
/// tracer's memory per live task is made of (`cargo xtask bench memory`).
#[test]
fn a_task_record_stays_small() {
    let size = std::mem::size_of::<Task>();
    assert!(size <= 160, "Task is {size} bytes");
    let listed = std::mem::size_of::<ListedTask>();
    assert!(listed <= 64, "ListedTask is {listed} bytes");
}

/// Future types spawned from one place (the plan's `static_sites`) take that place as
/// their site; a site a spawn call named wins; other kinds and futures take nothing.
#[test]
fn sites_named_from_the_code() {
    let mut a = agg();
    a.configure(&PlanSummary {
        static_sites: vec![("app::serve::{closure#0}".into(), "src/main.rs:9:5".into())],
        ..probed()
    });
    let site_of = |a: &Aggregator, id: u64| {
        let t = a.tasks.iter().find(|t| t.id == id).expect("task");
        a.site_name(t.site).map(|s| s.to_string())
    };
    let spawn = ev(EventKind::Spawn, MS, 0x1000, 1, 1);
    a.site_from_code(&spawn, Some("app::serve::{closure#0}"));
    a.ingest(&spawn);
    assert_eq!(site_of(&a, 1).as_deref(), Some("src/main.rs:9:5"));
    // A spawn call on the thread named the site first: it stays.
    a.spawn_call(1, Some("src/other.rs:1:1".into()), None);
    let spawn = ev(EventKind::Spawn, 2 * MS, 0x2000, 2, 1);
    a.site_from_code(&spawn, Some("app::serve::{closure#0}"));
    a.ingest(&spawn);
    assert_eq!(site_of(&a, 2).as_deref(), Some("src/other.rs:1:1"));
    // Another future type, or an event that is not a spawn: nothing.
    // (Each future type has its own task vtables.)
    let mut spawn = ev(EventKind::Spawn, 3 * MS, 0x3000, 3, 1);
    spawn.vtable = 0x6000;
    a.site_from_code(&spawn, Some("app::other::{closure#0}"));
    a.ingest(&spawn);
    assert_eq!(site_of(&a, 3), None);
    a.site_from_code(
        &ev(EventKind::PollStart, 4 * MS, 0x3000, 3, 1),
        Some("app::serve::{closure#0}"),
    );
    assert!(!a.has_pending_location(1));
    assert_eq!(a.diagnostics.spawn_sites_from_code, 1);
}

/// Lifecycle mode indexes tasks by id for the thread samples; a finished task leaves
/// that index, which stays the size of the live population however many tasks ran.
#[test]
fn the_id_index_holds_live_tasks_only() {
    let mut a = agg();
    a.configure(&PlanSummary {
        mode: crate::plan::Mode::Lifecycle,
        completion_probed: false,
        ..probed()
    });
    for n in 0..1000u64 {
        spawn(&mut a, n * MS, 0x10_0000 + 0x100 * n, n + 1);
    }
    assert_eq!(a.by_id.values().count(), 1000);
    // The reading finds only task 1000: the others finished.
    a.task_list(
        &[listed(
            0x10_0000 + 0x100 * 999,
            1000,
            Status::Idle,
            2,
            false,
        )],
        2 * S,
        false,
        Some(&[1]),
    );
    assert_eq!(a.tasks_alive(), 1);
    assert_eq!(a.by_id.values().collect::<Vec<_>>(), [999]);
    // A sample of a finished task's id is not a poll of it.
    a.thread_samples(3 * S, &[(10, Some(5))]);
    assert_eq!(a.tasks[4].polls, 0);
    assert!(a.tasks[4].running_since.is_none());
}

// Spawns seen at their task-id draw (`spawn_ids`): the header comes later.

fn draw(a: &mut Aggregator, ts: u64, id: u64, site: u64, tid: u32) {
    let mut e = ev(EventKind::SpawnId, ts, 0, id, tid);
    e.state = site;
    e.owner_id = 0;
    a.ingest(&e);
}

fn plan_with_id_site(site: &str) -> PlanSummary {
    PlanSummary {
        id_sites: vec![Some(site.into())],
        ..probed()
    }
}

/// A plan whose probes see everything (what an unconfigured model assumes).
fn probed() -> PlanSummary {
    PlanSummary::all_probed()
}

/// The draw comes first, the task's first poll names its header: one task, spawned at the
/// draw, at the draw's site; a draw whose task never shows up is counted, not a task.
#[test]
fn an_id_draw_is_the_spawn_of_the_task_that_shows_up_with_its_id() {
    let mut a = agg();
    a.configure(&plan_with_id_site("src/server.rs:276:13"));
    draw(&mut a, 5 * MS, 42, 0, 3);
    draw(&mut a, 6 * MS, 43, 0, 3);
    poll(&mut a, 7 * MS, 8 * MS, 0x1000, 42, 10);
    assert_eq!(a.tasks.len(), 1);
    let t = &a.tasks[0];
    assert_eq!(t.spawned_ns.get(), Some(5 * MS));
    assert_eq!(
        a.site_name(t.site).map(|s| &**s),
        Some("src/server.rs:276:13")
    );
    assert_eq!(t.site_source, super::SiteSource::Code);
    a.finish_pending_ids();
    assert_eq!(a.diagnostics.spawn_ids, 2);
    assert_eq!(a.diagnostics.spawn_ids_joined, 1);
    assert_eq!(a.diagnostics.spawn_ids_unjoined, 1);
}

/// A reading can find a task whose draw is still in the ring: the draw, when it comes,
/// still spawns that task (and a spawn call's exact Location beats the draw's site).
#[test]
fn a_draw_after_the_reading_that_listed_its_task_joins_it() {
    let mut a = agg();
    a.configure(&plan_with_id_site("app::f+0x10"));
    a.task_list(
        &[listed(0x2000, 9, Status::Notified, 2, true)],
        S,
        false,
        None,
    );
    assert!(a.tasks[0].spawned_ns.get() == Some(S));
    a.spawn_call(4, Some("src/app.rs:3:5".into()), None);
    draw(&mut a, S - 2 * MS, 9, 0, 4);
    let t = &a.tasks[0];
    assert_eq!(
        t.spawned_ns.get(),
        Some(S - 2 * MS),
        "the draw is earlier than the reading"
    );
    assert_eq!(a.site_name(t.site).map(|s| &**s), Some("src/app.rs:3:5"));
    assert_eq!(t.site_source, super::SiteSource::Probe);
}

/// Task ids only grow: a reading that walked past an address before a newer task took it
/// lists the older id there; that listing is stale and changes nothing.
#[test]
fn a_listing_older_than_the_task_at_its_address_is_stale() {
    let mut a = agg();
    spawn(&mut a, 0, 0x1000, 7);
    a.ingest(&ev(EventKind::Complete, MS, 0x1000, 7, 1));
    spawn(&mut a, 2 * MS, 0x1000, 8);
    a.task_list(
        &[listed(0x1000, 7, Status::Idle, 1, false)],
        MS / 2,
        false,
        None,
    );
    assert_eq!(a.tasks.len(), 2);
    assert_eq!(a.diagnostics.stale_listings, 1);
    assert!(!a.tasks[1].is_finished(), "the newer task is untouched");
}

/// The model's live set against a complete reading walked over [start, end]: a task
/// alive all through it must be listed, a listed one must have lived during it.
#[test]
fn the_alive_check_compares_over_the_walk_of_the_reading() {
    let mut a = agg();
    spawn(&mut a, 0, 0x1000, 1); // alive throughout, listed
    spawn(&mut a, 0, 0x2000, 2); // alive throughout, not listed: a lost completion
    spawn(&mut a, 0, 0x3000, 3); // ends during the walk: may be missing
    a.ingest(&ev(EventKind::Complete, S + MS, 0x3000, 3, 1));
    a.reading_until(S + 5 * MS);
    a.task_list(
        &[listed(0x1000, 1, Status::Idle, 2, true)],
        S,
        false,
        Some(&[1]),
    );
    let c = a.alive_check().expect("a complete reading");
    assert_eq!(c.alive_not_listed, vec![2]);
    assert!(c.listed_not_alive.is_empty());
    assert_eq!((c.listed, c.model_alive), (1, 2));
}

/// Stripped (no completion probe): a task that finished before the final walk but whose
/// free was drained before the reading was applied is not "alive, unlisted" — it may have
/// finished any time before its free.
#[test]
fn a_task_freed_after_the_walk_without_a_seen_completion_may_be_unlisted() {
    let mut a = agg();
    a.configure(&PlanSummary {
        completion_probed: false,
        ..probed()
    });
    spawn(&mut a, 0, 0x1000, 1);
    spawn(&mut a, 0, 0x2000, 2);
    a.ingest(&ev(EventKind::Dealloc, S + 10 * MS, 0x2000, 2, 1));
    a.reading_until(S + 5 * MS);
    a.task_list(
        &[listed(0x1000, 1, Status::Idle, 2, true)],
        S,
        false,
        Some(&[1]),
    );
    let c = a.alive_check().expect("a complete reading");
    assert!(c.alive_not_listed.is_empty(), "{:?}", c.alive_not_listed);
    assert_eq!(c.model_alive, 1);
}

/// A task whose whole life fits inside a reading's walk: the walk listed it, and its
/// spawn, polls and free were drained before the reading was applied. The listing is
/// stale: no second, unspawned task.
#[test]
fn a_task_freed_during_the_walk_is_not_brought_back_by_the_reading() {
    let mut a = agg();
    spawn(&mut a, S + MS, 0x1000, 7);
    poll(&mut a, S + 2 * MS, S + 3 * MS, 0x1000, 7, 2);
    a.ingest(&ev(EventKind::Complete, S + 3 * MS, 0x1000, 7, 2));
    a.ingest(&ev(EventKind::Dealloc, S + 4 * MS, 0x1000, 7, 2));
    a.reading_until(S + 5 * MS);
    a.task_list(
        &[listed(0x1000, 7, Status::Idle, 1, false)],
        S,
        false,
        Some(&[1]),
    );
    assert_eq!(a.tasks.len(), 1, "{:?}", a.tasks);
    assert_eq!(a.diagnostics.stale_listings, 1);
    assert!(a.tasks[0].spawned_ns.get().is_some());
}

/// A task first seen in an event without its id (unreadable then) joins its id draw when
/// a later event names the id: the draw was its spawn.
#[test]
fn an_id_learned_late_still_joins_its_draw() {
    let mut a = agg();
    a.configure(&plan_with_id_site("src/a.rs:1:1"));
    draw(&mut a, MS, 77, 0, 3);
    a.ingest(&ev(EventKind::PollStart, 2 * MS, 0x4000, 0, 4));
    a.ingest(&ev(EventKind::PollStart, 3 * MS, 0x4000, 77, 4));
    let t = a.tasks.iter().find(|t| t.id == 77).expect("task");
    assert_eq!(t.spawned_ns.get(), Some(MS));
    assert_eq!(a.site_name(t.site).map(|s| &**s), Some("src/a.rs:1:1"));
}

/// Attached late: a task no spawn event named, with an id older than every spawn seen,
/// was spawned before the probes went in (a blocking task, in no task list).
#[test]
fn a_task_older_than_every_spawn_seen_existed_before_attach() {
    let mut a = agg();
    a.task_list(&[], 0, true, Some(&[1]));
    let mut blocking = ev(EventKind::PollStart, MS, 0x9000, 3, 5);
    blocking.owner_id = 0;
    a.ingest(&blocking);
    spawn(&mut a, 2 * MS, 0x1000, 10);
    poll(&mut a, 3 * MS, 4 * MS, 0x2000, 12, 6); // newer than the first spawn: not marked
    a.mark_spawned_before_attach();
    let by_id = |id| a.tasks.iter().find(|t| t.id == id).unwrap().before_attach;
    assert!(by_id(3));
    assert!(!by_id(10));
    assert!(
        !by_id(12),
        "a task newer than a spawn seen and without its own is a gap"
    );
}

// Lost events: histories with holes are settled against the task lists, or uncertain.

fn lost(a: &mut Aggregator, since: u64, at: u64) {
    a.apply(&crate::stream::Rec::Lost {
        since_ns: since,
        at_ns: at,
        total: 1,
    });
}

fn judged(a: &Aggregator, id: u64, at: u64) -> crate::model::verdict::Judgement {
    let t = a.tasks.iter().rev().find(|t| t.id == id).expect("task");
    a.final_judgement(t, at)
}

/// The completion was lost: without the loss on record the task stays alive and idle,
/// and becomes a false leak; with it, a whole list without the task says it finished.
#[test]
fn a_lost_completion_does_not_become_a_leak() {
    let mut a = agg();
    spawn(&mut a, 0, 0x1000, 7);
    poll(&mut a, MS, 2 * MS, 0x1000, 7, 10);
    // Its completion would be here; the ring was full.
    lost(&mut a, 2 * MS, 3 * MS);
    spawn(&mut a, 4 * MS, 0x2000, 8);
    poll(&mut a, 5 * MS, 6 * MS, 0x2000, 8, 10);
    a.task_list(
        &[listed(0x2000, 8, Status::Idle, 2, true)],
        20 * S,
        false,
        Some(&[1]),
    );
    let j = judged(&a, 7, 30 * S);
    assert_eq!(
        (j.verdict, j.reason),
        (Verdict::Ok, Reason::Finished),
        "{j:?}"
    );
    // The other task really is idle, listed after the loss, idle for 30 s since: a leak
    // on the complete events that follow the loss.
    let j = judged(&a, 8, 30 * S);
    assert_eq!(j.verdict, Verdict::Leaked);
    assert_eq!(
        j.certainty,
        Some(crate::model::verdict::Certainty::Suspected)
    );
}

#[test]
fn a_leak_whose_quiet_since_the_loss_is_too_short_is_uncertain() {
    use crate::model::verdict::Certainty;
    let mut a = agg();
    spawn(&mut a, 0, 0x1000, 7);
    poll(&mut a, MS, 2 * MS, 0x1000, 7, 10);
    // Events lost 25 s later: a poll may have been among them.
    lost(&mut a, 25 * S, 25 * S + MS);
    a.task_list(
        &[listed(0x1000, 7, Status::Idle, 2, true)],
        26 * S,
        false,
        Some(&[1]),
    );
    let j = judged(&a, 7, 30 * S);
    assert_eq!(j.verdict, Verdict::Leaked);
    assert_eq!(j.certainty, Some(Certainty::Uncertain), "{j:?}");
    // Without a reading after the loss nothing settles it either.
    let mut b = agg();
    spawn(&mut b, 0, 0x1000, 7);
    poll(&mut b, MS, 2 * MS, 0x1000, 7, 10);
    lost(&mut b, 5 * S, 5 * S + MS);
    let j = judged(&b, 7, 30 * S);
    assert_eq!(j.certainty, Some(Certainty::Uncertain), "{j:?}");
    // A definite leak rests on the state word alone.
    let mut c = agg();
    spawn(&mut c, 0, 0x1000, 7);
    poll(&mut c, MS, 2 * MS, 0x1000, 7, 10);
    c.task_list(
        &[listed(0x1000, 7, Status::Idle, 1, false)],
        3 * S,
        false,
        Some(&[1]),
    );
    lost(&mut c, 25 * S, 25 * S + MS);
    assert_eq!(judged(&c, 7, 30 * S).certainty, Some(Certainty::Definite));
}

/// A poll start lost: the task looks never polled; the reading after the loss finds it
/// idle (it was polled), so it is not flagged. Found still notified, it is uncertain.
#[test]
fn never_polled_is_settled_by_the_reading_after_the_loss() {
    use crate::model::verdict::Certainty;
    let mut a = agg();
    spawn(&mut a, 0, 0x1000, 7);
    spawn(&mut a, 0, 0x2000, 8);
    lost(&mut a, MS, 2 * MS);
    a.task_list(
        &[
            listed(0x1000, 7, Status::Idle, 2, true),
            listed(0x2000, 8, Status::Notified, 2, true),
        ],
        3 * S,
        false,
        Some(&[1]),
    );
    let j = judged(&a, 7, 10 * S);
    assert_eq!(
        (j.verdict, j.reason),
        (Verdict::Ok, Reason::ShownActiveByReading)
    );
    let j = judged(&a, 8, 10 * S);
    assert_eq!(
        (j.verdict, j.certainty),
        (Verdict::NeverPolled, Some(Certainty::Uncertain)),
        "{j:?}"
    );
}

/// A poll end lost: the task looks inside one long poll; the reading after the loss
/// finds it idle, so it is not stuck. Found running, the poll has lasted at least since
/// the loss.
#[test]
fn a_blocking_poll_is_settled_by_the_reading_after_the_loss() {
    let mut a = agg();
    spawn(&mut a, 0, 0x1000, 7);
    a.ingest(&ev(EventKind::PollStart, MS, 0x1000, 7, 10));
    spawn(&mut a, 0, 0x2000, 8);
    a.ingest(&ev(EventKind::PollStart, MS, 0x2000, 8, 11));
    lost(&mut a, 2 * MS, 3 * MS);
    a.task_list(
        &[
            listed(0x1000, 7, Status::Idle, 2, true),
            listed(0x2000, 8, Status::Running, 2, true),
        ],
        4 * S,
        false,
        Some(&[1]),
    );
    assert_eq!(judged(&a, 7, 5 * S).verdict, Verdict::Ok);
    let j = judged(&a, 8, 5 * S);
    assert_eq!(
        (j.verdict, j.reason),
        (Verdict::Stuck, Reason::BlockingPoll)
    );
    assert_eq!(j.certainty, None);
    assert!(j.for_ns <= 5 * S - 3 * MS);
}

#[test]
fn a_task_first_found_idle_by_a_later_reading_was_polled() {
    let mut a = agg();
    a.task_list(&[], S, true, Some(&[1]));
    // Every event of task 7 lost: a reading in the window finds it idle. Spawned
    // notified, it was polled since; left at zero polls it would never be judged.
    a.task_list(
        &[listed(0x1000, 7, Status::Idle, 2, false)],
        2 * S,
        false,
        Some(&[1]),
    );
    assert_eq!(a.tasks[0].polls, 1);
    assert_eq!(verdict_at(&a, 7, 5 * S).0, Verdict::Ok);
    assert_eq!(
        verdict_at(&a, 7, 13 * S),
        (Verdict::Leaked, Reason::IdleSinceLastPoll)
    );
}

#[test]
fn a_polled_task_is_listed_from_its_poll_on() {
    let mut a = agg();
    a.completion_from_lists = true;
    // Spawned and polled just before a reading (within the spawn-to-list slack): the
    // poll proves it was in its list, so missing from it means it finished.
    spawn(&mut a, 10 * S - 5 * MS, 0x1000, 1);
    poll(&mut a, 10 * S - 4 * MS, 10 * S - 3 * MS, 0x1000, 1, 10);
    // Spawned as close and never polled: may not be in the list yet, still alive.
    spawn(&mut a, 10 * S - 2 * MS, 0x2000, 2);
    a.task_list(&[], 10 * S, false, Some(&[1]));
    let t = |id| a.tasks.iter().find(|t| t.id == id).unwrap();
    assert_eq!(t(1).completed_ns.get(), Some(10 * S - 3 * MS));
    assert!(t(2).completed_ns.is_none());
}

#[test]
fn the_live_view_groups_live_tasks_by_site_and_judges_them_now() {
    let mut a = agg();
    // Two tasks at one site, one at another; one of the first pair completes.
    for (id, site) in [
        (1, "src/a.rs:1:1"),
        (2, "src/a.rs:1:1"),
        (3, "src/b.rs:2:2"),
    ] {
        a.spawn_call(1, Some(site.into()), None);
        spawn(&mut a, id * MS, 0x1000 * id, id);
        poll(&mut a, id * MS + 10, id * MS + 20, 0x1000 * id, id, 1);
    }
    a.ingest(&ev(EventKind::Complete, 5 * MS, 0x1000, 1, 1));
    let now = a.now(20 * S);
    let site = |s: &str| {
        now.sites
            .iter()
            .find(|r| r.site.as_deref() == Some(s))
            .unwrap_or_else(|| panic!("{s} in {:?}", now.sites))
    };
    assert_eq!(now.live, 2);
    assert_eq!(site("src/a.rs:1:1").live, 1);
    assert_eq!(site("src/a.rs:1:1").created, 2, "both tasks seen so far");
    assert_eq!(site("src/b.rs:2:2").live, 1);
    // Idle 20 s with a 10 s threshold: suspected leaks, counted per site.
    assert_eq!(site("src/a.rs:1:1").leaked_suspected, 1);
    assert_eq!(site("src/a.rs:1:1").polls, 2, "ended polls of the site");
    // The counts are cumulative: the next view sees the same with nothing new.
    assert_eq!(
        a.now(21 * S).sites.iter().map(|r| r.created).sum::<u64>(),
        3
    );
    assert_eq!(now.tasks_seen, 3);
    // A site's tasks, judged now.
    let tasks = a.tasks_at_site(Some("src/a.rs:1:1"), 20 * S);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].id, 2);
    assert_eq!(tasks[0].verdict, Verdict::Leaked);
    assert!(tasks[0].idle_ns.is_some_and(|i| i > 19 * S));
}

#[test]
fn one_sample_missing_a_poll_does_not_split_it() {
    let mut a = agg();
    a.polls_sampled = true;
    spawn(&mut a, MS, 0x1000, 1);
    a.thread_samples(S, &[(10, Some(1))]);
    // One sample finds the thread in no task, the next in the same task again: one poll.
    a.thread_samples(S + 100 * MS, &[(10, None)]);
    a.thread_samples(S + 200 * MS, &[(10, Some(1))]);
    let t = &a.tasks[0];
    assert_eq!((t.polls, t.running_since.get()), (1, Some(S)));
    assert_eq!(
        verdict_at(&a, 1, 3 * S).0,
        Verdict::Stuck,
        "one blocking poll"
    );
    // Two in a row end it, where it was last seen.
    a.thread_samples(S + 300 * MS, &[(10, None)]);
    a.thread_samples(S + 400 * MS, &[(10, None)]);
    let t = &a.tasks[0];
    assert!(t.running_since.is_none());
    assert_eq!(t.last_poll_end_ns.get(), Some(S + 200 * MS));
}

// Sample mode: spawn probes attached part of the time (`Rec::SpawnProbes`).

fn sample_plan() -> PlanSummary {
    PlanSummary {
        mode: crate::plan::Mode::Sample,
        completion_probed: false,
        ..probed()
    }
}

fn listed_as(h: u64, id: u64, vtable: u64) -> ListedTask {
    ListedTask {
        vtable,
        ..listed(h, id, Status::Idle, 2, true)
    }
}

/// A site a spawn probe saw is its future type's: tasks of that type spawned while the
/// probes were detached take it, whether they were listed before or after the probe saw
/// one; a type spawned from two sites names neither.
#[test]
fn tasks_spawned_unprobed_take_the_site_their_future_type_was_seen_at() {
    let mut a = agg();
    a.configure(&sample_plan());
    let site_of = |a: &Aggregator, id: u64| {
        let t = a.tasks.iter().find(|t| t.id == id).expect("task");
        (a.site_name(t.site).map(|s| s.to_string()), t.site_source)
    };
    let probed_spawn = |a: &mut Aggregator, ts: u64, h: u64, id: u64, vt: u64, site: &str| {
        a.spawn_call(1, Some(site.into()), None);
        let mut e = ev(EventKind::Spawn, ts, h, id, 1);
        e.vtable = vt;
        a.ingest(&e);
    };
    probed_spawn(&mut a, MS, 0x1000, 1, 0x5000, "src/hot.rs:1:1");
    // Listed before any spawn of its type was probed: no site yet.
    a.task_list(&[listed_as(0x3000, 3, 0x7000)], S, false, None);
    assert_eq!(site_of(&a, 3).0, None);
    probed_spawn(&mut a, S + MS, 0x4000, 4, 0x7000, "src/b.rs:2:2");
    // Two types spawned from two sites each... one of them only.
    probed_spawn(&mut a, S + 2 * MS, 0x6000, 6, 0x9000, "src/c.rs:3:3");
    probed_spawn(&mut a, S + 3 * MS, 0x6100, 7, 0x9000, "src/c.rs:4:4");
    a.task_list(
        &[
            listed_as(0x2000, 2, 0x5000),
            listed_as(0x3000, 3, 0x7000),
            listed_as(0x8000, 8, 0x9000),
        ],
        2 * S,
        false,
        Some(&[1]),
    );
    let learned = super::SiteSource::Learned;
    assert_eq!(site_of(&a, 2), (Some("src/hot.rs:1:1".into()), learned));
    assert_eq!(site_of(&a, 3), (Some("src/b.rs:2:2".into()), learned));
    assert_eq!(site_of(&a, 8).0, None);
    assert_eq!(
        site_of(&a, 1),
        (Some("src/hot.rs:1:1".into()), super::SiteSource::Probe)
    );
}

/// Sample mode keeps no blocking-pool task (no completion of one is seen, and no list
/// holds them), and its spawn does not name the next async task's site.
#[test]
fn sample_mode_keeps_no_blocking_task() {
    let mut a = agg();
    a.configure(&sample_plan());
    a.spawn_call(1, Some("src/blocking.rs:1:1".into()), None);
    a.ingest(&ev(EventKind::SpawnBlocking, MS, 0x1000, 1, 1));
    assert!(a.tasks.is_empty());
    a.ingest(&ev(EventKind::Spawn, 2 * MS, 0x2000, 2, 1));
    let t = &a.tasks[0];
    assert_eq!(a.site_name(t.site), None);
}

/// The time attached adds up over arm/disarm records; the peak rate is the highest one
/// any record measured.
#[test]
fn spawn_probe_time_attached_adds_up() {
    use crate::stream::records::Rec;
    let mut a = agg();
    a.configure(&sample_plan());
    let rec = |at: u64, armed: bool, rate: Option<f64>| Rec::SpawnProbes {
        at_ns: at,
        armed,
        rate,
        budget: 2000,
    };
    a.apply(&rec(0, true, None));
    a.apply(&rec(S, false, Some(5000.0)));
    a.apply(&rec(10 * S, true, Some(9000.0)));
    a.apply(&rec(10 * S + 100 * MS, false, Some(4000.0)));
    let p = a.spawn_probing.as_ref().unwrap();
    assert_eq!(p.disarms, 2);
    assert_eq!(p.armed_by(20 * S), S + 100 * MS);
    assert_eq!(p.peak_rate, Some(9000.0));
    a.apply(&rec(20 * S, true, None));
    assert_eq!(
        a.spawn_probing.as_ref().unwrap().armed_by(21 * S),
        2 * S + 100 * MS
    );
}

// Before tokio 1.23 no probe reads a task id: tasks are known by their header until a
// spawn return or a reading names them.

fn ev_of(kind: EventKind, ts: u64, header: u64, vtable: u64, tid: u32) -> TaskEvent {
    TaskEvent {
        vtable,
        ..ev(kind, ts, header, 0, tid)
    }
}

#[test]
fn a_task_known_by_its_header_is_named_by_its_spawn_return_and_readings() {
    let mut a = agg();
    // Polled by another worker before its spawn function returned with its id.
    a.ingest(&ev_of(EventKind::PollStart, MS, 0xa000, 0x5000, 11));
    a.ingest(&ev(EventKind::PollEnd, 2 * MS, 0, 0, 11));
    let spawn = TaskEvent {
        vtable: 0x5000,
        ..ev(EventKind::Spawn, 3 * MS, 0xa000, 40, 1)
    };
    a.ingest(&spawn);
    // …and seen again at a second spawn function `bind` was not inlined into.
    a.ingest(&TaskEvent {
        ts_ns: 4 * MS,
        ..spawn
    });
    assert_eq!(a.tasks.len(), 1, "one task");
    let t = &a.tasks[0];
    assert_eq!((t.id, t.polls, t.spawned_ns.get()), (40, 1, Some(MS)));
    // A task only events have seen takes the id its first reading lists it with.
    a.ingest(&ev_of(EventKind::PollStart, 5 * MS, 0xb000, 0x5000, 12));
    a.ingest(&ev(EventKind::PollEnd, 6 * MS, 0, 0, 12));
    a.task_list(&[listed(0xb000, 41, Status::Idle, 2, true)], S, false, None);
    assert_eq!(a.tasks.len(), 2, "the reading named the task, added none");
    assert_eq!((a.tasks[1].id, a.tasks[1].polls), (41, 1));
}

#[test]
fn a_header_reused_by_another_future_type_is_another_task() {
    let mut a = agg();
    a.ingest(&ev_of(EventKind::PollStart, MS, 0xa000, 0x5000, 11));
    a.ingest(&ev_of(EventKind::Complete, 2 * MS, 0xa000, 0x5000, 11));
    a.ingest(&ev(EventKind::PollEnd, 2 * MS, 0, 0, 11));
    // Freed unprobed; a task of another type gets the address and blocks its worker.
    a.ingest(&ev_of(EventKind::PollStart, 3 * MS, 0xa000, 0x6000, 12));
    assert_eq!(a.tasks.len(), 2);
    assert!(a.tasks[0].is_finished());
    assert_eq!(a.tasks[1].vtable, 0x6000);
    // A reading listing it with the other vtable's id does not name the finished one.
    let mut l = listed(0xa000, 26, Status::Running, 2, false);
    l.vtable = 0x6000;
    a.task_list(&[l], S, false, None);
    assert_eq!((a.tasks[0].id, a.tasks[1].id), (0, 26));
    assert!(a.tasks[1].running_since.is_some());
}

#[test]
fn a_sampled_thread_stays_in_the_poll_of_a_task_with_no_id_yet() {
    let mut a = agg();
    a.poll_ends_inferred = true;
    a.ingest(&ev_of(EventKind::PollStart, MS, 0xa000, 0x5000, 11));
    // The thread's context names a task id nothing knows yet: the task's own.
    a.thread_samples(S, &[(11, Some(26))]);
    a.thread_samples(2 * S, &[(11, Some(26))]);
    assert_eq!(a.tasks[0].running_since.get(), Some(MS));
    assert_eq!(verdict_at(&a, 0, 3 * S).0, Verdict::Stuck);
    // A thread in no poll at all ends it where it was last seen.
    a.thread_samples(3 * S, &[(11, None)]);
    assert_eq!(a.tasks[0].last_poll_end_ns.get(), Some(2 * S));
}
