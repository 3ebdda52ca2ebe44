//! `tasktrace dump --pid PID`: a one-shot snapshot of every task of every tokio runtime in
//! a live process, read from its memory with no probe attached — the tokio counterpart of
//! a goroutine dump. Each task: state, reference count, JoinHandle, future type, and,
//! where the binary's type information is found, its await chain (where it is parked);
//! grouped and counted by spawn site, future and await point. Spawn sites are named from
//! the code where it shows them (only `record` sees each spawn).

use std::{collections::BTreeMap, collections::HashMap, fmt::Write as _, sync::Arc};

use serde::Serialize;

use crate::{
    binary::read_binary,
    cmd::awaits::{self, DebugInfo},
    error::{Error, Result},
    live::{
        clock::monotonic_ns,
        locator::Locator,
        memory::Memory,
        target::Target,
        tasklist::{ListKind, OwnedList, Reader, Status},
    },
    plan::Plan,
    report::terminal_safe as safe,
    stream::{
        TargetInfo,
        records::{AwaitChain, AwaitsFrom},
    },
    tokio_versions,
};

pub const SCHEMA: &str = "tasktrace.dump/1";
/// Task lines in the text output; the JSON has every task.
const TEXT_TASKS: usize = 1000;

#[derive(Debug, Serialize)]
pub struct Dump {
    pub schema: &'static str,
    pub target: TargetInfo,
    /// Wall-clock time of the reading, seconds since the Unix epoch.
    pub taken_unix_s: f64,
    pub read_ms: f64,
    pub scanned_bytes: u64,
    pub lists: Vec<OwnedList>,
    pub summary: DumpSummary,
    /// Tasks by future type, largest group first.
    pub groups: Vec<Group>,
    pub tasks: Vec<DumpTask>,
    /// Where the await chains came from (`source`, `file`), or why there are none.
    pub await_chains: AwaitsFrom,
    pub warnings: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct DumpSummary {
    pub tasks: u64,
    pub idle: u64,
    pub notified: u64,
    pub running: u64,
    pub complete: u64,
    /// Idle, no JoinHandle, no waker, no AbortHandle: can never run again.
    pub definite_leaks: u64,
}

#[derive(Debug, Serialize)]
pub struct Group {
    pub future: Option<String>,
    /// Where the group's tasks were spawned, where the code shows it for their task
    /// vtable (`inspect`'s `task sites`); `null` otherwise.
    pub spawned_at: Option<String>,
    /// Where the group's tasks are parked: the `.await` of the innermost frame of their
    /// await chain, and the leaf future it waits on.
    pub parked_at: Option<String>,
    pub leaf: Option<String>,
    /// One task's whole chain, standing for the group's (the same innermost await point).
    pub await_chain: Option<AwaitChain>,
    pub tasks: u64,
    pub by_status: BTreeMap<&'static str, u64>,
    pub definite_leaks: u64,
}

#[derive(Debug, Serialize)]
pub struct DumpTask {
    pub id: u64,
    pub header: String,
    pub owner_id: u64,
    pub list: ListKind,
    pub status: Status,
    pub refs: u64,
    pub join_handle: bool,
    /// The raw state word, and whether two readings of it agreed.
    pub state: String,
    pub stable: bool,
    pub definite_leak: bool,
    pub future: Option<String>,
    pub spawned_at: Option<String>,
    /// Where the task is parked, for a task not running (`null`: no type information,
    /// or its future is not described there; see `await_chains`).
    pub await_chain: Option<AwaitChain>,
}

pub fn dump(pid: u32, symbols: Option<&std::path::Path>, debug: &DebugInfo) -> Result<Dump> {
    let target = Target::from_pid(pid)?;
    let (bin, table) = read_binary(&target.exe, &target.display, symbols)?;
    let selection = tokio_versions::select(bin.tokio_version).map_err(Error::UnsupportedTokio)?;
    let knowledge = selection.knowledge;
    // The same checks as tracing (stripped, not tokio), with the same remedies; the plan
    // also says where each task vtable's tasks are spawned.
    let plan = Plan::choose(
        std::path::Path::new(&target.display),
        &bin,
        &table,
        knowledge,
        crate::plan::PlanOpts {
            spawn_sites: false,
            mode: crate::plan::Mode::Full,
            // dump only reads memory: no thread sampling.
            host_fsbase: None,
            await_stacks: false,
        },
    )?;
    let polls = awaits::poll_functions(&bin, &table, knowledge);
    let mut locator = Locator::new(table, pid, target.exe.clone());
    locator.set_vtable_sites(plan.code_sites());
    let vtables = locator
        .task_vtables(bin.instances(knowledge.symbols.raw_poll), &knowledge.layout)
        .ok_or(Error::NotMapped { pid })?;
    let snap = Reader::new(pid, knowledge, &vtables)?.snapshot(monotonic_ns())?;
    let (types, await_chains) = awaits::types(&target.exe, symbols, debug, &polls)?;
    let mut chains: HashMap<u64, AwaitChain> = match &types {
        Some(types) => awaits::read_all(
            types,
            &Memory::new(pid),
            &mut locator,
            knowledge.layout.slots.poll.index,
            &snap.tasks,
        )
        .into_iter()
        .map(|c| (c.header, c.chain))
        .collect(),
        None => HashMap::new(),
    };

    let mut names: HashMap<u64, Option<Arc<str>>> = HashMap::new();
    let mut sites: HashMap<u64, Option<Arc<str>>> = HashMap::new();
    let mut summary = DumpSummary::default();
    let mut tasks = Vec::with_capacity(snap.tasks.len());
    for t in &snap.tasks {
        let future = names
            .entry(t.vtable)
            .or_insert_with(|| locator.future_name(t.vtable))
            .as_deref()
            .map(str::to_owned);
        let spawned_at = sites
            .entry(t.vtable)
            .or_insert_with(|| {
                let bias = locator.bias()?;
                locator.vtable_site(t.vtable.checked_sub(bias)?)
            })
            .as_deref()
            .map(str::to_owned);
        summary.tasks += 1;
        match t.status {
            Status::Idle => summary.idle += 1,
            Status::Notified => summary.notified += 1,
            Status::Running => summary.running += 1,
            Status::Complete => summary.complete += 1,
        }
        summary.definite_leaks += u64::from(t.no_way_to_run);
        let await_chain = chains.remove(&t.header);
        tasks.push(DumpTask {
            id: t.id,
            header: format!("{:#x}", t.header),
            owner_id: t.owner_id,
            list: t.list,
            status: t.status,
            refs: u64::from(t.refs),
            join_handle: t.join_handle,
            state: format!("{:#x}", t.state),
            stable: t.stable,
            definite_leak: t.no_way_to_run,
            future,
            spawned_at,
            await_chain,
        });
    }
    tasks.sort_by_key(|t| (t.owner_id, t.id));
    // By spawn site, future and await point: a legacy-mangled or stripped binary's tasks,
    // nameless, still group by where they were spawned; 5 000 tasks parked at one line
    // read as one line.
    type Key = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    for t in &tasks {
        let parked_at = t.await_chain.as_ref().and_then(AwaitChain::parked_at);
        let leaf = t.await_chain.as_ref().and_then(|c| c.leaf.clone());
        let key = (
            t.spawned_at.clone(),
            t.future.clone(),
            parked_at.clone(),
            leaf.clone(),
        );
        let g = groups.entry(key).or_insert_with(|| Group {
            future: t.future.clone(),
            spawned_at: t.spawned_at.clone(),
            parked_at,
            leaf,
            await_chain: t.await_chain.clone(),
            tasks: 0,
            by_status: BTreeMap::new(),
            definite_leaks: 0,
        });
        g.tasks += 1;
        *g.by_status.entry(t.status.as_str()).or_default() += 1;
        g.definite_leaks += u64::from(t.definite_leak);
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.tasks));
    let mut warnings: Vec<String> = selection.warning.into_iter().collect();
    warnings.extend(snap.warnings);
    Ok(Dump {
        schema: SCHEMA,
        target: TargetInfo {
            pid,
            pid_in_namespace: target.pid_in_namespace(),
            binary: target.display.clone(),
            build_id: bin.build_id.clone(),
            tokio_version: bin.tokio_version.map(|v| v.to_string()),
        },
        taken_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        read_ms: snap.read_ms,
        scanned_bytes: snap.scanned_bytes,
        lists: snap.lists,
        summary,
        groups,
        tasks,
        await_chains,
        warnings,
    })
}

/// ` (pid N in its namespace)` for a target in a container, else nothing.
fn ns_pid(t: &TargetInfo) -> String {
    t.pid_in_namespace
        .map(|p| format!(" (pid {p} in its pid namespace)"))
        .unwrap_or_default()
}

pub fn render_text(d: &Dump) -> String {
    let mut out = String::new();
    let s = &d.summary;
    let _ = writeln!(
        out,
        "tasktrace dump: pid {}{} ({}), tokio {}: {} tasks in {} task list(s), read in {:.1} ms \
         ({:.1} MiB scanned)",
        d.target.pid,
        ns_pid(&d.target),
        safe(&d.target.binary),
        d.target.tokio_version.as_deref().unwrap_or("unknown"),
        s.tasks,
        d.lists.len(),
        d.read_ms,
        d.scanned_bytes as f64 / (1 << 20) as f64
    );
    let _ = writeln!(
        out,
        "  idle {}, notified {}, running {}, complete {} | {} can never run again (definite leaks)",
        s.idle, s.notified, s.running, s.complete, s.definite_leaks
    );
    for w in &d.warnings {
        let _ = writeln!(out, "  warning: {}", safe(w));
    }
    let _ = writeln!(
        out,
        "\n  tasks   idle  notif    run  definite  spawned at · future"
    );
    for g in &d.groups {
        let n = |k: &str| g.by_status.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "  {:>5}  {:>5}  {:>5}  {:>5}  {:>8}  {} · {}",
            g.tasks,
            n("idle"),
            n("notified"),
            n("running"),
            g.definite_leaks,
            safe(g.spawned_at.as_deref().unwrap_or("(spawn site unknown)")),
            safe(g.future.as_deref().unwrap_or("(unknown future)"))
        );
        if let Some(c) = &g.await_chain {
            let _ = writeln!(out, "{:>47}parked: {}", "", safe(&c.one_line()));
        }
    }
    match (&d.await_chains.source, &d.await_chains.unavailable) {
        (Some(src), _) => {
            let _ = writeln!(
                out,
                "\n  await chains: from {} ({})",
                src,
                safe(d.await_chains.file.as_deref().unwrap_or("?"))
            );
        }
        (None, Some(why)) => {
            let _ = writeln!(out, "\n  await chains: unavailable: {}", safe(why));
        }
        (None, None) => {}
    }
    let _ = writeln!(out, "\nTASKS:");
    for t in d.tasks.iter().take(TEXT_TASKS) {
        let _ = writeln!(
            out,
            "  task {:>7} {:<8} refs {:<3} {:<14} {}{} · {}",
            t.id,
            t.status.as_str(),
            t.refs,
            if t.join_handle {
                "JoinHandle"
            } else {
                "no JoinHandle"
            },
            if t.definite_leak {
                "DEFINITE LEAK  "
            } else {
                ""
            },
            safe(t.spawned_at.as_deref().unwrap_or("(spawn site unknown)")),
            safe(t.future.as_deref().unwrap_or("(unknown future)"))
        );
        if let Some(c) = &t.await_chain {
            let _ = writeln!(out, "{:>16}parked: {}", "", safe(&c.one_line()));
        }
    }
    if d.tasks.len() > TEXT_TASKS {
        let _ = writeln!(
            out,
            "  … {} more (--json PATH has every task)",
            d.tasks.len() - TEXT_TASKS
        );
    }
    out
}
