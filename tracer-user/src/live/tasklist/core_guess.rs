//! Before tokio 1.23 a task vtable does not say where the task's `Core.scheduler` and
//! `Core.task_id` are: `Core` is not `repr(C)`, so they sit where the future's alignment
//! puts them. This finds them in memory, once per task vtable, from the tasks a reading
//! lists: the scheduler is the `Arc` of the runtime handle that holds the task's own list
//! (the handle holds the list's id, every task's `owner_id`), and the id is the word next
//! to it whose values are distinct, non-zero task-id counter draws in every task read.

use super::{HashMap, HashSet, LiveTask, Reader, TaskVtable};
use crate::live::memory::ReadMemory;

/// Tasks of one vtable read to decide where its `Core` fields are.
const SAMPLE: usize = 16;
/// Task ids are draws of a counter that starts at 1: beyond this (a trillion spawns) a
/// word is a pointer or garbage, not an id; so is one inside the target's memory.
const MAX_ID: u64 = 1 << 40;
/// The largest future alignment tried (a `Sleep` held inline is aligned to 128).
const MAX_ALIGN: u64 = 4096;

/// (scheduler, id) offsets from the header where a `Core` may keep them, for a task
/// whose header is `header_len` bytes and whose trailer is at `trailer`: what rustc lays
/// out first (DWARF of 1.22 builds), then the other orders of the three fields.
pub(super) fn candidates(header_len: u64, trailer: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut push = |s: u64, i: u64| {
        if s >= header_len
            && i >= header_len
            && s + 8 <= trailer
            && i + 8 <= trailer
            && !out.contains(&(s, i))
        {
            out.push((s, i));
        }
    };
    if trailer >= header_len + 16 {
        // Aligned to 8: scheduler first, the future, the id last.
        push(header_len, trailer - 8);
    }
    // Aligned to A ≥ 16: the future at A, then the id and the scheduler, padded to A.
    let mut a = 16;
    while a <= MAX_ALIGN {
        if trailer >= header_len.next_multiple_of(a) + a {
            push(trailer - a + 8, trailer - a);
        }
        a *= 2;
    }
    // The other orders, aligned to 8.
    if trailer >= header_len + 16 {
        push(header_len, header_len + 8);
        push(header_len + 8, header_len);
        push(trailer - 16, trailer - 8);
        push(trailer - 8, trailer - 16);
        push(trailer - 8, header_len);
    }
    out
}

impl<M: ReadMemory> Reader<'_, M> {
    /// Where a task of this vtable keeps its `Core` and its scheduler `Arc`: the vtable
    /// says, or (before 1.23) what `learn_cores` found; `None`: not known (yet).
    pub(super) fn core_of(&self, vt: &TaskVtable) -> Option<(u64, u64)> {
        match self.by_future {
            None => Some((vt.scheduler_offset, vt.scheduler_offset)),
            Some(header_len) => {
                let &(s, _) = self.learned.borrow().get(&vt.vaddr)?;
                Some((header_len, s))
            }
        }
    }

    /// Learns the `Core` offsets of every vtable of `tasks` not known yet, then sets each
    /// task's id from them (0 where its vtable's could not be told).
    pub(super) fn learn_cores(&self, tasks: &mut [LiveTask], warnings: &mut Vec<String>) {
        let Some(header_len) = self.by_future else {
            return;
        };
        let mut learned = self.learned.borrow_mut();
        let mut by_vtable: HashMap<u64, Vec<usize>> = HashMap::new();
        for (k, t) in tasks.iter().enumerate() {
            if !learned.contains_key(&t.vtable) {
                let v = by_vtable.entry(t.vtable).or_default();
                if v.len() < SAMPLE {
                    v.push(k);
                }
            }
        }
        if by_vtable.is_empty() {
            return self.set_ids(tasks, &learned);
        }
        let regions = self.mem.writable_regions().unwrap_or_default();
        let pointer = |w: u64| regions.iter().any(|r| (r.start..r.end).contains(&w));
        // Scheduler pointers already checked against their owner's handle.
        let mut checked: HashMap<(u64, u64), bool> = HashMap::new();
        let mut vtables: Vec<u64> = by_vtable.keys().copied().collect();
        vtables.sort_unstable();
        for vtable in vtables {
            let Some(vt) = self.vtables.get(&vtable) else {
                continue;
            };
            let sample = &by_vtable[&vtable];
            // The `Core`'s first two words and its last `MAX_ALIGN` bytes: where every
            // candidate lies, however large the future.
            let trailer = vt.trailer_offset;
            let head = (header_len + 16).min(trailer);
            let tail = trailer.min(MAX_ALIGN);
            let spans: Vec<(u64, usize)> = sample
                .iter()
                .flat_map(|&k| {
                    let h = tasks[k].header;
                    [(h, head as usize), (h + trailer - tail, tail as usize)]
                })
                .collect();
            let read = self.mem.read_spans(&spans);
            let cells: Vec<(&[u8], &[u8], u64)> = sample
                .iter()
                .enumerate()
                .filter_map(|(j, &k)| {
                    Some((read.get(2 * j)?, read.get(2 * j + 1)?, tasks[k].owner_id))
                })
                .collect();
            if cells.is_empty() {
                continue;
            }
            let word = |(h, t): (&[u8], &[u8]), at: u64| {
                let (b, at) = if at + 8 <= head {
                    (h, at)
                } else {
                    (t, at + tail - trailer)
                };
                u64::from_le_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
            };
            let found = candidates(header_len, trailer).into_iter().find(|&(s, i)| {
                let mut ids = HashSet::new();
                cells.iter().all(|&(h, t, owner)| {
                    let id = word((h, t), i);
                    let arc = word((h, t), s);
                    (1..MAX_ID).contains(&id)
                        && !pointer(id)
                        && ids.insert(id)
                        && *checked.entry((arc, owner)).or_insert_with(|| {
                            arc.is_multiple_of(8) && !self.list_ids_behind(arc, owner).is_empty()
                        })
                })
            });
            match found {
                Some(at) => {
                    learned.insert(vtable, at);
                }
                None if self.unlearned.borrow_mut().insert(vtable) => warnings.push(format!(
                    "tasks of vtable {vtable:#x}: their id and scheduler are not where \
                     tokio {} puts them; they are known by address only",
                    self.knowledge.first
                )),
                None => {}
            }
        }
        self.set_ids(tasks, &learned);
    }

    /// Each task's id, where `learned` says it is (0 elsewhere).
    fn set_ids(&self, tasks: &mut [LiveTask], learned: &HashMap<u64, (u64, u64)>) {
        let at: Vec<u64> = tasks
            .iter()
            .map(|t| learned.get(&t.vtable).map_or(0, |&(_, i)| t.header + i))
            .collect();
        for (t, id) in tasks.iter_mut().zip(self.mem.u64s(&at)) {
            t.id = id.filter(|_| learned.contains_key(&t.vtable)).unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::candidates;

    #[test]
    fn the_orders_rustc_chooses_come_first() {
        // An 8-aligned future of 40 bytes: Core at 32 (scheduler, future, id), trailer at 88.
        assert_eq!(candidates(32, 88)[0], (32, 80));
        // Aligned to 128 (a `Sleep` inline): the future at 128, the id and the scheduler
        // after it, padded to 128: trailer at 128 + 256 + 128.
        let c = candidates(32, 512);
        assert!(c.contains(&(512 - 128 + 8, 512 - 128)), "{c:?}");
        assert!(
            c.iter()
                .all(|&(s, i)| s >= 32 && i >= 32 && s < 512 && i < 512)
        );
        // A trailer too close for any `Core`: nothing.
        assert!(candidates(32, 40).is_empty());
    }
}
