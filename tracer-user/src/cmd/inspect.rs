//! `tasktrace inspect`: what a binary contains and what tasktrace can see in it — tokio
//! version, build traits, the attach plan with each event's probe sites and instance
//! counts, and which verdicts are unavailable and why. Attaches nothing.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::Serialize;
use tracer_common::{EventKind, cookie_kind};

use crate::{
    binary::elf::BuildTraits,
    error::{Error, Result},
    plan::{Plan, Unavailable},
    tokio_versions,
};

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub binary: String,
    /// How the attach plan was found: `symbols` or `vtable scan` (stripped).
    pub tier: Option<&'static str>,
    /// Task vtables found from symbols (`raw::poll` instances) and by the pattern scan
    /// used for stripped binaries, and whether the two agree address for address.
    pub task_vtables: TaskVtables,
    pub build_id: Option<String>,
    pub tokio_version: Option<String>,
    pub layout_file: Option<String>,
    pub traits: BuildTraits,
    /// Event → probe sites (function → instance count).
    pub plan: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    pub probe_sites: usize,
    /// Event → function → how its probes run: the kernel emulates the probed instruction
    /// (~1 µs a hit) or single-steps it (~12 µs); `moved` probes sit past the entry.
    pub execution: BTreeMap<&'static str, BTreeMap<&'static str, Execution>>,
    pub absent_optional: Vec<&'static str>,
    /// Spawn sites named from the code (future type → site): their spawn calls carry no
    /// probe.
    pub sites_from_code: BTreeMap<String, String>,
    /// Spawn paths by where their spawn event comes from: every path draws a task id
    /// (`spawn_ids`); the draws no spawn probe covers are probed themselves.
    pub id_draws: usize,
    pub id_draws_probed: Vec<crate::binary::spawn_ids::IdSite>,
    /// Task vtables whose tasks' spawn site the code shows (tasks alive before attach
    /// and spawns no probe saw get it): vtable address → site.
    pub vtable_sites: BTreeMap<String, String>,
    pub unavailable: Vec<Unavailable>,
    pub warnings: Vec<String>,
    /// What a trace on this host would get from its kernel.
    pub kernel: KernelView,
}

/// The running kernel's features, as a trace on this host would use them.
#[derive(Debug, Default, Serialize)]
pub struct KernelView {
    pub release: String,
    /// `multi` (one uprobe_multi link per program) or `perf` (one perf-event link per site).
    pub attach: &'static str,
    pub uprobe_multi: String,
    pub btf: bool,
    /// `task_struct.thread.fsbase` found in the BTF: the thread sampler can run.
    pub thread_sampler: bool,
}

impl KernelView {
    fn of(k: &crate::live::kernel::KernelFeatures) -> Self {
        Self {
            release: k.release.clone(),
            attach: k.attach_mode(None).map_or("-", |m| m.as_str()),
            uprobe_multi: k.describe_multi(),
            btf: k.btf,
            thread_sampler: k.fsbase.is_some(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Execution {
    pub emulated: usize,
    pub single_stepped: usize,
    pub moved: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct TaskVtables {
    pub by_symbols: Option<usize>,
    pub by_scan: usize,
    pub scan_matches_symbols: Option<bool>,
    /// tokio's waker vtable found by its shape (stripped binaries' wake probes), and
    /// whether its wake functions are the ones the symbols name.
    pub waker_by_scan: bool,
    pub waker_matches_symbols: Option<bool>,
}

pub fn inspect(display: &str, exe: &Path, symbols: Option<&Path>) -> Result<Inspection> {
    inspect_for(
        display,
        exe,
        symbols,
        &crate::live::kernel::KernelFeatures::probe(),
    )
}

/// What a trace of `exe` would get on a kernel with `kernel`'s features.
pub fn inspect_for(
    display: &str,
    exe: &Path,
    symbols: Option<&Path>,
    kernel: &crate::live::kernel::KernelFeatures,
) -> Result<Inspection> {
    let (bin, table) = crate::binary::read_binary(exe, display, symbols)?;
    // No tokio symbol and no tokio source path anywhere (a stripped tokio binary keeps
    // the paths in its panic Locations): not a tokio program, whatever layout it would get.
    if bin.tokio_version.is_none() && bin.tokio_symbols == 0 {
        return Err(crate::error::Error::NotTokio {
            path: exe.to_owned(),
        });
    }
    let mut out = Inspection {
        execution: Default::default(),
        binary: display.to_owned(),
        tier: None,
        task_vtables: TaskVtables::default(),
        build_id: bin.build_id.clone(),
        tokio_version: bin.tokio_version.map(|v| v.to_string()),
        layout_file: None,
        traits: bin.traits.clone(),
        plan: BTreeMap::new(),
        probe_sites: 0,
        absent_optional: Vec::new(),
        sites_from_code: BTreeMap::new(),
        id_draws: 0,
        id_draws_probed: Vec::new(),
        vtable_sites: BTreeMap::new(),
        unavailable: Vec::new(),
        warnings: Vec::new(),
        kernel: KernelView::default(),
    };
    out.kernel = KernelView::of(kernel);
    let selection = match tokio_versions::select(bin.tokio_version) {
        Ok(s) => s,
        Err(why) => {
            out.unavailable.push(Unavailable {
                what: "all verdicts".into(),
                why,
            });
            return Ok(out);
        }
    };
    out.warnings.extend(selection.warning);
    out.layout_file = Some(format!(
        "tokio {}+ (tested to {})",
        selection.knowledge.first, selection.knowledge.newest_tested
    ));
    let k = selection.knowledge;
    // No current task id in the thread context: nothing for the sampler to read.
    let no_task_context = k.context.is_none();
    if no_task_context {
        out.kernel.thread_sampler = false;
    }
    let mut scanned: Vec<u64> = table
        .scan_task_vtables(&k.layout)
        .iter()
        .map(|v| v.vaddr)
        .collect();
    scanned.sort_unstable();
    out.task_vtables.by_scan = scanned.len();
    let polls = bin.instances(k.symbols.raw_poll);
    if !polls.is_empty() {
        let mut by_symbols: Vec<u64> = table
            .task_vtables(polls, &k.layout)
            .iter()
            .map(|v| v.vaddr)
            .collect();
        by_symbols.sort_unstable();
        out.task_vtables.by_symbols = Some(by_symbols.len());
        out.task_vtables.scan_matches_symbols = Some(scanned == by_symbols);
    }
    let wakers = table.scan_waker_vtables(1 << k.refs.ref_shift, &k.layout);
    out.task_vtables.waker_by_scan = !wakers.is_empty();
    let (by_val, by_ref) = (
        bin.instances(k.symbols.wake_by_val),
        bin.instances(k.symbols.wake_by_ref),
    );
    if !by_val.is_empty() {
        let s = &k.layout.slots;
        let slots = |index: u64| -> Vec<u64> {
            let mut f: Vec<u64> = wakers
                .iter()
                .filter_map(|&w| table.vtable_slot(w, index))
                .collect();
            f.sort_unstable();
            f.dedup();
            f
        };
        // The tables found lead to the wake functions the symbols name, all of them.
        let (mut val, mut by_ref_sorted) = (by_val.to_vec(), by_ref.to_vec());
        val.sort_unstable();
        val.dedup();
        by_ref_sorted.sort_unstable();
        by_ref_sorted.dedup();
        out.task_vtables.waker_matches_symbols = Some(
            !wakers.is_empty()
                && slots(s.wake_by_val.index) == val
                && slots(s.wake_by_ref.index) == by_ref_sorted,
        );
    }
    match Plan::choose(
        Path::new(display),
        &bin,
        &table,
        k,
        crate::plan::PlanOpts {
            spawn_sites: true,
            mode: crate::plan::Mode::Full,
            // What a trace on this host would get.
            host_fsbase: kernel.fsbase,
            await_stacks: false,
        },
    ) {
        Ok(plan) => {
            out.tier = Some(plan.tier);
            out.unavailable.extend(plan.unavailable.iter().cloned());
            for site in plan.entry.iter().chain(&plan.ret) {
                let kind =
                    EventKind::from_u8(cookie_kind(site.cookie)).map_or("unknown", EventKind::name);
                *out.plan
                    .entry(kind)
                    .or_default()
                    .entry(site.function)
                    .or_default() += 1;
                if let Some(p) = &site.placement {
                    let e = out
                        .execution
                        .entry(kind)
                        .or_default()
                        .entry(site.function)
                        .or_default();
                    match p.execution {
                        crate::plan::placement::Execution::Emulated => e.emulated += 1,
                        crate::plan::placement::Execution::SingleStepped => e.single_stepped += 1,
                    }
                    e.moved += usize::from(p.offset > 0);
                }
            }
            out.probe_sites = plan.site_count();
            out.absent_optional = plan.absent.clone();
            out.sites_from_code = plan
                .static_sites
                .iter()
                .map(|s| (s.future.clone(), s.site.clone()))
                .collect();
            out.id_draws = plan.id_draws;
            out.id_draws_probed = plan.id_sites.clone();
            out.vtable_sites = plan
                .vtable_sites
                .iter()
                .map(|v| (format!("{:#x}", v.vtable), v.site.clone()))
                .collect();
            if plan.tier == "symbols" && !out.plan.contains_key("spawn_call") {
                out.warnings.push(
                    "no #[track_caller] spawn function survived inlining: spawn sites are named by \
                     unwinding (caller function+offset), not file:line"
                        .into(),
                );
            }
        }
        Err(
            e @ (Error::Stripped { .. } | Error::NotTokio { .. } | Error::MissingProbeSites { .. }),
        ) => {
            let why = e.to_string().lines().next().unwrap_or_default().to_owned();
            for what in ["leaked", "stuck", "never_polled", "spawn sites"] {
                out.unavailable.push(Unavailable {
                    what: what.into(),
                    why: why.clone(),
                });
            }
        }
        Err(e) => return Err(e),
    }
    if no_task_context {
        out.unavailable.push(Unavailable {
            what: "blocking polls in sample and lifecycle modes".into(),
            why: format!(
                "tokio {} keeps no current task id in its thread context (1.22 added it): \
                 without poll probes (full mode) a blocking poll is seen by the task-list \
                 readings alone, once its task is running in two readings a second apart \
                 with its future unchanged",
                bin.tokio_version
                    .map_or_else(|| "?".into(), |v| v.to_string())
            ),
        });
    }
    // Where idle tasks are parked needs the binary's types (in it, or a debug file
    // installed the standard way); `dump` and `record --debuginfo` can be given one.
    let (_, awaits) = crate::cmd::awaits::types(
        exe,
        symbols,
        &crate::cmd::awaits::DebugInfo::default(),
        &crate::cmd::awaits::poll_functions(&bin, &table, k),
    )?;
    if let Some(why) = awaits.unavailable {
        out.unavailable.push(Unavailable {
            what: "await chains".into(),
            why,
        });
    }
    Ok(out)
}

pub fn render_text(i: &Inspection) -> String {
    let mut s = String::new();
    let yes = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(s, "binary:        {}", i.binary);
    let _ = writeln!(
        s,
        "build-id:      {}",
        i.build_id.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        s,
        "tokio:         {}",
        i.tokio_version.as_deref().unwrap_or("not found")
    );
    let _ = writeln!(
        s,
        "layout file:   {}",
        i.layout_file.as_deref().unwrap_or("none")
    );
    let t = &i.traits;
    let _ = writeln!(
        s,
        "build:         symbols {}, DWARF {}, PIE {}, mangling {}, panic {}, LTO {}",
        yes(t.symbols),
        yes(t.dwarf),
        yes(t.pie),
        t.mangling.unwrap_or("-"),
        t.panic.unwrap_or("-"),
        t.lto_likely
            .map_or("-", |l| if l { "likely" } else { "no" })
    );
    let _ = writeln!(
        s,
        "task vtables:  {} by pattern scan{}",
        i.task_vtables.by_scan,
        match (
            i.task_vtables.by_symbols,
            i.task_vtables.scan_matches_symbols
        ) {
            (Some(n), Some(m)) => format!(
                ", {n} from symbols ({})",
                if m { "the same" } else { "they differ" }
            ),
            _ => String::new(),
        }
    );
    let _ = writeln!(
        s,
        "waker vtable:  {}",
        match (
            i.task_vtables.waker_by_scan,
            i.task_vtables.waker_matches_symbols
        ) {
            (false, _) => "not recognised by pattern",
            (true, Some(true)) => "recognised by pattern (the one the symbols name)",
            (true, Some(false)) => "recognised by pattern, but NOT the one the symbols name",
            (true, None) => "recognised by pattern",
        }
    );
    let _ = writeln!(
        s,
        "attach plan:   {} probe sites (from {})",
        i.probe_sites,
        i.tier.unwrap_or("-")
    );
    for (event, sites) in &i.plan {
        for (function, n) in sites {
            let how = i
                .execution
                .get(event)
                .and_then(|e| e.get(function))
                .map(|e| {
                    let moved = if e.moved > 0 {
                        format!(", {} moved past a single-stepped entry", e.moved)
                    } else {
                        String::new()
                    };
                    format!(
                        ": {} emulated, {} single-stepped{moved}",
                        e.emulated, e.single_stepped
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {event:<15} {function} ({n} instance{}{how})",
                if *n == 1 { "" } else { "s" }
            );
        }
    }
    for a in &i.absent_optional {
        let _ = writeln!(s, "  (absent, optional) {a}");
    }
    if !i.sites_from_code.is_empty() {
        let _ = writeln!(
            s,
            "spawn sites:   {} future types spawned from one place each, named from the code (their spawn calls need no probe)",
            i.sites_from_code.len()
        );
        for (future, site) in &i.sites_from_code {
            let _ = writeln!(s, "  {site:<31} {future}");
        }
    }
    if i.id_draws > 0 {
        let _ = writeln!(
            s,
            "spawn paths:   {} task-id draws; {} covered by the spawn probes above, {} probed at the draw (spawn path inlined past every spawn probe)",
            i.id_draws,
            i.id_draws - i.id_draws_probed.len().min(i.id_draws),
            i.id_draws_probed.len()
        );
        for d in &i.id_draws_probed {
            let site = if d.callers.is_empty() {
                d.site.as_deref().unwrap_or("site unknown").to_owned()
            } else {
                format!(
                    "out of line, the spawn is its caller's: {} call sites, {} named from the code",
                    d.callers.len(),
                    d.callers.iter().filter(|c| c.1.is_some()).count()
                )
            };
            let _ = writeln!(
                s,
                "  {:#x} in {} → {site}",
                d.vaddr,
                d.function.as_deref().unwrap_or("(no symbol)"),
            );
        }
    }
    if !i.vtable_sites.is_empty() {
        let _ = writeln!(
            s,
            "task sites:    {} task vtables name where their tasks are spawned (tasks alive before attach included)",
            i.vtable_sites.len()
        );
    }
    if i.unavailable.is_empty() {
        let _ = writeln!(s, "verdicts:      all available");
    }
    for u in &i.unavailable {
        let _ = writeln!(s, "unavailable:   {} — {}", u.what, u.why);
    }
    let k = &i.kernel;
    let _ = writeln!(
        s,
        "kernel:        {}: {}; attach {}; BTF {}{}",
        k.release,
        k.uprobe_multi,
        match k.attach {
            "multi" => "through one uprobe_multi link per program",
            "perf" => "through one perf-event uprobe per site (slower to detach)",
            other => other,
        },
        yes(k.btf),
        if k.thread_sampler {
            ", thread sampler on"
        } else {
            ", thread sampler off (poll returns and wakes are probed instead)"
        }
    );
    for w in &i.warnings {
        let _ = writeln!(s, "warning:       {w}");
    }
    s
}
