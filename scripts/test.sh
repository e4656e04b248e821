#!/usr/bin/env bash
# Every test, as CI runs them (root, Debian 12): format and lint gates, unit tests (fake
# runsc), then the end-to-end suites against real containerd 1.6/1.7/2.1 and runsc
# 2022/2024, on this host and (the cgroup v2 + systemd node suite) in a guest. Extra
# arguments filter the end-to-end scenarios by name.
#
#   scripts/test.sh [FILTER...]
set -euo pipefail
cd "$(dirname "$0")/.."
# (cargo builds what each step needs; no separate build here)
scripts/setup.sh --no-build
export PATH="$HOME/.cargo/bin:$PATH"

echo "== format and lints" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps -q

echo "== unit and integration tests (fake runsc)" >&2
cargo test --workspace --exclude e2e
# The end-to-end suites run the built shim binary.
cargo build -p containerd-shim-runsc-v1

echo "== packaging manifests" >&2
cargo test -p e2e --test manifests

echo "== end to end: ctr, real containerd + runsc" >&2
cargo test -p e2e --test ctr -- "$@"

echo "== end to end: CRI pods, real containerd + runsc + CNI" >&2
cargo test -p e2e --test cri -- "$@"

echo "== reliability: containerd restarts, a killed shim, concurrency, soak, floods" >&2
cargo test -p e2e --test reliability -- "$@"

echo "== end to end: the node installer against containerd 1.6/1.7/2.1 default configs" >&2
cargo test -p e2e --test install -- "$@"

echo "== nodes as users run them: cgroup v2 + systemd, in a guest (scripts/guest.sh)" >&2
scripts/test-guest.sh "$@"

echo "== the README's demos: a container through ctr, a pod through install + CRI" >&2
cargo build -p e2e --bin e2e-env
SHIM_BINARY="$PWD/target/debug/containerd-shim-runsc-v1" target/debug/e2e-env demo
SHIM_BINARY="$PWD/target/debug/containerd-shim-runsc-v1" target/debug/e2e-env pod-demo 2.1 2024

echo "== release artefacts: static binary, .deb (installed and removed), tarball" >&2
packaging/build-release.sh >/dev/null
packaging/test-deb.sh
