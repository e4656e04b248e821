//! How `runsc` processes are started and waited for.

use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// The process called `exit(code)`.
    Exited(i32),
    /// The process was killed by a signal.
    Signaled(i32),
}

impl ExitStatus {
    /// The status in the shell convention containerd uses: the exit code, or 128 + signal.
    pub fn code(self) -> u32 {
        match self {
            ExitStatus::Exited(code) => (code & 0xff) as u32,
            ExitStatus::Signaled(sig) => 128 + (sig as u32 & 0x7f),
        }
    }

    /// True for `exit(0)`.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// Decodes a raw `wait(2)` status word.
    pub fn from_raw(status: i32) -> ExitStatus {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled(libc::WTERMSIG(status))
        } else {
            ExitStatus::Exited(libc::WEXITSTATUS(status))
        }
    }
}

impl From<std::process::ExitStatus> for ExitStatus {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitStatus::Exited(code),
            (None, Some(sig)) => ExitStatus::Signaled(sig),
            // Stopped/continued children are never reported as exits by `wait`.
            (None, None) => ExitStatus::from_raw(status.into_raw()),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit status {code}"),
            ExitStatus::Signaled(sig) => write!(f, "killed by signal {sig}"),
        }
    }
}

/// Future resolving to the exit status of a spawned child.
pub type ExitFuture = Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send>>;

/// A started child process.
pub struct Spawned {
    /// Host pid of the child.
    pub pid: u32,
    /// Write end of the child's stdin, if it was piped.
    pub stdin: Option<OwnedFd>,
    /// Read end of the child's stdout, if it was piped.
    pub stdout: Option<OwnedFd>,
    /// Read end of the child's stderr, if it was piped.
    pub stderr: Option<OwnedFd>,
    /// Resolves when the child exits. Dropping it must not leave a zombie behind.
    pub exit: ExitFuture,
}

impl fmt::Debug for Spawned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawned")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Starts processes and reports their exit.
///
/// A containerd shim is a child subreaper that reaps with `waitpid(-1)`, so it must route
/// every wait through its own reaper; anything else would lose exit statuses. Tests inject
/// recording fakes here.
pub trait Spawner: Send + Sync + fmt::Debug {
    /// Starts `cmd` (its stdio is already configured) and returns the child.
    fn spawn(&self, cmd: std::process::Command) -> io::Result<Spawned>;
}

/// A [`Spawner`] that waits through tokio's own child handling. Suitable for programs that do
/// not reap children themselves (tests, tools); not for a subreaper shim.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSpawner;

impl Spawner for TokioSpawner {
    fn spawn(&self, cmd: std::process::Command) -> io::Result<Spawned> {
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(false);
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("child exited before its pid was read"))?;
        let stdin = child.stdin.take().map(|s| s.into_owned_fd()).transpose()?;
        let stdout = child.stdout.take().map(|s| s.into_owned_fd()).transpose()?;
        let stderr = child.stderr.take().map(|s| s.into_owned_fd()).transpose()?;
        let exit = Box::pin(async move { child.wait().await.map(ExitStatus::from) });
        Ok(Spawned {
            pid,
            stdin,
            stdout,
            stderr,
            exit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_shell_convention() {
        assert_eq!(ExitStatus::Exited(0).code(), 0);
        assert_eq!(ExitStatus::Exited(7).code(), 7);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert_eq!(ExitStatus::Signaled(15).code(), 143);
        assert!(ExitStatus::Exited(0).success());
        assert!(!ExitStatus::Signaled(0).success());
    }

    #[test]
    fn raw_status_decoding() {
        // exit(3): status word is 3 << 8.
        assert_eq!(ExitStatus::from_raw(3 << 8), ExitStatus::Exited(3));
        // killed by SIGKILL: low 7 bits hold the signal.
        assert_eq!(ExitStatus::from_raw(9), ExitStatus::Signaled(9));
    }

    #[tokio::test]
    async fn tokio_spawner_reports_exit() {
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "exit 4"]);
        let spawned = TokioSpawner.spawn(cmd).unwrap();
        assert!(spawned.pid > 0);
        assert_eq!(spawned.exit.await.unwrap(), ExitStatus::Exited(4));
    }
}
