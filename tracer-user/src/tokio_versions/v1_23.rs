//! tokio 1.23 to 1.28 (1.25 was an LTS line), x86_64, without `tokio_unstable`: one
//! uncounted owned-task list per runtime, `id` after it; no `OwnedTasks::bind_inner`
//! (`bind` builds the task and returns its JoinHandle, the header, so the spawn is taken
//! at its return). Layouts read from DWARF of 1.23.1, 1.24.2, 1.25.3, 1.26.0, 1.27.0 and
//! 1.28.2 builds (1.22's vtable lacks the `Core` offsets: `v1_22`).

use tracer_common::HeaderArg;

use super::{
    Degraded, Knowledge, Layout, ListLayout, RuntimeList, SymbolNames, Version,
    base::{CONTEXT_TAGGED, LAYOUT, LISTS, REFS, STATE, SYMBOLS},
};

/// `LocalOwnedTasks { inner: OwnedTasksInner { list { head, tail }, closed } @0x00,
/// id @0x18 }`, before 1.30 moved the id first.
pub const LISTS_BEFORE_1_30: ListLayout = ListLayout {
    local_head_from_id: -0x18,
    local_tail_from_id: -0x10,
    ..LISTS
};

/// No `OwnedTasks::bind_inner` (kept in the name so the plan looks for it, finds none and
/// takes the spawn at `bind`'s return instead).
pub const SYMBOLS_BEFORE_1_30: SymbolNames = SymbolNames {
    spawn_returns: &[(
        "tokio::runtime::task::list::OwnedTasks::bind",
        HeaderArg::Ret,
    )],
    // 1.24 moved `Id` into `task::id`.
    id_counters: &[
        "tokio::runtime::task::id::Id::next::NEXT_ID",
        "tokio::runtime::task::Id::next::NEXT_ID",
    ],
    ..SYMBOLS
};

pub static KNOWLEDGE: Knowledge = Knowledge {
    first: Version::new(1, 23, 0),
    newest_tested: Version::new(1, 28, 2),
    layout: Layout {
        lists: ListLayout {
            // OwnedTasks { inner: Mutex<OwnedTasksInner> @0x00, id @0x20 }; the mutex's
            // data at +8: OwnedTasksInner { list { head, tail }, closed }.
            runtime: RuntimeList::Single {
                head_from_id: -0x18,
                tail_from_id: -0x10,
                count_from_id: None,
            },
            ..LISTS_BEFORE_1_30
        },
        ..LAYOUT
    },
    state: STATE,
    refs: REFS,
    symbols: SYMBOLS_BEFORE_1_30,
    context: Some(CONTEXT_TAGGED),
    degraded: &[LOCALSET_DEGRADED],
};

pub const LOCALSET_DEGRADED: Degraded = Degraded {
    what: "LocalSet tasks alive before attach",
    why: "before tokio 1.29 a LocalSet's task list is laid out as a runtime's: the \
          readings cannot tell them apart, so LocalSet tasks spawned before attach are \
          reported as async tasks (those spawned while traced are told apart)",
};
