//! tokio 1.38 (LTS) and later, x86_64, without `tokio_unstable`.
//! Layouts read from DWARF of 1.38.2, 1.43.4, 1.47.5 and 1.54.1 builds
//! (`shared/notes/tokio-internals.md`); the names have been stable since 1.32.

use super::{Knowledge, Layout, StateBits, SymbolNames, Version};

pub static KNOWLEDGE: Knowledge = Knowledge {
    first: Version::new(1, 38, 0),
    newest_tested: Version::new(1, 54, 1),
    layout: Layout {
        // Header { state, queue_next, vtable, owner_id, .. }
        header_state: 0,
        header_vtable: 16,
        header_owner_id: 24,
        // Vtable { poll, schedule, dealloc, try_read_output, drop_join_handle_slow,
        //          drop_abort_handle, shutdown, trailer_offset, scheduler_offset, id_offset }
        vtable_id_offset: 72,
    },
    state: StateBits {
        running: 0x1,
        complete: 0x2,
        cancelled: 0x20,
    },
    symbols: SymbolNames {
        raw_poll: "tokio::runtime::task::raw::poll",
        raw_dealloc: "tokio::runtime::task::raw::dealloc",
        raw_shutdown: "tokio::runtime::task::raw::shutdown",
        harness_complete: "tokio::runtime::task::harness::Harness::complete",
        owned_bind_inner: "tokio::runtime::task::list::OwnedTasks::bind_inner",
        spawn_returns: &[
            "tokio::runtime::scheduler::multi_thread::handle::Handle::bind_new_task",
            "tokio::runtime::scheduler::current_thread::Handle::spawn",
        ],
        local_owned_bind: "tokio::runtime::task::list::LocalOwnedTasks::bind",
        blocking_spawn_task: "tokio::runtime::blocking::pool::Spawner::spawn_task",
        wake_by_val: "tokio::runtime::task::waker::wake_by_val",
        wake_by_ref: "tokio::runtime::task::waker::wake_by_ref",
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
            "tokio::task::join_set::JoinSet::spawn_blocking",
            "tokio::runtime::handle::Handle::spawn",
            "tokio::runtime::handle::Handle::spawn_blocking",
            "tokio::runtime::runtime::Runtime::spawn",
            "tokio::runtime::blocking::pool::spawn_blocking",
            "tokio::runtime::blocking::pool::Spawner::spawn_blocking",
            "tokio::runtime::blocking::pool::Spawner::spawn_blocking_inner",
            "tokio::runtime::scheduler::multi_thread::handle::Handle::bind_new_task",
            "tokio::runtime::scheduler::current_thread::Handle::spawn",
        ],
    },
};
