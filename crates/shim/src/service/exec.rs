//! Exec: adding, starting and deleting extra processes in a running container.

use std::sync::Arc;
use std::time::Instant;

use runsc::ExecOpts;

use super::{Deleted, Inner, Service, exec_files, read_pid};
use crate::container::Container;
use crate::error::{Error, IoContext, Result};
use crate::events::Event;
use crate::io::{ConsoleSocket, IoOwner, ProcessIo, StdioConfig};
use crate::process::{Process, Status};

/// An Exec request.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// Task id.
    pub id: String,
    /// New exec id.
    pub exec_id: String,
    /// Its stdio.
    pub stdio: StdioConfig,
    /// The OCI process spec, JSON.
    pub spec: Vec<u8>,
}

impl Service {
    /// Exec: registers a process to be started later (by `start` with its exec id).
    pub async fn exec(&self, req: ExecRequest) -> Result<()> {
        crate::ids::validate("exec id", &req.exec_id)?;
        let c = self.inner.container(&req.id)?;
        match c.init.snapshot().status {
            Status::Running | Status::Paused => {}
            s => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot exec in task {}: it is {s:?}",
                    req.id
                )));
            }
        }
        let mut spec: serde_json::Value = serde_json::from_slice(&req.spec)
            .map_err(|e| Error::InvalidArgument(format!("invalid exec process spec: {e}")))?;
        let parsed: oci_spec::runtime::Process = serde_json::from_value(spec.clone())
            .map_err(|e| Error::InvalidArgument(format!("invalid exec process spec: {e}")))?;
        if parsed.args().as_ref().is_none_or(Vec::is_empty) {
            return Err(Error::InvalidArgument(
                "invalid exec process spec: `args` is empty".into(),
            ));
        }
        // The request decides whether there is a terminal (containerd's shims do the same).
        spec["terminal"] = serde_json::Value::Bool(req.stdio.terminal);
        c.add_exec(
            &req.exec_id,
            Process::new_exec(req.exec_id.clone(), req.stdio.clone(), spec),
        )?;
        self.inner.publish(Event::ExecAdded {
            container_id: req.id,
            exec_id: req.exec_id,
        });
        Ok(())
    }
}

/// The files `runsc exec` reads and writes, in the bundle.
struct ExecFiles<'a> {
    /// The process spec.
    spec: &'a std::path::Path,
    /// The host pid runsc writes.
    pid: &'a std::path::Path,
    /// The pid inside the sandbox runsc writes.
    internal_pid: &'a std::path::Path,
}

/// Writes the process spec of an exec, readable by root only.
fn write_exec_spec(path: &std::path::Path, spec: &serde_json::Value) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .context(|| format!("write {}", path.display()))?;
    serde_json::to_writer(&mut f, spec)
        .map_err(|e| Error::io(format!("write {}", path.display()), e.into()))
}

impl Inner {
    pub(super) async fn start_exec(
        self: &Arc<Self>,
        c: &Arc<Container>,
        exec_id: &str,
    ) -> Result<u32> {
        let p = c.process(exec_id)?;
        let _lifecycle = p.lifecycle.lock().await;
        let status = p.snapshot().status;
        if status != Status::Created {
            return Err(Error::FailedPrecondition(format!(
                "cannot start exec {exec_id}: it is {status:?}"
            )));
        }
        if c.init.snapshot().status != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "cannot start exec {exec_id}: task {} is not running",
                c.id
            )));
        }
        let spec = p.spec().ok_or_else(|| {
            Error::FailedPrecondition(format!("exec {exec_id} has no process spec"))
        })?;
        let (spec_file, pid_file, ipid_file) = exec_files(&c.bundle, exec_id);
        let files = ExecFiles {
            spec: &spec_file,
            pid: &pid_file,
            internal_pid: &ipid_file,
        };
        let result = self.run_exec(c, &p, exec_id, &spec, &files).await;
        for f in [&spec_file, &pid_file, &ipid_file] {
            let _ = std::fs::remove_file(f);
        }
        result
    }

    /// Runs exec `p` with `runsc exec` and records it running; its exit is watched from then
    /// on. On failure nothing of it is left running or open.
    async fn run_exec(
        self: &Arc<Self>,
        c: &Arc<Container>,
        p: &Arc<Process>,
        exec_id: &str,
        spec: &serde_json::Value,
        files: &ExecFiles<'_>,
    ) -> Result<u32> {
        write_exec_spec(files.spec, spec)?;
        let owner = IoOwner {
            namespace: &self.namespace,
            id: exec_id,
            uid: c.config.io_uid,
            gid: c.config.io_gid,
        };
        let mut io = ProcessIo::open(&p.stdio, owner, &self.reaper).await?;
        let console_socket = if p.stdio.terminal {
            Some(ConsoleSocket::new()?)
        } else {
            None
        };
        let since = Instant::now();
        let started = self
            .runsc_exec(c, exec_id, files, console_socket.as_ref(), &mut io)
            .await;
        let (pid, internal) = match started {
            Ok(pids) => pids,
            Err(e) => {
                io.close().wait().await;
                return Err(e);
            }
        };
        // From here the process runs: its exit must be recorded whatever else fails.
        let exit = self.reaper.watch(pid, since);
        if let Some(socket) = &console_socket
            && let Err(e) = self
                .receive_exec_console(c, p, socket, &mut io, internal)
                .await
        {
            let _ = exit.await;
            io.close().wait().await;
            return Err(e);
        }
        *p.io() = Some(io);
        {
            let mut st = p.state();
            st.pid = pid as u32;
            st.internal_pid = Some(internal);
            st.transition(Status::Running)?;
        }
        self.publish(Event::ExecStarted {
            container_id: c.id.clone(),
            exec_id: exec_id.to_owned(),
            pid: pid as u32,
        });
        self.watch_exit(c.clone(), p.clone(), exit);
        Ok(pid as u32)
    }

    /// `runsc exec` with the process side of `io`; returns the exec's host pid and its pid
    /// inside the sandbox.
    async fn runsc_exec(
        &self,
        c: &Container,
        exec_id: &str,
        files: &ExecFiles<'_>,
        console_socket: Option<&ConsoleSocket>,
        io: &mut ProcessIo,
    ) -> Result<(i32, i32)> {
        let opts = ExecOpts {
            process: files.spec.to_path_buf(),
            pid_file: files.pid.to_path_buf(),
            internal_pid_file: files.internal_pid.to_path_buf(),
            console_socket: console_socket.map(|s| s.path().to_path_buf()),
        };
        c.runsc
            .exec(&c.id, &opts, io.take_process_side())
            .await
            .map_err(|e| Error::runsc(format!("start exec {exec_id} in task {}", c.id), e))?;
        Ok((read_pid(files.pid)?, read_pid(files.internal_pid)?))
    }

    /// Receives the terminal of exec `p` and attaches it. A terminal exec without its terminal
    /// is useless (and would hang its client): it is killed (pid `internal` in the sandbox),
    /// and the error says why.
    async fn receive_exec_console(
        &self,
        c: &Container,
        p: &Process,
        socket: &ConsoleSocket,
        io: &mut ProcessIo,
        internal: i32,
    ) -> Result<()> {
        match socket.receive(self.options.console_timeout).await {
            Ok(console) => {
                p.set_console(console.clone());
                io.attach_console(console);
                Ok(())
            }
            Err(e) => {
                let kill = runsc::KillOpts {
                    all: false,
                    pid: Some(internal),
                };
                let _ = c.runsc.kill(&c.id, libc::SIGKILL as u32, kill).await;
                Err(e)
            }
        }
    }

    pub(super) async fn delete_exec(&self, c: &Container, exec_id: &str) -> Result<Deleted> {
        let p = c.process(exec_id)?;
        let _lifecycle = p.lifecycle.lock().await;
        let st = p.snapshot();
        match st.status {
            Status::Running | Status::Paused => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot delete exec {exec_id} while it is running"
                )));
            }
            Status::Deleted => return Err(Error::NotFound(format!("exec {exec_id:?} not found"))),
            Status::Created | Status::Stopped => {}
        }
        if let Some(closing) = p.close_io() {
            closing.wait().await;
        }
        p.state().transition(Status::Deleted)?;
        c.remove_exec(exec_id);
        Ok(Deleted {
            pid: st.pid,
            exit_status: st.exit.map_or(0, |e| e.status),
            exited_at: st.exit.map(|e| e.at),
        })
    }
}
