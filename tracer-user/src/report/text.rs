//! The human summary printed at the end of a window, grouped by verdict.

use std::fmt::Write as _;

use super::{Report, terminal_safe as safe};
use crate::model::verdict::{Reason, Verdict};

pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let s = &r.summary;
    let _ = writeln!(
        out,
        "tasktrace: pid {}{} ({}), tokio {}, window {}, ended by {}",
        r.target.pid,
        r.target
            .pid_in_namespace
            .map(|p| format!(" (pid {p} in its pid namespace)"))
            .unwrap_or_default(),
        safe(&r.target.binary),
        r.target.tokio_version.as_deref().unwrap_or("unknown"),
        secs(r.window.duration_ns),
        r.window.ended_by.as_str().replace('_', " "),
    );
    let _ = writeln!(
        out,
        "  {} tasks seen ({} alive before attach), {} alive, {} finished | leaked {} ({} definite), stuck {}, never polled {}, ok {}{} | long polls {} | lost events {}",
        s.tasks_seen,
        s.alive_before_attach,
        s.alive,
        s.completed,
        s.leaked,
        s.leaked_definite,
        s.stuck,
        s.never_polled,
        s.ok,
        if s.uncertain > 0 {
            format!(", uncertain {}", s.uncertain)
        } else {
            String::new()
        },
        s.long_polls,
        s.lost_events
    );
    if let Some(n) = s.spawned.filter(|n| n.over_ns > 0) {
        let _ = writeln!(
            out,
            "  {} tasks spawned in {} ({:.0}/s), by tokio's task-id counter",
            n.tasks,
            secs(n.over_ns),
            n.per_second
        );
    }
    if let Some(p) = s.spawn_probes {
        let _ = writeln!(
            out,
            "  spawn probes attached {:.0}% of the window (budget {}/s{})",
            p.armed_fraction * 100.0,
            p.budget,
            match (p.disarms, p.peak_rate) {
                (0, _) => String::new(),
                (n, Some(r)) => format!("; detached {n}x, the target spawning up to {r:.0}/s"),
                (n, None) => format!("; detached {n}x"),
            }
        );
    }
    for w in &r.warnings {
        let _ = writeln!(out, "  warning: {}", safe(w));
    }
    for u in &r.unavailable {
        let _ = writeln!(out, "  unavailable: {} — {}", safe(&u.what), safe(&u.why));
    }
    // Counts no probe produced are not printed as zeros.
    let lost = |what: &str| r.unavailable.iter().any(|u| u.what == what);
    let (polls_seen, wakes_seen) = (!lost("poll times"), !lost("wakes"));
    // The verdicts, then what would be one but rests on lost events.
    let groups = [
        Some(Verdict::Leaked),
        Some(Verdict::Stuck),
        Some(Verdict::NeverPolled),
        None,
    ];
    for group in groups {
        let flagged: Vec<_> = r
            .tasks
            .iter()
            .filter(|t| match group {
                Some(v) => t.counted_verdict() == v,
                None => t.uncertain(),
            })
            .collect();
        if flagged.is_empty() {
            continue;
        }
        let title = match group {
            Some(v) => v.as_str().to_uppercase().replace('_', " "),
            None => "UNCERTAIN (events were lost while it lasted; no reading settled it)".into(),
        };
        let _ = writeln!(out, "\n{title} ({}):", flagged.len());
        // Grouped by spawn site, largest group first: the site is the incident. Tasks
        // whose spawn was not seen (alive before attach) are grouped by future instead.
        type Key<'a> = (Option<&'a str>, Option<&'a str>);
        let mut by_site: Vec<(Key, Vec<_>)> = Vec::new();
        for t in flagged {
            let key = match t.spawned_at.as_deref() {
                Some(site) => (Some(site), None),
                None => (None, t.future.as_deref()),
            };
            match by_site.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(t),
                None => by_site.push((key, vec![t])),
            }
        }
        by_site.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        for ((site, _), mut tasks) in by_site {
            let growing = r
                .spawn_sites
                .iter()
                .find(|s| s.site.as_deref() == site)
                .filter(|s| s.growing)
                .map(|s| format!(", live count growing {:.1}/s", s.growth_per_s))
                .unwrap_or_default();
            let future = tasks
                .first()
                .and_then(|t| t.future.as_deref())
                .filter(|f| tasks.iter().all(|t| t.future.as_deref() == Some(*f)))
                .map(|f| format!(", future {}", safe(f)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} task(s) {}{future}{growing}",
                tasks.len(),
                site.map_or("spawn site unknown".into(), |s| {
                    format!("spawned at {}", safe(s))
                })
            );
            // Where they are parked, one line per await point (5 000 tasks at one line
            // read as one line).
            let mut parked: Vec<(String, usize)> = Vec::new();
            for c in tasks.iter().filter_map(|t| t.await_chain.as_deref()) {
                let at = match (c.parked_at(), &c.leaf) {
                    (Some(at), Some(leaf)) => format!("{at}, awaiting {leaf}"),
                    (Some(at), None) => at,
                    (None, Some(leaf)) => format!("awaiting {leaf}"),
                    (None, None) => continue,
                };
                match parked.iter_mut().find(|(k, _)| *k == at) {
                    Some((_, n)) => *n += 1,
                    None => parked.push((at, 1)),
                }
            }
            parked.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            for (at, n) in parked {
                let _ = writeln!(out, "    {n} parked at {}", safe(&at));
            }
            tasks.sort_by_key(|t| std::cmp::Reverse(t.for_ns));
            for t in tasks {
                let what = match t.reason {
                    Reason::IdleSinceLastPoll if !polls_seen => format!(
                        "unchanged in memory for {} (no sign of a poll; suspected)",
                        secs(t.for_ns)
                    ),
                    Reason::IdleSinceLastPoll => {
                        format!("idle {} since its last poll", secs(t.for_ns))
                    }
                    Reason::IdleSinceAttach => format!(
                        "alive before attach, idle all {} since (suspected)",
                        secs(t.for_ns)
                    ),
                    Reason::NoWayToRun => format!(
                        "DEFINITE: idle, no JoinHandle, no waker (refs {}): can never run again",
                        t.refs.unwrap_or(0)
                    ),
                    Reason::BlockingPoll => format!(
                        "inside one poll for {} (blocks a worker thread)",
                        secs(t.for_ns)
                    ),
                    Reason::Starved if t.alive_before_attach && t.polls == 0 => format!(
                        "notified at attach and not polled in the {} since",
                        secs(t.for_ns)
                    ),
                    Reason::Starved => format!("woken {} ago and not polled since", secs(t.for_ns)),
                    Reason::NeverPolled => format!("spawned {} ago, never polled", secs(t.for_ns)),
                    _ => String::new(),
                };
                let what = if t.uncertain() {
                    format!("would be {}: {what}", t.verdict.as_str().replace('_', " "))
                } else {
                    what
                };
                let shutdown = if t.cancelled_by_shutdown {
                    ", judged when its runtime shut down"
                } else {
                    ""
                };
                let counts = match (polls_seen, wakes_seen) {
                    (true, true) => format!(" ({} polls, {} wakes)", t.polls, t.wakes),
                    (true, false) => format!(" ({} polls)", t.polls),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "    task {:>6} {:<8} {}{counts}{shutdown}",
                    t.id,
                    format!("{:?}", t.kind).to_lowercase(),
                    what,
                );
            }
        }
    }
    let busiest: Vec<_> = r
        .spawn_sites
        .iter()
        .filter(|s| s.polls > 0)
        .take(10)
        .collect();
    if !busiest.is_empty() {
        let _ = writeln!(
            out,
            "\nSPAWN SITES (flagged first): spawned/alive, polls, poll p50 / p99 / max"
        );
        let ms = |us: Option<f64>| us.map_or("-".to_string(), |us| format!("{:.3}ms", us / 1e3));
        for s in busiest {
            let _ = writeln!(
                out,
                "  {:<40} {:>5}/{:<5} {:>7} polls  {} / {} / {}",
                safe(s.site.as_deref().unwrap_or("(unknown site)")),
                s.spawned,
                s.alive,
                s.polls,
                ms(s.poll_p50_us),
                ms(s.poll_p99_us),
                ms(s.poll_max_us)
            );
        }
    }
    let growing: Vec<_> = r.spawn_sites.iter().filter(|s| s.growing).collect();
    if !growing.is_empty() {
        let _ = writeln!(out, "\nGROWING spawn sites (live tasks rise steadily):");
        for s in growing {
            let _ = writeln!(
                out,
                "  {} : {} alive, +{:.1}/s",
                safe(s.site.as_deref().unwrap_or("(unknown site)")),
                s.alive,
                s.growth_per_s
            );
        }
    }
    if !r.long_polls.is_empty() {
        let _ = writeln!(out, "\nLONG POLLS that ended ({}):", r.long_polls.len());
        for p in &r.long_polls {
            let _ = writeln!(
                out,
                "  task {:>6} polled for {} on thread {}",
                p.task_id,
                secs(p.duration_ns),
                p.thread
            );
        }
    }
    if s.leaked + s.stuck + s.never_polled == 0 {
        let _ = writeln!(out, "\nno leaked, stuck or never-polled tasks.");
    }
    if s.lost_events > 0 {
        let _ = writeln!(
            out,
            "\nwarning: {} events were lost (ring buffer full): verdicts may be incomplete; raise --ring-size",
            s.lost_events
        );
    }
    out
}

fn secs(ns: u64) -> String {
    format!("{:.1}s", ns as f64 / 1e9)
}
