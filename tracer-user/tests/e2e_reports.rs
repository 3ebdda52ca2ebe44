//! End to end: the HTML report renders in a real browser (headless Chromium) with its
//! tables and charts, and the Perfetto timeline has the structure ui.perfetto.dev needs.

mod common;

use std::{collections::HashMap, process::Command};

use common::*;
use serde_json::Value;

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tmp("chromium-profile");
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium (scripts/setup.sh installs it)")
}

#[test]
fn html_and_perfetto_reports_of_the_demo() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (html, trace) = (tmp("demo.html"), tmp("demo.perfetto.json"));
    let out = tasktrace()
        .args(["run", "-q", "--duration", "5s", "--html"])
        .arg(&html)
        .arg("--perfetto")
        .arg(&trace)
        .args(THRESHOLDS)
        .arg("--")
        .arg(fixture("demo"))
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "tasktrace");
    let truth = ground_truth(&stdout);

    // HTML: self-contained, and the browser's DOM has every key element.
    let page = std::fs::read_to_string(&html).unwrap();
    // Self-contained: nothing fetched (SVG's xmlns URI is a name, not a fetch).
    for fetch in ["src=", "<link", "<script", "url(", "href=\"http"] {
        assert!(
            !page.contains(fetch),
            "the page references something external: {fetch}"
        );
    }
    assert!(!page.contains("chart unavailable"), "every chart was drawn");
    let url = format!("file://{}", html.display());
    let dom = chromium(&["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for id in [
        "summary",
        "leaked",
        "stuck",
        "never-polled",
        "timeline",
        "drill-down",
        "chart-polls",
        "chart-stuck",
    ] {
        assert!(
            dom.contains(&format!("id=\"{id}\"")),
            "rendered page lacks #{id}"
        );
    }
    assert_eq!(
        dom.matches("<svg").count(),
        3,
        "three charts rendered as SVG"
    );
    for site in truth.sites.values() {
        assert!(
            dom.contains(site.as_str()),
            "flagged spawn site {site} listed"
        );
    }
    // A screenshot for people (kept under target/test-artifacts).
    let artifacts = root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("demo-report.png");
    let _ = std::fs::remove_file(&png);
    let shot = chromium(
        &[
            "--window-size=1200,2400",
            &format!("--screenshot={}", png.display()),
        ],
        &url,
    );
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    assert!(
        std::fs::metadata(&png).unwrap().len() > 20_000,
        "a non-trivial screenshot"
    );

    // Perfetto: balanced async slices per task, instants on task tracks, a live counter.
    let v: Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "M" && e["name"] == "process_name")
    );
    let mut open: HashMap<u64, Vec<f64>> = HashMap::new();
    let mut slices = 0;
    for e in events {
        match e["ph"].as_str().unwrap() {
            "b" => open
                .entry(e["id"].as_u64().unwrap())
                .or_default()
                .push(e["ts"].as_f64().unwrap()),
            "e" => {
                let start = open
                    .get_mut(&e["id"].as_u64().unwrap())
                    .and_then(Vec::pop)
                    .expect("end after begin");
                assert!(e["ts"].as_f64().unwrap() >= start);
                slices += 1;
            }
            "n" => assert!(e["id"].is_u64() && e["cat"] == "task"),
            "C" => assert_eq!(e["name"], "live tasks"),
            "M" => {}
            other => panic!("unexpected phase {other}"),
        }
    }
    assert!(
        open.values().all(Vec::is_empty),
        "every poll slice is closed"
    );
    assert!(slices > 50, "polls are on the timeline ({slices})");
    for id in truth.leaked.iter().chain(&truth.stuck) {
        assert!(
            events.iter().any(|e| e["ph"] == "n"
                && e["id"].as_u64() == Some(*id)
                && e["name"] != "wake"
                && e["name"] != "spawn"),
            "verdict instant for task {id}"
        );
    }
    let names: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["ph"] == "n")
        .filter_map(|e| e["name"].as_str())
        .collect();
    // No "wake": full mode's one hit per poll leaves wakes unprobed.
    for n in [
        "spawn",
        "complete",
        "cancel",
        "leaked",
        "stuck",
        "never_polled",
    ] {
        assert!(names.contains(n), "instant kind {n} present");
    }
}
