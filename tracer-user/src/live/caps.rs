//! The capabilities tasktrace needs, and which of them the process lacks: CAP_BPF and
//! CAP_PERFMON to load and attach the probes (CAP_SYS_ADMIN stands in for both), and
//! CAP_SYS_PTRACE to read another user's process (its memory, its `/proc/PID/exe`).

/// (bit number, name) of each capability tasktrace uses.
const NEEDED: [(u32, &str); 3] = [(39, "CAP_BPF"), (38, "CAP_PERFMON"), (19, "CAP_SYS_PTRACE")];
const CAP_SYS_ADMIN: u32 = 21;

/// The effective capability set (`CapEff` of `/proc/self/status`).
fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The needed capabilities missing from `eff`.
fn missing_from(eff: u64) -> Vec<&'static str> {
    let has = |bit: u32| eff & (1 << bit) != 0;
    NEEDED
        .iter()
        .filter(|&&(bit, name)| !has(bit) && !(name != "CAP_SYS_PTRACE" && has(CAP_SYS_ADMIN)))
        .map(|&(_, name)| name)
        .collect()
}

/// The needed capabilities this process lacks (empty when it has them all, or when its
/// capabilities cannot be read).
pub fn missing() -> Vec<&'static str> {
    effective().map(missing_from).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        let bit = |b: u32| 1u64 << b;
        assert_eq!(
            missing_from(0),
            ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"]
        );
        assert!(missing_from(bit(39) | bit(38) | bit(19)).is_empty());
        assert_eq!(missing_from(bit(21)), ["CAP_SYS_PTRACE"]);
        assert_eq!(missing_from(bit(39) | bit(19)), ["CAP_PERFMON"]);
        let status = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
    }
}
