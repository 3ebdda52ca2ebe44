//! Where a task is parked, for binaries without type information: the kernel side copies
//! the stack when a task registers its waker at an await point it was not at before (a
//! waker clone inside its own poll; once per point, `tracer-ebpf`'s `on_clone`), and this
//! reads the unwound frames as the chain: the `async fn` frames between the clone and the
//! task's poll, each at the line of its `.await` (line tables), or the functions and
//! offsets the symbols name (no debug info at all); the leaf is what the innermost one
//! polls. Each task keeps the point of its last clone.

use std::collections::{HashMap, HashSet};

use tracer_common::{EventKind, StackEvent, TaskEvent};

use crate::{
    binary::locations::{CodeFrame, is_runtime_internal},
    live::{
        await_chain::{AwaitChain, AwaitFrame},
        locator::Locator,
    },
    tokio_versions::{is_task_poll_frame, is_tokio_source, is_tokio_symbol},
};

/// The await chains of one window's tasks, from the stack copies of their waker clones.
#[derive(Default)]
pub struct AwaitStacks {
    /// Await-point key → its chain (`None`: the copy said nothing usable).
    chains: HashMap<u64, Option<AwaitChain>>,
    /// Thread → the stack it copied just before its clone event (which says how deep the
    /// task's poll is).
    pending: HashMap<u32, Box<StackEvent>>,
    /// Task header → its id and the key of its last await point.
    last: HashMap<u64, (u64, u64)>,
    /// Tasks cancelled by a shutdown (their runtime's): they keep their chain past their
    /// end, where they were when it came (a leak judged at the runtime's shutdown).
    shut: HashSet<u64>,
    /// Stack copies unwound, and clone events (each a task at a new await point).
    pub copies: u64,
    pub clones: u64,
}

impl AwaitStacks {
    /// A stack copied at a waker clone: unwound when the clone's event comes.
    pub fn on_stack(&mut self, st: Box<StackEvent>) {
        self.copies += 1;
        self.pending.insert(st.tid, st);
    }

    /// A task at a new await point (`state` is the point's key, `owner_id` how deep in
    /// the stack the clone is below the task's poll entry): the stack its thread copied
    /// just before, unwound down to that entry, is the point's chain.
    pub fn on_clone(&mut self, ev: &TaskEvent, locator: &mut Locator) {
        let chain = self.pending.remove(&ev.tid).map(|st| {
            let stack = &st.stack[..(st.len as usize).min(st.stack.len())];
            // The poll entry's frame ends 8 bytes above its entry's stack pointer (the
            // return address): frames ending beyond are the scheduler's.
            let limit = st.sp.saturating_add(ev.owner_id).saturating_add(8);
            locator
                .unwound_frames(st.ip, st.sp, st.bp, stack, limit)
                .and_then(|(frames, complete)| chain_of(&frames, complete))
        });
        self.note(ev, chain);
    }

    /// A task's move to the point `ev.state`, with that point's chain when its stack was
    /// copied just before (`Some(None)`: the copy named nothing).
    fn note(&mut self, ev: &TaskEvent, chain: Option<Option<AwaitChain>>) {
        self.clones += 1;
        if let Some(chain) = chain {
            self.chains.insert(ev.state, chain);
        }
        self.last.insert(ev.header, (ev.task_id, ev.state));
    }

    /// A task event: a task that ends forgets its point, unless a shutdown cancelled it;
    /// then a new task in its freed cell does. (A spawn seen at its function's return, as
    /// before tokio 1.23, may come after the task's first poll: it forgets nothing else.)
    pub fn on_task(&mut self, ev: &TaskEvent) {
        match EventKind::from_u8(ev.kind) {
            Some(EventKind::Shutdown) => {
                self.shut.insert(ev.header);
            }
            Some(EventKind::Complete | EventKind::Dealloc) if !self.shut.contains(&ev.header) => {
                self.last.remove(&ev.header);
            }
            Some(EventKind::Spawn | EventKind::SpawnLocal) if self.shut.remove(&ev.header) => {
                self.last.remove(&ev.header);
            }
            _ => {}
        }
    }

    /// Each task's chain at its last await point: (header, id, chain).
    pub fn chains(&self) -> impl Iterator<Item = (u64, u64, &AwaitChain)> {
        self.last.iter().filter_map(|(&header, &(id, key))| {
            let chain = self.chains.get(&key)?.as_ref()?;
            Some((header, id, chain))
        })
    }
}

/// The chain the frames between a waker clone and its task's poll entry describe
/// (innermost first; `complete`: down to the entry, not cut short by the copy); `None`
/// when they name nothing.
pub fn chain_of(frames: &[CodeFrame], complete: bool) -> Option<AwaitChain> {
    let Some(first) = frames.iter().position(is_chain_frame) else {
        return symbol_chain(frames, complete);
    };
    // Outward from the innermost async fn frame to the task's poll path.
    let mut chain = AwaitChain {
        source: "stack",
        frames: Vec::new(),
        leaf: leaf_of(&frames[..first]),
        leaf_detail: None,
        leaf_task: None,
        state: None,
        truncated: !complete,
    };
    for f in &frames[first..] {
        let n = name(f);
        if !is_chain_frame(f) {
            continue;
        }
        // A frame known by its symbol keeps the symbol's name: its offset is from there.
        let function = if f.file.is_none() {
            n.to_owned()
        } else if is_async_body(n) {
            body_owner(n).to_owned()
        } else {
            future_of(n)
        };
        // A closure inside an async fn: one frame, at the innermost line (only a
        // qualified name tells; line tables name functions by their last segment).
        if is_qualified(n)
            && chain
                .frames
                .last()
                .is_some_and(|l: &AwaitFrame| l.function == function)
        {
            continue;
        }
        chain.frames.push(AwaitFrame {
            function,
            file: f.file.clone().unwrap_or_default(),
            line: f.line,
            offset: f.file.is_none().then_some(f.offset),
        });
    }
    chain.frames.reverse();
    Some(chain)
}

/// A frame of the program's (or a dependency's) futures: an `async fn`/`async` block body,
/// or a hand-written future's poll (hyper's `H2Stream`, a user's combinator).
fn is_chain_frame(f: &CodeFrame) -> bool {
    let n = name(f);
    !is_internal(f) && (is_async_body(n) || is_future_poll(n))
}

/// `<X as core::future::future::Future>::poll`.
fn is_future_poll(name: &str) -> bool {
    name.starts_with('<') && name.ends_with(" as core::future::future::Future>::poll")
}

fn name(f: &CodeFrame) -> &str {
    f.function.as_deref().unwrap_or_default()
}

/// A path-qualified name (a symbol's, or DWARF's linkage name), not the last segment
/// only that line tables keep (`{async_fn#0}`, `poll`: generic arguments aside).
fn is_qualified(name: &str) -> bool {
    name.starts_with('<')
        || name
            .split('<')
            .next()
            .is_some_and(|base| base.contains("::"))
}

/// tokio's or the standard library's: by its name when qualified, else by its file.
fn is_internal(f: &CodeFrame) -> bool {
    let n = name(f);
    if is_qualified(n) {
        return is_runtime_internal(n);
    }
    f.file.as_deref().is_none_or(is_runtime_internal)
}

/// The standard library's (a wrapper such as `Pin`'s or `Box`'s poll, not a leaf).
fn is_std(f: &CodeFrame) -> bool {
    let n = name(f);
    if is_qualified(n) {
        return is_runtime_internal(n) && !is_tokio_symbol(n);
    }
    f.file
        .as_deref()
        .is_none_or(|p| is_runtime_internal(p) && !is_tokio_source(p))
}

/// No frame of the program's is named (no line tables, its async fns inlined into
/// tokio's): the frames are the task's poll path (its harness, `Core` and `raw::poll`
/// functions, which hold the inlined async fns) with their offsets; the leaf is the
/// outermost function inside them that is not the standard library's.
fn symbol_chain(frames: &[CodeFrame], complete: bool) -> Option<AwaitChain> {
    let inner = frames.get(1..).filter(|f| !f.is_empty())?;
    let outer = inner
        .iter()
        .rev()
        .take_while(|f| f.function.as_deref().is_some_and(is_task_poll_frame))
        .count();
    let path = inner.len() - outer;
    // What the path polls: a wrapper of the standard library's (`PollFn`, `Pin`) polls
    // what it wraps, further in.
    let leaf_at = inner[..path]
        .iter()
        .rposition(|f| !is_std(f))
        .or(path.checked_sub(1));
    let leaf = leaf_at.and_then(|i| leaf_of(&inner[i..=i]));
    let mut out: Vec<AwaitFrame> = inner[path..]
        .iter()
        .map(|f| AwaitFrame {
            function: f.function.clone().unwrap_or_default(),
            file: f.file.clone().unwrap_or_default(),
            line: f.line,
            offset: f.file.is_none().then_some(f.offset),
        })
        .collect();
    out.reverse();
    Some(AwaitChain {
        source: "stack",
        frames: out,
        leaf,
        leaf_detail: None,
        leaf_task: None,
        state: None,
        truncated: !complete,
    })
}

/// What the innermost async fn frame polls: the outermost of the frames inside it that
/// is not the standard library's (`Pin`'s or `Box`'s poll polls what it wraps).
fn leaf_of(inner: &[CodeFrame]) -> Option<String> {
    let f = inner.iter().rev().find(|f| !is_std(f)).or(inner.last())?;
    let n = f.function.as_deref()?;
    if is_qualified(n) {
        return Some(future_of(n));
    }
    // Line tables name the function only: where it is says whose it is.
    Some(match &f.file {
        Some(file) => format!("{n} at {}", short_path(file, f.line)),
        None => n.to_owned(),
    })
}

/// `file:line`, a dependency's file from its crate directory on (as the report shows
/// frames: `tokio-1.54.1/src/sync/notify.rs:1034`).
fn short_path(file: &str, line: u64) -> String {
    let file = match file.split_once("/registry/src/") {
        Some((_, rest)) => rest.split_once('/').map_or(rest, |(_, r)| r),
        None => file,
    };
    format!("{file}:{line}")
}

/// The future a poll function polls: `<X as core::future::future::Future>::poll` → `X`;
/// an async fn body → the async fn; else the function.
fn future_of(name: &str) -> String {
    if let Some(rest) = name.strip_prefix('<')
        && let Some((ty, tail)) = rest.rsplit_once(" as ")
        && tail.contains("Future>::poll")
    {
        return ty.to_owned();
    }
    body_owner(name).to_owned()
}

/// An async fn's or async block's body (rustc names it as a closure of its function).
fn is_async_body(name: &str) -> bool {
    let last = name.rsplit("::").next().unwrap_or(name);
    last == "{{closure}}"
        || last.starts_with("{closure#")
        || last.starts_with("{async_fn#")
        || last.starts_with("{async_block#")
}

/// The async fn a body belongs to: `app::handler::{{closure}}` → `app::handler` (async
/// blocks keep their `{async_block#N}`).
fn body_owner(name: &str) -> &str {
    match name.rsplit_once("::") {
        Some((owner, last))
            if last == "{{closure}}"
                || last.starts_with("{closure#")
                || last.starts_with("{async_fn#") =>
        {
            owner
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, file: &str, line: u64) -> CodeFrame {
        CodeFrame {
            function: Some(name.into()),
            file: (!file.is_empty()).then(|| file.into()),
            line,
            offset: 0,
        }
    }

    fn sym(name: &str, offset: u64) -> CodeFrame {
        CodeFrame {
            function: Some(name.into()),
            file: None,
            line: 0,
            offset,
        }
    }

    const TOKIO: &str = "/root/.cargo/registry/src/index.crates.io-x/tokio-1.54.1/src";

    /// Line tables: a clone inside Notified's poll, inlined into three async fns.
    #[test]
    fn line_tables_give_the_async_fns_at_their_awaits_and_the_leaf() {
        let frames = [
            f(
                "tokio::runtime::task::waker::clone_waker",
                &format!("{TOKIO}/runtime/task/waker.rs"),
                86,
            ),
            f(
                "tokio::sync::notify::Notified::poll_notified",
                &format!("{TOKIO}/sync/notify.rs"),
                1100,
            ),
            f(
                "<tokio::sync::notify::Notified as core::future::future::Future>::poll",
                &format!("{TOKIO}/sync/notify.rs"),
                1200,
            ),
            f("app::inner::{{closure}}", "src/main.rs", 40),
            f(
                "<core::pin::Pin<P> as core::future::future::Future>::poll",
                "/rustc/x/library/core/src/future/future.rs",
                124,
            ),
            f("app::outer::{{closure}}", "src/main.rs", 30),
            f("app::handler::{async_fn#0}", "src/main.rs", 20),
            f(
                "tokio::runtime::task::core::Core<T,S>::poll::{{closure}}",
                &format!("{TOKIO}/runtime/task/core.rs"),
                331,
            ),
            f(
                "tokio::runtime::task::raw::poll",
                &format!("{TOKIO}/runtime/task/raw.rs"),
                270,
            ),
        ];
        let c = chain_of(&frames, true).unwrap();
        assert_eq!(c.source, "stack");
        let got: Vec<(&str, u64)> = c
            .frames
            .iter()
            .map(|f| (f.function.as_str(), f.line))
            .collect();
        assert_eq!(
            got,
            [("app::handler", 20), ("app::outer", 30), ("app::inner", 40)]
        );
        assert_eq!(c.leaf.as_deref(), Some("tokio::sync::notify::Notified"));
        assert!(!c.truncated);
        assert!(c.frames.iter().all(|f| f.offset.is_none()));
    }

    /// tokio's own wrapper of a `PollFn` (`Receiver::recv`, inlined into the task's
    /// `Core::poll`): the leaf is tokio's, not the standard library's wrapper.
    #[test]
    fn a_std_wrapper_is_not_the_leaf() {
        let frames = [
            sym("tokio::runtime::task::waker::clone_waker", 0),
            sym("<tokio::sync::mpsc::chan::Rx<u8, S>>::recv", 0x30),
            sym(
                "<core::future::poll_fn::PollFn<F> as core::future::future::Future>::poll",
                0x12,
            ),
            sym("<tokio::runtime::task::core::Core<app::F, S>>::poll", 0x7d),
            sym(
                "<tokio::runtime::task::harness::Harness<app::F, S>>::poll",
                0x63,
            ),
        ];
        let c = chain_of(&frames, true).unwrap();
        assert_eq!(
            c.leaf.as_deref(),
            Some("<tokio::sync::mpsc::chan::Rx<u8, S>>::recv")
        );
        let got: Vec<&str> = c.frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            got,
            [
                "<tokio::runtime::task::harness::Harness<app::F, S>>::poll",
                "<tokio::runtime::task::core::Core<app::F, S>>::poll"
            ]
        );
    }

    /// A dependency's hand-written future is a frame, named by its type.
    #[test]
    fn hand_written_futures_are_frames() {
        let frames = [
            sym("tokio::runtime::task::waker::clone_waker", 0),
            sym("<tokio::io::PollEvented<E>>::poll_read_ready", 0x40),
            sym(
                "<hyper::proto::h2::server::H2Stream<F, B> as core::future::future::Future>::poll",
                0x120,
            ),
            sym("tokio::runtime::task::raw::poll", 0x1a3),
        ];
        let c = chain_of(&frames, true).unwrap();
        assert_eq!(c.frames.len(), 1);
        assert_eq!(
            c.frames[0].function,
            "<hyper::proto::h2::server::H2Stream<F, B> as core::future::future::Future>::poll"
        );
        assert_eq!(c.frames[0].offset, Some(0x120));
        assert_eq!(
            c.leaf.as_deref(),
            Some("<tokio::io::PollEvented<E>>::poll_read_ready")
        );
        assert!(!c.truncated);
    }

    /// tokio's own async fn (`Sender::send`) is the leaf the user's frame awaits.
    #[test]
    fn a_dependency_async_fn_is_named_as_the_leaf() {
        let frames = [
            f("tokio::runtime::task::waker::clone_waker", "", 0),
            f(
                "<tokio::sync::batch_semaphore::Acquire as core::future::future::Future>::poll",
                "",
                0,
            ),
            f(
                "tokio::sync::mpsc::bounded::Sender<T>::send::{{closure}}",
                "",
                0,
            ),
            f("app::inner::{{closure}}", "src/main.rs", 44),
        ];
        let c = chain_of(&frames, false).unwrap();
        assert_eq!(
            c.leaf.as_deref(),
            Some("tokio::sync::mpsc::bounded::Sender<T>::send")
        );
        assert_eq!(c.frames.len(), 1);
        // The stack ended before the task's poll path: the chain says it may go on.
        assert!(c.truncated);
    }

    /// No debug info: the symbols between the clone and the poll entry, with offsets.
    #[test]
    fn symbols_only_give_functions_and_offsets() {
        let frames = [
            sym("tokio::runtime::task::waker::clone_waker", 0),
            sym("tokio::sync::notify::Notified::poll_notified", 0x5a),
            sym("tokio::runtime::task::raw::poll", 0x1a3),
        ];
        let c = chain_of(&frames, true).unwrap();
        assert_eq!(
            c.leaf.as_deref(),
            Some("tokio::sync::notify::Notified::poll_notified")
        );
        assert_eq!(c.frames.len(), 1);
        assert_eq!(c.frames[0].function, "tokio::runtime::task::raw::poll");
        assert_eq!(c.frames[0].offset, Some(0x1a3));
        // A copy that stops short of the task's poll: what it has, said to be cut.
        let cut = chain_of(&frames[..2], false).unwrap();
        assert!(cut.truncated);
        assert_eq!(
            cut.leaf.as_deref(),
            Some("tokio::sync::notify::Notified::poll_notified")
        );
        assert_eq!(chain_of(&frames[..1], true), None);
        assert_eq!(chain_of(&[], true), None);
    }

    #[test]
    fn tasks_keep_the_chain_of_their_last_point() {
        let mut s = AwaitStacks::default();
        let chain = |line| AwaitChain {
            source: "stack",
            frames: vec![AwaitFrame {
                function: "app::f".into(),
                file: "src/main.rs".into(),
                line,
                offset: None,
            }],
            leaf: None,
            leaf_detail: None,
            leaf_task: None,
            state: None,
            truncated: false,
        };
        let clone = |header, id, key, tid| TaskEvent {
            header,
            task_id: id,
            state: key,
            tid,
            ..TaskEvent::default()
        };
        // Task 1 copies point A, task 2 reaches A (no copy), then task 1 moves to B.
        s.note(&clone(0x100, 1, 0xa, 7), Some(Some(chain(10))));
        s.note(&clone(0x200, 2, 0xa, 8), None);
        s.note(&clone(0x100, 1, 0xb, 7), Some(Some(chain(20))));
        let mut got: Vec<(u64, u64, u64)> = s
            .chains()
            .map(|(h, id, c)| (h, id, c.frames[0].line))
            .collect();
        got.sort();
        assert_eq!(got, [(0x100, 1, 20), (0x200, 2, 10)]);
        let ev = |kind: EventKind, header| TaskEvent {
            kind: kind as u8,
            header,
            ..TaskEvent::default()
        };
        // A spawn seen at its function's return, after the task's first poll, keeps it.
        s.on_task(&ev(EventKind::Spawn, 0x200));
        assert_eq!(s.chains().count(), 2);
        // A task that completes forgets its point; one a shutdown cancelled keeps it
        // until its cell holds a new task.
        s.on_task(&ev(EventKind::Complete, 0x200));
        assert_eq!(s.chains().count(), 1);
        s.on_task(&ev(EventKind::Shutdown, 0x100));
        s.on_task(&ev(EventKind::Complete, 0x100));
        s.on_task(&ev(EventKind::Dealloc, 0x100));
        assert_eq!(s.chains().count(), 1);
        s.on_task(&ev(EventKind::Spawn, 0x100));
        assert_eq!(s.chains().count(), 0);
    }
}
