//! Where a task is parked: its await chain, read from the target's memory (read-only)
//! with the state-machine types of its binary (`binary::async_types`). From the task's
//! future, each `async fn` / `async` block's current state names the `.await` it is
//! suspended at; its `__awaitee` is the next future down, until one that is not a state
//! machine: the leaf the task waits on.

use serde::Serialize;

use crate::{
    binary::async_types::{AsyncTypes, Fact, SourceLine, Step, Ty},
    live::{clock::monotonic_ns, memory::ReadMemory},
};

/// Awaitee frames followed at most (a deeper chain is cut, and says so).
const MAX_FRAMES: usize = 64;

/// A task's await chain, outermost frame first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AwaitChain {
    /// Where the chain comes from: `dwarf` (types read from debug info) or `stack` (a copy
    /// of the stack taken when the task registered its waker, `live::await_stack`).
    pub source: &'static str,
    pub frames: Vec<AwaitFrame>,
    /// The future the innermost frame awaits: a type that is not a state machine
    /// (`tokio::sync::notify::Notified`, `tokio::time::sleep::Sleep`, …). `null` when the
    /// chain ends in a state machine that is not suspended (running, or never polled).
    pub leaf: Option<String>,
    /// What the leaf holds about what it waits for: `deadline in 3599.8 s` (a Sleep's).
    pub leaf_detail: Option<String>,
    /// The header of the task the leaf awaits (a JoinHandle's): the caller, who knows the
    /// tasks a reading listed, names it.
    pub leaf_task: Option<u64>,
    /// The state the innermost machine is in when it is not suspended (`Unresumed`: the
    /// future was never polled).
    pub state: Option<String>,
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AwaitFrame {
    /// The `async fn` (or the `async` block, `f::{async_block#0}`).
    pub function: String,
    /// The `.await` it is suspended at (empty, 0: no line tables).
    pub file: String,
    pub line: u64,
    /// Without line tables, where in the function (a stack's frame known by its symbol).
    pub offset: Option<u64>,
}

/// The await chain of the task at `header` (a process address) whose poll function is
/// `poll` (a file address). `None`: its type is not described, or its future is not in
/// its cell any more (the task completed).
pub fn read(
    types: &AsyncTypes,
    mem: &impl ReadMemory,
    header: u64,
    poll: u64,
) -> Option<AwaitChain> {
    let at = types.future_of_poll(poll)?;
    let mut addr = header;
    for step in &at.steps {
        match step {
            Step::Offset(o) => addr = addr.checked_add(*o)?,
            Step::Variant {
                at,
                size,
                value,
                others,
            } => {
                let d = discriminant(mem, addr.checked_add(*at)?, *size)?;
                let here = match value {
                    Some(v) => d == *v,
                    None => !others.contains(&d),
                };
                if !here {
                    return None;
                }
            }
        }
    }
    let mut chain = AwaitChain {
        source: "dwarf",
        frames: Vec::new(),
        leaf: None,
        leaf_detail: None,
        leaf_task: None,
        state: None,
        truncated: false,
    };
    let mut ty = at.ty;
    loop {
        let m = match types.ty(ty) {
            Ty::Leaf(leaf) => {
                chain.leaf = Some(leaf.name.clone());
                match leaf.fact {
                    Some(Fact::TaskHeader { at }) => {
                        chain.leaf_task = addr.checked_add(at).and_then(|a| mem.u64(a));
                    }
                    Some(f) => chain.leaf_detail = fact(mem, addr, f),
                    None => {}
                }
                return Some(chain);
            }
            Ty::Machine(m) => m,
        };
        if chain.frames.len() >= MAX_FRAMES {
            chain.truncated = true;
            return Some(chain);
        }
        let d = discriminant(mem, addr.checked_add(m.discr_at)?, m.discr_size)?;
        let state = m
            .states
            .iter()
            .find(|s| s.value == Some(d))
            .or_else(|| m.states.iter().find(|s| s.value.is_none()))?;
        match (&state.at, state.awaitee) {
            (Some(SourceLine { file, line }), Some((offset, next)))
                if state.name.starts_with("Suspend") =>
            {
                chain.frames.push(AwaitFrame {
                    function: m.function.clone(),
                    file: file.to_string(),
                    line: *line,
                    offset: None,
                });
                addr = addr.checked_add(offset)?;
                ty = next;
            }
            _ => {
                // Not suspended: never polled (`Unresumed`), or done.
                chain.state = Some(state.name.clone());
                if chain.frames.is_empty() {
                    chain.frames.push(AwaitFrame {
                        function: m.function.clone(),
                        file: state
                            .at
                            .as_ref()
                            .map(|s| s.file.to_string())
                            .unwrap_or_default(),
                        line: state.at.as_ref().map_or(0, |s| s.line),
                        offset: None,
                    });
                }
                return Some(chain);
            }
        }
    }
}

/// A leaf's fact read at `addr` (the leaf's start), in words.
fn fact(mem: &impl ReadMemory, addr: u64, f: Fact) -> Option<String> {
    match f {
        Fact::TaskHeader { .. } => None,
        Fact::Deadline { sec_at, nsec_at } => {
            let sec = mem.u64(addr.checked_add(sec_at)?)? as i64;
            let nsec = discriminant(mem, addr.checked_add(nsec_at)?, 4)?;
            let deadline = sec.checked_mul(1_000_000_000)?.checked_add(nsec as i64)?;
            let left = (deadline - monotonic_ns() as i64) as f64 / 1e9;
            Some(if left >= 0.0 {
                format!("deadline in {left:.1} s")
            } else {
                format!("deadline passed {:.1} s ago", -left)
            })
        }
    }
}

fn discriminant(mem: &impl ReadMemory, addr: u64, size: u8) -> Option<u64> {
    let mut b = [0u8; 8];
    let n = usize::from(size.clamp(1, 8));
    mem.read(addr, &mut b[..n])?;
    Some(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use super::*;
    use crate::{
        binary::async_types::{FutureAt, Leaf, Machine, State},
        live::memory::HeapImage,
    };

    const POLL: u64 = 0x4000;
    const HEADER: u64 = 0x10_0000;
    /// The cell's future: behind a `Stage` whose discriminant (u32 at +0x20) is 0 when
    /// running, the future at +0x28.
    const STAGE: u64 = 0x20;
    const FUTURE: u64 = 0x28;

    fn line(l: u64) -> Option<SourceLine> {
        Some(SourceLine {
            file: Arc::from("/src/app/src/main.rs"),
            line: l,
        })
    }

    fn state(
        value: Option<u64>,
        name: &str,
        at: Option<u64>,
        awaitee: Option<(u64, usize)>,
    ) -> State {
        State {
            value,
            name: name.into(),
            at: at.and_then(line),
            awaitee,
        }
    }

    /// `outer` (discriminant u8 at +0x18 of its machine) awaits `inner` at +0x20 from its
    /// `Suspend0`; `inner` (u8 at +0x10) awaits `Pending` from `Suspend0` and a `Sleep`
    /// at +0 from `Suspend1`, the Sleep's deadline seconds at +0x08 and nanoseconds (u32)
    /// at +0x14, beside inner's discriminant byte as a future's fields share words.
    /// `inner`'s `Suspend1` is the state a niche leaves (no value): any discriminant but
    /// its other states' is it.
    fn types() -> AsyncTypes {
        let outer = Ty::Machine(Machine {
            function: "app::outer".into(),
            discr_at: 0x18,
            discr_size: 1,
            states: vec![
                state(Some(0), "Unresumed", Some(10), None),
                state(Some(1), "Returned", Some(12), None),
                state(Some(3), "Suspend0", Some(11), Some((0x20, 1))),
            ],
        });
        let inner = Ty::Machine(Machine {
            function: "app::inner".into(),
            discr_at: 0x10,
            discr_size: 1,
            states: vec![
                state(Some(0), "Unresumed", Some(20), None),
                state(Some(3), "Suspend0", Some(21), Some((0, 2))),
                state(None, "Suspend1", Some(22), Some((0, 3))),
            ],
        });
        let pending = Ty::Leaf(Leaf {
            name: "core::future::pending::Pending<()>".into(),
            fact: None,
        });
        let sleep = Ty::Leaf(Leaf {
            name: "tokio::time::sleep::Sleep".into(),
            fact: Some(Fact::Deadline {
                sec_at: 0x08,
                nsec_at: 0x14,
            }),
        });
        let at = FutureAt {
            steps: vec![
                Step::Offset(STAGE),
                Step::Variant {
                    at: 0,
                    size: 4,
                    value: Some(0),
                    others: vec![],
                },
                Step::Offset(FUTURE - STAGE),
            ],
            ty: 0,
        };
        AsyncTypes::from_parts(
            HashMap::from([(POLL, at)]),
            vec![outer, inner, pending, sleep],
        )
    }

    fn memory(outer: u64, inner: u64, deadline_in_s: i64) -> HeapImage {
        let mut m = HeapImage::default();
        m.map(HEADER, 0x200);
        m.put(HEADER + STAGE, 0); // Stage::Running
        let f = HEADER + FUTURE;
        m.put(f + 0x18, outer);
        let i = f + 0x20;
        let deadline = monotonic_ns() as i64 + deadline_in_s * 1_000_000_000;
        m.put(i + 0x08, (deadline / 1_000_000_000) as u64);
        m.put(i + 0x10, inner | ((deadline % 1_000_000_000) as u64) << 32);
        m
    }

    #[test]
    fn the_chain_follows_each_suspended_state_down_to_the_leaf() {
        let t = types();
        // outer in Suspend0 → inner in Suspend0 → Pending.
        let c = read(&t, &memory(3, 3, 0), HEADER, POLL).unwrap();
        let frames: Vec<(&str, u64)> = c
            .frames
            .iter()
            .map(|f| (f.function.as_str(), f.line))
            .collect();
        assert_eq!(frames, [("app::outer", 11), ("app::inner", 21)]);
        assert_eq!(
            c.leaf.as_deref(),
            Some("core::future::pending::Pending<()>")
        );
        assert_eq!(c.leaf_detail, None);
        assert!(c.state.is_none() && !c.truncated);
    }

    #[test]
    fn a_niche_state_is_the_one_no_other_value_names_and_a_deadline_is_read() {
        let t = types();
        // inner's discriminant 7 is none of 0 and 3: Suspend1, awaiting the Sleep; the
        // discriminant is read as its one byte, the nanoseconds beside it as their four.
        let c = read(&t, &memory(3, 7, 3600), HEADER, POLL).unwrap();
        assert_eq!(c.frames.last().map(|f| f.line), Some(22));
        assert_eq!(c.leaf.as_deref(), Some("tokio::time::sleep::Sleep"));
        let d = c.leaf_detail.unwrap();
        let s: f64 = d
            .strip_prefix("deadline in ")
            .and_then(|d| d.strip_suffix(" s"))
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("{d}"));
        assert!((3590.0..=3601.0).contains(&s), "{d}");
    }

    #[test]
    fn a_future_not_suspended_ends_the_chain_with_its_state() {
        let t = types();
        // Never polled: outer is Unresumed; the chain is its frame, at its declaration.
        let c = read(&t, &memory(0, 3, 0), HEADER, POLL).unwrap();
        assert_eq!(c.state.as_deref(), Some("Unresumed"));
        assert_eq!(c.frames.len(), 1);
        assert_eq!(c.leaf, None);
    }

    #[test]
    fn no_chain_for_a_finished_future_an_unknown_type_or_unreadable_memory() {
        let t = types();
        // Stage no longer Running (the output is there, not the future).
        let mut m = memory(3, 3, 0);
        m.put(HEADER + STAGE, 1);
        assert_eq!(read(&t, &m, HEADER, POLL), None);
        // A poll function the types do not describe.
        assert_eq!(read(&t, &memory(3, 3, 0), HEADER, POLL + 8), None);
        // A header nowhere mapped.
        assert_eq!(read(&t, &memory(3, 3, 0), 0x9000_0000, POLL), None);
    }
}
