//! A binary from elsewhere: `tasktrace inspect FILE` on arbitrary bytes — the ELF, symbol,
//! DWARF line-table and `.eh_frame` readers, the task-vtable scans and the code analyses
//! the attach plan runs. Nothing may panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tasktrace::live::kernel::KernelFeatures;

fuzz_target!(|data: &[u8]| {
    let path = std::path::PathBuf::from(format!(
        "/dev/shm/tasktrace-fuzz-binary-{}",
        std::process::id()
    ));
    std::fs::write(&path, data).unwrap();
    // A fixed kernel: the analysis of the binary is under test, not the host.
    let kernel = KernelFeatures::everything("fuzz");
    if let Ok(i) = tasktrace::cmd::inspect::inspect_for("fuzzed", &path, None, &kernel) {
        let _ = tasktrace::cmd::inspect::render_text(&i);
    }
});
