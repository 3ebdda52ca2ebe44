#!/usr/bin/env bash
# The README's first command: set up, build, trace the bundled demo target, print its
# verdicts, write tasktrace-demo.json and check the verdicts against the demo's ground truth.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# A target dir left by an earlier run may hold a failed rustc probe that cargo would replay.
export CARGO_CACHE_RUSTC_INFO=0
cargo xtask demo
