//! `binary://` logging drivers (nerdctl's default, for example).
//!
//! The protocol is containerd's (`pkg/process/io.go` `NewBinaryIO`): the binary runs with the
//! URI query as arguments (key, then value), an environment of exactly `CONTAINER_ID` (the exec
//! id for an exec) and `CONTAINER_NAMESPACE`, the read ends of the stdout and stderr pipes as
//! fds 3 and 4, and the write end of a readiness pipe as fd 5, which it closes (or writes a
//! byte to) once ready. At delete it gets SIGTERM and 12 seconds to flush before SIGKILL.
//! Unlike containerd's shim we do not wait forever for readiness.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use runsc::ExitStatus;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::{IoOwner, Target};
use crate::error::{Error, IoContext, Result};
use crate::reaper::Reaper;

/// How long a logging binary may take to signal readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a logging binary gets to flush after SIGTERM (containerd's
/// `binaryIOProcTermTimeout`).
const STOP_TIMEOUT: Duration = Duration::from_secs(12);

/// A running logging binary.
#[derive(Debug)]
pub struct BinaryLogger {
    pid: i32,
    exit: oneshot::Receiver<ExitStatus>,
}

/// A descriptor number of at least 10, so that placing descriptors at 3, 4 and 5 in the child
/// can never overwrite another one of them.
fn dup_high(fd: &OwnedFd) -> Result<OwnedFd> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(10)).context(|| "dup descriptor".to_owned())?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

impl BinaryLogger {
    /// Starts the logger for `target` (a [`Target::Binary`]) and waits until it is ready.
    pub(super) async fn start(
        target: &Target,
        owner: &IoOwner<'_>,
        stdout: OwnedFd,
        stderr: OwnedFd,
        reaper: &Reaper,
    ) -> Result<BinaryLogger> {
        let Target::Binary { path, args } = target else {
            return Err(Error::InvalidArgument(
                "not a binary:// logging target".into(),
            ));
        };
        let (ready_r, ready_w) = super::pipe_pair("logger readiness")?;
        let fds = [dup_high(&stdout)?, dup_high(&stderr)?, dup_high(&ready_w)?];
        drop((stdout, stderr, ready_w));
        let raw: [i32; 3] = [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()];

        let mut cmd = std::process::Command::new(path);
        cmd.args(args)
            .env_clear()
            .env("CONTAINER_ID", owner.id)
            .env("CONTAINER_NAMESPACE", owner.namespace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure only calls dup2, which is async-signal-safe, on descriptors that
        // stay open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                for (i, fd) in raw.iter().enumerate() {
                    if libc::dup2(*fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let (child, exit) = reaper
            .spawn(&mut cmd)
            .context(|| format!("start logging binary {}", path.display()))?;
        let pid = child.id() as i32;
        drop(fds);
        let mut logger = BinaryLogger { pid, exit };

        let mut ready =
            pipe::Receiver::from_owned_fd(ready_r).context(|| "readiness pipe".to_owned())?;
        let mut byte = [0u8; 1];
        tokio::select! {
            r = ready.read(&mut byte) => match r {
                Ok(_) => Ok(logger),
                Err(e) => {
                    logger.stop().await;
                    Err(Error::io("wait for logging binary", e))
                }
            },
            // Already reaped: nothing to stop.
            status = &mut logger.exit => Err(Error::FailedPrecondition(format!(
                "logging binary {} exited before it was ready ({})",
                path.display(),
                status.map_or_else(|_| "unknown status".to_owned(), |s| s.to_string()),
            ))),
            () = tokio::time::sleep(READY_TIMEOUT) => {
                logger.stop().await;
                Err(Error::FailedPrecondition(format!(
                    "logging binary {} did not signal readiness within {READY_TIMEOUT:?}",
                    path.display()
                )))
            }
        }
    }

    /// SIGKILL without waiting (the reaper collects it).
    pub fn kill_now(self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
    }

    /// SIGTERM, up to 12 s to exit, then SIGKILL.
    pub async fn stop(mut self) {
        let pid = Pid::from_raw(self.pid);
        if kill(pid, Signal::SIGTERM).is_err() {
            return; // already gone (and reaped)
        }
        if tokio::time::timeout(STOP_TIMEOUT, &mut self.exit)
            .await
            .is_err()
        {
            tracing::warn!(pid = self.pid, "logging binary ignored SIGTERM; killing it");
            let _ = kill(pid, Signal::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.exit).await;
        }
    }
}
