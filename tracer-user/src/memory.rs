//! Read-only access to a live process's memory (`process_vm_readv`), and the map of its
//! writable private regions. Nothing here ever writes to the target.

use std::io;

/// The most iovecs one `process_vm_readv` call takes (`IOV_MAX` on Linux).
const IOV_MAX: usize = 1024;

pub struct Memory {
    pid: libc::pid_t,
}

/// A writable, private, non-file region: where the heap and thread stacks live.
#[derive(Clone, Debug)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// `[heap]`, or empty for anonymous mappings.
    #[cfg_attr(not(test), allow(dead_code))]
    pub name: String,
}

impl Memory {
    pub fn new(pid: u32) -> Self {
        Self {
            pid: pid as libc::pid_t,
        }
    }

    /// Reads as much of `buf` as is mapped from `addr` on; the byte count read.
    pub fn read_partial(&self, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` points at `buf`, writable for its length; the remote side is
        // only read by the kernel, which checks it.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Reads all of `buf`, or fails.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        (self.read_partial(addr, buf).ok()? == buf.len()).then_some(())
    }

    pub fn u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Some(u64::from_le_bytes(b))
    }

    /// Reads one `u64` at each address, many per system call; `None` where unreadable.
    pub fn u64s(&self, addrs: &[u64]) -> Vec<Option<u64>> {
        let mut out = vec![None; addrs.len()];
        for (chunk_i, chunk) in addrs.chunks(IOV_MAX).enumerate() {
            let mut vals = vec![0u64; chunk.len()];
            let local: Vec<libc::iovec> = vals
                .iter_mut()
                .map(|v| libc::iovec {
                    iov_base: (v as *mut u64).cast(),
                    iov_len: 8,
                })
                .collect();
            let remote: Vec<libc::iovec> = chunk
                .iter()
                .map(|&a| libc::iovec {
                    iov_base: a as *mut libc::c_void,
                    iov_len: 8,
                })
                .collect();
            // SAFETY: every local iovec points at one element of `vals`.
            let n = unsafe {
                libc::process_vm_readv(
                    self.pid,
                    local.as_ptr(),
                    local.len() as libc::c_ulong,
                    remote.as_ptr(),
                    remote.len() as libc::c_ulong,
                    0,
                )
            };
            // The kernel stops at the first unreadable address: read the rest one by one.
            let done = if n < 0 { 0 } else { n as usize / 8 };
            let base = chunk_i * IOV_MAX;
            for (i, v) in vals.iter().enumerate().take(done) {
                out[base + i] = Some(*v);
            }
            for (i, &a) in chunk.iter().enumerate().skip(done) {
                out[base + i] = self.u64(a);
            }
        }
        out
    }

    /// Whether this process may read the target at all (ptrace access mode).
    pub fn check_access(&self) -> io::Result<()> {
        let mut b = [0u8; 1];
        let local = libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // A zero-length read of address 0 checks permission without touching memory.
        let remote = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: nothing is transferred.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Writable private anonymous regions and the brk heap, from `/proc/PID/maps`.
    pub fn writable_regions(&self) -> io::Result<Vec<Region>> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid))?;
        Ok(parse_writable(&maps))
    }
}

fn parse_writable(maps: &str) -> Vec<Region> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let _offset = f.next()?;
            let _dev = f.next()?;
            let inode = f.next()?;
            let name = f.collect::<Vec<_>>().join(" ");
            if !perms.starts_with("rw") || !perms.ends_with('p') || inode != "0" {
                return None;
            }
            if !(name.is_empty() || name == "[heap]") {
                return None;
            }
            let (s, e) = range.split_once('-')?;
            Some(Region {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_anonymous_writable_regions() {
        let maps = "\
5581e0a00000-5581e0a21000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f0000021000-7f0004000000 ---p 00000000 00:00 0 
5581dfa00000-5581dfa10000 r--p 00000000 08:01 1234                       /usr/bin/x
5581dfc10000-5581dfc11000 rw-p 00010000 08:01 1234                       /usr/bin/x
7ffd1000000-7ffd1021000 rw-p 00000000 00:00 0                          [stack]
";
        let r = parse_writable(maps);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "[heap]");
        assert_eq!((r[1].start, r[1].end), (0x7f0000000000, 0x7f0000021000));
    }

    #[test]
    fn reads_own_memory() {
        let value: u64 = 0x1234_5678_9abc_def0;
        let other: u64 = 42;
        let m = Memory::new(std::process::id());
        m.check_access().unwrap();
        assert_eq!(m.u64(&value as *const u64 as u64), Some(value));
        let got = m.u64s(&[&value as *const u64 as u64, 8, &other as *const u64 as u64]);
        assert_eq!(got, vec![Some(value), None, Some(42)]);
    }
}
