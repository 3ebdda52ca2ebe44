//! Where a target's await chains come from: its binary's type information (in the
//! binary, a separate debug file found the standard way, `--debuginfo`, or a debuginfod
//! server), and each
//! chain as the stream records it. `dump` and the live window's end reading both use it.

use std::path::{Path, PathBuf};

use std::collections::HashMap;

use crate::{
    binary::{
        async_types::{AsyncTypes, build_id, find_debug_file, has_debug_info, load_file},
        debuginfod,
    },
    error::{Error, Result},
    live::{
        await_chain, locator::Locator, memory::ReadMemory, tasklist::LiveTask, tasklist::Status,
    },
    stream::records::{AwaitChain, AwaitFrame, AwaitsFrom, ChainOf},
};

/// Where to look for the binary's type information (`--debuginfo`, `--debug-dir`).
#[derive(Debug, Clone)]
pub struct DebugInfo {
    pub file: Option<PathBuf>,
    pub dir: PathBuf,
    /// Without type information, a full-mode window captures chains from the stack at
    /// waker clones (`--no-await-stacks` turns it off).
    pub stacks: bool,
}

impl Default for DebugInfo {
    fn default() -> Self {
        Self {
            file: None,
            dir: PathBuf::from("/usr/lib/debug"),
            stacks: true,
        }
    }
}

/// Where a window's chains come from when they are read from the stack.
pub fn from_stacks() -> AwaitsFrom {
    AwaitsFrom {
        source: Some("stack".into()),
        file: None,
        unavailable: None,
        ..AwaitsFrom::default()
    }
}

/// The task poll functions (file addresses) whose futures the types are wanted for: the
/// `raw::poll` instances the symbols name, or in a stripped binary the first slot of each
/// task vtable the scan finds (its debug file, found by build-id, still describes them).
pub fn poll_functions(
    bin: &crate::binary::elf::BinaryInfo,
    table: &crate::binary::locations::LocationTable,
    knowledge: &crate::tokio_versions::Knowledge,
) -> Vec<u64> {
    let named = bin.instances(knowledge.symbols.raw_poll);
    if !named.is_empty() {
        return named.to_vec();
    }
    let slot = knowledge.layout.slots.poll.index;
    let mut polls: Vec<u64> = table
        .scan_task_vtables(&knowledge.layout)
        .iter()
        .filter_map(|v| table.vtable_slot(v.vaddr, slot))
        .collect();
    polls.sort_unstable();
    polls.dedup();
    polls
}

/// The await chains of the tasks of one reading that are not running (idle or notified),
/// read from the target's memory now; `poll_slot` is the vtable slot of the poll function.
pub fn read_all(
    types: &AsyncTypes,
    mem: &impl ReadMemory,
    locator: &mut Locator,
    poll_slot: u64,
    tasks: &[LiveTask],
) -> Vec<ChainOf> {
    // A JoinHandle's leaf names the task it awaits by header: its id, if listed.
    let ids: HashMap<u64, u64> = tasks.iter().map(|t| (t.header, t.id)).collect();
    tasks
        .iter()
        .filter(|t| matches!(t.status, Status::Idle | Status::Notified))
        .filter_map(|t| {
            let poll = locator.vtable_function(t.vtable, poll_slot)?;
            let chain = chain(types, mem, t.header, poll, |h| ids.get(&h).copied())?;
            Some(ChainOf {
                header: t.header,
                id: t.id,
                chain,
            })
        })
        .collect()
}

/// The await chain of the task at `header` whose poll function is `poll` (a file
/// address), as the stream records it; `id_of` names a task by its header (the tasks the
/// reading listed), for a leaf that awaits one.
fn chain(
    types: &AsyncTypes,
    mem: &impl ReadMemory,
    header: u64,
    poll: u64,
    id_of: impl Fn(u64) -> Option<u64>,
) -> Option<AwaitChain> {
    Some(record_of(
        await_chain::read(types, mem, header, poll)?,
        id_of,
    ))
}

/// A chain as the stream records it; `id_of` names a task by its header, for a leaf that
/// awaits one.
pub fn record_of(c: await_chain::AwaitChain, id_of: impl Fn(u64) -> Option<u64>) -> AwaitChain {
    let leaf_detail = match c.leaf_task {
        Some(h) => Some(match id_of(h) {
            Some(id) => format!("task {id}"),
            None => format!("a task at {h:#x}, not in any task list"),
        }),
        None => c.leaf_detail,
    };
    AwaitChain {
        source: c.source.to_owned(),
        frames: c
            .frames
            .into_iter()
            .map(|f| AwaitFrame {
                function: f.function,
                file: f.file,
                line: f.line,
                offset: f.offset,
            })
            .collect(),
        leaf: c.leaf,
        leaf_detail,
        state: c.state,
        truncated: c.truncated,
    }
}

/// The binary's async state-machine types, from `--debuginfo`, the binary itself, its
/// separate debug file, or the `--symbols` file; else why there are none.
pub fn types(
    exe: &Path,
    symbols: Option<&Path>,
    debug: &DebugInfo,
    polls: &[u64],
) -> Result<(Option<AsyncTypes>, AwaitsFrom)> {
    let file = match &debug.file {
        Some(f) => {
            if !f.is_file() {
                return Err(Error::Usage(format!(
                    "--debuginfo {}: no such file.\n  hint: give the separate debug file of \
                     this build (objcopy --only-keep-debug), or leave --debuginfo out to look \
                     it up by build-id under --debug-dir",
                    f.display()
                )));
            }
            if !has_debug_info(f) {
                return Err(Error::Usage(format!(
                    "--debuginfo {}: the file has no type information (.debug_info).\n  hint: \
                     build with `debug = 2` (or `line-tables-only` gives lines, not types) and \
                     split it off with objcopy --only-keep-debug",
                    f.display()
                )));
            }
            Some(f.clone())
        }
        None => find_debug_file(exe, &[debug.dir.as_path()])
            .or_else(|| symbols.filter(|s| has_debug_info(s)).map(Path::to_path_buf)),
    };
    // Last, the debuginfod servers the environment names (by build-id).
    let mut fetched = None;
    let file = file.or_else(|| {
        debuginfod::servers()?;
        let id = build_id(exe)?;
        match debuginfod::find(&id) {
            Ok(f) => Some(f),
            Err(why) => {
                fetched = Some(why);
                None
            }
        }
    });
    let Some(file) = file else {
        let mut why = "the binary has no type information (cargo's release default): build \
                       with `debug = 2`, or install its separate debug file by build-id under \
                       --debug-dir, or give it with --debuginfo FILE, or name a debuginfod \
                       server that has it in DEBUGINFOD_URLS"
            .to_owned();
        if let Some(f) = fetched {
            why.push_str(&format!(" ({f})"));
        }
        return Ok((
            None,
            AwaitsFrom {
                source: None,
                file: None,
                unavailable: Some(why),
                ..AwaitsFrom::default()
            },
        ));
    };
    let shown = file.display().to_string();
    match load_file(&file, polls) {
        Some(t) if !t.is_empty() => Ok((
            Some(t),
            AwaitsFrom {
                source: Some("dwarf".into()),
                file: Some(shown),
                unavailable: None,
                ..AwaitsFrom::default()
            },
        )),
        _ => Ok((
            None,
            AwaitsFrom {
                source: None,
                file: Some(shown),
                unavailable: Some(
                    "the debug file describes none of the task types (not this build's, \
                     or built without `debug = 2`)"
                        .into(),
                ),
                ..AwaitsFrom::default()
            },
        )),
    }
}
