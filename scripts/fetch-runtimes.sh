#!/usr/bin/env bash
# Fetch newer containerd and runsc builds from other Debian suites into a private cache,
# without touching /etc/apt or the system's dpkg database.
#
#   scripts/fetch-runtimes.sh [CACHE_DIR]        (default: /var/cache/runsc-shim-e2e)
#
# Result (each an unpacked .deb, `dpkg -x`):
#   $CACHE/containerd-1.7/usr/bin/{containerd,ctr,containerd-shim-runc-v2,...}   (trixie)
#   $CACHE/containerd-2.1/usr/bin/{containerd,ctr,containerd-shim-runc-v2,...}   (sid)
#   $CACHE/runsc-2024/usr/bin/runsc                                             (bookworm-backports)
#
# A private APT_CONFIG (own sources.list, lists, cache, status, empty apt.conf.d) is used for
# `apt-get update` + `apt-get download`. Idempotent: a target that is already unpacked (marker
# file .fetched-version plus a runnable binary) is skipped, and when every target is present
# no network access happens at all. FORCE=1 re-fetches everything.
#
# Environment overrides:
#   DEBIAN_MIRROR       archive URL (default: first deb.debian.org-style URI of the system's
#                       Debian sources, else http://deb.debian.org/debian)
#   DEBIAN_KEYRING      keyring for signed-by (default /usr/share/keyrings/debian-archive-keyring.gpg)
#   CONTAINERD17_VERSION, CONTAINERD21_VERSION, RUNSC2024_VERSION
#                       exact Debian version to fetch instead of the newest matching one
#   FORCE=1             ignore what is already unpacked
set -euo pipefail

CACHE="${1:-/var/cache/runsc-shim-e2e}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
APTDIR="$CACHE/apt"
DEBDIR="$CACHE/debs"
KEYRING="${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
FORCE="${FORCE:-0}"

log() { echo "fetch-runtimes: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# name | package | suite | upstream version prefix | exact version override | binary to verify
TARGETS=(
  "containerd-1.7|containerd|trixie|1.7.24|${CONTAINERD17_VERSION:-}|usr/bin/containerd"
  "containerd-2.1|containerd|sid|2.1.9|${CONTAINERD21_VERSION:-}|usr/bin/containerd"
  "runsc-2024|runsc|bookworm-backports|0.0~20240729|${RUNSC2024_VERSION:-}|usr/bin/runsc"
)

default_mirror() {
  local uri=""
  # deb822 sources first, then one-line sources.
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    uri="$(awk '/^URIs:/{for(i=2;i<=NF;i++) if ($i ~ /\/debian\/?$/) {print $i; exit}}' \
      /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
  fi
  if [[ -z "$uri" ]]; then
    uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) {print $i; exit}}' \
      | head -n1)"
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR="${DEBIAN_MIRROR:-$(default_mirror)}"
MIRROR="${MIRROR%/}"

verify() { # dir binary -> prints version line, fails if the binary does not run
  local bin="$1/$2"
  [[ -x "$bin" ]] || return 1
  local out
  out="$("$bin" --version 2>&1)" || return 1   # containerd --version / runsc --version
  echo "${out%%$'\n'*}"
}

is_done() { # dir binary
  [[ "$FORCE" != 1 && -f "$1/.fetched-version" ]] && verify "$1" "$2" >/dev/null 2>&1
}

# Anything to do at all?
need_fetch=0
for t in "${TARGETS[@]}"; do
  IFS='|' read -r name pkg suite prefix exact bin <<<"$t"
  if ! is_done "$CACHE/$name" "$bin"; then need_fetch=1; fi
done

setup_apt() {
  mkdir -p "$APTDIR"/etc/{apt.conf.d,preferences.d,sources.list.d,trusted.gpg.d} \
           "$APTDIR"/state/lists/partial "$APTDIR"/cache/archives/partial "$APTDIR"/log "$DEBDIR"
  [[ -f "$APTDIR/state/status" ]] || : >"$APTDIR/state/status"   # empty dpkg status: nothing installed
  local arch; arch="$(dpkg --print-architecture)"
  # APT_CONFIG is read before Dir::Etc::parts, so pointing Dir::Etc at our own tree keeps
  # the system's apt.conf.d (proxies aside, e.g. docker-clean hooks) out of it.
  cat >"$APTDIR/apt.conf" <<EOF
Dir::Etc "$APTDIR/etc";
Dir::Etc::main "apt.conf";
Dir::Etc::parts "apt.conf.d";
Dir::Etc::sourcelist "sources.list";
Dir::Etc::sourceparts "sources.list.d";
Dir::Etc::preferences "preferences";
Dir::Etc::preferencesparts "preferences.d";
Dir::Etc::trusted "trusted.gpg";
Dir::Etc::trustedparts "trusted.gpg.d";
Dir::State "$APTDIR/state";
Dir::State::lists "lists/";
Dir::State::status "$APTDIR/state/status";
Dir::Cache "$APTDIR/cache";
Dir::Log "$APTDIR/log";
APT::Architecture "$arch";
APT::Architectures { "$arch"; };
APT::Sandbox::User "root";
APT::Get::AllowUnauthenticated "false";
Acquire::Languages "none";
Acquire::Retries "3";
// sid's InRelease is often past Valid-Until on proxied/snapshotted archives; the system's
// own apt config disables this check too. Signatures are still verified.
Acquire::Check-Valid-Until "false";
EOF
  # Proxy settings of the system, if any, are kept (only Acquire::*::Proxy lines).
  if apt-config dump 2>/dev/null | grep -Ei '^Acquire::(http|https)::Proxy ' >"$APTDIR/etc/apt.conf.d/50proxy.tmp"; then
    mv "$APTDIR/etc/apt.conf.d/50proxy.tmp" "$APTDIR/etc/apt.conf.d/50proxy"
  else
    rm -f "$APTDIR/etc/apt.conf.d/50proxy.tmp"
  fi
  local suites
  suites="$(for t in "${TARGETS[@]}"; do IFS='|' read -r _ _ s _ _ _ <<<"$t"; echo "$s"; done | sort -u)"
  : >"$APTDIR/etc/sources.list"
  for s in $suites; do
    echo "deb [signed-by=$KEYRING] $MIRROR $s main" >>"$APTDIR/etc/sources.list"
  done
  export APT_CONFIG="$APTDIR/apt.conf"
  log "apt-get update (private config $APT_CONFIG, mirror $MIRROR)"
  if ! apt-get -q update >"$APTDIR/update.log" 2>&1; then
    cat "$APTDIR/update.log" >&2
    die "apt-get update failed"
  fi
  grep -E '^(E|W):' "$APTDIR/update.log" >&2 || true
  if grep -qE '^E:|Failed to fetch' "$APTDIR/update.log"; then die "apt-get update failed for some suite (see $APTDIR/update.log)"; fi
}

resolve_version() { # pkg suite prefix -> exact version (newest in that suite matching prefix)
  local pkg="$1" suite="$2" prefix="$3" v
  # madison: "pkg | version | URL suite/component arch Packages", newest first.
  v="$(apt-cache madison "$pkg" | awk -F'|' -v s="$suite" -v p="$prefix" '
        { gsub(/^ +| +$/, "", $2); split($3, a, " "); split(a[2], b, "/");
          if (b[1] == s && index($2, p) == 1) { print $2; exit } }')"
  if [[ -z "$v" ]]; then
    v="$(apt-cache madison "$pkg" | awk -F'|' -v s="$suite" '
          { gsub(/^ +| +$/, "", $2); split($3, a, " "); split(a[2], b, "/");
            if (b[1] == s) { print $2; exit } }')"
    [[ -n "$v" ]] || die "no $pkg in $suite"
    log "WARNING: no $pkg $prefix* in $suite; using $v instead"
  fi
  echo "$v"
}

if [[ "$need_fetch" == 1 ]]; then
  setup_apt
fi

for t in "${TARGETS[@]}"; do
  IFS='|' read -r name pkg suite prefix exact bin <<<"$t"
  dest="$CACHE/$name"
  if is_done "$dest" "$bin"; then
    log "$name: already unpacked ($(cat "$dest/.fetched-version")), skipping"
    continue
  fi
  version="${exact:-$(resolve_version "$pkg" "$suite" "$prefix")}"
  find_deb() {
    local f
    for f in "$DEBDIR"/"${pkg}"_*.deb; do
      [[ -f "$f" && "$(dpkg-deb -f "$f" Version)" == "$version" ]] && { echo "$f"; return 0; }
    done
    return 0
  }
  deb="$(find_deb)"
  if [[ -n "$deb" ]]; then
    log "$name: reusing $(basename "$deb")"
  else
    log "$name: downloading $pkg=$version ($suite)"
    (cd "$DEBDIR" && apt-get -q download "$pkg=$version" >"$APTDIR/download-$name.log" 2>&1) || {
      cat "$APTDIR/download-$name.log" >&2; die "apt-get download $pkg=$version failed"; }
    deb="$(find_deb)"
  fi
  [[ -n "$deb" ]] || die "downloaded .deb for $pkg=$version not found in $DEBDIR"
  tmp="$dest.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  dpkg -x "$deb" "$tmp"
  echo "$pkg $version $suite $(basename "$deb")" >"$tmp/.fetched-version"
  verify "$tmp" "$bin" >/dev/null || die "$name: $bin does not run after unpacking"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  log "$name: unpacked $(basename "$deb") into $dest"
done

# Report: paths and versions (each binary is run once more here).
rc=0
for t in "${TARGETS[@]}"; do
  IFS='|' read -r name pkg suite prefix exact bin <<<"$t"
  dest="$CACHE/$name"
  if out="$(verify "$dest" "$bin")"; then
    printf '%s\t%s\t%s\t%s\n' "$name" "$dest/$bin" "$(cut -d' ' -f2 "$dest/.fetched-version")" "$out"
  else
    log "$name: $dest/$bin does not run"; rc=1
  fi
done
exit "$rc"
