//! Loads the kernel program, attaches it to the plan's sites through one `uprobe_multi`
//! link per program (or one perf-event link per site, on kernels without a usable
//! `uprobe_multi`), and drains the ring buffer. Dropping [`Probes`] detaches everything;
//! because links are file descriptors, the kernel also detaches them if tasktrace dies.

use std::{
    num::NonZeroU32,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        Iter, PerfEvent, ProgramError, RawTracePoint, UProbe,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
    },
};
use tracer_common::{
    CALL_EVENT_SIZE, CallEvent, EVENT_SIZE, GLOBAL_AWAIT_STACKS, GLOBAL_LAYOUT, GLOBAL_STACK_BYTES,
    GLOBAL_TARGET_TGID, GLOBAL_TASK_FSBASE, GLOBAL_TASK_IDS, GLOBAL_TEXT_RANGE, HeaderLayout,
    MAP_EVENTS, MAP_LOST, MAP_SITE_KNOWN, MAP_THREADS, PROGRAM_THREAD_ITER, STACK_EVENT_SIZE,
    StackEvent, TaskEvent,
};

use crate::{
    error::{Error, Result},
    live::kernel::TaskOffsets,
    plan::{AttachMode, Plan, Site},
    tokio_versions::Layout,
};

/// One ring record, told apart by length.
pub enum Record {
    Task(TaskEvent),
    Call(CallEvent),
    Stack(Box<StackEvent>),
}

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

pub struct Probes {
    ebpf: Option<Ebpf>,
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    threads: Option<BpfHashMap<MapData, u32, u64>>,
    site_known: Option<BpfHashMap<MapData, u64, u8>>,
    /// The probe links: one per program (`uprobe_multi`) or one per site (perf-event
    /// path), owned here so that they can be released in parallel, and taken off and put
    /// back by [`Probes::disarm`] and [`Probes::arm`].
    links: Links,
    /// The links [`Probes::disarm`] leaves attached ([`Plan::always_attached`]).
    kept: Links,
    /// What re-attaching the sites needs.
    sites_again: SiteSet,
    /// Links being released off the event loop (a release waits for the kernel).
    releasing: Vec<std::thread::JoinHandle<()>>,
    pub attach_time: Duration,
    pub sites: usize,
    pub mode: AttachMode,
    /// Why the thread iterator could not be loaded (then only threads that run while a
    /// probe or the CPU sampler looks are found); `None` when it was, or was not asked for.
    pub thread_iter_error: Option<String>,
    thread_iter: bool,
}

/// The plan's sites and where they go: kept to attach them again.
struct SiteSet {
    binary: PathBuf,
    pid: NonZeroU32,
    entry: Vec<Site>,
    ret: Vec<Site>,
}

impl Probes {
    /// Loads and attaches. `binary` is the path the kernel resolves to the target's inode
    /// (`/proc/PID/exe` works for running processes, including in containers).
    pub fn attach(
        binary: &Path,
        plan: &Plan,
        tgid: u32,
        layout: &Layout,
        ring_bytes: u32,
        task: TaskOffsets,
        mode: AttachMode,
    ) -> Result<Self> {
        let started = Instant::now();
        // Spawn paths with no out-of-line spawn function (all of them under fat LTO,
        // `Handle::spawn` always) are named by unwinding a copy of the stack taken at the
        // spawn probe; userspace only unwinds when no Location was found.
        let stack_bytes = plan.stack_bytes;
        let header = HeaderLayout {
            state: layout.header_state,
            vtable: layout.header_vtable,
            owner_id: layout.header_owner_id,
            vtable_id_offset: layout
                .vtable_id_offset()
                .unwrap_or(tracer_common::NO_ID_OFFSET),
        };
        // The kernel side reads the header's first words in one go: a layout whose fields
        // fall outside them would be read wrong, silently.
        if !header.fits() {
            return Err(Error::Bpf {
                what: format!(
                    "the tokio layout puts a task header field outside the {} bytes the \
                     kernel side reads ({header:?}); the eBPF program needs a wider read",
                    8 * tracer_common::HEADER_READ_WORDS
                ),
                source: None,
            });
        }
        // Without it (no kernel BTF) threads go unrecorded and the plan keeps poll-end probes.
        let fsbase = task.fsbase.unwrap_or(0);
        let ids = task.ids.unwrap_or_default();
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_TARGET_TGID, &tgid, true)
            .override_global(GLOBAL_TASK_FSBASE, &fsbase, true)
            .override_global(GLOBAL_TASK_IDS, &ids, true)
            .override_global(GLOBAL_LAYOUT, &header, true)
            .override_global(GLOBAL_STACK_BYTES, &stack_bytes, true)
            .override_global(
                GLOBAL_AWAIT_STACKS,
                &u32::from(plan.await_stacks.is_some()),
                true,
            )
            .override_global(
                GLOBAL_TEXT_RANGE,
                &plan.await_stacks.unwrap_or_default(),
                true,
            )
            .map_max_entries(MAP_EVENTS, ring_bytes)
            // Preallocated LRU maps: a window without await stacks keeps them small.
            .map_max_entries(
                tracer_common::MAP_AWAIT_LAST,
                if plan.await_stacks.is_some() {
                    tracer_common::MAX_AWAIT_TASKS
                } else {
                    256
                },
            )
            .map_max_entries(
                tracer_common::MAP_AWAIT_SEEN,
                if plan.await_stacks.is_some() {
                    tracer_common::MAX_AWAIT_POINTS
                } else {
                    256
                },
            )
            .load(OBJECT)
            .map_err(|e| bpf_error("loading the eBPF object", e))?;
        let pid = NonZeroU32::new(tgid).ok_or_else(|| bpf_missing("pid 0"))?;
        // Sites the spawn gate attaches again and again, and those attached all along.
        let split = |sites: &[Site]| -> (Vec<Site>, Vec<Site>) {
            sites.iter().cloned().partition(|s| plan.always_attached(s))
        };
        let ((kept, gated), (kept_ret, gated_ret)) = (split(&plan.entry), split(&plan.ret));
        let kept = SiteSet {
            binary: binary.to_owned(),
            pid,
            entry: kept,
            ret: kept_ret,
        };
        let kept = attach_sites(&mut ebpf, &kept, mode)?;
        let sites_again = SiteSet {
            binary: binary.to_owned(),
            pid,
            entry: gated,
            ret: gated_ret,
        };
        let links = attach_sites(&mut ebpf, &sites_again, mode)?;
        let mut thread_iter_error = None;
        if plan.thread_sampling {
            attach_thread_sampler(&mut ebpf)?;
            if task.ids.is_some() {
                thread_iter_error = load_thread_iter(&mut ebpf).err();
            } else {
                thread_iter_error = Some("the kernel's BTF has no task_struct.pid/tgid".into());
            }
        }
        attach_exec_watch(&mut ebpf)?;
        let ring = ebpf
            .take_map(MAP_EVENTS)
            .ok_or_else(|| bpf_missing("EVENTS map missing from the object"))?;
        let ring = RingBuf::try_from(ring).map_err(|e| bpf_error("opening a map", e))?;
        let lost = ebpf
            .take_map(MAP_LOST)
            .ok_or_else(|| bpf_missing("LOST map missing from the object"))?;
        let lost = PerCpuArray::try_from(lost).map_err(|e| bpf_error("opening a map", e))?;
        let threads = ebpf
            .take_map(MAP_THREADS)
            .and_then(|m| BpfHashMap::try_from(m).ok());
        let site_known = ebpf
            .take_map(MAP_SITE_KNOWN)
            .and_then(|m| BpfHashMap::try_from(m).ok());
        Ok(Self {
            ebpf: Some(ebpf),
            ring,
            lost,
            threads,
            site_known,
            links,
            kept,
            sites_again,
            releasing: Vec::new(),
            attach_time: started.elapsed(),
            sites: plan.site_count(),
            mode,
            thread_iter: plan.thread_sampling && thread_iter_error.is_none(),
            thread_iter_error,
        })
    }

    /// Whether the plan's sites are attached now.
    pub fn armed(&self) -> bool {
        !self.links.entry.is_empty() || !self.links.ret.is_empty()
    }

    /// Detaches the plan's sites, keeping the programs, the ring and the maps: events
    /// already queued stay readable. The links are released on a thread of their own
    /// (each release waits for the kernel to be done with its uprobes).
    pub fn disarm(&mut self) {
        let links = std::mem::take(&mut self.links);
        self.releasing.retain(|h| !h.is_finished());
        // Without a thread to spare the closure, links and all, is dropped here: the
        // links detach on this thread instead.
        if let Ok(h) = std::thread::Builder::new()
            .name("probe-release".into())
            .spawn(move || release_links(links, &|_, _| {}))
        {
            self.releasing.push(h);
        }
    }

    /// Attaches the plan's sites again after [`Probes::disarm`]; how long it took.
    pub fn arm(&mut self) -> Result<Duration> {
        let started = Instant::now();
        if self.armed() {
            return Ok(Duration::ZERO);
        }
        let ebpf = self
            .ebpf
            .as_mut()
            .ok_or_else(|| bpf_missing("programs unloaded"))?;
        self.links = attach_sites(ebpf, &self.sites_again, self.mode)?;
        Ok(started.elapsed())
    }

    /// Hands every queued event to `sink`; returns how many.
    pub fn drain(&mut self, mut sink: impl FnMut(Record)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            // SAFETY (both arms): the kernel wrote a whole record of that size;
            // read_unaligned copes with the ring's 8-byte alignment either way.
            match item.len() {
                CALL_EVENT_SIZE => sink(Record::Call(unsafe {
                    std::ptr::read_unaligned(item.as_ptr().cast::<CallEvent>())
                })),
                EVENT_SIZE => sink(Record::Task(unsafe {
                    std::ptr::read_unaligned(item.as_ptr().cast::<TaskEvent>())
                })),
                STACK_EVENT_SIZE => {
                    // SAFETY: as above; boxed because the record is 4 KiB.
                    let ev =
                        unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<StackEvent>()) };
                    sink(Record::Stack(Box::new(ev)))
                }
                _ => continue,
            }
            n += 1;
        }
        n
    }

    /// Events the kernel could not queue because the ring was full (all CPUs).
    pub fn lost_events(&self) -> u64 {
        self.counter(tracer_common::COUNTER_LOST)
    }

    /// Waker-clone probe hits in the target (await chains from the stack).
    pub fn clone_hits(&self) -> u64 {
        self.counter(tracer_common::COUNTER_CLONE_HITS)
    }

    fn counter(&self, index: u32) -> u64 {
        self.lost
            .get(&index, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// Tells the kernel side which task vtables (process addresses) belong to futures
    /// whose spawn site is named from the code: their spawns skip the stack copy. Returns
    /// how many it took (the map's capacity bounds them; the rest keep their copies).
    pub fn mark_sites_known(&mut self, vtables: impl IntoIterator<Item = u64>) -> usize {
        let Some(map) = self.site_known.as_mut() else {
            return 0;
        };
        vtables
            .into_iter()
            .filter(|v| map.insert(v, &1u8, 0).is_ok())
            .count()
    }

    /// Target threads seen so far and their TLS pointers.
    pub fn threads(&self) -> Vec<(u32, u64)> {
        self.threads
            .as_ref()
            .map(|m| m.iter().filter_map(|r| r.ok()).collect())
            .unwrap_or_default()
    }

    /// Runs the thread iterator: every thread of the target, asleep or not, gets its TLS
    /// pointer recorded (read from kernel memory; the target is not touched). False when
    /// there is no iterator or it failed.
    pub fn find_threads(&mut self) -> bool {
        if !self.thread_iter {
            return false;
        }
        let Some(p) = self
            .ebpf
            .as_mut()
            .and_then(|e| e.program_mut(PROGRAM_THREAD_ITER))
            .and_then(|p| <&mut Iter>::try_from(p).ok())
        else {
            return false;
        };
        // One link and one pass per call: reading the iterator to its end runs it over
        // every task of the system; the program keeps the target's and writes nothing.
        let ran = p
            .attach()
            .and_then(|id| p.take_link(id))
            .ok()
            .and_then(|link| link.into_file().ok())
            .map(|mut f| std::io::copy(&mut f, &mut std::io::sink()).is_ok());
        ran == Some(true)
    }

    /// Detaches every probe and unloads the programs; the ring stays readable so events
    /// queued before the detach can still be drained. Returns how long it took.
    /// `progress(done, total)` follows the per-site links, which take a while each.
    pub fn detach(&mut self, progress: &(dyn Fn(usize, usize) + Sync)) -> Duration {
        let started = Instant::now();
        let mut links = std::mem::take(&mut self.links);
        let kept = std::mem::take(&mut self.kept);
        links.entry.extend(kept.entry);
        links.ret.extend(kept.ret);
        release_links(links, progress);
        for h in self.releasing.drain(..) {
            let _ = h.join();
        }
        if let Some(mut ebpf) = self.ebpf.take() {
            // Return probes first. Measured on 6.18: releasing the entry link first takes
            // 10-25 s (its uprobe sync waits on the return instances that the still
            // attached return consumers keep creating); in this order both take < 0.2 s.
            for name in [
                "task_return",
                "task_return_one",
                "task_entry",
                "task_entry_one",
            ] {
                if let Some(p) = ebpf.program_mut(name) {
                    let p: std::result::Result<&mut UProbe, _> = p.try_into();
                    if let Ok(p) = p {
                        let _ = p.unload();
                    }
                }
            }
            drop(ebpf);
        }
        started.elapsed()
    }
}

/// The named program, loaded.
fn load_uprobe<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut UProbe> {
    let program: &mut UProbe = ebpf
        .program_mut(name)
        .ok_or_else(|| bpf_missing(&format!("program {name} missing from the object")))?
        .try_into()
        .map_err(|e: ProgramError| bpf_error("a program of the wrong type", e))?;
    // Loaded once: attaching again (the spawn gate) reuses it.
    if program.fd().is_err() {
        program
            .load()
            .map_err(|e| bpf_error(&format!("loading {name}"), e))?;
    }
    Ok(program)
}

/// Every site of `set`, by the kernel's attach path; the links come back owned.
fn attach_sites(ebpf: &mut Ebpf, set: &SiteSet, mode: AttachMode) -> Result<Links> {
    let mut links = Links::default();
    let (binary, pid) = (set.binary.as_path(), set.pid);
    match mode {
        AttachMode::Multi => {
            links
                .entry
                .extend(attach_multi(ebpf, "task_entry", &set.entry, binary, pid)?);
            links
                .ret
                .extend(attach_multi(ebpf, "task_return", &set.ret, binary, pid)?);
        }
        AttachMode::Perf => {
            let name = "task_entry_one";
            attach_each(ebpf, name, &set.entry, binary, pid, &mut links.entry)?;
            let name = "task_return_one";
            attach_each(ebpf, name, &set.ret, binary, pid, &mut links.ret)?;
        }
    }
    Ok(links)
}

fn point(s: &Site) -> UProbeAttachPoint<'static> {
    UProbeAttachPoint {
        location: UProbeAttachLocation::AbsoluteOffset(s.file_offset),
        cookie: Some(s.cookie),
    }
}

/// Every site through one `uprobe_multi` link.
fn attach_multi(
    ebpf: &mut Ebpf,
    name: &str,
    sites: &[Site],
    binary: &Path,
    pid: NonZeroU32,
) -> Result<Option<UProbeLink>> {
    if sites.is_empty() {
        return Ok(None);
    }
    let program = load_uprobe(ebpf, name)?;
    let id = program
        .attach(
            sites.iter().map(point),
            binary,
            UProbeScope::OneProcess(pid),
        )
        .map_err(|e| bpf_error(&format!("attaching {name} to {} sites", sites.len()), e))?;
    let link = program
        .take_link(id)
        .map_err(|e| bpf_error(&format!("taking the link of {name}"), e))?;
    Ok(Some(link))
}

/// Probe links by program: one each (`uprobe_multi`) or one per site (perf-event path).
#[derive(Default)]
struct Links {
    entry: Vec<UProbeLink>,
    ret: Vec<UProbeLink>,
}

/// One perf-event link per site, each taken out of the program so that they can be
/// released in parallel (`release_links`). On failure the links made so far are
/// released on the way out (`links` belongs to the caller, dropped with it).
fn attach_each(
    ebpf: &mut Ebpf,
    name: &str,
    sites: &[Site],
    binary: &Path,
    pid: NonZeroU32,
    links: &mut Vec<UProbeLink>,
) -> Result<()> {
    if sites.is_empty() {
        return Ok(());
    }
    let program = load_uprobe(ebpf, name)?;
    for site in sites {
        let id = program
            .attach([point(site)], binary, UProbeScope::OneProcess(pid))
            .map_err(|e| perf_attach_error(name, site, e))?;
        let link = program
            .take_link(id)
            .map_err(|e| bpf_error(&format!("taking the link of {name}"), e))?;
        links.push(link);
    }
    Ok(())
}

fn perf_attach_error(name: &str, site: &Site, e: ProgramError) -> Error {
    if matches!(e, ProgramError::AttachCookieNotSupported) {
        return Error::KernelLacks {
            what: format!(
                "attaching {name}: this kernel cannot give perf-event uprobes an attach cookie \
                 (that needs BPF perf links, Linux 5.15)"
            ),
            hint: "tasktrace needs Linux >= 5.15; `tasktrace inspect` prints what the running kernel offers".into(),
        };
    }
    bpf_error(
        &format!(
            "attaching {name} to {} (file offset {:#x})",
            site.function, site.file_offset
        ),
        e,
    )
}

/// Threads releasing per-site links at once: each release waits for the kernel to be done
/// with its uprobe (about 0.1 s), and the waits overlap.
const RELEASE_THREADS: usize = 16;

/// Drops the links on a few threads, return probes before entry probes (see
/// `Probes::detach`), reporting progress as they go.
fn release_links(links: Links, progress: &(dyn Fn(usize, usize) + Sync)) {
    let total = links.ret.len() + links.entry.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    for phase in [links.ret, links.entry] {
        release_in_parallel(phase, &done, total, progress);
    }
}

fn release_in_parallel(
    links: Vec<UProbeLink>,
    done: &std::sync::atomic::AtomicUsize,
    total: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) {
    let threads = RELEASE_THREADS.min(links.len());
    let queue = std::sync::Mutex::new(links.into_iter());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.next());
                    let Ok(Some(link)) = next else { break };
                    drop(link);
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    progress(n, total);
                }
            });
        }
    });
}

/// The raw tracepoint that tells when the target execs (the window ends there).
fn attach_exec_watch(ebpf: &mut Ebpf) -> Result<()> {
    let program: &mut RawTracePoint = ebpf
        .program_mut("target_exec")
        .ok_or_else(|| bpf_missing("program target_exec missing from the object"))?
        .try_into()
        .map_err(|e: ProgramError| bpf_error("a program of the wrong type", e))?;
    program
        .load()
        .map_err(|e| bpf_error("loading target_exec", e))?;
    program
        .attach("sched_process_exec")
        .map_err(|e| bpf_error("attaching target_exec to sched_process_exec", e))?;
    Ok(())
}

/// How often each CPU checks which target thread it runs: enough to learn every thread
/// that runs at all within a fraction of a second, too rare to cost anything.
const THREAD_SAMPLE_HZ: u64 = 49;

/// One CPU-clock perf event per online CPU, all feeding `thread_sample`.
fn attach_thread_sampler(ebpf: &mut Ebpf) -> Result<()> {
    let program: &mut PerfEvent = ebpf
        .program_mut("thread_sample")
        .ok_or_else(|| bpf_missing("program thread_sample missing from the object"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| bpf_error("a program of the wrong type", e))?;
    program
        .load()
        .map_err(|e| bpf_error("loading thread_sample", e))?;
    let cpus = aya::util::online_cpus().map_err(|(what, e)| Error::Bpf {
        what: format!("reading online CPUs ({what})"),
        source: Some(e.into()),
    })?;
    for cpu in cpus {
        program
            .attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(THREAD_SAMPLE_HZ),
                false,
            )
            .map_err(|e| bpf_error(&format!("attaching thread_sample on CPU {cpu}"), e))?;
    }
    Ok(())
}

/// Loads the thread iterator (Linux 5.8+, with BTF); why not, if it cannot be.
fn load_thread_iter(ebpf: &mut Ebpf) -> std::result::Result<(), String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("reading the kernel's BTF: {e}"))?;
    let program: &mut Iter = ebpf
        .program_mut(PROGRAM_THREAD_ITER)
        .ok_or("the thread iterator is missing from the object")?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())?;
    program
        .load("task", &btf)
        .map_err(|e| format!("loading the task iterator: {}", crate::error::chain(&e)))
}

fn bpf_missing(what: &str) -> Error {
    Error::Bpf {
        what: what.to_owned(),
        source: None,
    }
}

/// The loader's error, kept as the source (the message shows its whole chain: aya's outer
/// errors say what failed, the inner ones why).
fn bpf_error<E: std::error::Error + Send + Sync + 'static>(what: &str, e: E) -> Error {
    let chain = crate::error::chain(&e);
    let denied = chain.contains("Operation not permitted") || chain.contains("Permission denied");
    // Refused for want of a capability (not root, or root without it), not a kernel
    // refusal of the program.
    // SAFETY: geteuid has no preconditions.
    if denied && (unsafe { libc::geteuid() } != 0 || !crate::live::caps::missing().is_empty()) {
        Error::privileges(format!("{what}: {chain}"))
    } else {
        Error::Bpf {
            what: what.to_owned(),
            source: Some(Box::new(e)),
        }
    }
}

/// The kernel side alone, the way aya's integration tests load a program: the entry
/// program attached to a trigger function of this very test binary, called with a fake
/// task header built here, must pack what the header says into the ring.
#[cfg(test)]
mod tests {
    use tracer_common::{EventKind, HeaderArg, cookie};

    use super::*;
    use crate::{binary::elf::BinaryInfo, plan::Plan, tokio_versions};

    /// The probed function: `raw::poll`'s shape (the header pointer in the first argument).
    #[inline(never)]
    #[unsafe(no_mangle)]
    extern "C" fn tasktrace_test_trigger(header: *const u64) -> u64 {
        // SAFETY: the caller passes a valid header.
        unsafe { std::ptr::read_volatile(header) }
    }

    fn bpf_available() -> bool {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        if std::env::var("TASKTRACE_SKIP_BPF_TESTS").as_deref() == Ok("1") {
            eprintln!("SKIPPED: not root and TASKTRACE_SKIP_BPF_TESTS=1");
            return false;
        }
        panic!(
            "this test loads eBPF and needs root; run it as root, or set TASKTRACE_SKIP_BPF_TESTS=1 to skip it explicitly"
        );
    }

    #[test]
    fn the_entry_program_packs_a_task_header_into_the_ring() {
        entry_program_packs_a_header(AttachMode::Multi);
    }

    /// The same through a perf-event link per site, the path of kernels before 6.10.
    #[test]
    fn the_per_site_entry_program_packs_a_task_header_into_the_ring() {
        entry_program_packs_a_header(AttachMode::Perf);
    }

    /// Both tests probe the one trigger of this process: one at a time, or each would
    /// see the other's hit.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn entry_program_packs_a_header(mode: AttachMode) {
        if !bpf_available() {
            return;
        }
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let data = std::fs::read(&exe).unwrap();
        let bin = BinaryInfo::parse(&exe, &data).unwrap();
        let &(vaddr, _, _) = bin
            .text_symbols
            .iter()
            .find(|s| &*s.2 == "tasktrace_test_trigger")
            .expect("the trigger's symbol");
        let layout = &tokio_versions::select(None).unwrap().knowledge.layout;
        let plan = Plan {
            entry: vec![Site {
                function: "tasktrace_test_trigger",
                vaddr,
                file_offset: bin.file_offset(vaddr).unwrap(),
                cookie: cookie(EventKind::PollStart, HeaderArg::Arg0),
                placement: None,
            }],
            ..Default::default()
        };
        let mut probes = Probes::attach(
            &exe,
            &plan,
            std::process::id(),
            layout,
            1 << 16,
            Default::default(),
            mode,
        )
        .expect("load and attach");
        // A task header as tokio lays it out, and the task id where its vtable says.
        let id_offset = 0x60u64;
        let mut vtable = [0u64; 16];
        vtable[(layout.vtable_id_offset().expect("1.23+ layout") / 8) as usize] = id_offset;
        let mut header = [0u64; 16];
        header[(layout.header_state / 8) as usize] = 0xcc;
        header[(layout.header_vtable / 8) as usize] = vtable.as_ptr() as u64;
        header[(layout.header_owner_id / 8) as usize] = 7;
        header[(id_offset / 8) as usize] = 4242;
        std::hint::black_box(tasktrace_test_trigger(header.as_ptr()));
        let mut events = Vec::new();
        probes.drain(|r| {
            if let Record::Task(ev) = r {
                events.push(ev);
            }
        });
        probes.detach(&|_, _| {});
        assert_eq!(probes.mode, mode);
        assert_eq!(events.len(), 1, "{events:?}");
        let ev = &events[0];
        assert_eq!(ev.kind, EventKind::PollStart as u8);
        assert_eq!(ev.header, header.as_ptr() as u64);
        assert_eq!(ev.state, 0xcc);
        assert_eq!(ev.vtable, vtable.as_ptr() as u64);
        assert_eq!(ev.owner_id, 7);
        assert_eq!(ev.task_id, 4242);
        assert_eq!(ev.flags, 0);
        assert_eq!(probes.lost_events(), 0);
    }

    /// The thread iterator finds a thread that sleeps all along (on no CPU for the CPU
    /// sampler, hit by no probe: a worker blocked inside a poll) and records its real TLS
    /// pointer, as the thread itself reads it.
    #[test]
    fn the_thread_iterator_records_a_sleeping_threads_tls_pointer() {
        if !bpf_available() {
            return;
        }
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let (told, told_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            const ARCH_GET_FS: libc::c_long = 0x1003;
            let mut fs = 0u64;
            // SAFETY: ARCH_GET_FS writes this thread's fsbase where the pointer says.
            let rc = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_GET_FS, &mut fs) };
            assert_eq!(rc, 0, "arch_prctl");
            // SAFETY: no preconditions.
            told.send((unsafe { libc::gettid() } as u32, fs)).unwrap();
            let _ = stop_rx.recv();
        });
        let (tid, fs) = told_rx.recv().unwrap();
        let kernel = crate::live::kernel::KernelFeatures::probe();
        assert!(kernel.task_ids.is_some(), "task_struct.pid/tgid in the BTF");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let layout = &tokio_versions::select(None).unwrap().knowledge.layout;
        let plan = Plan {
            thread_sampling: true,
            ..Default::default()
        };
        let mut probes = Probes::attach(
            &exe,
            &plan,
            std::process::id(),
            layout,
            1 << 16,
            kernel.task_offsets(),
            AttachMode::Perf,
        )
        .expect("load and attach");
        assert_eq!(probes.thread_iter_error, None);
        assert!(probes.find_threads(), "the iterator ran");
        let threads = probes.threads();
        probes.detach(&|_, _| {});
        stop.send(()).unwrap();
        sleeper.join().unwrap();
        assert!(
            threads.contains(&(tid, fs)),
            "{tid} at {fs:#x} in {threads:x?}"
        );
        // No other process's threads (those of other tests may have exited since).
        let tgid = |tid: u32| {
            let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("Tgid:"))?;
            line[5..].trim().parse::<u32>().ok()
        };
        for &(t, _) in &threads {
            assert!(
                tgid(t).is_none_or(|g| g == std::process::id()),
                "thread {t} of another process"
            );
        }
        assert!(threads.iter().all(|&(_, fs)| fs != 0), "{threads:x?}");
    }
}
