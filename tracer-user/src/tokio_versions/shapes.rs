//! Code shapes of tokio's own functions as compiled for x86_64, shared by every supported
//! version: what the stripped tier recognises them by when no symbol names them.

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

#[cfg(test)]
mod tests {
    use super::*;

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
