//! tokio 1.30 to 1.34, x86_64, without `tokio_unstable`: one owned-task list per runtime,
//! counted. 1.30 moved `OwnedTasks.id` and `LocalOwnedTasks.id` first (a `NonZeroU64`
//! now) and split out `OwnedTasks::bind_inner`. Layouts read from DWARF of 1.30.0,
//! 1.31.0, 1.32.1, 1.33.0 and 1.34.0 builds.

use super::{
    Knowledge, Layout, ListLayout, RuntimeList, Version,
    base::{CONTEXT_TAGGED, LAYOUT, LISTS, REFS, STATE, SYMBOLS},
};

pub static KNOWLEDGE: Knowledge = Knowledge {
    first: Version::new(1, 30, 0),
    newest_tested: Version::new(1, 34, 0),
    layout: Layout {
        lists: ListLayout {
            // OwnedTasks { id @0x00, inner: Mutex<CountedOwnedTasksInner> @0x08 }; the
            // mutex's data at +8: CountedLinkedList { list { head, tail }, count }.
            runtime: RuntimeList::Single {
                head_from_id: 0x10,
                tail_from_id: 0x18,
                count_from_id: Some(0x20),
            },
            ..LISTS
        },
        ..LAYOUT
    },
    state: STATE,
    refs: REFS,
    symbols: SYMBOLS,
    context: Some(CONTEXT_TAGGED),
    degraded: &[],
};
