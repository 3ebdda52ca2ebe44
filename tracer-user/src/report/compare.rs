//! `tasktrace report A --baseline B`: what changed about the tasks between two windows
//! (a deploy, a fix, a config change), per spawn site. Both sides are JSON reports (a
//! trace file is reported first); the comparison reads only their `summary` and
//! `spawn_sites`, so reports of other builds and other tasktrace versions compare too.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::terminal_safe;

pub const SCHEMA: &str = "tasktrace.compare/1";

/// A site's live count changes only when it moves by more than this many tasks…
const ALIVE_MIN_CHANGE: u64 = 3;
/// …and by more than this fraction of the larger count (a steady population sampled at
/// another instant is not a change).
const ALIVE_MIN_FRACTION: f64 = 0.25;
/// A poll-time percentile changes when it grows or shrinks by this factor or more…
const POLL_MIN_RATIO: f64 = 2.0;
/// …with at least this many polls on both sides for the median, and for the 99th
/// percentile enough that at least ten polls lie above it: over a few hundred polls, p99
/// is two or three polls, and a busy machine doubles it between two runs of one build.
const POLL_MIN_POLLS: u64 = 100;
const P99_MIN_POLLS: u64 = 1000;

/// What one side says about a spawn site.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub spawned: u64,
    pub spawned_per_s: f64,
    pub alive: u64,
    pub leaked: u64,
    pub stuck: u64,
    pub never_polled: u64,
    pub growing: bool,
    pub growth_per_s: f64,
    pub polls: u64,
    pub poll_p50_us: Option<f64>,
    pub poll_p99_us: Option<f64>,
    /// `[t_ns, count]`, relative to that side's window start.
    pub live_series: Vec<[u64; 2]>,
}

/// One side of the comparison: the report it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub file: String,
    pub binary: String,
    pub pid: u64,
    pub tokio_version: Option<String>,
    pub window_s: f64,
    pub tasks_seen: u64,
    pub alive: u64,
    pub leaked: u64,
    pub stuck: u64,
    pub never_polled: u64,
    pub lost_events: u64,
    #[serde(skip)]
    sites: BTreeMap<Option<String>, Figures>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only the current side has the site.
    Appeared,
    /// Only the baseline has it.
    Vanished,
    Changed,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Appeared => "appeared",
            Change::Vanished => "vanished",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SiteChange {
    /// `file:line:col`, `function+0xoff`, or `null` for tasks of no known site.
    pub site: Option<String>,
    pub change: Change,
    /// What moved past its threshold (`leaked`, `stuck`, `never_polled`, `alive`,
    /// `growing`, `poll_p50`, `poll_p99`), empty unless `changed`.
    pub what: Vec<&'static str>,
    pub baseline: Option<Figures>,
    pub current: Option<Figures>,
    /// Current minus baseline (a missing side counts as zero).
    pub delta_alive: i64,
    pub delta_leaked: i64,
    pub delta_stuck: i64,
    pub delta_never_polled: i64,
    /// Sites are sorted by this, largest first: verdict changes weigh ten live tasks.
    pub score: f64,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub schema: &'static str,
    pub current: Side,
    pub baseline: Side,
    pub changed: usize,
    pub appeared: usize,
    pub vanished: usize,
    pub unchanged: usize,
    /// Every site of either side: appeared, vanished and changed ones first, by score.
    pub sites: Vec<SiteChange>,
}

/// Reads one side from a JSON report (`tasktrace.report/1`).
pub fn side(file: &str, report: &Value) -> Result<Side, String> {
    let schema = report["schema"].as_str().unwrap_or("");
    if !schema.starts_with("tasktrace.report/") {
        return Err(format!(
            "{file} is not a tasktrace report (schema {schema:?}); give a trace file or the \
             JSON of `--json`"
        ));
    }
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let s = &report["summary"];
    let window_s = u(&report["window"]["duration_ns"]) as f64 / 1e9;
    let mut sites = BTreeMap::new();
    for site in report["spawn_sites"].as_array().into_iter().flatten() {
        let spawned = u(&site["spawned"]);
        let series = site["live_series"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some([p.get(0)?.as_u64()?, p.get(1)?.as_u64()?]))
            .collect();
        let f = Figures {
            spawned,
            spawned_per_s: if window_s > 0.0 {
                spawned as f64 / window_s
            } else {
                0.0
            },
            alive: u(&site["alive"]),
            leaked: u(&site["leaked"]),
            stuck: u(&site["stuck"]),
            never_polled: u(&site["never_polled"]),
            growing: site["growing"].as_bool().unwrap_or(false),
            growth_per_s: site["growth_per_s"].as_f64().unwrap_or(0.0),
            polls: u(&site["polls"]),
            poll_p50_us: site["poll_p50_us"].as_f64(),
            poll_p99_us: site["poll_p99_us"].as_f64(),
            live_series: series,
        };
        sites.insert(site["site"].as_str().map(str::to_owned), f);
    }
    Ok(Side {
        file: file.to_owned(),
        binary: report["target"]["binary"].as_str().unwrap_or("").to_owned(),
        pid: u(&report["target"]["pid"]),
        tokio_version: report["target"]["tokio_version"]
            .as_str()
            .map(str::to_owned),
        window_s,
        tasks_seen: u(&s["tasks_seen"]),
        alive: u(&s["alive"]),
        leaked: u(&s["leaked"]),
        stuck: u(&s["stuck"]),
        never_polled: u(&s["never_polled"]),
        lost_events: u(&s["lost_events"]),
        sites,
    })
}

/// What moved between the baseline's and the current figures of one site.
fn moved(b: &Figures, c: &Figures) -> Vec<&'static str> {
    let mut what = Vec::new();
    for (name, x, y) in [
        ("leaked", b.leaked, c.leaked),
        ("stuck", b.stuck, c.stuck),
        ("never_polled", b.never_polled, c.never_polled),
    ] {
        if x != y {
            what.push(name);
        }
    }
    let larger = b.alive.max(c.alive) as f64;
    let d = b.alive.abs_diff(c.alive);
    if d > ALIVE_MIN_CHANGE && d as f64 > ALIVE_MIN_FRACTION * larger {
        what.push("alive");
    }
    if b.growing != c.growing {
        what.push("growing");
    }
    let polls = b.polls.min(c.polls);
    for (name, x, y, min) in [
        ("poll_p50", b.poll_p50_us, c.poll_p50_us, POLL_MIN_POLLS),
        ("poll_p99", b.poll_p99_us, c.poll_p99_us, P99_MIN_POLLS),
    ] {
        if polls >= min
            && let (Some(x), Some(y)) = (x, y)
            && x > 0.0
            && y > 0.0
            && (y / x >= POLL_MIN_RATIO || x / y >= POLL_MIN_RATIO)
        {
            what.push(name);
        }
    }
    what
}

pub fn compare(current: Side, baseline: Side) -> Comparison {
    let mut keys: Vec<&Option<String>> =
        current.sites.keys().chain(baseline.sites.keys()).collect();
    keys.sort();
    keys.dedup();
    let zero = Figures::default();
    let mut sites: Vec<SiteChange> = keys
        .into_iter()
        .map(|k| {
            let (b, c) = (baseline.sites.get(k), current.sites.get(k));
            let (change, what) = match (b, c) {
                (None, _) => (Change::Appeared, Vec::new()),
                (_, None) => (Change::Vanished, Vec::new()),
                (Some(b), Some(c)) => {
                    let what = moved(b, c);
                    let change = if what.is_empty() {
                        Change::Unchanged
                    } else {
                        Change::Changed
                    };
                    (change, what)
                }
            };
            let (bf, cf) = (b.unwrap_or(&zero), c.unwrap_or(&zero));
            let d = |x: u64, y: u64| y as i64 - x as i64;
            let delta_alive = d(bf.alive, cf.alive);
            let delta_leaked = d(bf.leaked, cf.leaked);
            let delta_stuck = d(bf.stuck, cf.stuck);
            let delta_never_polled = d(bf.never_polled, cf.never_polled);
            let verdicts = delta_leaked.unsigned_abs()
                + delta_stuck.unsigned_abs()
                + delta_never_polled.unsigned_abs();
            let score = match change {
                Change::Unchanged => 0.0,
                _ => {
                    10.0 * verdicts as f64
                        + delta_alive.unsigned_abs() as f64
                        + f64::from(u8::from(what.contains(&"growing"))) * 5.0
                        + what.iter().filter(|w| w.starts_with("poll_")).count() as f64
                        // Appearing or vanishing is a change even for an idle site.
                        + f64::from(u8::from(matches!(
                            change,
                            Change::Appeared | Change::Vanished
                        )))
                }
            };
            SiteChange {
                site: k.clone(),
                change,
                what,
                baseline: b.cloned(),
                current: c.cloned(),
                delta_alive,
                delta_leaked,
                delta_stuck,
                delta_never_polled,
                score,
            }
        })
        .collect();
    sites.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.site.cmp(&b.site))
    });
    let count = |c: Change| sites.iter().filter(|s| s.change == c).count();
    Comparison {
        schema: SCHEMA,
        changed: count(Change::Changed),
        appeared: count(Change::Appeared),
        vanished: count(Change::Vanished),
        unchanged: count(Change::Unchanged),
        current,
        baseline,
        sites,
    }
}

fn site_name(s: &Option<String>) -> String {
    s.as_deref()
        .map_or_else(|| "unknown site".into(), |s| terminal_safe(s).into_owned())
}

fn was(name: &str, b: u64, c: u64) -> String {
    if b == c {
        format!("{name} {c}")
    } else {
        format!("{name} {b} → {c} ({:+})", c as i64 - b as i64)
    }
}

/// The text summary: totals, then every site that changed, appeared or vanished.
pub fn render_compare_text(c: &Comparison) -> String {
    let mut out = String::new();
    let side = |s: &Side| {
        format!(
            "{} (pid {}, tokio {}, {:.1} s)",
            terminal_safe(&s.file),
            s.pid,
            s.tokio_version.as_deref().unwrap_or("unknown"),
            s.window_s
        )
    };
    let _ = writeln!(out, "tasktrace compare");
    let _ = writeln!(out, "  current:  {}", side(&c.current));
    let _ = writeln!(out, "  baseline: {}", side(&c.baseline));
    let (b, n) = (&c.baseline, &c.current);
    let _ = writeln!(
        out,
        "  totals:   {} · {} · {} · {}",
        was("leaked", b.leaked, n.leaked),
        was("stuck", b.stuck, n.stuck),
        was("never polled", b.never_polled, n.never_polled),
        was("alive", b.alive, n.alive)
    );
    if b.lost_events + n.lost_events > 0 {
        let _ = writeln!(
            out,
            "  lost events: {} (baseline) / {} (current): counts may be short",
            b.lost_events, n.lost_events
        );
    }
    let _ = writeln!(
        out,
        "\n{} site(s) changed, {} appeared, {} vanished, {} unchanged",
        c.changed, c.appeared, c.vanished, c.unchanged
    );
    let zero = Figures::default();
    for s in c.sites.iter().filter(|s| s.change != Change::Unchanged) {
        let (bf, cf) = (
            s.baseline.as_ref().unwrap_or(&zero),
            s.current.as_ref().unwrap_or(&zero),
        );
        let mut parts = vec![
            was("leaked", bf.leaked, cf.leaked),
            was("stuck", bf.stuck, cf.stuck),
            was("never polled", bf.never_polled, cf.never_polled),
            was("alive", bf.alive, cf.alive),
        ];
        if bf.growing != cf.growing {
            parts.push(format!(
                "growing {} → {}",
                if bf.growing { "yes" } else { "no" },
                if cf.growing { "yes" } else { "no" }
            ));
        }
        let ms = |us: Option<f64>| us.map_or("–".into(), |us| format!("{:.3}", us / 1e3));
        if bf.polls + cf.polls > 0 {
            parts.push(format!(
                "poll p50/p99 {}/{} → {}/{} ms",
                ms(bf.poll_p50_us),
                ms(bf.poll_p99_us),
                ms(cf.poll_p50_us),
                ms(cf.poll_p99_us)
            ));
        }
        let _ = writeln!(
            out,
            "  {:<9} {}\n            {}",
            s.change.as_str(),
            site_name(&s.site),
            parts.join(" · ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(sites: Value, leaked: u64) -> Value {
        json!({
            "schema": "tasktrace.report/1",
            "target": {"binary": "/srv/app", "pid": 7, "tokio_version": "1.54.1"},
            "window": {"duration_ns": 10_000_000_000u64},
            "summary": {"tasks_seen": 100, "alive": 20, "leaked": leaked, "stuck": 0,
                        "never_polled": 0, "lost_events": 0},
            "spawn_sites": sites,
        })
    }

    fn site(name: Option<&str>, alive: u64, leaked: u64, polls: u64, p99: f64) -> Value {
        json!({"site": name, "spawned": 50, "alive": alive, "leaked": leaked, "stuck": 0,
               "never_polled": 0, "growing": false, "growth_per_s": 0.0, "polls": polls,
               "poll_p50_us": 10.0, "poll_p99_us": p99, "live_series": [[0, 1], [5, alive]]})
    }

    fn compared(cur: Value, base: Value) -> Comparison {
        compare(side("a", &cur).unwrap(), side("b", &base).unwrap())
    }

    /// Over a few hundred polls p99 is two or three polls: doubling it is noise, not a
    /// change (a healthy site's p99 went 13 → 29 µs between two runs of one build on a
    /// busy machine); the median over them is one.
    #[test]
    fn p99_over_few_polls_is_not_a_change_but_the_median_is() {
        let base = report(json!([site(Some("src/a.rs:1:1"), 8, 0, 264, 13.0)]), 0);
        let cur = report(json!([site(Some("src/a.rs:1:1"), 8, 0, 264, 29.0)]), 0);
        let c = compared(cur, base);
        assert_eq!(
            c.sites[0].change,
            Change::Unchanged,
            "{:?}",
            c.sites[0].what
        );
        let base = report(json!([site(Some("src/a.rs:1:1"), 8, 0, 1000, 13.0)]), 0);
        let cur = report(json!([site(Some("src/a.rs:1:1"), 8, 0, 1000, 29.0)]), 0);
        assert_eq!(compared(cur, base).sites[0].what, vec!["poll_p99"]);
    }

    #[test]
    fn names_the_sites_that_changed_and_only_those() {
        let base = report(
            json!([
                site(Some("src/a.rs:1:1"), 8, 0, 1000, 50.0),
                site(Some("src/leak.rs:2:2"), 1, 0, 10, 5.0),
                site(Some("src/gone.rs:3:3"), 2, 0, 10, 5.0),
                site(Some("src/slow.rs:4:4"), 2, 0, 1000, 50.0),
            ]),
            0,
        );
        let cur = report(
            json!([
                // A steady population read at another instant: not a change.
                site(Some("src/a.rs:1:1"), 10, 0, 1000, 60.0),
                site(Some("src/leak.rs:2:2"), 29, 28, 40, 5.0),
                site(Some("src/slow.rs:4:4"), 2, 0, 1000, 400.0),
                site(None, 1, 0, 0, 0.0),
            ]),
            28,
        );
        let c = compared(cur, base);
        let rows: Vec<_> = c
            .sites
            .iter()
            .map(|s| (s.site.as_deref(), s.change, s.what.clone()))
            .collect();
        assert_eq!(
            rows,
            vec![
                (
                    Some("src/leak.rs:2:2"),
                    Change::Changed,
                    vec!["leaked", "alive"]
                ),
                (Some("src/gone.rs:3:3"), Change::Vanished, vec![]),
                (None, Change::Appeared, vec![]),
                (Some("src/slow.rs:4:4"), Change::Changed, vec!["poll_p99"]),
                (Some("src/a.rs:1:1"), Change::Unchanged, vec![]),
            ]
        );
        assert_eq!(
            (c.changed, c.appeared, c.vanished, c.unchanged),
            (2, 1, 1, 1)
        );
        assert_eq!(c.sites[0].delta_leaked, 28);
        assert_eq!(c.sites[0].delta_alive, 28);
        let text = render_compare_text(&c);
        assert!(text.contains("leaked 0 → 28 (+28)"), "{text}");
        assert!(text.contains("2 site(s) changed, 1 appeared, 1 vanished, 1 unchanged"));
        assert!(
            !text.contains("src/a.rs"),
            "unchanged sites are not listed: {text}"
        );
    }

    #[test]
    fn few_polls_or_small_moves_are_not_changes() {
        let base = report(json!([site(Some("s"), 2, 0, 50, 10.0)]), 0);
        let cur = report(json!([site(Some("s"), 5, 0, 50, 1000.0)]), 0);
        let c = compared(cur, base);
        assert_eq!(c.sites[0].change, Change::Unchanged, "{:?}", c.sites[0]);
    }

    #[test]
    fn a_file_that_is_not_a_report_is_refused_with_what_to_give() {
        let err = side("x.json", &json!({"schema": "tasktrace.compare/1"})).unwrap_err();
        assert!(err.contains("not a tasktrace report"), "{err}");
        assert!(err.contains("--json"), "{err}");
    }
}
