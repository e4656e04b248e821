#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine (as root): install what is needed,
# build the shim, start a private containerd, import a locally built busybox image (no
# registry) and run `dmesg` in a gVisor container through containerd-shim-runsc-v1.
#
# With --pod: take containerd's default config, install the shim into it with
# `containerd-shim-runsc-v1 install`, and run a two-container pod through CRI with the
# handler `runsc` (logs, ExecSync, one shim per pod), then uninstall.
#
#   scripts/demo.sh [--pod] [CONTAINERD=1.6|1.7|2.1] [RUNSC=2022|2024]
set -euo pipefail
cd "$(dirname "$0")/.."
mode=demo
if [[ "${1:-}" == "--pod" ]]; then
  mode=pod-demo
  shift
fi
scripts/setup.sh --release
SHIM_BINARY="$PWD/target/release/containerd-shim-runsc-v1" \
  target/release/e2e-env "$mode" "${1:-1.6}" "${2:-2022}"
