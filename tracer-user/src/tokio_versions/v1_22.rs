//! tokio 1.22, x86_64, without `tokio_unstable`: 1.23's lists, symbols and spawn paths,
//! but a task vtable with no `scheduler_offset` or `id_offset` (`Vtable { poll, dealloc,
//! try_read_output, try_set_join_waker, drop_join_handle_slow, drop_abort_handle,
//! remote_abort, shutdown, trailer_offset @64 }`) and `CONTEXT.current_task_id` first.
//! Read from DWARF of 1.22.0 builds (rustc 1.99).
//!
//! `Core { scheduler, stage, task_id }` is not `repr(C)`: for a future aligned to 8 it
//! is scheduler @32, stage, task_id last (at `trailer_offset - 8`); for one aligned to
//! A ≥ 16 (any task holding a `Sleep` inline: its timer entry is aligned to 128) stage
//! @A, task_id, scheduler, padding (the id at `trailer_offset - A`). So the id's place
//! follows the future's alignment, which neither the vtable nor the header says: the
//! task-list readings find it per vtable (`live::tasklist::core_guess`); the kernel
//! side reads no id, and tasks are known by their header until a reading names them.

use tracer_common::HeaderArg;

use super::{
    CoreAt, Degraded, Knowledge, Layout, Slot, Slots, SymbolNames, Version,
    base::{CONTEXT_TAGGED, LAYOUT, REFS, STATE},
    v1_23,
};

pub static KNOWLEDGE: Knowledge = Knowledge {
    first: Version::new(1, 22, 0),
    newest_tested: Version::new(1, 22, 0),
    layout: Layout {
        vtable_trailer_offset: 64,
        core: CoreAt::ByFuture { header_len: 32 },
        slots: Slots {
            task_functions: 8,
            dealloc: Slot {
                index: 1,
                label: "raw::dealloc (vtable slot 1)",
            },
            shutdown: Slot {
                index: 7,
                label: "raw::shutdown (vtable slot 7)",
            },
            waker_per_task: true,
            ..LAYOUT.slots
        },
        ..v1_23::KNOWLEDGE.layout
    },
    state: STATE,
    refs: REFS,
    symbols: SymbolNames {
        // `JoinHandle { raw, id }`: returned in `rax`:`rdx` by the scheduler spawn
        // functions (where `bind` is usually inlined), and through memory inside `bind`'s
        // `(JoinHandle, Option<Notified>)`. One spawn may be seen at both (`bind` out of
        // line): its id tells it is one.
        spawn_returns: &[
            (
                "tokio::runtime::scheduler::multi_thread::handle::Handle::bind_new_task",
                HeaderArg::RetPair,
            ),
            (
                "tokio::runtime::scheduler::current_thread::Handle::spawn",
                HeaderArg::RetPair,
            ),
            (
                "tokio::runtime::task::list::OwnedTasks::bind",
                HeaderArg::RetSlot,
            ),
        ],
        local_bind_return: HeaderArg::RetSlot,
        ..v1_23::SYMBOLS_BEFORE_1_30
    },
    // Context { handle: RefCell<Option<Handle>> .., current_task_id: Cell<Option<Id>> ..}
    // laid out with the id's option first.
    context: Some(super::ContextLayout {
        task_id: 0,
        ..CONTEXT_TAGGED
    }),
    degraded: &[IDS_DEGRADED, v1_23::LOCALSET_DEGRADED],
};

pub const IDS_DEGRADED: Degraded = Degraded {
    what: "task ids at spawn",
    why: "before tokio 1.23 a task's id sits where its future's alignment puts \
          it: the probes know a task by its header address, and its id comes \
          from its spawn function's return or from the first task-list reading \
          that lists it; where every spawn function was inlined (fat LTO), a task \
          too short to be listed has no id, so no spawn time or site",
};
