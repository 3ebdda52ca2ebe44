//! A process's mappings, from `/proc/PID/maps`: the one parser of that file (the load
//! bias of the binary, the writable regions the task-list scan reads).

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `rwxp`-style permissions.
    pub perms: String,
    /// Offset in the mapped file.
    pub offset: u64,
    /// Inode of the mapped file (0: anonymous).
    pub inode: u64,
    /// The file, `[heap]`, `[stack]`…, or empty for anonymous memory.
    pub name: String,
}

impl Mapping {
    /// Writable private memory not backed by a file: the heap and anonymous mappings
    /// (where tokio's tasks and runtimes live).
    pub fn is_private_anonymous_writable(&self) -> bool {
        self.perms.starts_with("rw")
            && self.perms.ends_with('p')
            && self.inode == 0
            && (self.name.is_empty() || self.name == "[heap]")
    }
}

pub fn read(pid: u32) -> std::io::Result<Vec<Mapping>> {
    Ok(parse(&std::fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

pub fn parse(maps: &str) -> Vec<Mapping> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (start, end) = f.next()?.split_once('-')?;
            let perms = f.next()?.to_owned();
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let _dev = f.next()?;
            let inode = f.next()?.parse().ok()?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                perms,
                offset,
                inode,
                name: f.collect::<Vec<_>>().join(" "),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_of_line() {
        let maps = "\
55d0c0a00000-55d0c0a1c000 r--p 00000000 08:01 1234 /usr/bin/app
55d0c0a1c000-55d0c0b00000 r-xp 0001c000 08:01 1234 /usr/bin/app
55d0c1000000-55d0c1200000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f0000200000-7f0000300000 rw-s 00000000 00:05 77 /dev/shm/x y
garbage line
";
        let m = parse(maps);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].offset, 0x1c000);
        assert_eq!(m[1].inode, 1234);
        assert_eq!(m[4].name, "/dev/shm/x y");
        let writable: Vec<u64> = m
            .iter()
            .filter(|m| m.is_private_anonymous_writable())
            .map(|m| m.start)
            .collect();
        assert_eq!(writable, [0x55d0c1000000, 0x7f0000000000]);
    }

    #[test]
    fn reads_its_own_maps() {
        let m = read(std::process::id()).unwrap();
        assert!(m.iter().any(|m| m.perms.contains('x')));
    }
}
