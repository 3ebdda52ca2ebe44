//! `tasktrace report A --baseline B`: each side read from a JSON report, or reported from
//! a trace file with the command line's thresholds, then compared by spawn site
//! (`report::compare`).

use std::{io::Read, path::Path};

use serde_json::Value;

use crate::{
    cmd::replay,
    error::{Error, Result},
    model::{fold::Retention, verdict::Thresholds},
    report::compare::{self, Comparison, Side},
};

/// One side: a JSON report as it is, or the report of a trace file.
fn side(path: &Path, th: Thresholds, retention: Retention) -> Result<Side> {
    let io = |err| Error::Io {
        path: path.to_owned(),
        err,
    };
    let mut first = [0u8; 1];
    let mut f = std::fs::File::open(path).map_err(io)?;
    let n = f.read(&mut first).map_err(io)?;
    let report: Value = if n == 1 && first[0] == b'{' {
        let f = std::fs::File::open(path).map_err(io)?;
        serde_json::from_reader(std::io::BufReader::new(f)).map_err(|e| Error::NotComparable {
            path: path.to_owned(),
            why: format!("not valid JSON: {e}"),
        })?
    } else {
        let r = replay::report_from_file(path, th, false, retention)?;
        serde_json::to_value(&r).map_err(|e| Error::Internal(e.to_string()))?
    };
    compare::side(&path.display().to_string(), &report).map_err(|why| Error::NotComparable {
        path: path.to_owned(),
        why,
    })
}

pub fn compare_files(
    current: &Path,
    baseline: &Path,
    th: Thresholds,
    retention: Retention,
) -> Result<Comparison> {
    Ok(compare::compare(
        side(current, th, retention)?,
        side(baseline, th, retention)?,
    ))
}
