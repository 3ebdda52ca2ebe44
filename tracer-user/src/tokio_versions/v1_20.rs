//! tokio 1.20 (an LTS line), x86_64, without `tokio_unstable`: 1.21's task, spawn paths
//! and context under the 1.20 module names (`thread_pool`, `basic_scheduler`), but a
//! 48-byte header that holds the list links itself (`Header { state, owned: Pointers
//! { prev @8, next @16 }, queue_next @24, vtable @32, owner_id @40 }`), a trailer of the
//! JoinHandle's waker only, and a vtable of the same eight functions with no
//! `trailer_offset`: the trailer's place is read from the code of `try_set_join_waker`
//! (slot 3), which passes its address on. `Core { scheduler, stage, task_id }` is laid
//! out as in 1.22 after the longer header. Read from DWARF of 1.20.6 builds (rustc 1.99).

use tracer_common::HeaderArg;

use super::{CoreAt, Knowledge, Layout, ListLayout, SymbolNames, Version, v1_21, v1_22};

pub static KNOWLEDGE: Knowledge = Knowledge {
    first: Version::new(1, 20, 0),
    newest_tested: Version::new(1, 20, 6),
    layout: Layout {
        header_state: 0,
        header_vtable: 32,
        header_owner_id: 40,
        trailer_in_code: Some(3),
        core: CoreAt::ByFuture { header_len: 48 },
        lists: ListLayout {
            trailer_prev: 8,
            trailer_next: 16,
            links_in_header: true,
            ..v1_22::KNOWLEDGE.layout.lists
        },
        ..v1_22::KNOWLEDGE.layout
    },
    state: v1_22::KNOWLEDGE.state,
    refs: v1_22::KNOWLEDGE.refs,
    symbols: SymbolNames {
        // `JoinHandle { raw, id }` in `rax`:`rdx`; the scheduler spawns are inlined at
        // -O3, `spawner::Spawner::spawn` stays out of line.
        spawn_returns: &[
            (
                "tokio::runtime::thread_pool::worker::Shared::bind_new_task",
                HeaderArg::RetPair,
            ),
            (
                "tokio::runtime::basic_scheduler::Spawner::spawn",
                HeaderArg::RetPair,
            ),
            (
                "tokio::runtime::spawner::Spawner::spawn",
                HeaderArg::RetPair,
            ),
            (
                "tokio::runtime::task::list::OwnedTasks::bind",
                HeaderArg::RetSlot,
            ),
        ],
        ..v1_21::KNOWLEDGE.symbols
    },
    context: None,
    degraded: v1_21::KNOWLEDGE.degraded,
};
