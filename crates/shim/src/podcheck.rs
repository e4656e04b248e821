//! What a pod may ask for that gVisor cannot give, checked at Create so that a pod does not
//! run silently without it. Measured with runsc 20221219 and 20240729 (see
//! `docs/kubernetes-compatibility.md`):
//!
//! - **Mount propagation**: runsc refuses `linux.rootfsPropagation` `shared`/`rshared` ("root
//!   mount propagation option must specify private or slave") and a mount option
//!   `shared`/`rshared` ("mount option ... is not supported"); containerd sets both for a CRI
//!   mount with `Bidirectional` propagation. gVisor cannot make a mount done inside the sandbox
//!   appear on the host, so this stays refused, but with the mount named and the supported
//!   alternatives. `slave`/`rslave` (`HostToContainer`) and `private` are accepted by runsc.
//! - **Sysctls**: runsc ignores `linux.sysctl` (no error, nothing written: a pod asking for
//!   `kernel.shmmax` gets gVisor's value), and gVisor's `/proc/sys` has only [`GVISOR_SYSCTLS`].
//!   runc fails a container whose sysctl it cannot write. A sysctl is refused, naming it,
//!   unless it asks for what gVisor does anyway ([`GVISOR_BEHAVIOUR`]: containerd 2.x puts
//!   `net.ipv4.ip_unprivileged_port_start=0` and `net.ipv4.ping_group_range=0 2147483647` in
//!   every pod with its own network namespace).
//! - **Seccomp**: runsc applies `linux.seccomp` only with its `oci-seccomp` flag, and then
//!   only to the container's own process, never to processes started by `exec`. Most pods
//!   carry a profile (`RuntimeDefault` is the kubelet's default with `SeccompDefault`), so
//!   refusing would refuse nearly every pod: the shim logs a warning instead
//!   ([`seccomp_warning`]); gVisor's own seccomp filter on the sandbox protects the host either
//!   way. (Upstream gVisor filters exec'd processes too since March 2026, google/gvisor#12692.)

use serde_json::Value;

use crate::error::{Error, Result};

/// The files of gVisor's `/proc/sys`, as sysctl names: `find /proc/sys -type f` in a runsc
/// 20240729 container (`--network=none`, netstack; runsc 20221219 has the same less
/// `fs.nr_open`, `kernel.cap_last_cap`, `kernel.overflowgid`, `kernel.overflowuid` and
/// `kernel.random.boot_id`). Used to say which of the two reasons refuses a sysctl.
pub const GVISOR_SYSCTLS: [&str; 60] = [
    "fs.nr_open",
    "kernel.cap_last_cap",
    "kernel.hostname",
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.overflowgid",
    "kernel.overflowuid",
    "kernel.random.boot_id",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.yama.ptrace_scope",
    "net.core.default_qdisc",
    "net.core.message_burst",
    "net.core.message_cost",
    "net.core.optmem_max",
    "net.core.rmem_default",
    "net.core.rmem_max",
    "net.core.somaxconn",
    "net.core.wmem_default",
    "net.core.wmem_max",
    "net.ipv4.ip_forward",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_no_pmtu_disc",
    "net.ipv4.ip_nonlocal_bind",
    "net.ipv4.ipfrag_time",
    "net.ipv4.tcp_allowed_congestion_control",
    "net.ipv4.tcp_available_congestion_control",
    "net.ipv4.tcp_base_mss",
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_dsack",
    "net.ipv4.tcp_early_retrans",
    "net.ipv4.tcp_fack",
    "net.ipv4.tcp_fastopen",
    "net.ipv4.tcp_fastopen_key",
    "net.ipv4.tcp_invalid_ratelimit",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_mtu_probing",
    "net.ipv4.tcp_no_metrics_save",
    "net.ipv4.tcp_probe_interval",
    "net.ipv4.tcp_probe_threshold",
    "net.ipv4.tcp_recovery",
    "net.ipv4.tcp_retries1",
    "net.ipv4.tcp_retries2",
    "net.ipv4.tcp_rfc1337",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_sack",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_synack_retries",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_wmem",
    "vm.max_map_count",
    "vm.mmap_min_addr",
    "vm.overcommit_memory",
];

/// Sysctls with the value gVisor behaves as if set, whatever the host says: any user may bind
/// a port below 1024 and open an ICMP echo socket (measured in runsc 20221219 and 20240729:
/// uid 1000 listens on port 80 and opens `socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)` on a host
/// whose `ping_group_range` is `1 0`).
pub const GVISOR_BEHAVIOUR: [(&str, &str); 2] = [
    ("net.ipv4.ip_unprivileged_port_start", "0"),
    ("net.ipv4.ping_group_range", "0 2147483647"),
];

/// Checks the spec of a container for what gVisor cannot do; the error names what and why.
pub fn check(spec: &Value) -> Result<()> {
    check_propagation(spec)?;
    check_sysctls(spec)
}

fn is_shared(p: &str) -> bool {
    matches!(p, "shared" | "rshared")
}

fn check_propagation(spec: &Value) -> Result<()> {
    let root = spec
        .pointer("/linux/rootfsPropagation")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let shared: Vec<String> = spec
        .get("mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| {
            m.get("options")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().filter_map(Value::as_str).any(is_shared))
        })
        .map(|m| {
            let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
            format!("{} (from {})", field("destination"), field("source"))
        })
        .collect();
    if shared.is_empty() && !is_shared(root) {
        return Ok(());
    }
    let what = if shared.is_empty() {
        format!("root propagation {root:?}")
    } else {
        format!("mount {}", shared.join(", "))
    };
    Err(Error::InvalidArgument(format!(
        "mount propagation Bidirectional (rshared) of {what} is not supported by gVisor: \
         mounts made inside the sandbox never reach the host; use HostToContainer (rslave) \
         or None (private)"
    )))
}

/// A sysctl name with `/` separators written with dots.
fn sysctl_name(key: &str) -> String {
    key.trim_matches('/').replace('/', ".")
}

fn check_sysctls(spec: &Value) -> Result<()> {
    let Some(sysctls) = spec.pointer("/linux/sysctl").and_then(Value::as_object) else {
        return Ok(());
    };
    let mut refused = Vec::new();
    for (key, value) in sysctls {
        let name = sysctl_name(key);
        let value = value.as_str().unwrap_or_default();
        let same = GVISOR_BEHAVIOUR
            .iter()
            .any(|(k, v)| *k == name && v.split_whitespace().eq(value.split_whitespace()));
        if same {
            continue;
        }
        let why = if GVISOR_SYSCTLS.contains(&name.as_str()) {
            "runsc does not set sysctls; gVisor keeps its own value"
        } else {
            "gVisor does not implement it"
        };
        refused.push(format!("{name}={value} ({why})"));
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "sysctls not supported under gVisor: {}; remove them from the pod's securityContext",
        refused.join(", ")
    )))
}

/// The warning to log when the spec asks for a seccomp profile, given whether runsc has
/// `oci-seccomp` set; `None` without a profile.
pub fn seccomp_warning(spec: &Value, oci_seccomp: bool) -> Option<&'static str> {
    if spec.pointer("/linux/seccomp").is_none_or(Value::is_null) {
        return None;
    }
    Some(if oci_seccomp {
        "the container's seccomp profile filters its own process only: runsc before 2026-03 \
         does not apply it to processes started by exec"
    } else {
        "the container's seccomp profile is not applied: runsc applies linux.seccomp only with \
         oci-seccomp = \"true\" in [runsc_config] (and before runsc 2026-03 not to processes \
         started by exec); gVisor's own filter still protects the host"
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bidirectional_propagation_is_refused_naming_the_mount() {
        let spec = json!({
            "linux": {"rootfsPropagation": "rshared"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/mnt/shared", "type": "bind", "source": "/var/lib/kubelet/x", "options": ["rbind", "rshared", "rw"]},
            ]
        });
        let err = check(&spec).unwrap_err().to_string();
        assert!(
            err.contains("/mnt/shared (from /var/lib/kubelet/x)")
                && err.contains("Bidirectional")
                && err.contains("HostToContainer (rslave)"),
            "{err}"
        );
        let err = check(&json!({"linux": {"rootfsPropagation": "shared"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("root propagation \"shared\""), "{err}");
    }

    #[test]
    fn host_to_container_and_private_propagation_pass() {
        for p in ["rslave", "slave", "rprivate", "private", ""] {
            let spec = json!({
                "linux": {"rootfsPropagation": p},
                "mounts": [{"destination": "/m", "type": "bind", "source": "/s", "options": ["rbind", "rslave"]}]
            });
            check(&spec).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        check(&json!({})).unwrap();
    }

    #[test]
    fn sysctls_are_refused_with_the_reason_unless_gvisor_behaves_so() {
        let err = check(&json!({"linux": {"sysctl": {
            "kernel.shm_rmid_forced": "1",
            "net/core/somaxconn": "1024",
        }}}))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("kernel.shm_rmid_forced=1 (gVisor does not implement it)"),
            "{err}"
        );
        assert!(
            err.contains("net.core.somaxconn=1024 (runsc does not set sysctls"),
            "{err}"
        );
        let err = check(&json!({"linux": {"sysctl": {"fs.mqueue.msg_max": "100"}}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fs.mqueue.msg_max=100"), "{err}");
        // What containerd 2.x adds to every pod.
        check(&json!({"linux": {"sysctl": {
            "net.ipv4.ip_unprivileged_port_start": "0",
            "net.ipv4.ping_group_range": "0   2147483647",
        }}}))
        .unwrap();
        // The same sysctl with another value is not what gVisor does.
        let err =
            check(&json!({"linux": {"sysctl": {"net.ipv4.ip_unprivileged_port_start": "80"}}}))
                .unwrap_err()
                .to_string();
        assert!(err.contains("ip_unprivileged_port_start=80"), "{err}");
        check(&json!({"linux": {"sysctl": {}}})).unwrap();
    }

    #[test]
    fn the_sysctl_list_is_sysctl_names() {
        for s in GVISOR_SYSCTLS {
            assert!(!s.contains('/') && s.split('.').count() >= 2, "{s}");
        }
        assert!(GVISOR_SYSCTLS.contains(&"kernel.shmmax"));
        assert!(!GVISOR_SYSCTLS.contains(&"kernel.shm_rmid_forced"));
    }

    #[test]
    fn seccomp_profile_gets_a_warning_for_each_setting() {
        let spec = json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}}});
        assert!(
            seccomp_warning(&spec, false)
                .unwrap()
                .contains("not applied")
        );
        assert!(seccomp_warning(&spec, true).unwrap().contains("exec"));
        assert!(seccomp_warning(&json!({"linux": {}}), false).is_none());
        assert!(seccomp_warning(&json!({"linux": {"seccomp": null}}), true).is_none());
    }
}
