//! Inputs the fuzz targets (`fuzz/`, `cargo xtask fuzz`) found to crash tasktrace, kept
//! as tests: each goes through the same path as its target, in a build with overflow
//! checks on. A new finding is added here when it is fixed.

use std::path::{Path, PathBuf};

use tasktrace::{live::kernel::KernelFeatures, model::verdict::Thresholds, report};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(name)
}

/// What `fuzz_targets/trace_file.rs` does with its input.
fn report_every_way(path: &Path) {
    let th = Thresholds::new(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(2),
    );
    if let Ok(r) = tasktrace::cmd::replay::report_from_file(
        path,
        th,
        true,
        tasktrace::model::fold::Retention::default(),
    ) {
        let _ = report::render_text(&r);
        let _ = report::render_html(&r);
        let _ = serde_json::to_vec(&report::render_perfetto(&r));
        let _ = serde_json::to_vec(&r);
    }
}

/// What `fuzz_targets/binary.rs` does with its input.
fn inspect(path: &Path) {
    let kernel = KernelFeatures::everything("fuzz");
    if let Ok(i) = tasktrace::cmd::inspect::inspect_for("fuzzed", path, None, &kernel) {
        let _ = tasktrace::cmd::inspect::render_text(&i);
    }
}

/// A stuck poll stamped far past the window: plotters' pixel arithmetic overflowed.
#[test]
fn a_stuck_poll_past_any_chart() {
    report_every_way(&data("trace-stuck-poll-past-any-chart"));
}

/// A section whose address plus size passes 2^64.
#[test]
fn a_section_ending_past_the_address_space() {
    inspect(&data("binary-section-end-overflow"));
}

/// A poll lasting over 2^63 ns: the histogram's last bucket bound overflowed.
#[test]
fn a_poll_longer_than_any_bucket() {
    report_every_way(&data("trace-poll-of-2-pow-63-ns"));
}

/// An event stamped `u64::MAX`, the value that stands for "no instant" in the model.
#[test]
fn an_event_at_the_end_of_time() {
    report_every_way(&data("trace-event-at-u64-max"));
}

/// Polls whose durations add up past u64: a task's busy time overflowed.
#[test]
fn busy_time_past_what_u64_holds() {
    report_every_way(&data("trace-busy-time-past-u64"));
}
