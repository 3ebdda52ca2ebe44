//! The flight recorder's ring (`record --flight D`): the stream's last D of records, held
//! in memory instead of written, cut at task-list readings so that it always starts with
//! one, and written out on demand as an incident trace. Each incident is a recording like
//! any other: its first reading is its attach listing (the tasks alive before the ring's
//! window), then the records since, then an end record.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use crate::{
    error::Result,
    stream::{EndRecord, MetaRecord, Rec, records::ListedTask, tracefile::Writer},
};

pub struct FlightRing {
    /// How much time the ring covers at least (older spans are dropped).
    keep_ns: u64,
    /// At most this many bytes of records (about): older spans are dropped first.
    max_bytes: usize,
    recs: VecDeque<Rec>,
    /// Sequence number of `recs[0]`.
    first_seq: u64,
    /// Where each reading starts in the ring: (sequence number, its instant).
    readings: VecDeque<(u64, u64)>,
    bytes: usize,
    /// Future names, kept for the whole run: a vtable is described once, when first seen.
    futures: BTreeMap<u64, Rec>,
    /// Spans dropped early to stay under `max_bytes`.
    pub cut_for_size: u64,
}

impl FlightRing {
    pub fn new(keep_ns: u64, max_bytes: usize) -> Self {
        Self {
            keep_ns,
            max_bytes,
            recs: VecDeque::new(),
            first_seq: 0,
            readings: VecDeque::new(),
            bytes: 0,
            futures: BTreeMap::new(),
            cut_for_size: 0,
        }
    }

    pub fn push(&mut self, rec: &Rec) {
        if let Rec::Future { vtable, .. } = rec {
            self.futures.insert(*vtable, rec.clone());
            return;
        }
        if let Rec::Meta(_) = rec {
            return;
        }
        let seq = self.first_seq + self.recs.len() as u64;
        // A reading fed in parts starts with its first part.
        if let Rec::TaskList { at_ns, .. } = rec
            && self.readings.back().is_none_or(|&(_, at)| at != *at_ns)
        {
            self.readings.push_back((seq, *at_ns));
        }
        self.bytes += size(rec);
        self.recs.push_back(rec.clone());
    }

    /// Drops what is older than the ring must keep, a whole span between two readings at
    /// a time, so that the ring still starts with a reading.
    pub fn trim(&mut self, now_ns: u64) {
        let horizon = now_ns.saturating_sub(self.keep_ns);
        while self.readings.len() >= 2 {
            let too_old = self.readings[1].1 <= horizon;
            let too_big = self.bytes > self.max_bytes;
            if !too_old && !too_big {
                break;
            }
            if too_big && !too_old {
                self.cut_for_size += 1;
            }
            self.readings.pop_front();
            let (reading_seq, at_ns) = self.readings[0];
            // Events drained just before the reading's record happened while it walked
            // the lists: they are after its instant, kept (written after it, as attach
            // holds them back).
            let mut keep_from = reading_seq;
            while keep_from > self.first_seq {
                let prev = &self.recs[(keep_from - 1 - self.first_seq) as usize];
                if at(prev).is_some_and(|t| t < at_ns) {
                    break;
                }
                keep_from -= 1;
            }
            while self.first_seq < keep_from {
                let r = self.recs.pop_front().expect("sequence within the ring");
                self.bytes -= size(&r);
                self.first_seq += 1;
            }
        }
    }

    /// The instant the ring's window starts (its first reading), if it holds one yet.
    pub fn start_ns(&self) -> Option<u64> {
        self.readings.front().map(|&(_, at)| at)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Writes the ring as a recording: `meta` with the ring's start, the future names,
    /// the ring's first reading as the attach listing, every record since, `end`.
    pub fn write(&self, path: &Path, meta: &MetaRecord, end: &EndRecord) -> Result<()> {
        let start = self.start_ns().unwrap_or(meta.start_ns);
        let mut w = Writer::create(path)?;
        let mut m = meta.clone();
        let lost_span = start.saturating_sub(meta.start_ns);
        m.start_unix_s += lost_span as f64 / 1e9;
        m.start_ns = start;
        m.warnings.push(format!(
            "flight recorder incident: the last {:.1} s before it; tasks alive at its start \
             come from the task-list reading there (alive before the window)",
            end.end_ns.saturating_sub(start) as f64 / 1e9
        ));
        w.meta(&m);
        for f in self.futures.values() {
            w.record(f);
        }
        // The first reading's parts as the attach listing, then what happened while it
        // walked (drained before it), then the rest.
        let first = self
            .readings
            .front()
            .map_or(0, |&(seq, _)| (seq - self.first_seq) as usize);
        let parts = self
            .recs
            .iter()
            .skip(first)
            .take_while(|r| matches!(r, Rec::TaskList { at_ns, .. } if *at_ns == start))
            .count();
        for rec in self.recs.range(first..first + parts) {
            if let Rec::TaskList {
                at_ns,
                tasks,
                complete_owners,
                until_ns,
                ..
            } = rec
            {
                w.record(&Rec::TaskList {
                    at_ns: *at_ns,
                    attach: true,
                    tasks: tasks.clone(),
                    complete_owners: complete_owners.clone(),
                    until_ns: *until_ns,
                });
            }
        }
        for rec in self
            .recs
            .range(..first)
            .chain(self.recs.range(first + parts..))
        {
            w.record(rec);
        }
        w.end(end);
        w.check()
    }
}

/// When a record happened, if it says.
fn at(rec: &Rec) -> Option<u64> {
    match rec {
        Rec::Task(ev) => Some(ev.ts_ns),
        Rec::TaskList { at_ns, .. }
        | Rec::Samples { at_ns, .. }
        | Rec::TaskIds { at_ns, .. }
        | Rec::SpawnProbes { at_ns, .. }
        | Rec::Awaits { at_ns, .. }
        | Rec::Lost { at_ns, .. } => Some(*at_ns),
        Rec::Stopped { to_ns, .. } => Some(*to_ns),
        Rec::Meta(_) | Rec::Site { .. } | Rec::Future { .. } => None,
    }
}

/// About what a record holds in memory.
fn size(rec: &Rec) -> usize {
    let base = std::mem::size_of::<Rec>();
    base + match rec {
        Rec::TaskList { tasks, .. } => tasks.len() * std::mem::size_of::<ListedTask>(),
        Rec::Samples { samples, .. } => samples.len() * 16,
        Rec::Site {
            location, caller, ..
        } => location.as_ref().map_or(0, String::len) + caller.as_ref().map_or(0, String::len),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at_ns: u64, n: usize) -> Rec {
        Rec::TaskList {
            at_ns,
            attach: false,
            tasks: vec![
                ListedTask {
                    header: 0x1000,
                    id: 1,
                    owner_id: 1,
                    vtable: 0x2000,
                    state: 0,
                    digest: 0,
                    refs: 1,
                    list: Default::default(),
                    stable: true,
                    status: crate::tokio_versions::Status::Idle,
                    join_handle: false,
                    no_way_to_run: true,
                };
                n
            ],
            complete_owners: Some(vec![1]),
            until_ns: Some(at_ns),
        }
    }

    fn lost(at_ns: u64) -> Rec {
        Rec::Lost {
            since_ns: at_ns,
            at_ns,
            total: 0,
        }
    }

    #[test]
    fn keeps_at_least_its_span_and_always_starts_at_a_reading() {
        let mut ring = FlightRing::new(10, usize::MAX);
        ring.push(&Rec::Future {
            vtable: 7,
            name: "f".into(),
            site: None,
        });
        for t in 0..50u64 {
            if t % 5 == 0 {
                ring.push(&reading(t, 1));
            }
            ring.push(&lost(t));
            ring.trim(t);
        }
        // At 49 the last 10 ns reach back to 39: the span from the reading at 35 is kept.
        assert_eq!(ring.start_ns(), Some(35));
        assert!(matches!(ring.recs[0], Rec::TaskList { at_ns: 35, .. }));
        assert_eq!(ring.recs.len(), 3 + 15);
        assert_eq!(ring.futures.len(), 1, "future names outlive the span");
        assert_eq!(ring.cut_for_size, 0);
    }

    /// Events drained just before a reading's record happened during its walk: they
    /// stay with it when the span before is dropped.
    #[test]
    fn events_during_the_walk_stay_with_their_reading() {
        let mut ring = FlightRing::new(5, usize::MAX);
        ring.push(&reading(0, 1));
        ring.push(&lost(3));
        ring.push(&lost(10));
        ring.push(&lost(11));
        ring.push(&reading(10, 1));
        ring.push(&lost(20));
        ring.trim(20);
        assert_eq!(ring.start_ns(), Some(10));
        let ats: Vec<Option<u64>> = ring.recs.iter().map(at).collect();
        assert_eq!(ats, [Some(10), Some(11), Some(10), Some(20)]);
    }

    #[test]
    fn a_reading_in_parts_is_one_start_and_size_cuts_are_counted() {
        let mut ring = FlightRing::new(1_000, 0);
        ring.push(&reading(0, 10));
        ring.push(&reading(0, 10));
        ring.push(&lost(1));
        ring.push(&reading(2, 1));
        ring.trim(3);
        // Over its size at once: cut back to the last reading, never past it.
        assert_eq!(ring.start_ns(), Some(2));
        assert_eq!(ring.recs.len(), 1);
        assert_eq!(ring.cut_for_size, 1);
        ring.trim(4);
        assert_eq!(ring.recs.len(), 1, "the last reading stays");
    }
}
