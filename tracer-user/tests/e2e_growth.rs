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
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
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
    assert!(stdout.contains("GROWING spawn sites"), "{stdout}");
}
