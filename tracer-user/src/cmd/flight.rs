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

/// A verdict whose first appearance (and every later increase) writes an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    LeakedDefinite,
    Leaked,
    Stuck,
    NeverPolled,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::LeakedDefinite => "leaked:definite",
            Trigger::Leaked => "leaked",
            Trigger::Stuck => "stuck",
            Trigger::NeverPolled => "never_polled",
        }
    }
}

pub fn parse_trigger(s: &str) -> std::result::Result<Trigger, String> {
    match s.trim() {
        "leaked:definite" => Ok(Trigger::LeakedDefinite),
        "leaked" => Ok(Trigger::Leaked),
        "stuck" => Ok(Trigger::Stuck),
        "never_polled" | "never-polled" => Ok(Trigger::NeverPolled),
        other => Err(format!(
            "unknown trigger {other:?}: use leaked:definite, leaked, stuck or never_polled"
        )),
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
                })
                .sum()
        };
        let mut why = Vec::new();
        for (t, seen) in &mut self.fired {
            let n = count(*t);
            if n > *seen {
                why.push(format!("{} {} (was {})", t.as_str(), n, seen));
                *seen = n;
            }
        }
        (!why.is_empty()).then(|| format!("trigger {}", why.join(", ")))
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
