//! tokio 1.35 to 1.38 (1.38 is an LTS line), x86_64, without `tokio_unstable`. 1.35 split
//! `OwnedTasks` into a `ShardedList` (tokio PR #6102). Layouts read from DWARF of 1.35.1,
//! 1.36.0, 1.37.0 and 1.38.2 builds (`shared/notes/tokio-internals.md`).

use super::{
    Knowledge, Layout, ListLayout, RuntimeList, ShardedLayout, Version,
    base::{CONTEXT_TAGGED, LAYOUT, LISTS, REFS, SHARDED, STATE, SYMBOLS},
};

pub static KNOWLEDGE: Knowledge = Knowledge {
    first: Version::new(1, 35, 0),
    newest_tested: Version::new(1, 38, 2),
    layout: Layout {
        lists: ListLayout {
            // ShardedList { lists: Box<[Mutex<LinkedList>]>, count, shard_mask } @0x00,
            // then OwnedTasks.id @0x20.
            runtime: RuntimeList::Sharded(ShardedLayout {
                lists_from_id: -0x20,
                ..SHARDED
            }),
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
