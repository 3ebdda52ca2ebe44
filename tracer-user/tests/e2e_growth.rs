//! End to end: a spawn site whose live population grows at a known rate is flagged as
//! growing, with about that rate; a site with a steady population is not.

mod common;

use common::*;

#[test]
fn growing_spawn_site_is_flagged_and_steady_one_is_not() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let bin = fixture("growth");
    let json = tmp("growth.json");
    let out = tasktrace()
        .args([
            "run",
            "-q",
            "--duration",
            "6s",
            "--leak-after",
            "2s",
            "--json",
        ])
        .arg(&json)
        .arg("--")
        .arg(&bin)
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "tasktrace");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TASKTRACE_GROUND_TRUTH "))
        .expect("ground truth");
    let truth: serde_json::Value = serde_json::from_str(line).unwrap();
    let report = read_report(&json);
    let sites = report["spawn_sites"].as_array().unwrap();
    let site = |s: &serde_json::Value| {
        sites
            .iter()
            .find(|x| x["site"] == *s)
            .unwrap_or_else(|| panic!("site {s} missing from {sites:#?}"))
            .clone()
    };
    let growing = site(&truth["growing"]);
    let steady = site(&truth["steady"]);
    assert_eq!(growing["growing"], true, "{growing:#}");
    let rate = growing["growth_per_s"].as_f64().unwrap();
    let want = truth["rate_per_s"].as_f64().unwrap();
    assert!(
        (rate - want).abs() <= want * 0.3,
        "growth {rate}/s, expected about {want}/s"
    );
    assert_eq!(steady["growing"], false, "{steady:#}");
    assert!(
        steady["spawned"].as_u64().unwrap() >= 40,
        "the steady site kept spawning"
    );
    assert!(
        growing["leaked"].as_u64().unwrap() >= 10,
        "older tasks of the growing site are leaked"
    );
    assert_eq!(steady["leaked"], 0);
    // Its leaks wait on a live Notify: suspected, never definite.
    assert_eq!(report["summary"]["leaked_definite"], 0);
    assert!(stdout.contains("GROWING spawn sites"), "{stdout}");
}

/// A binary whose `bind_inner` was inlined into its only caller: spawns are taken at the
/// scheduler's spawn function return instead, merged with a first poll that may precede.
#[test]
fn spawns_are_seen_when_bind_inner_is_inlined() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let bin = fixture("spawnloop");
    let i: serde_json::Value = serde_json::from_slice(
        &tasktrace()
            .arg("inspect")
            .arg(&bin)
            .arg("--json")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        i["plan"]["spawn"]
            .get("tokio::runtime::task::list::OwnedTasks::bind_inner")
            .is_none(),
        "this test needs a binary whose bind_inner is inlined, and fixture-spawnloop's no \
         longer is: a change to fixtures/spawnloop changed its code generation (give a new \
         benchmark mode its own crate under fixtures/bench). inspect: {i}"
    );
    let json = tmp("spawnloop.json");
    let out = tasktrace()
        .args(["run", "-q", "--json"])
        .arg(&json)
        .arg("--")
        .arg(&bin)
        .arg("5000")
        .output()
        .unwrap();
    assert_success(&out, "tasktrace");
    let r = read_report(&json);
    let s = &r["summary"];
    assert!(s["tasks_seen"].as_u64().unwrap() >= 5_500, "{s}");
    assert_eq!(s["completed"], s["tasks_seen"], "{s}");
    assert_eq!(s["never_polled"], 0);
    assert_eq!(s["ok"], s["tasks_seen"]);
    let spawned = r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["spawned_at_ns"].is_u64())
        .count();
    assert!(spawned >= 5_500, "spawns were seen ({spawned})");
    assert_eq!(
        r["diagnostics"]["address_reuse"], 0,
        "reuse after completion is not an anomaly"
    );
}
