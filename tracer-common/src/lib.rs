//! Types shared by the kernel side (`tracer-ebpf`) and the user side (`tracer-user`):
//! the fixed-size event record, the probe cookie that says what a probe site means, and
//! the layout constants the kernel side needs to read a task header.
#![no_std]

/// What a probe hit means. Carried in the low byte of the attach cookie.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A task was bound to a runtime's owned-task list (async task spawned).
    Spawn = 1,
    /// A task was handed to the blocking pool (`spawn_blocking`).
    SpawnBlocking = 2,
    /// A task was bound to a `LocalSet`.
    SpawnLocal = 3,
    /// `raw::poll` entered.
    PollStart = 4,
    /// `raw::poll` returned (no task pointer: userspace pairs it with the thread's last
    /// `PollStart`).
    PollEnd = 5,
    /// A waker woke the task (`wake_by_val`).
    WakeByVal = 6,
    /// A waker woke the task (`wake_by_ref`).
    WakeByRef = 7,
    /// `Harness::complete`: the future returned Ready or was cancelled.
    Complete = 8,
    /// `raw::shutdown`: the runtime (or a closed owned list) cancels the task.
    Shutdown = 9,
    /// `raw::dealloc`: the task cell is freed.
    Dealloc = 10,
    /// Entry of a `#[track_caller]` spawn function: a [`CallEvent`] with the argument
    /// registers (one holds the caller's `&'static Location`) and the return address.
    SpawnCall = 11,
    /// At a spawn site, when no spawn function survived inlining: a [`StackEvent`] with
    /// the registers and a copy of the user stack, unwound in userspace.
    SpawnStack = 12,
    /// A worker entered its scheduler's park or driver-yield path: whatever it was polling
    /// has ended (lets a poll cost one hit without stretching its end over idle time).
    Park = 13,
    /// A spawn path drew a new task id from tokio's counter (`Id::next`, inlined into
    /// every spawn path): the id is in `task_id`, the header is not allocated yet, and
    /// `state` carries the probe site's index in the plan (which names the spawn site).
    SpawnId = 14,
    /// The target replaced its program image (`sched_process_exec`): nothing of the old
    /// image runs any more, so the window ends here.
    Exec = 15,
    /// A task cloned its own waker during its poll (a leaf future registering it): the
    /// task is about to park there. Sent only when the task's await point changed since
    /// its last one; `state` carries the point's key (a hash of the return addresses
    /// between the clone and the task's poll), `owner_id` the stack depth.
    WakerClone = 16,
    /// A copy of the stack at a [`EventKind::WakerClone`] whose key was not seen before
    /// (a [`StackEvent`], queued just before the clone's event): userspace unwinds it into
    /// the await chain of that key.
    AwaitStack = 17,
}

impl EventKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Spawn => "spawn",
            Self::SpawnBlocking => "spawn_blocking",
            Self::SpawnLocal => "spawn_local",
            Self::PollStart => "poll_start",
            Self::PollEnd => "poll_end",
            Self::WakeByVal => "wake_by_val",
            Self::WakeByRef => "wake_by_ref",
            Self::Complete => "complete",
            Self::Shutdown => "shutdown",
            Self::Dealloc => "dealloc",
            Self::SpawnCall => "spawn_call",
            Self::SpawnStack => "spawn_stack",
            Self::Park => "park",
            Self::SpawnId => "spawn_id",
            Self::Exec => "exec",
            Self::WakerClone => "waker_clone",
            Self::AwaitStack => "await_stack",
        }
    }

    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Spawn,
            2 => Self::SpawnBlocking,
            3 => Self::SpawnLocal,
            4 => Self::PollStart,
            5 => Self::PollEnd,
            6 => Self::WakeByVal,
            7 => Self::WakeByRef,
            8 => Self::Complete,
            9 => Self::Shutdown,
            10 => Self::Dealloc,
            11 => Self::SpawnCall,
            12 => Self::SpawnStack,
            13 => Self::Park,
            14 => Self::SpawnId,
            15 => Self::Exec,
            16 => Self::WakerClone,
            17 => Self::AwaitStack,
            _ => return None,
        })
    }
}

/// Where the probe finds the task header pointer. Carried in the second byte of the cookie.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderArg {
    /// No task pointer at this site (`PollEnd`).
    None = 0,
    /// First argument register (`rdi` on x86_64).
    Arg0 = 1,
    /// Second argument register (`rsi`).
    Arg1 = 2,
    /// Return value register (`rax`), for return probes.
    Ret = 3,
    /// Return probes of a function returning a `JoinHandle { raw, id }` in registers
    /// (before tokio 1.23): the header in `rax`, the task id in `rdx`.
    RetPair = 4,
    /// Return probes of a function returning `(JoinHandle { raw, id }, ..)` through
    /// memory (before tokio 1.23): `rax` points at it, the header first, the id next.
    RetSlot = 5,
}

/// Packs a probe site's meaning into the `bpf_get_attach_cookie` value.
pub const fn cookie(kind: EventKind, arg: HeaderArg) -> u64 {
    (kind as u64) | ((arg as u64) << 8)
}

/// The second cookie byte of a [`EventKind::SpawnId`] site: the x86_64 register number
/// (0 rax, 1 rcx, 2 rdx, 3 rbx, 5 rbp, 6 rsi, 7 rdi, 8–15 r8–r15) that holds the new id,
/// plus this base.
pub const REG_ARG_BASE: u8 = 16;

/// Set in the second cookie byte of a [`EventKind::SpawnId`] site whose draw is a whole
/// function (`Id::next` out of line): the probe reads the return address at `[rsp]` into
/// the event's `owner_id` (the spawn is the caller's).
pub const REG_ARG_CALLER: u8 = 0x80;

/// The cookie of a [`EventKind::SpawnId`] site: the id's register, whether to read the
/// caller, and the site's index among the plan's id sites (bits 16 and up), which the
/// event carries back.
pub const fn id_cookie(reg: u8, caller: bool, site: u32) -> u64 {
    let arg = (REG_ARG_BASE + reg) | if caller { REG_ARG_CALLER } else { 0 };
    (EventKind::SpawnId as u64) | ((arg as u64) << 8) | ((site as u64) << 16)
}

pub const fn cookie_site(cookie: u64) -> u64 {
    cookie >> 16
}

pub const fn cookie_kind(cookie: u64) -> u8 {
    (cookie & 0xff) as u8
}

pub const fn cookie_arg(cookie: u64) -> u8 {
    ((cookie >> 8) & 0xff) as u8
}

/// One ring-buffer record. Fixed size; every field is filled by every probe (zero where
/// it does not apply) so that userspace decodes without branching on layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskEvent {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Task header address in the target, 0 for `PollEnd`.
    pub header: u64,
    /// tokio task id, read through the task vtable's id offset; 0 when unreadable.
    pub task_id: u64,
    /// The header's state word at the probe (before the probed function runs).
    pub state: u64,
    /// The header's `owner_id` (which runtime owns the task; 0 for blocking tasks).
    pub owner_id: u64,
    /// The task's vtable address: one per (future type, scheduler), so it names the future.
    pub vtable: u64,
    /// Thread id (kernel pid) of the target thread that hit the probe.
    pub tid: u32,
    /// An [`EventKind`].
    pub kind: u8,
    /// Bit 0: the header could not be read (the pointer was implausible).
    pub flags: u8,
    pub _pad: [u8; 2],
}

pub const EVENT_FLAG_UNREADABLE: u8 = 1;

pub const EVENT_SIZE: usize = core::mem::size_of::<TaskEvent>();

/// The record of a [`EventKind::SpawnCall`] probe. It shares the ring with [`TaskEvent`];
/// userspace tells the two apart by record length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallEvent {
    pub ts_ns: u64,
    /// rdi, rsi, rdx, rcx, r8, r9 at entry.
    pub args: [u64; 6],
    /// The return address at `[rsp]`: inside the function that called spawn.
    pub return_address: u64,
    pub tid: u32,
    pub kind: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
}

pub const CALL_EVENT_SIZE: usize = core::mem::size_of::<CallEvent>();

/// Bytes of user stack a [`StackEvent`] can carry.
pub const STACK_COPY: usize = 4096;

/// Registers and a copy of the top of the user stack at a spawn site, for unwinding in
/// userspace (release builds keep no frame pointers; `.eh_frame` survives everything).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackEvent {
    pub ts_ns: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub tid: u32,
    pub kind: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Valid bytes in `stack`, copied from `sp` upwards (0 if the read failed).
    pub len: u32,
    pub _pad2: u32,
    pub stack: [u8; STACK_COPY],
}

pub const STACK_EVENT_SIZE: usize = core::mem::size_of::<StackEvent>();

/// Global: how many stack bytes to copy at spawn sites (0: none).
pub const GLOBAL_STACK_BYTES: &str = "STACK_BYTES";

/// Names of the globals the kernel program reads; userspace sets them at load time.
pub const GLOBAL_TARGET_TGID: &str = "TARGET_TGID";
pub const GLOBAL_LAYOUT: &str = "LAYOUT";

/// Words of a task header the kernel side reads at once: state, vtable and owner id must
/// fall in them (each user-memory read costs about as much as the rest of the program).
/// The loader refuses a layout that does not fit ([`HeaderLayout::fits`]). Eight: tokio
/// 1.20's header holds its list links before the vtable (owner id at +40); from 1.21
/// the fields sit in the first four, the rest is the `Core`'s (a task cell is at least
/// 88 bytes). A power of two: the kernel side indexes the words modulo their count, which
/// the verifier bounds only as a mask.
pub const HEADER_READ_WORDS: usize = 8;

/// Byte offsets the kernel side needs to read a task header. They come from the tokio
/// version file userspace selected; nothing in the kernel side hard-codes them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderLayout {
    /// Offset of the state word in the header.
    pub state: u64,
    /// Offset of the vtable pointer in the header.
    pub vtable: u64,
    /// Offset of `owner_id` in the header.
    pub owner_id: u64,
    /// Offset, inside the vtable, of the field holding the task id's offset from the header;
    /// [`NO_ID_OFFSET`]: the vtable has none (before tokio 1.23), no id is read.
    pub vtable_id_offset: u64,
}

/// [`HeaderLayout::vtable_id_offset`] of a tokio whose vtable says nothing of the id.
pub const NO_ID_OFFSET: u64 = u64::MAX;

impl HeaderLayout {
    /// State, vtable and owner id are whole words inside the kernel side's one read.
    pub const fn fits(&self) -> bool {
        let end = 8 * HEADER_READ_WORDS as u64;
        self.state.is_multiple_of(8)
            && self.vtable.is_multiple_of(8)
            && self.owner_id.is_multiple_of(8)
            && self.state < end
            && self.vtable < end
            && self.owner_id < end
    }
}

/// The cookie of a [`EventKind::WakerClone`] site: the header in the first argument, and
/// the site's own file address (bits 16 and up), from which the kernel side learns where
/// the binary is mapped (the probe's instruction pointer minus it).
pub const fn clone_cookie(file_address: u64) -> u64 {
    cookie(EventKind::WakerClone, HeaderArg::Arg0) | (file_address << 16)
}

/// Global: whether waker clones capture await stacks (0: no), set at load time.
pub const GLOBAL_AWAIT_STACKS: &str = "AWAIT_STACKS";
/// Global: the binary's code range (file addresses, [`TextRange`]): the words of a stack
/// that fall in it are the return addresses an await point's key is made of.
pub const GLOBAL_TEXT_RANGE: &str = "TEXT_RANGE";

/// Where the binary's code is, in file addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextRange {
    pub lo: u64,
    pub hi: u64,
}

/// Bytes of stack between a waker clone and its task's poll entry that make an await
/// point's key (deeper words are left out of it).
pub const AWAIT_KEY_BYTES: usize = 4096;

/// Tasks whose last await point the kernel side remembers, and await points whose stack
/// it copied already (both LRU maps: forgetting costs one more copy, nothing else).
pub const MAX_AWAIT_TASKS: u32 = 1 << 16;
pub const MAX_AWAIT_POINTS: u32 = 1 << 14;
/// Await-stack copies (4 KiB each) per CPU: one this often, after a burst of
/// [`AWAIT_COPY_BURST`] (a program starting up reaches its await points at once). A
/// program whose stacks hold ever-new stale code pointers makes ever-new keys, and must
/// not flood the ring; a key denied its copy is copied at a later clone.
pub const AWAIT_COPY_GAP_NS: u64 = 1_000_000;
pub const AWAIT_COPY_BURST: u64 = 256;
pub const MAP_AWAIT_LAST: &str = "AWAIT_LAST";
pub const MAP_AWAIT_SEEN: &str = "AWAIT_SEEN";

/// Global: offset of `task_struct.thread.fsbase` in the running kernel (from its BTF; 0:
/// unknown, threads are then not recorded).
pub const GLOBAL_TASK_FSBASE: &str = "TASK_FSBASE";
/// Global: offsets of `task_struct.pid` and `task_struct.tgid` (from the kernel's BTF; 0:
/// unknown), for the thread iterator, which runs in no target thread's context.
pub const GLOBAL_TASK_IDS: &str = "TASK_IDS";
/// The task iterator that records every target thread's TLS pointer, asleep or not.
pub const PROGRAM_THREAD_ITER: &str = "target_threads";

/// Where `task_struct` keeps a thread's ids ([`GLOBAL_TASK_IDS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskIds {
    pub pid: u64,
    pub tgid: u64,
}

/// Map names.
pub const MAP_EVENTS: &str = "EVENTS";
/// Per-CPU counters: [`COUNTER_LOST`] failed ring reservations, [`COUNTER_CLONE_HITS`]
/// waker-clone probe hits in the target (most send nothing: same await point as before).
pub const MAP_LOST: &str = "LOST";
pub const COUNTER_LOST: u32 = 0;
pub const COUNTER_CLONE_HITS: u32 = 1;
/// Target thread id → its TLS pointer (`fsbase`), recorded by every program that runs on
/// a target thread. Userspace reads tokio's per-thread context through it (which task a
/// worker is polling) without stopping the thread.
pub const MAP_THREADS: &str = "THREADS";
/// Capacity of [`MAP_THREADS`] (an LRU map: threads that exited age out).
pub const MAX_THREADS: u32 = 8192;
/// Task vtables (process addresses) of futures whose spawn site userspace names from the
/// code: their spawns need no stack copy. Filled once the target's load bias is known.
pub const MAP_SITE_KNOWN: &str = "SITE_KNOWN";
/// Capacity of [`MAP_SITE_KNOWN`] (one entry per task vtable; more are simply copied).
pub const MAX_SITE_KNOWN: u32 = 4096;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `repr(C)` integers with no padding holes the kernel could leave unset.
    unsafe impl aya::Pod for super::HeaderLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TaskIds {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TextRange {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_distinct_sizes() {
        assert_eq!(EVENT_SIZE, 56);
        assert_eq!(CALL_EVENT_SIZE, 72);
        assert_eq!(STACK_EVENT_SIZE, 48 + STACK_COPY);
    }

    #[test]
    fn cookie_round_trips() {
        let c = cookie(EventKind::SpawnBlocking, HeaderArg::Arg1);
        assert_eq!(
            EventKind::from_u8(cookie_kind(c)),
            Some(EventKind::SpawnBlocking)
        );
        assert_eq!(cookie_arg(c), HeaderArg::Arg1 as u8);
        let c = id_cookie(12, false, 4242);
        assert_eq!(cookie_kind(c), EventKind::SpawnId as u8);
        assert_eq!(cookie_arg(c), REG_ARG_BASE + 12);
        assert_eq!(
            cookie_arg(id_cookie(15, true, 1)),
            (REG_ARG_BASE + 15) | REG_ARG_CALLER
        );
        assert_eq!(cookie_site(c), 4242);
        for k in 0..=255u8 {
            if let Some(kind) = EventKind::from_u8(k) {
                assert_eq!(kind as u8, k);
            }
        }
    }
}
