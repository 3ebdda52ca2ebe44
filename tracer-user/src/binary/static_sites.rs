//! Spawn sites named from the code, without a probe. tokio's spawn functions are generic
//! over the future, so each future type has its own instances; `#[track_caller]` makes
//! every call pass the caller's `&'static Location` in an argument register, loaded by a
//! `lea reg, [rip + …]` just before the call. When every direct call of a future type's
//! spawn instances loads the same Location, and nothing else refers to them, a spawn of
//! that type can only come from that site: the spawn probe's future type names it, and
//! the spawn call needs no probe hit of its own (a uprobe hit costs ~1 µs of the target).

use std::collections::{HashMap, HashSet};

use iced_x86::{Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, Mnemonic, OpKind};
use iced_x86::{Instruction, OpAccess, Register};

/// The binary's code: `.text` and its function symbols (start, size).
pub struct Code<'a> {
    pub vaddr: u64,
    pub bytes: &'a [u8],
    /// Sorted by start.
    pub functions: &'a [(u64, u64)],
    /// Reads 4 bytes of the file's data (jump tables).
    pub read_u32: &'a dyn Fn(u64) -> Option<u32>,
}

/// What the code says of a set of functions (the instances of one future type's spawn
/// functions): whether they are only called directly, and which Locations those calls pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Callers {
    /// Per direct call from outside the set: the Location it passes, if one was found.
    pub calls: Vec<Option<u64>>,
    /// The function (its start) each of `calls` is made from.
    pub call_functions: Vec<u64>,
    /// References other than a direct call from outside the set (a tail jump, a function
    /// pointer taken): such a caller's Location cannot be read from the code.
    pub other_references: usize,
}

/// [`callers`] over a binary's whole `.text`, counting user `Location`s (not tokio's or
/// std's): what the plan and the id-draw analysis ask.
pub fn callers_in(
    table: &crate::binary::locations::LocationTable,
    groups: &[Vec<u64>],
) -> Vec<Callers> {
    let Some((text, bytes)) = table.text() else {
        return groups.iter().map(|_| Callers::default()).collect();
    };
    let functions = table.function_ranges();
    let read_u32 = |a| table.u32_at(a);
    let code = Code {
        vaddr: text,
        bytes,
        functions: &functions,
        read_u32: &read_u32,
    };
    callers(&code, groups, |a| {
        table
            .location_at(a)
            .is_some_and(|l| !crate::binary::locations::is_runtime_internal(&l))
    })
}

/// For each group of function addresses, who refers to them in `code`. `rodata_location`
/// tells whether an address holds a `Location` (the loads that count).
pub fn callers(
    code: &Code,
    groups: &[Vec<u64>],
    is_location: impl Fn(u64) -> bool,
) -> Vec<Callers> {
    let mut group_of: HashMap<u64, usize> = HashMap::new();
    for (g, addrs) in groups.iter().enumerate() {
        for &a in addrs {
            group_of.insert(a, g);
        }
    }
    let mut out: Vec<Callers> = groups.iter().map(|_| Callers::default()).collect();
    let (Some(&lo), Some(&hi)) = (group_of.keys().min(), group_of.keys().max()) else {
        return out;
    };
    // A cheap pass first: any 32-bit displacement at p reaching a target from p + 4 (how a
    // `call`, `jmp` or RIP-relative `lea` ends) marks its function for decoding.
    let mut candidates: Vec<usize> = Vec::new();
    let bytes = code.bytes;
    for p in 0..bytes.len().saturating_sub(3) {
        let d = i32::from_le_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]);
        let target = (code.vaddr + p as u64 + 4).wrapping_add_signed(d as i64);
        if target < lo || target > hi || !group_of.contains_key(&target) {
            continue;
        }
        let at = code.vaddr + p as u64;
        if let Some(f) = code
            .functions
            .partition_point(|f| f.0 <= at)
            .checked_sub(1)
            .filter(|&f| at < code.functions[f].0 + code.functions[f].1)
            && candidates.last() != Some(&f)
        {
            candidates.push(f);
        }
    }
    let mut info = InstructionInfoFactory::new();
    for f in candidates {
        let (start, size) = code.functions[f];
        let Some(body) = (start - code.vaddr)
            .try_into()
            .ok()
            .and_then(|from: usize| bytes.get(from..from + size as usize))
        else {
            continue;
        };
        let own_group = group_of.get(&start).copied();
        let ins: Vec<Instruction> = Decoder::with_ip(64, body, start, DecoderOptions::NONE)
            .into_iter()
            .collect();
        let flow = Flow::of(&ins, code.read_u32);
        for (k, i) in ins.iter().enumerate() {
            let referenced = if is_near_branch(i) {
                i.near_branch_target()
            } else if i.is_ip_rel_memory_operand() {
                i.ip_rel_memory_address()
            } else {
                continue;
            };
            let Some(&g) = group_of.get(&referenced) else {
                continue;
            };
            // The set's own plumbing (`spawn` calling `spawn_inner`) is not a caller.
            if own_group == Some(g) {
                continue;
            }
            if i.flow_control() == FlowControl::Call {
                let loaded = flow
                    .as_ref()
                    .and_then(|flow| passed_location(&ins, flow, k, &mut info, &is_location));
                out[g].calls.push(loaded);
                out[g].call_functions.push(start);
            } else {
                out[g].other_references += 1;
            }
        }
    }
    out
}

fn is_near_branch(i: &Instruction) -> bool {
    matches!(
        i.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    )
}

/// Registers a call preserves: a value in one survives the calls in between.
const CALLEE_SAVED: [Register; 6] = [
    Register::RBX,
    Register::RBP,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

const ARGS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];

/// Instructions of the paths walked back from a call before giving up.
const MAX_STEPS: usize = 4096;

/// A function's control flow at instruction level: the predecessors of each instruction.
struct Flow {
    preds: Vec<Vec<usize>>,
}

/// Entries read from one candidate jump table at most.
const MAX_TABLE: u64 = 4096;

impl Flow {
    /// `None` when the flow cannot be known whole: an indirect jump through an absolute
    /// table, or a branch into the middle of an instruction. A `jmp reg` may go to any
    /// entry of any jump table the function addresses (`lea reg, [rip + table]`, entries
    /// 32-bit offsets from the table, as LLVM lays them out in position-independent
    /// code): read until an entry leads outside the function's instructions, which
    /// over-approximates the edges, never under.
    fn of(ins: &[Instruction], read_u32: &dyn Fn(u64) -> Option<u32>) -> Option<Self> {
        let index: HashMap<u64, usize> = ins.iter().enumerate().map(|(k, i)| (i.ip(), k)).collect();
        let (lo, hi) = (ins.first()?.ip(), ins.last()?.next_ip());
        let mut preds = vec![Vec::new(); ins.len()];
        for (k, i) in ins.iter().enumerate() {
            let falls_through = matches!(
                i.flow_control(),
                FlowControl::Next | FlowControl::ConditionalBranch | FlowControl::Call
            );
            if falls_through && k + 1 < ins.len() {
                preds[k + 1].push(k);
            }
            match i.flow_control() {
                FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch
                    if is_near_branch(i) =>
                {
                    let t = i.near_branch_target();
                    if (lo..hi).contains(&t) {
                        preds[*index.get(&t)?].push(k);
                    }
                }
                // `jmp [rip + …]` leaves the function (a tail call through the GOT);
                // `jmp reg` goes through a jump table, below; `jmp [table + …]` cannot
                // be followed.
                FlowControl::IndirectBranch
                    if !i.is_ip_rel_memory_operand() && i.op0_kind() != OpKind::Register =>
                {
                    return None;
                }
                _ => {}
            }
        }
        let indirect: Vec<usize> = (0..ins.len())
            .filter(|&k| {
                ins[k].flow_control() == FlowControl::IndirectBranch
                    && ins[k].op0_kind() == OpKind::Register
            })
            .collect();
        if !indirect.is_empty() {
            let tables = ins.iter().filter(|i| {
                i.mnemonic() == Mnemonic::Lea
                    && i.is_ip_rel_memory_operand()
                    && !(lo..hi).contains(&i.ip_rel_memory_address())
            });
            for table in tables.map(|i| i.ip_rel_memory_address()) {
                for e in 0..MAX_TABLE {
                    let Some(entry) = read_u32(table + 4 * e) else {
                        break;
                    };
                    let target = table.wrapping_add_signed(i64::from(entry as i32));
                    let Some(&t) = index.get(&target) else {
                        break;
                    };
                    preds[t].extend(&indirect);
                }
            }
        }
        Some(Self { preds })
    }
}

/// The one Location address the call at `ins[call]` receives in an argument register,
/// whichever way the code reaches it: every definition of the register that reaches the
/// call must be the same `lea reg, [rip + Location]`, directly or through a callee-saved
/// register (a Location hoisted out of a loop). `None` when no register or more than one
/// holds a Location that way.
fn passed_location(
    ins: &[Instruction],
    flow: &Flow,
    call: usize,
    info: &mut InstructionInfoFactory,
    is_location: &impl Fn(u64) -> bool,
) -> Option<u64> {
    let mut found = None;
    for reg in ARGS {
        if let Some(at) = reaching_lea(ins, flow, call, reg, info, 0).filter(|&a| is_location(a)) {
            if found.is_some_and(|f| f != at) {
                return None;
            }
            found = Some(at);
        }
    }
    found
}

/// The address every definition of `reg` reaching `ins[at]` loads with a `lea [rip + …]`
/// (or copies from a callee-saved register that such definitions reach); `None` if any
/// path holds something else, or reaches the entry with the caller's value.
fn reaching_lea(
    ins: &[Instruction],
    flow: &Flow,
    at: usize,
    reg: Register,
    info: &mut InstructionInfoFactory,
    depth: u8,
) -> Option<u64> {
    let mut found: Option<u64> = None;
    let mut stack: Vec<usize> = flow.preds[at].clone();
    if stack.is_empty() {
        return None;
    }
    let mut seen = HashSet::new();
    while let Some(j) = stack.pop() {
        if !seen.insert(j) {
            continue;
        }
        if seen.len() > MAX_STEPS {
            return None;
        }
        let i = &ins[j];
        if i.flow_control() == FlowControl::Call && !CALLEE_SAVED.contains(&reg) {
            return None;
        }
        let writes = info.info(i).used_registers().iter().any(|u| {
            u.register().full_register() == reg
                && !matches!(u.access(), OpAccess::Read | OpAccess::CondRead)
        });
        if !writes {
            if flow.preds[j].is_empty() {
                return None;
            }
            stack.extend(&flow.preds[j]);
            continue;
        }
        let value = if i.mnemonic() == Mnemonic::Lea
            && i.op0_register() == reg
            && i.is_ip_rel_memory_operand()
        {
            Some(i.ip_rel_memory_address())
        } else if i.mnemonic() == Mnemonic::Mov
            && i.op0_register() == reg
            && i.op1_kind() == OpKind::Register
            && CALLEE_SAVED.contains(&i.op1_register())
            && depth < 2
        {
            reaching_lea(ins, flow, j, i.op1_register(), info, depth + 1)
        } else {
            None
        };
        match value {
            Some(v) if found.is_none_or(|f| f == v) => found = Some(v),
            _ => return None,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: u64 = 0x1000;
    const LOC_A: u64 = 0x9000;
    const LOC_B: u64 = 0x9100;
    const SPAWN: u64 = 0x1800;

    /// `lea rsi, [rip + to]` at `at`.
    fn lea_rsi(at: u64, to: u64) -> Vec<u8> {
        let d = (to as i64 - (at as i64 + 7)) as i32;
        [vec![0x48, 0x8d, 0x35], d.to_le_bytes().to_vec()].concat()
    }

    /// `lea rdi, [rsp + 8]`.
    fn lea_rdi_stack() -> Vec<u8> {
        vec![0x48, 0x8d, 0x7c, 0x24, 0x08]
    }

    fn call(at: u64, to: u64) -> Vec<u8> {
        let d = (to as i64 - (at as i64 + 5)) as i32;
        [vec![0xe8], d.to_le_bytes().to_vec()].concat()
    }

    fn jmp(at: u64, to: u64) -> Vec<u8> {
        let d = (to as i64 - (at as i64 + 5)) as i32;
        [vec![0xe9], d.to_le_bytes().to_vec()].concat()
    }

    /// Lays out functions (each a list of instruction builders taking their address) at
    /// 0x100-byte strides from `TEXT`, padded with `int3`; the spawn instance at `SPAWN`.
    fn code_of(functions: &[Vec<&dyn Fn(u64) -> Vec<u8>>]) -> (Vec<u8>, Vec<(u64, u64)>) {
        let mut bytes = vec![0xcc; (SPAWN - TEXT + 0x10) as usize];
        let mut syms = Vec::new();
        for (n, f) in functions.iter().enumerate() {
            let start = TEXT + 0x100 * n as u64;
            let mut at = start;
            for ins in f {
                let b = ins(at);
                let o = (at - TEXT) as usize;
                bytes[o..o + b.len()].copy_from_slice(&b);
                at += b.len() as u64;
            }
            bytes[(at - TEXT) as usize] = 0xc3;
            syms.push((start, at + 1 - start));
        }
        bytes[(SPAWN - TEXT) as usize] = 0xc3;
        syms.push((SPAWN, 1));
        (bytes, syms)
    }

    fn run(functions: &[Vec<&dyn Fn(u64) -> Vec<u8>>]) -> Callers {
        run_with(functions, &|_| None)
    }

    fn run_with(
        functions: &[Vec<&dyn Fn(u64) -> Vec<u8>>],
        read_u32: &dyn Fn(u64) -> Option<u32>,
    ) -> Callers {
        let (bytes, functions) = code_of(functions);
        let code = Code {
            vaddr: TEXT,
            bytes: &bytes,
            functions: &functions,
            read_u32,
        };
        let mut out = callers(&code, &[vec![SPAWN]], |a| a == LOC_A || a == LOC_B);
        out.remove(0)
    }

    #[test]
    fn a_call_names_the_location_it_loads() {
        let lea = |at| lea_rsi(at, LOC_A);
        let rdi = |_| lea_rdi_stack();
        let call = |at| call(at, SPAWN);
        let found = run(&[vec![&lea, &rdi, &call]]);
        assert_eq!(found.calls, [Some(LOC_A)]);
        assert_eq!(found.other_references, 0);
    }

    #[test]
    fn two_calls_with_their_own_locations() {
        let lea_a = |at| lea_rsi(at, LOC_A);
        let lea_b = |at| lea_rsi(at, LOC_B);
        let call = |at| call(at, SPAWN);
        let found = run(&[vec![&lea_a, &call], vec![&lea_b, &call]]);
        assert_eq!(found.calls, [Some(LOC_A), Some(LOC_B)]);
    }

    #[test]
    fn a_load_overwritten_before_the_call_does_not_count() {
        let lea = |at| lea_rsi(at, LOC_A);
        // mov rsi, rbx
        let mov = |_| vec![0x48, 0x89, 0xde];
        let call = |at| call(at, SPAWN);
        let found = run(&[vec![&lea, &mov, &call]]);
        assert_eq!(found.calls, [None]);
    }

    /// `lea r13, [rip + to]` at `at`.
    fn lea_r13(at: u64, to: u64) -> Vec<u8> {
        let d = (to as i64 - (at as i64 + 7)) as i32;
        [vec![0x4c, 0x8d, 0x2d], d.to_le_bytes().to_vec()].concat()
    }

    #[test]
    fn a_location_hoisted_out_of_a_loop_into_a_callee_saved_register() {
        // push r13; lea r13, LOC_A; (loop:) mov rsi, r13; call; jmp loop; pop r13
        let push = |_| vec![0x41, 0x55];
        let lea = |at| lea_r13(at, LOC_A);
        let mov = |_| vec![0x4c, 0x89, 0xee];
        let call = |at| call(at, SPAWN);
        let back = |at| jmp(at, TEXT + 9);
        let pop = |_| vec![0x41, 0x5d];
        let found = run(&[vec![&push, &lea, &mov, &call, &back, &pop]]);
        assert_eq!(found.calls, [Some(LOC_A)]);
        // The last load on the way is what the call gets.
        let lea_b = |at| lea_r13(at, LOC_B);
        let found = run(&[vec![&push, &lea, &lea_b, &mov, &call, &pop]]);
        assert_eq!(found.calls, [Some(LOC_B)]);
        // Two paths reach the call with different Locations: none is the answer.
        // je over the second lea.
        let skip = |_| vec![0x74, 0x07];
        let found = run(&[vec![&push, &lea, &skip, &lea_b, &mov, &call, &pop]]);
        assert_eq!(found.calls, [None]);
        // Copied from an argument register (a helper passing its caller's Location on).
        // mov r13, rsi
        let from_arg = |_| vec![0x49, 0x89, 0xf5];
        let found = run(&[vec![&push, &from_arg, &mov, &call, &pop]]);
        assert_eq!(found.calls, [None]);
    }

    #[test]
    fn a_jump_table_entry_between_the_load_and_the_call() {
        // lea rcx, [rip + TABLE]; jmp rcx; lea rsi, LOC_A; lea rdi, [rsp+8]; call
        const TABLE: u64 = 0x8000;
        let table = |at: u64| {
            let d = (TABLE as i64 - (at as i64 + 7)) as i32;
            [vec![0x48, 0x8d, 0x0d], d.to_le_bytes().to_vec()].concat()
        };
        let jump = |_| vec![0xff, 0xe1];
        let lea = |at| lea_rsi(at, LOC_A);
        let rdi = |_| lea_rdi_stack();
        let call = |at| call(at, SPAWN);
        let f: Vec<&dyn Fn(u64) -> Vec<u8>> = vec![&table, &jump, &lea, &rdi, &call];
        let entry =
            |target: u64| move |a: u64| (a == TABLE).then(|| target.wrapping_sub(TABLE) as u32);
        // The table leads to the load: every way to the call loads LOC_A.
        let found = run_with(std::slice::from_ref(&f), &entry(TEXT + 9));
        assert_eq!(found.calls, [Some(LOC_A)]);
        // The table leads past it: one way reaches the call with the caller's rsi.
        let found = run_with(std::slice::from_ref(&f), &entry(TEXT + 16));
        assert_eq!(found.calls, [None]);
    }

    #[test]
    fn a_load_behind_a_branch_target_does_not_count() {
        // lea rsi, LOC_A; (jump target:) lea rdi, [rsp+8]; call; jmp back to the lea rdi.
        let lea = |at| lea_rsi(at, LOC_A);
        let rdi = |_| lea_rdi_stack();
        let call = |at| call(at, SPAWN);
        let back = |at| jmp(at, TEXT + 7);
        let found = run(&[vec![&lea, &rdi, &call, &back]]);
        assert_eq!(found.calls, [None]);
    }

    #[test]
    fn a_tail_jump_or_a_taken_address_is_another_reference() {
        let jump = |at| jmp(at, SPAWN);
        let lea = |at| lea_rsi(at, SPAWN);
        let found = run(&[vec![&jump], vec![&lea]]);
        assert_eq!(found.calls, []);
        assert_eq!(found.other_references, 2);
    }
}
