//! Spawn sites: decodes the caller's `&'static Location` that tokio's `#[track_caller]`
//! spawn functions receive, straight from the target's ELF file (it lives in read-only
//! data), and names the calling function from a return address when no location is found.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::tokio_versions::Layout;
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, RelocationFlags, SymbolKind};

const R_X86_64_RELATIVE: u32 = 8;

/// What the file says, independent of where the process mapped it.
pub struct LocationTable {
    data: Vec<u8>,
    /// PT_LOAD segments: (vaddr, filesz, file offset).
    segments: Vec<(u64, u64, u64)>,
    /// Read-only data ranges where `Location` constants live.
    rodata: Vec<(u64, u64)>,
    /// `.data.rel.ro`: relocated read-only data, where vtables live.
    data_rel_ro: Vec<(u64, u64)>,
    /// `R_X86_64_RELATIVE` relocations: target vaddr → addend (the pointer's value).
    relative: HashMap<u64, u64>,
    /// Function symbols sorted by address: (start, size, demangled name).
    functions: Vec<(u64, u64, Arc<str>)>,
    /// Without symbols: function bounds from the unwind tables (`.eh_frame` FDEs, which
    /// survive stripping), sorted: (start, end).
    fde_functions: Vec<(u64, u64)>,
    /// The file is position-independent (its addresses move by a load bias).
    pie: bool,
    /// Unwind information and code, for stack unwinding: (section vaddr range, bytes).
    unwind: UnwindSections,
    /// DWARF line tables (with inlining), when the binary has them, and the compilation
    /// directories of its units.
    lines: Option<Lines>,
    comp_dirs: Vec<String>,
}

/// Function bounds from `.eh_frame`: one FDE per function (LLVM emits them for every
/// function, with or without panic unwinding), sorted by start.
fn fde_functions(unwind: &UnwindSections) -> Vec<(u64, u64)> {
    use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, UnwindSection};
    let (Some((eh_range, eh)), Some((text_range, _))) = (&unwind.eh_frame, &unwind.text) else {
        return Vec::new();
    };
    let section = EhFrame::new(eh, LittleEndian);
    let mut bases = BaseAddresses::default()
        .set_eh_frame(eh_range.start)
        .set_text(text_range.start);
    if let Some((hdr, _)) = &unwind.eh_frame_hdr {
        bases = bases.set_eh_frame_hdr(hdr.start);
    }
    let mut out = Vec::new();
    let mut entries = section.entries(&bases);
    while let Ok(Some(entry)) = entries.next() {
        if let CieOrFde::Fde(partial) = entry
            && let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o))
            && fde.len() > 0
        {
            out.push((fde.initial_address(), fde.initial_address() + fde.len()));
        }
    }
    out.sort_unstable();
    out
}

type Lines = addr2line::Context<gimli::EndianArcSlice<gimli::RunTimeEndian>>;

#[derive(Default)]
struct UnwindSections {
    text: Option<(std::ops::Range<u64>, Vec<u8>)>,
    eh_frame: Option<(std::ops::Range<u64>, Vec<u8>)>,
    eh_frame_hdr: Option<(std::ops::Range<u64>, Vec<u8>)>,
    /// Lowest and highest loaded address (file addresses).
    image: std::ops::Range<u64>,
}

impl LocationTable {
    pub fn parse(data: Vec<u8>) -> Self {
        let mut table = Self {
            data: Vec::new(),
            segments: Vec::new(),
            rodata: Vec::new(),
            data_rel_ro: Vec::new(),
            relative: HashMap::new(),
            functions: Vec::new(),
            fde_functions: Vec::new(),
            pie: false,
            unwind: UnwindSections::default(),
            lines: None,
            comp_dirs: Vec::new(),
        };
        if let Ok(file) = object::File::parse(&*data) {
            table.pie = file.kind() == object::ObjectKind::Dynamic;
            table.segments = file
                .segments()
                .map(|s| (s.address(), s.file_range().1, s.file_range().0))
                .collect();
            for sec in file.sections() {
                let Ok(name) = sec.name() else { continue };
                let range = sec.address()..sec.address() + sec.size();
                let bytes = || sec.data().ok().map(|d| (range.clone(), d.to_vec()));
                match name {
                    ".rodata" => table.rodata.push((range.start, range.end)),
                    ".data.rel.ro" => {
                        table.rodata.push((range.start, range.end));
                        table.data_rel_ro.push((range.start, range.end));
                    }
                    ".text" => table.unwind.text = bytes(),
                    ".eh_frame" => table.unwind.eh_frame = bytes(),
                    ".eh_frame_hdr" => table.unwind.eh_frame_hdr = bytes(),
                    _ => {}
                }
            }
            let lo = table.segments.iter().map(|s| s.0).min().unwrap_or(0);
            let hi = file
                .segments()
                .map(|s| s.address() + s.size())
                .max()
                .unwrap_or(0);
            table.unwind.image = lo..hi;
            if let Some(relocs) = file.dynamic_relocations() {
                for (offset, r) in relocs {
                    if let RelocationFlags::Elf { r_type } = r.flags()
                        && r_type == R_X86_64_RELATIVE
                    {
                        table.relative.insert(offset, r.addend() as u64);
                    }
                }
            }
            for sym in file.symbols() {
                if sym.kind() == SymbolKind::Text
                    && sym.address() != 0
                    && let Ok(raw) = sym.name()
                {
                    let name = format!("{:#}", rustc_demangle::demangle(raw));
                    table
                        .functions
                        .push((sym.address(), sym.size(), name.into()));
                }
            }
            table.functions.sort_by_key(|f| f.0);
            if table.functions.is_empty() {
                table.fde_functions = fde_functions(&table.unwind);
            }
            if let Some((lines, dirs)) = load_lines(&file) {
                table.lines = Some(lines);
                table.comp_dirs = dirs;
            }
        }
        table.data = data;
        table
    }

    fn bytes(&self, vaddr: u64, len: u64) -> Option<&[u8]> {
        let &(start, _, off) = self
            .segments
            .iter()
            .find(|&&(s, sz, _)| vaddr >= s && vaddr + len <= s + sz)?;
        let at = (vaddr - start + off) as usize;
        self.data.get(at..at + len as usize)
    }

    /// The file's bytes from `vaddr` to the end of its segment, at most `max` of them.
    pub fn code(&self, vaddr: u64, max: u64) -> Option<&[u8]> {
        let &(start, size, off) = self
            .segments
            .iter()
            .find(|&&(s, sz, _)| vaddr >= s && vaddr < s + sz)?;
        let len = max.min(start + size - vaddr);
        let at = (vaddr - start + off) as usize;
        self.data.get(at..at + len as usize)
    }

    fn u64_at(&self, vaddr: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(vaddr, 8)?.try_into().ok()?))
    }

    pub fn u32_at(&self, vaddr: u64) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(vaddr, 4)?.try_into().ok()?))
    }

    /// A pointer stored in the file at `vaddr`, as the loader would have written it
    /// (relative to the file's own addresses).
    fn pointer_at(&self, vaddr: u64) -> Option<u64> {
        match self.relative.get(&vaddr) {
            Some(&addend) => Some(addend),
            None => self.u64_at(vaddr).filter(|&p| p != 0),
        }
    }

    /// Decodes a `core::panic::Location` (`{file: &str, line: u32, col: u32}`) at a file
    /// address, validating every field: garbage is `None`, never a made-up location.
    pub fn location_at(&self, vaddr: u64) -> Option<String> {
        if !vaddr.is_multiple_of(8)
            || !self
                .rodata
                .iter()
                .any(|&(s, e)| vaddr >= s && vaddr + 24 <= e)
        {
            return None;
        }
        let file_ptr = self.pointer_at(vaddr)?;
        let len = self.u64_at(vaddr + 8)?;
        let line = self.u32_at(vaddr + 16)?;
        let col = self.u32_at(vaddr + 20)?;
        if !(1..=4096).contains(&len) || line == 0 || line > 10_000_000 || col > 100_000 {
            return None;
        }
        let name = std::str::from_utf8(self.bytes(file_ptr, len)?).ok()?;
        let name = name.trim_end_matches('\0');
        if !name.ends_with(".rs") || name.chars().any(char::is_control) {
            return None;
        }
        Some(format!("{name}:{line}:{col}"))
    }

    /// `file:line:col` of a code address from the DWARF line tables: the innermost frame,
    /// inlined ones included, whose source is outside tokio and std (so a return address in
    /// a user function with `Handle::spawn` inlined names the user's call). Paths under the
    /// compilation directory are made relative to it, as `#[track_caller]` locations are.
    pub fn source_line_at(&self, vaddr: u64) -> Option<String> {
        let lines = self.lines.as_ref()?;
        let mut frames = lines.find_frames(vaddr).skip_all_loads().ok()?;
        while let Ok(Some(frame)) = frames.next() {
            let Some(loc) = frame.location else { continue };
            let (Some(file), Some(line)) = (loc.file, loc.line) else {
                continue;
            };
            if is_runtime_internal(file) {
                continue;
            }
            let file = self.relative_source(file);
            return Some(format!("{file}:{line}:{}", loc.column.unwrap_or(0)));
        }
        None
    }

    fn relative_source<'a>(&self, file: &'a str) -> &'a str {
        self.comp_dirs
            .iter()
            .find_map(|d| file.strip_prefix(d.as_str())?.strip_prefix('/'))
            .unwrap_or(file)
    }

    /// `function+0xoff` for a file address inside a known function.
    pub fn function_at(&self, vaddr: u64) -> Option<(Arc<str>, u64)> {
        let i = self
            .functions
            .partition_point(|f| f.0 <= vaddr)
            .checked_sub(1)?;
        let (start, size, name) = &self.functions[i];
        // A symbol without a size (e.g. `_fini`) reaches at most to the next one; nothing
        // outside `.text` is code (a stack or library address is not "_fini+0x2a26…").
        let inside = if *size > 0 {
            vaddr < start + size
        } else {
            self.functions.get(i + 1).is_some_and(|next| vaddr < next.0)
        };
        let in_text = self
            .unwind
            .text
            .as_ref()
            .is_some_and(|(range, _)| range.contains(&vaddr));
        (inside && in_text).then(|| (name.clone(), vaddr - start))
    }
}

impl LocationTable {
    /// `.text`: its address and bytes.
    pub fn text(&self) -> Option<(u64, &[u8])> {
        self.unwind
            .text
            .as_ref()
            .map(|(range, bytes)| (range.start, bytes.as_slice()))
    }

    /// The pointer stored at `vaddr` once relocated (a GOT slot's target).
    pub fn relocated_pointer(&self, vaddr: u64) -> Option<u64> {
        self.pointer_at(vaddr)
    }

    /// The function containing `vaddr`: (start, end), from its symbol, or in a stripped
    /// binary from its unwind table entry.
    pub fn function_bounds(&self, vaddr: u64) -> Option<(u64, u64)> {
        if self.functions.is_empty() {
            let i = self
                .fde_functions
                .partition_point(|f| f.0 <= vaddr)
                .checked_sub(1)?;
            let (start, end) = self.fde_functions[i];
            return (vaddr < end).then_some((start, end));
        }
        let i = self
            .functions
            .partition_point(|f| f.0 <= vaddr)
            .checked_sub(1)?;
        let (start, size, _) = self.functions[i];
        (size > 0 && vaddr < start + size).then_some((start, start + size))
    }

    /// Function symbols as (start, size), sorted by start.
    pub fn function_ranges(&self) -> Vec<(u64, u64)> {
        if self.functions.is_empty() {
            return self
                .fde_functions
                .iter()
                .map(|f| (f.0, f.1 - f.0))
                .collect();
        }
        self.functions.iter().map(|f| (f.0, f.1)).collect()
    }

    /// Those of `targets` that some relocated pointer in the file's data points at
    /// (functions whose address is taken), in one pass over the relocations. Non-PIE
    /// files keep no such list: all of them there.
    pub fn pointed_at_from_data(&self, targets: &HashSet<u64>) -> HashSet<u64> {
        if !self.pie {
            return targets.clone();
        }
        self.relative
            .values()
            .filter(|a| targets.contains(a))
            .copied()
            .collect()
    }

    /// The first generic argument of the function at `vaddr`: the future type of a
    /// spawn function's or `raw::poll`'s instance.
    pub fn future_of_function(&self, vaddr: u64) -> Option<String> {
        let (name, _) = self.function_at(vaddr)?;
        first_generic_arg(&name).map(str::to_owned)
    }

    /// The future type a task vtable (at a file address) belongs to; see
    /// [`Locator::future_name`].
    pub fn future_of_vtable(&self, vtable: u64) -> Option<String> {
        self.future_of_function(self.pointer_at(vtable)?)
    }
}

/// A task vtable: one per spawned future type (and scheduler), with the offsets that
/// locate the task's parts from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskVtable {
    /// Address in the file (add the load bias for the process's address).
    pub vaddr: u64,
    pub trailer_offset: u64,
    pub scheduler_offset: u64,
    pub id_offset: u64,
}

/// Slots of a task vtable before its offsets: poll, schedule, dealloc, try_read_output,
/// drop_join_handle_slow, drop_abort_handle, shutdown.
pub const VTABLE_FUNCTIONS: u64 = 7;

impl LocationTable {
    /// The function pointer in slot `index` of the vtable at file address `vaddr`.
    pub fn vtable_slot(&self, vaddr: u64, index: u64) -> Option<u64> {
        self.pointer_at(vaddr + 8 * index)
    }

    /// Task vtables found without symbols (stripped binaries): `.data.rel.ro` runs of
    /// seven pointers into `.text` followed by the three offsets, with
    /// header < scheduler ≤ id < trailer, all 8-aligned.
    pub fn scan_task_vtables(&self, layout: &Layout) -> Vec<TaskVtable> {
        let Some((text, _)) = self.unwind.text.as_ref() else {
            return Vec::new();
        };
        let in_text = |p: Option<u64>| p.is_some_and(|p| text.contains(&p));
        let mut out = Vec::new();
        for &(start, end) in &self.data_rel_ro {
            let mut v = start.next_multiple_of(8);
            while v + layout.vtable_id_offset + 8 <= end {
                if (0..VTABLE_FUNCTIONS).all(|i| in_text(self.vtable_slot(v, i)))
                    && let Some(vt) = self.vtable_at(v, layout)
                    && [vt.trailer_offset, vt.scheduler_offset, vt.id_offset]
                        .iter()
                        .all(|o| o.is_multiple_of(8))
                {
                    out.push(vt);
                    v += layout.vtable_id_offset + 8;
                    continue;
                }
                v += 8;
            }
        }
        out
    }

    /// tokio's task waker vtable (`RawWakerVTable { clone, wake, wake_by_ref, drop }`)
    /// found without symbols: a `.data.rel.ro` run of four `.text` pointers whose clone
    /// function adds one reference (`ref_one`) to the header its argument points at
    /// (`lock xadd [rdi]`, no displacement: other wakers count references elsewhere, e.g.
    /// an `Arc` 16 bytes before its data) and returns this very table (a RIP-relative
    /// `lea`, or a load from a GOT slot holding it). `None` unless exactly one matches.
    pub fn scan_waker_vtable(&self, ref_one: u64) -> Option<u64> {
        let (text, code) = self.unwind.text.as_ref()?;
        let in_text = |p: Option<u64>| p.filter(|p| text.contains(p));
        let mut found = Vec::new();
        for &(start, end) in &self.data_rel_ro {
            let mut v = start.next_multiple_of(8);
            while v + 32 <= end {
                let slots: Vec<Option<u64>> = (0..4)
                    .map(|i| in_text(self.pointer_at(v + 8 * i)))
                    .collect();
                if let Some(clone) = slots[0]
                    && slots.iter().all(Option::is_some)
                {
                    let at = (clone - text.start) as usize;
                    let body = &code[at..(at + 48).min(code.len())];
                    if self.is_task_waker_clone(clone, body, v, ref_one) {
                        found.push(v);
                    }
                }
                v += 8;
            }
        }
        (found.len() == 1).then(|| found[0])
    }

    fn is_task_waker_clone(&self, ip: u64, body: &[u8], table: u64, ref_one: u64) -> bool {
        let imm = (ref_one as u32).to_le_bytes();
        // mov r32, imm32 (b8+r) with REF_ONE, then lock xadd [rdi], r64 (f0 48 0f c1 /r,
        // mod 00, rm 111).
        // or, optimised for size (`opt-level = "z"`), push imm8; pop r64 (6a ib, 58+r).
        let loads_ref_one = body
            .windows(5)
            .any(|w| (0xb8..=0xbf).contains(&w[0]) && w[1..] == imm)
            || (ref_one < 0x80
                && body.windows(3).any(|w| {
                    w[0] == 0x6a && u64::from(w[1]) == ref_one && (0x58..=0x5f).contains(&w[2])
                }));
        let xadd_rdi = body
            .windows(5)
            .any(|w| w[..4] == [0xf0, 0x48, 0x0f, 0xc1] && w[4] & 0xc7 == 0x07);
        if !(loads_ref_one && xadd_rdi) {
            return false;
        }
        // lea / mov r64, [rip + disp32]: 48 8d|8b modrm(00 reg 101) disp32.
        body.windows(7).enumerate().any(|(i, w)| {
            if w[0] != 0x48 || !(w[1] == 0x8d || w[1] == 0x8b) || w[2] & 0xc7 != 0x05 {
                return false;
            }
            let disp = i32::from_le_bytes([w[3], w[4], w[5], w[6]]) as i64;
            let target = (ip + i as u64 + 7).wrapping_add_signed(disp);
            match w[1] {
                0x8d => target == table,
                _ => self.pointer_at(target) == Some(table),
            }
        })
    }

    /// The vtable at `vaddr` if its offset fields are plausible.
    fn vtable_at(&self, vaddr: u64, layout: &Layout) -> Option<TaskVtable> {
        // Offsets are plain integers: a relocated slot there is a pointer, not an offset.
        if [
            layout.vtable_trailer_offset,
            layout.vtable_scheduler_offset,
            layout.vtable_id_offset,
        ]
        .iter()
        .any(|o| self.relative.contains_key(&(vaddr + o)))
        {
            return None;
        }
        let vt = TaskVtable {
            vaddr,
            trailer_offset: self.u64_at(vaddr + layout.vtable_trailer_offset)?,
            scheduler_offset: self.u64_at(vaddr + layout.vtable_scheduler_offset)?,
            id_offset: self.u64_at(vaddr + layout.vtable_id_offset)?,
        };
        (layout.header_owner_id < vt.scheduler_offset
            && vt.scheduler_offset <= vt.id_offset
            && vt.id_offset < vt.trailer_offset
            && vt.trailer_offset < 1 << 24)
            .then_some(vt)
    }

    /// The task vtables: read-only data slots whose first word points at one of `polls`
    /// (the `raw::poll` instances), and whose offset fields are plausible
    /// (header ≤ scheduler ≤ id < trailer). Each monomorphized task type has one.
    pub fn task_vtables(&self, polls: &[u64], layout: &Layout) -> Vec<TaskVtable> {
        let polls: std::collections::HashSet<u64> = polls.iter().copied().collect();
        let mut slots: Vec<u64> = self
            .relative
            .iter()
            .filter(|&(_, addend)| polls.contains(addend))
            .map(|(&vaddr, _)| vaddr)
            .collect();
        if !self.pie {
            for &(start, end) in &self.rodata {
                let mut v = start.next_multiple_of(8);
                while v + 8 <= end {
                    if self.u64_at(v).is_some_and(|p| polls.contains(&p)) {
                        slots.push(v);
                    }
                    v += 8;
                }
            }
        }
        slots.sort_unstable();
        slots.dedup();
        slots
            .into_iter()
            .filter(|&v| self.rodata.iter().any(|&(s, e)| v >= s && v < e))
            .filter_map(|vaddr| self.vtable_at(vaddr, layout))
            .collect()
    }
}

/// Whether a source path or function belongs to tokio or the standard library, which a
/// user never wants to see as "where this task was spawned".
pub fn is_runtime_internal(s: &str) -> bool {
    s.contains("/tokio-1.")
        || s.starts_with("/rustc/")
        || s.contains("/library/std/")
        || s.contains("/library/core/")
        || s.contains("/library/alloc/")
        || s.starts_with("tokio::")
        || s.starts_with("<tokio::")
        || s.starts_with("std::")
        || s.starts_with("core::")
        || s.starts_with("<core::")
        || s.starts_with("<std::")
        || s.starts_with("alloc::")
}

/// Resolves spawn calls of one process: needs the process's load bias, read once from
/// `/proc/PID/maps` when the first spawn call arrives (the program may not be exec'd yet
/// when tracing starts).
pub struct Locator {
    table: LocationTable,
    pid: u32,
    exe: PathBuf,
    bias: Option<u64>,
    cache: HashMap<u64, Option<Arc<str>>>,
    /// DWARF source lines by code address.
    lines: HashMap<u64, Option<Arc<str>>>,
    unwinder: Option<StackUnwinder>,
    /// Task vtable (file address) → where its tasks are spawned, from the code.
    vtable_sites: HashMap<u64, Arc<str>>,
}

impl Locator {
    /// Sites the plan found for task vtables (file addresses).
    pub fn set_vtable_sites(&mut self, sites: impl IntoIterator<Item = (u64, String)>) {
        self.vtable_sites = sites.into_iter().map(|(v, s)| (v, Arc::from(s))).collect();
    }

    /// Where the code says the tasks of a task vtable (file address) are spawned.
    pub fn vtable_site(&self, vtable: u64) -> Option<Arc<str>> {
        self.vtable_sites.get(&vtable).cloned()
    }
}

impl Locator {
    pub fn new(table: LocationTable, pid: u32, exe: PathBuf) -> Self {
        Self {
            table,
            pid,
            exe,
            bias: None,
            cache: HashMap::new(),
            lines: HashMap::new(),
            unwinder: None,
            vtable_sites: HashMap::new(),
        }
    }

    /// Where the process mapped the file: add to a file address for the process's.
    pub fn bias(&mut self) -> Option<u64> {
        if self.bias.is_none() {
            self.bias = if self.table.pie {
                load_bias(self.pid, &self.exe, &self.table)
            } else {
                Some(0)
            };
        }
        self.bias
    }

    /// The user's spawn site among a spawn call's argument registers, if one holds a
    /// `Location` outside tokio and std.
    pub fn location(&mut self, args: &[u64]) -> Option<Arc<str>> {
        let bias = self.bias()?;
        for &a in args {
            let Some(vaddr) = a.checked_sub(bias) else {
                continue;
            };
            if !self
                .table
                .rodata
                .iter()
                .any(|&(s, e)| vaddr >= s && vaddr < e)
            {
                continue;
            }
            let table = &self.table;
            let found = self
                .cache
                .entry(vaddr)
                .or_insert_with(|| table.location_at(vaddr).map(Arc::from));
            if let Some(loc) = found
                && !is_runtime_internal(loc)
            {
                return Some(loc.clone());
            }
        }
        None
    }

    /// `function+0xoff` of a return address, unless it is inside tokio or std.
    pub fn caller(&mut self, return_address: u64) -> Option<Arc<str>> {
        let bias = self.bias()?;
        let vaddr = return_address.checked_sub(bias)?;
        // The call instruction ends at the return address: look up the byte before it.
        if let Some(line) = self.source_line(vaddr.checked_sub(1)?) {
            return Some(line);
        }
        let (name, off) = self.table.function_at(vaddr)?;
        if is_runtime_internal(&name) {
            return inlined_user_code(&name, off);
        }
        Some(format!("{name}+{off:#x}").into())
    }

    fn source_line(&mut self, vaddr: u64) -> Option<Arc<str>> {
        cached_line(&mut self.lines, &self.table, vaddr)
    }
}

/// `file:line:col` of a code address (file address) from DWARF, cached per address.
fn cached_line(
    lines: &mut HashMap<u64, Option<Arc<str>>>,
    table: &LocationTable,
    vaddr: u64,
) -> Option<Arc<str>> {
    lines
        .entry(vaddr)
        .or_insert_with(|| table.source_line_at(vaddr).map(Arc::from))
        .clone()
}

impl Locator {
    /// The process's task vtables, keyed by their address in the process.
    pub fn task_vtables(&mut self, polls: &[u64], layout: &Layout) -> Option<Vec<TaskVtable>> {
        let bias = self.bias()?;
        // Without symbols (no raw::poll instances known), by the vtable pattern.
        let found = if polls.is_empty() {
            self.table.scan_task_vtables(layout)
        } else {
            self.table.task_vtables(polls, layout)
        };
        Some(
            found
                .into_iter()
                .map(|v| TaskVtable {
                    vaddr: v.vaddr + bias,
                    ..v
                })
                .collect(),
        )
    }

    /// The future type a task vtable belongs to: its first slot is the monomorphized
    /// `raw::poll::<Future, Scheduler>`, whose v0-mangled name carries the type. `None` for
    /// legacy-mangled binaries, whose names drop generic arguments.
    pub fn future_name(&mut self, vtable: u64) -> Option<Arc<str>> {
        let bias = self.bias()?;
        self.table
            .future_of_vtable(vtable.checked_sub(bias)?)
            .map(Arc::from)
    }
}

impl Locator {
    /// The first caller outside tokio and std, found by unwinding a copy of the stack
    /// taken at a spawn probe (`ip`, `sp`, `bp` at the probe; `stack` copied from `sp`).
    pub fn unwound_caller(&mut self, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> Option<Arc<str>> {
        use framehop::{Unwinder, x86_64::UnwindRegsX86_64};
        let bias = self.bias()?;
        if self.unwinder.is_none() {
            self.unwinder = Some(build_unwinder(&self.table, bias)?);
        }
        let (unwinder, cache) = self.unwinder.as_mut()?;
        let mut read = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp).ok_or(())? as usize;
            let b = stack.get(off..off + 8).ok_or(())?;
            Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
        };
        let mut frames =
            unwinder.iter_frames(ip, UnwindRegsX86_64::new(ip, sp, bp), cache, &mut read);
        // A user closure inlined into std or tokio code: the answer if no frame of the
        // user's own is found further up.
        let mut inlined = None;
        for _ in 0..64 {
            let Ok(Some(frame)) = frames.next() else {
                break;
            };
            let vaddr = frame.address_for_lookup().checked_sub(bias)?;
            if let Some(line) = cached_line(&mut self.lines, &self.table, vaddr) {
                return Some(line);
            }
            if let Some((name, off)) = self.table.function_at(vaddr) {
                if !is_runtime_internal(&name) {
                    return Some(format!("{name}+{off:#x}").into());
                }
                if inlined.is_none() {
                    inlined = inlined_user_code(&name, off);
                }
            }
        }
        inlined
    }
}

type StackUnwinder = (
    framehop::x86_64::UnwinderX86_64<Vec<u8>>,
    framehop::x86_64::CacheX86_64,
);

fn build_unwinder(table: &LocationTable, bias: u64) -> Option<StackUnwinder> {
    let u = &table.unwind;
    let (text_svma, text) = u.text.clone()?;
    let (eh_svma, eh) = u.eh_frame.clone()?;
    let info = framehop::ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: Some(text_svma),
        text: Some(text),
        eh_frame_svma: Some(eh_svma),
        eh_frame: Some(eh),
        eh_frame_hdr_svma: u.eh_frame_hdr.as_ref().map(|h| h.0.clone()),
        eh_frame_hdr: u.eh_frame_hdr.as_ref().map(|h| h.1.clone()),
        ..Default::default()
    };
    let module = framehop::Module::new(
        "target".into(),
        bias + u.image.start..bias + u.image.end,
        bias,
        info,
    );
    let mut unwinder = framehop::x86_64::UnwinderX86_64::new();
    framehop::Unwinder::add_module(&mut unwinder, module);
    Some((unwinder, framehop::x86_64::CacheX86_64::new()))
}

/// `a::f::<X<Y, Z>, W>` → `X<Y, Z>`.
/// Code of the user's inlined into a std or tokio generic instantiated with the user's
/// type, e.g. a thread's body inside
/// `std::sys::backtrace::__rust_begin_short_backtrace::<app::f::{closure#0}, ()>`: named
/// after the user's type, with where it was inlined.
fn inlined_user_code(name: &str, off: u64) -> Option<Arc<str>> {
    let user = first_generic_arg(name)?;
    if is_runtime_internal(user) || user.starts_with('<') || !user.contains("::") {
        return None;
    }
    let base = name.split("::<").next().unwrap_or(name);
    Some(format!("{user} (inlined in {base}+{off:#x})").into())
}

pub fn first_generic_arg(name: &str) -> Option<&str> {
    let start = name.find("::<")? + 3;
    let mut depth = 0usize;
    for (i, c) in name[start..].char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' if depth > 0 => depth -= 1,
            ',' | '>' if depth == 0 => return Some(name[start..start + i].trim()),
            _ => {}
        }
    }
    None
}

/// Load bias of `exe` in process `pid`: where its lowest mapping starts, minus the file
/// address that mapping covers.
fn load_bias(pid: u32, exe: &Path, table: &LocationTable) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(exe).ok()?.ino();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut best: Option<(u64, u64)> = None;
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[4].parse::<u64>().ok() != Some(inode) {
            continue;
        }
        let start = u64::from_str_radix(f[0].split('-').next()?, 16).ok()?;
        let offset = u64::from_str_radix(f[2], 16).ok()?;
        if best.is_none_or(|(_, o)| offset < o) {
            best = Some((start, offset));
        }
    }
    let (start, offset) = best?;
    let &(vaddr, _, file_off) = table
        .segments
        .iter()
        .filter(|&&(_, sz, off)| offset >= off && offset < off + sz.max(1))
        .min_by_key(|s| s.2)?;
    start.checked_sub(vaddr - file_off + offset)
}

/// The DWARF of a binary that has line tables, ready for address lookups.
fn load_lines(file: &object::File) -> Option<(Lines, Vec<String>)> {
    use gimli::Reader as _;

    file.section_by_name(".debug_line")?;
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<_, gimli::Error> {
        let data = file
            .section_by_name(id.name())
            .and_then(|s| s.data().ok())
            .unwrap_or_default();
        Ok(gimli::EndianArcSlice::new(Arc::from(data), endian))
    };
    let dwarf = gimli::Dwarf::load(load).ok()?;
    let mut dirs = Vec::new();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        if let Ok(unit) = dwarf.unit(header)
            && let Some(dir) = unit.comp_dir.as_ref()
            && let Ok(dir) = dir.to_string_lossy()
        {
            let dir = dir.trim_end_matches('/').to_owned();
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    Some((addr2line::Context::from_dwarf(dwarf).ok()?, dirs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_paths_are_recognised() {
        assert!(is_runtime_internal(
            "/root/.cargo/registry/src/index/tokio-1.54.1/src/runtime/handle.rs"
        ));
        assert!(is_runtime_internal(
            "/rustc/abc/library/std/src/thread/mod.rs"
        ));
        assert!(is_runtime_internal("tokio::runtime::handle::Handle::spawn"));
        assert!(!is_runtime_internal("src/handlers/analytics.rs"));
        assert!(!is_runtime_internal(
            "myapp::handlers::analytics::{closure#0}"
        ));
    }

    #[test]
    fn user_closures_inlined_into_std_are_named() {
        let name =
            "std::sys::backtrace::__rust_begin_short_backtrace::<app::serve::{closure#0}, ()>";
        assert_eq!(
            inlined_user_code(name, 0xd5).as_deref(),
            Some(
                "app::serve::{closure#0} (inlined in std::sys::backtrace::__rust_begin_short_backtrace+0xd5)"
            )
        );
        assert_eq!(
            inlined_user_code("std::thread::spawn::<std::io::Foo>", 1),
            None
        );
        assert_eq!(inlined_user_code("tokio::runtime::park::inner", 1), None);
    }

    #[test]
    fn future_type_from_poll_instance() {
        assert_eq!(
            first_generic_arg(
                "tokio::runtime::task::raw::poll::<app::serve::{closure#0}, alloc::sync::Arc<h::Handle>>"
            ),
            Some("app::serve::{closure#0}")
        );
        assert_eq!(
            first_generic_arg(
                "tokio::runtime::task::raw::poll::<tokio::runtime::blocking::task::BlockingTask<<x as y>::f::{closure#0}>, S>"
            ),
            Some("tokio::runtime::blocking::task::BlockingTask<<x as y>::f::{closure#0}>")
        );
        assert_eq!(first_generic_arg("tokio::runtime::task::raw::poll"), None);
    }

    #[test]
    fn garbage_is_not_a_location() {
        let t = LocationTable::parse(b"not an elf".to_vec());
        assert_eq!(t.location_at(0x1000), None);
        assert_eq!(t.function_at(0x1000), None);
    }
}
