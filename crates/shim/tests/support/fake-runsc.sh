#!/bin/sh
# --root is the sandbox's runsc root (<base>/<ns>/<sandbox>): runsc's state files go there,
# as `<id>_sandbox:<sandbox>.state`. The test's control files and the fake's bookkeeping live in
# the namespace directory above it ($ctl).
root=""; log=""
for a in "$@"; do case "$a" in --root=*) root="${a#--root=}";; --log=*) log="${a#--log=}";; esac; done
# A test picks the version by writing it next to the fake.
[ "$1" = --version ] && { cat "$(dirname "$0")/version" 2>/dev/null || echo "runsc version fake"; exit 0; }
ctl="$(dirname "$root")"; sb="$(basename "$root")"
sub=""
for a in "$@"; do case "$a" in --*) ;; *) sub="$a"; break;; esac; done
last=""; prev=""
for a in "$@"; do prev="$last"; last="$a"; done
mkdir -p "$ctl"
echo "$sub $last" >> "$ctl/calls"
fail() { printf '{"msg":"%s","level":"error","time":"t"}' "$1" >> "$log"; echo "$1" >&2; exit 128; }
[ -f "$ctl/fail-$sub" ] && fail "$(cat "$ctl/fail-$sub")"
[ -f "$ctl/hang-$sub" ] && exec sleep 1000
[ -f "$ctl/garbage-$sub" ] && { echo '{not json'; exit 0; }
# Like runsc: an id names the one container whose id it is a prefix of.
resolve() {
  n=0; full=""
  for f in "$root/$1"*_sandbox:*.state; do
    [ -e "$f" ] || continue; n=$((n+1)); b="${f##*/}"; full="${b%%_sandbox:*}"
  done
  [ "$n" -gt 1 ] && fail "loading container \\\"$1\\\": id \\\"$1\\\" is ambiguous and could refer to multiple containers"
  [ "$n" -eq 0 ] && fail "loading container \\\"$1\\\": file does not exist"
  echo "$full"
}
# Runs "$@" in the background as a grandchild and sets $bg to its pid. The subshell exits at
# once, so the process is re-parented to the shim (as runsc's daemonized helpers are); as a
# child of this shell it could be reaped by the shell (which reaps exited background jobs
# whenever it likes) before the shim saw its exit.
background() { ( "$@" & echo $! > "$ctl/bg.$$" ); bg=$(cat "$ctl/bg.$$"); rm -f "$ctl/bg.$$"; }
case "$sub" in
create)
  id="$last"
  # Held by the test: a create in flight, runsc's state file not written yet.
  while [ -f "$ctl/hold-create" ]; do sleep 0.02; done
  for a in "$@"; do case "$a" in --pid-file=*) pidfile="${a#--pid-file=}";; esac; done
  (
    while [ ! -f "$ctl/$id.started" ]; do sleep 0.02; done
    if [ -f "$ctl/$id.exit" ]; then exit "$(cat "$ctl/$id.exit")"; fi
    exec sleep 1000
  ) </dev/null >/dev/null 2>&1 &
  printf '%s' $! > "$pidfile"
  printf '%s' $! > "$ctl/$id.pid"
  echo '{}' > "$root/${id}_sandbox:$sb.state"
  # A failure after runsc made the container (its sandbox process runs).
  [ -f "$ctl/fail-after-create" ] && fail "$(cat "$ctl/fail-after-create")"
  ;;
start) id="$(resolve "$last")" || exit 128; touch "$ctl/$id.started" ;;
kill)
  id="$(resolve "$prev")" || exit 128
  target=""
  for a in "$@"; do case "$a" in --pid=*) target="${a#--pid=}";; esac; done
  bypid="$target"
  if [ -z "$target" ]; then
    target=$(cat "$ctl/$id.pid" 2>/dev/null)
    # SIGKILL to the container ends the processes exec'd into it too, as in a real sandbox.
    [ "$last" = 9 ] && for p in $(cat "$ctl/$id.execs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  fi
  [ -n "$target" ] && kill -"$last" "$target" 2>/dev/null || fail "sandbox is not running"
  # What the container's `runsc wait` reports: killed by this signal.
  [ -n "$bypid" ] || echo "$last" > "$ctl/$id.signal" ;;
delete)
  id="$(resolve "$last")" || exit 128
  # The sandbox and, as with a real sandbox, every process exec'd into it.
  for pid in $(cat "$ctl/$id.pid" "$ctl/$id.execs" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  rm -f "$ctl/$id.pid" "$ctl/$id.started" "$ctl/$id.execs" "$ctl/$id.signal" "$root/${id}_sandbox:"*.state ;;
ps) id="$(resolve "$last")" || exit 128; printf '[1'; for p in $(cat "$ctl/$id.execs" 2>/dev/null); do printf ',%s' "$p"; done; echo ']' ;;
events)
  id="$(resolve "$last")" || exit 128
  # A test sets the container's memory usage in <id>.memory.
  mem=$(cat "$ctl/$id.memory" 2>/dev/null || echo 0)
  echo '{"type":"stats","id":"x","data":{"cpu":{"usage":{"total":5}},"memory":{"usage":{"usage":'"$mem"'}},"pids":{"current":2}}}' ;;
wait)
  # Until the container's process is gone (reaped, or a zombie): 128 + the signal it was
  # killed with, else the code the test chose.
  id="$(resolve "$last")" || exit 128
  pid=$(cat "$ctl/$id.pid" 2>/dev/null)
  while [ -n "$pid" ] && [ -e "/proc/$pid" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]; do sleep 0.02; done
  code=$(cat "$ctl/$id.exit" 2>/dev/null || echo 0)
  [ -f "$ctl/$id.signal" ] && code=$((128 + $(cat "$ctl/$id.signal")))
  echo '{"id":"'"$id"'","exitStatus":'"$code"'}' ;;
pause|resume|update) resolve "$last" >/dev/null || exit 128 ;;
exec)
  id="$(resolve "$last")" || exit 128
  for a in "$@"; do case "$a" in --pid-file=*) pf="${a#--pid-file=}";; --internal-pid-file=*) ipf="${a#--internal-pid-file=}";; --process=*) proc="${a#--process=}";; esac; done
  if grep -q '"exit5"' "$proc"; then background sh -c 'sleep 0.1; exit 5' </dev/null >/dev/null 2>&1
  # More output than a pipe holds, to the stdio runsc was given, then exit.
  elif grep -q '"flood"' "$proc"; then background head -c 100000 /dev/zero </dev/null
  else background sleep 1000 </dev/null >/dev/null 2>&1; fi
  # The helper's host pid doubles as the "pid inside the sandbox".
  printf '%s' "$bg" > "$pf"; printf '%s' "$bg" > "$ipf"; echo "$bg" >> "$ctl/$id.execs" ;;
checkpoint)
  id="$(resolve "$last")" || exit 128
  img=""; lr=""
  for a in "$@"; do case "$a" in --image-path=*) img="${a#--image-path=}";; --leave-running) lr=1;; esac; done
  echo "image of $id" > "$img/checkpoint.img"
  # Without --leave-running the sandbox exits.
  [ -z "$lr" ] && kill -9 "$(cat "$ctl/$id.pid")" 2>/dev/null
  : ;;
restore)
  id="$last"; img=""; pidfile=""
  for a in "$@"; do case "$a" in --image-path=*) img="${a#--image-path=}";; --pid-file=*) pidfile="${a#--pid-file=}";; esac; done
  grep -q "^image of\|^gVisorSF" "$img/checkpoint.img" 2>/dev/null || fail "reading metadata from statefile: bad magic header"
  if [ -f "$ctl/$id.pid" ]; then
    touch "$ctl/$id.started"
  else
    # No prior create (runsc 20221219): restore makes the sandbox.
    sleep 1000 </dev/null >/dev/null 2>&1 &
    printf '%s' $! > "$pidfile"; printf '%s' $! > "$ctl/$id.pid"
    echo '{}' > "$root/${id}_sandbox:$sb.state"
  fi ;;
*) echo "Usage: runsc <flags> <subcommand> <subcommand args>" >&2; exit 128 ;;
esac
exit 0
