//! The spawn-site view: tasks grouped by where they were spawned, with counts per
//! verdict and the live count over the window (the NumGoroutine-by-site signal).

use std::collections::BTreeMap;

use serde::Serialize;

use super::TaskReport;
use crate::model::{PollTimes, fold::FoldedSite, verdict::Verdict};

/// Samples in each site's live-count series.
const SERIES_POINTS: u64 = 60;
/// A growing site gains at least this many live tasks over the window…
const GROWTH_MIN_TASKS: f64 = 3.0;
/// …along a line: the series correlates with time at least this well.
const GROWTH_MIN_CORRELATION: f64 = 0.9;

#[derive(Debug, Serialize)]
pub struct SpawnSite {
    /// `file:line:col`, `function+0xoff`, or `null` when unknown.
    pub site: Option<String>,
    pub spawned: u64,
    pub completed: u64,
    pub alive: u64,
    pub leaked: u64,
    pub stuck: u64,
    pub never_polled: u64,
    pub ok: u64,
    /// Of these, tasks that finished healthy and are not listed in the report's `tasks`.
    pub folded: u64,
    /// Polls of its tasks that ended in the window, and their durations in microseconds
    /// (percentiles within 12.5 %, exact maximum); `null` without polls.
    pub polls: u64,
    pub poll_p50_us: Option<f64>,
    pub poll_p90_us: Option<f64>,
    pub poll_p99_us: Option<f64>,
    pub poll_max_us: Option<f64>,
    /// Live tasks over the window: `[t_ns, count]` pairs, `t_ns` relative to the window start.
    pub live_series: Vec<[u64; 2]>,
    /// Least-squares slope of the live count, tasks per second.
    pub growth_per_s: f64,
    /// The live count grows steadily over the window.
    pub growing: bool,
    /// Where its live tasks are parked, most tasks first: one entry per innermost await
    /// point and leaf (from the tasks' `await_chain`); empty without chains.
    pub parked: Vec<Parked>,
}

#[derive(Debug, Serialize)]
pub struct Parked {
    /// `file:line` of the innermost `.await` (`null`: a chain with no suspended frame).
    pub at: Option<String>,
    pub leaf: Option<String>,
    pub tasks: u64,
    /// Of these, flagged leaked.
    pub leaked: u64,
    /// One task's whole chain, outermost first, on one line.
    pub chain: String,
}

/// The sites of `tasks` and of the tasks folded away (`folded`: by site name; `rel`
/// turns a window-relative instant into the folded series' clock).
pub fn spawn_sites<'a>(
    tasks: &[TaskReport],
    folded: &[(Option<&str>, &FoldedSite)],
    window_ns: u64,
    rel: impl Fn(u64) -> u64,
    poll_times: impl Fn(Option<&str>) -> Option<&'a PollTimes>,
) -> Vec<SpawnSite> {
    let mut groups: BTreeMap<Option<&str>, (Vec<&TaskReport>, Option<&FoldedSite>)> =
        BTreeMap::new();
    for t in tasks.iter().filter(|t| !t.runtime_plumbing) {
        groups.entry(t.spawned_at.as_deref()).or_default().0.push(t);
    }
    for &(site, f) in folded {
        groups.entry(site).or_default().1 = Some(f);
    }
    let mut sites: Vec<SpawnSite> = groups
        .into_iter()
        .map(|(site, (ts, f))| {
            let count = |v: Verdict| ts.iter().filter(|t| t.counted_verdict() == v).count() as u64;
            let mut series = live_series(&ts, window_ns);
            if let Some(f) = f {
                for p in &mut series {
                    p[1] += f.live_at(rel(p[0]));
                }
            }
            let (folded, folded_spawned, folded_completed) =
                f.map_or((0, 0, 0), |f| (f.tasks, f.spawned, f.completed));
            let (slope, r) = trend(&series);
            let gained = slope * window_ns as f64 / 1e9;
            let times = poll_times(site);
            let us = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e3);
            let pct = |p: f64| us(times.and_then(|h| h.percentile(p)));
            SpawnSite {
                site: site.map(str::to_owned),
                spawned: ts.iter().filter(|t| t.spawned_at_ns.is_some()).count() as u64
                    + folded_spawned,
                completed: ts.iter().filter(|t| t.completed_at_ns.is_some()).count() as u64
                    + folded_completed,
                alive: ts
                    .iter()
                    .filter(|t| t.completed_at_ns.is_none() && !t.freed)
                    .count() as u64,
                leaked: count(Verdict::Leaked),
                stuck: count(Verdict::Stuck),
                never_polled: count(Verdict::NeverPolled),
                ok: count(Verdict::Ok) + folded,
                folded,
                polls: times.map_or(0, |h| h.polls),
                poll_p50_us: pct(50.0),
                poll_p90_us: pct(90.0),
                poll_p99_us: pct(99.0),
                poll_max_us: us(times.filter(|h| h.polls > 0).map(|h| h.max_ns)),
                live_series: series,
                growth_per_s: slope,
                growing: gained >= GROWTH_MIN_TASKS && r >= GROWTH_MIN_CORRELATION,
                parked: parked(&ts),
            }
        })
        .collect();
    sites.sort_by_key(|s| {
        std::cmp::Reverse((s.leaked + s.stuck + s.never_polled, s.alive, s.spawned))
    });
    sites
}

/// The live tasks' chains by (innermost await point, leaf), most tasks first.
fn parked(tasks: &[&TaskReport]) -> Vec<Parked> {
    let mut by: BTreeMap<(Option<String>, Option<String>), Parked> = BTreeMap::new();
    for t in tasks
        .iter()
        .filter(|t| t.completed_at_ns.is_none() && !t.freed)
    {
        let Some(c) = &t.await_chain else {
            continue;
        };
        let key = (c.parked_at(), c.leaf.clone());
        let p = by.entry(key.clone()).or_insert_with(|| Parked {
            at: key.0,
            leaf: key.1,
            tasks: 0,
            leaked: 0,
            chain: c.one_line(),
        });
        p.tasks += 1;
        p.leaked += u64::from(t.counted_verdict() == Verdict::Leaked);
    }
    let mut out: Vec<Parked> = by.into_values().collect();
    out.sort_by_key(|p| std::cmp::Reverse((p.leaked, p.tasks)));
    out
}

fn live_series(tasks: &[&TaskReport], window_ns: u64) -> Vec<[u64; 2]> {
    (0..=SERIES_POINTS)
        .map(|i| {
            // In u128: a forged recording's window may be as long as u64 allows.
            let t = (u128::from(window_ns) * u128::from(i) / u128::from(SERIES_POINTS)) as u64;
            let live = tasks
                .iter()
                .filter(|task| task.spawned_at_ns.get().unwrap_or(0) <= t)
                .filter(|task| task.ended_at_ns().is_none_or(|end| end > t))
                .count() as u64;
            [t, live]
        })
        .collect()
}

/// Least-squares slope (per second) and correlation coefficient of a series.
fn trend(series: &[[u64; 2]]) -> (f64, f64) {
    let n = series.len() as f64;
    let xs: Vec<f64> = series.iter().map(|p| p[0] as f64 / 1e9).collect();
    let ys: Vec<f64> = series.iter().map(|p| p[1] as f64).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(&ys) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return (0.0, 0.0);
    }
    (sxy / sxx, sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_and_growing_series() {
        let flat: Vec<[u64; 2]> = (0..=60).map(|i| [i * 1_000_000_000, 5]).collect();
        assert_eq!(trend(&flat), (0.0, 0.0));
        let growing: Vec<[u64; 2]> = (0..=60).map(|i| [i * 1_000_000_000, i / 2]).collect();
        let (slope, r) = trend(&growing);
        assert!((slope - 0.5).abs() < 0.05 && r > 0.99, "{slope} {r}");
    }
}
