//! Folding: finished healthy tasks leave the model's task list and are counted in per-site
//! aggregates, so that the tracer's memory follows the live tasks (and the sites), not
//! every task a long window ever saw. A task is folded only when nothing can still change
//! what the report says of it; the report adds the aggregates to its counts and series.

use std::collections::HashMap;

use serde::Serialize;

use super::Task;

/// How many finished tasks a window keeps individually (`--keep`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// Every task alive or flagged, and the tasks finished since the last fold; the
    /// others are counted per spawn site (memory bounded by the live tasks).
    #[default]
    Recent,
    /// Every task ever seen, finished or not (memory grows with the window).
    All,
}

/// What a window keeps of its finished tasks: `--keep`, and (hidden, for tests that fold
/// small windows) `--fold-from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub keep: Keep,
    /// Tasks held before the first fold.
    pub fold_from: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep: Keep::Recent,
            fold_from: FOLD_FLOOR,
        }
    }
}

impl Retention {
    pub fn all() -> Self {
        Self {
            keep: Keep::All,
            ..Self::default()
        }
    }
}

/// Tasks held before the first fold: a window that sees fewer is reported task by task,
/// and later folds run when the held tasks double (the cost stays O(1) per task).
pub const FOLD_FLOOR: usize = 100_000;

/// A task is folded only this long after the latest record's instant: a record applied
/// later may carry an earlier instant (a reading walks for milliseconds before it is
/// applied); its late events and listings find its tombstone.
pub const FOLD_AFTER_NS: u64 = 500_000_000;

/// Finished tasks a window that folded still reports in full at its end (the latest).
pub const RECENT_KEPT: usize = 2_000;

/// Buckets of a site's folded series before they are merged pairwise (width doubles).
const BUCKETS: usize = 1024;

/// The folded tasks' live count by time, relative to the window's start: per bucket, the
/// task-time spent alive in it (so a bucket's mean population), in buckets whose width
/// doubles as the window grows (a 24-hour window keeps 1024 buckets of 84 s). Lives that
/// cover whole buckets are kept as a difference array: adding a task is O(1).
#[derive(Clone, Debug)]
struct Series {
    width_ns: u64,
    /// Task-ns alive in each bucket from lives that start or end in it.
    partial: Vec<f64>,
    /// +1 at the first bucket a life covers whole, −1 after the last.
    whole: Vec<i64>,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            width_ns: 1_000_000,
            partial: Vec::new(),
            whole: Vec::new(),
        }
    }
}

impl Series {
    /// A life over `[born, ended)`.
    fn add(&mut self, born: u64, ended: u64) {
        let ended = ended.max(born);
        while ended / self.width_ns >= BUCKETS as u64 {
            self.coarsen();
        }
        let w = self.width_ns;
        let (kb, ke) = ((born / w) as usize, (ended / w) as usize);
        if self.partial.len() <= ke + 1 {
            self.partial.resize(ke + 2, 0.0);
            self.whole.resize(ke + 2, 0);
        }
        if kb == ke {
            self.partial[kb] += (ended - born) as f64;
            return;
        }
        self.partial[kb] += ((kb as u64 + 1) * w - born) as f64;
        self.partial[ke] += (ended - ke as u64 * w) as f64;
        if ke > kb + 1 {
            self.whole[kb + 1] += 1;
            self.whole[ke] -= 1;
        }
    }

    /// Task-ns alive in each bucket.
    fn task_time(&self) -> Vec<f64> {
        let mut whole = 0i64;
        self.partial
            .iter()
            .zip(&self.whole)
            .map(|(&p, &d)| {
                whole += d;
                p + whole as f64 * self.width_ns as f64
            })
            .collect()
    }

    fn coarsen(&mut self) {
        let tt = self.task_time();
        self.width_ns = self.width_ns.saturating_mul(2);
        self.partial = tt.chunks(2).map(|c| c.iter().sum()).collect();
        self.whole = vec![0; self.partial.len()];
    }

    /// Folded tasks alive at `t` (relative): the mean over the bucket holding it, rounded.
    fn live_at(&self, t: u64) -> u64 {
        let b = (t / self.width_ns) as usize;
        if b >= self.partial.len() {
            return 0;
        }
        let whole: i64 = self.whole[..=b].iter().sum();
        let tt = self.partial[b] + whole as f64 * self.width_ns as f64;
        (tt / self.width_ns as f64).round().max(0.0) as u64
    }
}

/// The folded tasks of one spawn site.
#[derive(Clone, Debug, Default)]
pub struct FoldedSite {
    pub tasks: u64,
    /// Spawned in the window (the others existed before it).
    pub spawned: u64,
    /// Seen completing (the others were only seen freed).
    pub completed: u64,
    pub before_attach: u64,
    series: Series,
}

impl FoldedSite {
    /// Folded tasks of the site alive at `t_ns`, relative to the window's start.
    pub fn live_at(&self, t_ns: u64) -> u64 {
        self.series.live_at(t_ns)
    }
}

/// The aggregator's folding state.
#[derive(Clone, Debug)]
pub struct Fold {
    pub enabled: bool,
    /// Per site index (`Task::site`), grown on first use.
    pub sites: Vec<FoldedSite>,
    pub total: u64,
    /// The next fold runs when the model holds this many tasks (at least `floor`).
    pub next_at: usize,
    pub floor: usize,
    /// The window's start: the series count from it.
    pub origin: Option<u64>,
    /// Header → id of folded tasks not seen freed: their late events (a wake, a
    /// dealloc) must not bring them back as tasks first seen mid-window.
    pub tombstones: HashMap<u64, u64>,
    /// Folded tasks first seen without a spawn whose id is smaller than every spawn seen
    /// so far: alive before attach if no smaller spawn comes (decided at the end).
    /// (site, id).
    pub undecided: Vec<(u32, u64)>,
}

impl Default for Fold {
    fn default() -> Self {
        Self {
            enabled: true,
            sites: Vec::new(),
            total: 0,
            next_at: FOLD_FLOOR,
            floor: FOLD_FLOOR,
            origin: None,
            tombstones: HashMap::new(),
            undecided: Vec::new(),
        }
    }
}

impl Fold {
    /// Counts `t` (finished, healthy) in its site's aggregate.
    pub fn add(&mut self, t: &Task, ended: u64, before_attach: bool) {
        let origin = *self
            .origin
            .get_or_insert(t.spawned_ns.get().unwrap_or(t.first_seen_ns));
        let s = t.site as usize;
        if self.sites.len() <= s {
            self.sites.resize_with(s + 1, FoldedSite::default);
        }
        let site = &mut self.sites[s];
        site.tasks += 1;
        site.spawned += u64::from(t.spawned_ns.is_some());
        site.completed += u64::from(t.completed_ns.is_some());
        site.before_attach += u64::from(before_attach);
        // Alive from the window's start if spawned before it (as the report's series).
        let born = t.spawned_ns.get().map_or(0, |s| s.saturating_sub(origin));
        site.series.add(born, ended.saturating_sub(origin));
        self.total += 1;
    }

    /// The folded tasks of site index `site`.
    pub fn site(&self, site: u32) -> Option<&FoldedSite> {
        self.sites.get(site as usize).filter(|s| s.tasks > 0)
    }

    /// Decides the folded tasks' "alive before attach" once the smallest spawned id is
    /// final (`first`): ids below it predate the probes.
    pub fn decide_before_attach(&mut self, first: u64) {
        for (site, id) in std::mem::take(&mut self.undecided) {
            if id < first
                && let Some(s) = self.sites.get_mut(site as usize)
            {
                s.before_attach += 1;
            }
        }
    }

    /// A window-relative instant as the series counts it.
    pub fn relative(&self, window_start: u64, t_ns: u64) -> u64 {
        (window_start + t_ns).saturating_sub(self.origin.unwrap_or(window_start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_counts_lives_across_coarsening() {
        let mut s = Series::default();
        // 10 tasks alive over [1 s, 2 s), one alive [0, 30 min).
        for _ in 0..10 {
            s.add(1_000_000_000, 2_000_000_000);
        }
        s.add(0, 1_800_000_000_000);
        assert!(s.width_ns > 1_000_000, "coarsened");
        assert!(s.partial.len() <= BUCKETS + 1);
        let w = s.width_ns;
        // The first bucket (2.048 s) holds the ten 1 s lives and the long one: 5.9 mean.
        assert_eq!(w, 2_048_000_000);
        assert_eq!(s.live_at(0), 6);
        assert_eq!(s.live_at(900_000_000_000), 1);
        assert_eq!(s.live_at(1_800_000_000_000 + w), 0);
        let tt: f64 = s.task_time().iter().sum();
        assert_eq!(tt, 10.0 * 1e9 + 1.8e12);
    }

    #[test]
    fn short_lives_count_as_their_mean_population() {
        let mut s = Series::default();
        // 100 000 tasks of 1 ms each over 1 s (100 000 spawns/s): 100 alive at any time.
        for i in 0..100_000u64 {
            let born = i * 10_000;
            s.add(born, born + 1_000_000);
        }
        for t in [100_000_000, 500_000_000, 900_000_000] {
            assert_eq!(s.live_at(t), 100, "at {t}");
        }
        let mut one = Series::default();
        one.add(5_000_000, 9_000_000);
        assert_eq!((one.live_at(4_000_000), one.live_at(6_000_000)), (0, 1));
        assert_eq!(one.live_at(9_000_000), 0);
    }
}
