//! Out-of-memory detection for a sandbox.
//!
//! A gVisor sandbox is one host process tree in one cgroup (the pod cgroup, through
//! `dev.gvisor.spec.cgroup-parent`). When it goes over the memory limit the host kernel kills
//! the sandbox process itself, so every container of the pod dies; gVisor reports nothing.
//! The shim records the cgroup's OOM-kill counter when the sandbox starts and compares it when
//! the sandbox exits: if it grew, TaskOOM is published for every container of the pod before
//! their TaskExit, so CRI reports `OOMKilled` (gVisor #12838 is the Go shim getting this
//! order wrong).

use std::path::{Path, PathBuf};

/// The OOM-kill counter of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomCounter {
    /// The file holding the counter (`memory.oom_control` on cgroup v1, `memory.events` on v2).
    file: PathBuf,
    baseline: u64,
}

/// Parses `oom_kill <n>` from `memory.oom_control` (v1) or `memory.events` (v2).
fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// The memory cgroup file holding the OOM counter for process `pid`, below `cgroup_root`
/// (normally `/sys/fs/cgroup`).
fn counter_file(pid: i32, cgroup_root: &Path) -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    // cgroup v1: "4:memory:/path"; v2 (unified): "0::/path".
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            let f = cgroup_root
                .join("memory")
                .join(rel)
                .join("memory.oom_control");
            if f.exists() {
                return Some(f);
            }
        }
    }
    for line in cgroups.lines() {
        if let Some(path) = line.strip_prefix("0::") {
            let f = cgroup_root
                .join(path.trim_start_matches('/'))
                .join("memory.events");
            if f.exists() {
                return Some(f);
            }
        }
    }
    None
}

impl OomCounter {
    /// The counter of the memory cgroup process `pid` is in, with its current value as the
    /// baseline. `None` when there is no memory cgroup (or no counter in it).
    pub fn for_pid(pid: i32) -> Option<OomCounter> {
        Self::for_pid_in(pid, Path::new("/sys/fs/cgroup"))
    }

    fn for_pid_in(pid: i32, cgroup_root: &Path) -> Option<OomCounter> {
        let file = counter_file(pid, cgroup_root)?;
        let baseline = parse_oom_kill(&std::fs::read_to_string(&file).ok()?)?;
        Some(OomCounter { file, baseline })
    }

    /// Whether the kernel OOM-killed something in the cgroup since the baseline.
    pub fn fired(&self) -> bool {
        std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|t| parse_oom_kill(&t))
            .is_some_and(|n| n > self.baseline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2_counters() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            Some(3)
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn counter_of_own_process_if_any() {
        // Whatever the host has, a fresh counter has not fired.
        if let Some(c) = OomCounter::for_pid(std::process::id() as i32) {
            assert!(!c.fired());
        }
    }

    #[test]
    fn fired_when_counter_grows() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.oom_control");
        std::fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n").unwrap();
        let c = OomCounter {
            file: f.clone(),
            baseline: 0,
        };
        assert!(!c.fired());
        std::fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n").unwrap();
        assert!(c.fired());
    }
}
