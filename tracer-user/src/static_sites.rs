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

/// Instructions looked at before a call for the register loads it depends on.
const LOOKBACK: usize = 24;

/// The binary's code: `.text` and its function symbols (start, size).
pub struct Code<'a> {
    pub vaddr: u64,
    pub bytes: &'a [u8],
    /// Sorted by start.
    pub functions: &'a [(u64, u64)],
}

/// What the code says of a set of functions (the instances of one future type's spawn
/// functions): whether they are only called directly, and which Locations those calls pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Callers {
    /// Per direct call from outside the set: the Location it passes, if one was found.
    pub calls: Vec<Option<u64>>,
    /// References other than a direct call from outside the set (a tail jump, a function
    /// pointer taken): such a caller's Location cannot be read from the code.
    pub other_references: usize,
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
    candidates.dedup();
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
        let targets: HashSet<u64> = ins
            .iter()
            .filter(|i| is_near_branch(i))
            .map(|i| i.near_branch_target())
            .collect();
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
                let loaded = loaded_location(&ins[..k], &targets, &mut info, &is_location);
                out[g].calls.push(loaded);
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

/// The one Location address that the straight-line code before a call leaves in an
/// argument register; `None` when there is none or more than one.
fn loaded_location(
    before: &[Instruction],
    branch_targets: &HashSet<u64>,
    info: &mut InstructionInfoFactory,
    is_location: &impl Fn(u64) -> bool,
) -> Option<u64> {
    const ARGS: [Register; 6] = [
        Register::RDI,
        Register::RSI,
        Register::RDX,
        Register::RCX,
        Register::R8,
        Register::R9,
    ];
    let mut decided = [false; 6];
    let mut found: Option<u64> = None;
    for i in before.iter().rev().take(LOOKBACK) {
        if i.flow_control() != FlowControl::Next {
            break;
        }
        for used in info.info(i).used_registers() {
            if !matches!(
                used.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            ) {
                continue;
            }
            let Some(r) = ARGS
                .iter()
                .position(|&a| a == used.register().full_register())
            else {
                continue;
            };
            if decided[r] {
                continue;
            }
            // The last write before the call is what the callee sees.
            decided[r] = true;
            let is_lea = i.mnemonic() == Mnemonic::Lea
                && i.op0_register() == ARGS[r]
                && i.is_ip_rel_memory_operand();
            if is_lea && is_location(i.ip_rel_memory_address()) {
                if found.is_some_and(|f| f != i.ip_rel_memory_address()) {
                    return None;
                }
                found = Some(i.ip_rel_memory_address());
            }
        }
        // Code above a branch target may not run on the way to the call.
        if branch_targets.contains(&i.ip()) {
            break;
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
        let (bytes, functions) = code_of(functions);
        let code = Code {
            vaddr: TEXT,
            bytes: &bytes,
            functions: &functions,
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
