//! Reads the target binary: its tokio symbols (every monomorphized instance, by unique
//! address), GNU build-id, tokio version, and the virtual-address to file-offset mapping
//! uprobes need.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::{
    error::{Error, Result},
    tokio_versions::{
        self, BLOCKING_SCHEDULER_MARKER, SPAWN_PATHS, STATE_METHOD_MARKER, Version, is_tokio_symbol,
    },
};

/// The ELF file in `data`, parsed (headers, sections, symbol table: read lazily).
pub fn open<'d>(path: &Path, data: &'d [u8]) -> Result<object::File<'d>> {
    object::File::parse(data).map_err(|e| Error::NotElf {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// What tasktrace learned from a binary file.
#[derive(Debug)]
pub struct BinaryInfo {
    /// Normalized function name → addresses of its instances (sorted, unique).
    pub functions: BTreeMap<String, Vec<u64>>,
    /// Every function symbol (address, size, demangled name), demangled once here and
    /// handed to the location table (`binary::read_binary`), which needs them all.
    pub text_symbols: Vec<(u64, u64, std::sync::Arc<str>)>,
    /// Loadable segments: (vaddr, memsize, file offset).
    segments: Vec<(u64, u64, u64)>,
    pub build_id: Option<String>,
    pub tokio_version: Option<Version>,
    /// The file has a `.symtab` (not stripped).
    pub has_symtab: bool,
    /// Count of symbols under `tokio::`.
    pub tokio_symbols: usize,
    /// Build traits, for `inspect`.
    pub traits: BuildTraits,
    /// Addresses of tokio functions instantiated for the blocking pool's scheduler (their
    /// generic arguments name `BlockingSchedule`): blocking tasks are in no task list.
    pub blocking_instances: std::collections::HashSet<u64>,
    /// The future type each instance of a spawn-path function was instantiated for (the
    /// text of its last generic argument list; v0 mangling only): instance address → type.
    pub spawned_futures: HashMap<u64, String>,
    /// Thread-local symbols under `tokio::` (demangled name, offset in the TLS block, size).
    pub tokio_tls: Vec<(String, u64, u64)>,
    /// The executable's TLS segment: (memory size, alignment).
    pub tls_segment: Option<(u64, u64)>,
    /// Data symbols under `tokio::` (normalized name → address): tokio's statics, such as
    /// its task-id counter.
    pub tokio_data: HashMap<String, u64>,
}

/// What the build looks like from outside.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BuildTraits {
    pub symbols: bool,
    pub dwarf: bool,
    pub pie: bool,
    /// `v0` or `legacy` Rust symbol mangling (`null` without symbols).
    pub mangling: Option<&'static str>,
    /// `unwind` or `abort`, from the unwinding runtime's symbols.
    pub panic: Option<&'static str>,
    /// Whether the small tokio `State` methods survived: they are inlined away under LTO.
    pub lto_likely: Option<bool>,
}

impl BinaryInfo {
    /// What the file in `data` says (tests; a run parses each file once and shares it
    /// with the location table, `binary::read_binary`).
    #[cfg(test)]
    pub fn parse(path: &Path, data: &[u8]) -> Result<Self> {
        Self::from_object(path, data, &open(path, data)?)
    }

    /// What `file` (parsed once from `data`, shared with the location table) says.
    pub fn from_object(path: &Path, data: &[u8], file: &object::File) -> Result<Self> {
        if file.architecture() != object::Architecture::X86_64 {
            return Err(Error::NotElf {
                path: path.to_owned(),
                why: format!(
                    "architecture {:?}; tasktrace supports x86_64",
                    file.architecture()
                ),
            });
        }
        let mut functions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut text_symbols = Vec::new();
        let mut spawned_futures = HashMap::new();
        let mut tokio_symbols = 0;
        let mut has_symtab = false;
        let (mut v0, mut legacy, mut unwind, mut state_methods) = (0usize, 0usize, false, false);
        let mut tokio_tls = Vec::new();
        let mut tokio_data = HashMap::new();
        let mut blocking_instances = std::collections::HashSet::new();
        for sym in file.symbols() {
            has_symtab = true;
            if let Ok(raw) = sym.name() {
                v0 += usize::from(raw.starts_with("_R"));
                legacy += usize::from(raw.starts_with("_ZN"));
                // The unwinding panic runtime leaves its own symbols; panic=abort links panic_abort.
                unwind |= raw.contains("panic_unwind");
                state_methods |= raw.contains(STATE_METHOD_MARKER);
            }
            if sym.kind() == SymbolKind::Tls
                && let Ok(raw) = sym.name()
            {
                let name = format!("{:#}", rustc_demangle::demangle(raw));
                if is_tokio_symbol(&name) {
                    tokio_tls.push((name, sym.address(), sym.size()));
                }
                continue;
            }
            if sym.kind() == SymbolKind::Data
                && sym.address() != 0
                && let Ok(raw) = sym.name()
            {
                let name = normalize(&format!("{:#}", rustc_demangle::demangle(raw)));
                if is_tokio_symbol(&name) {
                    tokio_data.insert(name, sym.address());
                }
                continue;
            }
            if sym.kind() != SymbolKind::Text || sym.address() == 0 {
                continue;
            }
            let Ok(raw) = sym.name() else { continue };
            let full = format!("{:#}", rustc_demangle::demangle(raw));
            let name = normalize(&full);
            text_symbols.push((sym.address(), sym.size(), std::sync::Arc::from(&*full)));
            if is_tokio_symbol(&name) {
                if full.contains(BLOCKING_SCHEDULER_MARKER) {
                    blocking_instances.insert(sym.address());
                }
                if SPAWN_PATHS.contains(&name.as_str())
                    && let Some(at) = full.rfind("::<")
                {
                    spawned_futures.insert(sym.address(), full[at + 3..].to_owned());
                }
                tokio_symbols += 1;
                functions.entry(name).or_default().push(sym.address());
            }
        }
        for addrs in functions.values_mut() {
            addrs.sort_unstable();
            addrs.dedup();
        }
        let segments = file
            .segments()
            .map(|s| (s.address(), s.size(), s.file_range().0))
            .collect();
        let tls_segment = tls_segment(data);
        let build_id = file
            .build_id()
            .ok()
            .flatten()
            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect());
        let traits = BuildTraits {
            symbols: has_symtab,
            dwarf: file.section_by_name(".debug_info").is_some(),
            pie: file.kind() == object::ObjectKind::Dynamic,
            mangling: has_symtab.then_some(if v0 >= legacy { "v0" } else { "legacy" }),
            panic: has_symtab.then_some(if unwind { "unwind" } else { "abort" }),
            lto_likely: (tokio_symbols > 0).then_some(!state_methods),
        };
        Ok(Self {
            text_symbols,
            traits,
            functions,
            segments,
            build_id,
            tokio_version: tokio_versions::version_in_bytes(data),
            has_symtab,
            tokio_symbols,
            tokio_tls,
            tls_segment,
            blocking_instances,
            spawned_futures,
            tokio_data,
        })
    }

    /// Where a thread-local of the executable lives relative to a thread's TLS pointer
    /// (`fsbase`): x86_64 puts the executable's TLS block right below it, rounded up to
    /// the segment's alignment (TLS variant II, as glibc and musl lay it out).
    pub fn tls_offset(&self, symbol_prefix: &str) -> Option<i64> {
        let (memsz, align) = self.tls_segment?;
        let (_, offset, _) = self
            .tokio_tls
            .iter()
            .filter(|(name, _, _)| name.starts_with(symbol_prefix))
            .max_by_key(|(_, _, size)| *size)?;
        let block = memsz.next_multiple_of(align.max(1));
        Some(*offset as i64 - block as i64)
    }

    /// Takes the symbols of `other`, an unstripped copy of the same build (same GNU
    /// build-id), keeping this file's own layout for computing probe offsets.
    pub fn with_symbols_from(
        mut self,
        other: BinaryInfo,
        other_path: &Path,
        path: &Path,
    ) -> Result<Self> {
        match (&self.build_id, &other.build_id) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => {
                return Err(Error::SymbolsMismatch {
                    target: path.to_owned(),
                    symbols: other_path.to_owned(),
                    target_id: a.clone(),
                    symbols_id: b.clone(),
                });
            }
        }
        self.functions = other.functions;
        self.text_symbols = other.text_symbols;
        self.has_symtab = other.has_symtab;
        self.tokio_symbols = other.tokio_symbols;
        self.traits = BuildTraits {
            symbols: false,
            ..other.traits
        };
        self.tokio_version = self.tokio_version.or(other.tokio_version);
        self.tokio_tls = other.tokio_tls;
        self.tokio_data = other.tokio_data;
        self.blocking_instances = other.blocking_instances;
        self.spawned_futures = other.spawned_futures;
        Ok(self)
    }

    /// The future type `vaddr` (an instance of a spawn-path function) was instantiated for.
    pub fn spawned_future(&self, vaddr: u64) -> Option<&str> {
        self.spawned_futures.get(&vaddr).map(String::as_str)
    }

    /// Addresses of every instance of a function (empty when absent or inlined away).
    pub fn instances(&self, name: &str) -> &[u64] {
        self.functions.get(name).map_or(&[], Vec::as_slice)
    }

    /// File offset of a virtual address, as uprobes want it.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(start, size, _)| vaddr >= start && vaddr < start + size)
            .map(|&(start, _, off)| vaddr - start + off)
    }
}

/// The `PT_TLS` program header: (memory size, alignment).
fn tls_segment(data: &[u8]) -> Option<(u64, u64)> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let header = object::elf::FileHeader64::<object::LittleEndian>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    header
        .program_headers(endian, data)
        .ok()?
        .iter()
        .find(|ph| ph.p_type(endian) == object::elf::PT_TLS)
        .map(|ph| (ph.p_memsz(endian), ph.p_align(endian)))
}

/// Drops generic arguments from a demangled path, so that every instance of a generic
/// function shares one name: `a::B<T>::f` and `<a::B<X>>::f` both become `a::B::f`.
pub fn normalize(demangled: &str) -> String {
    let s = demangled.trim();
    // v0 mangling prints inherent impls as `<path<..>>::f`: unwrap the outer brackets.
    let s = match s.strip_prefix('<') {
        Some(rest) => match matching_close(rest) {
            Some(end) => {
                let inner = &rest[..end];
                let inner = inner.split(" as ").next().unwrap_or(inner);
                format!("{inner}{}", &rest[end + 1..])
            }
            None => s.to_owned(),
        },
        None => s.to_owned(),
    };
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '<' => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    // v0 prints a function's own generics as `f::<T>`: drop the separator left behind.
    let trimmed = out.trim_end_matches("::").len();
    out.truncate(trimmed);
    out
}

fn matching_close(s: &str) -> Option<usize> {
    let mut depth = 1usize;
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_legacy_and_v0_names() {
        assert_eq!(
            normalize("tokio::runtime::task::harness::Harness<T,S>::complete"),
            "tokio::runtime::task::harness::Harness::complete"
        );
        assert_eq!(
            normalize(
                "<tokio::runtime::task::list::OwnedTasks<alloc::sync::Arc<h::Handle>>>::bind_inner"
            ),
            "tokio::runtime::task::list::OwnedTasks::bind_inner"
        );
        assert_eq!(
            normalize("tokio::runtime::task::raw::poll::<fut::{closure#0}, alloc::sync::Arc<x>>"),
            "tokio::runtime::task::raw::poll"
        );
        assert_eq!(
            normalize("tokio::runtime::task::raw::poll"),
            "tokio::runtime::task::raw::poll"
        );
    }

    #[test]
    fn demangles_llvm_suffixed_legacy_symbols() {
        let raw = "_ZN5tokio7runtime4task4list19OwnedTasks$LT$S$GT$10bind_inner17h99adb431d5efce2cE.llvm.7358023076652395345";
        let name = normalize(&format!("{:#}", rustc_demangle::demangle(raw)));
        assert_eq!(name, "tokio::runtime::task::list::OwnedTasks::bind_inner");
    }

    #[test]
    fn rejects_non_elf() {
        let err = BinaryInfo::parse(Path::new("/x"), b"#!/bin/sh\necho hi\n").unwrap_err();
        assert!(matches!(err, Error::NotElf { .. }));
    }
}
