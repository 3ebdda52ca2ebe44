//! tokio 1.39 and later, x86_64, without `tokio_unstable`. 1.39 added the `added` counter
//! to `ShardedList` (tokio PR #6624), moving `OwnedTasks.id` from 0x20 to 0x28; the rest
//! is 1.38's, except `Context.current_task_id` (now a niche `Option<NonZeroU64>`). Layouts read from DWARF of 1.43.4, 1.47.5 and 1.54.1 builds.

use super::{
    Knowledge, Version,
    v1_38::{CONTEXT, LAYOUT, REFS, STATE, SYMBOLS},
};

pub static KNOWLEDGE: Knowledge = Knowledge {
    first: Version::new(1, 39, 0),
    newest_tested: Version::new(1, 54, 1),
    layout: LAYOUT,
    state: STATE,
    refs: REFS,
    symbols: SYMBOLS,
    context: CONTEXT,
};
