//! Plans for the fixture binaries (release builds, `cargo xtask fixtures`): with symbols,
//! stripped, with and without the host's thread sampling.

use std::path::{Path, PathBuf};

use super::{Mode, Plan, PlanOpts, PlanSummary};
use crate::{
    binary::{elf::BinaryInfo, locations::LocationTable, read_binary},
    tokio_versions,
};

fn demo() -> PathBuf {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo/target/release/fixture-demo");
    assert!(
        p.exists(),
        "{} is missing: build the fixtures first (`cargo xtask fixtures`)",
        p.display()
    );
    p
}

fn plan_of(bin: &BinaryInfo, table: &LocationTable, host_fsbase: Option<u64>) -> Plan {
    plan_in(bin, table, host_fsbase, Mode::Full)
}

fn plan_in(bin: &BinaryInfo, table: &LocationTable, host_fsbase: Option<u64>, mode: Mode) -> Plan {
    let k = tokio_versions::select(bin.tokio_version).unwrap().knowledge;
    Plan::choose(
        Path::new("demo"),
        bin,
        table,
        k,
        PlanOpts {
            spawn_sites: true,
            mode,
            host_fsbase,
            await_stacks: false,
        },
    )
    .unwrap()
}

/// A stripped copy of the demo, named after the test (tests run in parallel).
fn stripped_demo(test: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("tt-plan-stripped-{test}-{}", std::process::id()));
    let ok = std::process::Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(demo())
        .status()
        .unwrap()
        .success();
    assert!(ok, "strip");
    out
}

#[test]
fn with_symbols_every_probe_site_is_a_known_instance_at_its_file_offset() {
    let (bin, table) = read_binary(&demo(), "demo", None).unwrap();
    let plan = plan_of(&bin, &table, Some(0x1000));
    assert_eq!(plan.tier, "symbols");
    assert!(plan.completion_probed && plan.polls_probed);
    // With the host's thread sampling, one hit per poll: no poll-end probe.
    assert!(plan.thread_sampling && !plan.poll_ends_probed);
    let k = tokio_versions::select(bin.tokio_version).unwrap().knowledge;
    let polls = bin.instances(k.symbols.raw_poll);
    let poll_sites = plan
        .entry
        .iter()
        .filter(|s| s.function == k.symbols.raw_poll)
        .count();
    assert_eq!(poll_sites, polls.len(), "one probe per raw::poll instance");
    for s in plan.entry.iter().chain(&plan.ret) {
        // A site moved past a single-stepped first instruction stays in its function.
        let entry = bin.file_offset(s.vaddr).unwrap();
        assert!(
            s.file_offset >= entry && s.file_offset < entry + 64,
            "{s:?}"
        );
    }
    assert!(plan.id_draws > 0, "task-id draws found");
}

#[test]
fn without_the_hosts_thread_sampling_poll_ends_are_probed() {
    let (bin, table) = read_binary(&demo(), "demo", None).unwrap();
    let plan = plan_of(&bin, &table, None);
    assert!(!plan.thread_sampling && plan.current_task.is_none());
    assert!(plan.poll_ends_probed && !plan.ret.is_empty());
}

#[test]
fn stripped_the_vtable_scan_finds_what_the_symbols_name() {
    let full = {
        let (bin, table) = read_binary(&demo(), "demo", None).unwrap();
        plan_of(&bin, &table, Some(0x1000))
    };
    let path = stripped_demo("scan");
    let (bin, table) = read_binary(&path, "demo", None).unwrap();
    std::fs::remove_file(&path).ok();
    let plan = plan_of(&bin, &table, Some(0x1000));
    assert_eq!(plan.tier, "vtable scan");
    // Completions come from the task-list readings.
    assert!(!plan.completion_probed);
    assert!(plan.unavailable.iter().any(|u| u.what == "futures"));
    // The same poll functions, found by the scan instead of by name.
    let polls = |p: &Plan| {
        let mut v: Vec<u64> = p
            .entry
            .iter()
            .filter(|s| s.function.starts_with("raw::poll"))
            .map(|s| s.vaddr)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let k = tokio_versions::select(None).unwrap().knowledge;
    let mut named = full
        .entry
        .iter()
        .filter(|s| s.function == k.symbols.raw_poll)
        .map(|s| s.vaddr)
        .collect::<Vec<_>>();
    named.sort_unstable();
    named.dedup();
    assert_eq!(polls(&plan), named);
    // And the same task-id draws.
    assert_eq!(plan.id_draws, full.id_draws);
}

/// Sample mode: spawn probes, gated, and the runtime-shutdown probes, attached all along
/// (a reading during a shutdown would see its cancelled leaks gone, as if finished);
/// nothing per poll, completion or deallocation. With symbols and stripped.
#[test]
fn sample_mode_keeps_spawn_and_shutdown_probes_only() {
    use tracer_common::{EventKind, cookie_kind};
    let path = stripped_demo("sample");
    for (what, binary) in [("symbols", demo()), ("stripped", path.clone())] {
        let (bin, table) = read_binary(&binary, "demo", None).unwrap();
        let plan = plan_in(&bin, &table, Some(0x1000), Mode::Sample);
        assert!(plan.spawns_gated, "{what}");
        let kind = |s: &super::Site| EventKind::from_u8(cookie_kind(s.cookie)).unwrap();
        let shutdowns: Vec<_> = plan
            .entry
            .iter()
            .filter(|s| kind(s) == EventKind::Shutdown)
            .collect();
        assert!(!shutdowns.is_empty(), "{what}: shutdown probes");
        for s in plan.entry.iter().chain(&plan.ret) {
            let k = kind(s);
            assert!(
                !matches!(
                    k,
                    EventKind::PollStart
                        | EventKind::PollEnd
                        | EventKind::Complete
                        | EventKind::Dealloc
                        | EventKind::WakeByVal
                        | EventKind::WakeByRef
                ),
                "{what}: {s:?}"
            );
            assert_eq!(
                plan.always_attached(s),
                k == EventKind::Shutdown,
                "{what}: {s:?}"
            );
        }
    }
    std::fs::remove_file(&path).ok();
    // Elsewhere nothing is singled out: every site attaches and detaches together.
    let (bin, table) = read_binary(&demo(), "demo", None).unwrap();
    let plan = plan_of(&bin, &table, Some(0x1000));
    assert!(!plan.entry.iter().any(|s| plan.always_attached(s)));
}

/// The summary is what a trace file records for the model: it must read back as it was
/// written (a renamed or retyped field fails here, not silently in a replay).
#[test]
fn the_summary_reads_back_as_written() {
    let (bin, table) = read_binary(&demo(), "demo", None).unwrap();
    let summary = plan_of(&bin, &table, None).summary();
    assert!(summary.completion_probed && summary.emulated > 0);
    let json = serde_json::to_value(&summary).unwrap();
    let back: PlanSummary = serde_json::from_value(json).unwrap();
    assert_eq!(back, summary);
}
