//! A trace file from elsewhere: `tasktrace report FILE` on arbitrary bytes, then every
//! renderer on whatever report comes out. Nothing may panic, hang or allocate past the
//! file's size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tasktrace::{model::verdict::Thresholds, report};

fuzz_target!(|data: &[u8]| {
    let path = tasktrace_fuzz_scratch("trace");
    std::fs::write(&path, data).unwrap();
    let th = Thresholds::new(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(2),
    );
    if let Ok(r) = tasktrace::cmd::replay::report_from_file(&path, th, true) {
        let _ = report::render_text(&r);
        let _ = report::render_html(&r);
        let _ = serde_json::to_vec(&report::render_perfetto(&r));
        let _ = serde_json::to_vec(&r);
    }
});

/// A file of this process's own in shared memory (the readers take paths).
fn tasktrace_fuzz_scratch(what: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/dev/shm/tasktrace-fuzz-{what}-{}", std::process::id()))
}
