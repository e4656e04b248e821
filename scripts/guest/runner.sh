#!/bin/bash
# In-guest side of `scripts/guest.sh run`: installed into the guest image as
# /usr/local/sbin/runsc-shim-guest-runner and started by runsc-shim-guest.service.
#
# The host shares a job folder over 9p (mount tag runsc_job). It holds, NUL-separated:
#   shares  pairs of "9p mount tag" and "absolute path" to mount (same path as on the host),
#           each followed by "rw" or "ro"
#   env     NAME=VALUE entries to export
#   cwd     the working directory (the project checkout)
#   argv    the command and its arguments
# The runner writes into the folder:
#   started    when the shares are mounted and the command is about to start
#   output     the command's stdout and stderr (the host streams it)
#   exit-code  the command's exit status (a number, newline)
# Exit status 0 means "job done" (whatever the command returned); anything else means the
# runner itself failed. Either way the unit then powers the guest off.
set -uo pipefail

JOB=/run/runsc-shim-guest
MOUNT_OPTS="trans=virtio,version=9p2000.L,msize=512000,cache=mmap"

say() { echo "runsc-shim-guest: $*"; }
die() { say "ERROR: $*"; sync; exit 1; }

modprobe -a 9p 9pnet_virtio || die "cannot load the 9p modules"
mkdir -p "$JOB"
mount -t 9p -o "$MOUNT_OPTS" runsc_job "$JOB" || die "cannot mount the job share (tag runsc_job)"

if [[ -s "$JOB/shares" ]]; then
  while IFS= read -r -d '' tag && IFS= read -r -d '' path && IFS= read -r -d '' mode; do
    mkdir -p "$path" || die "cannot create mount point $path"
    mount -t 9p -o "$MOUNT_OPTS,$mode" "$tag" "$path" || die "cannot mount share $tag at $path"
    say "mounted $tag at $path ($mode)"
  done <"$JOB/shares"
fi

envs=() argv=() cwd=()
[[ -s "$JOB/env" ]] && mapfile -d '' -t envs <"$JOB/env"
mapfile -d '' -t argv <"$JOB/argv"
mapfile -d '' -t cwd <"$JOB/cwd"
((${#argv[@]})) || die "empty command"

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
export RUNSC_SHIM_GUEST=1
for e in "${envs[@]}"; do export "${e?}"; done
cd "${cwd[0]}" || die "cannot cd to ${cwd[0]}"

say "uptime $(cut -d' ' -f1 /proc/uptime)s: running ${argv[*]}"
cut -d' ' -f1 /proc/uptime >"$JOB/started"
# Append mode: writers that keep their own file offset (runsc 20221219 writes a container's
# stdout at offset 0 when it is a regular file) still add to the end instead of overwriting.
("${argv[@]}") >>"$JOB/output" 2>&1 </dev/null
rc=$?
say "uptime $(cut -d' ' -f1 /proc/uptime)s: command exited with $rc"
echo "$rc" >"$JOB/exit-code"
sync
exit 0
