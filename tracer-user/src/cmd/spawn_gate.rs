//! When sample mode's spawn probes are attached. While the target spawns fewer tasks a
//! second than the budget, all the time: every spawn names its site, at a cost the budget
//! bounds. Above it, for one drain tick now and then, spaced so that the spawns probed
//! average at most half the budget: the sites of the futures spawned at that rate (a
//! growing leak among them) are still learned, and the probes' cost does not follow the
//! spawn rate. Pure policy: the session measures and attaches.

use std::collections::VecDeque;

/// Spawns a second sample mode probes at most, unless told (`--spawn-budget`): at a few
/// microseconds of probe each, about 0.5 % of one core.
pub const DEFAULT_BUDGET: u64 = 2000;
/// How long a probing window above the budget lasts (one drain tick).
pub const WINDOW_NS: u64 = 100_000_000;
/// The shortest gap between two probing windows.
const MIN_PERIOD_NS: u64 = 10_000_000_000;
/// The span the spawn rate is measured over.
const RATE_SPAN_NS: u64 = 1_000_000_000;

/// What the session should do with the spawn probes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Change {
    /// Attach them: `steady` until the rate exceeds the budget, else for one window.
    Arm {
        steady: bool,
    },
    Disarm,
}

#[derive(Debug)]
pub struct SpawnGate {
    /// Spawns a second probed at most (0: never probe).
    budget: f64,
    armed: Option<Armed>,
    /// Spawns counted so far at each tick of the last `RATE_SPAN_NS` (oldest first).
    counts: VecDeque<(u64, u64)>,
    /// When the next probing window may open (disarmed above the budget).
    next_window_ns: u64,
    /// The spawn rate as last measured.
    pub rate: Option<f64>,
}

#[derive(Clone, Copy, Debug)]
struct Armed {
    since_ns: u64,
    steady: bool,
}

impl SpawnGate {
    /// A gate whose probes are armed, steadily, at `now_ns` (the attach), unless the
    /// budget is 0.
    pub fn new(budget_per_s: u64, now_ns: u64) -> Self {
        Self {
            budget: budget_per_s as f64,
            armed: (budget_per_s > 0).then_some(Armed {
                since_ns: now_ns,
                steady: true,
            }),
            counts: VecDeque::new(),
            next_window_ns: 0,
            rate: None,
        }
    }

    /// A gate whose probes are off at `now_ns` until two ticks of tokio's task-id
    /// counter have measured the spawn rate: for a process already running, whose rate
    /// may be far above the budget from the first instant.
    pub fn measuring(budget_per_s: u64, now_ns: u64) -> Self {
        Self {
            armed: None,
            next_window_ns: now_ns + 2 * WINDOW_NS,
            ..Self::new(budget_per_s, now_ns)
        }
    }

    pub fn armed(&self) -> bool {
        self.armed.is_some()
    }

    /// Once a drain tick. `spawned`: how many tasks the target has spawned so far, by
    /// the best count there is (tokio's task-id counter; without it, the spawn events,
    /// which only count while armed: then the rate is only measured then).
    pub fn tick(
        &mut self,
        now_ns: u64,
        spawned: Option<u64>,
        counts_unarmed: bool,
    ) -> Option<Change> {
        if self.budget == 0.0 {
            return None;
        }
        if let Some(n) = spawned
            && (counts_unarmed || self.armed.is_some())
        {
            self.counts.push_back((now_ns, n));
            while self
                .counts
                .front()
                .is_some_and(|&(t, _)| now_ns - t > RATE_SPAN_NS)
                && self.counts.len() > 2
            {
                self.counts.pop_front();
            }
            if let (Some(&(t0, n0)), Some(&(t1, n1))) = (self.counts.front(), self.counts.back())
                && t1 > t0
            {
                self.rate = Some(n1.saturating_sub(n0) as f64 * 1e9 / (t1 - t0) as f64);
            }
        } else {
            // A count that stopped (disarmed, counting events): the rate is as last seen.
            self.counts.clear();
        }
        let rate = self.rate;
        let change = self.decide(now_ns, rate, counts_unarmed);
        // Spawn events count only while armed: the count at arming is the baseline.
        if matches!(change, Some(Change::Arm { .. })) && !counts_unarmed {
            self.counts.clear();
            self.counts.extend(spawned.map(|n| (now_ns, n)));
        }
        change
    }

    fn decide(&mut self, now_ns: u64, rate: Option<f64>, counts_unarmed: bool) -> Option<Change> {
        match self.armed {
            Some(Armed { steady: true, .. }) => {
                if rate.is_some_and(|r| r > self.budget) {
                    self.disarm(now_ns)
                } else {
                    None
                }
            }
            Some(Armed {
                steady: false,
                since_ns,
            }) => {
                if now_ns.saturating_sub(since_ns) < WINDOW_NS {
                    None
                } else if rate.is_some_and(|r| r < self.budget / 2.0) {
                    // The window found the rate down: stay.
                    self.armed = Some(Armed {
                        since_ns,
                        steady: true,
                    });
                    Some(Change::Arm { steady: true })
                } else {
                    self.disarm(now_ns)
                }
            }
            None if counts_unarmed
                && self.counts.len() > 1
                && rate.is_some_and(|r| r < self.budget / 2.0) =>
            {
                self.armed = Some(Armed {
                    since_ns: now_ns,
                    steady: true,
                });
                Some(Change::Arm { steady: true })
            }
            None if now_ns >= self.next_window_ns => {
                self.armed = Some(Armed {
                    since_ns: now_ns,
                    steady: false,
                });
                Some(Change::Arm { steady: false })
            }
            None => None,
        }
    }

    fn disarm(&mut self, now_ns: u64) -> Option<Change> {
        self.armed = None;
        self.counts.clear();
        // Windows spaced so that they probe half the budget on average at this rate.
        let rate = self.rate.unwrap_or(self.budget);
        let period = WINDOW_NS as f64 * rate / (self.budget / 2.0);
        self.next_window_ns = now_ns + (period as u64).max(MIN_PERIOD_NS);
        Some(Change::Disarm)
    }

    /// The probes could not be attached: stay off until the next window.
    pub fn arm_failed(&mut self, now_ns: u64) {
        self.armed = None;
        self.next_window_ns = now_ns + MIN_PERIOD_NS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A target spawning `rate` tasks a second, as the gate sees it every 100 ms.
    struct Target {
        now_ms: u64,
        total: u64,
        events: u64,
    }

    impl Target {
        fn new() -> Self {
            Self {
                now_ms: 0,
                total: 0,
                events: 0,
            }
        }

        /// Runs the gate for `secs` at `rate`; the changes and the time armed.
        fn run(
            &mut self,
            g: &mut SpawnGate,
            rate: u64,
            secs: u64,
            counter: bool,
        ) -> (Vec<(u64, Change)>, u64) {
            let mut changes = Vec::new();
            let mut armed_ms = 0;
            for _ in 0..secs * 10 {
                self.now_ms += 100;
                self.total += rate / 10;
                if g.armed() {
                    armed_ms += 100;
                    self.events += rate / 10;
                }
                let seen = if counter { self.total } else { self.events };
                if let Some(c) = g.tick(self.now_ms * MS, Some(seen), counter) {
                    changes.push((self.now_ms, c));
                }
            }
            (changes, armed_ms)
        }
    }

    fn windows(changes: &[(u64, Change)]) -> usize {
        changes
            .iter()
            .filter(|c| c.1 == Change::Arm { steady: false })
            .count()
    }

    #[test]
    fn under_the_budget_the_probes_stay_armed() {
        let mut g = SpawnGate::new(2000, 0);
        let (changes, armed) = Target::new().run(&mut g, 500, 30, true);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(armed, 30_000);
    }

    /// Attached to a running process: off until the rate is measured, then on to stay
    /// if it is low, else only for windows.
    #[test]
    fn a_running_process_is_measured_before_it_is_probed() {
        let mut g = SpawnGate::measuring(2000, 0);
        assert!(!g.armed());
        let (changes, armed) = Target::new().run(&mut g, 500, 10, true);
        assert_eq!(changes, [(200, Change::Arm { steady: true })]);
        assert_eq!(armed, 10_000 - 200);
        let mut g = SpawnGate::measuring(2000, 0);
        let (changes, armed) = Target::new().run(&mut g, 100_000, 30, true);
        assert_eq!(
            changes[0],
            (200, Change::Arm { steady: false }),
            "{changes:?}"
        );
        assert!(!changes.iter().any(|c| c.1 == Change::Arm { steady: true }));
        assert!(armed <= 400, "{armed} ms armed: {changes:?}");
    }

    #[test]
    fn above_the_budget_windows_probe_at_most_half_of_it() {
        let mut g = SpawnGate::new(2000, 0);
        let (changes, armed_ms) = Target::new().run(&mut g, 100_000, 120, true);
        assert_eq!(changes.first(), Some(&(200, Change::Disarm)), "{changes:?}");
        // One window every 10 s after the first disarm.
        let w = windows(&changes);
        assert!((11..=12).contains(&w), "{w} windows: {changes:?}");
        assert!(!changes.iter().any(|c| c.1 == Change::Arm { steady: true }));
        // Armed 0.2 s at first, then 0.1 s per window: 1 000 spawns a second probed.
        let probed = (armed_ms - 200) as f64 / 1e3 * 100_000.0 / 120.0;
        assert!(probed <= 1_000.0, "{probed} spawns/s probed");
    }

    #[test]
    fn a_faster_target_gets_sparser_windows() {
        let mut g = SpawnGate::new(2000, 0);
        let (changes, _) = Target::new().run(&mut g, 1_000_000, 300, true);
        // 1 M/s: a window probes 100 000 spawns, one every 100 s.
        let w = windows(&changes);
        assert!((2..=3).contains(&w), "{w}: {changes:?}");
    }

    #[test]
    fn when_the_rate_falls_the_probes_come_back_to_stay() {
        let mut g = SpawnGate::new(2000, 0);
        let mut t = Target::new();
        t.run(&mut g, 100_000, 5, true);
        assert!(!g.armed());
        let (changes, armed) = t.run(&mut g, 100, 10, true);
        // Once the last second holds only the slow spawns.
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].1, Change::Arm { steady: true });
        assert!((6_000..=6_200).contains(&changes[0].0), "{changes:?}");
        assert!(armed >= 8_800, "{armed}");
    }

    #[test]
    fn without_a_counter_the_windows_measure_the_rate() {
        let mut g = SpawnGate::new(2000, 0);
        let mut t = Target::new();
        let (changes, _) = t.run(&mut g, 100_000, 30, false);
        assert_eq!(changes.first(), Some(&(200, Change::Disarm)), "{changes:?}");
        assert!(windows(&changes) >= 2, "{changes:?}");
        // Back under the budget: the next window sees it and stays.
        let (changes, armed) = t.run(&mut g, 100, 30, false);
        let opened = changes
            .iter()
            .position(|c| c.1 == Change::Arm { steady: false })
            .expect("a window");
        assert_eq!(
            changes.get(opened + 1).map(|c| c.1),
            Some(Change::Arm { steady: true }),
            "{changes:?}"
        );
        assert!(armed > 15_000, "{armed}");
    }

    #[test]
    fn a_budget_of_zero_never_probes() {
        let mut g = SpawnGate::new(0, 0);
        assert!(!g.armed());
        let (changes, armed) = Target::new().run(&mut g, 10, 30, true);
        assert!(changes.is_empty());
        assert_eq!(armed, 0);
    }
}
