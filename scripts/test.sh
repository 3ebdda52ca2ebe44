#!/usr/bin/env bash
# The test entry point (README, .ci/run): sets up what a fresh machine lacks, builds the
# release fixtures, then runs formatting, lints, unit tests and the end-to-end tests,
# which attach real eBPF probes and therefore need root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# Cargo caches rustc's target-info probes in each target dir, failures included: a target
# dir left by an earlier run on a damaged machine (see setup.sh on /dev/null) would replay
# a failed probe. Probing afresh costs a few milliseconds per build.
export CARGO_CACHE_RUSTC_INFO=0
# Nothing here reads the caller's standard input; a build tool that did would read CI's.
exec </dev/null

started=$(date +%s)
echo "== fixtures (release builds, one lockfile each)"
cargo xtask fixtures
echo "== real-program corpus (crates.io programs as their authors ship them; the ci subset)"
cargo xtask corpus build --ci
echo "== cargo fmt --check"
cargo fmt --all -- --check
# Default members: tracer-ebpf only builds for the BPF target (tracer-user's build.rs
# compiles it, with its warnings denied there by the same toolchain rules).
echo "== cargo clippy -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test (unit + end-to-end)"
cargo test -- --test-threads=2
echo "== kernels (the demo traced inside booted Debian 6.1 and 6.12 guests, QEMU)"
cargo xtask kernels --debug
echo "== all tests passed in $(( $(date +%s) - started ))s"
