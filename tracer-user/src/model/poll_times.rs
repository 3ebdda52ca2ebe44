//! Poll durations (of one spawn site, or of the whole window) as a log-linear histogram:
//! eight sub-buckets per power of two of nanoseconds (percentiles within 12.5 %), fixed
//! size whatever the number of polls, plus the exact maximum.

/// Sub-buckets per power of two.
const SUB: usize = 8;
const BUCKETS: usize = 64 * SUB;

#[derive(Clone, Debug)]
pub struct PollTimes {
    counts: Box<[u64; BUCKETS]>,
    pub polls: u64,
    pub max_ns: u64,
    /// Their summed duration (a live view's busy share).
    pub total_ns: u64,
}

impl Default for PollTimes {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            polls: 0,
            max_ns: 0,
            total_ns: 0,
        }
    }
}

impl PollTimes {
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket(ns)] += 1;
        self.polls += 1;
        self.total_ns = self.total_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// The `p`-th percentile (0–100) in nanoseconds: the upper bound of its bucket,
    /// capped at the largest poll seen.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.polls == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.polls as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper_bound(i).min(self.max_ns));
            }
        }
        Some(self.max_ns)
    }

    /// The polls by power of two of microseconds (the report's chart): `(below_us,
    /// polls)` from 1 µs up to the longest bucket with polls. Each sub-bucket goes where
    /// its upper bound falls, so a boundary is placed within an eighth.
    pub fn by_power_of_two_us(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, &n) in self.counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            let us = upper_bound(i) / 1_000;
            let slot = (u64::BITS - us.leading_zeros()) as usize;
            while out.len() <= slot {
                out.push((1u64 << out.len().min(63), 0));
            }
            out[slot].1 += n;
        }
        out
    }
}

fn bucket(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let power = (u64::BITS - 1 - ns.leading_zeros()) as usize;
    let sub = ((ns >> (power - 3)) & (SUB as u64 - 1)) as usize;
    (power * SUB + sub).min(BUCKETS - 1)
}

fn upper_bound(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let (power, sub) = (i / SUB, (i % SUB) as u64);
    let base = 1u64 << power;
    // In this order the last bucket's bound is u64::MAX, not one past it.
    base - 1 + (sub + 1) * (base / SUB as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forged recording can hold a poll of any length (a fuzz finding).
    #[test]
    fn the_longest_durations_have_a_bucket() {
        assert_eq!(upper_bound(BUCKETS - 1), u64::MAX);
        let mut h = PollTimes::default();
        h.record(u64::MAX);
        assert_eq!(h.percentile(100.0), Some(u64::MAX));
        assert!(!h.by_power_of_two_us().is_empty());
    }

    #[test]
    fn percentiles_are_within_an_eighth() {
        let mut h = PollTimes::default();
        assert_eq!(h.percentile(50.0), None);
        for us in 1..=1000u64 {
            h.record(us * 1000);
        }
        for (p, want) in [(50.0, 500_000.0), (90.0, 900_000.0), (99.0, 990_000.0)] {
            let got = h.percentile(p).unwrap() as f64;
            assert!(got >= want && got <= want * 1.125, "p{p}: {got} vs {want}");
        }
        assert_eq!(h.percentile(100.0), Some(1_000_000));
        assert_eq!(h.max_ns, 1_000_000);
        for ns in [0, 1, 7, 8, 9, 1023, 1024, u64::MAX / 2] {
            let b = bucket(ns);
            assert!(upper_bound(b) >= ns, "{ns}");
        }
    }

    #[test]
    fn the_chart_folds_polls_into_powers_of_two_of_microseconds() {
        let mut h = PollTimes::default();
        assert!(h.by_power_of_two_us().is_empty());
        h.record(300); // under 1 µs
        h.record(1_500); // 1–2 µs
        h.record(1_600);
        h.record(100_000); // 64–128 µs
        let chart = h.by_power_of_two_us();
        assert_eq!(chart.iter().map(|c| c.1).sum::<u64>(), 4);
        assert_eq!(chart[0], (1, 1));
        assert_eq!(chart[1], (2, 2));
        assert_eq!(chart.last(), Some(&(128, 1)));
        assert!(chart.iter().enumerate().all(|(i, c)| c.0 == 1 << i));
    }
}
