//! State, Pids, Stats, Update, Pause/Resume, CloseIO and ResizePty.

use runsc::FailureKind;

use super::{Inner, Service};
use crate::container::Container;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::io::StdioConfig;
use crate::process::{Exit, Status};

/// What State reports for one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStatus {
    /// The exec id, or the task id for the init process.
    pub id: String,
    /// The task's bundle.
    pub bundle: String,
    /// Host pid.
    pub pid: u32,
    /// Life cycle position.
    pub status: Status,
    /// The requested stdio.
    pub stdio: StdioConfig,
    /// How it ended, once it has.
    pub exit: Option<Exit>,
}

/// One process of Pids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEntry {
    /// Pid inside the sandbox.
    pub pid: u32,
    /// The exec it belongs to, if it is an exec's process.
    pub exec_id: Option<String>,
}

impl Service {
    /// State of the init process or an exec. Answered from the shim's own records: no runsc
    /// call (gVisor's shim runs `runsc state` for every State).
    pub fn state(&self, id: &str, exec_id: &str) -> Result<ProcessStatus> {
        let c = self.inner.container(id)?;
        let p = c.process(exec_id)?;
        let st = p.snapshot();
        let mut status = st.status;
        // An exec of a paused task is paused too.
        if status == Status::Running
            && p.exec_id.is_some()
            && c.init.snapshot().status == Status::Paused
        {
            status = Status::Paused;
        }
        Ok(ProcessStatus {
            id: Inner::process_id(&c, &p),
            bundle: c.bundle.display().to_string(),
            pid: st.pid,
            status,
            stdio: p.stdio.clone(),
            exit: st.exit,
        })
    }

    /// Pids: the task's processes (pids inside the sandbox), with exec ids where known.
    pub async fn pids(&self, id: &str) -> Result<Vec<ProcessEntry>> {
        let c = self.inner.container(id)?;
        let st = c.init.snapshot();
        match st.status {
            Status::Running | Status::Paused => {}
            // containerd 1.7+ treats a shim whose task has no processes as leaked when it
            // restarts, and cleans it up, publishing exit status 137 instead of the real one
            // (which this shim still has queued for it). Report the task's own pid.
            Status::Created | Status::Stopped => {
                return Ok(vec![ProcessEntry {
                    pid: st.pid,
                    exec_id: None,
                }]);
            }
            Status::Deleted => return Ok(Vec::new()),
        }
        let procs = c.runsc.ps(id).await.map_err(|e| match e.kind() {
            FailureKind::NotFound | FailureKind::NotRunning => {
                Error::NotFound(format!("task {id} is not running"))
            }
            _ => Error::runsc(format!("list processes of task {id}"), e),
        })?;
        let execs: Vec<(i32, String)> = c
            .exec_list()
            .into_iter()
            .filter_map(|p| Some((p.snapshot().internal_pid?, p.exec_id.clone()?)))
            .collect();
        Ok(procs
            .into_iter()
            .map(|info| ProcessEntry {
                pid: info.pid as u32,
                exec_id: execs
                    .iter()
                    .find(|(pid, _)| *pid == info.pid)
                    .map(|(_, e)| e.clone()),
            })
            .collect())
    }

    /// Stats: one sample of the container's statistics from the sandbox.
    pub async fn stats(&self, id: &str) -> Result<runsc::Stats> {
        let c = self.inner.container(id)?;
        match c.init.snapshot().status {
            Status::Running | Status::Paused => {}
            // Nothing has run yet, and runsc 20221219 crashes on `events --stats` of a
            // created container: empty statistics, as a new cgroup has (containerd asks for
            // the metrics of every task, kubelet for every container it lists).
            Status::Created => return Ok(runsc::Stats::default()),
            s => {
                return Err(Error::FailedPrecondition(format!(
                    "task {id} is {s:?}: no statistics"
                )));
            }
        }
        let mut stats = c
            .runsc
            .stats(id)
            .await
            .map_err(|e| Error::runsc(format!("collect statistics of task {id}"), e))?;
        let whole_sandbox = c.kind == crate::spec::ContainerKind::Standalone;
        crate::cgroups::stats::complete(
            &mut stats,
            whole_sandbox,
            c.limits,
            c.sandbox_cgroup.as_ref(),
        );
        Ok(stats)
    }

    /// Update: applies new resources (OCI `LinuxResources` JSON) through `runsc update`.
    pub async fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        let c = self.inner.container(id)?;
        serde_json::from_slice::<oci_spec::runtime::LinuxResources>(resources)
            .map_err(|e| Error::InvalidArgument(format!("invalid resources: {e}")))?;
        match c.init.snapshot().status {
            Status::Running | Status::Paused | Status::Created => {}
            s => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot update task {id}: it is {s:?}"
                )));
            }
        }
        match c.runsc.update(id, resources).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == FailureKind::UnknownCommand => {
                let version = c
                    .runsc
                    .version()
                    .await
                    .map(|v| v.version)
                    .unwrap_or_else(|_| "unknown".into());
                Err(Error::Unimplemented(format!(
                    "runsc {} ({}) has no `update` command: resources of a running gVisor \
                     sandbox cannot be changed with this runsc",
                    version,
                    c.runsc.opts().binary.display()
                )))
            }
            Err(e) => Err(Error::runsc(format!("update task {id}"), e)),
        }
    }

    /// Pause the task.
    pub async fn pause(&self, id: &str) -> Result<()> {
        let c = self.inner.container(id)?;
        let p = c.init.clone();
        let _lifecycle = p.lifecycle.lock().await;
        let status = p.snapshot().status;
        if status != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "cannot pause task {id}: it is {status:?}"
            )));
        }
        c.runsc
            .pause(id)
            .await
            .map_err(|e| Error::runsc(format!("pause task {id}"), e))?;
        p.state().transition(Status::Paused)?;
        self.inner.publish(Event::Paused {
            container_id: id.to_owned(),
        });
        Ok(())
    }

    /// Resume the task.
    pub async fn resume(&self, id: &str) -> Result<()> {
        let c = self.inner.container(id)?;
        let p = c.init.clone();
        let _lifecycle = p.lifecycle.lock().await;
        let status = p.snapshot().status;
        if status != Status::Paused {
            return Err(Error::FailedPrecondition(format!(
                "cannot resume task {id}: it is {status:?}"
            )));
        }
        self.inner.resume_locked(&c).await
    }

    /// CloseIO: no more input for the process.
    pub async fn close_io(&self, id: &str, exec_id: &str) -> Result<()> {
        let p = self.inner.container(id)?.process(exec_id)?;
        if let Some(io) = p.io().as_mut() {
            io.close_stdin();
        }
        Ok(())
    }

    /// ResizePty: sets the terminal size (no terminal: nothing to do).
    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let p = self.inner.container(id)?.process(exec_id)?;
        if let Some(console) = p.console()
            && let Err(e) = console.resize(width, height)
            && p.snapshot().status == Status::Running
        {
            return Err(Error::io("resize terminal", e));
        }
        Ok(())
    }
}

impl Inner {
    /// Resumes a paused task; the caller holds its init's lifecycle lock.
    pub(super) async fn resume_locked(&self, c: &Container) -> Result<()> {
        c.runsc
            .resume(&c.id)
            .await
            .map_err(|e| Error::runsc(format!("resume task {}", c.id), e))?;
        c.init.state().transition(Status::Running)?;
        self.publish(Event::Resumed {
            container_id: c.id.clone(),
        });
        Ok(())
    }
}
