#!/usr/bin/env bash
# The node suite (tests/e2e/tests/node.rs) where it means something: a cgroup v2 guest with
# systemd as PID 1 (scripts/guest.sh), like an EKS AL2023, Bottlerocket or Debian node. The
# shim and the test binary are built here and run in the guest from this checkout (shared at
# the same path); containerd 1.6 is the guest's own, 2.1 and runsc 20240729 come from
# scripts/fetch-runtimes.sh's cache (shared too).
#
#   scripts/test-guest.sh [FILTER...]      e.g. node-2.1/runsc-2024  node-install
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build
export PATH="$HOME/.cargo/bin:$PATH"

cargo build -q -p containerd-shim-runsc-v1
node_test="$(cargo test -p e2e --test node --no-run 2>&1 \
  | sed -n 's/.*Executable tests\/node.rs (\(.*\))$/\1/p' | tail -n 1)"
[[ -x "$node_test" ]] || { echo "test-guest: no node test binary" >&2; exit 1; }

# The guest's state lives on its own disk (9p cannot hold overlayfs upper directories).
exec scripts/guest.sh run --timeout 3000 \
  --env "SHIM_BINARY=$PWD/target/debug/containerd-shim-runsc-v1" \
  --env E2E_WORK=/var/tmp/runsc-shim-e2e \
  -- "$PWD/$node_test" "$@"
