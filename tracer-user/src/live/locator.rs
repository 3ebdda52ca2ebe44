//! Resolves the addresses a live process's probes report (spawn calls, return addresses,
//! stack copies, task vtables) against its binary: needs the process's load bias.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    binary::locations::{
        CodeFrame, LocationTable, StackUnwinder, TaskVtable, first_generic_arg, is_runtime_internal,
    },
    tokio_versions::Layout,
};

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
    /// The frames at each code address (file address) unwound so far.
    frames: HashMap<u64, Vec<CodeFrame>>,
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
            frames: HashMap::new(),
        }
    }

    /// Where the process mapped the file: add to a file address for the process's.
    pub fn bias(&mut self) -> Option<u64> {
        if self.bias.is_none() {
            self.bias = if self.table.is_pie() {
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
            if !self.table.in_rodata(vaddr) {
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

    /// The file address of the function in slot `slot` of the task vtable at `vtable` (a
    /// process address): its poll function, in slot 0, names its type in the DWARF.
    pub fn vtable_function(&mut self, vtable: u64, slot: u64) -> Option<u64> {
        let bias = self.bias()?;
        self.table.vtable_slot(vtable.checked_sub(bias)?, slot)
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
    /// The physical frames of a stack copy (`ip`, `sp`, `bp` at the probe; `stack` copied
    /// from `sp`), innermost first, by code address (file addresses, for lookup): those
    /// that end (their caller's stack pointer) at or below `limit`, a stack address. And
    /// whether the walk reached `limit` (a frame ends there, or the next one beyond), else
    /// the copy or its unwind information ran out first. The frame ending at `limit` is
    /// not followed: its return address may be a uretprobe's trampoline. `None` before the
    /// load bias is known.
    fn unwind(
        &mut self,
        ip: u64,
        sp: u64,
        bp: u64,
        stack: &[u8],
        limit: u64,
    ) -> Option<(Vec<u64>, bool)> {
        use framehop::{FrameAddress, Unwinder, x86_64::UnwindRegsX86_64};
        let bias = self.bias()?;
        if self.unwinder.is_none() {
            self.unwinder = Some(self.table.unwinder(bias)?);
        }
        let (unwinder, cache) = self.unwinder.as_mut()?;
        let mut read = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp).ok_or(())? as usize;
            let b = stack.get(off..off + 8).ok_or(())?;
            Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
        };
        let mut regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut address = FrameAddress::from_instruction_pointer(ip);
        let mut out = Vec::new();
        for _ in 0..64 {
            let Some(vaddr) = address.address_for_lookup().checked_sub(bias) else {
                break;
            };
            // Unwinding a frame leaves the stack pointer where the frame ends.
            let caller = unwinder.unwind_frame(address, &mut regs, cache, &mut read);
            let end = caller.is_ok().then(|| regs.sp());
            if end.is_some_and(|e| e > limit) {
                return Some((out, true));
            }
            out.push(vaddr);
            if end == Some(limit) {
                return Some((out, true));
            }
            match caller
                .ok()
                .flatten()
                .and_then(FrameAddress::from_return_address)
            {
                Some(next) => address = next,
                None => break,
            }
        }
        Some((out, false))
    }

    /// The first caller outside tokio and std, found by unwinding a copy of the stack
    /// taken at a spawn probe (`ip`, `sp`, `bp` at the probe; `stack` copied from `sp`).
    pub fn unwound_caller(&mut self, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> Option<Arc<str>> {
        // A user closure inlined into std or tokio code: the answer if no frame of the
        // user's own is found further up.
        let mut inlined = None;
        for vaddr in self.unwind(ip, sp, bp, stack, u64::MAX)?.0 {
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

    /// The frames of a stack copy that end at or below `limit`, inlined ones included, and
    /// whether the walk reached `limit` ([`Self::unwind`]).
    pub fn unwound_frames(
        &mut self,
        ip: u64,
        sp: u64,
        bp: u64,
        stack: &[u8],
        limit: u64,
    ) -> Option<(Vec<CodeFrame>, bool)> {
        let (physical, complete) = self.unwind(ip, sp, bp, stack, limit)?;
        let mut out = Vec::new();
        for vaddr in physical {
            let table = &self.table;
            let found = self
                .frames
                .entry(vaddr)
                .or_insert_with(|| table.frames_at(vaddr));
            out.extend(found.iter().cloned());
        }
        Some((out, complete))
    }
}

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

/// Load bias of `exe` in process `pid`: where its lowest mapping starts, minus the file
/// address that mapping covers.
fn load_bias(pid: u32, exe: &Path, table: &LocationTable) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(exe).ok()?.ino();
    let lowest = super::maps::read(pid)
        .ok()?
        .into_iter()
        .filter(|m| m.inode == inode)
        .min_by_key(|m| m.offset)?;
    let (start, offset) = (lowest.start, lowest.offset);
    let (vaddr, file_off) = table.segment_at_offset(offset)?;
    start.checked_sub(vaddr - file_off + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
