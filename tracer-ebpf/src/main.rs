//! Kernel side of tasktrace: one entry and one return program, each attached through a
//! single `uprobe_multi` link to every probe site of the attach plan, or, on kernels
//! without a usable `uprobe_multi` (before 6.10), their twins attached through one
//! perf-event link per site. The attach cookie says what the site means and where the
//! task header pointer is; the program filters by target process, reads the header
//! (read-only) and packs a fixed-size event. A low-rate perf-event program and a task
//! iterator only record which target threads exist and where their thread-locals are.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user, generated::bpf_get_attach_cookie,
    },
    macros::{map, perf_event, raw_tracepoint, uprobe, uretprobe},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{PerfEventContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use tracer_common::{
    AWAIT_COPY_BURST, AWAIT_COPY_GAP_NS, AWAIT_KEY_BYTES, COUNTER_CLONE_HITS, COUNTER_LOST,
    CallEvent, EVENT_FLAG_UNREADABLE, EventKind, HEADER_READ_WORDS, HeaderArg, HeaderLayout,
    MAX_AWAIT_POINTS, MAX_AWAIT_TASKS, MAX_SITE_KNOWN, MAX_THREADS, NO_ID_OFFSET, REG_ARG_BASE,
    REG_ARG_CALLER, STACK_COPY, StackEvent, TaskEvent, TaskIds, TextRange, cookie_arg, cookie_kind,
    cookie_site,
};

/// Process (tgid) to trace; set by userspace at load time.
#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;

/// Header offsets from the selected tokio version file; set by userspace at load time.
#[unsafe(no_mangle)]
static LAYOUT: HeaderLayout = HeaderLayout {
    state: 0,
    vtable: 0,
    owner_id: 0,
    vtable_id_offset: 0,
};

/// Stack bytes to copy at spawn sites (0: off); set by userspace at load time.
#[unsafe(no_mangle)]
static STACK_BYTES: u32 = 0;

/// Whether waker clones capture await stacks (0: off); set by userspace at load time.
#[unsafe(no_mangle)]
static AWAIT_STACKS: u32 = 0;

/// The binary's code (file addresses); set by userspace at load time.
#[unsafe(no_mangle)]
static TEXT_RANGE: TextRange = TextRange { lo: 0, hi: 0 };

/// Offset of `task_struct.thread.fsbase` (from the kernel's BTF; 0: unknown).
#[unsafe(no_mangle)]
static TASK_FSBASE: u64 = 0;

/// Offsets of `task_struct.pid` and `.tgid` (from the kernel's BTF; 0: unknown).
#[unsafe(no_mangle)]
static TASK_IDS: TaskIds = TaskIds { pid: 0, tgid: 0 };

/// Events for userspace. Its size is set by userspace (`--ring-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per CPU: failed ring reservations (the ring buffer itself keeps no drop count), and
/// waker-clone hits (`tracer_common::COUNTER_*`).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Target thread → TLS pointer.
#[map]
static THREADS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_THREADS, 0);

/// The target thread each CPU last recorded, so that a hit only updates [`THREADS`] when
/// another thread ran on the CPU since.
#[map]
static LAST_THREAD: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The thread whose spawn call this CPU saw last: its spawn needs no stack copy (the
/// call named the spawn site). A thread moved to another CPU in between gets a copy it
/// did not need, nothing worse.
#[map]
static LAST_SPAWN_CALL: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Task vtables whose spawn site userspace knows from the code (no stack copy needed).
#[map]
static SITE_KNOWN: HashMap<u64, u8> = HashMap::with_max_entries(MAX_SITE_KNOWN, 0);

/// The poll a target thread entered last: a waker clone on the same thread, for the same
/// task, deeper in the stack, is that task registering its waker from that poll. Per
/// thread, not per CPU: a thread preempted inside a poll resumes where another thread's
/// poll may have taken the CPU's slot.
#[repr(C)]
#[derive(Clone, Copy)]
struct Polling {
    tid: u32,
    _pad: u32,
    header: u64,
    /// The stack pointer at the poll's entry.
    sp: u64,
    vtable: u64,
    id: u64,
}

#[map]
static POLLING: LruHashMap<u32, Polling> = LruHashMap::with_max_entries(MAX_THREADS, 0);

/// Task header → the (key of the) await point its last waker clone was at, mixed with its
/// id: a clone at the same point again sends nothing.
#[map]
static AWAIT_LAST: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_AWAIT_TASKS, 0);

/// Await-point keys whose stack was copied already: userspace holds their chains.
#[map]
static AWAIT_SEEN: LruHashMap<u64, u8> = LruHashMap::with_max_entries(MAX_AWAIT_POINTS, 0);

/// Per CPU, the await-stack copies it may still take and when it last counted them.
#[map]
static COPY_TOKENS: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU, the stack words a key is made of (too large for the BPF stack).
#[map]
static KEY_WINDOW: PerCpuArray<[u64; AWAIT_KEY_BYTES / 8]> = PerCpuArray::with_max_entries(1, 0);

/// Submit without waking the reader: it drains on a timer (a wakeup costs ~0.8 µs a hit).
const BPF_RB_NO_WAKEUP: u64 = 1;

/// Every site of the plan through one `uprobe_multi` link.
#[uprobe(multi)]
pub fn task_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx)
}

/// The same, one perf-event link per site (kernels before `uprobe_multi`).
#[uprobe]
pub fn task_entry_one(ctx: ProbeContext) -> u32 {
    on_entry(&ctx)
}

#[uretprobe(multi)]
pub fn task_return(ctx: RetProbeContext) -> u32 {
    on_return(&ctx)
}

#[uretprobe]
pub fn task_return_one(ctx: RetProbeContext) -> u32 {
    on_return(&ctx)
}

#[inline(always)]
fn on_entry(ctx: &ProbeContext) -> u32 {
    if cookie_kind(cookie(ctx)) == EventKind::SpawnCall as u8 {
        emit_call(ctx);
        return 0;
    }
    let kind = cookie_kind(cookie(ctx));
    if kind == EventKind::SpawnId as u8 {
        emit_id(ctx);
        return 0;
    }
    if kind == EventKind::WakerClone as u8 {
        on_clone(ctx);
        return 0;
    }
    // Read both registers unconditionally: the verifier rejects a context access whose
    // offset depends on a branch, which is what selecting the register first compiles to.
    let arg0 = ctx.arg::<u64>(0).unwrap_or(0);
    let arg1 = ctx.arg::<u64>(1).unwrap_or(0);
    let header = match cookie_arg(cookie(ctx)) {
        a if a == HeaderArg::Arg0 as u8 => arg0,
        a if a == HeaderArg::Arg1 as u8 => arg1,
        _ => 0,
    };
    let Some(ev) = event(ctx, header) else {
        return 0;
    };
    // SAFETY: see `event`.
    if unsafe { core::ptr::read_volatile(&AWAIT_STACKS) } != 0 {
        if kind == EventKind::PollStart as u8 {
            // The entry's stack pointer: the probe's, plus what a prologue the probe was
            // moved past pushed (the cookie's high bits).
            // SAFETY: the context of a uprobe is the target thread's saved registers.
            let sp = unsafe { (*ctx.regs).rsp }.wrapping_add(cookie_site(cookie(ctx)));
            let now = Polling {
                tid: ev.tid,
                _pad: 0,
                header,
                sp,
                vtable: ev.vtable,
                id: ev.task_id,
            };
            // In place once the thread has its entry (an update would allocate anew).
            match POLLING.get_ptr_mut(&ev.tid) {
                // SAFETY: only this thread reads or writes its own entry.
                Some(p) => unsafe { *p = now },
                None => {
                    let _ = POLLING.insert(&ev.tid, &now, 0);
                }
            }
        } else if kind == EventKind::Spawn as u8 || kind == EventKind::SpawnLocal as u8 {
            // A new task in a freed task's cell starts with no await point.
            let _ = AWAIT_LAST.remove(&header);
        }
    }
    // A spawn no spawn call announced, of a future whose site the code does not name:
    // its site is found by unwinding a copy of the stack, queued before the spawn.
    // SAFETY: see `event`.
    if (kind == EventKind::Spawn as u8 || kind == EventKind::SpawnBlocking as u8)
        && needs_stack(&ev)
    {
        // SAFETY: the context of a uprobe is the target thread's saved registers.
        emit_stack(unsafe { &*ctx.regs }, EventKind::SpawnStack);
    }
    submit(&ev);
    0
}

/// A waker clone: when it is the polled task registering its own waker at an await point
/// other than its last one, sends the point's key (and, for a key not seen before, a copy
/// of the stack, from which userspace unwinds the chain once per point).
#[inline(always)]
fn on_clone(ctx: &ProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: see `event`.
    if (pid_tgid >> 32) as u32 != unsafe { core::ptr::read_volatile(&TARGET_TGID) } {
        return;
    }
    let tid = pid_tgid as u32;
    count(COUNTER_CLONE_HITS);
    // SAFETY: the context of a uprobe is the target thread's saved registers.
    let regs = unsafe { &*ctx.regs };
    let header = regs.rdi;
    let Some(p) = POLLING.get_ptr(&tid) else {
        return;
    };
    // SAFETY: only this thread writes its own entry.
    let p = unsafe { *p };
    // A clone by another task's poll (a waker handed on), or outside any poll.
    if p.tid != tid || p.header != header || p.sp <= regs.rsp {
        return;
    }
    let depth = p.sp - regs.rsp;
    let key = await_key(regs, cookie_site(cookie(ctx)), depth, p.vtable);
    let mark = key ^ p.id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // SAFETY: a plain lookup, the value copied out at once.
    if unsafe { AWAIT_LAST.get(&header) }.is_some_and(|last| *last == mark) {
        return;
    }
    let _ = AWAIT_LAST.insert(&header, &mark, 0);
    // SAFETY: a plain lookup; the value is not used.
    if unsafe { AWAIT_SEEN.get(&key) }.is_none()
        && copy_allowed()
        && emit_stack(regs, EventKind::AwaitStack)
    {
        let _ = AWAIT_SEEN.insert(&key, &1, 0);
    }
    submit(&TaskEvent {
        // SAFETY: helper without side effects.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        header,
        task_id: p.id,
        state: key,
        owner_id: depth,
        vtable: p.vtable,
        tid,
        kind: EventKind::WakerClone as u8,
        ..TaskEvent::default()
    });
}

/// A token bucket per CPU: [`AWAIT_COPY_BURST`] copies, one more every
/// [`AWAIT_COPY_GAP_NS`].
#[inline(always)]
fn copy_allowed() -> bool {
    let Some(bucket) = COPY_TOKENS.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: helper without side effects; per-CPU slot, no concurrent writer.
    unsafe {
        let now = bpf_ktime_get_ns();
        let [tokens, since] = *bucket;
        let earned = now.wrapping_sub(since) / AWAIT_COPY_GAP_NS;
        let mut tokens = if since == 0 {
            AWAIT_COPY_BURST
        } else {
            let t = tokens.saturating_add(earned);
            if t < AWAIT_COPY_BURST {
                t
            } else {
                AWAIT_COPY_BURST
            }
        };
        let since = if since == 0 || earned > 0 { now } else { since };
        if tokens == 0 {
            *bucket = [0, since];
            return false;
        }
        tokens -= 1;
        *bucket = [tokens, since];
    }
    true
}

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// An await point's key: the task's future type, the stack depth from its poll, and every
/// word of the stack in between that points into the binary's code (the return addresses
/// of the frames the clone is nested in; two `.await`s of one kind of leaf in one async fn
/// differ there). `site` is the probe's file address: the binary's load bias follows.
#[inline(always)]
fn await_key(regs: &pt_regs, site: u64, depth: u64, vtable: u64) -> u64 {
    let mut h = (0xcbf2_9ce4_8422_2325 ^ vtable).wrapping_mul(FNV_PRIME);
    h = (h ^ depth).wrapping_mul(FNV_PRIME);
    let bias = regs.rip.wrapping_sub(site);
    // SAFETY: see `event`.
    let text = unsafe { core::ptr::read_volatile(&TEXT_RANGE) };
    let (lo, hi) = (text.lo.wrapping_add(bias), text.hi.wrapping_add(bias));
    let Some(win) = KEY_WINDOW.get_ptr_mut(0) else {
        return h;
    };
    let bytes = (if depth < AWAIT_KEY_BYTES as u64 {
        depth
    } else {
        AWAIT_KEY_BYTES as u64
    }) & !7;
    if bytes == 0 || bytes > AWAIT_KEY_BYTES as u64 {
        return h;
    }
    // SAFETY: the helper checks both pointers; `win` is this CPU's slot, `bytes` fits it.
    if unsafe {
        bpf_probe_read_user_raw(
            win as *mut core::ffi::c_void,
            bytes as u32,
            regs.rsp as *const core::ffi::c_void,
        )
    } != 0
    {
        return h;
    }
    let n = (bytes / 8) as usize;
    for i in 0..AWAIT_KEY_BYTES / 8 {
        if i >= n {
            break;
        }
        // SAFETY: `i` is below the array's length; the slot is this CPU's.
        let w = unsafe { (*win)[i] };
        if w >= lo && w < hi {
            h = (h ^ w).wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// A spawn no spawn call announced, of a future whose site the code does not name.
#[inline(always)]
fn needs_stack(ev: &TaskEvent) -> bool {
    // SAFETY: see `event`.
    let stack_bytes = unsafe { core::ptr::read_volatile(&STACK_BYTES) };
    stack_bytes != 0
        && !spawn_call_seen()
        // SAFETY: a plain lookup; the value is not used.
        && unsafe { SITE_KNOWN.get(&ev.vtable) }.is_none()
}

/// The target execs another program (or itself anew): the tasks of the old image are
/// gone with it; userspace ends the window at this instant.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn target_exec(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: see `event`.
    if (pid_tgid >> 32) as u32 != unsafe { core::ptr::read_volatile(&TARGET_TGID) } {
        return 0;
    }
    let ev = TaskEvent {
        // SAFETY: helper without side effects.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        tid: pid_tgid as u32,
        kind: EventKind::Exec as u8,
        ..TaskEvent::default()
    };
    submit(&ev);
    0
}

/// Fires a few dozen times a second per CPU: records target threads that no probe hit
/// (a worker that only polls in lifecycle mode).
#[perf_event]
pub fn thread_sample(_ctx: PerfEventContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: see `event`.
    if (pid_tgid >> 32) as u32 == unsafe { core::ptr::read_volatile(&TARGET_TGID) } {
        note_thread(pid_tgid as u32);
    }
    0
}

/// A task iterator (`iter/task`), run when userspace reads it: records the TLS pointer of
/// every target thread, those asleep included. A worker blocked inside a poll, in a sleep
/// or a lock, is on no CPU for [`thread_sample`] to see, and it is the one that matters.
/// aya-ebpf has no macro for iterators: the section name says what the program is.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn target_threads(ctx: *mut core::ffi::c_void) -> i32 {
    // SAFETY: set by the loader before the program is loaded, read-only afterwards.
    let (ids, fsbase_at) = unsafe {
        (
            core::ptr::read_volatile(&TASK_IDS),
            core::ptr::read_volatile(&TASK_FSBASE),
        )
    };
    if ids.pid == 0 || ids.tgid == 0 || fsbase_at == 0 {
        return 0;
    }
    // `struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; }`:
    // the task is copied out as a plain number, so no BTF pointer rules apply to it.
    // SAFETY: the context is that struct; the read is checked (the last call has no task).
    let Ok(task) = (unsafe { bpf_probe_read_kernel((ctx as *const u64).wrapping_add(1)) }) else {
        return 0;
    };
    if task == 0 {
        return 0;
    }
    // SAFETY: a live task_struct while the iterator holds it; every read is checked.
    let tgid = unsafe { bpf_probe_read_kernel((task + ids.tgid) as *const i32) };
    // SAFETY: see `event`.
    if tgid.ok() != Some(unsafe { core::ptr::read_volatile(&TARGET_TGID) } as i32) {
        return 0;
    }
    // SAFETY: as above.
    let read = unsafe {
        (
            bpf_probe_read_kernel((task + ids.pid) as *const i32),
            bpf_probe_read_kernel((task + fsbase_at) as *const u64),
        )
    };
    let (Ok(tid), Ok(fsbase)) = read else {
        return 0;
    };
    let _ = THREADS.insert(&(tid as u32), &fsbase, 0);
    0
}

#[inline(always)]
fn on_return(ctx: &RetProbeContext) -> u32 {
    // SAFETY: the context of a uretprobe is the target thread's saved registers.
    let regs = unsafe { &*ctx.regs };
    let arg = cookie_arg(cookie(ctx));
    // The header, and the task id where the returned `JoinHandle` holds it (before 1.23).
    let (header, id) = if arg == HeaderArg::Ret as u8 {
        (regs.rax, 0)
    } else if arg == HeaderArg::RetPair as u8 {
        (regs.rax, regs.rdx)
    } else if arg == HeaderArg::RetSlot as u8 {
        // SAFETY: bpf_probe_read_user copes with any address and reports faults.
        unsafe { bpf_probe_read_user(regs.rax as *const [u64; 2]) }.map_or((0, 0), |w| (w[0], w[1]))
    } else {
        (0, 0)
    };
    if let Some(mut ev) = event(ctx, header) {
        if ev.task_id == 0 {
            ev.task_id = id;
        }
        // A spawn taken at its function's return (the function that binds the task was
        // inlined away, or before tokio 1.30 builds it): the stack is the caller's.
        if ev.kind == EventKind::Spawn as u8 && needs_stack(&ev) {
            emit_stack(regs, EventKind::SpawnStack);
        }
        // SAFETY: see `event`.
        if ev.kind == EventKind::Spawn as u8
            && unsafe { core::ptr::read_volatile(&AWAIT_STACKS) } != 0
        {
            let _ = AWAIT_LAST.remove(&header);
        }
        submit(&ev);
    }
    0
}

#[inline(always)]
fn cookie<C: EbpfContext>(ctx: &C) -> u64 {
    // SAFETY: plain helper call on the program's own context.
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }
}

/// The event of a hit in the target process (`None` elsewhere), header fields read.
#[inline(always)]
fn event<C: EbpfContext>(ctx: &C, header: u64) -> Option<TaskEvent> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: globals are written by the loader before attach, read-only afterwards.
    let target = unsafe { core::ptr::read_volatile(&TARGET_TGID) };
    if (pid_tgid >> 32) as u32 != target {
        return None;
    }
    note_thread(pid_tgid as u32);
    let layout = unsafe { core::ptr::read_volatile(&LAYOUT) };
    let kind = cookie_kind(cookie(ctx));

    let mut ev = TaskEvent {
        // SAFETY: helper without side effects.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        header,
        tid: pid_tgid as u32,
        kind,
        ..TaskEvent::default()
    };
    if header != 0 {
        read_header(&mut ev, header, &layout);
    }
    Some(ev)
}

#[inline(always)]
fn submit(ev: &TaskEvent) {
    match EVENTS.reserve::<TaskEvent>(0) {
        Some(mut slot) => {
            slot.write(*ev);
            slot.submit(BPF_RB_NO_WAKEUP);
        }
        None => count_lost(),
    }
}

/// Whether the current thread's spawn was announced by a spawn call on this CPU (consumes
/// the announcement).
#[inline(always)]
fn spawn_call_seen() -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    match LAST_SPAWN_CALL.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        Some(last) => unsafe {
            let seen = *last == tid;
            *last = 0;
            seen
        },
        None => false,
    }
}

/// Packs the argument registers and the return address of a spawn call: userspace finds
/// the caller's `Location` among them (its register depends on the future's size).
#[inline(always)]
fn emit_call(ctx: &ProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: see `event`.
    let target = unsafe { core::ptr::read_volatile(&TARGET_TGID) };
    if (pid_tgid >> 32) as u32 != target {
        return;
    }
    if let Some(last) = LAST_SPAWN_CALL.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *last = pid_tgid as u32 };
    }
    // SAFETY: the context of a uprobe is the target thread's saved registers.
    let regs = unsafe { &*ctx.regs };
    let ev = CallEvent {
        // SAFETY: helper without side effects.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        args: [regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8, regs.r9],
        // SAFETY: bpf_probe_read_user reports faults instead of taking them.
        return_address: unsafe { bpf_probe_read_user(regs.rsp as *const u64) }.unwrap_or(0),
        tid: pid_tgid as u32,
        kind: EventKind::SpawnCall as u8,
        ..CallEvent::default()
    };
    match EVENTS.reserve::<CallEvent>(0) {
        Some(mut slot) => {
            slot.write(ev);
            slot.submit(BPF_RB_NO_WAKEUP);
        }
        None => count_lost(),
    }
}

/// A spawn path drew a task id: the id is in the register the cookie names (read from
/// the saved registers: every candidate is loaded, then one is picked, so the verifier
/// sees constant context offsets); the site's index in the plan goes in `state`.
#[inline(always)]
fn emit_id(ctx: &ProbeContext) {
    let c = cookie(ctx);
    let Some(mut ev) = event(ctx, 0) else {
        return;
    };
    // SAFETY: the context of a uprobe is the target thread's saved registers.
    let regs = unsafe { &*ctx.regs };
    let all = [
        regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi, regs.r8,
        regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
    ];
    let arg = cookie_arg(c);
    let reg = (arg & !REG_ARG_CALLER).wrapping_sub(REG_ARG_BASE) as usize;
    ev.task_id = if reg < all.len() { all[reg] } else { 0 };
    ev.state = cookie_site(c);
    if arg & REG_ARG_CALLER != 0 {
        // SAFETY: bpf_probe_read_user reports faults instead of taking them.
        ev.owner_id = unsafe { bpf_probe_read_user(regs.rsp as *const u64) }.unwrap_or(0);
    }
    submit(&ev);
}

/// Copies the top of the user stack with the registers an unwinder starts from. The copy
/// stops short of the stack's end by retrying smaller sizes: a read that runs into the
/// guard page above the stack fails whole. Whether it was queued.
#[inline(always)]
fn emit_stack(regs: &pt_regs, kind: EventKind) -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: see `event`.
    if (pid_tgid >> 32) as u32 != unsafe { core::ptr::read_volatile(&TARGET_TGID) } {
        return false;
    }
    let Some(mut slot) = EVENTS.reserve::<StackEvent>(0) else {
        count_lost();
        return false;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points at the reserved record; every field is written before submit.
    unsafe {
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).ip = regs.rip;
        (*ev).sp = regs.rsp;
        (*ev).bp = regs.rbp;
        (*ev).tid = pid_tgid as u32;
        (*ev).kind = kind as u8;
        (*ev).flags = 0;
        (*ev)._pad = [0; 2];
        (*ev)._pad2 = 0;
        let dst = core::ptr::addr_of_mut!((*ev).stack) as *mut core::ffi::c_void;
        let src = regs.rsp as *const core::ffi::c_void;
        let mut len = 0u32;
        if bpf_probe_read_user_raw(dst, STACK_COPY as u32, src) == 0 {
            len = STACK_COPY as u32;
        } else if bpf_probe_read_user_raw(dst, 2048, src) == 0 {
            len = 2048;
        } else if bpf_probe_read_user_raw(dst, 1024, src) == 0 {
            len = 1024;
        } else if bpf_probe_read_user_raw(dst, 256, src) == 0 {
            len = 256;
        }
        (*ev).len = len;
    }
    slot.submit(BPF_RB_NO_WAKEUP);
    true
}

#[inline(always)]
unsafe fn bpf_probe_read_user_raw(
    dst: *mut core::ffi::c_void,
    size: u32,
    src: *const core::ffi::c_void,
) -> i64 {
    // SAFETY: the helper checks both pointers and reports faults.
    unsafe { aya_ebpf::helpers::generated::bpf_probe_read_user(dst, size, src) }
}

/// Records where the current target thread's thread-locals are (read-only, kernel memory).
#[inline(always)]
fn note_thread(tid: u32) {
    // SAFETY: set by the loader before attach, read-only afterwards.
    let off = unsafe { core::ptr::read_volatile(&TASK_FSBASE) };
    if off == 0 {
        return;
    }
    let Some(last) = LAST_THREAD.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    unsafe {
        if *last == tid {
            return;
        }
        *last = tid;
    }
    // SAFETY: the current task_struct is valid while its program runs; the read is checked.
    let task = unsafe { bpf_get_current_task() };
    if let Ok(fsbase) = unsafe { bpf_probe_read_kernel((task + off) as *const u64) } {
        let _ = THREADS.insert(&tid, &fsbase, 0);
    }
}

#[inline(always)]
fn count_lost() {
    count(COUNTER_LOST);
}

#[inline(always)]
fn count(counter: u32) {
    if let Some(n) = LOST.get_ptr_mut(counter) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
}

/// Reads state, owner and task id from the target's task header. Read-only; a failed read
/// marks the event instead of dropping it. State, vtable and owner id sit in the header's
/// first `HEADER_READ_WORDS` words (the loader refuses a layout where they do not): one
/// read for the three, since each user-memory read costs about as much as the rest of
/// the program.
#[inline(always)]
fn read_header(ev: &mut TaskEvent, header: u64, layout: &HeaderLayout) {
    // SAFETY: bpf_probe_read_user copes with any address and reports faults.
    unsafe {
        let Ok(words) = bpf_probe_read_user(header as *const [u64; HEADER_READ_WORDS]) else {
            ev.flags |= EVENT_FLAG_UNREADABLE;
            return;
        };
        let word = |off: u64| words[(off / 8) as usize % HEADER_READ_WORDS];
        ev.state = word(layout.state);
        ev.owner_id = word(layout.owner_id);
        let v = word(layout.vtable);
        ev.vtable = v;
        // Before tokio 1.23 the vtable does not say where the id is: userspace finds it.
        if layout.vtable_id_offset != NO_ID_OFFSET
            && let Ok(id_off) = bpf_probe_read_user((v + layout.vtable_id_offset) as *const u64)
        {
            // An id offset beyond a task cell's plausible size means a bad layout.
            if id_off < 4096
                && let Ok(id) = bpf_probe_read_user((header + id_off) as *const u64)
            {
                ev.task_id = id;
            }
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
