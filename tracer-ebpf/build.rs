//! Rebuild when bpf-linker changes: the eBPF object's link step depends on it, and cargo
//! cannot express a dependency on a binary tool.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found on PATH: run scripts/setup.sh"),
    }
}
