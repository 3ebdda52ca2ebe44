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

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    locations::TaskVtable,
    memory::Memory,
    tokio_versions::{Knowledge, Layout},
};

/// Scan granularity: one `process_vm_readv` per chunk.
const CHUNK: usize = 1 << 20;
/// Candidate headers kept per runtime to find its list from (stale ones fail the walk).
const CANDIDATES_PER_OWNER: usize = 16;
/// A list longer than this is a cycle or garbage, not tasks.
const MAX_LIST: usize = 1 << 24;
/// Re-reads of a list that changed while it was walked.
const WALK_ATTEMPTS: usize = 4;
/// Pause between the two readings of the state words.
const RECHECK_AFTER: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Idle,
    Notified,
    Running,
    Complete,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Notified => "notified",
            Status::Running => "running",
            Status::Complete => "complete",
        }
    }
}

/// One task found in a runtime's list.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LiveTask {
    pub header: u64,
    pub id: u64,
    pub owner_id: u64,
    pub vtable: u64,
    /// The state word at the second reading.
    pub state: u64,
    /// A hash of the task's `Core` (its scheduler, id and future) when asked for, else 0:
    /// a poll almost always changes the future's bytes, a task nobody polls never does.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub digest: u64,
    pub refs: u32,
    /// The kind of list it was found in (trace files store it beside the task).
    #[serde(skip)]
    pub list: ListKind,
    /// Both readings agreed.
    pub stable: bool,
    pub status: Status,
    pub join_handle: bool,
    /// Idle, not notified, no JoinHandle, and no reference left but the list's: nothing
    /// can ever wake or abort it (only its runtime's shutdown ends it).
    pub no_way_to_run: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    /// `OwnedTasks` of a multi-thread or current-thread runtime.
    #[default]
    Runtime,
    /// `LocalOwnedTasks` of a `LocalSet`.
    LocalSet,
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
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC when the reading started.
    pub taken_ns: u64,
    pub read_ms: f64,
    pub scanned_bytes: u64,
    pub lists: Vec<OwnedList>,
    pub tasks: Vec<LiveTask>,
    pub warnings: Vec<String>,
}

impl Snapshot {}

pub struct Reader<'a> {
    mem: Memory,
    pid: u32,
    layout: &'a Layout,
    knowledge: &'a Knowledge,
    vtables: HashMap<u64, TaskVtable>,
    /// Lowest and highest vtable address, to reject most words with two compares.
    span: (u64, u64),
    /// Hash every task's `Core` (lifecycle mode: the only sign a task was polled).
    pub digests: bool,
}

/// A header found by the scan, not yet trusted.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    header: u64,
    vtable: u64,
}

/// A task as read during a walk.
#[derive(Clone, Copy, Debug)]
struct Node {
    header: u64,
    id: u64,
    vtable: u64,
    state: u64,
    next: u64,
}

impl<'a> Reader<'a> {
    pub fn new(pid: u32, knowledge: &'a Knowledge, vtables: &[TaskVtable]) -> Result<Self> {
        let mem = Memory::new(pid);
        if let Err(e) = mem.check_access() {
            return Err(match e.raw_os_error() {
                Some(libc::ESRCH) => Error::NoSuchProcess(pid),
                _ => Error::Privileges {
                    what: format!(
                        "reading the memory of pid {pid} ({e}); run as root or with \
                         CAP_SYS_PTRACE"
                    ),
                },
            });
        }
        let span = (
            vtables.iter().map(|v| v.vaddr).min().unwrap_or(u64::MAX),
            vtables.iter().map(|v| v.vaddr).max().unwrap_or(0),
        );
        Ok(Self {
            mem,
            pid,
            layout: &knowledge.layout,
            knowledge,
            vtables: vtables.iter().map(|v| (v.vaddr, *v)).collect(),
            span,
            digests: false,
        })
    }

    /// Reads every runtime's task list now (memory scan, then walks).
    pub fn snapshot(&self, taken_ns: u64) -> Result<Snapshot> {
        self.snapshot_from(taken_ns, &[])
    }

    /// Reads the task lists found by an earlier snapshot by walking them directly, with
    /// no memory scan; falls back to a full snapshot when any of them no longer walks.
    pub fn snapshot_from(&self, taken_ns: u64, known: &[OwnedList]) -> Result<Snapshot> {
        let started = Instant::now();
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

        // Every state word read a second time, in parts (no second copy of the list).
        std::thread::sleep(RECHECK_AFTER);
        let mut addrs = Vec::new();
        for part in snap.tasks.chunks_mut(1 << 16) {
            addrs.clear();
            addrs.extend(part.iter().map(|t| t.header + self.layout.header_state));
            for (t, second) in part.iter_mut().zip(self.mem.u64s(&addrs)) {
                let first = t.state;
                self.classify(t, second.unwrap_or(first), second == Some(first));
            }
        }
        if self.digests {
            let mut regions: Vec<(u64, u64)> = self
                .mem
                .writable_regions()
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.start, r.end))
                .collect();
            regions.sort_unstable();
            let mut buf = Vec::new();
            for t in &mut snap.tasks {
                t.digest = self.digest(t, &regions, &mut buf).map_or(0, |d| d.max(1));
            }
        }
        snap.read_ms = started.elapsed().as_secs_f64() * 1e3;
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
        let lists = &self.layout.lists;
        for c in candidates {
            let vt = self.vtables.get(&c.vtable)?;
            let Some(arc) = self.mem.u64(c.header + vt.scheduler_offset) else {
                continue;
            };
            let handle = arc.wrapping_add(lists.arc_data);
            let mut buf = vec![0u8; lists.handle_search as usize];
            let n = self.mem.read_partial(handle, &mut buf).unwrap_or(0);
            for (i, w) in buf[..n].as_chunks::<8>().0.iter().enumerate() {
                if u64::from_le_bytes(*w) != owner {
                    continue;
                }
                let id_addr = handle + i as u64 * 8;
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
        None
    }

    /// `OwnedTasks` whose `id` is at `id_addr`: every shard, walked.
    fn walk_runtime(&self, owner: u64, id_addr: u64) -> Option<(OwnedList, Vec<LiveTask>)> {
        let l = &self.layout.lists;
        let lists_field = id_addr.checked_add_signed(l.sharded_lists_from_id)?;
        let lists = self.mem.u64(lists_field)?;
        let len = self.mem.u64(lists_field + 8)?;
        let mask = self
            .mem
            .u64(id_addr.checked_add_signed(l.sharded_mask_from_id)?)?;
        let count = self
            .mem
            .u64(id_addr.checked_add_signed(l.sharded_count_from_id)?);
        if !len.is_power_of_two() || len > 1 << 16 || mask != len - 1 || lists == 0 {
            return None;
        }
        if !lists.is_multiple_of(8) {
            return None;
        }
        let mut out = Vec::new();
        let mut incomplete = 0;
        for shard in 0..len {
            let base = lists + shard * l.shard_stride;
            match self.walk_stable(owner, base + l.shard_head, base + l.shard_tail) {
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
                shards: len,
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
        let (nodes, incomplete) = match self.walk_stable(owner, head, tail)? {
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
    /// while it changes under the walk. `None`: not a list of this owner's tasks;
    /// `Some(None)`: a list that never held still.
    fn walk_stable(&self, owner: u64, head_at: u64, tail_at: u64) -> Option<Option<Vec<Node>>> {
        let mut seen_valid = false;
        for _ in 0..WALK_ATTEMPTS {
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
        let mut out = Vec::new();
        let mut prev = 0u64;
        let mut node = head;
        while node != 0 {
            if out.len() >= MAX_LIST {
                return Walk::Changed;
            }
            let Some((n, owner_id, back)) = self.read_node(node) else {
                return if out.is_empty() {
                    Walk::Foreign
                } else {
                    Walk::Changed
                };
            };
            if owner_id != owner {
                return if out.is_empty() {
                    Walk::Foreign
                } else {
                    Walk::Changed
                };
            }
            if back != prev {
                return Walk::Changed;
            }
            prev = node;
            node = n.next;
            out.push(n);
        }
        if prev == tail {
            Walk::Done(out)
        } else {
            Walk::Changed
        }
    }

    /// One task of a list: its node, owner id and `prev` pointer; `None` unless its
    /// vtable is a known task vtable.
    fn read_node(&self, header: u64) -> Option<(Node, u64, u64)> {
        let mut h = [0u8; 32];
        self.mem.read(header, &mut h)?;
        let word =
            |at: u64| u64::from_le_bytes(h[at as usize..at as usize + 8].try_into().unwrap());
        let vtable = word(self.layout.header_vtable);
        let vt = self.vtables.get(&vtable)?;
        let l = &self.layout.lists;
        let trailer = header + vt.trailer_offset;
        let vals = self.mem.u64s(&[
            header + vt.id_offset,
            trailer + l.trailer_prev,
            trailer + l.trailer_next,
        ]);
        let (Some(id), Some(prev), Some(next)) = (vals[0], vals[1], vals[2]) else {
            return None;
        };
        Some((
            Node {
                header,
                id,
                vtable,
                state: word(self.layout.header_state),
                next,
            },
            word(self.layout.header_owner_id),
            prev,
        ))
    }

    /// Hash of the task's `Core` (scheduler, id, future) and of the first bytes behind
    /// each heap pointer in it: a future keeps much of its moving state behind pointers
    /// (a boxed `Sleep`'s deadline, a channel's indices), so a polled task almost always
    /// changes the hash, and a task nobody polls or wakes keeps it.
    fn digest(&self, t: &LiveTask, heap: &[(u64, u64)], buf: &mut Vec<u8>) -> Option<u64> {
        use std::hash::Hasher;
        /// Futures larger than this are hashed by their first part.
        const MAX_CORE: u64 = 16 << 10;
        /// Pointers followed per task, and words read behind each.
        const MAX_POINTERS: usize = 16;
        const WORDS_BEHIND: u64 = 8;
        let vt = self.vtables.get(&t.vtable)?;
        let len = vt
            .trailer_offset
            .checked_sub(vt.scheduler_offset)?
            .min(MAX_CORE);
        buf.resize(len as usize, 0);
        self.mem.read(t.header + vt.scheduler_offset, buf)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(buf);
        let in_heap = |p: u64| {
            let i = heap.partition_point(|&(start, _)| start <= p);
            i > 0 && p < heap[i - 1].1
        };
        let mut behind: Vec<u64> = Vec::new();
        for w in buf.as_chunks::<8>().0 {
            let p = u64::from_le_bytes(*w);
            // Not the task itself (the scheduler handle points elsewhere, harmless).
            if p % 8 == 0 && in_heap(p) && p != t.header && !behind.contains(&p) {
                behind.push(p);
                if behind.len() == MAX_POINTERS {
                    break;
                }
            }
        }
        let addrs: Vec<u64> = behind
            .iter()
            .flat_map(|&p| (0..WORDS_BEHIND).map(move |i| p + i * 8))
            .collect();
        for w in self.mem.u64s(&addrs) {
            h.write_u64(w.unwrap_or(0));
        }
        Some(h.finish())
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
