#!/usr/bin/env bash
# The README's first command: set up, build, trace the bundled demo target, print its
# verdicts, write tasktrace-demo.json and check the verdicts against the demo's ground truth.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo xtask demo
