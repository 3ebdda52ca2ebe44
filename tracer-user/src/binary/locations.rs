//! What a binary's file says of its code, wherever it is mapped: `Location`s (file, line,
//! column) in read-only data, function names and bounds, DWARF lines, task vtables by
//! their shape, the unwind tables.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crate::tokio_versions::{CoreAt, Layout};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, RelocationFlags, SymbolKind};

use object::elf::R_X86_64_RELATIVE;

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

/// A function at a code address ([`LocationTable::frames_at`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeFrame {
    /// Demangled, without the symbol hash.
    pub function: Option<String>,
    /// The source file and line, from the line tables (`None`, 0 without them): the
    /// program's own files relative to its directory, others' whole (their crate and
    /// version are in the path).
    pub file: Option<String>,
    pub line: u64,
    /// From the symbol's start, for a frame known by its symbol only.
    pub offset: u64,
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
    /// The table of a binary, demangling its function symbols itself (tests; a run
    /// parses each file once, `binary::read_binary`).
    #[cfg(test)]
    pub fn parse(data: Vec<u8>) -> Self {
        let table = match object::File::parse(&*data) {
            Ok(file) => Self::from_object(&file, None),
            Err(_) => Self::from_nothing(),
        };
        table.with_data(data)
    }

    /// The table of `file` (parsed once, shared with `BinaryInfo`), without its bytes yet
    /// (`with_data`): `functions` are its function symbols, already demangled.
    pub fn from_object(file: &object::File, functions: Option<Vec<(u64, u64, Arc<str>)>>) -> Self {
        let mut table = Self::from_nothing();
        table.fill(file, functions);
        table
    }

    /// The file's bytes, which the table reads Locations and code from.
    pub fn with_data(mut self, data: Vec<u8>) -> Self {
        self.data = data;
        self
    }

    fn from_nothing() -> Self {
        Self {
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
        }
    }

    fn fill(&mut self, file: &object::File, functions: Option<Vec<(u64, u64, Arc<str>)>>) {
        let table = self;
        {
            table.pie = file.kind() == object::ObjectKind::Dynamic;
            table.segments = file
                .segments()
                .map(|s| (s.address(), s.file_range().1, s.file_range().0))
                .collect();
            for sec in file.sections() {
                let Ok(name) = sec.name() else { continue };
                let range = sec.address()..sec.address().saturating_add(sec.size());
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
            match functions {
                Some(f) => table.functions = f,
                None => {
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
                }
            }
            table.functions.sort_by_key(|f| f.0);
            if table.functions.is_empty() {
                table.fde_functions = fde_functions(&table.unwind);
            }
            if let Some((lines, dirs)) = load_lines(file) {
                table.lines = Some(lines);
                table.comp_dirs = dirs;
            }
        }
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

    pub fn u64_at(&self, vaddr: u64) -> Option<u64> {
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
        // A path may hold any byte but NUL (a hostile build's may hold escapes: the
        // renderers make them inert).
        if !name.ends_with(".rs") || name.contains('\0') {
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

    /// The frames at a code address (file address), innermost first: the functions the
    /// DWARF inlining records place there, each with its line (for an outer frame, the line
    /// of its call to the next one in), else the one symbol holding it, with the offset.
    pub fn frames_at(&self, vaddr: u64) -> Vec<CodeFrame> {
        let mut out = Vec::new();
        if let Some(lines) = self.lines.as_ref()
            && let Ok(mut frames) = lines.find_frames(vaddr).skip_all_loads()
        {
            while let Ok(Some(f)) = frames.next() {
                let function = f
                    .function
                    .as_ref()
                    .and_then(|n| n.raw_name().ok())
                    .map(|raw| format!("{:#}", rustc_demangle::demangle(&raw)));
                let (path, line) = f.location.map_or((None, 0), |l| {
                    (l.file.map(str::to_owned), u64::from(l.line.unwrap_or(0)))
                });
                // A dependency's or the standard library's file keeps its whole path
                // (its crate is in it); the program's own, relative to its directory.
                let file = path.as_deref().map(|p| {
                    if is_runtime_internal(p) || p.contains("/registry/src/") {
                        p.to_owned()
                    } else {
                        self.relative_source(p).to_owned()
                    }
                });
                out.push(CodeFrame {
                    function,
                    file,
                    line,
                    offset: 0,
                });
            }
        }
        // The physical frame (outermost) is the symbol's when DWARF has no name for it.
        if let Some((name, off)) = self.function_at(vaddr) {
            match out.last_mut() {
                Some(f) if f.function.is_none() => f.function = Some(name.to_string()),
                Some(_) => {}
                None => out.push(CodeFrame {
                    function: Some(name.to_string()),
                    file: None,
                    line: 0,
                    offset: off,
                }),
            }
        }
        out
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
    /// Whether a file address is in read-only data (where `Location`s live).
    pub fn in_rodata(&self, vaddr: u64) -> bool {
        self.rodata.iter().any(|&(s, e)| vaddr >= s && vaddr < e)
    }

    /// The loadable segment holding a file offset: its file address and file offset.
    pub fn segment_at_offset(&self, offset: u64) -> Option<(u64, u64)> {
        self.segments
            .iter()
            .filter(|&&(_, sz, off)| offset >= off && offset < off + sz.max(1))
            .min_by_key(|s| s.2)
            .map(|&(vaddr, _, off)| (vaddr, off))
    }

    /// Whether a code address can be named at all: symbols or DWARF line tables.
    pub fn names_code(&self) -> bool {
        !self.functions.is_empty() || self.lines.is_some()
    }

    /// Where `.text` is (file addresses).
    pub fn text_range(&self) -> Option<std::ops::Range<u64>> {
        self.unwind.text.as_ref().map(|(r, _)| r.clone())
    }

    /// A position-independent executable (mapped at a load bias).
    pub fn is_pie(&self) -> bool {
        self.pie
    }

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

/// A vtable before 1.23 (no `Core` offsets: the readings find them), if its trailer
/// offset is plausible: past the header, 8-aligned, within a task cell's size.
fn by_future(vaddr: u64, header_len: u64, trailer_offset: u64) -> Option<TaskVtable> {
    (header_len <= trailer_offset && trailer_offset.is_multiple_of(8) && trailer_offset < 1 << 24)
        .then_some(TaskVtable {
            vaddr,
            trailer_offset,
            scheduler_offset: 0,
            id_offset: 0,
        })
}

/// A task vtable: one per spawned future type (and scheduler), with the offsets that
/// locate the task's parts from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskVtable {
    /// Address in the file (add the load bias for the process's address).
    pub vaddr: u64,
    pub trailer_offset: u64,
    /// Where `Core.scheduler` and `Core.task_id` are; 0 before tokio 1.23, whose vtables do
    /// not say (the task-list readings find them in memory).
    pub scheduler_offset: u64,
    pub id_offset: u64,
}

impl LocationTable {
    /// The function pointer in slot `index` of the vtable at file address `vaddr`.
    pub fn vtable_slot(&self, vaddr: u64, index: u64) -> Option<u64> {
        self.pointer_at(vaddr + 8 * index)
    }

    /// Task vtables found without symbols (stripped binaries): `.data.rel.ro` runs of
    /// the vtable's function pointers into `.text` followed by its offsets, with
    /// header < scheduler ≤ id < trailer, all 8-aligned (before 1.23: the trailer offset
    /// alone).
    pub fn scan_task_vtables(&self, layout: &Layout) -> Vec<TaskVtable> {
        let Some((text, _)) = self.unwind.text.as_ref() else {
            return Vec::new();
        };
        let in_text = |p: Option<u64>| p.is_some_and(|p| text.contains(&p));
        let mut out = Vec::new();
        for &(start, end) in &self.data_rel_ro {
            let mut v = start.next_multiple_of(8);
            while v + layout.vtable_len() <= end {
                if (0..layout.slots.task_functions).all(|i| in_text(self.vtable_slot(v, i)))
                    && let Some(vt) = self.vtable_at(v, layout)
                    && [vt.trailer_offset, vt.scheduler_offset, vt.id_offset]
                        .iter()
                        .all(|o| o.is_multiple_of(8))
                {
                    out.push(vt);
                    v += layout.vtable_len();
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
    /// an `Arc` 16 bytes before its data), itself or (before 1.23) through a call, and
    /// returns this very table (a RIP-relative `lea`, or a load from a GOT slot holding
    /// it). One table (none unless exactly one matches), or before 1.23 one per task type.
    pub fn scan_waker_vtables(&self, ref_one: u64, layout: &Layout) -> Vec<u64> {
        let (n, clone_slot) = (layout.slots.waker_functions, layout.slots.waker_clone.index);
        let Some((text, code)) = self.unwind.text.as_ref() else {
            return Vec::new();
        };
        let in_text = |p: Option<u64>| p.filter(|p| text.contains(p));
        let mut found = Vec::new();
        for &(start, end) in &self.data_rel_ro {
            let mut v = start.next_multiple_of(8);
            while v + 8 * n <= end {
                let slots: Vec<Option<u64>> = (0..n)
                    .map(|i| in_text(self.pointer_at(v + 8 * i)))
                    .collect();
                if let Some(clone) = slots[clone_slot as usize]
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
        if !layout.slots.waker_per_task && found.len() != 1 {
            found.clear();
        }
        found
    }

    fn is_task_waker_clone(&self, ip: u64, body: &[u8], table: u64, ref_one: u64) -> bool {
        use crate::tokio_versions::shapes::adds_one_task_reference;
        if !adds_one_task_reference(body, ref_one) && !self.calls_reference_add(ip, body, ref_one) {
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

    /// Whether code at `ip` calls (directly, or through a GOT slot) a function that adds
    /// one task reference: before 1.23 a waker's clone calls `State::ref_inc` out of line.
    fn calls_reference_add(&self, ip: u64, body: &[u8], ref_one: u64) -> bool {
        let Some((text, code)) = self.unwind.text.as_ref() else {
            return false;
        };
        body.windows(6).enumerate().any(|(i, w)| {
            let next = ip + i as u64;
            let callee = match w {
                // call rel32
                [0xe8, a, b, c, d, _] => Some(
                    (next + 5).wrapping_add_signed(i32::from_le_bytes([*a, *b, *c, *d]) as i64),
                ),
                // call [rip + disp32]
                [0xff, 0x15, a, b, c, d] => self.pointer_at(
                    (next + 6).wrapping_add_signed(i32::from_le_bytes([*a, *b, *c, *d]) as i64),
                ),
                _ => None,
            };
            callee.filter(|f| text.contains(f)).is_some_and(|f| {
                let at = (f - text.start) as usize;
                crate::tokio_versions::shapes::adds_one_task_reference(
                    &code[at..(at + 48).min(code.len())],
                    ref_one,
                )
            })
        })
    }

    /// The trailer offset the function in slot `slot` of the vtable at `vaddr` passes on:
    /// before 1.21, `try_set_join_waker` is `mov rdx, rsi; lea rsi, [rdi + trailer]; jmp
    /// …` (a thunk to it followed first), or with it inlined, its first `lea rsi, [rdi +
    /// d]`.
    fn trailer_from_code(&self, vaddr: u64, slot: u64) -> Option<u64> {
        let mut at = self.vtable_slot(vaddr, slot)?;
        for _ in 0..2 {
            let code = self.code(at, 64)?;
            let mut dec = Decoder::with_ip(64, code, at, DecoderOptions::NONE);
            let mut next = None;
            for _ in 0..8 {
                let i = dec.decode();
                if i.is_invalid() {
                    return None;
                }
                if i.mnemonic() == Mnemonic::Lea
                    && i.op0_register() == Register::RSI
                    && i.memory_base() == Register::RDI
                    && i.memory_index() == Register::None
                {
                    return Some(i.memory_displacement64());
                }
                if i.flow_control() == FlowControl::UnconditionalBranch
                    && i.op0_kind() == OpKind::NearBranch64
                {
                    next = Some(i.near_branch_target());
                    break;
                }
                if matches!(
                    i.flow_control(),
                    FlowControl::Return | FlowControl::IndirectBranch | FlowControl::Call
                ) {
                    return None;
                }
            }
            at = next?;
        }
        None
    }

    /// The vtable at `vaddr` if its offset fields are plausible.
    fn vtable_at(&self, vaddr: u64, layout: &Layout) -> Option<TaskVtable> {
        if let (Some(slot), CoreAt::ByFuture { header_len }) = (layout.trailer_in_code, layout.core)
        {
            return by_future(vaddr, header_len, self.trailer_from_code(vaddr, slot)?);
        }
        let fields: &[u64] = match layout.core {
            CoreAt::Vtable {
                scheduler_offset,
                id_offset,
            } => &[layout.vtable_trailer_offset, scheduler_offset, id_offset],
            CoreAt::ByFuture { .. } => &[layout.vtable_trailer_offset],
        };
        // Offsets are plain integers: a relocated slot there is a pointer, not an offset.
        if fields
            .iter()
            .any(|o| self.relative.contains_key(&(vaddr + o)))
        {
            return None;
        }
        let trailer_offset = self.u64_at(vaddr + layout.vtable_trailer_offset)?;
        let vt = match layout.core {
            CoreAt::Vtable {
                scheduler_offset,
                id_offset,
            } => TaskVtable {
                vaddr,
                trailer_offset,
                scheduler_offset: self.u64_at(vaddr + scheduler_offset)?,
                id_offset: self.u64_at(vaddr + id_offset)?,
            },
            CoreAt::ByFuture { header_len } => return by_future(vaddr, header_len, trailer_offset),
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
    crate::tokio_versions::is_tokio_source(s)
        || crate::tokio_versions::is_tokio_symbol(s)
        || s.starts_with("/rustc/")
        || s.contains("/library/std/")
        || s.contains("/library/core/")
        || s.contains("/library/alloc/")
        || s.starts_with("std::")
        || s.starts_with("core::")
        || s.starts_with("<core::")
        || s.starts_with("<std::")
        || s.starts_with("alloc::")
}

pub type StackUnwinder = (
    framehop::x86_64::UnwinderX86_64<Vec<u8>>,
    framehop::x86_64::CacheX86_64,
);

impl LocationTable {
    /// An unwinder for the binary mapped at `bias` (its `.eh_frame`, `.text`).
    pub fn unwinder(&self, bias: u64) -> Option<StackUnwinder> {
        let u = &self.unwind;
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
}

/// `a::f::<X<Y, Z>, W>` → `X<Y, Z>`.
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
