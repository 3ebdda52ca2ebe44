//! Everything tasktrace knows about tokio's internals, by version: symbol names of the
//! probe sites, task header and vtable offsets, state-word bits. One file per supported
//! version range (as py-spy keeps one bindings file per CPython version); nothing outside
//! this module hard-codes a tokio offset or name.

mod base;
pub mod shapes;
mod v1_20;
mod v1_21;
mod v1_22;
mod v1_23;
mod v1_29;
mod v1_30;
mod v1_35;
mod v1_39;

pub use base::{
    BLOCKING_SCHEDULER_MARKER, LEAF_FACTS, LeafFact, LeafFactKind, SPAWN_PATHS,
    STATE_METHOD_MARKER, TASK_CELL_TYPE, TASK_POLL_FUNCTION, is_task_poll_frame, is_tokio_source,
    is_tokio_symbol,
};

use std::fmt;

use tracer_common::HeaderArg;

/// A tokio release, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `1.54.1` (anything after the patch number is ignored).
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.splitn(3, '.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        let patch_str = it.next()?;
        let digits: String = patch_str
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        Some(Self::new(major, minor, digits.parse().ok()?))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What a task's state word says it is doing (`StateBits`, `RefBits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Idle,
    Notified,
    Running,
    Complete,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Notified => "notified",
            Status::Running => "running",
            Status::Complete => "complete",
        }
    }
}

/// The two kinds of list a runtime keeps its tasks in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    /// `OwnedTasks` of a multi-thread or current-thread runtime.
    #[default]
    Runtime,
    /// `LocalOwnedTasks` of a `LocalSet`.
    LocalSet,
}

/// Byte offsets inside a task `Header` and its vtable (x86_64, no `tokio_unstable`).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub header_state: u64,
    pub header_vtable: u64,
    pub header_owner_id: u64,
    /// Offset, inside the task vtable, of its `trailer_offset` field.
    pub vtable_trailer_offset: u64,
    /// Before 1.21 the vtable has no `trailer_offset` field: the function in this slot
    /// (`try_set_join_waker`) hands the trailer's address on (`lea rsi, [rdi + trailer]`),
    /// and the code says where it is (`vtable_trailer_offset` is then unused).
    pub trailer_in_code: Option<u64>,
    /// Where a task's `Core.scheduler` and `Core.task_id` are.
    pub core: CoreAt,
    /// The vtable functions tasktrace probes.
    pub slots: Slots,
    /// Where a runtime keeps the list of its tasks.
    pub lists: ListLayout,
}

/// Where a task's `Core.scheduler` and `Core.task_id` sit.
#[derive(Clone, Copy, Debug)]
pub enum CoreAt {
    /// 1.23+: the vtable says, in its `scheduler_offset` and `id_offset` fields at these
    /// offsets inside it.
    Vtable {
        scheduler_offset: u64,
        id_offset: u64,
    },
    /// Before 1.23: where the future's alignment puts them (`Core` is not `repr(C)`),
    /// which neither the vtable nor the header says: found in memory, once per task
    /// vtable, by the task-list readings (`live::tasklist::core_guess`). The header is
    /// `header_len` bytes; the `Core` follows it.
    ByFuture { header_len: u64 },
}

impl Layout {
    /// The vtable's id-offset field, if it has one.
    pub fn vtable_id_offset(&self) -> Option<u64> {
        match self.core {
            CoreAt::Vtable { id_offset, .. } => Some(id_offset),
            CoreAt::ByFuture { .. } => None,
        }
    }

    /// Bytes of a task vtable: its function pointers and offset fields.
    pub fn vtable_len(&self) -> u64 {
        match (self.core, self.trailer_in_code) {
            (CoreAt::Vtable { id_offset, .. }, _) => id_offset + 8,
            (CoreAt::ByFuture { .. }, Some(_)) => 8 * self.slots.task_functions,
            (CoreAt::ByFuture { .. }, None) => self.vtable_trailer_offset + 8,
        }
    }
}

/// A function of a vtable, by slot (8-byte word from the vtable's start), and the name
/// the plan gives its probe sites.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub index: u64,
    pub label: &'static str,
}

/// The task vtable (`raw::Vtable`: poll, schedule, dealloc, try_read_output,
/// drop_join_handle_slow, drop_abort_handle, shutdown, then its offsets) and tokio's task
/// waker vtable (a `RawWakerVTable`), as tasktrace probes them.
#[derive(Clone, Copy, Debug)]
pub struct Slots {
    /// Function pointers before the task vtable's offsets.
    pub task_functions: u64,
    pub poll: Slot,
    pub dealloc: Slot,
    pub shutdown: Slot,
    /// Function pointers of the waker vtable, and the clone function's slot.
    pub waker_functions: u64,
    pub waker_clone: Slot,
    /// One waker vtable per task type (before 1.23 its functions are generic), not one.
    pub waker_per_task: bool,
    pub wake_by_val: Slot,
    pub wake_by_ref: Slot,
}

/// The owned-task lists, read from the target's memory to find tasks alive before attach.
/// A task's `Core.scheduler` (at the vtable's `scheduler_offset`) is an `Arc` of the
/// scheduler handle; the handle holds the list, found by its `id` (= every task's
/// `owner_id`) and validated by walking it.
#[derive(Clone, Copy, Debug)]
pub struct ListLayout {
    /// `Trailer.owned`: the task's `{prev, next}` pointers in its list, from the trailer
    /// (or from the header, with `links_in_header`).
    pub trailer_prev: u64,
    pub trailer_next: u64,
    /// Before 1.21 the links are `Header.owned`: offsets from the header.
    pub links_in_header: bool,
    /// Offset of the value inside an `ArcInner` (after the strong and weak counts).
    pub arc_data: u64,
    /// How many bytes of the scheduler handle to search for the list's `id`.
    pub handle_search: u64,
    /// `OwnedTasks` of multi-thread and current-thread runtimes.
    pub runtime: RuntimeList,
    /// `LocalOwnedTasks` (LocalSet), relative to its `id`: `LinkedList.head`, `.tail`.
    pub local_head_from_id: i64,
    pub local_tail_from_id: i64,
}

/// How `OwnedTasks` holds its tasks, offsets relative to its `id`.
#[derive(Clone, Copy, Debug)]
pub enum RuntimeList {
    /// 1.36+: a `ShardedList`, whose `lists` is a boxed slice (pointer, then length) of
    /// `Mutex<LinkedList>` shards.
    Sharded(ShardedLayout),
    /// Before 1.36: one `Mutex<LinkedList>` inside `OwnedTasks`; from 1.32 a count
    /// beside it (`CountedLinkedList`).
    Single {
        head_from_id: i64,
        tail_from_id: i64,
        count_from_id: Option<i64>,
    },
}

/// `ShardedList`, relative to `OwnedTasks.id`.
#[derive(Clone, Copy, Debug)]
pub struct ShardedLayout {
    pub lists_from_id: i64,
    pub mask_from_id: i64,
    pub count_from_id: i64,
    /// One shard, a `Mutex<LinkedList>`: its size and where `head` and `tail` sit.
    pub shard_stride: u64,
    pub shard_head: u64,
    pub shard_tail: u64,
}

/// tokio's per-thread `CONTEXT` (a `thread_local!` in `runtime/context.rs`): while a
/// worker polls a task, `current_task_id` holds that task's id (set by `TaskIdGuard` around
/// every poll, stable API, no `tokio_unstable` needed). Reading it from outside tells which
/// task each thread is polling.
#[derive(Clone, Copy, Debug)]
pub struct ContextLayout {
    /// Demangled-name prefix of the thread-local's storage symbol.
    pub symbol: &'static str,
    /// Offset of `current_task_id` in the storage (the value comes first in std's storage).
    pub task_id: u64,
    /// `Option<Id>` with a separate tag word before the id (`Id(u64)`, before 1.39) rather
    /// than a zero niche (`Id(NonZeroU64)`).
    pub tagged: bool,
}

/// The rest of the state word: what decides whether a task can ever run again.
#[derive(Clone, Copy, Debug)]
pub struct RefBits {
    pub notified: u64,
    pub join_interest: u64,
    /// The reference count is `state >> ref_shift`.
    pub ref_shift: u32,
    /// References an idle task with no JoinHandle, no AbortHandle, no waker and no queued
    /// notification still has: the owned list's own.
    pub list_refs: u64,
}

/// Bits of the task state word.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct StateBits {
    pub running: u64,
    pub complete: u64,
    pub cancelled: u64,
}

/// Demangled, generic-stripped names of the functions the attach plan probes.
#[derive(Clone, Copy, Debug)]
pub struct SymbolNames {
    pub raw_poll: &'static str,
    pub raw_dealloc: &'static str,
    pub raw_shutdown: &'static str,
    pub harness_complete: &'static str,
    pub owned_bind_inner: &'static str,
    /// Where `bind_inner` was inlined: the scheduler spawn functions that contain it,
    /// probed at return (their JoinHandle is the task header).
    /// Each with where its return hands back the task (`JoinHandle`'s layout varies).
    pub spawn_returns: &'static [(&'static str, HeaderArg)],
    pub local_owned_bind: &'static str,
    /// Where `LocalOwnedTasks::bind`'s return hands back the task.
    pub local_bind_return: HeaderArg,
    pub blocking_spawn_task: &'static str,
    pub wake_by_val: &'static str,
    pub wake_by_ref: &'static str,
    /// The waker vtable's clone: a leaf future registering the task's waker (await
    /// chains from the stack).
    pub clone_waker: &'static str,
    /// Where a worker stops polling to park or yield to the driver: per scheduler, the
    /// alternatives best first (outer functions call inner ones); the first alternative
    /// the binary kept any function of is probed, all of its kept functions.
    pub parks: &'static [&'static [&'static [&'static str]]],
    /// tokio's task-id counter (`Id::next`'s static), a data symbol: every spawn path draws
    /// one id from it, in an inlined retry loop (`spawn_ids`). The first name the binary
    /// has (the module moved within a range).
    pub id_counters: &'static [&'static str],
    /// Ids are non-zero and `Id::next` is a retry loop (`lock xadd; test; je retry`): the
    /// loop's shape finds the counter without its symbol. Without it (plain `fetch_add`)
    /// only the symbol does.
    pub id_draw_retries: bool,
    /// `#[track_caller]` spawn paths: each receives the caller's `&'static Location`
    /// (passed down unchanged from the outermost one), whichever survive inlining.
    pub spawn_calls: &'static [&'static str],
}

/// What one tokio version range looks like from outside.
#[derive(Debug)]
pub struct Knowledge {
    /// First version this file was written for.
    pub first: Version,
    /// Newest version it was tested against; newer ones are used with a warning.
    pub newest_tested: Version,
    pub layout: Layout,
    pub state: StateBits,
    pub refs: RefBits,
    pub symbols: SymbolNames,
    /// `None`: the thread context keeps no current task id (before 1.22), so the
    /// sampler cannot tell which task a thread polls.
    pub context: Option<ContextLayout>,
    /// What this range cannot show as later ones do: said by `inspect` and every report.
    pub degraded: &'static [Degraded],
}

/// Something a version's internals do not let tasktrace see, and why.
#[derive(Debug)]
pub struct Degraded {
    pub what: &'static str,
    pub why: &'static str,
}

/// Supported ranges, oldest first.
const ALL: &[&Knowledge] = &[
    &v1_20::KNOWLEDGE,
    &v1_21::KNOWLEDGE,
    &v1_22::KNOWLEDGE,
    &v1_23::KNOWLEDGE,
    &v1_29::KNOWLEDGE,
    &v1_30::KNOWLEDGE,
    &v1_35::KNOWLEDGE,
    &v1_39::KNOWLEDGE,
];

impl SymbolNames {
    /// The task-id counter's address (file address), if the binary names it.
    pub fn id_counter(&self, data: &std::collections::HashMap<String, u64>) -> Option<u64> {
        self.id_counters.iter().find_map(|&n| data.get(n).copied())
    }
}

/// Every version file, oldest first.
pub fn all() -> &'static [&'static Knowledge] {
    ALL
}

/// What choosing a knowledge file for a binary produced.
#[derive(Debug)]
pub struct Selection {
    pub knowledge: &'static Knowledge,
    /// Set when the binary's version is unknown or newer than any tested one.
    pub warning: Option<String>,
}

/// Picks the knowledge file for a tokio version (`None`: the binary did not say).
pub fn select(version: Option<Version>) -> Result<Selection, String> {
    let newest = ALL.last().expect("at least one tokio version file");
    let Some(v) = version else {
        return Ok(Selection {
            knowledge: newest,
            warning: Some(format!(
                "could not read the tokio version from the binary; assuming the layout of tokio {}",
                newest.newest_tested
            )),
        });
    };
    if v < ALL[0].first {
        return Err(format!(
            "tokio {v} is older than the oldest supported version ({}); supported: {}. \
             Each supported layout was read from builds of its releases, and none \
             older was read; a build against \
             tokio {}.{} or later (`cargo update -p tokio`) can be traced",
            ALL[0].first,
            supported_range(),
            ALL[0].first.major,
            ALL[0].first.minor,
        ));
    }
    let knowledge = ALL
        .iter()
        .rev()
        .find(|k| v >= k.first)
        .expect("checked above");
    let warning = (v > knowledge.newest_tested && std::ptr::eq(*knowledge, *newest)).then(|| {
        format!(
            "tokio {v} is newer than the newest tested version ({}); using its layout",
            knowledge.newest_tested
        )
    });
    Ok(Selection { knowledge, warning })
}

pub fn supported_range() -> String {
    format!(
        "tokio {} to {}",
        ALL[0].first,
        ALL.last().unwrap().newest_tested
    )
}

/// Finds the tokio version in a binary's bytes: panic and track_caller locations keep
/// cargo registry paths such as `.../tokio-1.54.1/src/runtime/...`, even when stripped.
pub fn version_in_bytes(data: &[u8]) -> Option<Version> {
    const NEEDLE: &[u8] = b"tokio-1.";
    let mut counts: std::collections::BTreeMap<Version, usize> = Default::default();
    let mut i = 0;
    while let Some(pos) = find(&data[i..], NEEDLE) {
        let start = i + pos + "tokio-".len();
        let end = data[start..]
            .iter()
            .position(|&b| !(b.is_ascii_digit() || b == b'.'))
            .map_or(data.len(), |p| start + p);
        // A registry path continues with a path separator.
        if matches!(data.get(end), Some(b'/') | Some(b'\\'))
            && let Some(v) = std::str::from_utf8(&data[start..end])
                .ok()
                .and_then(Version::parse)
        {
            *counts.entry(v).or_default() += 1;
        }
        i = start;
    }
    counts
        .into_iter()
        .max_by_key(|&(v, n)| (n, v))
        .map(|(v, _)| v)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(Version::parse("1.54.1"), Some(Version::new(1, 54, 1)));
        assert_eq!(Version::parse("1.38.2-alpha"), Some(Version::new(1, 38, 2)));
        assert_eq!(Version::parse("1.x"), None);
    }

    #[test]
    fn finds_version_in_paths() {
        let data = b"junk/home/u/.cargo/registry/src/index/tokio-1.47.3/src/runtime/task/mod.rs\0\
                     tokio-1.47.3/src/x.rs tokio-1.2 tokio-macros-2.5.0/src";
        assert_eq!(version_in_bytes(data), Some(Version::new(1, 47, 3)));
        assert_eq!(version_in_bytes(b"no version here"), None);
    }

    #[test]
    fn selects_by_range() {
        let old = select(Some(Version::new(1, 19, 2))).unwrap_err();
        assert!(old.contains("oldest supported version (1.20.0)"), "{old}");
        let s = select(Some(Version::new(1, 20, 6))).unwrap();
        assert_eq!(s.knowledge.first, Version::new(1, 20, 0));
        assert!(s.knowledge.layout.lists.links_in_header);
        let s = select(Some(Version::new(1, 21, 2))).unwrap();
        assert_eq!(s.knowledge.first, Version::new(1, 21, 0));
        assert!(s.knowledge.context.is_none());
        let s = select(Some(Version::new(1, 22, 0))).unwrap();
        assert_eq!(s.knowledge.first, Version::new(1, 22, 0));
        let s = select(Some(Version::new(1, 28, 2))).unwrap();
        assert_eq!(s.knowledge.first, Version::new(1, 23, 0));
        assert!(s.warning.is_none());
        let s = select(Some(Version::new(1, 36, 0))).unwrap();
        assert_eq!(s.knowledge.first, Version::new(1, 35, 0));
        let s = select(Some(Version::new(1, 54, 1))).unwrap();
        assert!(s.warning.is_none());
        let s = select(Some(Version::new(1, 99, 0))).unwrap();
        assert!(s.warning.unwrap().contains("newer than the newest tested"));
        assert!(select(None).unwrap().warning.is_some());
    }

    /// The kernel side reads state, vtable and owner id with one read of the header's
    /// first words: a version file whose header puts them elsewhere needs the eBPF
    /// changed (the loader refuses it too).
    #[test]
    fn header_fields_fit_the_kernel_sides_one_read() {
        for k in ALL {
            let l = &k.layout;
            let header = tracer_common::HeaderLayout {
                state: l.header_state,
                vtable: l.header_vtable,
                owner_id: l.header_owner_id,
                vtable_id_offset: l.vtable_id_offset().unwrap_or(tracer_common::NO_ID_OFFSET),
            };
            assert!(header.fits(), "tokio {}: {header:?}", k.first);
        }
        let outside = tracer_common::HeaderLayout {
            owner_id: 8 * tracer_common::HEADER_READ_WORDS as u64,
            ..Default::default()
        };
        assert!(!outside.fits());
    }
}
