//! Reads every tokio runtime's own task list out of a live target's memory, read-only:
//! the tasks that were alive before tasktrace attached, which no probe will ever report if
//! they are never polled again (a leaked task never is).
//!
//! How: a scan of the target's writable anonymous memory finds words equal to a task
//! vtable address (a task header holds its vtable at a fixed offset); a candidate header
//! leads, through its `Arc` scheduler handle, to the runtime's `OwnedTasks`, found by its
//! `id` (= the task's `owner_id`) and accepted only if walking its linked lists reaches
//! the candidate. The walk, not the scan, is the answer: stale copies of headers in freed
//! memory are never reported. Every pointer is validated (known vtable, right owner,
//! `prev` links agreeing); a list that changes under the walk is re-read, and the state
//! words are read twice so that a verdict of certainty rests on a stable reading.

use std::time::{Duration, Instant};

// Lookups by address, several per task read: the fast hasher (addresses are not chosen
// by anyone hostile to the tracer's hash tables).
use hashbrown::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::{
    binary::locations::TaskVtable,
    error::{Error, Result},
    live::memory::{Memory, ReadMemory, Spans},
    tokio_versions::{CoreAt, Knowledge, Layout, RuntimeList},
};

pub use crate::tokio_versions::{ListKind, Status};

mod core_guess;
mod digest;
use digest::Behind;

/// Scan granularity: one `process_vm_readv` per chunk.
const CHUNK: usize = 1 << 20;
/// Candidate headers kept per runtime to find its list from (stale ones fail the walk).
const CANDIDATES_PER_OWNER: usize = 16;
/// A list longer than this is a cycle or garbage, not tasks.
const MAX_LIST: usize = 1 << 24;
/// Reads of a list that changed while it was walked (a shard whose head tasks come and
/// go 20 000 times a second may take several).
const WALK_ATTEMPTS: usize = 8;
/// Pause between the two readings of the state words.
const RECHECK_AFTER: Duration = Duration::from_millis(20);

/// One task found in a runtime's list (the trace file keeps it as its own record,
/// `stream::records::ListedTask`).
#[derive(Clone, Debug)]
pub struct LiveTask {
    pub header: u64,
    pub id: u64,
    pub owner_id: u64,
    pub vtable: u64,
    /// The state word at the second reading.
    pub state: u64,
    /// A hash of the task's `Core` (its scheduler, id and future) when asked for, else 0:
    /// a poll almost always changes the future's bytes, a task nobody polls never does.
    pub digest: u64,
    pub refs: u32,
    /// The kind of list it was found in.
    pub list: ListKind,
    /// Both readings agreed.
    pub stable: bool,
    pub status: Status,
    pub join_handle: bool,
    /// Idle, not notified, no JoinHandle, and no reference left but the list's: nothing
    /// can ever wake or abort it (only its runtime's shutdown ends it).
    pub no_way_to_run: bool,
}

/// One owned-task list found in the target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OwnedList {
    pub owner_id: u64,
    pub kind: ListKind,
    /// Address of the list's `id` field.
    pub address: u64,
    pub shards: u64,
    /// The runtime's own live-task counter, where it keeps one.
    pub declared: Option<u64>,
    pub tasks: u64,
    /// Some shard kept changing under every re-read: its tasks may be missing.
    pub incomplete_shards: u64,
}

/// Everything one reading of the target's task lists found.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC when the reading started.
    pub taken_ns: u64,
    pub read_ms: f64,
    /// CPU time the reading took (of the thread that read).
    pub cpu_ms: f64,
    pub scanned_bytes: u64,
    pub lists: Vec<OwnedList>,
    pub tasks: Vec<LiveTask>,
    pub warnings: Vec<String>,
}

/// Reads task lists out of `M`: the live target's memory, or an image standing for it.
pub struct Reader<'a, M: ReadMemory = Memory> {
    mem: M,
    pid: u32,
    layout: &'a Layout,
    knowledge: &'a Knowledge,
    vtables: HashMap<u64, TaskVtable>,
    /// Lowest and highest vtable address, to reject most words with two compares.
    span: (u64, u64),
    /// Hash every task's `Core` (lifecycle mode: the only sign a task was polled).
    pub digests: bool,
    /// Bytes read at a header: its words the walk needs and the task id after them.
    header_len: usize,
    /// Each task's vtable and owner at the last reading, by header: a walk reads the
    /// tasks it has seen before all at once, header and links, before it starts (and
    /// checks every vtable it guessed).
    seen: std::cell::RefCell<HashMap<u64, (u64, u64)>>,
    /// What a digest reads behind each heap pointer followed at the last reading: fixed
    /// the first time the pointer is followed, so that a digest changes with the bytes
    /// of the object only, never with what happens to be next to it.
    behind: std::cell::RefCell<HashMap<u64, Behind>>,
    /// Before tokio 1.23 (`CoreAt::ByFuture`): the header's length; the `Core` offsets are
    /// then learned from memory (`core_guess`), per vtable: (scheduler, id).
    by_future: Option<u64>,
    learned: std::cell::RefCell<HashMap<u64, (u64, u64)>>,
    /// Vtables whose offsets were not found, said once.
    unlearned: std::cell::RefCell<HashSet<u64>>,
}

/// CPU time of the calling thread so far, in milliseconds.
fn thread_cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

/// A header found by the scan, not yet trusted.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    header: u64,
    vtable: u64,
}

/// A node a walk step read, validated but for its links.
#[derive(Clone, Copy)]
struct Stepped {
    cursor: usize,
    id: u64,
    vtable: u64,
    state: u64,
}

/// A task as read during a walk.
#[derive(Clone, Copy, Debug)]
struct Node {
    header: u64,
    id: u64,
    vtable: u64,
    state: u64,
}

impl<'a> Reader<'a> {
    /// Reads the live process `pid`, once it is known to be readable.
    pub fn new(pid: u32, knowledge: &'a Knowledge, vtables: &[TaskVtable]) -> Result<Self> {
        let mem = Memory::new(pid);
        if let Err(e) = mem.check_access() {
            return Err(match e.raw_os_error() {
                Some(libc::ESRCH) => Error::NoSuchProcess(pid),
                _ => Error::privileges(format!("reading the memory of pid {pid} ({e})")),
            });
        }
        Ok(Self::with_memory(mem, pid, knowledge, vtables))
    }
}

impl<'a, M: ReadMemory> Reader<'a, M> {
    /// Reads `mem`, the memory of process `pid` (only named in errors) whose task
    /// vtables are at `vtables`.
    pub fn with_memory(mem: M, pid: u32, knowledge: &'a Knowledge, vtables: &[TaskVtable]) -> Self {
        let span = (
            vtables.iter().map(|v| v.vaddr).min().unwrap_or(u64::MAX),
            vtables.iter().map(|v| v.vaddr).max().unwrap_or(0),
        );
        Self {
            mem,
            pid,
            layout: &knowledge.layout,
            knowledge,
            vtables: vtables.iter().map(|v| (v.vaddr, *v)).collect(),
            span,
            digests: false,
            header_len: vtables
                .iter()
                .map(|v| v.id_offset as usize + 8)
                .fold(8 * tracer_common::HEADER_READ_WORDS, usize::max),
            seen: Default::default(),
            behind: Default::default(),
            by_future: match knowledge.layout.core {
                CoreAt::ByFuture { header_len } => Some(header_len),
                CoreAt::Vtable { .. } => None,
            },
            learned: Default::default(),
            unlearned: Default::default(),
        }
    }

    /// Reads every runtime's task list now (memory scan, then walks).
    pub fn snapshot(&self, taken_ns: u64) -> Result<Snapshot> {
        self.snapshot_from(taken_ns, &[])
    }

    /// Reads the task lists found by an earlier snapshot by walking them directly, with
    /// no memory scan; falls back to a full snapshot when any of them no longer walks.
    pub fn snapshot_from(&self, taken_ns: u64, known: &[OwnedList]) -> Result<Snapshot> {
        let started = Instant::now();
        let cpu_started = thread_cpu_ms();
        let mut snap = Snapshot {
            taken_ns,
            ..Default::default()
        };
        if self.vtables.is_empty() {
            snap.warnings
                .push("no task vtables found in the binary: no task list can be read".into());
            return Ok(snap);
        }
        let mut found: Vec<(OwnedList, Vec<LiveTask>)> = Vec::new();
        for list in known {
            let walked = match list.kind {
                ListKind::Runtime => self.walk_runtime(list.owner_id, list.address),
                ListKind::LocalSet => self.walk_local(list.owner_id, list.address),
            };
            match walked {
                Some(w) => found.push(w),
                None => {
                    found.clear();
                    break;
                }
            }
        }
        if found.is_empty() {
            found = self.find_lists(&mut snap)?;
        }
        for (list, tasks) in found {
            let owner = list.owner_id;
            if let Some(d) = list.declared
                && d != list.tasks
                && list.incomplete_shards == 0
            {
                // The counter and the list are updated under different locks.
                snap.warnings.push(format!(
                    "runtime list {owner}: walked {} tasks, its counter says {d} \
                     (tasks were spawned or finished during the reading)",
                    list.tasks
                ));
            }
            if list.incomplete_shards > 0 {
                snap.warnings.push(format!(
                    "runtime list {owner}: {} shard(s) kept changing while read; \
                     some of its tasks may be missing",
                    list.incomplete_shards
                ));
            }
            if snap.tasks.is_empty() {
                snap.tasks = tasks;
            } else {
                snap.tasks.extend(tasks);
            }
            snap.lists.push(list);
        }
        self.learn_cores(&mut snap.tasks, &mut snap.warnings);

        // Every state word read a second time, in parts (no second copy of the list);
        // with digests, together with the `Core` after it, in one read per task.
        std::thread::sleep(RECHECK_AFTER);
        if self.digests {
            let mut regions: Vec<(u64, u64)> = self
                .mem
                .writable_regions()
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.start, r.end))
                .collect();
            regions.sort_unstable();
            self.recheck_and_digest(&mut snap.tasks, &regions);
        } else {
            let mut addrs = Vec::new();
            for part in snap.tasks.chunks_mut(1 << 16) {
                addrs.clear();
                addrs.extend(part.iter().map(|t| t.header + self.layout.header_state));
                for (t, second) in part.iter_mut().zip(self.mem.u64s(&addrs)) {
                    self.recheck(t, second);
                }
            }
        }
        let mut seen = self.seen.borrow_mut();
        seen.clear();
        seen.extend(
            snap.tasks
                .iter()
                .map(|t| (t.header, (t.vtable, t.owner_id))),
        );
        drop(seen);
        snap.read_ms = started.elapsed().as_secs_f64() * 1e3;
        snap.cpu_ms = thread_cpu_ms() - cpu_started;
        Ok(snap)
    }

    /// Scans the target's memory for task headers and finds each runtime's list from them.
    fn find_lists(&self, snap: &mut Snapshot) -> Result<Vec<(OwnedList, Vec<LiveTask>)>> {
        let regions = self
            .mem
            .writable_regions()
            .map_err(|_| Error::NoSuchProcess(self.pid))?;
        let mut by_owner: HashMap<u64, Vec<Candidate>> = HashMap::new();
        let mut buf = vec![0u8; CHUNK];
        for r in &regions {
            let mut addr = r.start;
            while addr < r.end {
                let want = ((r.end - addr) as usize).min(CHUNK);
                let n = self.mem.read_partial(addr, &mut buf[..want]).unwrap_or(0);
                snap.scanned_bytes += n as u64;
                self.scan_chunk(addr, &buf[..n], &mut by_owner);
                addr = if n == want {
                    addr + n as u64
                } else {
                    // Skip the page that stopped the read.
                    ((addr + n as u64) & !4095) + 4096
                };
            }
        }
        let mut owners: Vec<u64> = by_owner.keys().copied().collect();
        owners.sort_unstable();
        let mut found = Vec::new();
        for owner in owners {
            match self.locate(owner, &by_owner[&owner]) {
                Some(f) => found.push(f),
                None => snap.warnings.push(format!(
                    "found tasks of runtime list {owner} but not the list itself (tokio \
                     layout not as expected for tokio {}+); its idle tasks are not listed",
                    self.knowledge.first
                )),
            }
        }
        Ok(found)
    }

    fn scan_chunk(&self, base: u64, data: &[u8], by_owner: &mut HashMap<u64, Vec<Candidate>>) {
        let (lo, hi) = self.span;
        let at_vtable = self.layout.header_vtable as usize;
        let at_owner = self.layout.header_owner_id as usize;
        let at_state = self.layout.header_state as usize;
        for (i, w) in data.as_chunks::<8>().0.iter().enumerate() {
            let word = u64::from_le_bytes(*w);
            if word < lo || word > hi || !self.vtables.contains_key(&word) {
                continue;
            }
            let off = i * 8;
            let Some(start) = off.checked_sub(at_vtable) else {
                continue;
            };
            let field = |at: usize| {
                data.get(start + at..start + at + 8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            };
            let (Some(owner), Some(state)) = (field(at_owner), field(at_state)) else {
                continue;
            };
            // Blocking-pool tasks (owner 0) are in no list; a freed header has no refs.
            let refs = state >> self.knowledge.refs.ref_shift;
            if owner == 0 || owner > u32::MAX as u64 || refs == 0 || refs > 1 << 30 {
                continue;
            }
            let list = by_owner.entry(owner).or_default();
            if list.len() < CANDIDATES_PER_OWNER {
                list.push(Candidate {
                    header: base + start as u64,
                    vtable: word,
                });
            }
        }
    }

    /// Finds the list of runtime `owner` from candidate headers of its tasks.
    fn locate(&self, owner: u64, candidates: &[Candidate]) -> Option<(OwnedList, Vec<LiveTask>)> {
        for c in candidates {
            let vt = self.vtables.get(&c.vtable)?;
            // Where the task's scheduler `Arc` is: the vtable says, or (before 1.23) one
            // of the places its future's alignment may put it.
            let schedulers: Vec<u64> = match self.by_future {
                None => vec![vt.scheduler_offset],
                Some(header_len) => {
                    let mut s: Vec<u64> = core_guess::candidates(header_len, vt.trailer_offset)
                        .into_iter()
                        .map(|(s, _)| s)
                        .collect();
                    s.dedup();
                    s
                }
            };
            for s in schedulers {
                let Some(arc) = self.mem.u64(c.header + s) else {
                    continue;
                };
                for id_addr in self.list_ids_behind(arc, owner) {
                    for found in [
                        self.walk_runtime(owner, id_addr),
                        self.walk_local(owner, id_addr),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        if found.1.iter().any(|n| n.header == c.header) {
                            return Some(found);
                        }
                    }
                }
            }
        }
        None
    }

    /// Where the scheduler handle behind `arc` (a task's `Core.scheduler`) holds the word
    /// `owner` in its first bytes: where list `owner`'s `id` may be.
    fn list_ids_behind(&self, arc: u64, owner: u64) -> Vec<u64> {
        let lists = &self.layout.lists;
        let Some(handle) = arc.checked_add(lists.arc_data) else {
            return Vec::new();
        };
        let mut buf = vec![0u8; lists.handle_search as usize];
        let n = self.mem.read_partial(handle, &mut buf).unwrap_or(0);
        buf[..n]
            .as_chunks::<8>()
            .0
            .iter()
            .enumerate()
            .filter(|(_, w)| u64::from_le_bytes(**w) == owner)
            .map(|(i, _)| handle + i as u64 * 8)
            .collect()
    }

    /// `OwnedTasks` whose `id` is at `id_addr`: every shard (or its one list), walked.
    fn walk_runtime(&self, owner: u64, id_addr: u64) -> Option<(OwnedList, Vec<LiveTask>)> {
        // (head, tail) field addresses of each list, and the count the runtime keeps.
        let (lists, count): (Vec<(u64, u64)>, Option<u64>) = match self.layout.lists.runtime {
            RuntimeList::Sharded(l) => {
                let lists_field = id_addr.checked_add_signed(l.lists_from_id)?;
                let lists = self.mem.u64(lists_field)?;
                let len = self.mem.u64(lists_field + 8)?;
                let mask = self.mem.u64(id_addr.checked_add_signed(l.mask_from_id)?)?;
                let count = self.mem.u64(id_addr.checked_add_signed(l.count_from_id)?);
                if !len.is_power_of_two() || len > 1 << 16 || mask != len - 1 || lists == 0 {
                    return None;
                }
                if !lists.is_multiple_of(8) {
                    return None;
                }
                let shards = (0..len)
                    .map(|shard| {
                        let base = lists + shard * l.shard_stride;
                        (base + l.shard_head, base + l.shard_tail)
                    })
                    .collect();
                (shards, count)
            }
            RuntimeList::Single {
                head_from_id,
                tail_from_id,
                count_from_id,
            } => {
                let head = id_addr.checked_add_signed(head_from_id)?;
                let tail = id_addr.checked_add_signed(tail_from_id)?;
                let count = count_from_id
                    .and_then(|c| id_addr.checked_add_signed(c))
                    .and_then(|at| self.mem.u64(at));
                (vec![(head, tail)], count)
            }
        };
        let shards = lists.len() as u64;
        let mut out = Vec::new();
        let mut incomplete = 0;
        // All shards walked in step first; one that changed under it (or did not read
        // as a list) is walked again on its own, as often as it takes.
        let ends_at: Vec<u64> = lists.iter().flat_map(|&(h, t)| [h, t]).collect();
        let ends: Vec<Option<(u64, u64)>> = self
            .mem
            .u64s(&ends_at)
            .chunks(2)
            .map(|e| match (e[0], e[1]) {
                (Some(h), Some(t)) if (h == 0) == (t == 0) => Some((h, t)),
                _ => None,
            })
            .collect();
        let readable: Vec<(u64, u64)> = ends.iter().flatten().copied().collect();
        let mut walked = self.walk_in_step(owner, &readable, true).into_iter();
        for ((head, tail), ends) in lists.into_iter().zip(ends) {
            // That walk was the first attempt (ends that disagree count as one too).
            let first = match ends.map(|_| walked.next().expect("one walk per list")) {
                Some(Walk::Done(nodes)) => Some(Some(nodes)),
                Some(Walk::Changed) => self.walk_stable(owner, head, tail, 1, true),
                _ => self.walk_stable(owner, head, tail, 1, false),
            };
            match first {
                // Decoded shard by shard: a list of a million tasks is never held twice.
                Some(Some(nodes)) => out.extend(
                    nodes
                        .into_iter()
                        .map(|n| self.decode(owner, ListKind::Runtime, n)),
                ),
                Some(None) => incomplete += 1,
                // Not a list at all: this was not the OwnedTasks.
                None => return None,
            }
        }
        Some((
            OwnedList {
                owner_id: owner,
                kind: ListKind::Runtime,
                address: id_addr,
                shards,
                declared: count,
                tasks: out.len() as u64,
                incomplete_shards: incomplete,
            },
            out,
        ))
    }

    /// `LocalOwnedTasks` whose `id` is at `id_addr`: one list.
    fn walk_local(&self, owner: u64, id_addr: u64) -> Option<(OwnedList, Vec<LiveTask>)> {
        let l = &self.layout.lists;
        let head = id_addr.checked_add_signed(l.local_head_from_id)?;
        let tail = id_addr.checked_add_signed(l.local_tail_from_id)?;
        let (nodes, incomplete) = match self.walk_stable(owner, head, tail, 0, false)? {
            Some(nodes) => (
                nodes
                    .into_iter()
                    .map(|n| self.decode(owner, ListKind::LocalSet, n))
                    .collect::<Vec<_>>(),
                0,
            ),
            None => (Vec::new(), 1),
        };
        Some((
            OwnedList {
                owner_id: owner,
                kind: ListKind::LocalSet,
                address: id_addr,
                shards: 1,
                declared: None,
                tasks: nodes.len() as u64,
                incomplete_shards: incomplete,
            },
            nodes,
        ))
    }

    /// Walks the list whose head and tail pointers are at these addresses, re-reading it
    /// while it changes under the walk, `tried` attempts having been made already (one of
    /// which `seen_valid`: met a task of this owner). `None`: not a list of this owner's
    /// tasks; `Some(None)`: a list that never held still.
    fn walk_stable(
        &self,
        owner: u64,
        head_at: u64,
        tail_at: u64,
        tried: usize,
        mut seen_valid: bool,
    ) -> Option<Option<Vec<Node>>> {
        for _ in tried..WALK_ATTEMPTS {
            let head = self.mem.u64(head_at)?;
            let tail = self.mem.u64(tail_at)?;
            if (head == 0) != (tail == 0) {
                continue;
            }
            match self.walk(owner, head, tail) {
                Walk::Done(nodes) => return Some(Some(nodes)),
                Walk::Changed => seen_valid = true,
                Walk::Foreign => {}
            }
        }
        // Every attempt met a node of another owner or no task at all: not this list.
        seen_valid.then_some(None)
    }

    fn walk(&self, owner: u64, head: u64, tail: u64) -> Walk {
        self.walk_in_step(owner, &[(head, tail)], false)
            .pop()
            .expect("one walk per list")
    }

    /// Walks the lists from these (head, tail) pairs in step: each step reads the next
    /// node of every list at once (their headers in one read, then their ids and links in
    /// another), so a runtime's shards together cost what its longest one does. With
    /// `prefetch`, the tasks of this owner seen at the last reading are read first, all
    /// at once (they are mostly still there, and close together in memory): the steps
    /// then read only the tasks spawned since. Every node is validated: a known task
    /// vtable, this owner, and a `prev` link agreeing.
    fn walk_in_step(&self, owner: u64, ends: &[(u64, u64)], prefetch: bool) -> Vec<Walk> {
        struct Cursor {
            tail: u64,
            prev: u64,
            node: u64,
            out: Vec<Node>,
            end: Option<Walk>,
        }
        impl Cursor {
            /// The walk met something that is not this owner's next task.
            fn lost(&mut self) {
                self.end = Some(if self.out.is_empty() {
                    Walk::Foreign
                } else {
                    Walk::Changed
                });
            }
        }
        let mut cur: Vec<Cursor> = ends
            .iter()
            .map(|&(head, tail)| Cursor {
                tail,
                prev: 0,
                node: head,
                out: Vec::new(),
                end: None,
            })
            .collect();
        let l = &self.layout.lists;
        // A trailer's links, as offsets from the trailer: one span.
        let links_from = l.trailer_prev.min(l.trailer_next);
        let links_len = (l.trailer_prev.max(l.trailer_next) - links_from + 8) as usize;
        // From the trailer, or (before 1.21) from the header itself.
        let links_base = |vt: &TaskVtable| {
            if l.links_in_header {
                0
            } else {
                vt.trailer_offset
            }
        };
        let links_at = |node: u64, vt: &TaskVtable| (node + links_base(vt) + links_from, links_len);
        let word = |b: &[u8], at: u64| {
            b.get(at as usize..at as usize + 8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        };
        // (prev, next) from a links span.
        let read_links = |b: &[u8]| {
            let back = word(b, l.trailer_prev - links_from).expect("links read");
            let next = word(b, l.trailer_next - links_from).expect("links read");
            (back, next)
        };
        let seen = self.seen.borrow();
        // The vtable a node had at the last reading, if it is a known one.
        let guess = |node: u64| seen.get(&node).and_then(|(vt, _)| self.vtables.get(vt));
        // Header and links of each task of this owner seen at the last reading.
        let (pre_index, pre): (HashMap<u64, usize>, Spans) = if prefetch && !seen.is_empty() {
            let nodes: Vec<(u64, &TaskVtable)> = seen
                .iter()
                .filter(|(_, (_, o))| *o == owner)
                .filter_map(|(&h, (vt, _))| Some((h, self.vtables.get(vt)?)))
                .collect();
            let spans: Vec<(u64, usize)> = nodes
                .iter()
                .flat_map(|&(h, vt)| [(h, self.header_len), links_at(h, vt)])
                .collect();
            let index = nodes
                .iter()
                .enumerate()
                .map(|(k, &(h, _))| (h, 2 * k))
                .collect();
            (index, self.mem.read_spans(&spans))
        } else {
            (HashMap::new(), Spans::zeroed(&[]))
        };
        // Nodes whose guessed vtable could not be read where it said: read plainly.
        let mut unguessed: HashSet<u64> = HashSet::new();
        // Where each node's header and links come from: the prefetch, or a read now of
        // its header and (seen before) its links at once, or its header alone.
        enum From {
            Pre(usize),
            Read(usize),
        }
        // Buffers of every step, kept: a step costs a few lookups per list, no more.
        let mut active: Vec<usize> = Vec::with_capacity(cur.len());
        let mut spans: Vec<(u64, usize)> = Vec::new();
        let mut from: Vec<(From, Option<&TaskVtable>)> = Vec::with_capacity(cur.len());
        // (cursor, id, vtable, state, links) of each node that is a task of this owner;
        // those whose links are still to read, and where they are.
        let mut found: Vec<(Stepped, Option<(u64, u64)>)> = Vec::new();
        let mut pending: Vec<Stepped> = Vec::new();
        let mut pending_spans: Vec<(u64, usize)> = Vec::new();
        loop {
            for c in cur.iter_mut().filter(|c| c.end.is_none()) {
                if c.node == 0 {
                    c.end = Some(if c.prev == c.tail {
                        Walk::Done(std::mem::take(&mut c.out))
                    } else {
                        Walk::Changed
                    });
                } else if c.out.len() >= MAX_LIST {
                    c.end = Some(Walk::Changed);
                }
            }
            active.clear();
            active.extend((0..cur.len()).filter(|&i| cur[i].end.is_none()));
            if active.is_empty() {
                break;
            }
            spans.clear();
            from.clear();
            for &i in &active {
                let node = cur[i].node;
                let g = guess(node).filter(|_| !unguessed.contains(&node));
                match pre_index.get(&node) {
                    Some(&k) if g.is_some() && pre.ok[k] && pre.ok[k + 1] => {
                        from.push((From::Pre(k), g));
                    }
                    _ => {
                        from.push((From::Read(spans.len()), g));
                        spans.push((node, self.header_len));
                        if let Some(vt) = g {
                            spans.push(links_at(node, vt));
                        }
                    }
                }
            }
            let read = if spans.is_empty() {
                Spans::zeroed(&[])
            } else {
                self.mem.read_spans(&spans)
            };
            found.clear();
            pending.clear();
            pending_spans.clear();
            for (&i, (src, g)) in active.iter().zip(&from) {
                let c = &mut cur[i];
                let (header, links) = match *src {
                    From::Pre(k) => (pre.get(k), pre.get(k + 1)),
                    From::Read(k) => (read.get(k), g.and_then(|_| read.get(k + 1))),
                };
                let Some(h) = header else {
                    c.lost();
                    continue;
                };
                let vtable = word(h, self.layout.header_vtable).expect("header words read");
                let Some(vt) = self.vtables.get(&vtable) else {
                    c.lost();
                    continue;
                };
                if word(h, self.layout.header_owner_id) != Some(owner) {
                    c.lost();
                    continue;
                }
                let state = word(h, self.layout.header_state).expect("header words read");
                // Before 1.23 ids are read after the walk, where `learn_cores` found them.
                let id = match self.by_future {
                    Some(_) => Some(0),
                    None => word(h, vt.id_offset),
                };
                let Some(id) = id else {
                    c.lost();
                    continue;
                };
                match (g, links) {
                    (Some(g), Some(b)) if g.vaddr == vtable => {
                        found.push((
                            Stepped {
                                cursor: i,
                                id,
                                vtable,
                                state,
                            },
                            Some(read_links(b)),
                        ));
                    }
                    // Its links unreadable where its vtable puts them: not a task.
                    (Some(g), None) if g.vaddr == vtable => c.lost(),
                    _ => {
                        if g.is_some() {
                            unguessed.insert(c.node);
                        }
                        pending.push(Stepped {
                            cursor: i,
                            id,
                            vtable,
                            state,
                        });
                        pending_spans.push(links_at(c.node, vt));
                    }
                }
            }
            if !pending.is_empty() {
                let read = self.mem.read_spans(&pending_spans);
                for (k, &step) in pending.iter().enumerate() {
                    found.push((step, read.get(k).map(read_links)));
                }
            }
            for &(
                Stepped {
                    cursor,
                    id,
                    vtable,
                    state,
                },
                links,
            ) in &found
            {
                let c = &mut cur[cursor];
                let Some((back, next)) = links else {
                    c.lost();
                    continue;
                };
                if back != c.prev {
                    c.end = Some(Walk::Changed);
                    continue;
                }
                c.out.push(Node {
                    header: c.node,
                    id,
                    vtable,
                    state,
                });
                c.prev = c.node;
                c.node = next;
            }
        }
        cur.into_iter()
            .map(|c| c.end.expect("every walk ended"))
            .collect()
    }

    /// Hash of each task's `Core` (scheduler, id, future) and of the first bytes behind
    /// each heap pointer in it, read in batches: a future keeps much of its moving state
    /// behind pointers (a boxed `Sleep`'s deadline, a channel's indices), so a polled task
    /// almost always changes the hash, and a task nobody polls or wakes keeps it.
    /// The second reading of a task's state word (`None`: unreadable by then).
    fn recheck(&self, t: &mut LiveTask, second: Option<u64>) {
        let first = t.state;
        self.classify(t, second.unwrap_or(first), second == Some(first));
    }

    /// A walked node, as its first reading of the state word says (not yet stable).
    fn decode(&self, owner: u64, list: ListKind, n: Node) -> LiveTask {
        let mut t = LiveTask {
            header: n.header,
            id: n.id,
            owner_id: owner,
            vtable: n.vtable,
            state: n.state,
            digest: 0,
            refs: 0,
            list,
            stable: false,
            status: Status::Idle,
            join_handle: false,
            no_way_to_run: false,
        };
        self.classify(&mut t, n.state, false);
        t
    }

    /// What the state word says of the task; `stable`: two readings agreed.
    fn classify(&self, t: &mut LiveTask, state: u64, stable: bool) {
        let bits = &self.knowledge.state;
        let refs_bits = &self.knowledge.refs;
        let status = if state & bits.complete != 0 {
            Status::Complete
        } else if state & bits.running != 0 {
            Status::Running
        } else if state & refs_bits.notified != 0 {
            Status::Notified
        } else {
            Status::Idle
        };
        let refs = state >> refs_bits.ref_shift;
        let join_handle = state & refs_bits.join_interest != 0;
        t.state = state;
        t.stable = stable;
        t.status = status;
        t.refs = u32::try_from(refs).unwrap_or(u32::MAX);
        t.join_handle = join_handle;
        t.no_way_to_run = stable
            && status == Status::Idle
            && !join_handle
            && state & bits.cancelled == 0
            && refs == refs_bits.list_refs;
    }
}

enum Walk {
    Done(Vec<Node>),
    /// The list changed under the walk (or ended somewhere other than its tail).
    Changed,
    /// The first node is not a task of this owner: not its list.
    Foreign,
}

/// The walker on a synthetic target: a heap laid out by hand as tokio 1.39+ lays it out
/// (offsets from the newest version file), read through a `HeapImage`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        live::memory::HeapImage,
        tokio_versions::{self, ListLayout, ShardedLayout},
    };

    /// Task cells, one per 0x100 bytes (`header(id)`), and other heap objects.
    const HEAP: u64 = 0x5555_0000_0000;
    const HEAP_LEN: usize = 0x10000;
    /// The runtime's and the LocalSet's handles, and the runtime's shard array.
    const HANDLES: u64 = 0x7f00_0000_0000;
    const HANDLES_LEN: usize = 0x4000;
    const RT_ARC: u64 = HANDLES;
    const SHARDS: u64 = HANDLES + 0x800;
    const LOCAL_ARC: u64 = HANDLES + 0x1000;
    const UNMAPPED: u64 = 0x6000_0000_0000;

    const RT: u64 = 101;
    const LOCAL: u64 = 102;
    /// Tasks of the runtime by shard (of 4), and of the LocalSet, head first.
    const SHARD_TASKS: [&[u64]; 4] = [&[11, 12], &[], &[13, 14, 15], &[]];
    const LOCAL_TASKS: &[u64] = &[21, 22];
    /// A freed task's header, intact, below every live one: the scan's first candidate.
    const STALE: u64 = 9;

    /// Two future types. Vtables live in the binary: the reader is given them, never
    /// reads them.
    const VT_A: TaskVtable = TaskVtable {
        vaddr: 0x5554_0001_0000,
        trailer_offset: 0x80,
        scheduler_offset: 0x20,
        id_offset: 0x28,
    };
    const VT_B: TaskVtable = TaskVtable {
        vaddr: 0x5554_0001_0100,
        trailer_offset: 0xc0,
        scheduler_offset: 0x20,
        id_offset: 0x28,
    };
    /// Between the two: passes the scan's range check, but no task has it.
    const NOT_A_VTABLE: u64 = 0x5554_0001_0080;

    fn k() -> &'static Knowledge {
        tokio_versions::select(None).unwrap().knowledge
    }

    fn l() -> &'static ListLayout {
        &k().layout.lists
    }

    fn sh() -> ShardedLayout {
        match l().runtime {
            RuntimeList::Sharded(sh) => sh,
            RuntimeList::Single { .. } => panic!("the newest layout is sharded"),
        }
    }

    fn header(id: u64) -> u64 {
        HEAP + id * 0x100
    }

    fn vt(id: u64) -> TaskVtable {
        if matches!(id, 12 | 15 | 22) {
            VT_B
        } else {
            VT_A
        }
    }

    fn prev_at(id: u64) -> u64 {
        header(id) + vt(id).trailer_offset + l().trailer_prev
    }

    fn next_at(id: u64) -> u64 {
        header(id) + vt(id).trailer_offset + l().trailer_next
    }

    fn state_at(id: u64) -> u64 {
        header(id) + k().layout.header_state
    }

    fn shard_head_at(i: u64) -> u64 {
        SHARDS + i * sh().shard_stride + sh().shard_head
    }

    fn shard_tail_at(i: u64) -> u64 {
        SHARDS + i * sh().shard_stride + sh().shard_tail
    }

    /// `OwnedTasks.id`, somewhere inside the runtime handle.
    fn rt_id() -> u64 {
        RT_ARC + l().arc_data + 0x128
    }

    /// `LocalOwnedTasks.id`, inside the LocalSet's shared state.
    fn local_id() -> u64 {
        LOCAL_ARC + l().arc_data + 0x40
    }

    fn from_id(id: u64, off: i64) -> u64 {
        id.checked_add_signed(off).unwrap()
    }

    fn refs(n: u64) -> u64 {
        n << k().refs.ref_shift
    }

    /// Idle, and nothing but its list holds it.
    fn lone() -> u64 {
        refs(1)
    }

    fn state(id: u64) -> u64 {
        let (r, s) = (&k().refs, &k().state);
        match id {
            12 | 22 => refs(3) | r.notified | r.join_interest,
            13 => refs(2) | s.running | r.join_interest,
            14 => refs(1) | s.complete,
            15 => refs(2) | r.join_interest,
            _ => lone(),
        }
    }

    fn task(m: &mut HeapImage, owner: u64, id: u64, arc: u64) {
        let (h, v, hl) = (header(id), vt(id), &k().layout);
        m.put(h + hl.header_state, state(id));
        m.put(h + hl.header_vtable, v.vaddr);
        m.put(h + hl.header_owner_id, owner);
        m.put(h + v.scheduler_offset, arc);
        m.put(h + v.id_offset, id);
        // The future's first word.
        m.put(h + 0x30, 0xf00d_0000 + id);
    }

    /// Links the tasks `ids` into the list whose head and tail are at these addresses.
    fn link(m: &mut HeapImage, head_at: u64, tail_at: u64, ids: &[u64]) {
        m.put(head_at, ids.first().map_or(0, |&i| header(i)));
        m.put(tail_at, ids.last().map_or(0, |&i| header(i)));
        for (j, &id) in ids.iter().enumerate() {
            let prev = j.checked_sub(1).map_or(0, |p| header(ids[p]));
            m.put(prev_at(id), prev);
            m.put(next_at(id), ids.get(j + 1).map_or(0, |&n| header(n)));
        }
    }

    /// A multi-thread runtime with tasks in two of its four shards, a LocalSet with two
    /// tasks, and a stale copy of a freed header of the runtime.
    fn target() -> HeapImage {
        let mut m = HeapImage::default();
        m.map(HEAP, HEAP_LEN);
        m.map(HANDLES, HANDLES_LEN);
        // ArcInner { strong, weak, Handle { .., OwnedTasks { ShardedList, id } } }
        m.put(RT_ARC, 7);
        m.put(RT_ARC + 8, 1);
        let id = rt_id();
        m.put(id, RT);
        let lists = from_id(id, sh().lists_from_id);
        m.put(lists, SHARDS);
        m.put(lists + 8, SHARD_TASKS.len() as u64);
        m.put(from_id(id, sh().mask_from_id), SHARD_TASKS.len() as u64 - 1);
        let count = SHARD_TASKS.iter().map(|s| s.len() as u64).sum();
        m.put(from_id(id, sh().count_from_id), count);
        for (i, ids) in SHARD_TASKS.iter().enumerate() {
            for &t in *ids {
                task(&mut m, RT, t, RT_ARC);
            }
            link(
                &mut m,
                shard_head_at(i as u64),
                shard_tail_at(i as u64),
                ids,
            );
        }
        // ArcInner { strong, weak, Shared { .., LocalOwnedTasks { id, list, .. } } }
        m.put(LOCAL_ARC, 3);
        m.put(LOCAL_ARC + 8, 1);
        m.put(local_id(), LOCAL);
        for &t in LOCAL_TASKS {
            task(&mut m, LOCAL, t, LOCAL_ARC);
        }
        link(
            &mut m,
            from_id(local_id(), l().local_head_from_id),
            from_id(local_id(), l().local_tail_from_id),
            LOCAL_TASKS,
        );
        // Freed, not overwritten: it still looks alive, and points into the list.
        task(&mut m, RT, STALE, RT_ARC);
        m.put(prev_at(STALE), header(11));
        m.put(next_at(STALE), header(12));
        m
    }

    fn reader(m: HeapImage) -> Reader<'static, HeapImage> {
        Reader::with_memory(m, 0, k(), &[VT_A, VT_B])
    }

    /// The lists `target()` has, as an earlier snapshot would have found them.
    fn known() -> Vec<OwnedList> {
        let list = |owner_id, kind, address| OwnedList {
            owner_id,
            kind,
            address,
            shards: 0,
            declared: None,
            tasks: 0,
            incomplete_shards: 0,
        };
        vec![
            list(RT, ListKind::Runtime, rt_id()),
            list(LOCAL, ListKind::LocalSet, local_id()),
        ]
    }

    fn ids(s: &Snapshot) -> Vec<u64> {
        s.tasks.iter().map(|t| t.id).collect()
    }

    /// Per list: owner, kind, address, shards, declared, tasks, incomplete shards.
    type ListRow = (u64, ListKind, u64, u64, Option<u64>, u64, u64);

    fn lists(s: &Snapshot) -> Vec<ListRow> {
        s.lists
            .iter()
            .map(|l| {
                let (a, b, c) = (l.address, l.shards, l.declared);
                (l.owner_id, l.kind, a, b, c, l.tasks, l.incomplete_shards)
            })
            .collect()
    }

    fn rt_list(tasks: u64, incomplete: u64) -> ListRow {
        (
            RT,
            ListKind::Runtime,
            rt_id(),
            4,
            Some(5),
            tasks,
            incomplete,
        )
    }

    fn local_list(tasks: u64, incomplete: u64) -> ListRow {
        (
            LOCAL,
            ListKind::LocalSet,
            local_id(),
            1,
            None,
            tasks,
            incomplete,
        )
    }

    fn kept_changing(owner: u64) -> String {
        format!(
            "runtime list {owner}: 1 shard(s) kept changing while read; some of its tasks \
             may be missing"
        )
    }

    fn not_found(owner: u64) -> String {
        format!(
            "found tasks of runtime list {owner} but not the list itself (tokio layout not \
             as expected for tokio {}+); its idle tasks are not listed",
            k().first
        )
    }

    /// Everything a task says, but its digest.
    fn task_row(t: &LiveTask) -> String {
        format!(
            "{} {:#x} {} {:#x} {:#x} {} {:?} {} {:?} {} {}",
            t.id,
            t.header,
            t.owner_id,
            t.vtable,
            t.state,
            t.refs,
            t.list,
            t.stable,
            t.status,
            t.join_handle,
            t.no_way_to_run
        )
    }

    /// Before 1.35 a runtime keeps one list (counted from 1.29), and the ids sat after
    /// the lists before 1.30: every such version file's offsets find and walk them.
    #[test]
    fn one_list_runtimes_of_older_tokio_are_walked() {
        let mut seen = 0;
        for k in tokio_versions::all() {
            let RuntimeList::Single {
                head_from_id,
                tail_from_id,
                count_from_id,
            } = k.layout.lists.runtime
            else {
                continue;
            };
            seen += 1;
            let ll = &k.layout.lists;
            let mut m = HeapImage::default();
            m.map(HEAP, HEAP_LEN);
            m.map(HANDLES, HANDLES_LEN);
            m.put(RT_ARC, 7);
            m.put(RT_ARC + 8, 1);
            m.put(rt_id(), RT);
            let all: Vec<u64> = SHARD_TASKS.concat();
            if let Some(c) = count_from_id {
                m.put(from_id(rt_id(), c), all.len() as u64);
            }
            // Before 1.23 the vtables do not say where `Core`'s fields are: where rustc
            // puts them for an 8-aligned future (A: the scheduler right after the
            // header, the id last) and a 32-aligned one (B).
            let header_len = match k.layout.core {
                CoreAt::ByFuture { header_len } => Some(header_len),
                CoreAt::Vtable { .. } => None,
            };
            let by_future = header_len.is_some();
            let place = |t: u64| {
                let v = vt(t);
                match (header_len, v == VT_A) {
                    (None, _) => v,
                    (Some(len), true) => TaskVtable {
                        scheduler_offset: len,
                        id_offset: v.trailer_offset - 8,
                        ..v
                    },
                    (Some(_), false) => TaskVtable {
                        scheduler_offset: v.trailer_offset - 32 + 8,
                        id_offset: v.trailer_offset - 32,
                        ..v
                    },
                }
            };
            // The header as this version lays it out (1.20's is longer), then the `Core`.
            let hl = &k.layout;
            let put = |m: &mut HeapImage, owner: u64, t: u64, arc: u64| {
                if !by_future {
                    return task(m, owner, t, arc);
                }
                let (h, p) = (header(t), place(t));
                m.put(h + hl.header_state, state(t));
                m.put(h + hl.header_vtable, p.vaddr);
                m.put(h + hl.header_owner_id, owner);
                m.put(h + p.scheduler_offset, arc);
                m.put(h + p.id_offset, t);
            };
            // Each task's links: in its trailer, or (1.20) in its header.
            let link = |m: &mut HeapImage, head_at: u64, tail_at: u64, ids: &[u64]| {
                let at = |id: u64, off: u64| {
                    let base = if ll.links_in_header {
                        0
                    } else {
                        vt(id).trailer_offset
                    };
                    header(id) + base + off
                };
                m.put(head_at, ids.first().map_or(0, |&i| header(i)));
                m.put(tail_at, ids.last().map_or(0, |&i| header(i)));
                for (j, &id) in ids.iter().enumerate() {
                    let prev = j.checked_sub(1).map_or(0, |p| header(ids[p]));
                    m.put(at(id, ll.trailer_prev), prev);
                    m.put(
                        at(id, ll.trailer_next),
                        ids.get(j + 1).map_or(0, |&n| header(n)),
                    );
                }
            };
            for &t in &all {
                put(&mut m, RT, t, RT_ARC);
            }
            link(
                &mut m,
                from_id(rt_id(), head_from_id),
                from_id(rt_id(), tail_from_id),
                &all,
            );
            m.put(LOCAL_ARC, 3);
            m.put(LOCAL_ARC + 8, 1);
            m.put(local_id(), LOCAL);
            for &t in LOCAL_TASKS {
                put(&mut m, LOCAL, t, LOCAL_ARC);
            }
            link(
                &mut m,
                from_id(local_id(), ll.local_head_from_id),
                from_id(local_id(), ll.local_tail_from_id),
                LOCAL_TASKS,
            );
            // What the binary says of each vtable: before 1.23, its trailer offset only.
            let given: Vec<TaskVtable> = [VT_A, VT_B]
                .map(|v| match by_future {
                    false => v,
                    true => TaskVtable {
                        scheduler_offset: 0,
                        id_offset: 0,
                        ..v
                    },
                })
                .to_vec();
            let r = Reader::with_memory(m, 0, k, &given);
            let s = r.snapshot(0).unwrap();
            let v = k.first;
            assert_eq!(s.warnings, Vec::<String>::new(), "{v}");
            assert_eq!(ids(&s), vec![11, 12, 13, 14, 15, 21, 22], "{v}");
            if by_future {
                let learned = r.learned.borrow();
                for (t, vt) in [(11, VT_A), (12, VT_B)] {
                    let p = place(t);
                    assert_eq!(
                        learned.get(&vt.vaddr),
                        Some(&(p.scheduler_offset, p.id_offset)),
                        "{v}: vtable of task {t}"
                    );
                }
            }
            let count = count_from_id.map(|_| 5);
            // Before 1.29 a LocalSet's list sits where a runtime's does, relative to the
            // id: it is walked all the same, as a runtime's (the version file says so).
            let alike =
                (head_from_id, tail_from_id) == (ll.local_head_from_id, ll.local_tail_from_id);
            assert_eq!(
                alike,
                k.first < tokio_versions::Version::new(1, 29, 0),
                "{v}"
            );
            let local_kind = if alike {
                ListKind::Runtime
            } else {
                ListKind::LocalSet
            };
            assert_eq!(
                lists(&s),
                vec![
                    (RT, ListKind::Runtime, rt_id(), 1, count, 5, 0),
                    (LOCAL, local_kind, local_id(), 1, None, 2, 0),
                ],
                "{v}"
            );
            assert_eq!(
                alike,
                k.degraded
                    .iter()
                    .any(|d| d.what == "LocalSet tasks alive before attach"),
                "{v}"
            );
        }
        assert_eq!(
            seen, 6,
            "1.20, 1.21, 1.22, 1.23, 1.29 and 1.30 keep one list"
        );
    }

    #[test]
    fn snapshot_finds_every_task_of_a_runtime_and_a_local_set() {
        let r = reader(target());
        let s = r.snapshot(0).unwrap();
        assert_eq!(s.warnings, Vec::<String>::new());
        assert_eq!(s.scanned_bytes, (HEAP_LEN + HANDLES_LEN) as u64);
        assert_eq!(lists(&s), vec![rt_list(5, 0), local_list(2, 0)]);
        // Shard by shard, head first; the stale header is not in any list.
        assert_eq!(ids(&s), vec![11, 12, 13, 14, 15, 21, 22]);
        use {ListKind::*, Status::*};
        let want = [
            (RT, Runtime, Idle, 1, false, true),
            (RT, Runtime, Notified, 3, true, false),
            (RT, Runtime, Running, 2, true, false),
            (RT, Runtime, Complete, 1, false, false),
            (RT, Runtime, Idle, 2, true, false),
            (LOCAL, LocalSet, Idle, 1, false, true),
            (LOCAL, LocalSet, Notified, 3, true, false),
        ];
        for (t, w) in s.tasks.iter().zip(want) {
            let got = (
                t.owner_id,
                t.list,
                t.status,
                t.refs,
                t.join_handle,
                t.no_way_to_run,
            );
            assert_eq!(got, w, "task {}", t.id);
            assert_eq!(t.header, header(t.id));
            assert_eq!(t.vtable, vt(t.id).vaddr);
            assert_eq!(t.state, state(t.id));
            assert!(t.stable, "task {}", t.id);
            assert_eq!(t.digest, 0, "not asked for");
        }

        // The lists it found, walked directly: the same, without a scan.
        let again = r.snapshot_from(1, &s.lists).unwrap();
        assert_eq!(again.scanned_bytes, 0);
        assert_eq!(again.warnings, Vec::<String>::new());
        assert_eq!(lists(&again), lists(&s));
        let rows = |s: &Snapshot| s.tasks.iter().map(task_row).collect::<Vec<_>>();
        assert_eq!(rows(&again), rows(&s));
    }

    #[test]
    fn torn_list_is_incomplete_and_invents_nothing() {
        let foreign = HEAP + 0x8000;
        let bad_pointers = [
            ("the end, before the tail", 0),
            ("unmapped", UNMAPPED),
            ("a header whose vtable is no task's", foreign),
            ("a task of another owner", header(21)),
            ("a freed header whose prev is not the walk's", header(STALE)),
        ];
        for (what, bad) in bad_pointers {
            let mut m = target();
            m.put(foreign + k().layout.header_vtable, NOT_A_VTABLE);
            m.put(foreign + k().layout.header_owner_id, RT);
            m.put(foreign + k().layout.header_state, lone());
            m.put(next_at(14), bad);
            let r = reader(m);
            for s in [
                r.snapshot(0).unwrap(),
                r.snapshot_from(0, &known()).unwrap(),
            ] {
                // Shard 2 is dropped whole, the counter's 5 is not complained about.
                assert_eq!(s.warnings, vec![kept_changing(RT)], "{what}");
                assert_eq!(lists(&s), vec![rt_list(2, 1), local_list(2, 0)], "{what}");
                assert_eq!(ids(&s), vec![11, 12, 21, 22], "{what}");
            }
        }

        // Shard 2 runs on into the LocalSet's tasks, every link and its tail agreeing:
        // only their owner tells they are not the runtime's.
        let mut m = target();
        m.put(next_at(14), header(21));
        m.put(prev_at(21), header(14));
        m.put(shard_tail_at(2), header(22));
        let s = reader(m).snapshot_from(0, &known()).unwrap();
        assert_eq!(s.warnings, vec![kept_changing(RT), kept_changing(LOCAL)]);
        assert_eq!(lists(&s), vec![rt_list(2, 1), local_list(0, 1)]);
        assert_eq!(ids(&s), vec![11, 12]);

        // A torn LocalSet list: walked directly it is incomplete; a scan cannot tell it
        // is the list its candidates belong to, since none of them is reached.
        let mut m = target();
        m.put(next_at(21), UNMAPPED);
        let r = reader(m);
        let s = r.snapshot_from(0, &known()).unwrap();
        assert_eq!(s.warnings, vec![kept_changing(LOCAL)]);
        assert_eq!(lists(&s), vec![rt_list(5, 0), local_list(0, 1)]);
        assert_eq!(ids(&s), vec![11, 12, 13, 14, 15]);
        let s = r.snapshot(0).unwrap();
        assert_eq!(s.warnings, vec![not_found(LOCAL)]);
        assert_eq!(lists(&s), vec![rt_list(5, 0)]);
        assert_eq!(ids(&s), vec![11, 12, 13, 14, 15]);
    }

    /// A shard whose head is no task of the owner makes the whole `OwnedTasks` "not a
    /// list": none of its tasks is reported, and a known list that no longer walks sends
    /// `snapshot_from` back to a full scan.
    #[test]
    fn list_whose_head_is_not_a_task_is_not_the_runtimes() {
        let mut m = target();
        m.put(shard_head_at(2), UNMAPPED);
        let r = reader(m);
        let s = r.snapshot(0).unwrap();
        assert_eq!(s.warnings, vec![not_found(RT)]);
        assert_eq!(lists(&s), vec![local_list(2, 0)]);
        assert_eq!(ids(&s), vec![21, 22]);
        let again = r.snapshot_from(0, &known()).unwrap();
        assert_eq!(again.scanned_bytes, (HEAP_LEN + HANDLES_LEN) as u64);
        assert_eq!(again.warnings, s.warnings);
        assert_eq!(ids(&again), ids(&s));

        // A shard with a head and no tail, at every reading.
        let mut m = target();
        m.put(shard_tail_at(2), 0);
        let r = reader(m);
        assert!(r.walk_runtime(RT, rt_id()).is_none());
        let s = r.snapshot(0).unwrap();
        assert_eq!(s.warnings, vec![not_found(RT)]);
        assert_eq!(ids(&s), vec![21, 22]);

        // Not a sharded list at all: a length that is no power of two.
        let mut m = target();
        m.put(from_id(rt_id(), sh().lists_from_id) + 8, 3);
        let r = reader(m);
        assert!(r.walk_runtime(RT, rt_id()).is_none());
        let s = r.snapshot_from(0, &known()).unwrap();
        assert_eq!(s.scanned_bytes, (HEAP_LEN + HANDLES_LEN) as u64);
        assert_eq!(s.warnings, vec![not_found(RT)]);
        assert_eq!(ids(&s), vec![21, 22]);
    }

    #[test]
    fn cycle_ends_the_walk_without_duplicates() {
        let cycles: [(&str, &[(u64, u64)]); 4] = [
            ("back to the head", &[(next_at(15), header(13))]),
            ("back to the middle", &[(next_at(15), header(14))]),
            ("onto itself", &[(next_at(15), header(15))]),
            (
                "circular, prev links agreeing",
                &[(next_at(15), header(13)), (prev_at(13), header(15))],
            ),
        ];
        for (what, edits) in cycles {
            let mut m = target();
            for &(at, v) in edits {
                m.put(at, v);
            }
            // Only to count its reads: the walk stops at the first node it revisits.
            let last = m.u64(next_at(15)).unwrap();
            m.vary(next_at(15), vec![last]);
            let r = reader(m);
            assert!(
                matches!(r.walk(RT, header(13), header(15)), Walk::Changed),
                "{what}"
            );
            assert!(r.mem.reads(next_at(15)) <= 2, "{what}");
            for s in [
                r.snapshot(0).unwrap(),
                r.snapshot_from(0, &known()).unwrap(),
            ] {
                assert_eq!(s.warnings, vec![kept_changing(RT)], "{what}");
                assert_eq!(lists(&s), vec![rt_list(2, 1), local_list(2, 0)], "{what}");
                assert_eq!(ids(&s), vec![11, 12, 21, 22], "{what}");
            }
        }
        // In the LocalSet's one list.
        let mut m = target();
        m.put(next_at(22), header(21));
        let s = reader(m).snapshot_from(0, &known()).unwrap();
        assert_eq!(s.warnings, vec![kept_changing(LOCAL)]);
        assert_eq!(lists(&s), vec![rt_list(5, 0), local_list(0, 1)]);
    }

    #[test]
    fn shard_changing_under_the_walk_is_re_read() {
        // Task 13 pushed at the head between reading the head and walking: the first
        // walk starts at 14, whose `prev` is 13 by then.
        let mut m = target();
        m.vary(shard_head_at(2), vec![header(14), header(13)]);
        let r = reader(m);
        let (list, tasks) = r.walk_runtime(RT, rt_id()).unwrap();
        assert_eq!(r.mem.reads(shard_head_at(2)), 2);
        assert_eq!((list.tasks, list.incomplete_shards), (5, 0));
        let got: Vec<u64> = tasks.iter().map(|t| t.id).collect();
        assert_eq!(got, vec![11, 12, 13, 14, 15]);

        // Task 14 being unlinked: 13's `next` is read mid-update once.
        let mut m = target();
        m.vary(next_at(13), vec![UNMAPPED, header(14)]);
        let r = reader(m);
        let s = r.snapshot_from(0, &known()).unwrap();
        assert_eq!(r.mem.reads(next_at(13)), 2);
        assert_eq!(s.warnings, Vec::<String>::new());
        assert_eq!(lists(&s), vec![rt_list(5, 0), local_list(2, 0)]);
        assert_eq!(ids(&s), vec![11, 12, 13, 14, 15, 21, 22]);
    }

    #[test]
    fn shards_are_walked_in_step() {
        // Shards of 2, 0, 3 and 0 tasks: three steps, each reading every shard's next
        // header at once, then their links, however many shards there are.
        let r = reader(target());
        let (list, _) = r.walk_runtime(RT, rt_id()).unwrap();
        assert_eq!(list.tasks, 5);
        assert_eq!(r.mem.span_reads.get(), 3 * 2);
        // Tasks seen at a reading are all read at once at the next walk, before it
        // starts; a task spawned since is read in step.
        r.snapshot_from(0, &known()).unwrap();
        let before = r.mem.span_reads.get();
        let (list, tasks) = r.walk_runtime(RT, rt_id()).unwrap();
        assert_eq!((list.tasks, list.incomplete_shards), (5, 0));
        assert_eq!(r.mem.span_reads.get() - before, 1);
        assert_eq!(
            tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![11, 12, 13, 14, 15]
        );
    }

    #[test]
    fn tasks_spawned_and_finished_since_the_last_reading_are_walked_right() {
        let mut r = reader(target());
        r.snapshot_from(0, &known()).unwrap();
        // Task 14 finished (unlinked), 16 spawned at the head of the first shard.
        task(&mut r.mem, RT, 16, RT_ARC);
        link(
            &mut r.mem,
            shard_head_at(0),
            shard_tail_at(0),
            &[16, 11, 12],
        );
        link(&mut r.mem, shard_head_at(2), shard_tail_at(2), &[13, 15]);
        let s = r.snapshot_from(0, &known()).unwrap();
        assert_eq!(s.warnings, Vec::<String>::new());
        assert_eq!(lists(&s), vec![rt_list(5, 0), local_list(2, 0)]);
        assert_eq!(ids(&s), vec![16, 11, 12, 13, 15, 21, 22]);
        // And the reading after that knows 16.
        assert_eq!(r.seen.borrow().get(&header(16)), Some(&(VT_A.vaddr, RT)));
        assert!(!r.seen.borrow().contains_key(&header(14)));
    }

    #[test]
    fn a_guessed_vtable_that_changed_is_read_again() {
        // Task 13's cell reused by a task of the other future type since the last reading.
        let mut r = reader(target());
        r.snapshot_from(0, &known()).unwrap();
        r.seen.get_mut().insert(header(13), (VT_B.vaddr, RT));
        r.seen.get_mut().insert(header(12), (VT_A.vaddr, RT));
        let s = r.snapshot_from(0, &known()).unwrap();
        assert_eq!(s.warnings, Vec::<String>::new());
        assert_eq!(lists(&s), vec![rt_list(5, 0), local_list(2, 0)]);
        assert_eq!(ids(&s), vec![11, 12, 13, 14, 15, 21, 22]);
        assert_eq!(r.seen.borrow().get(&header(13)), Some(&(VT_A.vaddr, RT)));
    }

    #[test]
    fn shard_that_never_holds_still_is_incomplete() {
        // Stale at every one of the walker's attempts, right only after.
        let mut heads = vec![header(14); WALK_ATTEMPTS];
        heads.push(header(13));
        let mut m = target();
        m.vary(shard_head_at(2), heads);
        let r = reader(m);
        let s = r.snapshot_from(0, &known()).unwrap();
        assert_eq!(r.mem.reads(shard_head_at(2)), WALK_ATTEMPTS);
        assert_eq!(s.warnings, vec![kept_changing(RT)]);
        assert_eq!(lists(&s), vec![rt_list(2, 1), local_list(2, 0)]);
        assert_eq!(ids(&s), vec![11, 12, 21, 22]);
    }

    #[test]
    fn certainty_rests_on_two_equal_readings_of_the_state() {
        // Task 11 was notified at the walk, idle and alone at the second reading.
        let notified = refs(2) | k().refs.notified;
        let mut m = target();
        m.vary(state_at(11), vec![notified, lone()]);
        let r = reader(m);
        let s = r.snapshot_from(0, &known()).unwrap();
        assert_eq!(r.mem.reads(state_at(11)), 2);
        let t11 = &s.tasks[0];
        assert_eq!(t11.id, 11);
        let got = (
            t11.state,
            t11.status,
            t11.refs,
            t11.stable,
            t11.no_way_to_run,
        );
        assert_eq!(got, (lone(), Status::Idle, 1, false, false));
        // Task 21 read alike twice: certain.
        let t21 = s.tasks.iter().find(|t| t.id == 21).unwrap();
        assert!(t21.stable && t21.no_way_to_run);
    }

    #[test]
    fn counter_disagreeing_with_a_complete_walk_warns() {
        let mut m = target();
        m.put(from_id(rt_id(), sh().count_from_id), 6);
        let s = reader(m).snapshot_from(0, &known()).unwrap();
        assert_eq!(
            s.warnings,
            vec![format!(
                "runtime list {RT}: walked 5 tasks, its counter says 6 (tasks were spawned \
                 or finished during the reading)"
            )]
        );
        assert_eq!(s.lists[0].declared, Some(6));
        assert_eq!(ids(&s).len(), 7);
    }

    #[test]
    fn digest_follows_the_future_not_the_runtime() {
        let digests = |r: &Reader<'_, HeapImage>| -> Vec<(u64, u64)> {
            let s = r.snapshot_from(0, &known()).unwrap();
            s.tasks.iter().map(|t| (t.id, t.digest)).collect()
        };
        let mut m = target();
        // Task 11's future holds a pointer to a heap object.
        let object = HEAP + 0x9000;
        m.put(header(11) + 0x38, object);
        let mut r = reader(m);
        r.digests = true;
        let before = digests(&r);
        assert!(before.iter().all(|&(_, d)| d != 0));
        assert_eq!(digests(&r), before, "nothing changed");

        // Another task spawned on the runtime: its handle's `Arc` counts change.
        r.mem.put(RT_ARC, 8);
        assert_eq!(digests(&r), before, "the runtime changed, no task did");

        // Task 13 polled: its future's bytes changed.
        r.mem.put(header(13) + 0x30, 1);
        let after = digests(&r);
        let changed: Vec<u64> = (before.iter().zip(&after))
            .filter(|(b, a)| b != a)
            .map(|(b, _)| b.0)
            .collect();
        assert_eq!(changed, vec![13]);

        // Task 11 polled: what its future points to changed.
        r.mem.put(object + 16, 1);
        let last = digests(&r);
        let changed: Vec<u64> = (after.iter().zip(&last))
            .filter(|(b, a)| b != a)
            .map(|(b, _)| b.0)
            .collect();
        assert_eq!(changed, vec![11]);

        // Task 14 waits on a channel: an `Arc` whose value is cache-padded (its counts,
        // then zeros to 128 bytes). A message sent moves the tail behind the padding.
        let chan = HEAP + 0xa000;
        r.mem.put(chan, 2);
        r.mem.put(chan + 8, 1);
        // Padding is whatever the allocator left there.
        r.mem.put(chan + 16, 0xdead_beef);
        r.mem.put(header(14) + 0x38, chan);
        let waiting = digests(&r);
        r.mem.put(chan + 128 + 8, 7);
        let sent = digests(&r);
        let changed: Vec<u64> = (waiting.iter().zip(&sent))
            .filter(|(b, a)| b != a)
            .map(|(b, _)| b.0)
            .collect();
        assert_eq!(changed, vec![14], "a message moved the channel's tail");

        // Task 11 waits in a list whose next waiter is inside task 13's future, and on
        // an object that ends where task 15 starts: 13 polled changes 13's digest only,
        // and 15's header and list links are not 11's state.
        r.mem.put(header(11) + 0x40, header(13) + 0x50);
        r.mem.put(header(11) + 0x48, header(15) - 0x10);
        let linked = digests(&r);
        r.mem.put(header(13) + 0x50, 0x77);
        let polled = digests(&r);
        let changed: Vec<u64> = (linked.iter().zip(&polled))
            .filter(|(b, a)| b != a)
            .map(|(b, _)| b.0)
            .collect();
        assert_eq!(changed, vec![13], "only the task whose future changed");
        r.mem.put(state_at(15), refs(3) | k().refs.join_interest);
        assert_eq!(digests(&r), polled, "a neighbour's header is its own");

        // Task 15 waits on a small `Arc` glibc allocated (a 48-byte chunk: 40 bytes
        // usable, counts first): what lies after it is another object's, and it is too
        // small to be cache-padded.
        let small = HEAP + 0xb000;
        r.mem.put(small - 8, 0x31);
        r.mem.put(small, 3);
        r.mem.put(small + 8, 1);
        r.mem.put(header(15) + 0x38, small);
        let waiting = digests(&r);
        r.mem.put(small + 48, 5);
        r.mem.put(small + 128 + 8, 5);
        assert_eq!(digests(&r), waiting, "beyond the object");
        r.mem.put(small + 32, 5);
        let changed: Vec<u64> = (waiting.iter().zip(&digests(&r)))
            .filter(|(b, a)| b != a)
            .map(|(b, _)| b.0)
            .collect();
        assert_eq!(changed, vec![15], "inside the object");

        // Task 15 also points into a 264-byte object (a tokio 1.23 `Chan`, its receive
        // index far into it), and holds a stale pointer into the runtime's handle.
        let chan = HEAP + 0xc000;
        r.mem.put(chan - 8, 0x111);
        r.mem.put(header(15) + 0x40, chan);
        r.mem.put(header(15) + 0x48, RT_ARC + 0x90);
        let waiting = digests(&r);
        r.mem.put(RT_ARC + 0x98, 12);
        assert_eq!(digests(&r), waiting, "the runtime's queues moved");
        r.mem.put(chan + 200, 1);
        let changed: Vec<u64> = (waiting.iter().zip(&digests(&r)))
            .filter(|(b, a)| b != a)
            .map(|(b, _)| b.0)
            .collect();
        assert_eq!(changed, vec![15], "a message received");
    }

    #[test]
    fn a_task_missing_from_a_reading_leaves_its_neighbours_digests_alone() {
        let digest_of =
            |s: &Snapshot, id: u64| s.tasks.iter().find(|t| t.id == id).map(|t| t.digest);
        let mut m = target();
        // Task 11 waits in a list whose next waiter is inside task 13's future.
        m.put(header(11) + 0x40, header(13) + 0x50);
        let mut r = reader(m);
        r.digests = true;
        let all = r.snapshot_from(0, &known()).unwrap();
        // Shard 2 (13, 14, 15) keeps changing under every walk: 13 is not listed.
        r.mem.vary(shard_head_at(2), vec![header(14)]);
        let some = r.snapshot_from(0, &known()).unwrap();
        assert_eq!(lists(&some)[0], rt_list(2, 1));
        assert_eq!(digest_of(&some, 13), None);
        assert_eq!(digest_of(&some, 11), digest_of(&all, 11));
    }

    #[test]
    fn without_task_vtables_nothing_is_read() {
        let r = Reader::with_memory(target(), 0, k(), &[]);
        let s = r.snapshot(0).unwrap();
        assert_eq!(s.scanned_bytes, 0);
        assert!(s.tasks.is_empty() && s.lists.is_empty());
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].starts_with("no task vtables"));
    }
}
