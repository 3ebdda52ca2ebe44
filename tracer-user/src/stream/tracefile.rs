//! The trace file (`docs/trace-format.md`): everything a window produced, written as it
//! happens so that a tracer killed mid-window leaves a file whose complete part still
//! reports, and read back by `tasktrace report` without the target.
//!
//! Layout: the magic `TTRACE01`, then framed records `[kind: u8][len: u32 LE][payload]`.
//! The first record is the metadata; the last, when the window closed cleanly, the end.

use std::{
    fs::File,
    io::{BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tracer_common::{EVENT_SIZE, TaskEvent};

use super::{
    output::Output,
    records::{AwaitsFrom, ChainOf, EndRecord, ListKind, ListedTask, MetaRecord, Rec},
};
use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"TTRACE01";
const KIND_META: u8 = 1;
const KIND_EVENTS: u8 = 2;
const KIND_SITE: u8 = 3;
const KIND_FUTURE: u8 = 4;
const KIND_END: u8 = 5;
const KIND_TASKLIST: u8 = 6;
const KIND_SAMPLES: u8 = 7;
const KIND_LOST: u8 = 8;
const KIND_STOPPED: u8 = 9;
const KIND_TASK_IDS: u8 = 10;
const KIND_SPAWN_PROBES: u8 = 11;
const KIND_AWAITS: u8 = 12;
/// Await chains per record: a record stays well below `MAX_RECORD`.
const AWAITS_CHUNK: usize = 2048;
/// Tasks per task-list record (keeps each record far below `MAX_RECORD`).
const TASKLIST_CHUNK: usize = 20_000;
/// No record is this large; a longer length means corruption, not a big window.
const MAX_RECORD: u32 = 64 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SiteRecord {
    tid: u32,
    location: Option<String>,
    caller: Option<String>,
    /// The caller came from a stack copy unwound (not from a spawn call's return address).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    stack: bool,
    /// The location came from the code at the caller of an out-of-line id draw.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    code: bool,
}

/// Part of one reading of the runtimes' task lists (`tasklist`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TaskListRecord {
    at_ns: u64,
    /// The reading taken at attach (its unknown tasks are alive before attach).
    attach: bool,
    tasks: Vec<(ListKind, ListedTask)>,
    /// In the last part of a reading: the lists it read whole.
    #[serde(default)]
    complete_owners: Option<Vec<u64>>,
    /// In the last part: when the walk of the lists ended (it takes time while the
    /// target runs; what it found holds somewhere between `at_ns` and this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until_ns: Option<u64>,
}

/// One round of the thread sampler.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SamplesRecord {
    at_ns: u64,
    /// (thread id, id of the task it was polling).
    samples: Vec<(u32, Option<u64>)>,
}

/// tokio's task-id counter (`Rec::TaskIds`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TaskIdsRecord {
    at_ns: u64,
    next_id: u64,
}

/// Sample mode's spawn probes attached or detached (`Rec::SpawnProbes`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SpawnProbesRecord {
    at_ns: u64,
    armed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
    budget: u64,
}

/// Await chains after a reading (`Rec::Awaits`), in parts of `AWAITS_CHUNK` chains.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AwaitsRecord {
    at_ns: u64,
    from: AwaitsFrom,
    chains: Vec<ChainOf>,
}

/// A span the target spent stopped (`Rec::Stopped`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoppedRecord {
    from_ns: u64,
    to_ns: u64,
}

/// Events the kernel dropped in a span of the window (`Rec::Lost`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LostRecord {
    since_ns: u64,
    at_ns: u64,
    total: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FutureRecord {
    vtable: u64,
    /// The future type (empty when the symbols do not say).
    #[serde(default)]
    name: String,
    /// Where the code says this vtable's tasks are spawned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    site: Option<String>,
}

pub struct Writer {
    out: BufWriter<File>,
    path: PathBuf,
    /// Written as `PATH.partial-PID`, renamed to `PATH` at the end record; a window cut
    /// short (a killed tracer) leaves the partial file, which still reports.
    output: Option<Output>,
    batch: Vec<u8>,
    failed: Option<std::io::Error>,
}

impl Writer {
    /// Creates the file now, so that a bad path fails before anything attaches.
    pub fn create(path: &Path) -> Result<Self> {
        let err = |err| Error::Output {
            path: path.to_owned(),
            err,
        };
        let mut output = Output::create(path).map_err(err)?.keep_if_cut();
        let mut out = BufWriter::with_capacity(1 << 20, output.take_file());
        out.write_all(MAGIC).map_err(err)?;
        Ok(Self {
            out,
            path: path.to_owned(),
            output: Some(output),
            batch: Vec::new(),
            failed: None,
        })
    }

    /// Where the file is while the window is open (`PATH.partial-PID`).
    #[cfg(test)]
    pub fn partial_path(&self) -> Option<&Path> {
        self.output.as_ref().map(Output::partial_path)
    }

    pub fn meta(&mut self, meta: &MetaRecord) {
        self.json(KIND_META, meta);
        self.flush();
    }

    /// Writes one record of the stream (the metadata and the end have their own calls).
    pub fn record(&mut self, rec: &Rec) {
        match rec {
            Rec::Meta(meta) => self.meta(meta),
            Rec::Task(ev) => self.task(ev),
            Rec::Site {
                tid,
                location,
                caller,
                stack,
                code,
            } => self.json(
                KIND_SITE,
                &SiteRecord {
                    tid: *tid,
                    location: location.clone(),
                    caller: caller.clone(),
                    stack: *stack,
                    code: *code,
                },
            ),
            Rec::Future { vtable, name, site } => self.json(
                KIND_FUTURE,
                &FutureRecord {
                    vtable: *vtable,
                    name: name.clone(),
                    site: site.clone(),
                },
            ),
            Rec::TaskList {
                at_ns,
                attach,
                tasks,
                complete_owners,
                until_ns,
            } => self.task_list(
                *at_ns,
                *attach,
                tasks,
                complete_owners.as_deref(),
                *until_ns,
            ),
            Rec::Samples { at_ns, samples } => self.samples(*at_ns, samples),
            Rec::Lost {
                since_ns,
                at_ns,
                total,
            } => self.json(
                KIND_LOST,
                &LostRecord {
                    since_ns: *since_ns,
                    at_ns: *at_ns,
                    total: *total,
                },
            ),
            Rec::TaskIds { at_ns, next_id } => self.json(
                KIND_TASK_IDS,
                &TaskIdsRecord {
                    at_ns: *at_ns,
                    next_id: *next_id,
                },
            ),
            Rec::SpawnProbes {
                at_ns,
                armed,
                rate,
                budget,
            } => self.json(
                KIND_SPAWN_PROBES,
                &SpawnProbesRecord {
                    at_ns: *at_ns,
                    armed: *armed,
                    rate: *rate,
                    budget: *budget,
                },
            ),
            Rec::Stopped { from_ns, to_ns } => self.json(
                KIND_STOPPED,
                &StoppedRecord {
                    from_ns: *from_ns,
                    to_ns: *to_ns,
                },
            ),
            Rec::Awaits {
                at_ns,
                from,
                chains,
            } => {
                let parts: Vec<&[ChainOf]> = if chains.is_empty() {
                    vec![&[]]
                } else {
                    chains.chunks(AWAITS_CHUNK).collect()
                };
                for part in parts {
                    self.json(
                        KIND_AWAITS,
                        &AwaitsRecord {
                            at_ns: *at_ns,
                            from: from.clone(),
                            chains: part.to_vec(),
                        },
                    );
                }
            }
        }
    }

    pub fn task(&mut self, ev: &TaskEvent) {
        // SAFETY: TaskEvent is plain repr(C) data without padding holes.
        let bytes = unsafe {
            std::slice::from_raw_parts((ev as *const TaskEvent).cast::<u8>(), EVENT_SIZE)
        };
        self.batch.extend_from_slice(bytes);
    }

    fn task_list(
        &mut self,
        at_ns: u64,
        attach: bool,
        tasks: &[ListedTask],
        complete_owners: Option<&[u64]>,
        until_ns: Option<u64>,
    ) {
        let chunks: Vec<&[ListedTask]> = if tasks.is_empty() {
            vec![&[]]
        } else {
            tasks.chunks(TASKLIST_CHUNK).collect()
        };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.json(
                KIND_TASKLIST,
                &TaskListRecord {
                    at_ns,
                    attach,
                    tasks: chunk.iter().map(|t| (t.list, t.clone())).collect(),
                    complete_owners: complete_owners.filter(|_| i == last).map(<[u64]>::to_vec),
                    until_ns: until_ns.filter(|_| i == last),
                },
            );
        }
        self.flush();
    }

    fn samples(&mut self, at_ns: u64, samples: &[(u32, Option<u64>)]) {
        self.json(
            KIND_SAMPLES,
            &SamplesRecord {
                at_ns,
                samples: samples.to_vec(),
            },
        );
    }

    /// The last record: the file is complete and takes its name.
    pub fn end(&mut self, end: &EndRecord) {
        self.json(KIND_END, end);
        self.flush();
        if self.failed.is_none()
            && let Some(output) = self.output.take()
            // A stream (`-o /dev/null`, a pipe) has nothing to make durable or rename.
            && let Err(e) = (if output.in_place() {
                Ok(())
            } else {
                self.out.get_ref().sync_data()
            })
            .and_then(|_| output.commit())
        {
            self.failed = Some(e);
        }
    }

    /// Makes everything so far durable in the file (called every drain).
    pub fn flush(&mut self) {
        self.flush_batch();
        if self.failed.is_none()
            && let Err(e) = self.out.flush()
        {
            self.failed = Some(e);
        }
    }

    /// The first write error, as a command's error.
    pub fn check(self) -> Result<()> {
        match self.failed {
            Some(err) => Err(Error::Output {
                path: self.path,
                err,
            }),
            None => Ok(()),
        }
    }

    /// The first write error, if recording stopped because of one.
    pub fn error(&self) -> Option<String> {
        self.failed
            .as_ref()
            .map(|e| format!("writing {} stopped: {e}", self.path.display()))
    }

    fn flush_batch(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.frame(KIND_EVENTS, &batch);
        }
    }

    fn json<T: Serialize>(&mut self, kind: u8, value: &T) {
        // Records keep the stream's order: pending events go first.
        self.flush_batch();
        let body = serde_json::to_vec(value).expect("records serialize");
        self.frame(kind, &body);
    }

    fn frame(&mut self, kind: u8, body: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        let r = self
            .out
            .write_all(&[kind])
            .and_then(|_| self.out.write_all(&(body.len() as u32).to_le_bytes()))
            .and_then(|_| self.out.write_all(body));
        if let Err(e) = r {
            self.failed = Some(e);
        }
    }
}

/// A trace file read back, apart from its records (which [`stream`] hands over one by
/// one, so that a recording of any size replays in bounded memory).
#[derive(Debug)]
pub struct TraceInfo {
    pub meta: MetaRecord,
    /// `None`: the tracer stopped without closing the window (killed, crashed).
    pub end: Option<EndRecord>,
    /// Byte offset where an incomplete last record starts, if any.
    pub truncated_at: Option<u64>,
}

/// Reads a trace file record by record; the metadata comes first.
pub fn stream(
    path: &Path,
    reader: impl std::io::Read,
    mut on_record: impl FnMut(Rec),
) -> Result<TraceInfo> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
    let corrupt = |offset: u64, why: &str| Error::TraceFile {
        path: path.to_owned(),
        offset,
        why: why.to_owned(),
    };
    let io = |e: std::io::Error| Error::io_for(path, e);
    let mut magic = [0u8; 8];
    let got = read_full(&mut reader, &mut magic).map_err(io)?;
    if got < MAGIC.len() || &magic != MAGIC {
        return Err(corrupt(0, "not a tasktrace trace file (bad magic)"));
    }
    let mut at = MAGIC.len() as u64;
    let mut meta: Option<MetaRecord> = None;
    let mut end = None;
    let mut truncated_at = None;
    let mut body = Vec::new();
    loop {
        let mut head = [0u8; 5];
        let n = read_full(&mut reader, &mut head).map_err(io)?;
        if n == 0 {
            break;
        }
        if n < head.len() {
            truncated_at = Some(at);
            break;
        }
        let kind = head[0];
        let len = u32::from_le_bytes(head[1..5].try_into().unwrap());
        if !(KIND_META..=KIND_AWAITS).contains(&kind) {
            return Err(corrupt(at, &format!("unknown record kind {kind}")));
        }
        if len > MAX_RECORD {
            return Err(corrupt(at, &format!("record length {len} is implausible")));
        }
        // Read what is there, up to the length the header claims: a forged length never
        // makes the reader allocate more than the file holds.
        body.clear();
        (&mut reader)
            .take(u64::from(len))
            .read_to_end(&mut body)
            .map_err(io)?;
        if body.len() < len as usize {
            truncated_at = Some(at);
            break;
        }
        if meta.is_none() && kind != KIND_META {
            return Err(corrupt(at, "the first record is not the metadata"));
        }
        if end.is_some() {
            return Err(corrupt(at, "records after the end record"));
        }
        let json_err = |e: serde_json::Error| corrupt(at, &format!("bad record: {e}"));
        match kind {
            KIND_META if meta.is_some() => return Err(corrupt(at, "a second metadata record")),
            KIND_META => {
                let m: MetaRecord = serde_json::from_slice(&body).map_err(json_err)?;
                on_record(Rec::Meta(Box::new(m.clone())));
                meta = Some(m);
            }
            KIND_EVENTS => {
                if body.len() % EVENT_SIZE != 0 {
                    return Err(corrupt(at, "event batch is not a whole number of events"));
                }
                for chunk in body.as_chunks::<EVENT_SIZE>().0 {
                    // SAFETY: exactly EVENT_SIZE bytes of a plain repr(C) integer struct.
                    let ev =
                        unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<TaskEvent>()) };
                    on_record(Rec::Task(ev));
                }
            }
            KIND_SITE => {
                let s: SiteRecord = serde_json::from_slice(&body).map_err(json_err)?;
                on_record(Rec::Site {
                    tid: s.tid,
                    location: s.location,
                    caller: s.caller,
                    stack: s.stack,
                    code: s.code,
                });
            }
            KIND_FUTURE => {
                let f: FutureRecord = serde_json::from_slice(&body).map_err(json_err)?;
                on_record(Rec::Future {
                    vtable: f.vtable,
                    name: f.name,
                    site: f.site,
                });
            }
            KIND_TASKLIST => {
                let t: TaskListRecord = serde_json::from_slice(&body).map_err(json_err)?;
                on_record(Rec::TaskList {
                    at_ns: t.at_ns,
                    attach: t.attach,
                    tasks: t
                        .tasks
                        .into_iter()
                        .map(|(list, task)| ListedTask { list, ..task })
                        .collect(),
                    complete_owners: t.complete_owners,
                    until_ns: t.until_ns,
                });
            }
            KIND_SAMPLES => {
                let r: SamplesRecord = serde_json::from_slice(&body).map_err(json_err)?;
                on_record(Rec::Samples {
                    at_ns: r.at_ns,
                    samples: r.samples,
                });
            }
            KIND_STOPPED => {
                let r: StoppedRecord = serde_json::from_slice(&body).map_err(json_err)?;
                on_record(Rec::Stopped {
                    from_ns: r.from_ns,
                    to_ns: r.to_ns,
                });
            }
            KIND_TASK_IDS => {
                let r: TaskIdsRecord = serde_json::from_slice(&body).map_err(json_err)?;
                on_record(Rec::TaskIds {
                    at_ns: r.at_ns,
                    next_id: r.next_id,
                });
            }
            KIND_SPAWN_PROBES => {
                let r: SpawnProbesRecord = serde_json::from_slice(&body).map_err(json_err)?;
                on_record(Rec::SpawnProbes {
                    at_ns: r.at_ns,
                    armed: r.armed,
                    rate: r.rate,
                    budget: r.budget,
                });
            }
            KIND_AWAITS => {
                let r: AwaitsRecord = serde_json::from_slice(&body).map_err(json_err)?;
                on_record(Rec::Awaits {
                    at_ns: r.at_ns,
                    from: r.from,
                    chains: r.chains,
                });
            }
            KIND_LOST => {
                let r: LostRecord = serde_json::from_slice(&body).map_err(json_err)?;
                on_record(Rec::Lost {
                    since_ns: r.since_ns,
                    at_ns: r.at_ns,
                    total: r.total,
                });
            }
            _ => end = Some(serde_json::from_slice(&body).map_err(json_err)?),
        }
        at += 5 + len as u64;
    }
    let meta =
        meta.ok_or_else(|| corrupt(at, "no metadata record (the file was cut before it)"))?;
    Ok(TraceInfo {
        meta,
        end,
        truncated_at,
    })
}

/// Like `read_exact`, but reports how much it got instead of failing at end of file.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Parses a whole trace held in memory (tests and small files).
#[cfg(test)]
pub fn parse(path: &Path, data: &[u8]) -> Result<(TraceInfo, Vec<Rec>)> {
    let mut recs = Vec::new();
    let info = stream(path, data, |r| recs.push(r))?;
    Ok((info, recs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header claiming the largest record over a body of a few bytes: the reader takes
    /// what is there (the file is cut), it does not reserve what the header claims.
    #[test]
    fn a_forged_length_reads_only_what_the_file_holds() {
        let mut file = MAGIC.to_vec();
        file.push(KIND_META);
        file.extend_from_slice(&MAX_RECORD.to_le_bytes());
        file.extend_from_slice(b"{\"format\"");
        let mut records = 0;
        let r = stream(Path::new("forged"), &file[..], |_| records += 1);
        let err = r.expect_err("no metadata record survived");
        assert!(err.to_string().contains("no metadata record"), "{err}");
        assert_eq!(records, 0);
        // A length past the limit is refused outright.
        let mut file = MAGIC.to_vec();
        file.push(KIND_META);
        file.extend_from_slice(&(MAX_RECORD + 1).to_le_bytes());
        let err = stream(Path::new("forged"), &file[..], |_| {}).unwrap_err();
        assert!(err.to_string().contains("implausible"), "{err}");
    }
}
