//! The flight recorder's side of a session (`record --flight D -o DIR`): when to write an
//! incident (a `--trigger` verdict appearing, SIGUSR1, `tasktrace snapshot`, the target's
//! exit), where (numbered files in DIR), and how `tasktrace snapshot` finds the recorder
//! of a process (a pid file). The ring itself is `stream::flight`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{
    error::{Error, Result},
    model::Aggregator,
};

/// A verdict whose first appearance (and every later increase) writes an incident, or a
/// spawn site whose live tasks grow faster than a rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trigger {
    LeakedDefinite,
    Leaked,
    Stuck,
    NeverPolled,
    /// Live tasks per second, over the last [`GROWTH_SPAN`], at one site.
    Growth(f64),
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::LeakedDefinite => "leaked:definite",
            Trigger::Leaked => "leaked",
            Trigger::Stuck => "stuck",
            Trigger::NeverPolled => "never_polled",
            Trigger::Growth(_) => "growth",
        }
    }
}

/// A site's growth is measured over this much of the recent past…
pub const GROWTH_SPAN: Duration = Duration::from_secs(30);
/// …once at least this much of it has been seen.
const GROWTH_MIN_SPAN: Duration = Duration::from_secs(5);

pub fn parse_trigger(s: &str) -> std::result::Result<Trigger, String> {
    match s.trim() {
        "leaked:definite" => Ok(Trigger::LeakedDefinite),
        "leaked" => Ok(Trigger::Leaked),
        "stuck" => Ok(Trigger::Stuck),
        "never_polled" | "never-polled" => Ok(Trigger::NeverPolled),
        other => match other.strip_prefix("growth:").map(str::parse::<f64>) {
            Some(Ok(rate)) if rate > 0.0 && rate.is_finite() => Ok(Trigger::Growth(rate)),
            _ => Err(format!(
                "unknown trigger {other:?}: use leaked:definite, leaked, stuck, never_polled \
                 or growth:RATE (live tasks per second at one spawn site, e.g. growth:5)"
            )),
        },
    }
}

#[derive(Clone, Debug)]
pub struct FlightOpts {
    /// The ring covers at least this much of the past.
    pub keep: Duration,
    pub max_bytes: usize,
    /// Where incidents are written.
    pub dir: PathBuf,
    pub triggers: Vec<Trigger>,
}

/// A running flight recorder: which triggers fired at what count, incidents so far.
pub struct Flight {
    pub opts: FlightOpts,
    fired: Vec<(Trigger, u64)>,
    /// Live tasks per site at each check over the last [`GROWTH_SPAN`] (growth triggers).
    history: std::collections::VecDeque<(u64, std::collections::HashMap<Option<String>, u64>)>,
    /// Sites a growth trigger fired for (once each).
    grown: std::collections::HashSet<Option<String>>,
    /// The task-list reading the growth history last took its counts from.
    last_reading: Option<u32>,
    incidents: u32,
    pidfile: Option<PathBuf>,
}

impl Flight {
    /// Starts recording for `target`: announces this recorder in a pid file for
    /// `tasktrace snapshot`.
    pub fn start(opts: FlightOpts, target: u32) -> Self {
        let path = pidfile(target);
        let pidfile = std::fs::write(
            &path,
            format!("{}\n{}\n", std::process::id(), opts.dir.display()),
        )
        .ok()
        .map(|_| path);
        let fired = opts.triggers.iter().map(|&t| (t, 0)).collect();
        Self {
            opts,
            fired,
            history: Default::default(),
            grown: Default::default(),
            last_reading: None,
            incidents: 0,
            pidfile,
        }
    }

    /// The triggers whose verdict count grew since they last fired, as the incident's
    /// reason (`None`: nothing new).
    pub fn due(&mut self, agg: &Aggregator, now_ns: u64) -> Option<String> {
        if self.fired.is_empty() {
            return None;
        }
        let now = agg.now(now_ns);
        let count = |t: Trigger| -> u64 {
            now.sites
                .iter()
                .map(|s| match t {
                    Trigger::LeakedDefinite => s.leaked_definite,
                    Trigger::Leaked => s.leaked_definite + s.leaked_suspected,
                    Trigger::Stuck => s.stuck,
                    Trigger::NeverPolled => s.never_polled,
                    Trigger::Growth(_) => 0,
                })
                .sum()
        };
        let mut why = Vec::new();
        let mut growth = None;
        for (t, seen) in &mut self.fired {
            if let Trigger::Growth(rate) = *t {
                growth = Some(rate);
                continue;
            }
            let n = count(*t);
            if n > *seen {
                why.push(format!("{} {} (was {})", t.as_str(), n, seen));
                *seen = n;
            }
        }
        if let Some(rate) = growth {
            // Where only the task lists tell that a task ended (sample mode), the live
            // count between two readings holds every task spawned since the last one and
            // none that ended since: it saw-tooths. Counts are compared at readings only,
            // where they are exact: the tasks each reading found.
            let at_reading = agg.completion_from_lists;
            let point = match now.reading {
                _ if !at_reading => Some(now_ns),
                Some((n, at)) if self.last_reading != Some(n) => {
                    self.last_reading = Some(n);
                    Some(at)
                }
                _ => None,
            };
            if let Some(at) = point {
                let live: std::collections::HashMap<Option<String>, u64> = now
                    .sites
                    .iter()
                    .map(|s| {
                        let n = if at_reading { s.listed } else { s.live };
                        (s.site.as_deref().map(str::to_owned), n)
                    })
                    .collect();
                self.history.push_back((at, live));
            }
            let span = GROWTH_SPAN.as_nanos() as u64;
            while self
                .history
                .front()
                .is_some_and(|(t, _)| now_ns.saturating_sub(*t) > span)
            {
                self.history.pop_front();
            }
            why.extend(self.grown_sites(rate));
        }
        (!why.is_empty()).then(|| format!("trigger {}", why.join(", ")))
    }

    /// Sites whose live tasks grew faster than `rate` a second over the history, each
    /// named once.
    fn grown_sites(&mut self, rate: f64) -> Vec<String> {
        let (Some((t0, then)), Some((t1, now))) = (self.history.front(), self.history.back())
        else {
            return Vec::new();
        };
        let dt = t1.saturating_sub(*t0) as f64 / 1e9;
        if dt < GROWTH_MIN_SPAN.as_secs_f64() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (site, &live) in now {
            let before = then.get(site).copied().unwrap_or(0);
            let per_s = (live as f64 - before as f64) / dt;
            if per_s >= rate && self.grown.insert(site.clone()) {
                out.push(format!(
                    "growth {} {per_s:+.1} live tasks/s over {dt:.0} s (threshold {rate}/s)",
                    site.as_deref().unwrap_or("(unknown site)")
                ));
            }
        }
        out.sort();
        out
    }

    /// The next incident's file: `DIR/incident-PID-UNIXTIME-N.trace`.
    pub fn next_path(&mut self, target: u32) -> PathBuf {
        self.incidents += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.opts
            .dir
            .join(format!("incident-{target}-{now}-{}.trace", self.incidents))
    }

    pub fn incidents(&self) -> u32 {
        self.incidents
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Some(p) = &self.pidfile {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn pidfile(target: u32) -> PathBuf {
    std::env::temp_dir().join(format!("tasktrace-flight-{target}.pid"))
}

/// `tasktrace snapshot --pid TARGET`: asks the flight recorder of TARGET (SIGUSR1) to
/// write an incident now; says where it goes.
pub fn snapshot(target: u32) -> Result<PathBuf> {
    let path = pidfile(target);
    let text = std::fs::read_to_string(&path).map_err(|_| Error::NoFlightRecorder {
        pid: target,
        why: format!("no {} (it is written by `record --flight`)", path.display()),
    })?;
    let mut lines = text.lines();
    let recorder: i32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| Error::NoFlightRecorder {
            pid: target,
            why: format!("{} is not a recorder's pid file", path.display()),
        })?;
    let dir = PathBuf::from(lines.next().unwrap_or("."));
    // SAFETY: kill with a pid and a signal number has no memory effects.
    if unsafe { libc::kill(recorder, libc::SIGUSR1) } != 0 {
        return Err(Error::NoFlightRecorder {
            pid: target,
            why: format!(
                "its recorder (pid {recorder}) is gone: {}",
                std::io::Error::last_os_error()
            ),
        });
    }
    Ok(dir)
}

/// Creates the incident directory up front, so that a bad `-o` fails before attaching.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|err| Error::Output {
        path: dir.to_owned(),
        err,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tracer_common::{EventKind, TaskEvent};

    use super::*;
    use crate::{
        model::verdict::Thresholds,
        stream::records::{ListKind, ListedTask, Rec, Status},
        tokio_versions::select,
    };

    const MS: u64 = 1_000_000;
    const STEADY: u64 = 0x5000;
    const GROWING: u64 = 0x6000;

    /// Sample mode's stream: spawns probed, ends told only by the readings (every
    /// `period`, listing the tasks alive then), the triggers checked every 1.3 s so that
    /// checks and readings drift apart as they do live. A steady site spawns 3 tasks every
    /// 100 ms that live 300 ms (9 alive); a growing site keeps 3 more tasks a second.
    /// Returns the growth incidents of a 30 s window, in order.
    fn growth_incidents() -> Vec<String> {
        let k = select(None).unwrap().knowledge;
        let s = Duration::from_secs(1);
        let mut agg = crate::model::Aggregator::new(k.state, Thresholds::new(s, s, s));
        agg.completion_from_lists = true;
        for (vtable, site) in [(STEADY, "steady.rs:1:1"), (GROWING, "growing.rs:1:1")] {
            agg.apply(&Rec::Future {
                vtable,
                name: String::new(),
                site: Some(site.into()),
            });
        }
        let opts = FlightOpts {
            keep: Duration::from_secs(10),
            max_bytes: 1 << 20,
            dir: std::env::temp_dir(),
            triggers: vec![Trigger::Growth(2.0)],
        };
        // A pid no process has: the recorder's pid file is its own.
        let mut flight = Flight::start(opts, u32::MAX - 7);
        // (header, id, vtable, spawned, ends)
        let mut tasks: Vec<(u64, u64, u64, u64, Option<u64>)> = Vec::new();
        let mut fired = Vec::new();
        let (mut next_check, mut next_reading) = (1_300 * MS, 1_000 * MS);
        for step in 1..=300u64 {
            let now = step * 100 * MS;
            for _ in 0..3 {
                let id = tasks.len() as u64 + 1;
                tasks.push((
                    0x10_0000 + id * 0x100,
                    id,
                    STEADY,
                    now,
                    Some(now + 300 * MS),
                ));
            }
            if step % 3 == 0 {
                let id = tasks.len() as u64 + 1;
                tasks.push((0x10_0000 + id * 0x100, id, GROWING, now, None));
            }
            for &(header, id, vtable, at, _) in tasks.iter().filter(|t| t.3 == now) {
                agg.apply(&Rec::Task(TaskEvent {
                    ts_ns: at,
                    header,
                    task_id: id,
                    owner_id: 1,
                    vtable,
                    tid: 1,
                    kind: EventKind::Spawn as u8,
                    ..Default::default()
                }));
            }
            if now >= next_reading {
                next_reading += 1_000 * MS;
                let listed: Vec<ListedTask> = tasks
                    .iter()
                    .filter(|t| t.4.is_none_or(|end| end > now))
                    .map(|&(header, id, vtable, _, _)| ListedTask {
                        header,
                        id,
                        owner_id: 1,
                        vtable,
                        state: 2 << 6,
                        digest: 0,
                        refs: 2,
                        list: ListKind::Runtime,
                        stable: true,
                        status: Status::Idle,
                        join_handle: true,
                        no_way_to_run: false,
                    })
                    .collect();
                agg.apply(&Rec::TaskList {
                    at_ns: now,
                    attach: false,
                    tasks: listed,
                    complete_owners: Some(vec![1]),
                    until_ns: Some(now),
                });
            }
            if now >= next_check {
                next_check += 1_300 * MS;
                fired.extend(flight.due(&agg, now));
            }
        }
        fired
    }

    #[test]
    fn growth_is_compared_at_readings_where_only_they_tell_ends() {
        let fired = growth_incidents();
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert!(fired[0].contains("growth growing.rs:1:1 +"), "{fired:?}");
        assert!(!fired[0].contains("steady"), "{fired:?}");
    }
}
