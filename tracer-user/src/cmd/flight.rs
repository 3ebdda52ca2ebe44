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
            let live: std::collections::HashMap<Option<String>, u64> = now
                .sites
                .iter()
                .map(|s| (s.site.as_deref().map(str::to_owned), s.live))
                .collect();
            self.history.push_back((now_ns, live));
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
