//! The attach plan: which functions of the target get a probe, at which file offset, and
//! what each hit means (the cookie the kernel side decodes).

use std::path::Path;

use serde::Serialize;
use tracer_common::{EventKind, HeaderArg, cookie};

use crate::{
    elf::BinaryInfo,
    error::{Error, Result},
    locations::LocationTable,
    tokio_versions::Knowledge,
};

/// One probe site.
#[derive(Clone, Debug, Serialize)]
pub struct Site {
    /// Function name (normalized).
    pub function: &'static str,
    pub vaddr: u64,
    pub file_offset: u64,
    #[serde(skip)]
    pub cookie: u64,
}

/// A verdict or signal this binary cannot give, and why.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Unavailable {
    pub what: String,
    pub why: String,
}

/// Sites for the entry program and for the return program.
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    /// How the sites were found: `symbols`, or `vtable scan` in a stripped binary.
    pub tier: &'static str,
    /// Task completion is observed by a probe; when not (stripped), it is inferred from
    /// the task-list readings (a finished task leaves its runtime's list).
    pub completion_probed: bool,
    /// Wakes are observed by a probe.
    pub wakes_probed: bool,
    /// Verdicts and signals this binary cannot give.
    pub unavailable: Vec<Unavailable>,
    /// Copy this many bytes of user stack at spawn probes, to name spawn sites by
    /// unwinding where no spawn function survived inlining (0: spawn sites are off).
    pub stack_bytes: u32,
    pub entry: Vec<Site>,
    #[serde(rename = "return")]
    pub ret: Vec<Site>,
    /// Functions the plan would use but the binary lacks (not fatal for optional ones).
    pub absent: Vec<&'static str>,
}

impl Plan {
    pub fn site_count(&self) -> usize {
        self.entry.len() + self.ret.len()
    }

    /// Builds the plan for a binary with symbols. Refuses binaries whose symbols cannot
    /// support the verdicts (stripped, not tokio, required functions missing).
    pub fn for_binary(
        path: &Path,
        bin: &BinaryInfo,
        k: &Knowledge,
        spawn_sites: bool,
    ) -> Result<Self> {
        if !bin.has_symtab && bin.tokio_version.is_none() {
            return Err(Error::NotTokio {
                path: path.to_owned(),
            });
        }
        if !bin.has_symtab {
            return Err(Error::Stripped {
                path: path.to_owned(),
                tokio_version: bin.tokio_version.map(|v| v.to_string()),
            });
        }
        if bin.tokio_symbols == 0 {
            return Err(Error::NotTokio {
                path: path.to_owned(),
            });
        }
        let s = &k.symbols;
        let mut plan = Plan {
            tier: "symbols",
            completion_probed: true,
            wakes_probed: true,
            ..Default::default()
        };
        let mut missing = Vec::new();
        // (function, kind, where the header is, required, return probe)
        let table: [(&'static str, EventKind, HeaderArg, bool, bool); 10] = [
            (
                s.raw_poll,
                EventKind::PollStart,
                HeaderArg::Arg0,
                true,
                false,
            ),
            (s.raw_poll, EventKind::PollEnd, HeaderArg::None, true, true),
            (
                s.harness_complete,
                EventKind::Complete,
                HeaderArg::Arg0,
                true,
                false,
            ),
            (
                s.raw_dealloc,
                EventKind::Dealloc,
                HeaderArg::Arg0,
                true,
                false,
            ),
            (
                s.raw_shutdown,
                EventKind::Shutdown,
                HeaderArg::Arg0,
                false,
                false,
            ),
            (
                s.owned_bind_inner,
                EventKind::Spawn,
                HeaderArg::Arg1,
                true,
                false,
            ),
            (
                s.blocking_spawn_task,
                EventKind::SpawnBlocking,
                HeaderArg::Arg1,
                false,
                false,
            ),
            (
                s.local_owned_bind,
                EventKind::SpawnLocal,
                HeaderArg::Ret,
                false,
                true,
            ),
            (
                s.wake_by_val,
                EventKind::WakeByVal,
                HeaderArg::Arg0,
                // Absent when no task ever builds a waker (then there is nothing to see).
                false,
                false,
            ),
            (
                s.wake_by_ref,
                EventKind::WakeByRef,
                HeaderArg::Arg0,
                // Absent when no task ever builds a waker (then there is nothing to see).
                false,
                false,
            ),
        ];
        for (function, kind, arg, required, is_return) in table {
            let addrs = bin.instances(function);
            if addrs.is_empty() {
                if required {
                    missing.push(function);
                } else if !plan.absent.contains(&function) {
                    plan.absent.push(function);
                }
                continue;
            }
            let found = sites(bin, function, kind, arg);
            if is_return {
                plan.ret.extend(found)
            } else {
                plan.entry.extend(found)
            }
        }
        // Spawn-site capture: optional, every instance that survived inlining.
        let spawn_calls = if spawn_sites { s.spawn_calls } else { &[] };
        plan.stack_bytes = if spawn_sites {
            tracer_common::STACK_COPY as u32
        } else {
            0
        };
        for &function in spawn_calls {
            plan.entry
                .extend(sites(bin, function, EventKind::SpawnCall, HeaderArg::None));
        }
        // bind_inner inlined into its only callers: take the spawn at their return. The
        // task may already have been polled by then; the aggregator merges the two.
        if missing.contains(&s.owned_bind_inner) {
            let before = plan.ret.len();
            for &function in s.spawn_returns {
                plan.ret
                    .extend(sites(bin, function, EventKind::Spawn, HeaderArg::Ret));
            }
            let found = plan.ret.len() > before;
            if found {
                missing.retain(|m| *m != s.owned_bind_inner);
            }
        }
        // Identical functions may share one address: one probe per (address, meaning).
        for list in [&mut plan.entry, &mut plan.ret] {
            list.sort_by_key(|s| (s.vaddr, s.cookie));
            list.dedup_by_key(|s| (s.vaddr, s.cookie));
        }
        if !missing.is_empty() {
            missing.dedup();
            return Err(Error::MissingProbeSites {
                path: path.to_owned(),
                missing,
            });
        }
        Ok(plan)
    }
}

impl Plan {
    /// The plan for a binary: from its symbols, or, stripped, from a scan of its
    /// read-only data for task vtables (whose slots are the poll, dealloc and shutdown
    /// functions of every task type).
    pub fn choose(
        path: &Path,
        bin: &BinaryInfo,
        table: &LocationTable,
        k: &Knowledge,
        spawn_sites: bool,
    ) -> Result<Self> {
        if bin.has_symtab || bin.tokio_version.is_none() {
            return Self::for_binary(path, bin, k, spawn_sites);
        }
        Self::for_stripped(path, bin, table, k)
    }

    fn for_stripped(
        path: &Path,
        bin: &BinaryInfo,
        table: &LocationTable,
        k: &Knowledge,
    ) -> Result<Self> {
        let vtables = table.scan_task_vtables(&k.layout);
        if vtables.is_empty() {
            return Err(Error::Stripped {
                path: path.to_owned(),
                tokio_version: bin.tokio_version.map(|v| v.to_string()),
            });
        }
        let mut plan = Plan {
            tier: "vtable scan",
            ..Default::default()
        };
        // (vtable slot, name, kind, header, return probe)
        let slots: [(u64, &'static str, EventKind, HeaderArg, bool); 4] = [
            (
                0,
                "raw::poll (vtable slot 0)",
                EventKind::PollStart,
                HeaderArg::Arg0,
                false,
            ),
            (
                0,
                "raw::poll (vtable slot 0)",
                EventKind::PollEnd,
                HeaderArg::None,
                true,
            ),
            (
                2,
                "raw::dealloc (vtable slot 2)",
                EventKind::Dealloc,
                HeaderArg::Arg0,
                false,
            ),
            (
                6,
                "raw::shutdown (vtable slot 6)",
                EventKind::Shutdown,
                HeaderArg::Arg0,
                false,
            ),
        ];
        for (slot, function, kind, arg, is_return) in slots {
            for vt in &vtables {
                let Some(vaddr) = table.vtable_slot(vt.vaddr, slot) else {
                    continue;
                };
                let Some(file_offset) = bin.file_offset(vaddr) else {
                    continue;
                };
                let site = Site {
                    function,
                    vaddr,
                    file_offset,
                    cookie: cookie(kind, arg),
                };
                if is_return {
                    plan.ret.push(site);
                } else {
                    plan.entry.push(site);
                }
            }
        }
        // Wakes: tokio's waker vtable, recognised by its clone function.
        let ref_one = 1u64 << k.refs.ref_shift;
        if let Some(waker) = table.scan_waker_vtable(ref_one) {
            for (slot, function, kind) in [
                (
                    1,
                    "waker::wake_by_val (waker vtable slot 1)",
                    EventKind::WakeByVal,
                ),
                (
                    2,
                    "waker::wake_by_ref (waker vtable slot 2)",
                    EventKind::WakeByRef,
                ),
            ] {
                if let Some(vaddr) = table.vtable_slot(waker, slot)
                    && let Some(file_offset) = bin.file_offset(vaddr)
                {
                    plan.entry.push(Site {
                        function,
                        vaddr,
                        file_offset,
                        cookie: cookie(kind, HeaderArg::Arg0),
                    });
                }
            }
            plan.wakes_probed = true;
        }
        for list in [&mut plan.entry, &mut plan.ret] {
            list.sort_by_key(|s| (s.vaddr, s.cookie));
            list.dedup_by_key(|s| (s.vaddr, s.cookie));
        }
        let no_symbols = "the binary is stripped and no --symbols FILE was given";
        for (what, why) in [
            (
                "spawn sites",
                format!(
                    "{no_symbols}: spawns are not observable (no spawn function is in a vtable)"
                ),
            ),
            (
                "futures",
                format!("{no_symbols}: future types are named by symbols"),
            ),
            (
                "wakes",
                format!(
                    "{no_symbols}, and tokio's waker vtable was not recognised: `stuck` \
                     (starved) is seen only through the task-list readings (about 1 s apart)"
                ),
            ),
        ] {
            if what == "wakes" && plan.wakes_probed {
                continue;
            }
            plan.unavailable.push(Unavailable {
                what: what.into(),
                why,
            });
        }
        Ok(plan)
    }
}

/// A probe site at every instance of `function` that the file maps.
fn sites(bin: &BinaryInfo, function: &'static str, kind: EventKind, arg: HeaderArg) -> Vec<Site> {
    bin.instances(function)
        .iter()
        .filter_map(|&vaddr| {
            let file_offset = bin.file_offset(vaddr)?;
            Some(Site {
                function,
                vaddr,
                file_offset,
                cookie: cookie(kind, arg),
            })
        })
        .collect()
}
