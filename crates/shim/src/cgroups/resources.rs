//! Pod-level resources on the pod sandbox (gVisor #13777).
//!
//! A gVisor pod is one sandbox: the pause container creates it, and runsc puts the limits of
//! that container's spec on the sandbox's host cgroup (its systemd scope, or the pod cgroup)
//! and sizes the sandbox from them. The pause spec carries no limits of its own, so the shim
//! gives it the pod's:
//!
//! - from the pod's cgroup, when the kubelet has set limits there: the kubelet computes them
//!   as the sum of the containers' limits plus the RuntimeClass's pod overhead, which covers
//!   gVisor's own memory;
//! - otherwise from the CRI annotations `io.kubernetes.cri.sandbox-memory` and
//!   `io.kubernetes.cri.sandbox-cpu-{quota,period,shares}` (containerd 1.6+ sets them from
//!   `PodSandboxConfig.Linux.Resources`, the containers' sum without overhead).
//!
//! Limits the spec already has are kept.

use serde_json::{Value, json};

use super::host::Cgroup;

/// CRI annotation: the pod's memory limit in bytes.
pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
/// CRI annotation: the pod's CFS quota (µs).
pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
/// CRI annotation: the pod's CFS period (µs).
pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
/// CRI annotation: the pod's CPU shares.
pub const SANDBOX_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";

/// The pod-level limits found for a sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodLimits {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CFS quota and period in µs.
    pub cpu_quota: Option<(u64, u64)>,
    /// CPU shares (requests).
    pub cpu_shares: Option<u64>,
}

impl PodLimits {
    /// From the pod cgroup (if any) first, then the CRI annotations of `spec`.
    pub fn find(spec: &Value, pod_cgroup: Option<&Cgroup>) -> PodLimits {
        let ann = |key: &str| -> Option<u64> {
            spec.pointer("/annotations")?
                .get(key)?
                .as_str()?
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|v| *v > 0)
        };
        let from_annotations = ann(SANDBOX_CPU_QUOTA).zip(ann(SANDBOX_CPU_PERIOD));
        PodLimits {
            memory: pod_cgroup
                .and_then(Cgroup::memory_max)
                .or_else(|| ann(SANDBOX_MEMORY)),
            cpu_quota: pod_cgroup.and_then(Cgroup::cpu_max).or(from_annotations),
            cpu_shares: ann(SANDBOX_CPU_SHARES),
        }
    }

    /// Puts the limits into `spec`'s `linux.resources` where the spec sets none (the pause
    /// container's default CPU shares give way to the pod's). Returns whether it changed.
    pub fn apply(&self, spec: &mut Value) -> bool {
        if *self == PodLimits::default() {
            return false;
        }
        let Some(linux) = spec.get_mut("linux").and_then(Value::as_object_mut) else {
            return false;
        };
        let resources = linux.entry("resources").or_insert_with(|| json!({}));
        if !resources.is_object() {
            return false;
        }
        let mut changed = false;
        let unset = |v: Option<&Value>| v.and_then(Value::as_i64).is_none_or(|l| l <= 0);
        if let Some(limit) = self.memory
            && unset(resources.pointer("/memory/limit"))
        {
            ensure_object(resources, "memory")["limit"] = Value::from(limit);
            changed = true;
        }
        if let Some((quota, period)) = self.cpu_quota
            && unset(resources.pointer("/cpu/quota"))
        {
            let cpu = ensure_object(resources, "cpu");
            cpu["quota"] = Value::from(quota);
            cpu["period"] = Value::from(period);
            changed = true;
        }
        if let Some(shares) = self.cpu_shares {
            ensure_object(resources, "cpu")["shares"] = Value::from(shares);
            changed = true;
        }
        changed
    }
}

/// `parent[key]`, made an object if it is not one.
fn ensure_object<'a>(parent: &'a mut Value, key: &str) -> &'a mut Value {
    if !parent.get(key).is_some_and(Value::is_object) {
        parent[key] = json!({});
    }
    &mut parent[key]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause_spec() -> Value {
        json!({
            "annotations": {
                "io.kubernetes.cri.container-type": "sandbox",
                SANDBOX_MEMORY: "134217728",
                SANDBOX_CPU_QUOTA: "50000",
                SANDBOX_CPU_PERIOD: "100000",
                SANDBOX_CPU_SHARES: "512",
            },
            "linux": {"resources": {"cpu": {"shares": 2}}},
        })
    }

    #[test]
    fn annotations_when_the_pod_cgroup_has_no_limits() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("cpu.max"), "max 100000\n").unwrap();
        let mut spec = pause_spec();
        let limits = PodLimits::find(&spec, Some(&Cgroup::new(dir.path())));
        assert_eq!(
            limits,
            PodLimits {
                memory: Some(128 << 20),
                cpu_quota: Some((50_000, 100_000)),
                cpu_shares: Some(512),
            }
        );
        assert!(limits.apply(&mut spec));
        assert_eq!(
            spec["linux"]["resources"],
            json!({"cpu": {"shares": 512, "quota": 50000, "period": 100000}, "memory": {"limit": 134217728}})
        );
    }

    #[test]
    fn the_pod_cgroup_wins_it_includes_the_overhead() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.max"), "201326592\n").unwrap();
        std::fs::write(dir.path().join("cpu.max"), "60000 100000\n").unwrap();
        let limits = PodLimits::find(&pause_spec(), Some(&Cgroup::new(dir.path())));
        assert_eq!(limits.memory, Some(192 << 20));
        assert_eq!(limits.cpu_quota, Some((60_000, 100_000)));
    }

    #[test]
    fn nothing_known_changes_nothing_and_own_limits_stay() {
        let mut spec = json!({"linux": {"resources": {"memory": {"limit": 1000}}}});
        assert_eq!(PodLimits::find(&spec, None), PodLimits::default());
        assert!(!PodLimits::default().apply(&mut spec));
        let limits = PodLimits {
            memory: Some(5000),
            ..PodLimits::default()
        };
        assert!(!limits.apply(&mut spec));
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 1000);
        let mut no_linux = json!({});
        assert!(!limits.apply(&mut no_linux));
    }
}
