//! tokio 1.38 (LTS), x86_64, without `tokio_unstable`: the oldest supported range.
//! Layouts read from DWARF of a 1.38.2 build (`shared/notes/tokio-internals.md`); the
//! probe names have been stable since 1.32 and are shared with later versions.

use super::{
    ContextLayout, Knowledge, Layout, ListLayout, Version,
    base::{CONTEXT, LAYOUT, LISTS, REFS, STATE, SYMBOLS},
};

pub static KNOWLEDGE: Knowledge = Knowledge {
    first: Version::new(1, 38, 0),
    newest_tested: Version::new(1, 38, 2),
    layout: Layout {
        lists: ListLayout {
            // ShardedList { lists: Box<[Mutex<LinkedList>]>, count, shard_mask } @0x00,
            // then OwnedTasks.id @0x20.
            sharded_lists_from_id: -0x20,
            ..LISTS
        },
        ..LAYOUT
    },
    state: STATE,
    refs: REFS,
    symbols: SYMBOLS,
    // Context { current @0 (32 B), current_task_id: Option<Id(u64)> @32 (tag, id), .. }
    context: ContextLayout {
        task_id: 32,
        tagged: true,
        ..CONTEXT
    },
};
