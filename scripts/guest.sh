#!/usr/bin/env bash
# A cgroup v2 + systemd test host for the shim: a Debian 12 guest under qemu.
#
# This machine (and CI's) is cgroup v1 without systemd as PID 1, so the shim's cgroup v2 and
# systemd-cgroup paths are tested in a guest that has both (kernel 6.1, systemd 252 as PID 1,
# unified cgroup hierarchy), like an EKS AL2023 or Bottlerocket node.
#
#   scripts/guest.sh image [--rebuild]
#       Build the guest image (or reuse the cached one) and print its folder. The image is
#       made with mmdebstrap from Debian's archive (packages by name only, so it works offline
#       with just the archive) into /var/cache/runsc-shim-guest/image-<key>/:
#         rootfs.img (raw ext4, never modified)  vmlinuz  initrd.img  packages.txt  recipe.txt
#       <key> hashes the package list and the recipe (the build functions of this script and
#       the files in scripts/guest/), so a changed recipe builds a new image by itself and
#       older images are removed. .debs are kept in /var/cache/runsc-shim-guest/debs.
#
#   scripts/guest.sh run [--timeout SECS] [--env NAME=VALUE]... [--share HOSTDIR]... -- CMD [ARG]...
#       Boot the image (building it first if needed) and run CMD as root in the guest, with
#       cwd = this checkout. Prints CMD's output (stdout and stderr together) while it runs and
#       exits with CMD's exit status; 124 if the timeout (default 3600 s, boot included) hits,
#       125 if the guest failed (did not boot, runner error). On any non-zero result the guest
#       console log is kept in /tmp/runsc-shim-guest/ and its path and last lines are printed
#       to stderr. Nothing else is left behind (qemu is killed on exit, Ctrl-C or timeout).
#       Shared over 9p at the same absolute path as on the host:
#         - this checkout, read-write (run host-built target/ binaries, write results there),
#         - /var/cache/runsc-shim-e2e read-only if present (scripts/fetch-runtimes.sh output),
#         - each --share HOSTDIR, read-write.
#       In the guest: containerd.service is installed but not enabled, /usr/bin/runsc is
#       Debian's 20221219 build, the job runs in runsc-shim-guest.service (Delegate=yes) with
#       RUNSC_SHIM_GUEST=1 in its environment. 9p mounts cannot be overlayfs upper dirs: keep
#       containerd/runsc state on the guest's own disk (/var/lib, /run, /tmp).
#
# Host tools come from apt by package name: mmdebstrap and e2fsprogs for the image,
# qemu-system-x86 for run (taken from <codename>-backports when the installed qemu packages
# are backports, e.g. qemu-utils 1:10.0, through a private APT_CONFIG; /etc/apt is never
# edited). Nothing is installed when the tools are already there.
#
# Acceleration: KVM only where /proc/cpuinfo has vmx or svm (a PVM-only /dev/kvm cannot boot a
# stock kernel), else qemu's TCG (-accel tcg,thread=multi -cpu max): boot to command 16-20 s.
#
# Environment overrides:
#   GUEST_CACHE (/var/cache/runsc-shim-guest)  GUEST_LOG_DIR (/tmp/runsc-shim-guest)
#   E2E_CACHE (/var/cache/runsc-shim-e2e)      GUEST_MEM (4G)  GUEST_SMP (2)
#   GUEST_ACCEL (auto | kvm | tcg)             GUEST_BOOT_TIMEOUT (300 s until the job starts)
#   GUEST_APPEND (extra kernel command line)   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR
#   DEBIAN_KEYRING (/usr/share/keyrings/debian-archive-keyring.gpg)
# Must run as root. Concurrent runs cannot corrupt the cache: an image build holds an
# exclusive flock on it, a run a shared one until its qemu has exited.
set -euo pipefail

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
SCRIPTS="$(dirname "$SELF")"
GUEST_FILES="$SCRIPTS/guest"
CHECKOUT="$(cd "$SCRIPTS/.." && pwd -P)"

CACHE="${GUEST_CACHE:-/var/cache/runsc-shim-guest}"
LOG_DIR="${GUEST_LOG_DIR:-/tmp/runsc-shim-guest}"
E2E_CACHE="${E2E_CACHE:-/var/cache/runsc-shim-e2e}"
GUEST_MEM="${GUEST_MEM:-4G}"
GUEST_SMP="${GUEST_SMP:-2}"
GUEST_ACCEL="${GUEST_ACCEL:-auto}"
BOOT_TIMEOUT="${GUEST_BOOT_TIMEOUT:-300}"
KEYRING="${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
DEFAULT_TIMEOUT=3600

# ---- the image recipe: these variables and functions, plus scripts/guest/*, make the cache key ----

SUITE=bookworm
GUEST_DISK_SIZE=8G   # sparse; the cached file takes only what is used (about 1 GB)
GUEST_PACKAGES=(
  systemd systemd-sysv dbus udev mount kmod util-linux procps iproute2 iptables ca-certificates
  linux-image-amd64 initramfs-tools zstd
  containerd runc runsc busybox-static containernetworking-plugins
)

# Runs inside mmdebstrap's customize phase (via `guest.sh __customize ROOT`), before its
# cleanup: configure the guest for unattended test runs.
customize_rootfs() {
  local root="$1"
  echo runsc-guest >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\trunsc-guest\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    >"$root/etc/hosts"
  # Root is mounted by the initrd; no fsck (the disk is a throw-away snapshot anyway).
  printf '/dev/vda\t/\text4\trw,noatime,errors=remount-ro\t0\t0\n' >"$root/etc/fstab"
  install -D -m 0755 "$GUEST_FILES/runner.sh" "$root/usr/local/sbin/runsc-shim-guest-runner"
  install -D -m 0644 "$GUEST_FILES/runsc-shim-guest.service" \
    "$root/etc/systemd/system/runsc-shim-guest.service"
  chroot "$root" systemctl enable runsc-shim-guest.service
  # Tests start private containerds; one test restarts the system one through systemctl.
  chroot "$root" systemctl disable containerd.service
  # Nothing periodic during a test.
  local unit
  for unit in apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer; do
    if [[ -e "$root/lib/systemd/system/$unit" ]]; then chroot "$root" systemctl disable "$unit"; fi
  done
  mkdir -p "$root/etc/systemd/journald.conf.d"
  printf '[Journal]\nStorage=volatile\n' >"$root/etc/systemd/journald.conf.d/volatile.conf"
  # Needed at run time: 9p (shares), virtio_blk in the initrd (root disk).
  local kver
  kver="$(basename "$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -type d | sort -V | tail -n 1)")"
  chroot "$root" modinfo -k "$kver" 9p 9pnet_virtio virtio_blk ext4 >/dev/null
  local initrd_files
  initrd_files="$(chroot "$root" lsinitramfs "/boot/initrd.img-$kver")"
  [[ "$initrd_files" == *"/virtio_blk.ko"* ]] || die "the initrd has no virtio_blk"
  chroot "$root" dpkg-query -W >"$root/.guest-packages.txt"
}

# Builds image files into $1 (an empty folder on the cache's file system).
build_image() {
  local out="$1" root="$1/root" debs_in="$CACHE/debs" debs_out="$1/debs"
  local mirror security
  mirror="${DEBIAN_MIRROR:-$(system_mirror debian)}"
  security="${DEBIAN_SECURITY_MIRROR:-$(system_mirror debian-security)}"
  mkdir -p "$debs_in" "$debs_out"
  # shellcheck disable=SC2016 # "$1" in hooks is expanded by mmdebstrap's hook shell
  local opts=(
    --mode=root --format=directory --variant=apt
    --include="$(IFS=,; echo "${GUEST_PACKAGES[*]}")"
    --aptopt='Acquire::Check-Valid-Until "false"' --aptopt='Acquire::Languages "none"'
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt=force-unsafe-io
    # Keep the .debs: in from the cache, back out to a fresh folder (no stale ones pile up).
    --skip=essential/unlink
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/'
    --setup-hook="sync-in $debs_in /var/cache/apt/archives/"
    --customize-hook="sync-out /var/cache/apt/archives $debs_out"
    --customize-hook="$(printf '%q' "$SELF") __customize \"\$1\""
  )
  local proxy
  while IFS= read -r proxy; do opts+=(--aptopt="$proxy"); done < <(host_apt_proxies)
  log "mmdebstrap $SUITE (mirror $mirror, security $security)"
  mmdebstrap "${opts[@]}" "$SUITE" "$root" \
    "deb [signed-by=$KEYRING] $mirror $SUITE main" \
    "deb [signed-by=$KEYRING] $mirror $SUITE-updates main" \
    "deb [signed-by=$KEYRING] $security $SUITE-security main" \
    >"$out/mmdebstrap.log" 2>&1 || { tail -n 40 "$out/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
  local kernel initrd
  kernel="$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)"
  initrd="$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)"
  [[ -n "$kernel" && -n "$initrd" ]] || die "no kernel or initrd in the guest's /boot"
  cp "$kernel" "$out/vmlinuz"
  cp "$initrd" "$out/initrd.img"
  mv "$root/.guest-packages.txt" "$out/packages.txt"
  log "mkfs.ext4 ($GUEST_DISK_SIZE sparse, $(du -sh --one-file-system "$root" | cut -f1) used)"
  mkfs.ext4 -q -F -L runsc-guest -d "$root" "$out/rootfs.img" "$GUEST_DISK_SIZE" >"$out/mkfs.log" 2>&1 \
    || { cat "$out/mkfs.log" >&2; die "mkfs.ext4 failed"; }
  chmod 0444 "$out/rootfs.img"
  remove_tree "$root"
}

# ---- end of recipe ----

log() { echo "guest: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() { # [exit status]: 2 (to stderr) unless asked for help (0, to stdout)
  local rc="${1:-2}"
  if [[ "$rc" == 0 ]]; then exec 3>&1; else exec 3>&2; fi
  sed -n '/^#   scripts\/guest.sh/,/^#$/p' "$SELF" | sed 's/^# \{0,1\}//' >&3
  exit "$rc"
}

# First archive URI of the system's Debian sources whose path ends in /$1 (debian or
# debian-security), else deb.debian.org's.
system_mirror() {
  local name="$1" uri=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    uri="$(awk -v n="$name" '/^URIs:/{for(i=2;i<=NF;i++) if ($i ~ ("/" n "/?$")) {print $i; exit}}' \
      /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)"
  fi
  if [[ -z "$uri" ]]; then
    uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk -v n="$name" '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ ("^https?://.*/" n "/?$")) {print $i; exit}}' \
      | head -n 1)"
  fi
  uri="${uri:-http://deb.debian.org/$name}"
  echo "${uri%/}"
}

# The system's apt proxy settings, if any, as apt.conf lines.
host_apt_proxies() {
  apt-config dump 2>/dev/null | grep -Ei '^Acquire::(http|https)::Proxy ' || true
}

# rm -rf that never crosses into a mounted file system (a build root may still have
# /proc, /sys or /dev mounted if mmdebstrap was killed).
remove_tree() {
  local dir="$1" m
  [[ -e "$dir" ]] || return 0
  while read -r m; do umount -l "$m" 2>/dev/null || true; done \
    < <(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r)
  rm -rf --one-file-system "$dir"
}

# ---- host packages ----

apt_install() { # PKG... (system apt configuration; apt-get update once if a name is unknown)
  local out="$CACHE/host-apt.log"
  mkdir -p "$CACHE"
  log "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "$@" >"$out" 2>&1; then
    apt-get update -q >>"$out" 2>&1 || true
    apt-get install -y -q --no-install-recommends "$@" >>"$out" 2>&1 \
      || { tail -n 30 "$out" >&2; die "apt-get install $* failed (log: $out)"; }
  fi
}

# qemu-system-x86 from the suite of the qemu packages already installed: bookworm's qemu 7.2
# conflicts with e.g. qemu-utils 1:10.0 from bookworm-backports, so then take it from there too.
install_qemu() {
  local bpo codename
  bpo="$(dpkg-query -W -f '${Status} ${Package} ${Version}\n' 'qemu*' 2>/dev/null \
    | awk '$3 == "installed" && $5 ~ /~bpo/ {print $4 " " $5}' | head -n 1)"
  if [[ -z "$bpo" ]]; then
    apt_install qemu-system-x86
    return
  fi
  codename="$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release | tr -d '"')"
  [[ -n "$codename" ]] || die "cannot tell the Debian codename from /etc/os-release"
  log "installed $bpo is from backports: taking qemu-system-x86 from $codename-backports"
  # Private APT_CONFIG: the system's sources plus backports, own lists and package caches;
  # everything else (dpkg status, archives, apt.conf.d) is the system's.
  local d="$CACHE/host-apt" f
  rm -rf "$d"
  mkdir -p "$d/sources.list.d" "$d/lists/partial"
  : >"$d/sources.list"
  [[ -f /etc/apt/sources.list ]] && ln -s /etc/apt/sources.list "$d/sources.list.d/00-system.list"
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] && ln -s "$f" "$d/sources.list.d/$(basename "$f")"
  done
  echo "deb [signed-by=$KEYRING] $(system_mirror debian) $codename-backports main" \
    >"$d/sources.list.d/zz-backports.list"
  cat >"$d/apt.conf" <<EOF
Dir::Etc::sourcelist "$d/sources.list";
Dir::Etc::sourceparts "$d/sources.list.d";
Dir::State::lists "$d/lists/";
Dir::Cache::pkgcache "$d/pkgcache.bin";
Dir::Cache::srcpkgcache "$d/srcpkgcache.bin";
EOF
  local out="$d/apt.log"
  export APT_CONFIG="$d/apt.conf" DEBIAN_FRONTEND=noninteractive
  log "apt-get update + install -t $codename-backports qemu-system-x86 (APT_CONFIG=$APT_CONFIG)"
  { apt-get update -q && apt-get install -y -q --no-install-recommends -t "$codename-backports" qemu-system-x86; } \
    >"$out" 2>&1 || { tail -n 30 "$out" >&2; die "installing qemu-system-x86 failed (log: $out)"; }
  unset APT_CONFIG
  rm -rf "$d/lists" "$d"/*.bin
}

ensure_image_tools() {
  local pkgs=()
  command -v mmdebstrap >/dev/null || pkgs+=(mmdebstrap)
  command -v mkfs.ext4 >/dev/null || pkgs+=(e2fsprogs)
  if ((${#pkgs[@]})); then apt_install "${pkgs[@]}"; fi
}

ensure_qemu() {
  command -v qemu-system-x86_64 >/dev/null || install_qemu
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found after installing qemu-system-x86"
}

# ---- the image cache ----

image_key() {
  {
    declare -p SUITE GUEST_DISK_SIZE GUEST_PACKAGES
    declare -f customize_rootfs build_image
    cat "$GUEST_FILES/runner.sh" "$GUEST_FILES/runsc-shim-guest.service"
  } | sha256sum | cut -c1-16
}

image_ok() { [[ -f "$1/.complete" && -f "$1/rootfs.img" && -f "$1/vmlinuz" && -f "$1/initrd.img" ]]; }

# Sets IMAGE_DIR to a complete image for the current recipe, building it if needed, and
# returns holding a shared lock on the cache (fd 9) that keeps builds (and the pruning of old
# images) away for as long as this process and its children (qemu) live.
ensure_image() {
  local rebuild="${1:-0}"
  [[ "$CACHE" != *[[:space:],]* ]] || die "GUEST_CACHE must not contain whitespace or commas: $CACHE"
  mkdir -p "$CACHE"
  IMAGE_DIR="$CACHE/image-$(image_key)"
  exec 9>>"$CACHE/.lock"
  flock -s 9
  if [[ "$rebuild" != 1 ]] && image_ok "$IMAGE_DIR"; then return 0; fi
  if ! flock -n -x 9; then
    log "waiting for the image lock (another guest.sh is running or building)"
    flock -x 9
  fi
  if [[ "$rebuild" == 1 ]] || ! image_ok "$IMAGE_DIR"; then
    local start=$SECONDS tmp d
    for d in "$CACHE"/build.*; do remove_tree "$d"; done   # left by a killed build
    tmp="$CACHE/build.$$"
    mkdir -p "$tmp"
    BUILD_DIR="$tmp"
    ensure_image_tools
    log "building the guest image $(basename "$IMAGE_DIR") (takes a few minutes)"
    build_image "$tmp"
    { echo "built $(date -u +%FT%TZ) by $SELF"; declare -p SUITE GUEST_DISK_SIZE GUEST_PACKAGES; } >"$tmp/recipe.txt"
    rm -rf "$CACHE/debs.old"
    if [[ -d "$CACHE/debs" ]]; then mv "$CACHE/debs" "$CACHE/debs.old"; fi
    mkdir -p "$CACHE/debs"
    find "$tmp/debs" -maxdepth 1 -name '*.deb' -exec mv -t "$CACHE/debs" {} +
    rm -rf "$tmp/debs" "$CACHE/debs.old"
    touch "$tmp/.complete"
    for d in "$CACHE"/image-*; do remove_tree "$d"; done   # older recipes (and this one, if rebuilt)
    mv "$tmp" "$IMAGE_DIR"
    BUILD_DIR=""
    log "image built in $((SECONDS - start)) s: $IMAGE_DIR ($(du -sh "$IMAGE_DIR" | cut -f1) on disk)"
  fi
  flock -s 9
}

# ---- run ----

QEMU_PID="" TAIL_PID="" WATCH_PID="" JOB_DIR="" BUILD_DIR=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$WATCH_PID" ]]; then kill "$WATCH_PID" 2>/dev/null || true; fi
  if [[ -n "$QEMU_PID" ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill -TERM "$QEMU_PID" 2>/dev/null || true
    local tries=10
    while ((tries-- > 0)) && kill -0 "$QEMU_PID" 2>/dev/null; do sleep 0.5; done
    kill -KILL "$QEMU_PID" 2>/dev/null || true
  fi
  if [[ -n "$QEMU_PID" ]]; then wait "$QEMU_PID" 2>/dev/null || true; fi
  if [[ -n "$TAIL_PID" ]]; then kill "$TAIL_PID" 2>/dev/null || true; wait "$TAIL_PID" 2>/dev/null || true; fi
  if [[ -n "$WATCH_PID" ]]; then wait "$WATCH_PID" 2>/dev/null || true; fi
  if [[ -n "$JOB_DIR" ]]; then rm -rf "$JOB_DIR"; rmdir "$LOG_DIR" 2>/dev/null || true; fi
  if [[ -n "$BUILD_DIR" ]]; then
    # A failed build still keeps the .debs it downloaded for the next try.
    if [[ -d "$BUILD_DIR/debs" ]]; then
      find "$BUILD_DIR/debs" -maxdepth 1 -name '*.deb' -exec mv -n -t "$CACHE/debs" {} + 2>/dev/null || true
    fi
    remove_tree "$BUILD_DIR"
  fi
  exit "$rc"
}

qemu_escape() { printf '%s' "${1//,/,,}"; }   # a comma in a qemu option value is doubled

keep_console() { # reason
  local kept
  mkdir -p "$LOG_DIR"
  kept="$LOG_DIR/console-$(date +%Y%m%d-%H%M%S)-$$.log"
  mv "$JOB_DIR/console.log" "$kept" 2>/dev/null || : >"$kept"
  if [[ -s "$JOB_DIR/qemu.log" ]]; then { echo "--- qemu's own output:"; cat "$JOB_DIR/qemu.log"; } >>"$kept"; fi
  log "$1; guest console kept in $kept, its last lines:"
  tail -n 40 "$kept" | sed 's/\r$//; s/\x1b\[[0-9;]*m//g; s/^/  | /' >&2
}

cmd_run() {
  local timeout="$DEFAULT_TIMEOUT" envs=() extra=()
  while (($#)); do
    case "$1" in
      --timeout) [[ $# -ge 2 ]] || usage; timeout="$2"; shift 2 ;;
      --timeout=*) timeout="${1#*=}"; shift ;;
      --env) [[ $# -ge 2 ]] || usage; envs+=("$2"); shift 2 ;;
      --env=*) envs+=("${1#*=}"); shift ;;
      --share) [[ $# -ge 2 ]] || usage; extra+=("$2"); shift 2 ;;
      --share=*) extra+=("${1#*=}"); shift ;;
      --) shift; break ;;
      *) log "unknown option: $1"; usage ;;
    esac
  done
  (($#)) || { log "no command given"; usage; }
  [[ "$timeout" =~ ^[1-9][0-9]*$ ]] || die "--timeout needs a positive number of seconds: $timeout"
  local e
  for e in "${envs[@]}"; do
    [[ "$e" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env needs NAME=VALUE: $e"
  done

  # Shares: host path -> same path in the guest. Parents sort before their children.
  local -A mode=([$CHECKOUT]=rw)
  local s p
  if [[ -d "$E2E_CACHE" ]]; then
    mode[$(readlink -f "$E2E_CACHE")]=ro
  else
    log "note: $E2E_CACHE does not exist (scripts/fetch-runtimes.sh fills it); not shared"
  fi
  for s in "${extra[@]}"; do
    [[ -d "$s" ]] || die "--share $s: not a directory"
    p="$(readlink -f "$s")"
    [[ "$p" != / ]] || die "--share /: cannot share the root"
    mode[$p]=rw
  done

  trap cleanup EXIT
  trap 'log interrupted; exit 130' INT
  trap 'log terminated; exit 143' TERM
  ensure_image
  ensure_qemu

  mkdir -p "$LOG_DIR"
  JOB_DIR="$(mktemp -d "$LOG_DIR/job.XXXXXX")"
  local job="$JOB_DIR/job"
  mkdir -p "$job" "$JOB_DIR/tmp"
  printf '%s\0' "$@" >"$job/argv"
  printf '%s\0' "$CHECKOUT" >"$job/cwd"
  if ((${#envs[@]})); then printf '%s\0' "${envs[@]}" >"$job/env"; else : >"$job/env"; fi
  : >"$job/shares"
  : >"$job/output"

  local virtfs=(-virtfs "local,path=$(qemu_escape "$job"),mount_tag=runsc_job,security_model=none,multidevs=remap")
  local n=0 ro
  while IFS= read -r -d '' p; do
    ro=""
    [[ "${mode[$p]}" == ro ]] && ro=",readonly=on"
    virtfs+=(-virtfs "local,path=$(qemu_escape "$p"),mount_tag=share$n,security_model=none,multidevs=remap$ro")
    printf '%s\0%s\0%s\0' "share$n" "$p" "${mode[$p]}" >>"$job/shares"
    n=$((n + 1))
  done < <(printf '%s\0' "${!mode[@]}" | sort -z)

  local accel=(-accel "tcg,thread=multi" -cpu max)
  case "$GUEST_ACCEL" in
    kvm) accel=(-accel kvm -cpu host) ;;
    tcg) ;;
    auto) if grep -qwE 'vmx|svm' /proc/cpuinfo && [[ -w /dev/kvm ]]; then accel=(-accel kvm -cpu host); fi ;;
    *) die "GUEST_ACCEL must be auto, kvm or tcg" ;;
  esac

  local append="root=/dev/vda rw rootfstype=ext4 console=ttyS0,115200 panic=1 net.ifnames=0"
  append+=" systemd.unified_cgroup_hierarchy=1 runsc_shim_guest.job=1 ${GUEST_APPEND:-}"
  local qemu=(
    qemu-system-x86_64 -name runsc-shim-guest -machine q35 "${accel[@]}"
    -m "$GUEST_MEM" -smp "$GUEST_SMP"
    -nodefaults -no-user-config -display none -monitor none -no-reboot
    -serial "file:$(qemu_escape "$JOB_DIR/console.log")"
    -kernel "$IMAGE_DIR/vmlinuz" -initrd "$IMAGE_DIR/initrd.img" -append "$append"
    -drive "file=$IMAGE_DIR/rootfs.img,format=raw,if=virtio,snapshot=on,cache=unsafe"
    -device virtio-rng-pci
    "${virtfs[@]}"
  )
  log "booting the guest (${accel[*]}, $GUEST_MEM, $GUEST_SMP CPUs) to run: ${*@Q}"
  local t0
  t0="$(date +%s.%N)"
  # -snapshot's overlay goes to $TMPDIR: the job folder, removed at exit.
  TMPDIR="$JOB_DIR/tmp" "${qemu[@]}" </dev/null >"$JOB_DIR/qemu.log" 2>&1 &
  QEMU_PID=$!
  tail -n +1 -f --pid="$QEMU_PID" "$job/output" &
  TAIL_PID=$!
  # Watchdog: the overall timeout, and the boot timeout until the runner has started.
  (
    trap - EXIT INT TERM
    start=$SECONDS
    while sleep 1; do
      why=""
      if ((SECONDS - start >= timeout)); then why="timeout"
      elif [[ ! -e "$job/started" ]] && ((SECONDS - start >= BOOT_TIMEOUT)); then why="boot-timeout"
      fi
      if [[ -n "$why" ]]; then
        echo "$why" >"$JOB_DIR/why"
        kill -TERM "$QEMU_PID" 2>/dev/null || exit 0
        sleep 5
        kill -KILL "$QEMU_PID" 2>/dev/null || true
        exit 0
      fi
    done
  ) &
  WATCH_PID=$!

  local start=$SECONDS qrc=0
  wait "$QEMU_PID" || qrc=$?
  QEMU_PID=""
  kill "$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
  WATCH_PID=""
  wait "$TAIL_PID" 2>/dev/null || true   # tail exits within a second of qemu
  TAIL_PID=""

  local rc why="" boot=""
  why="$(cat "$JOB_DIR/why" 2>/dev/null || true)"
  if [[ -e "$job/started" ]]; then   # host seconds from qemu's start to the command's
    boot="$(awk -v a="$t0" -v b="$(stat -c %.3Y "$job/started")" 'BEGIN {printf "%.1f", b - a}')"
  fi
  if [[ "$why" == timeout ]]; then
    keep_console "timed out after $timeout s (guest killed)"
    rc=124
  elif [[ "$why" == boot-timeout ]]; then
    keep_console "the guest did not start the command within $BOOT_TIMEOUT s"
    rc=125
  elif [[ -s "$job/exit-code" ]]; then
    rc="$(cat "$job/exit-code")"
    log "command exited with $rc (started ${boot} s after qemu, $((SECONDS - start)) s in all)"
    if [[ "$rc" != 0 ]]; then keep_console "the command failed with exit status $rc"; fi
  else
    keep_console "the guest ended without reporting an exit status (qemu exit status $qrc)"
    rc=125
  fi
  exit "$rc"
}

cmd_image() {
  local rebuild=0
  case "${1:-}" in
    --rebuild) rebuild=1 ;;
    "") ;;
    *) usage ;;
  esac
  trap cleanup EXIT
  trap 'log interrupted; exit 130' INT
  trap 'log terminated; exit 143' TERM
  ensure_image "$rebuild"
  echo "$IMAGE_DIR"
}

case "${1:-}" in
  image | run | __customize) [[ "$(id -u)" == 0 ]] || die "run as root" ;;
esac
case "${1:-}" in
  image) shift; cmd_image "$@" ;;
  run) shift; cmd_run "$@" ;;
  __customize) shift; customize_rootfs "$@" ;;   # internal: mmdebstrap's customize hook
  -h | --help | help) usage 0 ;;
  *) usage ;;
esac
