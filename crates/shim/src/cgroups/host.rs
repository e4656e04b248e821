//! The host's cgroups as the shim reads them: the hierarchy in use, whether systemd manages
//! it, a process's cgroup, and the files of a cgroup v2 directory.

use std::path::{Path, PathBuf};

/// Where the cgroup hierarchy is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether `/sys/fs/cgroup` is the unified (v2) hierarchy.
pub fn is_v2() -> bool {
    is_v2_at(Path::new(CGROUP_ROOT))
}

fn is_v2_at(root: &Path) -> bool {
    // The unified hierarchy has cgroup.controllers at its root; v1 and hybrid do not.
    root.join("cgroup.controllers").is_file()
}

/// Whether systemd manages the host's cgroups (the check systemd's own `sd_booted` makes,
/// and runc's and runsc's).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The cgroup v2 directory of process `pid` (the `0::` line of `/proc/<pid>/cgroup`).
pub fn v2_cgroup_of(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new(CGROUP_ROOT).join(rel.trim().trim_start_matches('/')))
}

/// Moves process `pid` into the cgroup v2 directory `cgroup`.
pub fn move_to(cgroup: &Path, pid: i32) -> std::io::Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), pid.to_string())
}

/// A cgroup v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dir: PathBuf,
}

/// CPU time of a cgroup (`cpu.stat`), in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// `usage_usec`.
    pub usage: u64,
    /// `user_usec`.
    pub user: u64,
    /// `system_usec`.
    pub system: u64,
}

impl Cgroup {
    /// The cgroup at `dir` (not checked).
    pub fn new(dir: impl Into<PathBuf>) -> Cgroup {
        Cgroup { dir: dir.into() }
    }

    /// The cgroup of process `pid`, on a v2 host.
    pub fn of_pid(pid: i32) -> Option<Cgroup> {
        is_v2()
            .then(|| v2_cgroup_of(pid))
            .flatten()
            .map(Cgroup::new)
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(file)).ok()
    }

    /// `cpu.stat`.
    pub fn cpu_time(&self) -> Option<CpuTime> {
        let text = self.read("cpu.stat")?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        };
        Some(CpuTime {
            usage: field("usage_usec")?,
            user: field("user_usec").unwrap_or(0),
            system: field("system_usec").unwrap_or(0),
        })
    }

    /// The memory limit in force: the smallest `memory.max` of this cgroup and its
    /// ancestors (a pod's limit often sits on the pod's cgroup, above the sandbox's).
    /// `None`: unlimited.
    pub fn effective_memory_max(&self) -> Option<u64> {
        self.ancestors_min("memory.max")
    }

    /// The task limit in force (`pids.max`, smallest up the tree); `None`: unlimited.
    pub fn effective_pids_max(&self) -> Option<u64> {
        self.ancestors_min("pids.max")
    }

    /// `memory.max` of this cgroup alone; `None` when unlimited or unreadable.
    pub fn memory_max(&self) -> Option<u64> {
        parse_max(&self.read("memory.max")?)
    }

    /// `cpu.max` of this cgroup alone: (quota, period) in microseconds; `None` when
    /// unlimited or unreadable.
    pub fn cpu_max(&self) -> Option<(u64, u64)> {
        let text = self.read("cpu.max")?;
        let mut it = text.split_whitespace();
        let quota = it.next()?.parse().ok()?;
        let period = it.next()?.parse().ok()?;
        Some((quota, period))
    }

    fn ancestors_min(&self, file: &str) -> Option<u64> {
        let root = Path::new(CGROUP_ROOT);
        let mut dir = Some(self.dir.as_path());
        let mut min: Option<u64> = None;
        while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
            if let Some(v) = std::fs::read_to_string(d.join(file))
                .ok()
                .and_then(|t| parse_max(&t))
            {
                min = Some(min.map_or(v, |m| m.min(v)));
            }
            dir = d.parent();
        }
        min
    }
}

/// A `*.max` file: a number, or `max` for none.
fn parse_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" | "" => None,
        v => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v2_files() {
        let dir = tempfile::tempdir().unwrap();
        let cg = Cgroup::new(dir.path());
        std::fs::write(
            dir.path().join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("memory.max"), "67108864\n").unwrap();
        std::fs::write(dir.path().join("cpu.max"), "50000 100000\n").unwrap();
        assert_eq!(
            cg.cpu_time(),
            Some(CpuTime {
                usage: 1500,
                user: 1000,
                system: 500
            })
        );
        assert_eq!(cg.memory_max(), Some(64 << 20));
        assert_eq!(cg.cpu_max(), Some((50_000, 100_000)));
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(cg.memory_max(), None);
        assert_eq!(cg.cpu_max(), None);
        assert_eq!(Cgroup::new(dir.path().join("none")).cpu_time(), None);
    }

    #[test]
    fn own_cgroup_when_v2() {
        if is_v2() {
            let me = std::process::id() as i32;
            assert!(Cgroup::of_pid(me).unwrap().dir().is_dir());
        } else {
            assert_eq!(Cgroup::of_pid(std::process::id() as i32), None);
        }
        assert!(!is_v2_at(Path::new("/nonexistent")));
    }
}
