//! Builds the kernel-side object (`tracer-ebpf`) with the pinned nightly and embeds it.
//! The nightly is named once, in scripts/toolchain.env.
use std::{fs, path::Path};

fn main() -> aya_build::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let env_file = root.join("scripts/toolchain.env");
    println!("cargo:rerun-if-changed={}", env_file.display());
    // The kernel side is built from tracer-common too (its event and layout types, and
    // HEADER_READ_WORDS): aya-build watches only tracer-ebpf's own directory.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("tracer-common").display()
    );
    let text = fs::read_to_string(&env_file)?;
    let nightly = text
        .lines()
        .find_map(|l| l.strip_prefix("EBPF_TOOLCHAIN="))
        .map(str::trim)
        .expect("EBPF_TOOLCHAIN in scripts/toolchain.env")
        .to_owned();
    let ebpf_dir = root.join("tracer-ebpf");
    let ebpf_dir = ebpf_dir.to_str().expect("utf-8 path");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&nightly),
    )
}
