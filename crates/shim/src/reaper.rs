//! The subreaper: the one owner of `waitpid` in the shim.
//!
//! The shim is a child subreaper, so the sandbox, gofer and exec helpers that runsc
//! daemonizes are re-parented to it and their exit statuses reach us. One task listens for
//! SIGCHLD and reaps with `waitpid(-1, WNOHANG)`; each exit goes to whoever registered for
//! that pid. Every child the shim starts itself is spawned through [`Reaper::spawn`], which
//! registers the pid before the reaper can see it exit (the registry lock is held across
//! `fork`), so no status is ever lost or stolen.
//!
//! Exits nobody has asked for yet (a sandbox can die before `runsc create` has returned its
//! pid) are kept for a while, stamped with the time they were reaped, so a later
//! [`Reaper::watch`] still sees them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use runsc::ExitStatus;
use tokio::sync::oneshot;

/// How many unclaimed exits are kept (gofers and other runsc helpers are never claimed).
const UNCLAIMED_CAPACITY: usize = 1024;
/// How long an unclaimed exit is kept.
const UNCLAIMED_TTL: Duration = Duration::from_secs(120);

/// Where exits come from: `waitpid(-1, WNOHANG)` in production, a script in tests.
pub trait WaitSource: Send + Sync + 'static {
    /// Reaps one exited child: `Some((pid, status))`, or `None` when none is waiting.
    fn reap_one(&self) -> Option<(i32, ExitStatus)>;
}

/// Reaps any child of this process.
#[derive(Debug, Default, Clone, Copy)]
pub struct WaitPid;

impl WaitSource for WaitPid {
    fn reap_one(&self) -> Option<(i32, ExitStatus)> {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    return Some((pid.as_raw(), ExitStatus::Exited(code)));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    return Some((pid.as_raw(), ExitStatus::Signaled(sig as i32)));
                }
                // Stopped/continued children are not exits; keep looking.
                Ok(WaitStatus::StillAlive) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }
}

struct Registry {
    waiters: HashMap<i32, Vec<oneshot::Sender<ExitStatus>>>,
    unclaimed: VecDeque<(i32, ExitStatus, Instant)>,
}

/// Hands out child exits. Cheap to clone.
#[derive(Clone)]
pub struct Reaper {
    registry: Arc<Mutex<Registry>>,
    source: Arc<dyn WaitSource>,
}

impl fmt::Debug for Reaper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.lock();
        f.debug_struct("Reaper")
            .field("waiters", &reg.waiters.len())
            .field("unclaimed", &reg.unclaimed.len())
            .finish()
    }
}

impl Reaper {
    /// A reaper over `source`. Nothing is reaped until [`Reaper::reap`] is called (by the
    /// SIGCHLD listener).
    pub fn new(source: Arc<dyn WaitSource>) -> Reaper {
        Reaper {
            registry: Arc::new(Mutex::new(Registry {
                waiters: HashMap::new(),
                unclaimed: VecDeque::new(),
            })),
            source,
        }
    }

    /// Makes this process a child subreaper and starts reaping on every SIGCHLD.
    pub fn start_subreaper() -> io::Result<Reaper> {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers and only changes how
        // orphaned descendants are re-parented.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let reaper = Reaper::new(Arc::new(WaitPid));
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            // Children may have exited before the handler was installed.
            r.reap();
            while sigchld.recv().await.is_some() {
                r.reap();
            }
        });
        Ok(reaper)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than losing the shim; keep serving.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reaps every exited child and delivers the statuses.
    pub fn reap(&self) {
        // `waitpid` runs under the lock so that it can never reap a child of `spawn` before
        // that child is registered.
        let mut reg = self.lock();
        while let Some((pid, status)) = self.source.reap_one() {
            tracing::trace!(pid, %status, "reaped");
            // A waiter whose receiver is gone watched an earlier process with this pid (its
            // watcher was dropped before that process was reaped here). Delivering to it
            // alone would lose the exit of the process that now has the pid, if that
            // process ended before its own watch was registered: keep the exit for it.
            let waiters = reg
                .waiters
                .remove(&pid)
                .map(|mut w| {
                    w.retain(|tx| !tx.is_closed());
                    w
                })
                .filter(|w| !w.is_empty());
            match waiters {
                Some(waiters) => {
                    for w in waiters {
                        let _ = w.send(status);
                    }
                }
                None => {
                    let now = Instant::now();
                    while reg.unclaimed.len() >= UNCLAIMED_CAPACITY
                        || reg
                            .unclaimed
                            .front()
                            .is_some_and(|e| now - e.2 > UNCLAIMED_TTL)
                    {
                        reg.unclaimed.pop_front();
                    }
                    reg.unclaimed.push_back((pid, status, now));
                }
            }
        }
    }

    /// Returns a receiver for the exit of `pid`, which was not started through this reaper
    /// (a sandbox or exec helper that runsc daemonized). Exits reaped before `since` belong to
    /// an earlier process with the same pid and are ignored.
    pub fn watch(&self, pid: i32, since: Instant) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        let mut reg = self.lock();
        if let Some(pos) = reg
            .unclaimed
            .iter()
            .rposition(|e| e.0 == pid && e.2 >= since)
            && let Some((_, status, _)) = reg.unclaimed.remove(pos)
        {
            let _ = tx.send(status);
            return rx;
        }
        let waiters = reg.waiters.entry(pid).or_default();
        waiters.retain(|tx| !tx.is_closed());
        waiters.push(tx);
        rx
    }

    /// Spawns `cmd` and registers for its exit before it can be reaped.
    pub fn spawn(
        &self,
        cmd: &mut std::process::Command,
    ) -> io::Result<(std::process::Child, oneshot::Receiver<ExitStatus>)> {
        let mut reg = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        // The pid is fresh: anything recorded under it belongs to a previous process.
        reg.unclaimed.retain(|e| e.0 != pid);
        let (tx, rx) = oneshot::channel();
        reg.waiters.entry(pid).or_default().push(tx);
        Ok((child, rx))
    }

    /// Number of unclaimed exits held (for tests and diagnostics).
    pub fn unclaimed_len(&self) -> usize {
        self.lock().unclaimed.len()
    }
}

/// Spawns runsc (and anything else) through the [`Reaper`].
#[derive(Debug, Clone)]
pub struct ReaperSpawner(pub Reaper);

impl runsc::Spawner for ReaperSpawner {
    fn spawn(&self, mut cmd: std::process::Command) -> io::Result<runsc::Spawned> {
        let (mut child, exit) = self.0.spawn(&mut cmd)?;
        Ok(runsc::Spawned {
            pid: child.id(),
            stdin: child.stdin.take().map(Into::into),
            stdout: child.stdout.take().map(Into::into),
            stderr: child.stderr.take().map(Into::into),
            exit: Box::pin(async move {
                exit.await
                    .map_err(|_| io::Error::other("reaper dropped the exit status"))
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exits are fed by the test.
    #[derive(Default)]
    struct Scripted(Mutex<VecDeque<(i32, ExitStatus)>>);

    impl WaitSource for Scripted {
        fn reap_one(&self) -> Option<(i32, ExitStatus)> {
            self.0.lock().unwrap().pop_front()
        }
    }

    fn scripted() -> (Reaper, Arc<Scripted>) {
        let s = Arc::new(Scripted::default());
        (Reaper::new(s.clone()), s)
    }

    #[tokio::test]
    async fn delivers_to_registered_waiter() {
        let (r, s) = scripted();
        let rx = r.watch(100, Instant::now());
        s.0.lock().unwrap().push_back((100, ExitStatus::Exited(7)));
        r.reap();
        assert_eq!(rx.await.unwrap(), ExitStatus::Exited(7));
        assert_eq!(r.unclaimed_len(), 0);
    }

    #[tokio::test]
    async fn exit_before_watch_is_not_lost() {
        let (r, s) = scripted();
        let since = Instant::now();
        s.0.lock()
            .unwrap()
            .push_back((200, ExitStatus::Signaled(9)));
        r.reap();
        assert_eq!(r.unclaimed_len(), 1);
        assert_eq!(r.watch(200, since).await.unwrap(), ExitStatus::Signaled(9));
        assert_eq!(r.unclaimed_len(), 0);
    }

    /// A watcher dropped before its process was reaped (a task deleted first, a watched pid
    /// that was not this process's child) must not take the exit of the next process with
    /// that pid, which may end before its own watch is registered.
    #[tokio::test]
    async fn dropped_watcher_does_not_take_a_reused_pids_exit() {
        let (r, s) = scripted();
        drop(r.watch(400, Instant::now()));
        let since = Instant::now();
        s.0.lock().unwrap().push_back((400, ExitStatus::Exited(5)));
        r.reap();
        assert_eq!(r.unclaimed_len(), 1);
        assert_eq!(r.watch(400, since).await.unwrap(), ExitStatus::Exited(5));
        // A live watcher still gets it directly.
        let rx = r.watch(401, Instant::now());
        s.0.lock().unwrap().push_back((401, ExitStatus::Exited(6)));
        r.reap();
        assert_eq!(rx.await.unwrap(), ExitStatus::Exited(6));
        assert_eq!(r.unclaimed_len(), 0);
    }

    #[tokio::test]
    async fn stale_exit_of_reused_pid_is_ignored() {
        let (r, s) = scripted();
        s.0.lock().unwrap().push_back((300, ExitStatus::Exited(1)));
        r.reap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut rx = r.watch(300, Instant::now());
        assert!(rx.try_recv().is_err(), "stale exit must not be delivered");
        s.0.lock().unwrap().push_back((300, ExitStatus::Exited(2)));
        r.reap();
        assert_eq!(rx.await.unwrap(), ExitStatus::Exited(2));
    }

    #[tokio::test]
    async fn unclaimed_exits_are_bounded() {
        let (r, s) = scripted();
        for pid in 0..(UNCLAIMED_CAPACITY as i32 + 50) {
            s.0.lock()
                .unwrap()
                .push_back((pid + 1000, ExitStatus::Exited(0)));
        }
        r.reap();
        assert_eq!(r.unclaimed_len(), UNCLAIMED_CAPACITY);
    }

    #[tokio::test]
    async fn spawned_children_are_reaped_through_the_registry() {
        // A private reaper that only reaps the pids it spawned, so this test does not steal
        // the exits of other tests' children.
        struct Only(Mutex<Vec<i32>>);
        impl WaitSource for Only {
            fn reap_one(&self) -> Option<(i32, ExitStatus)> {
                let mut pids = self.0.lock().unwrap();
                for (i, pid) in pids.iter().enumerate() {
                    let mut status = 0;
                    // SAFETY: waitpid on a specific child with a valid out-pointer.
                    let rc = unsafe { libc::waitpid(*pid, &mut status, libc::WNOHANG) };
                    if rc == *pid {
                        let pid = pids.remove(i);
                        return Some((pid, ExitStatus::from_raw(status)));
                    }
                }
                None
            }
        }
        let only = Arc::new(Only(Mutex::new(Vec::new())));
        let r = Reaper::new(only.clone());
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "exit 3"]);
        let (child, rx) = r.spawn(&mut cmd).unwrap();
        only.0.lock().unwrap().push(child.id() as i32);
        let deadline = Instant::now() + Duration::from_secs(10);
        tokio::pin!(rx);
        let status = loop {
            r.reap();
            if let Ok(status) = rx.try_recv() {
                break status;
            }
            assert!(Instant::now() < deadline, "child never reaped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(status, ExitStatus::Exited(3));
    }
}
