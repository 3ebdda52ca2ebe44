//! The thread sampler: which task each target thread is polling right now, read from
//! tokio's per-thread `CONTEXT.current_task_id` through the thread's TLS pointer (which
//! the kernel side records per thread). Read-only `process_vm_readv`: the target is never
//! stopped. It is what lets a poll cost one probe hit (the poll's end is inferred) and
//! what finds blocking polls in lifecycle mode.

use crate::{live::memory::Memory, plan::CurrentTask};

pub struct Sampler {
    pid: u32,
    mem: Memory,
    at: CurrentTask,
}

impl Sampler {
    pub fn new(pid: u32, at: CurrentTask) -> Self {
        Self {
            pid,
            mem: Memory::new(pid),
            at,
        }
    }

    /// Whether the target has a thread that `threads` does not hold.
    pub fn unknown_threads(&self, threads: &[(u32, u64)]) -> bool {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return false;
        };
        let known: std::collections::HashSet<u32> = threads.iter().map(|&(t, _)| t).collect();
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .any(|tid| !known.contains(&tid))
    }

    /// For each live thread of `threads` (tid, TLS pointer): the id of the task it polls,
    /// `None` between polls. Threads that exited, or whose word cannot be read, are left
    /// out: nothing is said of them.
    pub fn sample(&self, threads: &[(u32, u64)]) -> Vec<(u32, Option<u64>)> {
        let live: Vec<(u32, u64)> = threads
            .iter()
            .copied()
            .filter(|&(tid, fsbase)| {
                fsbase != 0
                    && std::path::Path::new(&format!("/proc/{}/task/{tid}", self.pid)).exists()
            })
            .collect();
        let word = |fsbase: u64| fsbase.wrapping_add_signed(self.at.fsbase_offset);
        let mut addrs: Vec<u64> = live.iter().map(|&(_, fs)| word(fs)).collect();
        if self.at.tagged {
            // `Option<Id(u64)>`: a tag word, then the id.
            addrs = addrs.iter().flat_map(|&a| [a, a + 8]).collect();
        }
        let words = self.mem.u64s(&addrs);
        let per = if self.at.tagged { 2 } else { 1 };
        live.iter()
            .zip(words.chunks(per))
            .filter_map(|(&(tid, _), w)| {
                let current = if self.at.tagged {
                    match (w[0]?, w[1]?) {
                        (0, _) => None,
                        (_, id) => Some(id),
                    }
                } else {
                    Some(w[0]?).filter(|&id| id != 0)
                };
                Some((tid, current))
            })
            .collect()
    }
}
