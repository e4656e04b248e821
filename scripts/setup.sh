#!/usr/bin/env bash
# Installs what building and testing need on Debian 12 (as root, offline-capable: packages by
# name from Debian's archive), fetches the newer containerd and runsc builds the tests also
# use, and builds the workspace. Idempotent: installed packages are not fetched again.
#
#   scripts/setup.sh [--release | --no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup: $*" >&2; }
[[ "$(id -u)" == 0 ]] || { log "run as root (containerd and runsc need it)"; exit 1; }

PACKAGES=(containerd runc runsc busybox-static containernetworking-plugins iproute2 util-linux
          procps protobuf-compiler ca-certificates git gcc libc6-dev pkg-config)
missing=()
for p in "${PACKAGES[@]}"; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *"install ok installed"* ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null || log "apt-get update failed; trying with the current lists"
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# The containerd package starts a system containerd where systemd runs; everything here uses
# private instances, so it is not needed (and not touched).

scripts/fetch-runtimes.sh >/dev/null

if ! command -v cargo >/dev/null; then
  for d in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
    [[ -x "$d/cargo" ]] && export PATH="$d:$PATH" && break
  done
fi
command -v cargo >/dev/null || { log "cargo not found: install the Rust toolchain (rustup) first"; exit 1; }
# rust-toolchain.toml pins 1.95.0; on machines where only "stable" (1.95) is installed,
# make the pinned name resolve to it instead of trying to download it.
if command -v rustup >/dev/null && ! rustup run 1.95.0 true >/dev/null 2>&1; then
  stable="$(rustup toolchain list | awk '/^stable/{print $1; exit}')"
  if [[ -n "$stable" && "$(rustup run "$stable" rustc --version)" == *" 1.95."* ]]; then
    ln -sfn "$(rustup run "$stable" rustc --print sysroot)" "$(dirname "$(rustup run "$stable" rustc --print sysroot)")/1.95.0-x86_64-unknown-linux-gnu"
  fi
fi

[[ "${1:-}" == "--no-build" ]] && exit 0
profile_flag=()
[[ "${1:-}" == "--release" ]] && profile_flag=(--release)
log "cargo build ${profile_flag[*]}"
cargo build --workspace --all-targets "${profile_flag[@]}" 2>&1 | tail -n 3 >&2
