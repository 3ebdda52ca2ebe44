//! Where in a function its probe goes. An x86 uprobe costs ~1 µs where the kernel
//! emulates the probed instruction (`push reg`, relative `jmp`/`call`, `nop`) and ~12 µs
//! where it must single-step a copy of it (`docs/design.md`). The entry is the natural
//! place; when its instruction is single-stepped, the probe moves forward to the first
//! emulated instruction of the straight-line prologue, provided everything the probe
//! reads is still there: the argument register holding the task pointer unwritten, no
//! branch taken or targeted in between.

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};
use serde::Serialize;

/// How the kernel runs the probed instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Execution {
    Emulated,
    SingleStepped,
}

/// Where a probe goes, relative to the function's entry.
#[derive(Clone, Debug, Serialize)]
pub struct Placement {
    /// Bytes from the entry (0: the entry itself).
    pub offset: u64,
    pub execution: Execution,
    /// The probed instruction, disassembled.
    pub instruction: String,
}

/// How far into a prologue a probe may move.
const MAX_INSTRUCTIONS: usize = 8;
/// Bytes decoded to find branches into the prologue.
const SCAN_BYTES: usize = 4096;

/// Whether the kernel emulates `ins` (arch/x86/kernel/uprobes.c: relative branches and
/// calls, `push reg`, `nop`); everything else is single-stepped out of line.
pub fn emulated(ins: &Instruction) -> bool {
    match ins.flow_control() {
        FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch | FlowControl::Call => {
            relative(ins)
        }
        FlowControl::Next => {
            (ins.mnemonic() == Mnemonic::Push && ins.op0_kind() == OpKind::Register)
                // The kernel's nop check knows the canonical forms (up to 9 bytes), not
                // padding stretched with extra prefixes.
                || (ins.mnemonic() == Mnemonic::Nop
                    && ins.len() <= 9
                    && ins.segment_prefix() == Register::None)
        }
        _ => false,
    }
}

fn relative(ins: &Instruction) -> bool {
    matches!(
        ins.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    )
}

/// Places a probe in the function whose code starts at `code` (at `vaddr`). `keeps` is
/// the register the probe reads (`None`: it reads nothing but the thread); `movable`
/// false pins it to the entry (return probes read the return address at `[rsp]`, spawn
/// probes the whole entry state).
pub fn place(code: &[u8], vaddr: u64, keeps: Option<Register>, movable: bool) -> Placement {
    place_with(code, vaddr, keeps, movable, false)
}

/// [`place`], for a probe that reads nothing an atomic instruction changes (the waker
/// clone's reads the task pointer and the stack, not the reference count it adds to): it
/// may move past one.
pub fn place_with(
    code: &[u8],
    vaddr: u64,
    keeps: Option<Register>,
    movable: bool,
    past_atomics: bool,
) -> Placement {
    let mut decoder = Decoder::with_ip(
        64,
        &code[..code.len().min(SCAN_BYTES)],
        vaddr,
        DecoderOptions::NONE,
    );
    let prologue: Vec<Instruction> = decoder.iter().take(MAX_INSTRUCTIONS).collect();
    let at = |i: usize| Placement {
        offset: prologue[i].ip() - vaddr,
        execution: if emulated(&prologue[i]) {
            Execution::Emulated
        } else {
            Execution::SingleStepped
        },
        instruction: prologue[i].to_string(),
    };
    let Some(first) = prologue.first() else {
        return Placement {
            offset: 0,
            execution: Execution::SingleStepped,
            instruction: "(undecodable)".into(),
        };
    };
    if emulated(first) || !movable || first.is_invalid() {
        return at(0);
    }
    let end = prologue.last().map_or(vaddr, |i| i.next_ip());
    let targets = branch_targets(code, vaddr, end);
    let mut info = InstructionInfoFactory::new();
    for i in 1..prologue.len() {
        let before = &prologue[i - 1];
        // The path from the entry to here must be straight and keep what the probe reads.
        if before.flow_control() != FlowControl::Next
            || (before.has_lock_prefix() && !past_atomics)
            || keeps.is_some_and(|r| writes(&mut info, before, r))
        {
            break;
        }
        let here = &prologue[i];
        if targets.contains(&here.ip()) {
            break;
        }
        if emulated(here) && !here.has_lock_prefix() {
            return at(i);
        }
    }
    at(0)
}

/// How far the stack pointer moved down between a function's entry and a probe placed
/// `offset` bytes into it (its pushes and `sub rsp, imm`): what the probe adds back to
/// know the entry's stack pointer. `None` when an instruction on the way moves it some
/// other way.
pub fn stack_delta(code: &[u8], vaddr: u64, offset: u64) -> Option<u64> {
    let end = usize::try_from(offset).ok()?.min(code.len());
    let mut delta = 0u64;
    let mut info = InstructionInfoFactory::new();
    for ins in Decoder::with_ip(64, &code[..end], vaddr, DecoderOptions::NONE).iter() {
        match ins.mnemonic() {
            Mnemonic::Push if ins.op0_kind() == OpKind::Register => delta += 8,
            Mnemonic::Sub
                if ins.op0_kind() == OpKind::Register
                    && ins.op0_register() == Register::RSP
                    && matches!(
                        ins.op1_kind(),
                        OpKind::Immediate8to64 | OpKind::Immediate32to64
                    ) =>
            {
                delta += ins.immediate(1);
            }
            _ if writes(&mut info, &ins, Register::RSP) => return None,
            _ => {}
        }
    }
    Some(delta)
}

/// Direct branch targets in `(vaddr, end]` found by decoding the function's first bytes:
/// a probe past such a target would be skipped by that branch.
fn branch_targets(code: &[u8], vaddr: u64, end: u64) -> Vec<u64> {
    Decoder::with_ip(
        64,
        &code[..code.len().min(SCAN_BYTES)],
        vaddr,
        DecoderOptions::NONE,
    )
    .iter()
    .filter(|i| {
        matches!(
            i.flow_control(),
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch
        ) && relative(i)
    })
    .map(|i| i.near_branch_target())
    .filter(|&t| t > vaddr && t <= end)
    .collect()
}

/// Whether `ins` may write any part of `reg` (its full 64-bit register).
fn writes(info: &mut InstructionInfoFactory, ins: &Instruction, reg: Register) -> bool {
    info.info(ins).used_registers().iter().any(|u| {
        u.register().full_register() == reg
            && !matches!(
                u.access(),
                OpAccess::Read | OpAccess::CondRead | OpAccess::None
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(code: &[u8], keeps: Option<Register>) -> Placement {
        place(code, 0x1000, keeps, true)
    }

    #[test]
    fn an_emulated_entry_stays() {
        // push rbp; mov rbp, rsp
        let p = placed(&[0x55, 0x48, 0x89, 0xe5], Some(Register::RDI));
        assert_eq!((p.offset, p.execution), (0, Execution::Emulated));
        // jmp rel32 (a thunk)
        let p = placed(&[0xe9, 0, 0, 0, 0], Some(Register::RDI));
        assert_eq!((p.offset, p.execution), (0, Execution::Emulated));
    }

    #[test]
    fn moves_past_a_single_stepped_entry_to_a_push() {
        // sub rsp, 0x28; push rbx
        let p = placed(&[0x48, 0x83, 0xec, 0x28, 0x53], Some(Register::RDI));
        assert_eq!((p.offset, p.execution), (4, Execution::Emulated));
        assert_eq!(p.instruction, "push rbx");
    }

    #[test]
    fn never_past_a_write_to_the_register_it_reads() {
        // mov rdi, [rdi+8]; push rbx: rdi no longer holds the task pointer at the push
        let p = placed(&[0x48, 0x8b, 0x7f, 0x08, 0x53], Some(Register::RDI));
        assert_eq!((p.offset, p.execution), (0, Execution::SingleStepped));
        // ...but a probe that reads no register may move.
        let p = placed(&[0x48, 0x8b, 0x7f, 0x08, 0x53], None);
        assert_eq!(p.offset, 4);
    }

    #[test]
    fn never_past_a_branch_or_a_branch_target() {
        // test edi, edi; je +1; push rbx; push rbp: the branch itself is emulated and is
        // as far as a probe goes (past it, one path would skip the probe).
        let p = placed(&[0x85, 0xff, 0x74, 0x01, 0x53, 0x55], Some(Register::RDI));
        assert_eq!(
            (p.offset, p.instruction.as_str()),
            (2, "je short 0000000000001005h")
        );
        // mov eax, 1; push rbx; jmp back to the push (a loop into the prologue)
        let p = placed(&[0xb8, 1, 0, 0, 0, 0x53, 0xeb, 0xfd], Some(Register::RDI));
        assert_eq!(p.offset, 0, "{p:?}");
    }

    #[test]
    fn the_stack_delta_counts_pushes_and_subtractions() {
        // push rbp; push rbx; sub rsp, 0x28; push r12
        let code = [0x55, 0x53, 0x48, 0x83, 0xec, 0x28, 0x41, 0x54];
        assert_eq!(stack_delta(&code, 0x1000, 0), Some(0));
        assert_eq!(stack_delta(&code, 0x1000, 2), Some(16));
        assert_eq!(stack_delta(&code, 0x1000, 6), Some(16 + 0x28));
        // mov rsp, rbp: no telling.
        assert_eq!(stack_delta(&[0x48, 0x89, 0xec, 0x55], 0x1000, 3), None);
    }

    /// tokio's `clone_waker` (1.54, release): `mov eax, 0x40; lock xadd [rdi], rax;
    /// test rax, rax; js +0xb`. Only the waker-clone probe, which reads no reference count,
    /// moves past the atomic, to the emulated branch.
    #[test]
    fn the_waker_clone_moves_past_its_atomic() {
        let code = [
            0xb8, 0x40, 0, 0, 0, 0xf0, 0x48, 0x0f, 0xc1, 0x07, 0x48, 0x85, 0xc0, 0x78, 0x0b,
        ];
        let p = placed(&code, Some(Register::RDI));
        assert_eq!((p.offset, p.execution), (0, Execution::SingleStepped));
        let p = place_with(&code, 0x1000, Some(Register::RDI), true, true);
        assert_eq!((p.offset, p.execution), (13, Execution::Emulated), "{p:?}");
    }

    #[test]
    fn pinned_probes_stay_at_the_entry() {
        let p = place(&[0x48, 0x83, 0xec, 0x28, 0x53], 0x1000, None, false);
        assert_eq!((p.offset, p.execution), (0, Execution::SingleStepped));
    }
}
