//! Statistics from runsc, completed from the host cgroup.
//!
//! `runsc events --stats` reports what gVisor's sentry counts per container: CPU time, memory
//! in use and tasks. It leaves the rest 0: user and system CPU time, and every limit
//! (gVisor #13067, and the Go shim's v2 metrics copy those zeros). The host knows them:
//!
//! - a container of its own (`ctr run`) is the whole sandbox, so its CPU time is its host
//!   cgroup's `cpu.stat`;
//! - a container of a pod gets the sentry's figure, split into user and system time in the
//!   proportion the pod's sandbox shows on the host;
//! - the memory limit is the container's own (from its spec, what runc would put in its
//!   `memory.max`), else the one in force on the sandbox's cgroup (the smallest `memory.max`
//!   up the tree), else none, reported as `u64::MAX` as runc reports `max` (a 0 would read as
//!   "no memory available" to the kubelet);
//! - the task limit likewise, from the spec or `pids.max`.

use super::host::Cgroup;

/// The limits a container's spec sets (`linux.resources`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecLimits {
    /// `memory.limit`, bytes.
    pub memory: Option<u64>,
    /// `pids.limit`.
    pub pids: Option<u64>,
}

impl SpecLimits {
    /// From an OCI spec document.
    pub fn from_spec(spec: &serde_json::Value) -> SpecLimits {
        let positive = |ptr: &str| {
            spec.pointer(ptr)
                .and_then(serde_json::Value::as_i64)
                .and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v > 0)
        };
        SpecLimits {
            memory: positive("/linux/resources/memory/limit"),
            pids: positive("/linux/resources/pids/limit"),
        }
    }
}

/// Completes `s`, runsc's sample of one container. `whole_sandbox`: the container is its
/// sandbox's only one (its host cgroup holds nothing else). `sandbox`: the sandbox's host
/// cgroup (v2), when known.
pub fn complete(
    s: &mut runsc::Stats,
    whole_sandbox: bool,
    own: SpecLimits,
    sandbox: Option<&Cgroup>,
) {
    if let Some(host) = sandbox.and_then(Cgroup::cpu_time) {
        let usage = &mut s.cpu.usage;
        if whole_sandbox {
            usage.total = host.usage.saturating_mul(1000);
            usage.user = host.user.saturating_mul(1000);
            usage.kernel = host.system.saturating_mul(1000);
        } else if usage.user == 0 && usage.kernel == 0 && host.usage > 0 {
            let share = |part: u64| {
                let v = u128::from(usage.total) * u128::from(part) / u128::from(host.usage);
                u64::try_from(v).unwrap_or(u64::MAX)
            };
            (usage.user, usage.kernel) = (share(host.user), share(host.system));
        }
    }
    if s.memory.usage.limit == 0 {
        s.memory.usage.limit = own
            .memory
            .or_else(|| sandbox.and_then(Cgroup::effective_memory_max))
            .unwrap_or(u64::MAX);
    }
    if s.pids.limit == 0 {
        s.pids.limit = own
            .pids
            .or_else(|| sandbox.and_then(Cgroup::effective_pids_max))
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cgroup(dir: &std::path::Path) -> Cgroup {
        std::fs::write(
            dir.join("cpu.stat"),
            "usage_usec 4000\nuser_usec 3000\nsystem_usec 1000\n",
        )
        .unwrap();
        Cgroup::new(dir)
    }

    fn sample(total_ns: u64) -> runsc::Stats {
        let mut s = runsc::Stats::default();
        s.cpu.usage.total = total_ns;
        s.memory.usage.usage = 5 << 20;
        s
    }

    #[test]
    fn a_container_of_its_own_is_its_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sample(1);
        complete(
            &mut s,
            true,
            SpecLimits::default(),
            Some(&cgroup(dir.path())),
        );
        assert_eq!(
            (s.cpu.usage.total, s.cpu.usage.user, s.cpu.usage.kernel),
            (4_000_000, 3_000_000, 1_000_000)
        );
        // No limit anywhere (the temp dir is outside /sys/fs/cgroup): unlimited.
        assert_eq!(s.memory.usage.limit, u64::MAX);
        assert_eq!(s.pids.limit, 0);
    }

    #[test]
    fn a_pod_container_splits_its_own_time_like_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sample(2_000_000);
        let own = SpecLimits::from_spec(&serde_json::json!({
            "linux": {"resources": {"memory": {"limit": 67108864}, "pids": {"limit": 64}}}
        }));
        complete(&mut s, false, own, Some(&cgroup(dir.path())));
        assert_eq!(
            (s.cpu.usage.total, s.cpu.usage.user, s.cpu.usage.kernel),
            (2_000_000, 1_500_000, 500_000)
        );
        assert_eq!(s.memory.usage.limit, 64 << 20);
        assert_eq!(s.pids.limit, 64);
    }

    #[test]
    fn runsc_figures_are_kept_when_present() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sample(2_000_000);
        s.cpu.usage.user = 7;
        s.memory.usage.limit = 99;
        complete(
            &mut s,
            false,
            SpecLimits::default(),
            Some(&cgroup(dir.path())),
        );
        assert_eq!((s.cpu.usage.user, s.cpu.usage.kernel), (7, 0));
        assert_eq!(s.memory.usage.limit, 99);
        // Without a host cgroup only the spec can help.
        let mut s = sample(5);
        let own = SpecLimits {
            memory: Some(1000),
            pids: None,
        };
        complete(&mut s, true, own, None);
        assert_eq!((s.cpu.usage.total, s.memory.usage.limit), (5, 1000));
    }
}
