//! Reading a process's memory, read-only: the `ReadMemory` trait the task-list walker
//! reads through, so that an image can stand in for a process (as py-spy reads a core
//! dump or a test's fake heap through one trait); its live implementation `Memory`
//! (`process_vm_readv` and `/proc/PID/maps`); and, for tests, `HeapImage`, a few byte
//! regions laid out by hand. Nothing here ever writes to the target.

use std::io;

use crate::live::maps::{self, Mapping};

/// The most iovecs one `process_vm_readv` call takes (`IOV_MAX` on Linux).
const IOV_MAX: usize = 1024;

/// A target's memory as the walker needs it. Reads must behave as `process_vm_readv`
/// does, since the walker's validation relies on it: a read that starts in unmapped
/// memory fails, one that runs into it is short.
pub trait ReadMemory {
    /// Reads as much of `buf` as is mapped from `addr` on; the byte count read.
    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Writable private anonymous regions and the brk heap: where task headers live.
    fn writable_regions(&self) -> io::Result<Vec<Region>>;

    /// Reads all of `buf`, or fails.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        (self.read_partial(addr, buf).ok()? == buf.len()).then_some(())
    }

    fn u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Some(u64::from_le_bytes(b))
    }

    /// Reads one `u64` at each address; `None` where unreadable.
    fn u64s(&self, addrs: &[u64]) -> Vec<Option<u64>> {
        addrs.iter().map(|&a| self.u64(a)).collect()
    }

    /// Reads every `(address, length)` span: their bytes back to back, and whether each
    /// was read whole (a span that was not is zeros).
    fn read_spans(&self, spans: &[(u64, usize)]) -> Spans {
        spans_one_by_one(self, spans)
    }
}

/// `read_spans` by one read per span.
fn spans_one_by_one<M: ReadMemory + ?Sized>(mem: &M, spans: &[(u64, usize)]) -> Spans {
    let mut out = Spans::zeroed(spans);
    for (i, &(addr, len)) in spans.iter().enumerate() {
        let at = out.starts[i];
        out.ok[i] = mem.read(addr, &mut out.bytes[at..at + len]).is_some();
        if !out.ok[i] {
            out.bytes[at..at + len].fill(0);
        }
    }
    out
}

/// What `read_spans` read.
pub struct Spans {
    pub bytes: Vec<u8>,
    /// Where each span starts in `bytes`, and one past the last.
    starts: Vec<usize>,
    pub ok: Vec<bool>,
}

impl Spans {
    pub fn zeroed(spans: &[(u64, usize)]) -> Self {
        let mut starts = Vec::with_capacity(spans.len() + 1);
        let mut total = 0;
        for &(_, len) in spans {
            starts.push(total);
            total += len;
        }
        starts.push(total);
        Self {
            bytes: vec![0; total],
            starts,
            ok: vec![false; spans.len()],
        }
    }

    /// Span `i`'s bytes, if it was read whole.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.ok[i].then(|| &self.bytes[self.starts[i]..self.starts[i + 1]])
    }

    /// Span `i` as little-endian words (a partial last word dropped), if read whole.
    pub fn words(&self, i: usize) -> Option<impl Iterator<Item = u64> + '_> {
        self.get(i)
            .map(|b| b.as_chunks::<8>().0.iter().map(|w| u64::from_le_bytes(*w)))
    }
}

/// A live process's memory.
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

    /// Reads one `u64` at each address, many per system call; `None` where unreadable.
    /// Inherent as well as the trait's, so callers need not import the trait.
    pub fn u64s(&self, addrs: &[u64]) -> Vec<Option<u64>> {
        let spans: Vec<(u64, usize)> = addrs.iter().map(|&a| (a, 8)).collect();
        let read = ReadMemory::read_spans(self, &spans);
        (0..addrs.len())
            .map(|i| {
                read.get(i)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            })
            .collect()
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
}

impl ReadMemory for Memory {
    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
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

    fn writable_regions(&self) -> io::Result<Vec<Region>> {
        Ok(writable(&maps::read(self.pid as u32)?))
    }

    fn u64s(&self, addrs: &[u64]) -> Vec<Option<u64>> {
        // The inherent, batched one (inherent methods take precedence).
        Memory::u64s(self, addrs)
    }

    fn read_spans(&self, spans: &[(u64, usize)]) -> Spans {
        // Spans close together (tasks allocated one after another, the objects they
        // point to) are read as one run: the kernel's cost is per piece and per page
        // pinned, not per byte. A run that cannot be read whole (it crosses unmapped
        // memory) is read span by span.
        let mut order: Vec<usize> = (0..spans.len()).filter(|&i| spans[i].1 > 0).collect();
        order.sort_unstable_by_key(|&i| spans[i].0);
        let mut runs: Vec<(u64, usize)> = Vec::new();
        // The run each span of `order` is in.
        let mut run_of: Vec<usize> = Vec::with_capacity(order.len());
        for &i in &order {
            let (addr, len) = spans[i];
            let end = addr.saturating_add(len as u64);
            match runs.last_mut() {
                Some((start, run_len))
                    if addr <= *start + *run_len as u64 + RUN_GAP && end - *start <= RUN_MAX =>
                {
                    *run_len = (*run_len).max((end - *start) as usize);
                }
                _ => runs.push((addr, len)),
            }
            run_of.push(runs.len() - 1);
        }
        let read = self.read_pieces(&runs);
        let mut out = Spans::zeroed(spans);
        let mut alone = Vec::new();
        for (&i, &r) in order.iter().zip(&run_of) {
            let Some(run) = read.get(r) else {
                alone.push(i);
                continue;
            };
            let from = (spans[i].0 - runs[r].0) as usize;
            let at = out.starts[i];
            out.bytes[at..at + spans[i].1].copy_from_slice(&run[from..from + spans[i].1]);
            out.ok[i] = true;
        }
        if !alone.is_empty() {
            let pieces: Vec<(u64, usize)> = alone.iter().map(|&i| spans[i]).collect();
            let read = self.read_pieces(&pieces);
            for (k, &i) in alone.iter().enumerate() {
                if let Some(b) = read.get(k) {
                    let at = out.starts[i];
                    out.bytes[at..at + spans[i].1].copy_from_slice(b);
                    out.ok[i] = true;
                }
            }
        }
        // Empty spans are read whole.
        for (i, &(_, len)) in spans.iter().enumerate() {
            if len == 0 {
                out.ok[i] = true;
            }
        }
        out
    }
}

/// Spans closer than this are read as one piece (the bytes between read for nothing).
const RUN_GAP: u64 = 512;
/// The longest piece spans are merged into.
const RUN_MAX: u64 = 1 << 20;

impl Memory {
    /// Reads each span as its own piece, `IOV_MAX` of them per system call.
    fn read_pieces(&self, spans: &[(u64, usize)]) -> Spans {
        let mut out = Spans::zeroed(spans);
        let mut next = 0;
        while next < spans.len() {
            let chunk = &spans[next..spans.len().min(next + IOV_MAX)];
            let base = out.starts[next];
            let end = out.starts[next + chunk.len()];
            let mut local = Vec::with_capacity(chunk.len());
            let mut rest = &mut out.bytes[base..end];
            for &(_, len) in chunk {
                let (this, tail) = std::mem::take(&mut rest).split_at_mut(len);
                local.push(libc::iovec {
                    iov_base: this.as_mut_ptr().cast(),
                    iov_len: len,
                });
                rest = tail;
            }
            let remote: Vec<libc::iovec> = chunk
                .iter()
                .map(|&(addr, len)| libc::iovec {
                    iov_base: addr as *mut libc::c_void,
                    iov_len: len,
                })
                .collect();
            // SAFETY: the local iovecs are disjoint parts of `out.bytes`, which outlives
            // the call; the remote side is only read by the kernel, which checks it.
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
            let n = if n < 0 { 0 } else { n as usize };
            // The kernel stops at the first span it cannot read: the spans read whole
            // are done, that one failed, and the reading resumes after it.
            let mut i = next;
            while i < next + chunk.len() && out.starts[i + 1] - base <= n {
                out.ok[i] = true;
                i += 1;
            }
            if i < next + chunk.len() {
                out.bytes[out.starts[i]..out.starts[i + 1]].fill(0);
                i += 1;
            }
            next = i;
        }
        out
    }
}

/// The regions of `maps` the scan reads.
fn writable(maps: &[Mapping]) -> Vec<Region> {
    maps.iter()
        .filter(|m| m.is_private_anonymous_writable())
        .map(|m| Region {
            start: m.start,
            end: m.end,
            name: m.name.clone(),
        })
        .collect()
}

/// A process's memory made by hand, for tests: regions of bytes at chosen addresses,
/// all of them writable private memory. Reads fail or stop short at unmapped addresses as
/// `process_vm_readv` does (at byte rather than page granularity: map whole pages for
/// the kernel's exact behaviour). A word can be made to read differently on successive
/// reads, to stand for a target that changes under the reader.
#[cfg(test)]
#[derive(Default)]
pub struct HeapImage {
    /// Start address and bytes, sorted, never overlapping.
    regions: Vec<(u64, Vec<u8>)>,
    /// Address of a varying word: its values in turn, and how many reads touched it.
    varying: Vec<(u64, Vec<u64>, std::cell::Cell<usize>)>,
    /// `read_spans` calls: what would be system calls on a live target.
    pub span_reads: std::cell::Cell<usize>,
}

#[cfg(test)]
impl HeapImage {
    /// Maps `len` zero bytes at `start`.
    pub fn map(&mut self, start: u64, len: usize) {
        let end = start
            .checked_add(len as u64)
            .expect("region inside the address space");
        assert!(
            self.regions
                .iter()
                .all(|(s, b)| end <= *s || start >= s + b.len() as u64),
            "region {start:#x}+{len:#x} overlaps another"
        );
        let at = self.regions.partition_point(|(s, _)| *s < start);
        self.regions.insert(at, (start, vec![0; len]));
    }

    /// Writes `v` at `addr`, which must be mapped.
    pub fn put(&mut self, addr: u64, v: u64) {
        let (start, bytes) = self
            .regions
            .iter_mut()
            .find(|(s, b)| addr >= *s && addr + 8 <= s + b.len() as u64)
            .unwrap_or_else(|| panic!("{addr:#x} is not mapped"));
        let at = (addr - *start) as usize;
        bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// The word at `addr` reads as `values[k % len]` on the k-th read that touches it
    /// (whatever was `put` there is never seen again).
    pub fn vary(&mut self, addr: u64, values: Vec<u64>) {
        assert!(!values.is_empty());
        let mut probe = [0u8; 8];
        assert_eq!(
            self.read_partial(addr, &mut probe).ok(),
            Some(8),
            "{addr:#x} unmapped"
        );
        self.varying.retain(|(a, _, _)| *a != addr);
        self.varying.push((addr, values, Default::default()));
    }

    /// How many reads touched the varying word at `addr`.
    pub fn reads(&self, addr: u64) -> usize {
        self.varying
            .iter()
            .find(|(a, _, _)| *a == addr)
            .map_or(0, |(_, _, n)| n.get())
    }
}

#[cfg(test)]
impl ReadMemory for HeapImage {
    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let Some(at) = addr.checked_add(n as u64) else {
                break;
            };
            let i = self.regions.partition_point(|(s, _)| *s <= at);
            let Some((start, bytes)) = i.checked_sub(1).map(|i| &self.regions[i]) else {
                break;
            };
            let from = (at - start) as usize;
            if from >= bytes.len() {
                break;
            }
            let len = (bytes.len() - from).min(buf.len() - n);
            buf[n..n + len].copy_from_slice(&bytes[from..from + len]);
            n += len;
        }
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        let end = addr + n as u64;
        for (word, values, count) in &self.varying {
            if *word >= end || word + 8 <= addr {
                continue;
            }
            let bytes = values[count.get() % values.len()].to_le_bytes();
            count.set(count.get() + 1);
            for (j, b) in bytes.iter().enumerate() {
                let pos = word + j as u64;
                if (addr..end).contains(&pos) {
                    buf[(pos - addr) as usize] = *b;
                }
            }
        }
        Ok(n)
    }

    fn read_spans(&self, spans: &[(u64, usize)]) -> Spans {
        self.span_reads.set(self.span_reads.get() + 1);
        spans_one_by_one(self, spans)
    }

    fn writable_regions(&self) -> io::Result<Vec<Region>> {
        Ok(self
            .regions
            .iter()
            .map(|(start, bytes)| Region {
                start: *start,
                end: start + bytes.len() as u64,
                name: String::new(),
            })
            .collect())
    }
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
        let r = writable(&maps::parse(maps));
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

    #[test]
    fn reads_spans_of_own_memory_past_unreadable_ones() {
        let values: Vec<u64> = (0..3000).map(|i| i * 3 + 1).collect();
        let at = |i: usize| &values[i] as *const u64 as u64;
        let m = Memory::new(std::process::id());
        // More than one call's worth, with unreadable spans first, inside and last.
        let mut spans = vec![(8, 16)];
        for i in 0..2999 {
            spans.push((at(i), if i % 2 == 0 { 16 } else { 8 }));
            if i % 700 == 5 {
                spans.push((16, 8));
            }
        }
        spans.push((24, 8));
        let read = m.read_spans(&spans);
        // As span-by-span reads would have it.
        let mut want = Vec::new();
        for &(addr, len) in &spans {
            let mut b = vec![0; len];
            let ok = m.read(addr, &mut b).is_some();
            assert_eq!(ok, addr > 4096);
            want.extend(if ok { b } else { vec![0; len] });
        }
        assert_eq!(read.bytes, want);
        assert_eq!(read.ok.iter().filter(|ok| !**ok).count(), 1 + 5 + 1);
        assert_eq!(read.get(0), None);
        let second: Vec<u64> = read.words(1).unwrap().collect();
        assert_eq!(second, vec![1, 4]);
        assert_eq!(read.words(2).unwrap().collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn a_piece_across_unmapped_memory_is_read_span_by_span() {
        // Three pages, the middle one unmapped.
        // SAFETY: a fresh private mapping, unmapped in part, then whole, by this test only.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                3 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base as u64;
        // SAFETY: inside the mapping made above.
        unsafe {
            *((base + 4088) as *mut u64) = 5;
            *((base + 8192) as *mut u64) = 6;
            assert_eq!(libc::munmap((base + 4096) as *mut libc::c_void, 4096), 0);
        }
        let m = Memory::new(std::process::id());
        // Close enough to be one piece, which the hole makes unreadable.
        let spans = [
            (base + 4088, 8),
            (base + 4100, 8),
            (base + 8192, 8),
            (base + 4080, 16),
        ];
        let read = m.read_spans(&spans);
        assert_eq!(read.ok, vec![true, false, true, true]);
        assert_eq!(
            m.u64s(&[base + 4088, base + 4096, base + 8192]),
            vec![Some(5), None, Some(6)]
        );
        assert_eq!(read.words(3).unwrap().collect::<Vec<_>>(), vec![0, 5]);
        // SAFETY: the rest of the mapping made above.
        unsafe {
            libc::munmap(base as *mut libc::c_void, 4096);
            libc::munmap((base + 8192) as *mut libc::c_void, 4096);
        }
    }

    #[test]
    fn image_reads_like_process_vm_readv() {
        let mut m = HeapImage::default();
        m.map(0x1000, 0x1000);
        m.map(0x2000, 0x1000);
        m.map(0x5000, 0x10);
        m.put(0x1ff8, 7);
        m.put(0x2000, 9);
        m.put(0x5008, 11);
        // Across two adjacent regions.
        let mut b = [0u8; 16];
        assert_eq!(m.read_partial(0x1ff8, &mut b).unwrap(), 16);
        assert_eq!(m.u64s(&[0x1ff8, 0x2000]), vec![Some(7), Some(9)]);
        // Runs into unmapped memory: short; starts there: fails.
        assert_eq!(m.read_partial(0x5008, &mut b).unwrap(), 8);
        assert_eq!(m.u64(0x5008), Some(11));
        assert_eq!(m.read(0x5008, &mut b), None);
        assert_eq!(
            m.read_partial(0x3000, &mut b).unwrap_err().raw_os_error(),
            Some(libc::EFAULT)
        );
        assert_eq!(m.read_partial(u64::MAX - 3, &mut b).ok(), None);
        assert_eq!(m.read_partial(0x3000, &mut []).unwrap(), 0);
        assert_eq!(m.u64s(&[0x1000, 0x4000, 0x500c]), vec![Some(0), None, None]);
        let r = m.writable_regions().unwrap();
        let r: Vec<_> = r.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(
            r,
            vec![(0x1000, 0x2000), (0x2000, 0x3000), (0x5000, 0x5010)]
        );
    }

    #[test]
    fn image_word_varies_on_every_read_that_touches_it() {
        let mut m = HeapImage::default();
        m.map(0x1000, 0x100);
        m.put(0x1010, 5);
        m.vary(0x1010, vec![1, 2]);
        assert_eq!(m.u64(0x1010), Some(1));
        let mut b = [0u8; 0x20];
        m.read(0x1000, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b[0x10..0x18].try_into().unwrap()), 2);
        // A read that does not touch it does not count.
        assert_eq!(m.u64(0x1018), Some(0));
        assert_eq!(m.u64(0x1010), Some(1));
        assert_eq!(m.reads(0x1010), 3);
    }
}
