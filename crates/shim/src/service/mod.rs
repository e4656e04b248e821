//! The task service: every Task API operation as a protocol-free async method.
//!
//! The process table is a map behind a short-lived lock that is never held across an await;
//! each process has its own lifecycle lock for operations that run runsc. So a slow `runsc
//! create` of one container never blocks requests for another, and the exit of a process is
//! recorded (and its event sent) only after a concurrent start has finished.

mod checkpoint;
mod create;
mod exec;
mod lifecycle;
mod memlimit;
mod query;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

pub use checkpoint::CheckpointRequest;
pub use create::CreateRequest;
pub use exec::ExecRequest;
pub use query::{ProcessEntry, ProcessStatus};
use tokio::sync::watch;

use crate::container::Container;
use crate::error::{Error, Result};
use crate::events::{Event, EventSink};
use crate::process::Process;
use crate::reaper::Reaper;

/// What Delete reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// The process's pid.
    pub pid: u32,
    /// Its exit status.
    pub exit_status: u32,
    /// When it exited (`None` if it never ran).
    pub exited_at: Option<SystemTime>,
}

/// The shim's task service.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct Options {
    /// Deadline of one runsc invocation.
    pub runsc_timeout: std::time::Duration,
    /// Where the kubelet keeps pod volumes (for gVisor's volume hints).
    pub kubelet_pods_dir: PathBuf,
    /// How long runsc may take to hand over a terminal once create/exec returned (it sends
    /// it before returning).
    pub console_timeout: std::time::Duration,
    /// How often the memory use of a pod container with a limit of its own is checked
    /// (see `memlimit`).
    pub memory_check_interval: std::time::Duration,
    /// How long runsc's figure for such a container is relied on while its sandbox holds
    /// more than the limit (see `memlimit`).
    pub memory_figure_refresh: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runsc_timeout: runsc::GlobalOpts::DEFAULT_TIMEOUT,
            kubelet_pods_dir: PathBuf::from(crate::podspec::KUBELET_PODS_DIR),
            console_timeout: std::time::Duration::from_secs(10),
            memory_check_interval: std::time::Duration::from_millis(500),
            memory_figure_refresh: std::time::Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
struct Inner {
    options: Options,
    namespace: String,
    reaper: Reaper,
    spawner: Arc<dyn runsc::Spawner>,
    events: Arc<dyn EventSink>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Ids being created (not yet in `containers`), so a duplicate create fails at once, each
    /// with its runsc root once known: runsc has no state file for it yet, and an id runsc
    /// could not tell from it must be refused in that root all the same.
    creating: Mutex<HashMap<String, Option<PathBuf>>>,
    /// Pod containers whose own memory limit the shim enforces (see `memlimit`).
    guards: Mutex<memlimit::Guards>,
    shutdown: watch::Sender<bool>,
}

impl Service {
    /// A service for containerd namespace `namespace`. All children are started through
    /// `spawner` and their exits learned from `reaper`.
    pub fn new(
        namespace: impl Into<String>,
        reaper: Reaper,
        spawner: Arc<dyn runsc::Spawner>,
        events: Arc<dyn EventSink>,
    ) -> Service {
        Self::with_options(namespace, reaper, spawner, events, Options::default())
    }

    /// Like [`Service::new`], with tunables.
    pub fn with_options(
        namespace: impl Into<String>,
        reaper: Reaper,
        spawner: Arc<dyn runsc::Spawner>,
        events: Arc<dyn EventSink>,
        options: Options,
    ) -> Service {
        Service {
            inner: Arc::new(Inner {
                options,
                namespace: namespace.into(),
                reaper,
                spawner,
                events,
                containers: Mutex::new(HashMap::new()),
                creating: Mutex::new(HashMap::new()),
                guards: Mutex::new(memlimit::Guards::default()),
                shutdown: watch::channel(false).0,
            }),
        }
    }

    /// The containerd namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Resolves when Shutdown was accepted (no tasks left).
    pub async fn shutdown_requested(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Number of tasks served.
    pub fn task_count(&self) -> usize {
        self.inner.table().len()
    }

    /// The configuration task `id` was created with.
    pub fn config_of(&self, id: &str) -> Option<crate::config::ShimConfig> {
        self.inner.table().get(id).map(|c| c.config.clone())
    }

    /// Connect: this shim's pid and the task's pid (0 for an unknown task).
    pub fn connect(&self, id: &str) -> (u32, u32) {
        let task_pid = self
            .inner
            .table()
            .get(id)
            .map_or(0, |c| c.init.snapshot().pid);
        (std::process::id(), task_pid)
    }

    /// Whether the service holds no task and is creating none.
    pub fn is_idle(&self) -> bool {
        self.inner.table().is_empty() && self.inner.creating().is_empty()
    }

    /// Shutdown: accepted (returns true) only when no task is left.
    pub fn shutdown(&self) -> bool {
        if !self.is_idle() {
            return false;
        }
        self.inner.shutdown.send_replace(true);
        true
    }
}

impl Inner {
    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn creating(&self) -> MutexGuard<'_, HashMap<String, Option<PathBuf>>> {
        self.creating.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("task {id:?} not found")))
    }

    fn publish(&self, event: Event) {
        tracing::debug!(topic = event.topic(), "event");
        self.events.publish(event);
    }

    /// The id a process has in events and State: the exec id, or the task id for init.
    fn process_id(container: &Container, process: &Process) -> String {
        process
            .exec_id
            .clone()
            .unwrap_or_else(|| container.id.clone())
    }
}

/// Bundle files of one exec.
fn exec_files(bundle: &std::path::Path, exec_id: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        bundle.join(format!("exec-{exec_id}.json")),
        bundle.join(format!("exec-{exec_id}.pid")),
        bundle.join(format!("exec-{exec_id}.ipid")),
    )
}

/// Reads a pid file (runsc writes no trailing newline).
fn read_pid(path: &std::path::Path) -> Result<i32> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read pid file {}", path.display()), e))?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            Error::InvalidArgument(format!("pid file {} holds {text:?}", path.display()))
        })
}

/// Signals whose default action is to do nothing: sending them to a process that has not
/// started yet changes nothing.
fn ignored_by_default(signal: u32) -> bool {
    [libc::SIGCHLD, libc::SIGCONT, libc::SIGURG, libc::SIGWINCH].contains(&(signal as i32))
}

fn validate_signal(signal: u32) -> Result<()> {
    // 1..=31 standard, 32..=64 real-time.
    if (1..=64).contains(&signal) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("invalid signal {signal}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        validate_signal(9).unwrap();
        validate_signal(64).unwrap();
        assert!(validate_signal(0).is_err());
        assert!(validate_signal(65).is_err());
        assert!(
            validate_signal(999)
                .unwrap_err()
                .to_string()
                .contains("invalid signal 999")
        );
        assert!(ignored_by_default(libc::SIGWINCH as u32));
        assert!(!ignored_by_default(libc::SIGTERM as u32));
    }

    #[test]
    fn pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pid");
        std::fs::write(&p, "4242").unwrap();
        assert_eq!(read_pid(&p).unwrap(), 4242);
        std::fs::write(&p, "4243\n").unwrap();
        assert_eq!(read_pid(&p).unwrap(), 4243);
        std::fs::write(&p, "-1").unwrap();
        assert!(read_pid(&p).is_err());
        assert!(read_pid(&dir.path().join("none")).is_err());
    }
}
