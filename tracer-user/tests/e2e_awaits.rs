//! Await chains: `tasktrace dump` and `record` on `fixtures/awaits`, whose leaked tasks are parked three
//! `async fn`s deep on six kinds of leaf, against the chain the fixture prints (the line of
//! each `.await`, read from its own source). Full debug info in the binary, the same
//! split off into a separate file found by build-id, and cargo's default release build,
//! which has no types (the dump says why it has no chains).

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn dump(pid: u32, extra: &[&str]) -> Value {
    let out = tasktrace()
        .args(["dump", "--json", "-", "--pid", &pid.to_string()])
        .args(extra)
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "dump");
    serde_json::from_str(&stdout).expect("dump --json - prints JSON")
}

/// What the leaf of a task parked on `leaf` must be named like.
fn leaf_matches(leaf: &str, chain: &Value) -> bool {
    let name = chain["leaf"].as_str().unwrap_or("");
    let frames: Vec<&str> = chain["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    match leaf {
        "notify" => name == "tokio::sync::notify::Notified",
        "oneshot" => name.starts_with("tokio::sync::oneshot::Receiver<"),
        // `Sender::send` is tokio's own async fn: the chain goes on inside it.
        "mpsc_send" => frames
            .iter()
            .any(|f| f.starts_with("tokio::sync::mpsc::bounded::") && f.contains("::send")),
        "pending" => name.starts_with("core::future::pending::Pending<"),
        "sleep" => name == "tokio::time::sleep::Sleep",
        "join" => name.starts_with("tokio::runtime::task::join::JoinHandle<"),
        other => panic!("unknown leaf {other}"),
    }
}

/// Every leaked task's chain (`assert_chains_of_tasks`), and the dump's groups split
/// by await point: six distinct points.
fn assert_chains(what: &str, d: &Value, truth: &Value) {
    assert_chains_of_tasks(what, d, truth);
    // One group per innermost await point of the leaked tasks (named by line, so that a
    // stripped binary's nameless futures group the same).
    let lines: std::collections::BTreeSet<String> = truth["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("src/main.rs:{}", t["chain"][2]["line"]))
        .collect();
    let parked: std::collections::BTreeSet<&str> = d["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["parked_at"].as_str())
        .filter(|p| lines.contains(*p))
        .collect();
    assert_eq!(parked.len(), 6, "{what}: {parked:?}");
}

/// Every leaked task's chain: the fixture's frames, outermost first, at the lines of its
/// `.await`s, then the leaf.
fn assert_chains_of_tasks(what: &str, d: &Value, truth: &Value) {
    assert_eq!(
        d["await_chains"]["source"], "dwarf",
        "{what}: {}",
        d["await_chains"]
    );
    let tasks = d["tasks"].as_array().unwrap();
    let expected = truth["tasks"].as_array().unwrap();
    assert_eq!(expected.len(), 6, "{what}: the fixture parks six tasks");
    for want in expected {
        let id = &want["id"];
        let t = tasks
            .iter()
            .find(|t| t["id"] == *id)
            .unwrap_or_else(|| panic!("{what}: task {id} not in the dump"));
        let chain = &t["await_chain"];
        assert_eq!(chain["source"], "dwarf", "{what}: task {id}: {t}");
        let frames = chain["frames"].as_array().unwrap();
        let want_frames = want["chain"].as_array().unwrap();
        assert!(
            frames.len() >= want_frames.len(),
            "{what}: task {id}: {chain}"
        );
        for (got, w) in frames.iter().zip(want_frames) {
            let f = got["function"].as_str().unwrap();
            assert_eq!(
                f,
                format!("fixture_awaits::{}", w["fn"].as_str().unwrap()),
                "{what}: task {id}: {chain}"
            );
            assert!(
                got["file"].as_str().unwrap().ends_with("src/main.rs"),
                "{what}: task {id}: {chain}"
            );
            assert_eq!(got["line"], w["line"], "{what}: task {id}: {chain}");
        }
        // What the leaf holds: the awaited task, a deadline about an hour away.
        let detail = chain["leaf_detail"].as_str().unwrap_or("");
        match want["leaf"].as_str().unwrap() {
            "join" => assert_eq!(
                detail,
                format!("task {}", want["awaits_task"]),
                "{what}: {chain}"
            ),
            "sleep" => {
                let s: f64 = detail
                    .strip_prefix("deadline in ")
                    .and_then(|d| d.strip_suffix(" s"))
                    .and_then(|d| d.parse().ok())
                    .unwrap_or_else(|| panic!("{what}: {chain}"));
                assert!((3000.0..=3600.0).contains(&s), "{what}: {chain}");
            }
            _ => assert!(chain["leaf_detail"].is_null(), "{what}: {chain}"),
        }
        let leaf = want["leaf"].as_str().unwrap();
        assert!(
            leaf_matches(leaf, chain),
            "{what}: task {id} ({leaf}): {chain}"
        );
    }
}

#[test]
fn dump_names_where_each_leaked_task_is_parked_with_full_debug_info() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let bin = fixture_profile("awaits", "dwarf");
    let (target, truth) = start_with_truth(&bin, &["--exit-after", "30"]);
    let d = dump(target.id(), &[]);
    assert_chains("debug info in the binary", &d, &truth);
    // The text: each task's chain under it, outermost first, on one line.
    let out = tasktrace()
        .args(["dump", "--pid", &target.id().to_string()])
        .output()
        .unwrap();
    let (text, _) = assert_success(&out, "dump (text)");
    let notify = &truth["tasks"][0]["chain"];
    let line = format!(
        "parked: fixture_awaits::handler (src/main.rs:{}) → fixture_awaits::outer (src/main.rs:{}) \
         → fixture_awaits::inner (src/main.rs:{}) → tokio::sync::notify::Notified",
        notify[0]["line"], notify[1]["line"], notify[2]["line"]
    );
    assert!(text.contains(&line), "{line}\n{text}");
    assert!(text.contains("await chains: from dwarf"), "{text}");
    assert_eq!(
        d["await_chains"]["file"],
        format!("/proc/{}/exe", target.id()),
        "the binary's own types"
    );
}

/// `record --pid`: the window's end reading reads the chains; each leaked task carries
/// its own, its site counts its tasks per await point, and the text says where they wait.
#[test]
fn record_reports_where_each_leaked_task_is_parked() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let bin = fixture_profile("awaits", "dwarf");
    let (target, truth) = start_with_truth(&bin, &["--exit-after", "30"]);
    let json = tmp("awaits-record.json");
    let trace = tmp("awaits-record.trace");
    let html = tmp("awaits-record.html");
    let out = tasktrace()
        .args([
            "record",
            "--pid",
            &target.id().to_string(),
            "--duration",
            "3s",
        ])
        .args(["--leak-after", "1s", "--json"])
        .arg(&json)
        .arg("-o")
        .arg(&trace)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "record");
    let r = read_report(&json);
    // The chains are in the trace file: its report says the same.
    let replay_json = tmp("awaits-replay.json");
    let out = tasktrace()
        .args(["report", "--leak-after", "1s", "--json"])
        .arg(&replay_json)
        .arg(&trace)
        .output()
        .unwrap();
    assert_success(&out, "report of the trace");
    let replay = read_report(&replay_json);
    assert_eq!(replay["await_chains"], r["await_chains"]);
    let chains = |v: &Value| -> Vec<(Value, Value)> {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["id"].clone(), t["await_chain"].clone()))
            .collect()
    };
    assert_eq!(chains(&replay), chains(&r));
    assert_eq!(
        r["await_chains"]["source"], "dwarf",
        "{}",
        r["await_chains"]
    );
    // The report's tasks hold the same chains as a dump's: checked the same way.
    let as_dump = serde_json::json!({
        "await_chains": r["await_chains"],
        "tasks": r["tasks"],
    });
    for want in truth["tasks"].as_array().unwrap() {
        let t = r["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == want["id"])
            .unwrap();
        assert_eq!(t["verdict"], "leaked", "{t}");
    }
    assert_chains_of_tasks("record", &as_dump, &truth);
    let site = r["spawn_sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["leaked"] == 6)
        .unwrap_or_else(|| panic!("the handlers' site: {}", r["spawn_sites"]));
    let parked = site["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 6, "{parked:?}");
    assert!(parked.iter().all(|p| p["tasks"] == 1 && p["leaked"] == 1));
    let notify_line = truth["tasks"][0]["chain"][2]["line"].as_u64().unwrap();
    // The HTML report: a row per await point under the site.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains(&format!(
            "1 parked at <code>src/main.rs:{notify_line}</code>, awaiting <code>tokio::sync::notify::Notified</code> <b class=\"bad\">1 leaked</b>"
        )),
        "the HTML report's parked rows"
    );
    assert!(
        stdout.contains(&format!(
            "1 parked at src/main.rs:{notify_line}, awaiting tokio::sync::notify::Notified"
        )),
        "{stdout}"
    );
}

/// The dwarf build split as distributions ship it: the binary without debug sections
/// (symbols kept, named `<name>`) and its debug file (`<name>.debug`), and its build-id.
fn split_debug(name: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let bin = fixture_profile("awaits", "dwarf");
    let lean = tmp(name);
    let debug = tmp(&format!("{name}.debug"));
    for (args, what) in [
        (vec!["--only-keep-debug"], &debug),
        (vec!["--strip-debug"], &lean),
    ] {
        let ok = std::process::Command::new("objcopy")
            .args(&args)
            .arg(&bin)
            .arg(what)
            .status()
            .expect("run objcopy")
            .success();
        assert!(ok, "objcopy {args:?}");
    }
    let out = std::process::Command::new("readelf")
        .args(["-n"])
        .arg(&lean)
        .output()
        .unwrap();
    let notes = String::from_utf8_lossy(&out.stdout);
    let id = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("the fixture has a GNU build-id")
        .trim()
        .to_owned();
    (lean, debug, id)
}

#[test]
fn a_separate_debug_file_is_found_by_build_id() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    // The debug file goes under <debug dir>/.build-id/xx/yyyy.debug.
    let (lean, debug, id) = split_debug("awaits-lean");
    let dir = tmp("awaits-debug-dir");
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir
        .join(".build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::copy(&debug, &file).unwrap();

    let (target, truth) = start_with_truth(&lean, &["--exit-after", "30"]);
    // Without the directory: no types anywhere, and the dump says how to give them.
    let none = dump(
        target.id(),
        &["--debug-dir", tmp("no-such-debug-dir").to_str().unwrap()],
    );
    assert!(
        none["await_chains"]["source"].is_null(),
        "{}",
        none["await_chains"]
    );
    assert!(
        none["await_chains"]["unavailable"]
            .as_str()
            .unwrap()
            .contains("--debuginfo"),
        "{}",
        none["await_chains"]
    );
    let d = dump(target.id(), &["--debug-dir", dir.to_str().unwrap()]);
    assert_chains("debug file by build-id", &d, &truth);
    assert_eq!(d["await_chains"]["file"], file.to_str().unwrap());
    // The same file given explicitly.
    let d = dump(target.id(), &["--debuginfo", debug.to_str().unwrap()]);
    assert_chains("--debuginfo", &d, &truth);
    // A traced window finds it the same way: its report's leaked tasks carry the chains.
    let json = tmp("awaits-lean-record.json");
    let out = tasktrace()
        .args([
            "record",
            "--pid",
            &target.id().to_string(),
            "--duration",
            "2s",
        ])
        .args([
            "--leak-after",
            "1s",
            "--debug-dir",
            dir.to_str().unwrap(),
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert_success(&out, "record with the debug file by build-id");
    let r = read_report(&json);
    assert_eq!(r["await_chains"]["file"], file.to_str().unwrap());
    let as_dump = serde_json::json!({ "await_chains": r["await_chains"], "tasks": r["tasks"] });
    assert_chains_of_tasks("record, debug file by build-id", &as_dump, &truth);
    drop(target);

    // A fully stripped binary (no symbol table either), as shipped beside its -dbgsym
    // file: the task vtables come from the scan, their types from the debug file.
    let bare = stripped_copy(&lean, "awaits-bare");
    let (target, truth) = start_with_truth(&bare, &["--exit-after", "30"]);
    let d = dump(target.id(), &["--debug-dir", dir.to_str().unwrap()]);
    assert_chains("stripped, debug file by build-id", &d, &truth);
}

#[test]
fn without_debug_info_chains_are_unavailable_and_say_why() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let bin = fixture_profile("awaits", "release");
    let (target, _truth) = start_with_truth(&bin, &["--exit-after", "30"]);
    let d = dump(
        target.id(),
        &["--debug-dir", tmp("no-such-debug-dir").to_str().unwrap()],
    );
    assert!(d["await_chains"]["source"].is_null());
    assert!(
        d["await_chains"]["unavailable"]
            .as_str()
            .unwrap()
            .contains("debug = 2")
    );
    assert!(
        d["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["await_chain"].is_null()),
        "no chain is guessed"
    );
    // A --debuginfo that is not one fails with a remedy, before anything is read.
    let out = tasktrace()
        .args(["dump", "--pid", &target.id().to_string(), "--debuginfo"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("hint:"), "{stderr}");
}

/// The fixture's ground truth from `tasktrace run`'s standard output (the traced command
/// writes to the same one).
fn truth_in(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TASKTRACE_GROUND_TRUTH "))
        .unwrap_or_else(|| panic!("the fixture printed no ground truth:\n{stdout}"));
    serde_json::from_str(line).unwrap()
}

/// `tasktrace run` on a build of the fixture without type information: the report and
/// the ground truth it printed.
fn run_stack(profile: &str, extra: &[&str], target_args: &[&str]) -> (Value, Value, String) {
    let bin = fixture_profile("awaits", profile);
    let json = tmp(&format!("awaits-stack-{profile}.json"));
    let out = tasktrace()
        .args(["run", "--leak-after", "1s", "--json"])
        .arg(&json)
        .args(extra)
        .arg("--")
        .arg(&bin)
        .args(target_args)
        .output()
        .unwrap();
    let (stdout, _) = assert_success(&out, "run");
    let truth = truth_in(&stdout);
    (read_report(&json), truth, stdout)
}

/// The leaked task of the fixture with this id, from a report.
fn task<'a>(r: &'a Value, id: &Value) -> &'a Value {
    r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == *id)
        .unwrap_or_else(|| panic!("task {id} not in the report"))
}

/// Where each leaf's poll function is, in tokio's sources: the leaf line tables name.
fn leaf_source(leaf: &str) -> &'static str {
    match leaf {
        "notify" => "/src/sync/notify.rs:",
        "oneshot" => "/src/sync/oneshot.rs:",
        "mpsc_send" => "/src/sync/mpsc/bounded.rs:",
        "sleep" => "/src/time/sleep.rs:",
        "join" => "/src/runtime/task/join.rs:",
        other => panic!("no source for {other}"),
    }
}

/// Line tables only: each leaked task's chain from the stack copy taken when it
/// registered its waker: the three async fns at the lines of their `.await`s, the leaf by
/// where its poll is. `pending()` registers no waker: no chain, none guessed.
fn assert_line_table_chains(what: &str, r: &Value, truth: &Value) {
    assert_eq!(
        r["await_chains"]["source"], "stack",
        "{what}: {}",
        r["await_chains"]
    );
    for want in truth["tasks"].as_array().unwrap() {
        let t = task(r, &want["id"]);
        assert_eq!(t["verdict"], "leaked", "{what}: {t}");
        let chain = &t["await_chain"];
        let leaf = want["leaf"].as_str().unwrap();
        if leaf == "pending" {
            assert!(
                chain.is_null(),
                "{what}: a task that registered no waker: {chain}"
            );
            continue;
        }
        assert_eq!(chain["source"], "stack", "{what}: {t}");
        let frames = chain["frames"].as_array().unwrap();
        let lines: Vec<&Value> = frames.iter().map(|f| &f["line"]).collect();
        let want_lines: Vec<&Value> = want["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| &f["line"])
            .collect();
        assert_eq!(
            lines, want_lines,
            "{what}: task {} ({leaf}): {chain}",
            want["id"]
        );
        assert!(
            frames.iter().all(|f| f["file"] == "src/main.rs"),
            "{what}: {chain}"
        );
        let leaf_name = chain["leaf"].as_str().unwrap_or("");
        assert!(
            leaf_name.contains("tokio-1.54.1") && leaf_name.contains(leaf_source(leaf)),
            "{what}: task {} ({leaf}): leaf {leaf_name}",
            want["id"]
        );
        assert!(!chain["truncated"].as_bool().unwrap(), "{what}: {chain}");
    }
}

#[test]
fn line_tables_give_each_leaked_task_its_async_fns_from_the_stack() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    // The window ends while the target runs: the tasks are live, parked.
    let (r, truth, stdout) = run_stack("lines", &["--duration", "3s"], &[]);
    assert_line_table_chains("live at the end", &r, &truth);
    let from = &r["await_chains"];
    // One hit per waker clone, an event per move to a new point, a copy per new point.
    let (hits, changes, copies) = (
        from["clone_hits"].as_u64().unwrap(),
        from["point_changes"].as_u64().unwrap(),
        from["stack_copies"].as_u64().unwrap(),
    );
    assert!(
        hits >= changes && changes >= copies && copies >= 5,
        "{from}"
    );
    // Five await points under the handlers' site, one leaked task each.
    let site = r["spawn_sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["leaked"] == 6)
        .unwrap_or_else(|| panic!("the handlers' site: {}", r["spawn_sites"]));
    let parked = site["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 5, "{parked:?}");
    let notify_line = truth["tasks"][0]["chain"][2]["line"].as_u64().unwrap();
    assert!(
        stdout.contains(&format!(
            "1 parked at src/main.rs:{notify_line}, awaiting poll at "
        )),
        "{stdout}"
    );
    // The target ends on its own: its runtime's shutdown cancels the leaked tasks, which
    // keep the chain they had.
    let (r, truth, _) = run_stack("lines", &[], &["--exit-after", "2"]);
    assert_eq!(r["window"]["ended_by"], "target_exit", "{}", r["window"]);
    assert_line_table_chains("judged at shutdown", &r, &truth);
}

#[test]
fn without_debug_info_the_stack_names_functions_and_leaves_by_symbol() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (r, truth, _) = run_stack("release", &["--duration", "3s"], &[]);
    assert_eq!(
        r["await_chains"]["source"], "stack",
        "{}",
        r["await_chains"]
    );
    let mut points = std::collections::BTreeSet::new();
    for want in truth["tasks"].as_array().unwrap() {
        let t = task(&r, &want["id"]);
        let chain = &t["await_chain"];
        let leaf = want["leaf"].as_str().unwrap();
        if leaf == "pending" {
            assert!(chain.is_null(), "{chain}");
            continue;
        }
        // The async fns are inlined into one another: the outermost function the
        // symbols name, and where in it (no line tables: no file, no line).
        let frames = chain["frames"].as_array().unwrap();
        assert!(!frames.is_empty(), "{chain}");
        for f in frames {
            assert!(
                f["function"]
                    .as_str()
                    .unwrap()
                    .starts_with("fixture_awaits::handler"),
                "{chain}"
            );
            assert_eq!(f["file"], "", "{chain}");
            assert!(f["offset"].as_u64().is_some(), "{chain}");
        }
        points.insert(chain["frames"].to_string());
        let name = chain["leaf"].as_str().unwrap_or("");
        let ok = match leaf {
            "notify" => name == "tokio::sync::notify::Notified",
            "oneshot" => name.starts_with("tokio::sync::oneshot::Receiver<"),
            "mpsc_send" => name.starts_with("tokio::sync::"),
            "sleep" => name == "tokio::time::sleep::Sleep",
            "join" => name.starts_with("tokio::runtime::task::join::JoinHandle<"),
            _ => false,
        };
        assert!(ok, "task {} ({leaf}): leaf {name}", want["id"]);
    }
    assert_eq!(
        points.len(),
        5,
        "each await point its own offset: {points:?}"
    );
    // Turned off: no chains, and the report says how to have them.
    let (r, _, _) = run_stack("release", &["--duration", "1s", "--no-await-stacks"], &[]);
    assert!(
        r["await_chains"]["source"].is_null(),
        "{}",
        r["await_chains"]
    );
    assert!(
        r["await_chains"]["unavailable"]
            .as_str()
            .unwrap()
            .contains("--no-await-stacks"),
        "{}",
        r["await_chains"]
    );
    assert!(
        r["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["await_chain"].is_null()),
        "no chain is guessed"
    );
}

/// A debuginfod server of the test's own (plain HTTP, one thread), serving `debug` at
/// `/buildid/<id>/debuginfo` and 404 elsewhere; the paths asked for go to `asked`.
fn debuginfod_server(
    id: String,
    debug: std::path::PathBuf,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            // The headers, up to the blank line.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
            asked.lock().unwrap().push(path.clone());
            let body = if path == format!("/buildid/{id}/debuginfo") {
                std::fs::read(&debug).ok()
            } else {
                None
            };
            let _ = match body {
                Some(b) => conn
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| conn.write_all(&b)),
                None => conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    port
}

#[test]
fn a_debug_file_is_fetched_from_a_debuginfod_server() {
    if !require_bpf() {
        return;
    }
    let _g = serial();
    let (lean, debug, id) = split_debug("awaits-lean-debuginfod");
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let port = debuginfod_server(id.clone(), debug.clone(), asked.clone());
    let cache = tmp("awaits-debuginfod-cache");
    let _ = std::fs::remove_dir_all(&cache);
    let (target, truth) = start_with_truth(&lean, &["--exit-after", "30"]);
    let dump_with = |urls: &str| {
        let out = tasktrace()
            .args(["dump", "--json", "-", "--pid", &target.id().to_string()])
            .args(["--debug-dir", tmp("no-such-debug-dir").to_str().unwrap()])
            .env("DEBUGINFOD_URLS", urls)
            .env("DEBUGINFOD_CACHE_PATH", &cache)
            .output()
            .unwrap();
        let (stdout, _) = assert_success(&out, "dump with DEBUGINFOD_URLS");
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let d = dump_with(&format!("http://127.0.0.1:{port}"));
    assert_chains("debuginfod", &d, &truth);
    let file = d["await_chains"]["file"].as_str().unwrap();
    assert!(file.starts_with(cache.to_str().unwrap()), "{file}");
    assert_eq!(
        asked.lock().unwrap().as_slice(),
        [format!("/buildid/{id}/debuginfo")],
        "one request, by build-id"
    );
    // A server without it: no chains, and the report says what the servers answered.
    let _ = std::fs::remove_dir_all(&cache);
    let empty = debuginfod_server(String::new(), debug.clone(), asked.clone());
    let d = dump_with(&format!("http://127.0.0.1:{empty}"));
    assert!(
        d["await_chains"]["source"].is_null(),
        "{}",
        d["await_chains"]
    );
    let why = d["await_chains"]["unavailable"].as_str().unwrap();
    assert!(why.contains("debuginfod") && why.contains(&id), "{why}");
}
