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
    /// Where the chain comes from: `dwarf` (types read from debug info).
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
    /// The `.await` it is suspended at.
    pub file: String,
    pub line: u64,
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
