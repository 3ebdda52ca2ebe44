//! tokio 1.39 and later, x86_64, without `tokio_unstable`. 1.39 added the `added` counter
//! to `ShardedList` (tokio PR #6624), moving `OwnedTasks.id` from 0x20 to 0x28; the rest
//! is 1.38's, except the task id, now a `NonZeroU64`: `Context.current_task_id` is a niche
//! `Option`, and `Id::next` draws again when the counter yields zero. Layouts read from DWARF of 1.43.4, 1.47.5 and 1.54.1 builds.

use super::{
    Knowledge, SymbolNames, Version,
    base::{CONTEXT, LAYOUT, REFS, STATE, SYMBOLS},
};

pub static KNOWLEDGE: Knowledge = Knowledge {
    first: Version::new(1, 39, 0),
    newest_tested: Version::new(1, 54, 1),
    layout: LAYOUT,
    state: STATE,
    refs: REFS,
    symbols: SymbolNames {
        id_draw_retries: true,
        ..SYMBOLS
    },
    context: Some(CONTEXT),
    degraded: &[],
};
