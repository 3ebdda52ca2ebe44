//! Spawns seen where tokio draws the new task's id. Every spawn path (`tokio::spawn`,
//! `Handle::spawn`, `spawn_blocking`, `spawn_local`, `JoinSet`…) takes exactly one id from
//! tokio's task-id counter, and that counter's `fetch_add` is inlined into each path as a
//! retry loop (`mov r, 1; lock xadd [counter], r; test r, r; je retry`), however much of
//! the path the compiler inlined into the caller. A probe on the loop's `je` (an emulated
//! instruction) sees the new id in `r`: a spawn event that no inlining decision can hide,
//! even where `bind_inner` and everything around it were inlined into user code, and in
//! stripped binaries (the loop's shape finds the counter without its symbol).
//!
//! The header does not exist yet at that point: the aggregator joins the id to the task
//! when the task first shows up (its first poll, a task-list reading).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use iced_x86::{Decoder, DecoderOptions, FlowControl, Mnemonic, OpKind};
use serde::Serialize;

use crate::{
    binary::locations::{LocationTable, is_runtime_internal},
    tokio_versions::shapes,
};

pub use crate::tokio_versions::shapes::IdDraw;

/// An id draw the plan probes, and what the code says about the spawn it belongs to.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct IdSite {
    pub vaddr: u64,
    /// The function the draw sits in (`None` in a stripped binary).
    pub function: Option<String>,
    /// Where the spawn is in the source, when the code says: `file:line:col` from the line
    /// tables, or the one `#[track_caller]` Location the spawning function loads, or the
    /// spawning function itself (`function+0xoff`).
    pub site: Option<String>,
    /// An out-of-line draw: each call site's return address (file address) and the site
    /// the code shows there. The probe reads the return address; the caller names the
    /// spawn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callers: Vec<(u64, Option<String>)>,
}

/// Every id draw in `.text`. `counter`: the counter's address from its symbol; without
/// one (stripped), the retry-loop counter with the most draws (every spawn path of every
/// future type has one; tokio's other retry-loop counter, the owned-list id, has a
/// handful), and none when two counters tie. `retries`: the version's `Id::next` is a
/// retry loop (1.39+); before, a plain `fetch_add` that only the symbol can identify,
/// probed at the instruction after it.
pub fn find(table: &LocationTable, counter: Option<u64>, retries: bool) -> Vec<IdDraw> {
    if !retries && counter.is_none() {
        return Vec::new();
    }
    let Some((text, bytes)) = table.text() else {
        return Vec::new();
    };
    let mut draws =
        shapes::find_id_draws(text, bytes, &|slot| table.relocated_pointer(slot), retries);
    for d in &mut draws {
        d.out_of_line = out_of_line(table, d.vaddr);
    }
    // An out-of-line `Id::next` is one draw serving every spawn path: weigh it by its
    // callers.
    let weight = |d: &IdDraw| match d.out_of_line {
        Some(f) => call_sites(text, bytes, f).len().max(1),
        None => 1,
    };
    choose(draws, counter, &weight)
}

/// The draw at `vaddr` (its `je`) is a whole small function that returns right after it
/// (`Id::next` not inlined, as `opt-level = "z"` leaves it): that function's start.
fn out_of_line(table: &LocationTable, vaddr: u64) -> Option<u64> {
    let (start, end) = table.function_bounds(vaddr)?;
    if end - start > 64 {
        return None;
    }
    let code = table.code(vaddr, 16)?;
    let mut dec = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let _je = dec.decode();
    (dec.decode().flow_control() == FlowControl::Return).then_some(start)
}

/// Return addresses of the direct calls of `target` in `.text`.
pub fn call_sites(text: u64, bytes: &[u8], target: u64) -> Vec<u64> {
    (0..bytes.len().saturating_sub(4))
        .filter(|&p| bytes[p] == 0xe8)
        .filter_map(|p| {
            let d = i32::from_le_bytes([bytes[p + 1], bytes[p + 2], bytes[p + 3], bytes[p + 4]]);
            let ret = text + p as u64 + 5;
            (ret.wrapping_add_signed(d as i64) == target).then_some(ret)
        })
        .collect()
}

/// The draws of one counter: the symbol's, or without one the counter whose draws weigh
/// the most, none on a tie.
fn choose(
    mut draws: Vec<IdDraw>,
    counter: Option<u64>,
    weight: &dyn Fn(&IdDraw) -> usize,
) -> Vec<IdDraw> {
    let chosen = match counter {
        Some(c) => Some(c),
        None => {
            let mut counts: HashMap<u64, usize> = HashMap::new();
            for d in &draws {
                *counts.entry(d.counter).or_default() += weight(d);
            }
            let mut ranked: Vec<(usize, u64)> = counts.into_iter().map(|(c, n)| (n, c)).collect();
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            match ranked.as_slice() {
                [(n, c), (m, _), ..] if n > m => Some(*c),
                [(_, c)] => Some(*c),
                _ => None,
            }
        }
    };
    draws.retain(|d| Some(d.counter) == chosen);
    draws
}

/// The draws no spawn probe covers: those whose function reaches none of `probed`
/// (function addresses with a spawn probe) through direct calls and jumps, a few levels
/// deep. A covered draw would only add a second hit per spawn for what the spawn probe
/// already says. Without function symbols nothing is known to be covered.
pub fn uncovered(table: &LocationTable, draws: Vec<IdDraw>, probed: &HashSet<u64>) -> Vec<IdDraw> {
    if probed.is_empty() {
        return draws;
    }
    let mut reach = Reach::default();
    let mut covered: HashMap<u64, bool> = HashMap::new();
    draws
        .into_iter()
        .filter(|d| {
            let Some((start, _)) = table.function_bounds(d.vaddr) else {
                return true;
            };
            !*covered.entry(start).or_insert_with(|| {
                reach
                    .from(table, start)
                    .iter()
                    .any(|f| *f != start && probed.contains(f))
            })
        })
        .collect()
}

/// The functions a function reaches through direct (and GOT) calls and jumps, a few
/// levels deep, itself included; each function's callees decoded once.
#[derive(Default)]
struct Reach {
    callees: HashMap<u64, Vec<u64>>,
}

impl Reach {
    const DEPTH: usize = 4;

    fn from(&mut self, table: &LocationTable, start: u64) -> HashSet<u64> {
        let mut seen = HashSet::from([start]);
        let mut level = vec![start];
        for _ in 0..Self::DEPTH {
            let mut next = Vec::new();
            for f in level {
                let out = self
                    .callees
                    .entry(f)
                    .or_insert_with(|| direct_callees(table, f));
                next.extend(out.iter().copied().filter(|&c| seen.insert(c)));
            }
            level = next;
        }
        seen
    }
}

/// Targets of the direct calls and jumps leaving the function that starts at `start`.
fn direct_callees(table: &LocationTable, start: u64) -> Vec<u64> {
    let Some((start, end)) = table.function_bounds(start) else {
        return Vec::new();
    };
    let Some(code) = table.code(start, end - start) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut dec = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    while dec.can_decode() {
        let i = dec.decode();
        let t = match i.flow_control() {
            FlowControl::Call | FlowControl::UnconditionalBranch
                if i.op0_kind() == OpKind::NearBranch64 =>
            {
                i.near_branch_target()
            }
            // A call through the GOT (PIE calling an exported function): the slot's target.
            FlowControl::IndirectCall | FlowControl::IndirectBranch
                if i.is_ip_rel_memory_operand() =>
            {
                match table.relocated_pointer(i.ip_rel_memory_address()) {
                    Some(t) => t,
                    None => continue,
                }
            }
            _ => continue,
        };
        if !(start..end).contains(&t) {
            out.push(t);
        }
    }
    out
}

/// What the code shows along the paths leaving one id draw (breadth first, nearest in
/// instructions first): per basic block, the function addresses it loads (`lea r,
/// [rip + f]`, f in `.text`) and the user `Location`s it loads, in order.
struct Paths {
    blocks: Vec<Vec<Load>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Load {
    Function(u64),
    Location(String),
    /// A task vtable: the spawn path storing it into the new task.
    Vtable(u64),
    /// A direct call: a panic taking its message and Location as arguments
    /// (`Option::expect`'s `expect_failed`) loads both, then calls.
    Call(u64),
}

/// Follows the code from `vaddr` within its function, breadth first, for a bounded number
/// of instructions.
/// Stops at another draw (`stop`): what follows belongs to that spawn.
fn paths_from(
    table: &LocationTable,
    vaddr: u64,
    vtables: &HashSet<u64>,
    stop: &HashSet<u64>,
) -> Option<Paths> {
    const BUDGET: usize = 3000;
    let (start, end) = table.function_bounds(vaddr)?;
    let code = table.code(start, end - start)?;
    let text = table.text().map(|(a, b)| a..a + b.len() as u64)?;
    let mut queue = std::collections::VecDeque::from([vaddr]);
    let mut seen = HashSet::new();
    let mut visited = 0usize;
    let mut blocks = Vec::new();
    while let Some(block) = queue.pop_front() {
        if visited >= BUDGET || !seen.insert(block) || !(start..end).contains(&block) {
            continue;
        }
        let off = (block - start) as usize;
        let mut dec = Decoder::with_ip(64, &code[off..], block, DecoderOptions::NONE);
        let mut loads = Vec::new();
        while dec.can_decode() && visited < BUDGET {
            let i = dec.decode();
            visited += 1;
            if i.is_invalid() || (i.ip() != vaddr && stop.contains(&i.ip())) {
                break;
            }
            if i.mnemonic() == Mnemonic::Lea && i.is_ip_rel_memory_operand() {
                let a = i.ip_rel_memory_address();
                if vtables.contains(&a) {
                    loads.push(Load::Vtable(a));
                } else if text.contains(&a) {
                    loads.push(Load::Function(a));
                } else if let Some(loc) = table.location_at(a)
                    && !is_runtime_internal(&loc)
                {
                    loads.push(Load::Location(loc));
                }
            } else if i.mnemonic() == Mnemonic::Mov
                && i.op0_kind() == OpKind::Register
                && i.is_ip_rel_memory_operand()
                && let Some(f) = table
                    .relocated_pointer(i.ip_rel_memory_address())
                    .filter(|f| text.contains(f))
            {
                // A function's address through the GOT (PIE, an exported function).
                loads.push(Load::Function(f));
            } else if i.flow_control() == FlowControl::Call && i.op0_kind() == OpKind::NearBranch64
            {
                loads.push(Load::Call(i.near_branch_target()));
            }
            match i.flow_control() {
                FlowControl::ConditionalBranch => queue.push_back(i.near_branch_target()),
                FlowControl::UnconditionalBranch => {
                    if i.op0_kind() == OpKind::NearBranch64 {
                        queue.push_back(i.near_branch_target());
                    }
                    break;
                }
                FlowControl::Return
                | FlowControl::IndirectBranch
                | FlowControl::Interrupt
                | FlowControl::Exception => break,
                _ => {}
            }
            // A block ends at a branch target too: keep blocks short so that a load is
            // attributed to the block that makes it.
            if seen.contains(&dec.ip()) {
                break;
            }
        }
        blocks.push(loads);
    }
    Some(Paths { blocks })
}

/// Names the spawn site of every draw from the code. Right after drawing its id, a spawn
/// looks up the current runtime and, when there is none, panics with "must be called from
/// the context of a Tokio runtime" at the caller's `#[track_caller]` Location: with the
/// spawn path inlined into the spawning function, that panic block loads the runtime
/// error's `Display::fmt` and the caller's Location, a few branches from the draw. The
/// formatter is the same function for every spawn path, so it is the function address
/// the paths of most draws load; each draw's site is the first user Location loaded with
/// it on those paths. Without line tables, symbols or such a block (a spawn path kept out
/// of line receives the Location as an argument), the site stays unknown rather than
/// guessed; with line tables, the draw's own line names it.
/// An out-of-line draw (`Id::next` kept whole) is described at each of its call sites: the
/// spawn path continues there.
pub fn describe_all(
    table: &LocationTable,
    draws: &[IdDraw],
    vtables: &HashSet<u64>,
) -> (Vec<IdSite>, Vec<SpawnPoint>) {
    // Where each spawn path continues after its draw: the draw itself, or the return
    // addresses of an out-of-line draw.
    let (text, bytes) = table.text().unwrap_or((0, &[]));
    let points: Vec<(usize, u64)> = draws
        .iter()
        .enumerate()
        .flat_map(|(i, d)| match d.out_of_line {
            Some(f) => call_sites(text, bytes, f)
                .into_iter()
                .map(|r| (i, r))
                .collect(),
            None => vec![(i, d.vaddr)],
        })
        .collect();
    let stop: HashSet<u64> = points.iter().map(|p| p.1).collect();
    let paths: Vec<Option<Paths>> = points
        .iter()
        .map(|&(_, at)| paths_from(table, at, vtables, &stop))
        .collect();
    // Function addresses loaded in a block that then loads a Location: a panic's
    // formatter and its Location (other blocks load thread-local destructors, drops…).
    let formatter = most_common(&paths, points.len(), |b| {
        b.iter()
            .enumerate()
            .filter_map(|(i, l)| match l {
                Load::Function(f) if b[i..].iter().any(|x| matches!(x, Load::Location(_))) => {
                    Some(*f)
                }
                _ => None,
            })
            .collect()
    });
    // Before 1.22 the runtime lookup is an `Option::expect`: its panic block loads a
    // message and the Location, then calls `expect_failed`, the same callee on every path.
    let panic_call = most_common(&paths, points.len(), |b| {
        b.iter()
            .enumerate()
            .filter_map(|(i, l)| match l {
                Load::Call(f) if b[..i].iter().any(|x| matches!(x, Load::Location(_))) => Some(*f),
                _ => None,
            })
            .collect()
    });
    // Points inside tokio's own out-of-line spawn functions (by name, or nameless in a
    // stripped binary) take their callers' Location: one pass over the code for all.
    let in_runtime: Vec<(Option<Named>, bool)> = points
        .iter()
        .map(|&(_, at)| {
            let f = table.function_at(at);
            let internal = f.as_ref().is_some_and(|(n, _)| is_runtime_internal(n));
            (f, internal)
        })
        .collect();
    let needs_callers: Vec<u64> = points
        .iter()
        .zip(&in_runtime)
        .filter(|(_, (f, internal))| *internal || f.is_none())
        .map(|(&(_, at), _)| at)
        .collect();
    let from_callers: HashMap<u64, Option<String>> = needs_callers
        .iter()
        .copied()
        .zip(passed_by_callers(table, &needs_callers))
        .collect();
    let spawn_points: Vec<SpawnPoint> = points
        .iter()
        .zip(&paths)
        .zip(&in_runtime)
        .map(|((&(_, at), p), (function, in_runtime))| {
            let in_runtime = *in_runtime;
            let from_formatter = || {
                let f = formatter?;
                p.as_ref()?.blocks.iter().find_map(|b| {
                    let i = b.iter().position(|l| *l == Load::Function(f))?;
                    b[i..].iter().find_map(|l| match l {
                        Load::Location(loc) => Some(loc.clone()),
                        _ => None,
                    })
                })
            };
            let from_call = || {
                let f = panic_call?;
                p.as_ref()?.blocks.iter().find_map(|b| {
                    let i = b.iter().position(|l| *l == Load::Call(f))?;
                    b[..i].iter().rev().find_map(|l| match l {
                        Load::Location(loc) => Some(loc.clone()),
                        _ => None,
                    })
                })
            };
            let from_panic = || from_formatter().or_else(from_call);
            let site = table
                .source_line_at(at)
                .or_else(|| if in_runtime { None } else { from_panic() })
                .or_else(|| from_callers.get(&at).cloned().flatten())
                .or_else(|| {
                    (!in_runtime)
                        .then(|| repeated_location(table, at))
                        .flatten()
                })
                .or_else(|| match function {
                    Some((name, off)) => (!in_runtime).then(|| format!("{name}+{off:#x}")),
                    // Stripped, and no Location in the code (a `LocalSet::spawn_local`
                    // has no panic path to load one): the file address of the spawning
                    // code, for addr2line or `--symbols` on an unstripped copy.
                    None => Some(format!("stripped+{at:#x}")),
                });
            let stored = p
                .iter()
                .flat_map(|p| p.blocks.iter().flatten())
                .filter_map(|l| match l {
                    Load::Vtable(v) => Some(*v),
                    _ => None,
                })
                .collect();
            SpawnPoint {
                vaddr: at,
                site,
                stored,
            }
        })
        .collect();
    let sites = draws
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mine = points
                .iter()
                .zip(&spawn_points)
                .filter(|((k, _), _)| *k == i);
            let (site, callers) = match d.out_of_line {
                Some(_) => (
                    None,
                    mine.map(|(_, sp)| (sp.vaddr, sp.site.clone())).collect(),
                ),
                None => (
                    mine.map(|(_, sp)| sp.site.clone()).next().flatten(),
                    Vec::new(),
                ),
            };
            IdSite {
                vaddr: d.vaddr,
                function: table.function_at(d.vaddr).map(|(n, _)| n.to_string()),
                site,
                callers,
            }
        })
        .collect();
    (sites, spawn_points)
}

/// What `pick` finds in a block (function addresses), counted once per spawn path: the
/// one found near the most paths, and near at least two (or the one there is).
fn most_common(
    paths: &[Option<Paths>],
    points: usize,
    pick: impl Fn(&[Load]) -> Vec<u64>,
) -> Option<u64> {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for p in paths.iter().flatten() {
        let found: HashSet<u64> = p.blocks.iter().flat_map(|b| pick(b)).collect();
        for f in found {
            *counts.entry(f).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .filter(|&(_, n)| n >= 2.min(points))
        .max_by_key(|&(f, n)| (n, std::cmp::Reverse(f)))
        .map(|(f, _)| f)
}

/// The spawn site of a `spawn_local` inlined into the spawning function (a `LocalSet`,
/// actix-rt) up to the out-of-line part of the spawn at `at`: the context checks come
/// before that call, and each of their panics ("called from outside of a LocalSet", "only
/// from the thread the runtime was created on") reports the caller's `#[track_caller]`
/// Location, so the spawning function loads that Location once per panic block. The
/// user Location it loads more often than any other, at least twice, is the site; a tie
/// (two spawns in one function) names none rather than guessing.
fn repeated_location(table: &LocationTable, at: u64) -> Option<String> {
    let (start, end) = table.function_bounds(at)?;
    most_loaded_location(table.code(start, end - start)?, start, |a| {
        table.location_at(a)
    })
}

/// [`repeated_location`] over one function's code; `location_at` reads a Location.
fn most_loaded_location(
    code: &[u8],
    start: u64,
    location_at: impl Fn(u64) -> Option<String>,
) -> Option<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in Decoder::with_ip(64, code, start, DecoderOptions::NONE) {
        if i.mnemonic() == Mnemonic::Lea
            && i.is_ip_rel_memory_operand()
            && let Some(loc) = location_at(i.ip_rel_memory_address())
            && !is_runtime_internal(&loc)
        {
            *counts.entry(loc).or_default() += 1;
        }
    }
    let most = *counts.values().max()?;
    let mut at_most = counts.into_iter().filter(|&(_, n)| n == most);
    match (at_most.next(), at_most.next()) {
        (Some((loc, n)), None) if n >= 2 => Some(loc),
        _ => None,
    }
}

/// A function's name and an offset in it.
type Named = (Arc<str>, u64);

/// Where a spawn path continues after its id draw (the draw, or a call site of an
/// out-of-line draw): the site the code shows there and the task vtables it stores.
pub struct SpawnPoint {
    pub vaddr: u64,
    pub site: Option<String>,
    pub stored: HashSet<u64>,
}

/// Draws inside tokio's own spawn functions kept out of line: the spawn's Location is that
/// function's argument, loaded by its callers. Where every direct call of such a function
/// passes the same user Location and nothing else refers to it, that is the site
/// (`static_sites`' analysis, one pass over the code for all of them). A call passing
/// its own caller's Location on (a `#[track_caller]` function in between, kept out of line
/// too) is followed to that function's callers, a few levels up. Per point: its
/// function's answer.
fn passed_by_callers(table: &LocationTable, points: &[u64]) -> Vec<Option<String>> {
    let starts: Vec<Option<u64>> = points
        .iter()
        .map(|&p| table.function_bounds(p).map(|b| b.0))
        .collect();
    let mut wanted: Vec<u64> = starts.iter().flatten().copied().collect();
    wanted.sort_unstable();
    wanted.dedup();
    let answers = locations_passed(table, &wanted, 3);
    starts
        .iter()
        .map(|f| f.and_then(|f| answers.get(&f).cloned().flatten()))
        .collect()
}

/// The one user Location every direct call of each of `functions` passes (`None`: none,
/// or several), following pass-through callers `depth` levels up.
fn locations_passed(
    table: &LocationTable,
    functions: &[u64],
    depth: usize,
) -> HashMap<u64, Option<String>> {
    if functions.is_empty() {
        return HashMap::new();
    }
    let groups: Vec<Vec<u64>> = functions.iter().map(|&f| vec![f]).collect();
    let found = crate::binary::static_sites::callers_in(table, &groups);
    // Calls that pass no Location of their own: their functions, resolved a level up.
    let mut unknown: Vec<u64> = found
        .iter()
        .flat_map(|c| {
            c.calls
                .iter()
                .zip(&c.call_functions)
                .filter(|(l, _)| l.is_none())
                .map(|(_, &f)| f)
        })
        .filter(|f| !functions.contains(f))
        // Only a function that may be a pass-through spawn helper: tokio's own, or a
        // nameless one (stripped). A named user function's callers passed no Location
        // for this spawn.
        .filter(|&f| {
            table
                .function_at(f)
                .is_none_or(|(name, _)| is_runtime_internal(&name))
        })
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    let above = if depth > 0 {
        locations_passed(table, &unknown, depth - 1)
    } else {
        HashMap::new()
    };
    functions
        .iter()
        .zip(found)
        .map(|(&f, callers)| {
            if callers.other_references > 0 || callers.calls.is_empty() {
                return (f, None);
            }
            let sites: Option<HashSet<String>> = callers
                .calls
                .iter()
                .zip(&callers.call_functions)
                .map(|(l, from)| match l {
                    Some(a) => table.location_at(*a),
                    // No Location passed: the caller may have `spawn_local`'s checks
                    // inlined (their panics load its Location), or pass its own on.
                    None => repeated_location(table, *from)
                        .or_else(|| above.get(from).cloned().flatten()),
                })
                .collect();
            let site = sites
                .filter(|s| s.len() == 1)
                .and_then(|s| s.into_iter().next());
            (f, site)
        })
        .collect()
}

/// The spawn site of each task vtable's tasks, where the code shows it: a vtable is
/// stored into a new task by code that its spawn path reaches from its id draw (the same
/// function once the path is inlined, a few direct calls further otherwise). When every
/// draw that reaches code storing the vtable names the same exact `file:line:col`, the
/// vtable's tasks were spawned there — tasks alive before attach included, whose spawn no
/// probe saw. `points`: what [`describe_all`] found where each spawn path continues.
pub fn vtable_sites(
    table: &LocationTable,
    points: &[SpawnPoint],
    vtables: &[u64],
) -> Vec<(u64, String)> {
    let Some((text, bytes)) = table.text() else {
        return Vec::new();
    };
    let wanted: HashSet<u64> = vtables.iter().copied().collect();
    let (Some(&lo), Some(&hi)) = (wanted.iter().min(), wanted.iter().max()) else {
        return Vec::new();
    };
    // Functions that load each vtable's address (a 32-bit displacement reaching it).
    let mut storers: HashMap<u64, HashSet<u64>> = HashMap::new();
    for p in 0..bytes.len().saturating_sub(3) {
        let d = i32::from_le_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]);
        let target = (text + p as u64 + 4).wrapping_add_signed(d as i64);
        if target < lo || target > hi || !wanted.contains(&target) {
            continue;
        }
        if let Some((f, _)) = table.function_bounds(text + p as u64) {
            storers.entry(target).or_default().insert(f);
        }
    }
    // What each spawn point's function reaches through direct calls.
    let mut reacher = Reach::default();
    let reach: Vec<HashSet<u64>> = points
        .iter()
        .map(|d| match table.function_bounds(d.vaddr) {
            Some((start, _)) => reacher.from(table, start),
            None => HashSet::new(),
        })
        .collect();
    let mut out = Vec::new();
    for &v in vtables {
        // The draws whose own paths store it (the spawn path inlined with its draw), else
        // those whose function reaches a function that stores it.
        let mut found: Vec<Option<&String>> = points
            .iter()
            .filter(|p| p.stored.contains(&v))
            .map(|p| p.site.as_ref())
            .collect();
        if found.is_empty() {
            let Some(fs) = storers.get(&v) else { continue };
            found = reach
                .iter()
                .zip(points)
                .filter(|(r, _)| fs.iter().any(|f| r.contains(f)))
                .map(|(_, p)| p.site.as_ref())
                .collect();
        }
        let distinct: HashSet<Option<&String>> = found.iter().copied().collect();
        // The one site its spawns would name live (exact, or the code address where the
        // code holds no Location): a task alive before attach gets the same name.
        if let [Some(site)] = distinct.into_iter().collect::<Vec<_>>()[..] {
            out.push((v, site.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokio_versions::shapes::{find_id_draws as find_in, tests::retry_loop};

    const TEXT: u64 = 0x1000;

    #[test]
    fn two_counters_with_as_many_draws_choose_none() {
        let mut code = retry_loop(0x1000);
        let mut other = retry_loop(0x2000);
        // Shift the second loop's code so that its counter differs from the first one's.
        code.append(&mut other);
        let none = |_| None;
        let draws = choose(find_in(TEXT, &code, &none, true), None, &|_| 1);
        assert!(draws.is_empty(), "a tie is no evidence: {draws:?}");
        // The symbol says which counter: another one is not this.
        assert!(choose(find_in(TEXT, &code, &none, true), Some(0x42), &|_| 1).is_empty());
        let mut three = code.clone();
        three.extend(retry_loop(0x1000 - 0x48)); // the first loop's counter
        let draws = choose(find_in(TEXT, &three, &none, true), None, &|_| 1);
        assert_eq!(draws.len(), 2, "the counter with the most draws: {draws:?}");
        // One out-of-line draw called from many places outweighs two inlined ones.
        let all = find_in(TEXT, &three, &none, true);
        let lone = all
            .iter()
            .find(|d| d.counter != draws[0].counter)
            .unwrap()
            .counter;
        let heavy = move |d: &IdDraw| if d.counter == lone { 5 } else { 1 };
        let draws = choose(all, None, &heavy);
        assert!(draws.iter().all(|d| d.counter == lone));
    }

    /// `lea rdx, [rip + target]` for each target, laid out from TEXT.
    fn location_loads(targets: &[u64]) -> Vec<u8> {
        let mut code = Vec::new();
        for &t in targets {
            let next = TEXT + code.len() as u64 + 7;
            code.extend([0x48, 0x8d, 0x15]);
            code.extend(((t as i64 - next as i64) as i32).to_le_bytes());
        }
        code
    }

    #[test]
    fn an_inlined_spawn_local_names_the_location_its_panics_load() {
        let at = |a: u64| match a {
            0x9000 => Some("/c/actix-server-2.6.0/src/service.rs:74:17".to_owned()),
            0x9100 => Some("/c/actix-server-2.6.0/src/worker.rs:432:31".to_owned()),
            0x9200 => Some("/c/tokio-1.51.1/src/task/local.rs:445:29".to_owned()),
            _ => None,
        };
        // Both panics of the inlined checks load the spawn's Location; tokio's own
        // unwraps do not count, nor does one other user panic.
        let code = location_loads(&[0x9000, 0x9200, 0x9200, 0x9200, 0x9100, 0x9000]);
        assert_eq!(
            most_loaded_location(&code, TEXT, at).as_deref(),
            Some("/c/actix-server-2.6.0/src/service.rs:74:17")
        );
        // Two spawns in one function: a tie names neither.
        let code = location_loads(&[0x9000, 0x9100, 0x9000, 0x9100]);
        assert_eq!(most_loaded_location(&code, TEXT, at), None);
        // One load is an ordinary panic (an unwrap), not a spawn's checks.
        let code = location_loads(&[0x9100, 0x9200]);
        assert_eq!(most_loaded_location(&code, TEXT, at), None);
    }
}
