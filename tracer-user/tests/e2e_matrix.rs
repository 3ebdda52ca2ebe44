//! The build matrix ops meet: tokio 1.20 (the oldest supported: its header holds the list
//! links, its vtable does not say where the trailer is), 1.21 (its thread context keeps
//! no current task id), 1.22 (its task vtables do not say where a task's id is either), 1.23, 1.25, 1.28, 1.32, 1.36 (older lines still in production), 1.38, 1.43, 1.47 and 1.54 (latest), each in the
//! default release profile, thin LTO, fat LTO with one codegen unit, panic=abort and
//! strip=symbols. Every cell is traced for real, launched and attached late, and its verdict
//! counts compared with the ground truth the fixture prints; `inspect` is checked against
//! what the cell is.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn inspect(bin: &Path, extra: &[&str]) -> Value {
    let out = tasktrace()
        .arg("inspect")
        .arg(bin)
        .args(extra)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The cell's tokio `major.minor`, as a number to compare (`"1.28/fat"` → 28).
fn minor(cell: &str) -> u32 {
    let version = cell.split('/').next().unwrap();
    version.split('.').nth(1).unwrap().parse().unwrap()
}

/// Before 1.39 a task id is a `u64` drawn with a plain `fetch_add`, which has no shape to
/// find it by: only its symbol finds the draws.
fn plain_id_draws(cell: &str) -> bool {
    minor(cell) < 39
}

/// What the cell's tokio version cannot show (its version file says so): before 1.29 a
/// LocalSet's list reads as a runtime's.
fn degraded(cell: &str) -> &'static [&'static str] {
    match minor(cell) {
        ..23 => &["task ids at spawn", "LocalSet tasks alive before attach"],
        23..29 => &["LocalSet tasks alive before attach"],
        _ => &[],
    }
}

/// What `inspect` says of the cell's version beyond its report's `unavailable`: before 1.22
/// no thread context says which task a thread polls (so no thread sampler).
fn inspect_degraded(cell: &str) -> &'static [&'static str] {
    match minor(cell) {
        ..22 => &["blocking polls in sample and lifecycle modes"],
        _ => &[],
    }
}

/// The matrix builds carry no type information (cargo's release default): no await
/// chains but from the stack in full mode, and none at all stripped, said last.
const NO_TYPES: &[&str] = &["await chains"];

/// Full mode on a build with symbols: every leaked task's chain from the stack copy taken
/// when it registered its waker (each leak awaits a Notify or a channel), named by the
/// symbols: the leaf tokio's, every frame named.
fn assert_stack_chains(cell: &str, report: &Value) {
    let from = &report["await_chains"];
    assert_eq!(from["source"], "stack", "{cell}: {from}");
    let n = |k: &str| from[k].as_u64().unwrap();
    assert!(
        n("clone_hits") >= n("point_changes") && n("point_changes") >= n("stack_copies"),
        "{cell}: {from}"
    );
    for t in report["tasks"].as_array().unwrap() {
        if t["verdict"] != "leaked" {
            continue;
        }
        let c = &t["await_chain"];
        assert_eq!(c["source"], "stack", "{cell}: task {}: {t}", t["id"]);
        let frames = c["frames"].as_array().unwrap();
        assert!(
            frames
                .iter()
                .all(|f| f["function"].as_str().is_some_and(|s| !s.is_empty())),
            "{cell}: {c}"
        );
        let leaf = c["leaf"].as_str().unwrap_or("");
        assert!(
            leaf.starts_with("tokio::") || leaf.starts_with("<tokio::"),
            "{cell}: task {}: {c}",
            t["id"]
        );
    }
}

/// What a stripped cell cannot show: future names, and spawn sites where the code does
/// not name them (from 1.39 its task-id draws are found, and through them some sites;
/// before, the plain `fetch_add` draw is found by its symbol only).
fn stripped_unavailable(cell: &str) -> Vec<&'static str> {
    let sites = if plain_id_draws(cell) {
        "spawn sites"
    } else {
        "some spawn sites"
    };
    [&[sites, "futures"][..], degraded(cell)].concat()
}

/// `tasktrace run` of a cell for 4 s with the matrix thresholds: its ground truth, its
/// report and its stdout.
fn run_cell(cell: &str, bin: &Path, args: &[&str]) -> (Value, Value, String) {
    let json = tmp(&format!("matrix-{}.json", cell.replace(['/', ' '], "-")));
    let out = tasktrace()
        .args(["run", "-q", "--duration", "4s", "--json"])
        .arg(&json)
        .args(MATRIX_THRESHOLDS)
        .args(args)
        .arg("--")
        .arg(bin)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{cell}: stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TASKTRACE_GROUND_TRUTH "))
        .unwrap_or_else(|| panic!("{cell}: no ground truth:\n{stdout}"));
    let truth: Value = serde_json::from_str(line).unwrap();
    (truth, read_report(&json), stdout)
}

fn trace_counts(cell: &str, bin: &Path, extra: &[&str], stripped: bool) {
    let (truth, report, stdout) = run_cell(cell, bin, extra);
    let s = &report["summary"];
    for k in ["leaked", "stuck", "never_polled"] {
        assert_eq!(s[k], truth[k], "{cell}: {k}\n{stdout}");
    }
    assert_eq!(s["lost_events"], 0, "{cell}");
    // Every leak of this fixture has a waker somewhere: none is certain.
    assert_eq!(s["leaked_definite"], 0, "{cell}");
    let unavailable = unavailable(&report);
    // Launched: every task's spawn was seen, at a spawn probe or, with no symbols, at its
    // task-id draw (before 1.39 the draw is a plain `fetch_add` only its symbol finds).
    if !(stripped && plain_id_draws(cell)) {
        let tasks = report["tasks"].as_array().unwrap();
        // Before 1.23 a draw is joined to its task by id, which only a reading gives where
        // no spawn function survived (fat LTO): a task that finished before any reading
        // has none (the version file says so).
        let idless = |t: &Value| {
            minor(cell) < 23
                && t["id"] == 0
                && t["completed_at_ns"].is_u64()
                && t["kind"] == "async"
        };
        let unseen: Vec<&Value> = tasks
            .iter()
            .filter(|t| t["spawned_at_ns"].is_null() && !idless(t))
            .collect();
        assert!(
            unseen.is_empty(),
            "{cell}: tasks without a spawn event: {unseen:?}"
        );
    }
    if stripped {
        assert_eq!(
            unavailable,
            [&stripped_unavailable(cell)[..], NO_TYPES].concat(),
            "{cell}"
        );
        return;
    }
    // One probe hit per poll: wakes are left to the task-list readings. Before 1.22 no
    // thread sampler can tell a poll's thread, so poll returns and wakes are probed too.
    let wakes: &[&str] = if minor(cell) < 22 { &[] } else { &["wakes"] };
    assert_eq!(unavailable, [wakes, degraded(cell)].concat(), "{cell}");
    assert_stack_chains(cell, &report);
    // Spawn sites: every task the program spawned names a site outside tokio and std
    // (exact file:line:col where a spawn function survived; the caller's function, found
    // by unwinding, under fat LTO). Tokio's own worker-thread tasks have none.
    let user: Vec<&Value> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["runtime_plumbing"] == false && t["kind"] != "blocking")
        .collect();
    let named = user.iter().filter(|t| t["spawned_at"].is_string()).count();
    assert!(
        named * 100 >= user.len() * 95,
        "{cell}: {named} of {} async spawns name a site",
        user.len()
    );
    for t in &user {
        let site = t["spawned_at"].as_str().unwrap_or("");
        assert!(
            !site.contains("tokio") && !site.starts_with("std::") && !site.starts_with("/rustc/"),
            "{cell}: {site}"
        );
    }
    // Fat LTO keeps no spawn function, yet the inlined spawn's runtime-lookup panic block
    // holds the caller's Location: every `tokio::spawn` is exact. Only spawns through a
    // runtime handle (which look nothing up, and keep no Location without tokio_unstable)
    // are named by their function.
    if cell.ends_with("/fat") {
        let exact = user
            .iter()
            .filter(|t| {
                t["spawned_at"]
                    .as_str()
                    .is_some_and(|s| s.split(':').count() == 3 && s.contains(".rs:"))
            })
            .count();
        assert!(
            exact + 2 >= user.len(),
            "{cell}: only {exact} of {} async spawns exact",
            user.len()
        );
    }
    let polled_ok = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["verdict"] == "ok" && t["polls"].as_u64() > Some(5))
        .count();
    assert!(
        polled_ok >= 2,
        "{cell}: the ticker and the consumer were traced"
    );
}

/// Sample mode on a cell: no uprobe but the spawn probes, the verdicts from the task
/// lists and the thread sampler, the same as with every probe.
fn sample_counts(cell: &str, bin: &Path, extra: &[&str]) {
    let cell = &format!("{cell} (sample)");
    let (truth, report, stdout) = run_cell(cell, bin, &[&["--mode", "sample"], extra].concat());
    assert_eq!(report["probes"]["mode"], "sample", "{cell}");
    let s = &report["summary"];
    for k in ["leaked", "stuck", "never_polled"] {
        assert_eq!(s[k], truth[k], "{cell}: {k}\n{stdout}\n{s}");
    }
    assert_eq!(s["lost_events"], 0, "{cell}");
    assert_eq!(s["leaked_definite"], 0, "{cell}");
}

/// `record --pid` of a cell running since before attach (its pitfalls in place), in the
/// default mode: every leak is found. A task notified before attach and never polled
/// since cannot be told from one woken and starved (no poll count in memory), so the
/// never-polled ones count as `never_polled` or `stuck`: the two added up are checked.
fn late_counts(cell: &str, bin: &Path, extra: &[&str]) {
    let cell = &format!("{cell} (late)");
    let (target, truth) = start_with_truth(bin, &[]);
    let json = tmp(&format!(
        "matrix-late-{}.json",
        cell.replace(['/', ' '], "-")
    ));
    let out = tasktrace()
        .args(["record", "-q", "--duration", "3s", "--json"])
        .arg(&json)
        .args(MATRIX_THRESHOLDS)
        .args(extra)
        .arg("--pid")
        .arg(target.id().to_string())
        .output()
        .unwrap();
    assert_success(&out, cell);
    let report = read_report(&json);
    let s = &report["summary"];
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{cell}: {k} {v}"));
    assert_eq!(n(s, "leaked"), n(&truth, "leaked"), "{cell}: leaked\n{s}");
    assert_eq!(
        n(s, "stuck") + n(s, "never_polled"),
        n(&truth, "stuck") + n(&truth, "never_polled"),
        "{cell}: stuck + never polled\n{s}"
    );
    assert!(n(s, "stuck") >= n(&truth, "stuck"), "{cell}: {s}");
    assert!(
        n(s, "alive_before_attach") >= n(&truth, "leaked") + n(&truth, "stuck"),
        "{cell}: {s}"
    );
    assert_eq!(s["lost_events"], 0, "{cell}");
    assert_eq!(s["leaked_definite"], 0, "{cell}");
}

/// `dump` of a running cell: the version's list layout is found and walked. The fixture's
/// leaks are idle, its undriven runtime's tasks notified, its blocking task running.
/// `nameless`: the binary names no future type (stripped, or legacy-mangled).
fn dump_counts(cell: &str, bin: &Path, extra: &[&str], nameless: bool) {
    let (target, truth) = start_with_truth(bin, &[]);
    let out = tasktrace()
        .args(["dump", "--json", "-", "--pid"])
        .arg(target.id().to_string())
        .args(extra)
        .output()
        .unwrap();
    let (stdout, stderr) = assert_success(&out, cell);
    let d: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        d["warnings"].as_array().unwrap().is_empty(),
        "{cell}: {stderr} {d}"
    );
    assert!(d["lists"].as_array().unwrap().len() >= 2, "{cell}: {d}");
    let s = &d["summary"];
    assert!(
        s["idle"].as_u64() >= truth["leaked"].as_u64(),
        "{cell}: {s}"
    );
    assert!(
        s["notified"].as_u64() >= truth["never_polled"].as_u64(),
        "{cell}: {s}"
    );
    assert!(s["running"].as_u64() >= Some(1), "{cell}: {s}");
    assert_eq!(s["definite_leaks"], 0, "{cell}");
    for t in d["tasks"].as_array().unwrap() {
        assert_eq!(t["future"].is_string(), !nameless, "{cell}: {t}");
    }
}

fn cells(version: &str) {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    for profile in ["release", "thin", "fat", "abort"] {
        let cell = format!("{version}/{profile}");
        let bin = matrix_fixture(version, profile);
        let i = inspect(&bin, &[]);
        assert!(
            i["tokio_version"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{version}.")),
            "{cell}: {i}"
        );
        assert_eq!(i["traits"]["symbols"], true, "{cell}");
        assert_eq!(
            i["traits"]["panic"],
            if profile == "abort" {
                "abort"
            } else {
                "unwind"
            },
            "{cell}"
        );
        if profile == "fat" {
            assert_eq!(i["traits"]["lto_likely"], true, "{cell}");
        }
        if profile == "release" || profile == "abort" {
            assert_eq!(i["traits"]["lto_likely"], false, "{cell}");
        }
        assert!(
            i["unavailable"].as_array().unwrap().iter().all(|u| {
                u["what"] == "spawn sites"
                    || u["what"] == "wakes"
                    || u["what"] == NO_TYPES[0]
                    || degraded(&cell).contains(&u["what"].as_str().unwrap())
                    || inspect_degraded(&cell).contains(&u["what"].as_str().unwrap())
            }),
            "{cell}: {i}"
        );
        assert_eq!(i["tier"], "symbols", "{cell}");
        for k in ["scan_matches_symbols", "waker_matches_symbols"] {
            assert_eq!(i["task_vtables"][k], true, "{cell}: {k}");
        }
        trace_counts(&cell, &bin, &[], false);
        sample_counts(&cell, &bin, &[]);
        dump_counts(&cell, &bin, &[], false);
        if profile == "release" {
            late_counts(&cell, &bin, &[]);
        }
    }
    // strip=symbols: traced from the task and waker vtables found by pattern, with what
    // that cannot see (spawn sites, futures) said to be unavailable.
    let cell = format!("{version}/stripped");
    let stripped = matrix_fixture(version, "stripped");
    let i = inspect(&stripped, &[]);
    assert_eq!(i["traits"]["symbols"], false, "{cell}");
    assert_eq!(i["tier"], "vtable scan", "{cell}");
    let release = inspect(&matrix_fixture(version, "release"), &[]);
    assert_eq!(
        i["task_vtables"]["by_scan"], release["task_vtables"]["by_symbols"],
        "{cell}: as many vtables as the release build's symbols name"
    );
    let unavailable = unavailable(&i);
    assert_eq!(
        unavailable,
        [
            &stripped_unavailable(&cell)[..],
            inspect_degraded(&cell),
            NO_TYPES
        ]
        .concat(),
        "{cell}"
    );
    assert_eq!(i["task_vtables"]["waker_by_scan"], true, "{cell}");
    // Spawns are seen at their task-id draws, found without the counter's symbol: the
    // same draws as the symbols find in the same build (before 1.39 a plain `fetch_add`
    // has no shape to find it by: none, rather than a wrong counter).
    let draws = i["id_draws"].as_u64().unwrap();
    if plain_id_draws(&cell) {
        assert_eq!(draws, 0, "{cell}");
    } else {
        assert!(draws > 0, "{cell}: no task-id draw found");
        assert_eq!(
            draws, release["id_draws"],
            "{cell}: as many task-id draws as the release build's symbols find"
        );
        assert_eq!(
            i["id_draws_probed"].as_array().unwrap().len() as u64,
            draws,
            "{cell}: no spawn probe covers a stripped build's draws"
        );
    }
    trace_counts(&cell, &stripped, &[], true);
    sample_counts(&cell, &stripped, &[]);
    dump_counts(&cell, &stripped, &[], true);
    late_counts(&cell, &stripped, &[]);
    // …and with the unstripped twin of the same build, every verdict is back.
    let release = matrix_fixture(version, "release");
    let twin_stripped = stripped_copy(&release, &format!("matrix-{version}-stripped-twin"));
    let with_symbols = ["--symbols", release.to_str().unwrap()];
    trace_counts(
        &format!("{cell}+symbols"),
        &twin_stripped,
        &with_symbols,
        false,
    );
    dump_counts(
        &format!("{cell}+symbols"),
        &twin_stripped,
        &with_symbols,
        false,
    );
}

/// The oldest supported version: list links in the header, the trailer found from the
/// code, ids found in memory per vtable, and no thread context naming the task a thread
/// polls.
#[test]
fn tokio_1_20() {
    cells("1.20");
}

/// Ids found in memory, per vtable, and no thread context naming the task a thread polls.
#[test]
fn tokio_1_21() {
    cells("1.21");
}

/// Ids found in memory, per vtable.
#[test]
fn tokio_1_22() {
    cells("1.22");
}

#[test]
fn tokio_1_23() {
    cells("1.23");
}

#[test]
fn tokio_1_25() {
    cells("1.25");
}

#[test]
fn tokio_1_28() {
    cells("1.28");
}

#[test]
fn tokio_1_32() {
    cells("1.32");
}

#[test]
fn tokio_1_36() {
    cells("1.36");
}

#[test]
fn tokio_1_38() {
    cells("1.38");
}

#[test]
fn tokio_1_43() {
    cells("1.43");
}

#[test]
fn tokio_1_47() {
    cells("1.47");
}

#[test]
fn tokio_1_54() {
    cells("1.54");
}

/// The 1.54 cell built by rustc 1.95, as binaries built before v0 mangling became the
/// default are (legacy names carry no generic arguments: no future types, no spawn sites
/// named by future type; `drop_in_place` rather than `drop_glue`): the ground truth's
/// verdict counts, every spawn seen, ≥ 95 % of async spawns named outside tokio and std.
#[test]
fn tokio_1_54_legacy_mangling() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let bin = root().join("fixtures/matrix/tokio-1.54/target-legacy/release/fixture-matrix");
    assert!(
        bin.exists(),
        "{} is missing: `cargo xtask fixtures` builds it",
        bin.display()
    );
    let i = inspect(&bin, &[]);
    assert_eq!(i["traits"]["mangling"], "legacy", "{i}");
    assert!(i["id_draws"].as_u64() > Some(0), "{i}");
    trace_counts("1.54/legacy", &bin, &[], false);
    // Legacy names carry no future types: the dump names none, as for a stripped cell.
    dump_counts("1.54/legacy", &bin, &[], true);
}

/// One release older than the oldest supported: every tracing verb refuses it, naming the
/// oldest supported version and what to do, and attaches nothing.
#[test]
fn tokio_1_19_is_refused_naming_the_oldest_supported() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let bin = fixture("oldtokio");
    let expect = |what: &str, out: &std::process::Output| {
        let (stdout, stderr) = text(out);
        assert_eq!(out.status.code(), Some(2), "{what}: {stdout}\n{stderr}");
        assert!(
            stderr.contains("tokio 1.19.2 is older than the oldest supported version (1.20.0)")
                && stderr.contains("cargo update -p tokio"),
            "{what}: {stderr}"
        );
    };
    // `inspect` attaches nothing: it says why nothing can be seen.
    let i = inspect(&bin, &[]);
    assert_eq!(i["tokio_version"], "1.19.2", "{i}");
    let all = &i["unavailable"][0];
    assert_eq!(all["what"], "all verdicts", "{i}");
    assert!(
        all["why"]
            .as_str()
            .unwrap()
            .contains("oldest supported version (1.20.0)"),
        "{i}"
    );
    expect(
        "run",
        &tasktrace()
            .args(["run", "-q", "--duration", "2s", "--"])
            .arg(&bin)
            .output()
            .unwrap(),
    );
    let (target, _) = start_with_truth(&bin, &[]);
    let pid = target.id().to_string();
    for verb in ["record", "dump"] {
        let mut cmd = tasktrace();
        cmd.arg(verb).args(["--pid", &pid]);
        if verb == "record" {
            cmd.args(["--duration", "2s"]);
        }
        expect(verb, &cmd.output().unwrap());
    }
}
