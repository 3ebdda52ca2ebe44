//! The async state machines of a binary, from its DWARF type information: for each task
//! vtable's poll function, where the spawned future lies in the task's cell, and for each
//! `async fn` / `async` block the future may be suspended in, its states and what each
//! `Suspend` state awaits (`__awaitee`) and at which line. `live::await_chain` reads a
//! task's future with this map and follows the awaitees down to the leaf.
//!
//! rustc describes a state machine as a structure with a variant part whose
//! discriminant is the `__state` member: one variant per state (`Unresumed`, `Returned`,
//! `Panicked`, `Suspend0..N`), each `SuspendN` declared at the line of its `.await` and
//! holding the awaited future as `__awaitee`. One pass finds the task poll functions and
//! the units describing each task cell type; only those units are parsed whole (a cell's
//! future and the types it awaits are described in the cell's unit).

use std::{collections::HashMap, path::Path, sync::Arc};

use gimli::{AttributeValue, EndianArcSlice, Reader as _, RunTimeEndian};
use object::{Object, ObjectSection};
use serde::Serialize;

use crate::tokio_versions::{LEAF_FACTS, LeafFactKind, TASK_CELL_TYPE, TASK_POLL_FUNCTION};

type R = EndianArcSlice<RunTimeEndian>;

/// How deep an awaitee chain or a path inside a cell is followed (a deeper one is cut).
const MAX_DEPTH: usize = 32;

/// Where a task's future is, and what state machines it may be suspended in.
#[derive(Debug, Default)]
pub struct AsyncTypes {
    /// By the poll function's file address (a task vtable's first slot).
    futures: HashMap<u64, FutureAt>,
    types: Vec<Ty>,
}

/// The path from a task's header to its future: byte offsets, and the enum variants
/// (`Stage::Running`) that must be the current one for the future to be there.
#[derive(Clone, Debug)]
pub struct FutureAt {
    pub steps: Vec<Step>,
    pub ty: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Move this many bytes further.
    Offset(u64),
    /// Here is an enum whose discriminant (at `at`, `size` bytes) must be `value`, or,
    /// for a variant without a value (the one a niche leaves), none of `others`.
    Variant {
        at: u64,
        size: u8,
        value: Option<u64>,
        others: Vec<u64>,
    },
}

/// A type a future may be: a state machine we can follow, or anything else (a leaf).
#[derive(Clone, Debug)]
pub enum Ty {
    Machine(Machine),
    Leaf(Leaf),
}

/// A future that is not a state machine, and where it holds what it waits for.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub name: String,
    pub fact: Option<Fact>,
}

/// Where in a leaf future a fact lies (offsets from the leaf's start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    /// The awaited task: a pointer to its header.
    TaskHeader { at: u64 },
    /// A deadline: `std::time::Instant`'s seconds (`i64`) and nanoseconds (`u32`).
    Deadline { sec_at: u64, nsec_at: u64 },
}

/// An `async fn` or `async` block's state machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// The function, or the block inside its function (`app::serve::{async_block#0}`).
    pub function: String,
    pub discr_at: u64,
    pub discr_size: u8,
    pub states: Vec<State>,
}

#[derive(Clone, Debug)]
pub struct State {
    /// The discriminant value of this state (`None`: the state a niche leaves).
    pub value: Option<u64>,
    /// `Unresumed`, `Returned`, `Panicked` or `SuspendN`.
    pub name: String,
    /// Where its `.await` is, for a suspend state.
    pub at: Option<SourceLine>,
    /// The awaited future: its offset in the machine and its type.
    pub awaitee: Option<(u64, usize)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceLine {
    pub file: Arc<str>,
    pub line: u64,
}

impl AsyncTypes {
    /// Made by hand, for tests of the walk: futures by poll address, and the types.
    #[cfg(test)]
    pub fn from_parts(futures: HashMap<u64, FutureAt>, types: Vec<Ty>) -> Self {
        Self { futures, types }
    }

    pub fn future_of_poll(&self, poll: u64) -> Option<&FutureAt> {
        self.futures.get(&poll)
    }

    pub fn ty(&self, i: usize) -> &Ty {
        &self.types[i]
    }

    /// Task types whose future was located.
    pub fn len(&self) -> usize {
        self.futures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.futures.is_empty()
    }
}

/// Reads the types of the state machines behind `polls` (task poll functions, file
/// addresses) from the DWARF of `file`: `None` when it has no type information.
pub fn load(file: &object::File, polls: &[u64]) -> Option<AsyncTypes> {
    let info = file.section_by_name(".debug_info")?;
    if info.size() == 0 {
        return None;
    }
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<R, gimli::Error> {
        let data = file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or_default();
        Ok(EndianArcSlice::new(Arc::from(&*data), endian))
    };
    let dwarf = gimli::Dwarf::load(load).ok()?;
    let wanted: std::collections::HashSet<u64> = polls.iter().copied().collect();
    // One pass over every unit: the poll instances wanted (address, `poll<T, S>`), and
    // which unit describes each `Cell<T, S>` (often not the poll's own unit).
    let mut headers = Vec::new();
    let mut found_polls: Vec<(u64, String)> = Vec::new();
    let mut cell_units: HashMap<String, usize> = HashMap::new();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header.clone()) else {
            continue;
        };
        let u = headers.len();
        headers.push(header);
        scan_unit(&dwarf, &unit, &wanted, &mut found_polls, |args| {
            cell_units.entry(args).or_insert(u);
        });
    }
    let mut out = AsyncTypes::default();
    let mut indexes: HashMap<usize, (UnitIndex, HashMap<usize, usize>)> = HashMap::new();
    for (addr, name) in found_polls {
        if out.futures.contains_key(&addr) {
            continue;
        }
        let Some(args) = name.split_once('<').and_then(|(_, a)| a.strip_suffix('>')) else {
            continue;
        };
        let Some(&u) = cell_units.get(args) else {
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(e) = indexes.entry(u) {
            let Some(index) = dwarf
                .unit(headers[u].clone())
                .ok()
                .and_then(|unit| UnitIndex::build(&dwarf, &unit))
            else {
                continue;
            };
            e.insert((index, HashMap::new()));
        }
        let (index, memo) = indexes.get_mut(&u).expect("inserted");
        if let Some(at) = index.future_at(args, &mut out.types, memo) {
            out.futures.insert(addr, at);
        }
    }
    Some(out)
}

/// Loads `path` (a separate debug file, or the binary) and reads its async types.
pub fn load_file(path: &Path, polls: &[u64]) -> Option<AsyncTypes> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    load(&file, polls)
}

/// Where the type information of `exe` is, found the standard Linux way: the binary
/// itself, else (`.gnu_debuglink` or the build-id) a separate debug file in
/// `/usr/lib/debug` or beside the binary, as gdb looks for them. `debug_dirs` are the
/// global debug directories (gdb's `debug-file-directory`).
pub fn find_debug_file(exe: &Path, debug_dirs: &[&Path]) -> Option<std::path::PathBuf> {
    let data = std::fs::read(exe).ok()?;
    let file = object::File::parse(&*data).ok()?;
    if file
        .section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0)
    {
        return Some(exe.to_path_buf());
    }
    let mut candidates = Vec::new();
    if let Ok(Some(id)) = file.build_id()
        && id.len() > 1
    {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        for d in debug_dirs {
            candidates.push(
                d.join(".build-id")
                    .join(&hex[..2])
                    .join(format!("{}.debug", &hex[2..])),
            );
        }
    }
    if let Ok(Some((name, _crc))) = file.gnu_debuglink() {
        let name = String::from_utf8_lossy(name).into_owned();
        let dir = exe.parent().unwrap_or(Path::new("/"));
        candidates.push(dir.join(&name));
        candidates.push(dir.join(".debug").join(&name));
        for d in debug_dirs {
            candidates.push(d.join(dir.strip_prefix("/").unwrap_or(dir)).join(&name));
        }
    }
    candidates.into_iter().find(|c| has_debug_info(c))
}

/// The GNU build-id of an ELF file, in hex.
pub fn build_id(path: &Path) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let id = file.build_id().ok()??;
    (id.len() > 1).then(|| id.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `path` is an ELF file with type information.
pub fn has_debug_info(path: &Path) -> bool {
    std::fs::read(path).ok().is_some_and(|d| {
        object::File::parse(&*d)
            .ok()
            .and_then(|f| f.section_by_name(".debug_info").map(|s| s.size() > 0))
            .unwrap_or(false)
    })
}

/// The poll-function instances among `wanted` described in `unit` (address, the
/// subprogram's name, `poll<T, S>`), and the generic arguments of each task cell type
/// it describes (`cell`).
fn scan_unit(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    wanted: &std::collections::HashSet<u64>,
    polls: &mut Vec<(u64, String)>,
    mut cell: impl FnMut(String),
) {
    let cell_name = TASK_CELL_TYPE.rsplit("::").next().unwrap_or(TASK_CELL_TYPE);
    let mut entries = unit.entries();
    while let Ok(Some(e)) = entries.next_dfs() {
        match e.tag() {
            gimli::DW_TAG_structure_type => {
                if let Some(n) = die_name(dwarf, unit, e)
                    && let Some(args) = n.strip_prefix(cell_name).and_then(|a| a.strip_suffix('>'))
                {
                    cell(args.to_owned());
                }
            }
            gimli::DW_TAG_subprogram => {
                let Some(AttributeValue::Addr(low)) = e.attr_value(gimli::DW_AT_low_pc) else {
                    continue;
                };
                if !wanted.contains(&low) {
                    continue;
                }
                // The concrete instance may only point at its declaration, which has the name.
                let name = die_name(dwarf, unit, e).or_else(|| {
                    let AttributeValue::UnitRef(spec) = e.attr_value(gimli::DW_AT_specification)?
                    else {
                        return None;
                    };
                    die_name(dwarf, unit, &unit.entry(spec).ok()?)
                });
                if let Some(n) = name.filter(|n| n.starts_with(TASK_POLL_FUNCTION)) {
                    polls.push((low, n));
                }
            }
            _ => {}
        }
    }
}

fn die_name(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    e: &gimli::DebuggingInformationEntry<R>,
) -> Option<String> {
    let v = e.attr_value(gimli::DW_AT_name)?;
    let s = dwarf.attr_string(unit, v).ok()?;
    Some(s.to_string_lossy().ok()?.into_owned())
}

/// One DIE of a type, as much of it as the walk needs.
#[derive(Debug)]
struct Die {
    tag: gimli::DwTag,
    name: Option<String>,
    /// Namespaces and enclosing types, then the name.
    qualified: String,
    ty: Option<usize>,
    location: Option<u64>,
    byte_size: Option<u64>,
    discr: Option<usize>,
    discr_value: Option<u64>,
    decl: Option<SourceLine>,
    children: Vec<usize>,
}

/// The type DIEs of one unit, by offset.
struct UnitIndex {
    dies: HashMap<usize, Die>,
    /// `Cell<T, S>` types by their name's generic arguments (`T, S`).
    cells: HashMap<String, usize>,
}

impl UnitIndex {
    fn build(dwarf: &gimli::Dwarf<R>, unit: &gimli::Unit<R>) -> Option<Self> {
        let mut tree = unit.entries_tree(None).ok()?;
        let root = tree.root().ok()?;
        let mut index = UnitIndex {
            dies: HashMap::new(),
            cells: HashMap::new(),
        };
        let files = FileNames::new(dwarf, unit);
        index.walk(dwarf, unit, &files, root, "").ok()?;
        Some(index)
    }

    fn walk(
        &mut self,
        dwarf: &gimli::Dwarf<R>,
        unit: &gimli::Unit<R>,
        files: &FileNames,
        node: gimli::EntriesTreeNode<R>,
        prefix: &str,
    ) -> gimli::Result<Option<usize>> {
        let e = node.entry();
        let tag = e.tag();
        let kept = matches!(
            tag,
            gimli::DW_TAG_structure_type
                | gimli::DW_TAG_union_type
                | gimli::DW_TAG_enumeration_type
                | gimli::DW_TAG_member
                | gimli::DW_TAG_variant_part
                | gimli::DW_TAG_variant
                | gimli::DW_TAG_template_type_parameter
                | gimli::DW_TAG_base_type
                | gimli::DW_TAG_pointer_type
        );
        // Functions' bodies hold no types of interest; namespaces only name.
        if !kept && tag != gimli::DW_TAG_namespace && tag != gimli::DW_TAG_compile_unit {
            return Ok(None);
        }
        let offset = e.offset().0;
        let name = die_name(dwarf, unit, e);
        let qualified = match (&name, prefix.is_empty()) {
            (Some(n), true) => n.clone(),
            (Some(n), false) => format!("{prefix}::{n}"),
            (None, _) => prefix.to_owned(),
        };
        let mut die = Die {
            tag,
            name: name.clone(),
            qualified: qualified.clone(),
            ty: None,
            location: None,
            byte_size: None,
            discr: None,
            discr_value: None,
            decl: None,
            children: Vec::new(),
        };
        if kept {
            if let Some(AttributeValue::UnitRef(t)) = e.attr_value(gimli::DW_AT_type) {
                die.ty = Some(t.0);
            }
            die.location = e
                .attr_value(gimli::DW_AT_data_member_location)
                .and_then(|v| v.udata_value());
            die.byte_size = e
                .attr_value(gimli::DW_AT_byte_size)
                .and_then(|v| v.udata_value());
            if let Some(AttributeValue::UnitRef(d)) = e.attr_value(gimli::DW_AT_discr) {
                die.discr = Some(d.0);
            }
            die.discr_value = e
                .attr_value(gimli::DW_AT_discr_value)
                .and_then(|v| match v {
                    AttributeValue::Sdata(s) => Some(s as u64),
                    v => v.udata_value(),
                });
            if let (Some(AttributeValue::FileIndex(f)), Some(line)) = (
                e.attr_value(gimli::DW_AT_decl_file),
                e.attr_value(gimli::DW_AT_decl_line)
                    .and_then(|v| v.udata_value()),
            ) && let Some(file) = files.get(f)
            {
                die.decl = Some(SourceLine { file, line });
            }
        }
        let child_prefix = match tag {
            gimli::DW_TAG_compile_unit => String::new(),
            _ => qualified.clone(),
        };
        let mut children = node.children();
        while let Some(child) = children.next()? {
            if let Some(c) = self.walk(dwarf, unit, files, child, &child_prefix)? {
                die.children.push(c);
            }
        }
        if !kept {
            return Ok(None);
        }
        if tag == gimli::DW_TAG_structure_type
            && let Some(n) = &name
            && qualified.starts_with(TASK_CELL_TYPE)
            && let Some(args) = TASK_CELL_TYPE
                .rsplit("::")
                .next()
                .and_then(|c| n.strip_prefix(c))
                .and_then(|a| a.strip_suffix('>'))
        {
            self.cells.insert(args.to_owned(), offset);
        }
        self.dies.insert(offset, die);
        Ok(Some(offset))
    }

    /// Where the future of the task type whose cell is `Cell<args>` lies in its cell.
    fn future_at(
        &self,
        args: &str,
        types: &mut Vec<Ty>,
        memo: &mut HashMap<usize, usize>,
    ) -> Option<FutureAt> {
        let cell = *self.cells.get(args)?;
        let t = self.dies[&cell]
            .children
            .iter()
            .map(|c| &self.dies[c])
            .find(|c| {
                c.tag == gimli::DW_TAG_template_type_parameter && c.name.as_deref() == Some("T")
            })?
            .ty?;
        let steps = self.path_to(cell, t, 0)?;
        let ty = self.resolve(t, types, memo, 0);
        Some(FutureAt { steps, ty })
    }

    /// Steps from the start of type `from` to a member of type `to`.
    fn path_to(&self, from: usize, to: usize, depth: usize) -> Option<Vec<Step>> {
        if depth > MAX_DEPTH {
            return None;
        }
        let die = self.dies.get(&from)?;
        for &c in &die.children {
            let child = &self.dies[&c];
            match child.tag {
                gimli::DW_TAG_member => {
                    let (Some(ty), Some(at)) = (child.ty, child.location) else {
                        continue;
                    };
                    if ty == to {
                        return Some(vec![Step::Offset(at)]);
                    }
                    if let Some(mut rest) = self.path_into(ty, to, depth) {
                        rest.insert(0, Step::Offset(at));
                        return Some(rest);
                    }
                }
                gimli::DW_TAG_variant_part => {
                    let (at, size) = self.discr_of(child)?;
                    let values: Vec<u64> = child
                        .children
                        .iter()
                        .filter_map(|v| self.dies[v].discr_value)
                        .collect();
                    for &v in &child.children {
                        let variant = &self.dies[&v];
                        if variant.tag != gimli::DW_TAG_variant {
                            continue;
                        }
                        let Some(member) = variant.children.first().map(|m| &self.dies[m]) else {
                            continue;
                        };
                        let (Some(ty), Some(loc)) = (member.ty, member.location) else {
                            continue;
                        };
                        let check = Step::Variant {
                            at,
                            size,
                            value: variant.discr_value,
                            others: if variant.discr_value.is_none() {
                                values.clone()
                            } else {
                                Vec::new()
                            },
                        };
                        if let Some(mut rest) = self.path_into(ty, to, depth) {
                            // The discriminant is relative to the enum, as is the member.
                            rest.insert(0, Step::Offset(loc));
                            rest.insert(0, check);
                            return Some(rest);
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// `path_to` inside a member's type, if it is a structure that may hold `to`.
    fn path_into(&self, ty: usize, to: usize, depth: usize) -> Option<Vec<Step>> {
        let d = self.dies.get(&ty)?;
        if !matches!(
            d.tag,
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
        ) {
            return None;
        }
        if d.tag == gimli::DW_TAG_union_type {
            // A union member (`MaybeUninit`'s `value`) is at offset 0: step in.
            for &c in &d.children {
                let m = &self.dies[&c];
                if let Some(t) = m.ty {
                    if t == to {
                        return Some(vec![Step::Offset(0)]);
                    }
                    if let Some(mut rest) = self.path_into(t, to, depth + 1) {
                        rest.insert(0, Step::Offset(0));
                        return Some(rest);
                    }
                }
            }
            return None;
        }
        self.path_to(ty, to, depth + 1)
    }

    /// A variant part's discriminant: its offset and size.
    fn discr_of(&self, part: &Die) -> Option<(u64, u8)> {
        let d = self.dies.get(&part.discr?)?;
        let size = self.dies.get(&d.ty?)?.byte_size?;
        Some((d.location?, size.min(8) as u8))
    }

    /// The type at `ty`, added to `types` (once).
    fn resolve(
        &self,
        ty: usize,
        types: &mut Vec<Ty>,
        memo: &mut HashMap<usize, usize>,
        depth: usize,
    ) -> usize {
        if let Some(&i) = memo.get(&ty) {
            return i;
        }
        let i = types.len();
        memo.insert(ty, i);
        let die = self.dies.get(&ty);
        let name = die.map_or_else(|| "?".into(), |d| d.qualified.clone());
        let fact = self.fact(ty, &name);
        types.push(Ty::Leaf(Leaf { name, fact }));
        let Some(die) = die else {
            return i;
        };
        if depth > MAX_DEPTH {
            return i;
        }
        if let Some(m) = self.machine(die, types, memo, depth) {
            types[i] = Ty::Machine(m);
        }
        i
    }

    /// What a leaf of type `ty` named `name` holds about what it waits for.
    fn fact(&self, ty: usize, name: &str) -> Option<Fact> {
        let f = LEAF_FACTS
            .iter()
            .find(|f| name.starts_with(f.type_prefix))?;
        let (at, member_ty) = self.member_named(ty, f.member, 0)?;
        match f.kind {
            LeafFactKind::TaskHeader => Some(Fact::TaskHeader { at }),
            LeafFactKind::Deadline => {
                // std's `Instant { t: Timespec { tv_sec, tv_nsec: Nanoseconds(u32) } }`.
                let (sec, _) = self.member_named(member_ty, "tv_sec", 0)?;
                let (nsec, _) = self.member_named(member_ty, "tv_nsec", 0)?;
                Some(Fact::Deadline {
                    sec_at: at + sec,
                    nsec_at: at + nsec,
                })
            }
        }
    }

    /// The offset and type of the first member named `name` inside structure `ty`,
    /// nearest first (through nested structures, not through enums or pointers).
    fn member_named(&self, ty: usize, name: &str, depth: usize) -> Option<(u64, usize)> {
        if depth > 6 {
            return None;
        }
        let die = self.dies.get(&ty)?;
        if die.tag != gimli::DW_TAG_structure_type {
            return None;
        }
        let members = || {
            die.children
                .iter()
                .map(|c| &self.dies[c])
                .filter(|m| m.tag == gimli::DW_TAG_member)
        };
        if let Some(m) = members().find(|m| m.name.as_deref() == Some(name)) {
            return Some((m.location?, m.ty?));
        }
        members().find_map(|m| {
            let (at, t) = self.member_named(m.ty?, name, depth + 1)?;
            Some((m.location? + at, t))
        })
    }

    /// A state machine (`{async_fn_env#N}`, `{async_block_env#N}`), if `die` is one.
    fn machine(
        &self,
        die: &Die,
        types: &mut Vec<Ty>,
        memo: &mut HashMap<usize, usize>,
        depth: usize,
    ) -> Option<Machine> {
        let name = die.name.as_deref()?;
        if !(name.starts_with("{async_fn_env#") || name.starts_with("{async_block_env#")) {
            return None;
        }
        let part = die
            .children
            .iter()
            .map(|c| &self.dies[c])
            .find(|c| c.tag == gimli::DW_TAG_variant_part)?;
        let (discr_at, discr_size) = self.discr_of(part)?;
        let function = die
            .qualified
            .strip_suffix(name)
            .unwrap_or(&die.qualified)
            .trim_end_matches("::");
        // `{async_fn_env#0}<T>`: the function's generic arguments follow the env's name.
        let function = match name.split_once('<') {
            Some((_, args)) => format!("{function}<{args}"),
            None => function.to_owned(),
        };
        let mut states = Vec::new();
        for &v in &part.children {
            let variant = &self.dies[&v];
            if variant.tag != gimli::DW_TAG_variant {
                continue;
            }
            let Some(member) = variant.children.first().map(|m| &self.dies[m]) else {
                continue;
            };
            let Some(state_ty) = member.ty.and_then(|t| self.dies.get(&t)) else {
                continue;
            };
            let state_name = state_ty.name.clone().unwrap_or_default();
            let base = member.location.unwrap_or(0);
            let awaitee = state_ty
                .children
                .iter()
                .map(|c| &self.dies[c])
                .find(|c| c.name.as_deref() == Some("__awaitee"))
                .and_then(|a| Some((base + a.location?, a.ty?)));
            let awaitee = awaitee.map(|(at, t)| (at, self.resolve(t, types, memo, depth + 1)));
            states.push(State {
                value: variant.discr_value,
                name: state_name,
                at: member.decl.clone(),
                awaitee,
            });
        }
        Some(Machine {
            function,
            discr_at,
            discr_size,
            states,
        })
    }
}

/// A unit's file names, by the index `DW_AT_decl_file` uses.
struct FileNames {
    names: HashMap<u64, Arc<str>>,
}

impl FileNames {
    fn new(dwarf: &gimli::Dwarf<R>, unit: &gimli::Unit<R>) -> Self {
        let mut names = HashMap::new();
        if let Some(program) = unit.line_program.as_ref() {
            let header = program.header();
            let first = if header.version() >= 5 { 0 } else { 1 };
            for (i, f) in header.file_names().iter().enumerate() {
                let mut path = String::new();
                if let Some(dir) = f.directory(header)
                    && let Ok(d) = dwarf.attr_string(unit, dir)
                    && let Ok(d) = d.to_string_lossy()
                {
                    path.push_str(&d);
                }
                if let Ok(n) = dwarf.attr_string(unit, f.path_name())
                    && let Ok(n) = n.to_string_lossy()
                {
                    if n.starts_with('/') || path.is_empty() {
                        path = n.into_owned();
                    } else {
                        path = format!("{}/{n}", path.trim_end_matches('/'));
                    }
                }
                names.insert(i as u64 + first, Arc::from(path));
            }
        }
        FileNames { names }
    }

    fn get(&self, index: u64) -> Option<Arc<str>> {
        self.names.get(&index).cloned()
    }
}
