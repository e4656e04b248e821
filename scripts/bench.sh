#!/usr/bin/env bash
# The benchmarks (root): this shim next to containerd's Go runc shim, raw runsc and runc,
# in one run; writes BENCHMARKS.md and docs/bench.svg.
#
#   scripts/bench.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --release
SHIM_BINARY="$PWD/target/release/containerd-shim-runsc-v1" \
  cargo run --release -q -p e2e --bin bench -- --out BENCHMARKS.md --svg docs/bench.svg "$@"
