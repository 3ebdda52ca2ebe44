//! `--pprof FILE`: the tasks alive at the window's end as a pprof profile (gzipped
//! protobuf, `profile.proto`), which `go tool pprof`, Pyroscope and Grafana read as they
//! are — the tokio counterpart of Go's goroutine profile. Sample type `tasks/count`; one
//! sample per distinct (spawn site, verdict, state, certainty, age), its one frame the
//! spawn site; labels `verdict`, `state`, `certainty`, `age`, `future`. `go tool pprof
//! -tagfocus verdict=leaked FILE` is then the goroutine-leak profile.

use std::collections::BTreeMap;
use std::io::Write;

use super::{Report, TaskReport};
use crate::model::{TaskState, verdict::Certainty};

/// A protobuf message being written: fields appended in order.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    /// A varint field (int64/uint64 alike for non-negative values).
    fn uint(&mut self, field: u32, v: u64) {
        self.key(field, 0);
        self.varint(v);
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn msg(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }

    /// A packed repeated varint field.
    fn packed(&mut self, field: u32, vs: &[u64]) {
        let mut inner = Msg::default();
        for &v in vs {
            inner.varint(v);
        }
        self.bytes(field, &inner.0);
    }
}

/// The profile's string table: index 0 is "" as the format requires.
struct Strings {
    list: Vec<String>,
    index: BTreeMap<String, u64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self {
            list: Vec::new(),
            index: BTreeMap::new(),
        };
        s.id("");
        s
    }

    fn id(&mut self, v: &str) -> u64 {
        if let Some(&i) = self.index.get(v) {
            return i;
        }
        let i = self.list.len() as u64;
        self.list.push(v.to_owned());
        self.index.insert(v.to_owned(), i);
        i
    }
}

fn age_bucket(t: &TaskReport, end_ns: u64) -> &'static str {
    let Some(spawned) = t.spawned_at_ns.get() else {
        return "before attach";
    };
    match end_ns.saturating_sub(spawned) / 1_000_000_000 {
        0 => "<1s",
        1..=9 => "1s-10s",
        10..=59 => "10s-1m",
        60..=599 => "1m-10m",
        _ => ">10m",
    }
}

fn state(s: TaskState) -> &'static str {
    match s {
        TaskState::Scheduled => "scheduled",
        TaskState::Running => "running",
        _ => "idle",
    }
}

/// The gzipped profile of `r`'s live tasks.
pub fn render_pprof(r: &Report) -> std::io::Result<Vec<u8>> {
    render_pprof_of(r, None)
}

/// The profile of `r`'s live tasks with verdict `only` (`None`: all of them): the
/// agent's `/debug/pprof/leaked` is `Some(Leaked)`.
pub fn render_pprof_of(
    r: &Report,
    only: Option<crate::model::verdict::Verdict>,
) -> std::io::Result<Vec<u8>> {
    // (site, verdict, state, certainty, age, future) → tasks.
    type Key<'a> = (
        Option<&'a str>,
        &'static str,
        &'static str,
        Option<&'static str>,
        &'static str,
        Option<&'a str>,
    );
    let mut samples: BTreeMap<Key, u64> = BTreeMap::new();
    let end = r.window.duration_ns;
    for t in &r.tasks {
        if t.runtime_plumbing
            || t.ended_at_ns().is_some()
            || only.is_some_and(|v| t.counted_verdict() != v)
        {
            continue;
        }
        let certainty = t.certainty.map(|c| match c {
            Certainty::Definite => "definite",
            Certainty::Suspected => "suspected",
            Certainty::Uncertain => "uncertain",
        });
        let key = (
            t.spawned_at.as_deref(),
            t.counted_verdict().as_str(),
            state(t.state),
            certainty,
            age_bucket(t, end),
            t.future.as_deref(),
        );
        *samples.entry(key).or_default() += 1;
    }
    let mut strings = Strings::new();
    let mut p = Msg::default();
    let mut value_type = Msg::default();
    value_type.uint(1, strings.id("tasks"));
    value_type.uint(2, strings.id("count"));
    p.msg(1, value_type);
    // One function and one location per site.
    let mut sites: BTreeMap<Option<&str>, u64> = BTreeMap::new();
    for (site, ..) in samples.keys() {
        let n = sites.len() as u64 + 1;
        sites.entry(*site).or_insert(n);
    }
    for ((site, verdict, st, certainty, age, future), n) in &samples {
        let mut s = Msg::default();
        s.packed(1, &[sites[site]]);
        s.packed(2, &[*n]);
        let mut label = |s: &mut Msg, key: &str, value: &str| {
            let mut l = Msg::default();
            l.uint(1, strings.id(key));
            l.uint(2, strings.id(value));
            s.msg(3, l);
        };
        label(&mut s, "verdict", verdict);
        label(&mut s, "state", st);
        if let Some(c) = certainty {
            label(&mut s, "certainty", c);
        }
        label(&mut s, "age", age);
        if let Some(f) = future {
            label(&mut s, "future", f);
        }
        p.msg(2, s);
    }
    for (site, id) in &sites {
        let name = site.unwrap_or("(unknown site)");
        // `file:line:col` gives the frame its file and line.
        let mut parts = name.rsplitn(3, ':');
        let (col, line, file) = (parts.next(), parts.next(), parts.next());
        let line_no = match (file, line, col) {
            (Some(_), Some(l), Some(c)) if c.parse::<u64>().is_ok() => l.parse::<u64>().ok(),
            _ => None,
        };
        let mut line = Msg::default();
        line.uint(1, *id);
        if let Some(l) = line_no {
            line.uint(2, l);
        }
        let mut loc = Msg::default();
        loc.uint(1, *id);
        loc.msg(4, line);
        p.msg(4, loc);
        let mut f = Msg::default();
        f.uint(1, *id);
        f.uint(2, strings.id(name));
        f.uint(3, strings.id(name));
        if let (Some(file), Some(_)) = (file, line_no) {
            f.uint(4, strings.id(file));
        }
        p.msg(5, f);
    }
    for s in &strings.list {
        p.bytes(6, s.as_bytes());
    }
    p.uint(10, r.window.duration_ns);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&p.0)?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields_are_protobuf() {
        let mut m = Msg::default();
        m.uint(1, 300);
        assert_eq!(m.0, [0x08, 0xac, 0x02]);
        let mut m = Msg::default();
        m.packed(2, &[1, 2]);
        assert_eq!(m.0, [0x12, 0x02, 0x01, 0x02]);
        let mut m = Msg::default();
        m.bytes(6, b"ab");
        assert_eq!(m.0, [0x32, 0x02, b'a', b'b']);
    }
}
