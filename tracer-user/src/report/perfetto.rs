//! `--perfetto`: the window as a trace that ui.perfetto.dev opens (Chrome trace-event JSON).
//! Tasks migrate between worker threads, so each task is one async track keyed by its id:
//! its polls are async slices, spawn / wake / cancel / complete are instants on it, and
//! the live-task count is a counter track.

use serde_json::{Value, json};

use super::Report;

pub fn render_perfetto(r: &Report) -> Value {
    let us = |ns: u64| ns as f64 / 1e3;
    let pid = r.target.pid;
    let mut events = vec![json!({
        "ph": "M", "name": "process_name", "pid": pid,
        "args": { "name": format!("tasktrace: {} (pid {pid})", r.target.binary) }
    })];
    let label = |id: u64| {
        let t = r.tasks.iter().find(|t| t.id == id);
        let site = t
            .and_then(|t| t.spawned_at.as_deref())
            .unwrap_or("unknown site");
        let verdict = t.map_or("ok", |t| t.verdict.as_str());
        format!("task {id} [{verdict}] {site}")
    };
    let mut names = std::collections::HashMap::new();
    if let Some(tl) = &r.timeline {
        for &(id, start, end, tid) in &tl.polls {
            let name = names.entry(id).or_insert_with(|| label(id)).clone();
            events.push(json!({"ph": "b", "cat": "task", "id": id, "name": name, "pid": pid, "tid": tid, "ts": us(start), "args": {"thread": tid}}));
            events.push(json!({"ph": "e", "cat": "task", "id": id, "name": name, "pid": pid, "tid": tid, "ts": us(end)}));
        }
        for &(id, ts, what) in &tl.instants {
            events.push(json!({"ph": "n", "cat": "task", "id": id, "name": what, "pid": pid, "tid": 0, "ts": us(ts)}));
        }
    }
    for t in r.tasks.iter().filter(|t| t.verdict.as_str() != "ok") {
        events.push(json!({"ph": "n", "cat": "task", "id": t.id, "name": t.verdict.as_str(), "pid": pid, "tid": 0, "ts": us(t.judged_at_ns), "args": {"reason": t.reason, "for_ns": t.for_ns}}));
    }
    // Live tasks: +1 at spawn (or first sight), -1 at completion.
    let mut steps: Vec<(u64, i64)> = Vec::new();
    for t in &r.tasks {
        steps.push((t.spawned_at_ns.get().unwrap_or(t.first_seen_ns), 1));
        if let Some(end) = t.ended_at_ns() {
            steps.push((end, -1));
        }
    }
    steps.sort();
    let mut live = 0i64;
    for (ts, d) in steps {
        live += d;
        events.push(json!({"ph": "C", "name": "live tasks", "pid": pid, "ts": us(ts), "args": {"live": live}}));
    }
    json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}
