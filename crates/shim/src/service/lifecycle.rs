//! Start, Kill, Delete, Wait and exit handling.

use std::sync::Arc;

use runsc::{DeleteOpts, ExitStatus, FailureKind, KillOpts, StdioFds};
use tokio::sync::oneshot;

use super::{Deleted, Inner, Service, ignored_by_default, validate_signal};
use crate::container::Container;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::io::Closing;
use crate::process::{Exit, Process, Status};

/// How long an init exit waits for the exits of its container's execs.
const EXEC_EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Service {
    /// Start the init process (empty `exec_id`) or an exec.
    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let c = self.inner.container(id)?;
        if !exec_id.is_empty() {
            return Box::pin(self.inner.start_exec(&c, exec_id)).await;
        }
        let p = c.init.clone();
        let _lifecycle = p.lifecycle.lock().await;
        let status = p.snapshot().status;
        if status != Status::Created {
            return Err(Error::FailedPrecondition(format!(
                "cannot start task {id}: it is {status:?}"
            )));
        }
        if let Some(restore) = &c.restore {
            return Box::pin(self.inner.start_restored(&c, restore)).await;
        }
        let stdio = start_stdio(&c);
        let since = std::time::Instant::now();
        c.runsc
            .start(id, stdio)
            .await
            .map_err(|e| Error::runsc(format!("start task {id}"), e))?;
        let pid = {
            let mut st = p.state();
            st.transition(Status::Running)?;
            st.pid
        };
        self.inner.publish(Event::Start {
            container_id: id.to_owned(),
            pid,
        });
        if !c.kind.is_root() {
            place_gofer(&c);
            self.inner.watch_sub_container(c.clone(), since);
            self.inner.guard_memory(c.clone());
        }
        Ok(pid)
    }

    /// Kill: sends `signal` to the process (`all`: every process of the container).
    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        validate_signal(signal)?;
        let c = self.inner.container(id)?;
        let p = c.process(exec_id)?;
        let _lifecycle = p.lifecycle.lock().await;
        let st = p.snapshot();
        let already = || Error::NotFound("process already finished".into());
        match (st.status, exec_id.is_empty()) {
            (Status::Stopped | Status::Deleted, _) => Err(already()),
            (Status::Created, false) => Err(Error::FailedPrecondition(format!(
                "exec {exec_id} has not been started"
            ))),
            (Status::Created, true) => {
                // runsc refuses to signal a created container; runc would deliver the signal
                // to the waiting init, which dies of it. Do the same: remove the container
                // and report it killed by the signal.
                if ignored_by_default(signal) {
                    return Ok(());
                }
                self.inner
                    .runsc_delete(&c)
                    .await
                    .map_err(|e| Error::runsc(format!("kill created task {id}"), e))?;
                self.inner.finish(&c, &p, 128 + signal).await;
                Ok(())
            }
            (Status::Running | Status::Paused, false) => {
                let internal = st.internal_pid.ok_or_else(already)?;
                let opts = KillOpts {
                    all: false,
                    pid: Some(internal),
                };
                c.runsc
                    .kill(id, signal, opts)
                    .await
                    .map_err(|e| match e.kind() {
                        FailureKind::NotRunning | FailureKind::NotFound => already(),
                        _ => Error::runsc(format!("kill exec {exec_id} of task {id}"), e),
                    })
            }
            (Status::Running | Status::Paused, true)
                if !ignored_by_default(signal) && self.inner.restore_pending(&c).is_some() =>
            {
                self.inner.end_pending_restore(&c, signal);
                Ok(())
            }
            (Status::Running | Status::Paused, true) => {
                if st.status == Status::Paused {
                    // runsc signals only running containers. SIGKILL must work on a paused
                    // container (containerd kills paused tasks that way), so resume first.
                    if signal != libc::SIGKILL as u32 {
                        return Err(Error::FailedPrecondition(format!(
                            "task {id} is paused: only SIGKILL can be delivered"
                        )));
                    }
                    self.inner.resume_locked(&c).await?;
                }
                c.runsc
                    .kill(id, signal, KillOpts { all, pid: None })
                    .await
                    .map_err(|e| match e.kind() {
                        FailureKind::NotRunning | FailureKind::NotFound => already(),
                        _ => Error::runsc(format!("kill task {id}"), e),
                    })
            }
        }
    }

    /// Wait: until the process exits.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let p = self.inner.container(id)?.process(exec_id)?;
        Ok(p.wait().await)
    }

    /// Delete: removes a stopped (or never started) process. Deleting the init process
    /// removes the task: the runsc container, its stdio and its rootfs mount.
    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<Deleted> {
        let c = self.inner.container(id)?;
        if !exec_id.is_empty() {
            return self.inner.delete_exec(&c, exec_id).await;
        }
        let p = c.init.clone();
        let _lifecycle = p.lifecycle.lock().await;
        match p.snapshot().status {
            Status::Running | Status::Paused => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot delete task {id} while it is running; kill it first"
                )));
            }
            Status::Deleted => return Err(Error::NotFound(format!("task {id:?} not found"))),
            Status::Created => {
                self.inner
                    .runsc_delete(&c)
                    .await
                    .map_err(|e| Error::runsc(format!("delete task {id}"), e))?;
                self.inner.finish(&c, &p, 128 + libc::SIGKILL as u32).await;
            }
            Status::Stopped => {}
        }
        if let Err(e) = self.inner.runsc_delete(&c).await
            && e.kind() != FailureKind::NotFound
        {
            return Err(Error::runsc(format!("delete task {id}"), e));
        }
        c.runsc.remove_stale_lock(id, &c.sandbox_id);
        // The last container of a sandbox takes the sandbox's runsc root with it.
        c.runsc.remove_root_if_unused();
        // Every process's stdio winds down at once, none under a lock.
        let closing: Vec<_> = c
            .exec_list()
            .iter()
            .chain(std::iter::once(&p))
            .filter_map(|p| p.close_io())
            .collect();
        Closing::wait_all(closing).await;
        if let Some(rootfs) = &c.mounted_rootfs {
            crate::mount::unmount_all(rootfs)?;
        }
        let st = {
            let mut st = p.state();
            st.transition(Status::Deleted)?;
            st.clone()
        };
        self.inner.table().remove(id);
        let exit = st.exit.unwrap_or(Exit {
            status: 0,
            at: std::time::SystemTime::now(),
        });
        self.inner.publish(Event::Delete {
            container_id: id.to_owned(),
            pid: st.pid,
            exit_status: exit.status,
            exited_at: exit.at,
        });
        Ok(Deleted {
            pid: st.pid,
            exit_status: exit.status,
            exited_at: Some(exit.at),
        })
    }
}

impl Inner {
    /// `runsc delete --force` of container `c`, if runsc still has it under its exact id.
    /// runsc resolves ids by prefix: once `we` is gone, `runsc delete --force we` would delete
    /// a sibling `web`.
    pub(super) async fn runsc_delete(
        &self,
        c: &Container,
    ) -> std::result::Result<(), runsc::Error> {
        if !c.runsc.has_container(&c.id, &c.sandbox_id) {
            tracing::debug!(id = %c.id, "runsc has no such container: nothing to delete");
            return Ok(());
        }
        c.runsc.delete(&c.id, DeleteOpts { force: true }).await
    }

    /// Records the exit of `p` once its status arrives. For the root container of a sandbox
    /// the exit of the sandbox also ends every container of the pod.
    pub(super) fn watch_exit(
        self: &Arc<Self>,
        c: Arc<Container>,
        p: Arc<Process>,
        exit: oneshot::Receiver<ExitStatus>,
    ) {
        let inner = self.clone();
        tokio::spawn(async move {
            let status = match exit.await {
                Ok(status) => status.code(),
                Err(_) => 255,
            };
            let sandbox_exit = c.kind.is_root() && p.exec_id.is_none();
            if sandbox_exit {
                inner.sandbox_exited(&c).await;
            }
            if p.exec_id.is_none() {
                inner.execs_exit_first(&c).await;
            }
            // Deliver the output first, without holding the lifecycle lock.
            if let Some(closing) = p.drain_io() {
                closing.wait().await;
            }
            let _lifecycle = p.lifecycle.lock().await;
            inner.finish(&c, &p, status).await;
        });
    }

    /// containerd takes the init process's TaskExit as the end of the task: the exits of its
    /// execs must come first (runc's shim holds the init exit back the same way). Execs die
    /// with their container, so this waits for the running ones, but never long: an exec that
    /// outlives its container's init is reported when it ends.
    async fn execs_exit_first(&self, c: &Container) {
        let deadline = tokio::time::Instant::now() + EXEC_EXIT_GRACE;
        for e in c.exec_list() {
            if matches!(e.snapshot().status, Status::Running | Status::Paused) {
                let _ = tokio::time::timeout_at(deadline, e.wait()).await;
            }
        }
    }

    /// The sandbox of root container `root` is gone: the containers of its pod are gone too
    /// (runsc cannot tell their statuses any more). If the kernel OOM-killed the sandbox,
    /// every container still running gets TaskOOM before its TaskExit.
    async fn sandbox_exited(&self, root: &Arc<Container>) {
        let members: Vec<Arc<Container>> = self
            .table()
            .values()
            .filter(|m| !m.kind.is_root() && m.sandbox_id == root.id)
            .cloned()
            .collect();
        let running = |c: &Container| {
            matches!(
                c.init.snapshot().status,
                Status::Running | Status::Paused | Status::Created
            )
        };
        if root.oom.as_ref().is_some_and(|o| o.fired()) {
            tracing::warn!(sandbox = %root.id, "sandbox was killed for exceeding its memory limit");
            for c in members
                .iter()
                .map(AsRef::as_ref)
                .chain(std::iter::once(root.as_ref()))
            {
                if running(c) {
                    self.publish(Event::Oom {
                        container_id: c.id.clone(),
                    });
                }
            }
        }
        for m in members {
            if running(&m) {
                let _lifecycle = m.init.lifecycle.lock().await;
                self.finish(&m, &m.init, 128 + libc::SIGKILL as u32).await;
            }
        }
    }

    /// Learns the exit of a later container of a pod. With a pid namespace of its own, its
    /// gofer exits when it does: one `runsc wait` then reads the status (runsc keeps it until
    /// the container is deleted), and no process waits alongside the container. Otherwise
    /// (shared process namespace, or no gofer pid) a `runsc wait` runs for the container's
    /// lifetime.
    pub(super) fn watch_sub_container(
        self: &Arc<Self>,
        c: Arc<Container>,
        since: std::time::Instant,
    ) {
        let inner = self.clone();
        let gofer = if c.own_pid_ns {
            c.runsc.gofer_pid(&c.id, &c.sandbox_id)
        } else {
            None
        };
        if gofer.is_none() {
            tracing::info!(
                id = %c.id,
                own_pid_ns = c.own_pid_ns,
                "no gofer to watch: waiting with a runsc wait helper"
            );
        }
        let gofer_exit = gofer.map(|pid| self.reaper.watch(pid, since));
        tokio::spawn(async move {
            let timeout = match gofer_exit {
                Some(exit) => {
                    let _ = exit.await;
                    Some(std::time::Duration::from_secs(10))
                }
                None => None,
            };
            let status = match c.runsc.wait(&c.id, timeout).await {
                Ok(r) => r.exit_status,
                Err(e) => {
                    // The sandbox is gone. Its root container's exit ends this container
                    // (and knows whether it was an OOM kill): let it.
                    tracing::info!(id = %c.id, error = %e, "runsc wait failed");
                    let root = inner.table().get(&c.sandbox_id).cloned();
                    if let Some(root) = root {
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(10),
                            root.init.wait(),
                        )
                        .await;
                    }
                    128 + libc::SIGKILL as u32
                }
            };
            let p = c.init.clone();
            if let Some(closing) = p.drain_io() {
                closing.wait().await;
            }
            let _lifecycle = p.lifecycle.lock().await;
            inner.finish(&c, &p, status).await;
        });
    }

    /// Records an exit and publishes TaskExit (once). The caller holds the lifecycle lock.
    pub(super) async fn finish(&self, c: &Container, p: &Process, status: u32) {
        if let Some(closing) = p.drain_io() {
            closing.wait().await;
        }
        let pid = p.snapshot().pid;
        if let Some(exit) = p.set_exited(status) {
            tracing::info!(id = %c.id, exec_id = p.exec_id.as_deref().unwrap_or(""), status, "process exited");
            self.publish(Event::Exit {
                container_id: c.id.clone(),
                id: Self::process_id(c, p),
                pid,
                exit_status: exit.status,
                exited_at: exit.at,
            });
        }
    }
}

/// The stdio runsc is handed when it starts (or restores) a task: a pod's later container
/// gets it then; a root container had it at its create, which made the sandbox.
pub(super) fn start_stdio(c: &Container) -> StdioFds {
    if c.kind.is_root() {
        return StdioFds::default();
    }
    c.init
        .io()
        .as_mut()
        .map(|io| io.take_process_side())
        .unwrap_or_default()
}

/// Puts the gofer of a later container of a pod into its sandbox's host cgroup (cgroup v2),
/// where the pod's limits and accounting apply and where the kubelet's pod removal finds it.
/// With `--systemd-cgroup`, runsc 20221219 and 20240729 try to join the sandbox's existing
/// scope by starting it again, which systemd ignores, so the gofer would stay in the shim's
/// own cgroup (containerd's service).
pub(super) fn place_gofer(c: &Container) {
    let Some(sandbox) = c.sandbox_cgroup.as_ref() else {
        return;
    };
    let Some(gofer) = c.runsc.gofer_pid(&c.id, &c.sandbox_id) else {
        return;
    };
    if crate::cgroups::host::v2_cgroup_of(gofer).as_deref() == Some(sandbox.dir()) {
        return;
    }
    match crate::cgroups::host::move_to(sandbox.dir(), gofer) {
        Ok(()) => {
            tracing::debug!(id = %c.id, gofer, cgroup = %sandbox.dir().display(), "gofer moved to the sandbox's cgroup")
        }
        Err(e) => {
            tracing::warn!(id = %c.id, gofer, error = %e, "cannot move the gofer to the sandbox's cgroup")
        }
    }
}
