//! The one kernel struct offset tasktrace needs: where `task_struct` keeps a thread's
//! `fsbase` (its TLS pointer), read from the running kernel's BTF. The kernel side reads
//! it to find each target thread's thread-locals, where tokio keeps the id of the task a
//! worker is polling. aya's BTF parser keeps struct members private, hence this reader of
//! the few BTF kinds needed to walk two structs.

use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// The running kernel's BTF; `TASKTRACE_KERNEL_BTF` names another file (a test points it
/// at a missing one to stand for a kernel built without BTF).
fn btf_path() -> std::path::PathBuf {
    std::env::var_os("TASKTRACE_KERNEL_BTF")
        .map_or_else(|| "/sys/kernel/btf/vmlinux".into(), Into::into)
}

/// The kernel describes itself in BTF.
pub fn available() -> bool {
    btf_path().is_file()
}

/// Byte offset of `task_struct.thread.fsbase` in the running kernel, if its BTF says.
pub fn task_fsbase_offset() -> Option<u64> {
    let data = std::fs::read(btf_path()).ok()?;
    member_path_offset(&data, "task_struct", &["thread", "fsbase"])
}

/// Byte offsets of `task_struct.pid` and `task_struct.tgid` in the running kernel, if its
/// BTF says: the thread iterator reads them to find the target's threads.
pub fn task_ids_offsets() -> Option<tracer_common::TaskIds> {
    let data = std::fs::read(btf_path()).ok()?;
    Some(tracer_common::TaskIds {
        pid: member_path_offset(&data, "task_struct", &["pid"])?,
        tgid: member_path_offset(&data, "task_struct", &["tgid"])?,
    })
}

struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Composite {
    name: u32,
    members: Vec<Member>,
}

/// Offset of a nested member, e.g. `task_struct` → `thread` → `fsbase`.
fn member_path_offset(data: &[u8], root: &str, path: &[&str]) -> Option<u64> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    if u16_at(0)? != MAGIC {
        return None;
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let str_off = u32_at(16)? as usize;
    let types = hdr_len + type_off;
    let strings = hdr_len + str_off;
    let name = |off: u32| -> Option<&str> {
        let start = strings + off as usize;
        let end = start + data.get(start..)?.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&data[start..end]).ok()
    };
    // Type ids start at 1; only structs and unions are kept, other kinds skipped by size.
    let mut composites: HashMap<u32, Composite> = HashMap::new();
    let mut at = types;
    let mut id = 1u32;
    while at + 12 <= types + type_len {
        let info = u32_at(at + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kflag = info >> 31 == 1;
        // Trailing data after the 12-byte common part, by kind (include/uapi/linux/btf.h).
        let extra = match kind {
            1 | 14 | 17 => 4,             // int, var, decl_tag
            3 => 12,                      // array
            4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
            6 | 13 => 8 * vlen,           // enum, func_proto
            _ => 0,                       // ptr, fwd, typedef, cv-qualifiers, func, float, type_tag
        };
        if kind == KIND_STRUCT || kind == KIND_UNION {
            let mut members = Vec::with_capacity(vlen);
            for m in 0..vlen {
                let o = at + 12 + m * 12;
                let raw = u32_at(o + 8)?;
                members.push(Member {
                    name: u32_at(o)?,
                    type_id: u32_at(o + 4)?,
                    bit_offset: if kflag { raw & 0xff_ffff } else { raw },
                });
            }
            composites.insert(
                id,
                Composite {
                    name: u32_at(at)?,
                    members,
                },
            );
        }
        at += 12 + extra;
        id += 1;
    }
    let (_, mut current) = composites
        .iter()
        .find(|(_, c)| name(c.name) == Some(root))?;
    let mut bits = 0u64;
    for (depth, &want) in path.iter().enumerate() {
        let m = current
            .members
            .iter()
            .find(|m| name(m.name) == Some(want))?;
        bits += u64::from(m.bit_offset);
        if depth + 1 < path.len() {
            current = composites.get(&m.type_id)?;
        }
    }
    bits.is_multiple_of(8).then_some(bits / 8)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_kernel_says_where_fsbase_is() {
        // Every kernel tasktrace supports has BTF; x86_64 keeps fsbase in thread_struct.
        let off = super::task_fsbase_offset().expect("fsbase offset from /sys/kernel/btf/vmlinux");
        let ids = super::task_ids_offsets().expect("pid and tgid offsets from the BTF");
        // `pid` and `tgid` are adjacent `pid_t`s in every kernel's task_struct.
        assert_eq!(ids.tgid, ids.pid + 4, "{ids:?}");
        assert!(off > 0 && off < 64 * 1024, "implausible offset {off}");
    }
}
