//! Out-of-memory detection for a sandbox.
//!
//! A gVisor sandbox is one host process tree in one cgroup (the pod cgroup, through
//! `dev.gvisor.spec.cgroup-parent`, or its systemd scope). When it goes over the memory limit
//! the host kernel kills the sandbox process itself, so every container of the pod dies;
//! gVisor reports nothing. The shim records the cgroup's OOM-kill counter when the sandbox
//! starts and compares it when the sandbox exits: if it grew, TaskOOM is published for every
//! container of the pod before their TaskExit, so CRI reports `OOMKilled` (gVisor #12838 is
//! the Go shim getting this order wrong).
//!
//! On cgroup v2 the counter is also watched while the sandbox runs (inotify on
//! `memory.events`, which the kernel marks modified on every change, as containerd's own
//! OOM monitor does): systemd removes a sandbox's transient scope, and its counter with it,
//! the moment its last process exits, which can be before the exit is handled. If the scope
//! is gone before the watch could read its counter, the parent's `memory.events` decides:
//! v2 counts a child's kills in its ancestors' `memory.events` too (the pod slice, for a pod).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The OOM-kill counter of one cgroup.
#[derive(Debug)]
pub struct OomCounter {
    /// The file holding the counter (`memory.oom_control` on cgroup v1, `memory.events` on v2).
    file: PathBuf,
    baseline: u64,
    /// v2: the parent cgroup's `memory.events` and its count at the baseline, read when the
    /// cgroup itself is gone.
    parent: Option<(PathBuf, u64)>,
    /// Set by the watch when the counter grew while the sandbox ran.
    seen: Arc<AtomicBool>,
    watch: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for OomCounter {
    fn drop(&mut self) {
        if let Some(w) = self.watch.take() {
            w.abort();
        }
    }
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
    memory_cgroup_file(pid, cgroup_root, "memory.oom_control", "memory.events")
}

/// The file holding the memory charged to the cgroup of process `pid` (everything the host
/// counts against its limit): `memory.usage_in_bytes` on cgroup v1, `memory.current` on v2.
pub fn usage_file(pid: i32) -> Option<PathBuf> {
    memory_cgroup_file(
        pid,
        Path::new(crate::cgroups::host::CGROUP_ROOT),
        "memory.usage_in_bytes",
        "memory.current",
    )
}

/// Reads a file holding one number (`memory.current`, `memory.usage_in_bytes`).
pub fn read_number(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// File `v1` of the v1 memory cgroup of process `pid`, or else file `v2` of its v2 cgroup,
/// whichever exists.
fn memory_cgroup_file(pid: i32, cgroup_root: &Path, v1: &str, v2: &str) -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    // cgroup v1: "4:memory:/path"; v2 (unified): "0::/path".
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            let f = cgroup_root.join("memory").join(rel).join(v1);
            if f.exists() {
                return Some(f);
            }
        }
    }
    for line in cgroups.lines() {
        if let Some(path) = line.strip_prefix("0::") {
            let f = cgroup_root.join(path.trim_start_matches('/')).join(v2);
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
        Self::from_file(counter_file(pid, cgroup_root)?)
    }

    /// The counter in `file`, watched if it is a v2 `memory.events`.
    fn from_file(file: PathBuf) -> Option<OomCounter> {
        let baseline = read_count(&file)?;
        let v2 = file.ends_with("memory.events");
        let parent = if v2 {
            file.parent()
                .and_then(Path::parent)
                .map(|dir| dir.join("memory.events"))
                .and_then(|f| read_count(&f).map(|n| (f, n)))
        } else {
            None
        };
        let mut counter = OomCounter {
            file,
            baseline,
            parent,
            seen: Arc::new(AtomicBool::new(false)),
            watch: None,
        };
        if v2 {
            counter.watch = watch(
                &counter.file,
                baseline,
                counter.parent.clone(),
                counter.seen.clone(),
            );
        }
        Some(counter)
    }

    /// Whether the kernel OOM-killed something in the cgroup since the baseline.
    pub fn fired(&self) -> bool {
        self.seen.load(Ordering::SeqCst) || grew(&self.file, self.baseline, self.parent.as_ref())
    }
}

fn read_count(file: &Path) -> Option<u64> {
    parse_oom_kill(&std::fs::read_to_string(file).ok()?)
}

/// Whether the counter in `file` grew past `baseline`; when `file` is gone (its cgroup was
/// removed), whether the parent's did.
fn grew(file: &Path, baseline: u64, parent: Option<&(PathBuf, u64)>) -> bool {
    match read_count(file) {
        Some(n) => n > baseline,
        None => parent.is_some_and(|(f, base)| read_count(f).is_some_and(|n| n > *base)),
    }
}

/// An inotify instance for tokio's `AsyncFd`, which wants `AsRawFd`.
struct InotifyFd(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsFd::as_fd(&self.0).as_raw_fd()
    }
}

/// Watches a v2 `memory.events` file: `seen` is set when its `oom_kill` grows past
/// `baseline`. Ends when the cgroup goes (inotify's IN_IGNORED) or when aborted.
fn watch(
    file: &Path,
    baseline: u64,
    parent: Option<(PathBuf, u64)>,
    seen: Arc<AtomicBool>,
) -> Option<tokio::task::JoinHandle<()>> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    inotify.add_watch(file, AddWatchFlags::IN_MODIFY).ok()?;
    // SAFETY: the descriptor belongs to the `Inotify` moved into the `AsyncFd`; it stays open
    // and the same for the `AsyncFd`'s whole life (closed only when both are dropped).
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            InotifyFd(inotify),
            tokio::io::Interest::READABLE,
        )
    }
    .ok()?;
    let file = file.to_path_buf();
    Some(tokio::spawn(async move {
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return;
            };
            let events = match ready.get_inner().0.read_events() {
                Ok(events) => events,
                Err(nix::errno::Errno::EAGAIN) => {
                    ready.clear_ready();
                    continue;
                }
                Err(_) => return,
            };
            if grew(&file, baseline, parent.as_ref()) {
                seen.store(true, Ordering::SeqCst);
                return;
            }
            if events
                .iter()
                .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
            {
                return;
            }
        }
    }))
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

    /// The counter is seen growing even if its cgroup is gone by the time the exit is handled
    /// (systemd removes a transient scope as soon as it is empty).
    #[tokio::test]
    async fn v2_growth_is_seen_before_the_cgroup_goes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n").unwrap();
        let c = OomCounter::from_file(f.clone()).unwrap();
        assert!(c.watch.is_some());
        assert!(!c.fired());
        std::fs::write(&f, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !c.seen.load(Ordering::SeqCst) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watch never saw the kill"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        std::fs::remove_file(&f).unwrap();
        assert!(c.fired());
    }

    #[test]
    fn fired_when_counter_grows() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.oom_control");
        std::fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n").unwrap();
        let c = OomCounter {
            file: f.clone(),
            baseline: 0,
            parent: None,
            seen: Arc::new(AtomicBool::new(false)),
            watch: None,
        };
        assert!(!c.fired());
        std::fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n").unwrap();
        assert!(c.fired());
    }

    /// The scope went before its counter could be read: the parent's counter (which counts
    /// its children's kills on v2) decides, against its own baseline.
    #[tokio::test]
    async fn v2_kill_in_a_removed_cgroup_is_seen_in_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let scope = dir.path().join("cri-containerd-x.scope");
        std::fs::create_dir(&scope).unwrap();
        let parent = dir.path().join("memory.events");
        let own = scope.join("memory.events");
        std::fs::write(&parent, "oom 2\noom_kill 2\n").unwrap();
        std::fs::write(&own, "oom 0\noom_kill 0\n").unwrap();
        let c = OomCounter::from_file(own.clone()).unwrap();
        // Gone with no kill anywhere: not fired.
        std::fs::remove_file(&own).unwrap();
        assert!(!c.fired());
        // The parent counted one more (the scope's, whose own file is gone).
        std::fs::write(&parent, "oom 3\noom_kill 3\n").unwrap();
        assert!(c.fired());
    }
}
