#!/bin/sh
# Entry point of the installer image (Dockerfile.installer), run by installer-daemonset.yaml
# in a privileged pod with hostPID and the host's /etc/containerd and /usr/local/bin mounted at
# the same paths.
#
#   ACTION=install (default): install the shim and runsc, add the `runsc` runtime to
#     containerd's config (restarting containerd only if the config changed), then label the
#     node runsc.gvisor.dev/installed=true.
#   ACTION=uninstall: remove the label first (no new gVisor pods get scheduled here), then
#     remove the runtime from containerd's config and the shim binary.
#
# Then it sleeps until the pod is deleted, so the DaemonSet does not restart it.
#
# Environment: NODE_NAME (required, from the downward API), ACTION, and the paths below.
set -eu

ACTION=${ACTION:-install}
SHIM=${SHIM:-/opt/runsc-shim/bin/containerd-shim-runsc-v1}
RUNSC=${RUNSC:-/opt/runsc/runsc}
BIN_DIR=${BIN_DIR:-/usr/local/bin}
CONTAINERD_CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
RUNSC_CONFIG=${RUNSC_CONFIG:-/etc/containerd/runsc.toml}
LABEL=runsc.gvisor.dev/installed

log() {
    printf '%s install-node: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

sleeper=
on_term() {
    log "terminating (the node is left as it is)"
    if [ -n "$sleeper" ]; then
        kill "$sleeper" 2>/dev/null || true
    fi
    exit 0
}
# The shell runs a trap only after the command in progress has finished, so SIGTERM never
# interrupts the installer half-way (only the kubelet's SIGKILL after the grace period can).
trap on_term TERM INT

: "${NODE_NAME:?NODE_NAME must be set (downward API: spec.nodeName)}"

case "$ACTION" in
    install)
        log "installing on node $NODE_NAME"
        "$SHIM" install \
            --bin-dir "$BIN_DIR" \
            --containerd-config "$CONTAINERD_CONFIG" \
            --runsc-config "$RUNSC_CONFIG" \
            --runsc "$RUNSC" \
            --restart
        kubectl label node "$NODE_NAME" "$LABEL=true" --overwrite
        ;;
    uninstall)
        log "uninstalling from node $NODE_NAME"
        kubectl label node "$NODE_NAME" "$LABEL-"
        "$SHIM" uninstall \
            --bin-dir "$BIN_DIR" \
            --containerd-config "$CONTAINERD_CONFIG" \
            --restart
        ;;
    *)
        log "unknown ACTION '$ACTION' (expected install or uninstall)"
        exit 2
        ;;
esac

log "done; sleeping until the pod is deleted"
sleep infinity &
sleeper=$!
wait "$sleeper"
