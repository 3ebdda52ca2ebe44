//! Code shapes of tokio's own functions as compiled for x86_64, shared by every supported
//! version: what the stripped tier recognises them by when no symbol names them (the
//! task waker's clone, the task-id draw of `Id::next`).

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};

/// tokio's task waker clone (`waker::clone_waker`) adds one reference to the task header
/// its argument points at: `REF_ONE` loaded into a register, then `lock xadd [rdi], r64`
/// with no displacement (other wakers count references elsewhere, e.g. an `Arc` 16 bytes
/// before its data). `body`: the first bytes of a candidate clone function.
pub fn adds_one_task_reference(body: &[u8], ref_one: u64) -> bool {
    let imm = (ref_one as u32).to_le_bytes();
    // mov r32, imm32 (b8+r) with REF_ONE; or, optimised for size (`opt-level = "z"`),
    // push imm8; pop r64 (6a ib, 58+r).
    let loads_ref_one = body
        .windows(5)
        .any(|w| (0xb8..=0xbf).contains(&w[0]) && w[1..] == imm)
        || (ref_one < 0x80
            && body.windows(3).any(|w| {
                w[0] == 0x6a && u64::from(w[1]) == ref_one && (0x58..=0x5f).contains(&w[2])
            }));
    // lock xadd [rdi], r64: f0 48 0f c1 /r, mod 00, rm 111.
    let xadd_rdi = body
        .windows(5)
        .any(|w| w[..4] == [0xf0, 0x48, 0x0f, 0xc1] && w[4] & 0xc7 == 0x07);
    loads_ref_one && xadd_rdi
}

/// One inlined copy of the id counter's `fetch_add`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdDraw {
    /// The `je` that follows `test r, r`: the probe address (the new id is in `r` there).
    pub vaddr: u64,
    /// x86_64 register number of `r` (0 rax … 15 r15).
    pub reg: u8,
    /// The counter's address (file address).
    pub counter: u64,
    /// The draw is `Id::next` kept out of line (a small function returning the id): its
    /// start. Its spawn is its caller's, found from the return address at `[rsp]`.
    pub out_of_line: Option<u64>,
}

/// Every `Id::next` draw in `.text` bytes at `text`; `relocated` reads a GOT slot's
/// target. `retries`: the version's `Id::next` is a retry loop (1.39+).
pub fn find_id_draws(
    text: u64,
    bytes: &[u8],
    relocated: &dyn Fn(u64) -> Option<u64>,
    retries: bool,
) -> Vec<IdDraw> {
    let mut draws = Vec::new();
    for p in 0..bytes.len().saturating_sub(5) {
        // lock (REX.W) xadd r/m64, r64
        if bytes[p] != 0xf0 || bytes[p + 1] & 0xf8 != 0x48 || bytes[p + 2..p + 4] != [0x0f, 0xc1] {
            continue;
        }
        if let Some(d) = draw_at(relocated, text, bytes, p, retries) {
            draws.push(d);
        }
    }
    draws
}

/// The id draw whose `lock xadd` starts at `.text` offset `p`, if it is one.
fn draw_at(
    relocated: &dyn Fn(u64) -> Option<u64>,
    text: u64,
    bytes: &[u8],
    p: usize,
    retries: bool,
) -> Option<IdDraw> {
    let vaddr = text + p as u64;
    let mut dec = Decoder::with_ip(64, &bytes[p..], vaddr, DecoderOptions::NONE);
    let xadd = dec.decode();
    if xadd.mnemonic() != Mnemonic::Xadd
        || !xadd.has_lock_prefix()
        || xadd.op0_kind() != OpKind::Memory
        || xadd.op1_kind() != OpKind::Register
    {
        return None;
    }
    let reg = xadd.op1_register();
    let counter = if xadd.is_ip_rel_memory_operand() {
        xadd.ip_rel_memory_address()
    } else if xadd.memory_index() == Register::None && xadd.memory_displacement64() == 0 {
        // PIE with an exported counter: its address comes from a GOT slot loaded before.
        got_load_before(relocated, text, bytes, p, xadd.memory_base())?
    } else {
        return None;
    };
    if !retries {
        let next = dec.decode();
        return (!next.is_invalid()).then_some(IdDraw {
            vaddr: next.ip(),
            reg: reg_number(reg)?,
            counter,
            out_of_line: None,
        });
    }
    // test r, r; je <retry> (zero is not an id: draw again)
    let test = dec.decode();
    if test.mnemonic() != Mnemonic::Test
        || test.op0_kind() != OpKind::Register
        || test.op0_register() != reg
        || test.op1_kind() != OpKind::Register
        || test.op1_register() != reg
    {
        return None;
    }
    let je = dec.decode();
    if je.mnemonic() != Mnemonic::Je
        || je.flow_control() != FlowControl::ConditionalBranch
        || je.near_branch_target() > vaddr
    {
        return None;
    }
    Some(IdDraw {
        vaddr: je.ip(),
        reg: reg_number(reg)?,
        counter,
        out_of_line: None,
    })
}

/// The pointer a `mov base, [rip + slot]` shortly before `p` loads (the slot's relocated
/// value), when decoding from it reaches `p` exactly without writing `base` again.
fn got_load_before(
    relocated: &dyn Fn(u64) -> Option<u64>,
    text: u64,
    bytes: &[u8],
    p: usize,
    base: Register,
) -> Option<u64> {
    for back in 7..=48usize {
        let Some(start) = p.checked_sub(back) else {
            break;
        };
        // REX.W mov r64, [rip + disp32]
        if bytes[start] & 0xf8 != 0x48 || bytes[start + 1] != 0x8b || bytes[start + 2] & 0xc7 != 5 {
            continue;
        }
        let mut dec = Decoder::with_ip(
            64,
            &bytes[start..p],
            text + start as u64,
            DecoderOptions::NONE,
        );
        let mov = dec.decode();
        if mov.mnemonic() != Mnemonic::Mov
            || mov.op0_register() != base
            || !mov.is_ip_rel_memory_operand()
        {
            continue;
        }
        // Nothing in between may write `base` (only a few register moves and nops).
        let mut ok = true;
        while dec.can_decode() {
            let i = dec.decode();
            if i.is_invalid() || writes(&i, base) {
                ok = false;
                break;
            }
        }
        if ok && dec.position() == back {
            return relocated(mov.ip_rel_memory_address());
        }
    }
    None
}

fn writes(i: &Instruction, reg: Register) -> bool {
    i.op_count() > 0
        && i.op0_kind() == OpKind::Register
        && i.op0_register().full_register() == reg.full_register()
        && i.mnemonic() != Mnemonic::Nop
        && !(i.mnemonic() == Mnemonic::Xchg && i.op0_register() == i.op1_register())
}

fn reg_number(r: Register) -> Option<u8> {
    const ORDER: [Register; 16] = [
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::RBX,
        Register::RSP,
        Register::RBP,
        Register::RSI,
        Register::RDI,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ];
    // rsp never holds an id (and the kernel side does not read it as one).
    ORDER
        .iter()
        .position(|&x| x == r && r != Register::RSP)
        .map(|i| i as u8)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const TEXT: u64 = 0x1000;

    /// `mov r, 1; lock xadd [rip + counter], r; test r, r; je back` at TEXT + 0x10.
    pub(crate) fn retry_loop(counter_disp: i32) -> Vec<u8> {
        let mut code = vec![0x90; 0x10];
        code.extend([0xb9, 1, 0, 0, 0]); // mov ecx, 1
        code.extend([0xf0, 0x48, 0x0f, 0xc1, 0x0d]); // lock xadd [rip+disp], rcx
        code.extend(counter_disp.to_le_bytes());
        code.extend([0x48, 0x85, 0xc9]); // test rcx, rcx
        code.extend([0x74, 0xed]); // je back to the mov
        code.extend([0xc3]);
        code
    }

    #[test]
    fn finds_a_retry_loop_on_a_rip_relative_counter() {
        let code = retry_loop(0x1000);
        let none = |_| None;
        let draws = find_id_draws(TEXT, &code, &none, true);
        assert_eq!(draws.len(), 1, "{draws:?}");
        let d = &draws[0];
        // The xadd ends at 0x1000 + 0x10 + 5 + 9 = 0x101e: the counter is 0x1000 past it.
        assert_eq!(d.counter, 0x101e + 0x1000);
        assert_eq!(d.reg, 1, "the id is in rcx");
        // The probe sits on the `je`, after the 3-byte test.
        assert_eq!(d.vaddr, 0x101e + 3);
    }

    #[test]
    fn follows_a_got_load_of_an_exported_counter() {
        let mut code = vec![0x90; 0x10];
        code.extend([0x48, 0x8b, 0x05, 0x00, 0x01, 0x00, 0x00]); // mov rax, [rip+0x100]
        code.extend([0x66, 0x90]); // xchg ax, ax (a nop)
        code.extend([0xb9, 1, 0, 0, 0]); // mov ecx, 1
        code.extend([0xf0, 0x48, 0x0f, 0xc1, 0x08]); // lock xadd [rax], rcx
        code.extend([0x48, 0x85, 0xc9]); // test rcx, rcx
        code.extend([0x74, 0xf1]); // je back to the mov ecx
        let slot = TEXT + 0x10 + 7 + 0x100;
        let got = move |a| (a == slot).then_some(0x9000);
        let draws = find_id_draws(TEXT, &code, &got, true);
        assert_eq!(draws.len(), 1, "{draws:?}");
        assert_eq!(draws[0].counter, 0x9000);
        // The base register rewritten between the load and the xadd: not a draw.
        let mut broken = code.clone();
        broken[0x17..0x19].copy_from_slice(&[0x31, 0xc0]); // xor eax, eax
        assert!(find_id_draws(TEXT, &broken, &got, true).is_empty());
    }

    #[test]
    fn a_plain_fetch_add_is_probed_right_after_it() {
        // tokio 1.38: `lock xadd [rip + counter], rcx` then anything.
        let mut code = vec![0x90; 0x10];
        code.extend([0xf0, 0x48, 0x0f, 0xc1, 0x0d, 0, 0x10, 0, 0]);
        code.extend([0x48, 0x89, 0xc8]); // mov rax, rcx
        let none = |_| None;
        let counter = 0x1019 + 0x1000;
        let draws = find_id_draws(TEXT, &code, &none, false);
        assert_eq!(draws.len(), 1);
        assert_eq!(draws[0].vaddr, 0x1019, "probed after the xadd");
        assert_eq!(draws[0].counter, counter);
        // And without the retry loop, the 1.39+ shape does not match it.
        assert!(find_id_draws(TEXT, &code, &none, true).is_empty());
    }

    #[test]
    fn register_numbers_follow_the_x86_encoding() {
        assert_eq!(reg_number(Register::RCX), Some(1));
        assert_eq!(reg_number(Register::R12), Some(12));
        assert_eq!(reg_number(Register::RSP), None);
    }

    #[test]
    fn the_waker_clone_is_recognised_in_both_encodings() {
        // mov ecx, 0x40; lock xadd [rdi], rcx
        let fast = [0xb9, 0x40, 0, 0, 0, 0xf0, 0x48, 0x0f, 0xc1, 0x0f];
        assert!(adds_one_task_reference(&fast, 0x40));
        // push 0x40; pop rcx; lock xadd [rdi], rcx
        let small = [0x6a, 0x40, 0x59, 0xf0, 0x48, 0x0f, 0xc1, 0x0f];
        assert!(adds_one_task_reference(&small, 0x40));
        // An Arc's clone: lock xadd [rdi - 0x10] (a displacement) is not a task's.
        let arc = [0xb9, 0x01, 0, 0, 0, 0xf0, 0x48, 0x0f, 0xc1, 0x4f, 0xf0];
        assert!(!adds_one_task_reference(&arc, 0x40));
        assert!(!adds_one_task_reference(&fast, 0x80));
    }
}
