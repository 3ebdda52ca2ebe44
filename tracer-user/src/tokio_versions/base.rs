//! The common base every version file starts from (each overrides what its range
//! changed): the header and vtable layout, the owned-task lists, the state and reference
//! bits, the probed symbol names, `CONTEXT`; and what does not vary at all: how tokio's
//! own symbols and sources are named, its spawn functions generic over the future.

use tracer_common::HeaderArg;

use super::{
    ContextLayout, CoreAt, Layout, ListLayout, RefBits, RuntimeList, ShardedLayout, Slot, Slots,
    StateBits, SymbolNames,
};

/// A demangled symbol of tokio's own (`tokio::…`, or an impl of one of its types).
pub fn is_tokio_symbol(name: &str) -> bool {
    name.starts_with("tokio::") || name.starts_with("<tokio::")
}

/// A frame of tokio's task poll path (`raw::poll`, the harness, `Core::poll`): a stack
/// unwound from inside a task's poll reaches the task's own frames just before it.
pub fn is_task_poll_frame(name: &str) -> bool {
    let name = name.strip_prefix('<').unwrap_or(name);
    [
        "tokio::runtime::task::raw::poll",
        "tokio::runtime::task::harness::",
        "tokio::runtime::task::core::Core",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// A source path inside tokio (its crates.io registry path, which `#[track_caller]`
/// Locations and panic messages keep).
pub fn is_tokio_source(path: &str) -> bool {
    path.contains("/tokio-1.")
}

/// A symbol fragment that only a build keeping tokio's `State` methods out of line has
/// (`State::transition_to_running`): without it, small tokio functions were inlined (LTO).
pub const STATE_METHOD_MARKER: &str = "transition_to_running";

/// Part of the name of every task function instantiated for `spawn_blocking`'s scheduler
/// (`BlockingSchedule`): those tasks end with their one poll.
pub const BLOCKING_SCHEDULER_MARKER: &str = "BlockingSchedule";

/// DWARF names of a task's cell type (`Cell<T, S>`, qualified) and of the task poll
/// function (`poll<T, S>`, the vtable's first slot), the same in every supported
/// version: the await-chain reader joins them by their generic arguments.
pub const TASK_CELL_TYPE: &str = "tokio::runtime::task::core::Cell<";
pub const TASK_POLL_FUNCTION: &str = "poll<";

/// What a leaf future holds about what it waits for, found by member name in its DWARF
/// type: a `JoinHandle`'s awaited task (its `raw` task pointer: the header), a `Sleep`'s
/// deadline.
pub const LEAF_FACTS: &[LeafFact] = &[
    LeafFact {
        type_prefix: "tokio::runtime::task::join::JoinHandle<",
        member: "raw",
        kind: LeafFactKind::TaskHeader,
    },
    LeafFact {
        type_prefix: "tokio::time::sleep::Sleep",
        member: "deadline",
        kind: LeafFactKind::Deadline,
    },
];

/// A fact a leaf future's type holds at a named member.
#[derive(Clone, Copy, Debug)]
pub struct LeafFact {
    pub type_prefix: &'static str,
    pub member: &'static str,
    pub kind: LeafFactKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafFactKind {
    /// A pointer to a task's header.
    TaskHeader,
    /// A `std::time::Instant` (CLOCK_MONOTONIC seconds and nanoseconds).
    Deadline,
}

/// Spawn functions generic over the future, whose instances are matched by future type
/// (the plan probes the inner one only for futures the outer one is not instantiated for).
pub const SPAWN_PATHS: [&str; 3] = [
    "tokio::task::spawn::spawn",
    "tokio::task::spawn::spawn_inner",
    "tokio::runtime::scheduler::multi_thread::handle::Handle::bind_new_task",
];

/// Header and vtable, identical from 1.38 to 1.54.
pub const LAYOUT: Layout = Layout {
    // Header { state, queue_next, vtable, owner_id, .. }
    header_state: 0,
    header_vtable: 16,
    header_owner_id: 24,
    // Vtable { poll, schedule, dealloc, try_read_output, drop_join_handle_slow,
    //          drop_abort_handle, shutdown, trailer_offset, scheduler_offset, id_offset }
    vtable_trailer_offset: 56,
    trailer_in_code: None,
    core: CoreAt::Vtable {
        scheduler_offset: 64,
        id_offset: 72,
    },
    slots: Slots {
        task_functions: 7,
        poll: Slot {
            index: 0,
            label: "raw::poll (vtable slot 0)",
        },
        dealloc: Slot {
            index: 2,
            label: "raw::dealloc (vtable slot 2)",
        },
        shutdown: Slot {
            index: 6,
            label: "raw::shutdown (vtable slot 6)",
        },
        // RawWakerVTable { clone, wake, wake_by_ref, drop }
        waker_functions: 4,
        waker_clone: Slot {
            index: 0,
            label: "waker::clone_waker (waker vtable slot 0)",
        },
        waker_per_task: false,
        wake_by_val: Slot {
            index: 1,
            label: "waker::wake_by_val (waker vtable slot 1)",
        },
        wake_by_ref: Slot {
            index: 2,
            label: "waker::wake_by_ref (waker vtable slot 2)",
        },
    },
    lists: LISTS,
};

/// Owned-task lists as 1.39+ lay them out; 1.38 differs in `lists_from_id` only.
pub const LISTS: ListLayout = ListLayout {
    // Trailer { owned: Pointers { prev, next }, waker, .. }
    trailer_prev: 0,
    trailer_next: 8,
    links_in_header: false,
    arc_data: 16,
    handle_search: 4096,
    runtime: RuntimeList::Sharded(SHARDED),
    // LocalOwnedTasks { id @0x00, inner: OwnedTasksInner { list { head, tail }, closed } @0x08 }
    local_head_from_id: 0x08,
    local_tail_from_id: 0x10,
};

/// 1.39+: ShardedList { lists @0x00, added @0x10, count @0x18, shard_mask @0x20 }, id @0x28.
pub const SHARDED: ShardedLayout = ShardedLayout {
    lists_from_id: -0x28,
    mask_from_id: -0x08,
    count_from_id: -0x10,
    // Mutex<LinkedList> { futex: u32, poison: bool, data: LinkedList { head, tail } }
    shard_stride: 0x18,
    shard_head: 0x08,
    shard_tail: 0x10,
};

pub const STATE: StateBits = StateBits {
    running: 0x1,
    complete: 0x2,
    cancelled: 0x20,
};

/// `runtime/task/state.rs`: NOTIFIED 0x4, JOIN_INTEREST 0x8, REF_ONE 0x40. A task holds
/// one reference for its owned list, one per JoinHandle/AbortHandle, one per Waker and one
/// per queued notification (`Notified`); an idle task not notified and not running holds
/// exactly the list's when nothing else can reach it.
pub const REFS: RefBits = RefBits {
    notified: 0x4,
    join_interest: 0x8,
    ref_shift: 6,
    list_refs: 1,
};

pub const SYMBOLS: SymbolNames = SymbolNames {
    raw_poll: "tokio::runtime::task::raw::poll",
    raw_dealloc: "tokio::runtime::task::raw::dealloc",
    raw_shutdown: "tokio::runtime::task::raw::shutdown",
    harness_complete: "tokio::runtime::task::harness::Harness::complete",
    owned_bind_inner: "tokio::runtime::task::list::OwnedTasks::bind_inner",
    // `JoinHandle { raw }`, and `(JoinHandle, Option<Notified>)`: the header in `rax`.
    spawn_returns: &[
        (
            "tokio::runtime::scheduler::multi_thread::handle::Handle::bind_new_task",
            HeaderArg::Ret,
        ),
        (
            "tokio::runtime::scheduler::current_thread::Handle::spawn",
            HeaderArg::Ret,
        ),
    ],
    local_owned_bind: "tokio::runtime::task::list::LocalOwnedTasks::bind",
    local_bind_return: HeaderArg::Ret,
    blocking_spawn_task: "tokio::runtime::blocking::pool::Spawner::spawn_task",
    wake_by_val: "tokio::runtime::task::waker::wake_by_val",
    wake_by_ref: "tokio::runtime::task::waker::wake_by_ref",
    clone_waker: "tokio::runtime::task::waker::clone_waker",
    parks: &[
        &[
            &["tokio::runtime::scheduler::multi_thread::worker::Context::park_timeout"],
            &[
                "tokio::runtime::scheduler::multi_thread::park::Parker::park",
                "tokio::runtime::scheduler::multi_thread::park::Parker::park_timeout",
            ],
        ],
        &[
            &["tokio::runtime::scheduler::current_thread::Context::park_internal"],
            &[
                "tokio::runtime::scheduler::current_thread::Context::park",
                "tokio::runtime::scheduler::current_thread::Context::park_yield",
            ],
        ],
    ],
    id_counters: &["tokio::runtime::task::id::Id::next::NEXT_ID"],
    // `Id(u64)`: a plain `fetch_add`, no retry loop (so no shape to find it by).
    id_draw_retries: false,
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
};

/// 1.39+: `current_task_id: Option<Id(NonZeroU64)>` at 48 (DWARF of 1.43.4, 1.47.5, 1.54.1).
pub const CONTEXT: ContextLayout = ContextLayout {
    symbol: "tokio::runtime::context::CONTEXT::",
    task_id: 48,
    tagged: false,
};

/// Before 1.39: `current_task_id: Option<Id(u64)>` at 32, a tag word then the id (DWARF
/// of 1.25.3, 1.28.2, 1.32.1, 1.36.0, 1.38.2; read live from a 1.28.2 worker too).
pub const CONTEXT_TAGGED: ContextLayout = ContextLayout {
    task_id: 32,
    tagged: true,
    ..CONTEXT
};
