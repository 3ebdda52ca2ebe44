//! tokio 1.29, x86_64, without `tokio_unstable`: 1.29 counted the owned-task list
//! (`CountedOwnedTasksInner`), with `OwnedTasks.id` still after it; everything else is
//! 1.23's. Layouts read from DWARF of a 1.29.1 build.

use super::{
    Knowledge, Layout, ListLayout, RuntimeList, Version,
    base::{CONTEXT_TAGGED, LAYOUT, REFS, STATE},
    v1_23::{LISTS_BEFORE_1_30, SYMBOLS_BEFORE_1_30},
};

pub static KNOWLEDGE: Knowledge = Knowledge {
    first: Version::new(1, 29, 0),
    newest_tested: Version::new(1, 29, 1),
    layout: Layout {
        lists: ListLayout {
            // OwnedTasks { inner: Mutex<CountedOwnedTasksInner> @0x00, id @0x28 }.
            runtime: RuntimeList::Single {
                head_from_id: -0x20,
                tail_from_id: -0x18,
                count_from_id: Some(-0x10),
            },
            ..LISTS_BEFORE_1_30
        },
        ..LAYOUT
    },
    state: STATE,
    refs: REFS,
    symbols: SYMBOLS_BEFORE_1_30,
    context: Some(CONTEXT_TAGGED),
    degraded: &[],
};
