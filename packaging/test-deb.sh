#!/usr/bin/env bash
# Installs and removes the .deb built by build-release.sh on this machine (root).
set -euo pipefail
cd "$(dirname "$0")/.."
DEB="$(ls target/dist/containerd-shim-runsc-v1_*_amd64.deb | head -n1)"
fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }
dpkg -i "$DEB" >/dev/null
trap 'dpkg -r containerd-shim-runsc-v1 >/dev/null 2>&1 || true' EXIT
# Outputs are captured first: `cmd | grep -q` under pipefail fails when grep exits early.
status="$(dpkg -s containerd-shim-runsc-v1)"
grep -q '^Status: install ok installed' <<<"$status" || fail "not installed"
version="$(/usr/bin/containerd-shim-runsc-v1 -v)" || fail "binary does not run"
grep -q 'io.containerd.runsc.v1' <<<"$version" || fail "binary does not say its runtime: $version"
[[ -f /usr/share/doc/containerd-shim-runsc-v1/examples/runsc.toml ]] || fail "example config missing"
dpkg -r containerd-shim-runsc-v1 >/dev/null
trap - EXIT
[[ ! -e /usr/bin/containerd-shim-runsc-v1 ]] || fail "binary left after dpkg -r"
[[ ! -e /usr/share/doc/containerd-shim-runsc-v1 ]] || fail "docs left after dpkg -r"
echo "test-deb: ok ($DEB installs, runs and removes cleanly)"
