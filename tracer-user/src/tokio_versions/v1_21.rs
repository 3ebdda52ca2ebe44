//! tokio 1.21, x86_64, without `tokio_unstable`: 1.22's task cell, vtable, lists and
//! state (read from DWARF of a 1.21.2 build: the same `Header`, `Core { scheduler, stage,
//! task_id }`, `Trailer { owned, waker }` and `Vtable { .., trailer_offset @64 }`), but the
//! scheduler types before 1.22 renamed them (`worker::Shared`, `current_thread::Spawner`,
//! `blocking::pool::Spawner::spawn`) and a thread context that is only the current
//! runtime handle (`CONTEXT: RefCell<Option<Handle>>`): no current task id, so no thread
//! sampler, and a blocking poll in sample and lifecycle mode is seen by the task-list
//! readings alone.

use tracer_common::HeaderArg;

use super::{Knowledge, SymbolNames, Version, v1_22};

pub static KNOWLEDGE: Knowledge = Knowledge {
    first: Version::new(1, 21, 0),
    newest_tested: Version::new(1, 21, 2),
    layout: v1_22::KNOWLEDGE.layout,
    state: v1_22::KNOWLEDGE.state,
    refs: v1_22::KNOWLEDGE.refs,
    symbols: SymbolNames {
        // `JoinHandle { raw, id }` in `rax`:`rdx`, as in 1.22, from the spawn functions
        // of the schedulers' older names.
        spawn_returns: &[
            (
                "tokio::runtime::scheduler::multi_thread::worker::Shared::bind_new_task",
                HeaderArg::RetPair,
            ),
            (
                "tokio::runtime::scheduler::current_thread::Spawner::spawn",
                HeaderArg::RetPair,
            ),
            (
                "tokio::runtime::task::list::OwnedTasks::bind",
                HeaderArg::RetSlot,
            ),
        ],
        // `Spawner::spawn(&self, task: Task, rt)`: 1.22's `spawn_task`.
        blocking_spawn_task: "tokio::runtime::blocking::pool::Spawner::spawn",
        spawn_calls: &[
            "tokio::task::spawn::spawn",
            "tokio::task::spawn::spawn_inner",
            "tokio::task::blocking::spawn_blocking",
            "tokio::task::local::spawn_local",
            "tokio::task::local::spawn_local_inner",
            "tokio::task::local::LocalSet::spawn_local",
            "tokio::task::join_set::JoinSet::spawn",
            "tokio::task::join_set::JoinSet::spawn_on",
            "tokio::task::join_set::JoinSet::spawn_local",
            "tokio::runtime::handle::Handle::spawn",
            "tokio::runtime::handle::Handle::spawn_named",
            "tokio::runtime::handle::Handle::spawn_blocking",
            "tokio::runtime::handle::HandleInner::spawn_blocking",
            "tokio::runtime::handle::HandleInner::spawn_blocking_inner",
            "tokio::runtime::Runtime::spawn",
            "tokio::runtime::Runtime::spawn_blocking",
            "tokio::runtime::blocking::pool::spawn_blocking",
        ],
        ..v1_22::KNOWLEDGE.symbols
    },
    // No current task id to sample: `inspect` says so, and a report in sample or
    // lifecycle mode lists "blocking polls" as seen by the readings only.
    context: None,
    degraded: &[v1_22::IDS_DEGRADED, super::v1_23::LOCALSET_DEGRADED],
};
