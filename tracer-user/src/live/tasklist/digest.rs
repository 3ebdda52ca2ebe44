//! The task digest of lifecycle and sample modes: a hash of each task's `Core` and of the
//! objects its pointers lead to, the only sign without a poll probe that a task was polled
//! between two readings. Its one rule: hash what belongs to the task's future and nothing
//! that moves without it (the runtime's handle, other tasks, the bytes next to an object).

use super::{HashMap, HashSet, LiveTask, Reader, TaskVtable};
use crate::live::memory::ReadMemory;

/// How much of the object behind a pointer a digest reads.
#[derive(Clone, Copy, Debug)]
pub(super) struct Behind {
    /// Bytes from the pointer on.
    len: u64,
    /// And 64 bytes 128 on: the object looks like the `ArcInner` of a cache-padded value.
    padded: bool,
}

/// The usable size of a glibc `malloc` chunk from its size word (the word before the
/// pointer it returned), if the word reads as one: a multiple of 16 from 32 bytes to
/// 1 MiB, not `mmap`ped. Another allocator keeps no such word: whatever is there then
/// rarely passes, and a digest fixes what it reads of each object the first time anyway.
fn glibc_usable(size_word: u64) -> Option<u64> {
    const IS_MMAPPED: u64 = 2;
    let size = size_word & !7;
    (size_word & IS_MMAPPED == 0 && size.is_multiple_of(16) && (32..=1 << 20).contains(&size))
        .then(|| size - 8)
}

/// A read: address and length.
type Span = (u64, usize);
/// Where a task's `Core` and its scheduler `Arc` sit in the bytes read from its header.
type CoreAt = (usize, usize);

/// Where the listed tasks lie in memory: from each header to the end of its trailer.
struct Cells(Vec<(u64, u64)>);

impl Cells {
    /// Bytes a trailer spans (its owned-list links, waker and hooks), rounded up.
    const TRAILER: u64 = 64;

    /// The cells of these tasks and of those of the last reading: a task missing from
    /// this one (in a shard that kept changing under the walk) is still where it was, and
    /// its neighbours' pointers into it are still not theirs to hash.
    fn new(
        tasks: &[LiveTask],
        last: &HashMap<u64, (u64, u64)>,
        vtables: &HashMap<u64, TaskVtable>,
    ) -> Self {
        let cell = |header: u64, vtable: u64| {
            let vt = vtables.get(&vtable)?;
            Some((header, header + vt.trailer_offset + Self::TRAILER))
        };
        let mut cells: Vec<(u64, u64)> = tasks
            .iter()
            .filter_map(|t| cell(t.header, t.vtable))
            .chain(last.iter().filter_map(|(&h, &(vt, _))| cell(h, vt)))
            .collect();
        cells.sort_unstable();
        cells.dedup();
        Self(cells)
    }

    fn inside(&self, p: u64) -> bool {
        let i = self.0.partition_point(|&(start, _)| start <= p);
        i > 0 && p < self.0[i - 1].1
    }

    /// Bytes from `p` to the start of the next task after it.
    fn room(&self, p: u64) -> u64 {
        let i = self.0.partition_point(|&(start, _)| start <= p);
        self.0.get(i).map_or(u64::MAX, |&(start, _)| start - p)
    }
}

impl<M: ReadMemory> Reader<'_, M> {
    /// The second reading of each task's state word, and the hash of its `Core`
    /// (scheduler, id, future) and of the first bytes behind each heap pointer in it,
    /// both from one read of the task, in batches: a future keeps much of its moving
    /// state behind pointers (a boxed `Sleep`'s deadline, a channel's indices), so a
    /// polled task almost always changes the hash, and a task nobody polls or wakes keeps
    /// it. An object many tasks point to (their shared state) is read once a batch.
    pub(super) fn recheck_and_digest(&self, tasks: &mut [LiveTask], heap: &[(u64, u64)]) {
        use std::hash::{DefaultHasher, Hasher};
        /// Tasks whose cores are read together (at most this many `Core`s held at once).
        const BATCH: usize = 512;
        /// Futures larger than this are hashed by their first part.
        const MAX_CORE: u64 = 16 << 10;
        /// Pointers followed per task, and bytes read behind each.
        const MAX_POINTERS: usize = 16;
        const BYTES_BEHIND: u64 = 64;
        /// Bytes read of an object whose size the allocator says.
        const MAX_OBJECT: u64 = 512;
        /// Where a 128-byte-aligned value starts in its `ArcInner`.
        const CACHE_PAD: u64 = 128;
        /// A runtime handle's size where the allocator does not say (tokio 1.47's
        /// multi-thread handle takes 456 bytes).
        const HANDLE_GUESS: u64 = 1024;
        let cells = Cells::new(tasks, &self.seen.borrow(), &self.vtables);
        let in_heap = |p: u64| {
            let i = heap.partition_point(|&(start, _)| start <= p);
            i > 0 && p < heap[i - 1].1
        };
        let known = self.behind.take();
        let mut kept: HashMap<u64, Behind> = HashMap::with_capacity(known.len());
        // Each runtime handle's allocation (from glibc's size word, else a guess): a
        // future's bytes often hold stale pointers into it (uninitialised parts of the
        // task's memory, last used by another task), and behind them are the runtime's
        // queues and counters, which change all the time.
        let mut handles: HashMap<u64, u64> = HashMap::new();
        for part in tasks.chunks_mut(BATCH) {
            let state_at = self.layout.header_state as usize;
            // Header to the end of the `Core` (or its first part), and where the `Core`
            // and its scheduler are in it; a task of no known vtable: its state word alone.
            let cells_read: Vec<(Span, Option<CoreAt>)> = part
                .iter()
                .map(|t| {
                    self.vtables
                        .get(&t.vtable)
                        .and_then(|vt| Some((vt, self.core_of(vt)?)))
                        .filter(|&(vt, (core, _))| {
                            core as usize >= state_at + 8 && vt.trailer_offset >= core
                        })
                        .map_or(
                            ((t.header + state_at as u64, 8), None),
                            |(vt, (core, s))| {
                                let len = (vt.trailer_offset - core).min(MAX_CORE);
                                (
                                    (t.header, (core + len) as usize),
                                    Some((core as usize, s as usize)),
                                )
                            },
                        )
                })
                .collect();
            let spans: Vec<(u64, usize)> = cells_read.iter().map(|(s, _)| *s).collect();
            let read = self.mem.read_spans(&spans);
            let new_handles: Vec<u64> = (0..part.len())
                .filter_map(|i| {
                    let (_, at) = cells_read[i].1?;
                    let b = read.get(i)?;
                    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().unwrap()))
                })
                .filter(|h| *h > 8 && !handles.contains_key(h))
                .collect::<HashSet<u64>>()
                .into_iter()
                .collect();
            if !new_handles.is_empty() {
                let before: Vec<u64> = new_handles.iter().map(|h| h - 8).collect();
                for (h, w) in new_handles.iter().zip(self.mem.u64s(&before)) {
                    let span = w.and_then(glibc_usable).unwrap_or(HANDLE_GUESS);
                    handles.insert(*h, span);
                }
            }
            let mut hashers: Vec<Option<DefaultHasher>> = Vec::with_capacity(part.len());
            // (task in `part`, index in `spans`) of every pointer followed.
            let mut behind: Vec<(usize, usize)> = Vec::new();
            let mut spans: Vec<(u64, usize)> = Vec::new();
            let mut by_pointer: HashMap<u64, usize> = HashMap::new();
            for (i, t) in part.iter_mut().enumerate() {
                let (span, core_at) = cells_read[i];
                let bytes = read.get(i);
                let state = match (bytes, core_at) {
                    (Some(b), Some(_)) => Some(&b[state_at..state_at + 8]),
                    (Some(b), None) => Some(b),
                    (None, _) => None,
                };
                self.recheck(t, state.map(|w| u64::from_le_bytes(w.try_into().unwrap())));
                let Some((b, (core, scheduler))) = bytes.zip(core_at) else {
                    hashers.push(None);
                    continue;
                };
                let buf = &b[core..];
                debug_assert_eq!(span.0, t.header);
                let mut h = DefaultHasher::new();
                h.write(buf);
                hashers.push(Some(h));
                // `Core.scheduler` is an `Arc` of the runtime's handle, whose
                // counts and queues change with every task spawned or run on the runtime,
                // so nothing inside it is hashed. Nor is anything inside a listed task (its
                // own or another's, which a waker or a waiter's links point into): that is
                // the other task's state, and a task's trailer holds its owned-list links,
                // which change whenever a neighbour in the list is spawned or finishes.
                let handle = b
                    .get(scheduler..scheduler + 8)
                    .map(|w| u64::from_le_bytes(w.try_into().unwrap()));
                let in_handle = |p: u64| {
                    handle.is_some_and(|h| {
                        p >= h && p - h < handles.get(&h).copied().unwrap_or(HANDLE_GUESS)
                    })
                };
                let first = behind.len();
                for w in buf.as_chunks::<8>().0 {
                    let p = u64::from_le_bytes(*w);
                    // The word before the object too: the allocator's header, if any.
                    if p % 8 == 0
                        && in_heap(p)
                        && !in_handle(p)
                        && !cells.inside(p)
                        && !behind[first..].iter().any(|&(_, j)| spans[j].0 == p - 8)
                    {
                        let j = *by_pointer.entry(p).or_insert_with(|| {
                            let len = known.get(&p).map_or(MAX_OBJECT, |b| b.len);
                            spans.push((p - 8, 8 + len as usize));
                            spans.len() - 1
                        });
                        behind.push((i, j));
                        if behind.len() - first == MAX_POINTERS {
                            break;
                        }
                    }
                }
            }
            let words = self.words(&spans);
            // An `Arc` of a cache-padded value (tokio's channels: `Chan` starts with a
            // `CachePadded` sender half) is its two counts, then padding (never written,
            // so anything) up to 128 bytes: the moving state (a channel's tail position)
            // is behind it. What looks like an `ArcInner` (two plausible counts) large
            // enough is read there too.
            let counts = |c: u64| (1..=1 << 24).contains(&c);
            let what: Vec<Behind> = spans
                .iter()
                .zip(&words)
                .map(|(&(at, _), w)| {
                    let p = at + 8;
                    let b = match known.get(&p).or(kept.get(&p)) {
                        Some(b) => *b,
                        // Where glibc says how large the object is, all of it (its
                        // first 512 bytes); else its first 64 bytes, and 64 more behind
                        // a cache line of padding where it looks like an `ArcInner`.
                        None => {
                            let size = glibc_usable(w[0]);
                            let room = cells.room(p);
                            let len = size.map_or(BYTES_BEHIND, |s| s.min(MAX_OBJECT)).min(room);
                            Behind {
                                len: len / 8 * 8,
                                padded: size.is_none()
                                    && w.len() >= 3
                                    && counts(w[1])
                                    && counts(w[2])
                                    && room >= CACHE_PAD + BYTES_BEHIND,
                            }
                        }
                    };
                    kept.insert(p, b);
                    b
                })
                .collect();
            for &(i, j) in &behind {
                if let Some(h) = &mut hashers[i] {
                    let n = (what[j].len / 8) as usize;
                    words[j][1..].iter().take(n).for_each(|&w| h.write_u64(w));
                }
            }
            let padded_at: Vec<Option<(u64, usize)>> = spans
                .iter()
                .zip(&what)
                .map(|(&(at, _), b)| {
                    b.padded
                        .then_some((at + 8 + CACHE_PAD, BYTES_BEHIND as usize))
                })
                .collect();
            let padded: Vec<(u64, usize)> = padded_at.iter().flatten().copied().collect();
            if !padded.is_empty() {
                // Index of each pointer's padded span in `padded`.
                let mut k = 0;
                let index: Vec<Option<usize>> = padded_at
                    .iter()
                    .map(|s| {
                        s.map(|_| {
                            k += 1;
                            k - 1
                        })
                    })
                    .collect();
                let words = self.words(&padded);
                for &(i, j) in &behind {
                    if let (Some(h), Some(k)) = (&mut hashers[i], index[j]) {
                        words[k].iter().for_each(|&w| h.write_u64(w));
                    }
                }
            }
            for (t, h) in part.iter_mut().zip(hashers) {
                t.digest = h.map_or(0, |h| h.finish().max(1));
            }
        }
        // Only the pointers of this reading are remembered.
        self.behind.replace(kept);
    }

    /// The words of each span; a word that cannot be read is 0 (a span cut short by
    /// unmapped memory is read word by word).
    fn words(&self, spans: &[(u64, usize)]) -> Vec<Vec<u64>> {
        let read = self.mem.read_spans(spans);
        spans
            .iter()
            .enumerate()
            .map(|(i, &(p, len))| match read.words(i) {
                Some(w) => w.collect(),
                None => {
                    let addrs: Vec<u64> = (0..len as u64 / 8).map(|k| p + k * 8).collect();
                    self.mem
                        .u64s(&addrs)
                        .into_iter()
                        .map(|w| w.unwrap_or(0))
                        .collect()
                }
            })
            .collect()
    }
}
