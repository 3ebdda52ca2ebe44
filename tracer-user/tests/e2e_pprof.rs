//! End to end: `--pprof FILE` read by `go tool pprof -raw` (Debian's golang-go): per
//! spawn site, the leaked tasks equal the report's and sum to the matrix fixture's ground
//! truth; the stuck and never-polled ones too, selected by their `verdict` label.

mod common;

use std::{collections::BTreeMap, process::Command};

use common::*;
use serde_json::Value;

/// Tasks per spawn site in the profile's samples that `go tool pprof` keeps for `verdict`.
fn per_site(profile: &std::path::Path, verdict: &str) -> BTreeMap<String, u64> {
    let out = Command::new("go")
        .args([
            "tool",
            "pprof",
            "-raw",
            &format!("-tagfocus=verdict={verdict}"),
        ])
        .arg(profile)
        .output()
        .expect("go (scripts/setup.sh installs golang-go)");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{raw}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (samples, rest) = raw.split_once("Locations").expect("a raw profile");
    // `  id: 0x0 M=1 SITE FILE:LINE s=0`: the frame is the spawn site.
    let names: BTreeMap<u64, String> = rest
        .lines()
        .take_while(|l| !l.starts_with("Mappings"))
        .filter_map(|l| {
            let (id, rest) = l.trim().split_once(": ")?;
            let name = rest.split_once("M=1 ")?.1.split(' ').next()?;
            Some((id.parse().ok()?, name.to_owned()))
        })
        .collect();
    let mut out = BTreeMap::new();
    for l in samples.lines() {
        let Some((n, loc)) = l.trim().split_once(": ") else {
            continue;
        };
        let (Ok(n), Ok(loc)) = (n.parse::<u64>(), loc.trim().parse::<u64>()) else {
            continue;
        };
        *out.entry(names[&loc].clone()).or_default() += n;
    }
    out
}

#[test]
fn go_tool_pprof_reads_the_task_profile_with_the_ground_truth_per_site() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (profile, json) = (tmp("matrix.pb.gz"), tmp("matrix-pprof.json"));
    let out = tasktrace()
        .args(["run", "-q", "--duration", "4s", "--pprof"])
        .arg(&profile)
        .arg("--json")
        .arg(&json)
        .args(MATRIX_THRESHOLDS)
        .arg("--")
        .arg(matrix_fixture("1.54", "release"))
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "tasktrace run --pprof");
    let truth: Value = serde_json::from_str(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("TASKTRACE_GROUND_TRUTH "))
            .expect("ground truth"),
    )
    .unwrap();
    let report = read_report(&json);
    for (verdict, field) in [
        ("leaked", "leaked"),
        ("stuck", "stuck"),
        ("never_polled", "never_polled"),
    ] {
        let got = per_site(&profile, verdict);
        let want: BTreeMap<String, u64> = report["spawn_sites"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s[field].as_u64() > Some(0))
            .map(|s| {
                (
                    s["site"].as_str().unwrap_or("(unknown site)").to_owned(),
                    s[field].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, want, "{verdict} per site: profile vs report");
        assert_eq!(
            got.values().sum::<u64>(),
            truth[field].as_u64().unwrap(),
            "{verdict}: the ground truth"
        );
    }
    // The leaks wait at two sites (a Notify and a kept channel).
    assert_eq!(per_site(&profile, "leaked").len(), 2);
}
