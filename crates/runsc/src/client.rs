//! The [`Runsc`] client: one async method per runsc subcommand.

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::error::Error;
use crate::logjson;
use crate::opts::{
    CheckpointOpts, CreateOpts, DeleteOpts, ExecOpts, GlobalOpts, KillOpts, RestoreOpts,
};
use crate::spawn::{ExitStatus, Spawned, Spawner};
use crate::types::{Event, ProcessInfo, State, Stats, Version, WaitResult};

/// Captured output beyond this is refused: runsc output is parsed in memory.
const OUTPUT_LIMIT: usize = 8 * 1024 * 1024;

/// How long to keep reading captured output after runsc itself exited. A process runsc leaves
/// behind (a sandbox, a gofer) may hold the pipe open forever; the output that matters has
/// been written by the time runsc exits.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// The stdio a runsc process hands to a container or exec'd process. `None` is `/dev/null`.
#[derive(Debug, Default)]
pub struct StdioFds {
    /// Standard input.
    pub stdin: Option<OwnedFd>,
    /// Standard output.
    pub stdout: Option<OwnedFd>,
    /// Standard error.
    pub stderr: Option<OwnedFd>,
}

/// How a runsc process's stdio is wired.
enum Io<'a> {
    /// Capture stdout and stderr; feed stdin from these bytes (or `/dev/null`).
    Capture { stdin: Option<&'a [u8]> },
    /// Hand these descriptors to runsc (which passes them on to the container).
    Provided(StdioFds),
}

/// A runsc client bound to one set of global options.
#[derive(Clone)]
pub struct Runsc {
    opts: Arc<GlobalOpts>,
    spawner: Arc<dyn Spawner>,
}

impl fmt::Debug for Runsc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runsc")
            .field("opts", &self.opts)
            .field("spawner", &self.spawner)
            .finish()
    }
}

impl Runsc {
    /// A client with these global options, starting processes through `spawner`.
    pub fn new(opts: GlobalOpts, spawner: Arc<dyn Spawner>) -> Runsc {
        Runsc {
            opts: Arc::new(opts),
            spawner,
        }
    }

    /// The global options.
    pub fn opts(&self) -> &GlobalOpts {
        &self.opts
    }

    /// A client with the same options that logs to `log` (one log per container bundle).
    pub fn with_log(&self, log: impl Into<std::path::PathBuf>) -> Runsc {
        Runsc {
            opts: Arc::new(self.opts.with_log(log)),
            spawner: self.spawner.clone(),
        }
    }

    /// `runsc create`. The stdio goes to the container when it is the root container of a
    /// sandbox; runsc gives later containers of a pod the stdio of `runsc start` instead.
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        opts: &CreateOpts,
        stdio: StdioFds,
    ) -> Result<(), Error> {
        self.run("create", opts.args(bundle, id), Io::Provided(stdio))
            .await
            .map(drop)
    }

    /// `runsc start`.
    pub async fn start(&self, id: &str, stdio: StdioFds) -> Result<(), Error> {
        self.run(
            "start",
            vec!["start".into(), id.into()],
            Io::Provided(stdio),
        )
        .await
        .map(drop)
    }

    /// `runsc state`.
    pub async fn state(&self, id: &str) -> Result<State, Error> {
        let out = self
            .run_captured("state", vec!["state".into(), id.into()], None)
            .await?;
        parse("state", &out)
    }

    /// `runsc kill`.
    pub async fn kill(&self, id: &str, signal: u32, opts: KillOpts) -> Result<(), Error> {
        self.run_captured("kill", opts.args(id, signal), None)
            .await
            .map(drop)
    }

    /// `runsc delete`.
    pub async fn delete(&self, id: &str, opts: DeleteOpts) -> Result<(), Error> {
        self.run_captured("delete", opts.args(id), None)
            .await
            .map(drop)
    }

    /// `runsc wait`: blocks until the container exits, then reports its status (also for a
    /// container of a pod that exited earlier, until it is deleted). `timeout: None` waits
    /// as long as it takes.
    pub async fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<WaitResult, Error> {
        let args = vec!["wait".into(), id.into()];
        let out = self
            .run_with("wait", args, Io::Capture { stdin: None }, timeout)
            .await?;
        parse("wait", &out)
    }

    /// `runsc exec --detach`: starts a process in a running container. The helper whose pid
    /// lands in `opts.pid_file` lives as long as the process and exits with its status.
    pub async fn exec(&self, id: &str, opts: &ExecOpts, stdio: StdioFds) -> Result<(), Error> {
        self.run("exec", opts.args(id), Io::Provided(stdio))
            .await
            .map(drop)
    }

    /// `runsc ps --format=json`.
    pub async fn ps(&self, id: &str) -> Result<Vec<ProcessInfo>, Error> {
        let args = vec!["ps".into(), "--format=json".into(), id.into()];
        let out = self.run_captured("ps", args, None).await?;
        // runsc prints `null` for an empty list.
        let list: Option<Vec<ProcessInfo>> = parse("ps", &out)?;
        Ok(list.unwrap_or_default())
    }

    /// `runsc events --stats`: one statistics sample.
    pub async fn stats(&self, id: &str) -> Result<Stats, Error> {
        let args = vec!["events".into(), "--stats".into(), id.into()];
        let out = self.run_captured("events", args, None).await?;
        let event: Event = parse("events", &out)?;
        Ok(event.data.unwrap_or_default())
    }

    /// `runsc pause`.
    pub async fn pause(&self, id: &str) -> Result<(), Error> {
        self.run_captured("pause", vec!["pause".into(), id.into()], None)
            .await
            .map(drop)
    }

    /// `runsc resume`.
    pub async fn resume(&self, id: &str) -> Result<(), Error> {
        self.run_captured("resume", vec!["resume".into(), id.into()], None)
            .await
            .map(drop)
    }

    /// `runsc update --resources=-` with OCI `LinuxResources` JSON on stdin. Only newer runsc
    /// builds have `update`; older ones fail with [`crate::FailureKind::UnknownCommand`].
    pub async fn update(&self, id: &str, resources_json: &[u8]) -> Result<(), Error> {
        let args = vec!["update".into(), "--resources=-".into(), id.into()];
        self.run_captured("update", args, Some(resources_json))
            .await
            .map(drop)
    }

    /// `runsc checkpoint`: saves the state of the container's whole sandbox.
    pub async fn checkpoint(&self, id: &str, opts: &CheckpointOpts) -> Result<(), Error> {
        self.run_captured("checkpoint", opts.args(id), None)
            .await
            .map(drop)
    }

    /// `runsc restore --detach`. Into a created container (runsc 2024 and later), or, for
    /// runsc builds that restore without a prior create, as a new sandbox that gets `stdio`.
    pub async fn restore(
        &self,
        id: &str,
        opts: &RestoreOpts,
        stdio: StdioFds,
    ) -> Result<(), Error> {
        self.run("restore", opts.args(id), Io::Provided(stdio))
            .await
            .map(drop)
    }

    /// `runsc --version`.
    pub async fn version(&self) -> Result<Version, Error> {
        let mut cmd = std::process::Command::new(&self.opts.binary);
        cmd.arg("--version");
        let out = self
            .execute(
                "version",
                cmd,
                Io::Capture { stdin: None },
                Some(self.opts.timeout),
            )
            .await?;
        Ok(Version::parse(&String::from_utf8_lossy(&out)))
    }

    async fn run_captured(
        &self,
        command: &str,
        args: Vec<OsString>,
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>, Error> {
        self.run(command, args, Io::Capture { stdin }).await
    }

    async fn run(&self, command: &str, args: Vec<OsString>, io: Io<'_>) -> Result<Vec<u8>, Error> {
        self.run_with(command, args, io, Some(self.opts.timeout))
            .await
    }

    async fn run_with(
        &self,
        command: &str,
        args: Vec<OsString>,
        io: Io<'_>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, Error> {
        let mut cmd = std::process::Command::new(&self.opts.binary);
        cmd.args(self.opts.args()).args(args);
        let log_mark = self
            .opts
            .log
            .as_deref()
            .map(|log| (log, logjson::log_len(log)));
        let result = self.execute(command, cmd, io, timeout).await;
        match result {
            Err(Error::Failed {
                command,
                status,
                message,
            }) => {
                let from_log = log_mark.and_then(|(log, mark)| logjson::last_error(log, mark));
                let message = from_log.unwrap_or(message);
                tracing::debug!(%command, %status, error = %message, "runsc failed");
                Err(Error::Failed {
                    command,
                    status,
                    message,
                })
            }
            other => other,
        }
    }

    async fn execute(
        &self,
        command: &str,
        mut cmd: std::process::Command,
        io: Io<'_>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, Error> {
        let stdin_bytes = io.apply(&mut cmd);
        tracing::debug!(%command, args = ?cmd.get_args().collect::<Vec<_>>(), "running runsc");
        let Spawned {
            pid,
            stdin,
            stdout,
            stderr,
            exit,
        } = self.spawner.spawn(cmd).map_err(|source| Error::Spawn {
            binary: self.opts.binary.clone(),
            source,
        })?;
        // The Command (and with it our copies of any provided descriptors) is gone by now, so
        // the only holders of a container's stdio are runsc and what it starts.

        let mut out = Vec::new();
        let mut err = Vec::new();
        let io = async {
            tokio::try_join!(
                feed(stdin, stdin_bytes.unwrap_or_default()),
                read_limited(stdout, &mut out),
                read_limited(stderr, &mut err),
            )
            .map(drop)
        };
        let status = supervise(pid, exit, io, timeout)
            .await
            .map_err(|e| e.into_error(command))?;
        outcome(command, status, out, &err)
    }
}

impl<'a> Io<'a> {
    /// Sets up the stdio of `cmd`; returns the bytes to feed its stdin, if any.
    fn apply(self, cmd: &mut std::process::Command) -> Option<&'a [u8]> {
        match self {
            Io::Capture { stdin } => {
                cmd.stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                });
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
                stdin
            }
            Io::Provided(fds) => {
                cmd.stdin(fds.stdin.map_or_else(Stdio::null, Stdio::from));
                cmd.stdout(fds.stdout.map_or_else(Stdio::null, Stdio::from));
                cmd.stderr(fds.stderr.map_or_else(Stdio::null, Stdio::from));
                None
            }
        }
    }
}

/// The result of a finished runsc call: its stdout on success, else its error message
/// (stderr, or stdout when stderr is empty).
fn outcome(command: &str, status: ExitStatus, out: Vec<u8>, err: &[u8]) -> Result<Vec<u8>, Error> {
    if status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(err);
    let message = match stderr.trim() {
        "" => String::from_utf8_lossy(&out).trim().to_owned(),
        s => s.to_owned(),
    };
    Err(Error::Failed {
        command: command.to_owned(),
        status,
        message,
    })
}

enum Supervise {
    TimedOut(Duration),
    Io(io::Error),
}

impl Supervise {
    /// The error of runsc call `command`.
    fn into_error(self, command: &str) -> Error {
        match self {
            Supervise::TimedOut(after) => Error::Timeout {
                command: command.to_owned(),
                timeout: after,
            },
            Supervise::Io(e) if e.kind() == io::ErrorKind::OutOfMemory => Error::OutputTooLarge {
                command: command.to_owned(),
                limit: OUTPUT_LIMIT,
            },
            Supervise::Io(source) => Error::Io {
                command: command.to_owned(),
                source,
            },
        }
    }
}

/// Waits for the child and its captured I/O; kills it when the deadline passes or its
/// output cannot be read, so no runsc process outlives a failed call.
async fn supervise<F>(
    pid: u32,
    exit: crate::spawn::ExitFuture,
    io: F,
    timeout: Option<Duration>,
) -> Result<ExitStatus, Supervise>
where
    F: Future<Output = io::Result<()>>,
{
    use futures::FutureExt;
    use futures::future::FusedFuture;

    let mut exit = exit.fuse();
    let work = async {
        tokio::pin!(io);
        let mut io_done = false;
        let status = tokio::select! {
            status = &mut exit => status,
            res = &mut io => {
                res?;
                io_done = true;
                (&mut exit).await
            }
        };
        if !io_done {
            // Exited with the pipes still open: something runsc started holds them. Keep
            // what arrives shortly, then stop reading.
            if let Ok(res) = tokio::time::timeout(OUTPUT_GRACE, &mut io).await {
                res?;
            }
        }
        status
    };
    let result = match timeout {
        None => work.await.map_err(Supervise::Io),
        Some(after) => match tokio::time::timeout(after, work).await {
            Ok(res) => res.map_err(Supervise::Io),
            Err(_) => Err(Supervise::TimedOut(after)),
        },
    };
    if result.is_err() && !exit.is_terminated() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        // Reap it; a killed process exits promptly.
        let _ = tokio::time::timeout(Duration::from_secs(5), exit).await;
    }
    result
}

async fn feed(stdin: Option<OwnedFd>, bytes: &[u8]) -> io::Result<()> {
    let Some(fd) = stdin else { return Ok(()) };
    let mut tx = pipe::Sender::from_owned_fd(fd)?;
    match tx.write_all(bytes).await {
        // runsc may exit without reading its input; that is its error to report.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

async fn read_limited(fd: Option<OwnedFd>, buf: &mut Vec<u8>) -> io::Result<()> {
    let Some(fd) = fd else { return Ok(()) };
    let mut rx = pipe::Receiver::from_owned_fd(fd)?;
    // On the heap: this future is nested in every runsc call.
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = rx.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        if buf.len() + n > OUTPUT_LIMIT {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse<T: serde::de::DeserializeOwned>(command: &str, out: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(out).map_err(|source| Error::Parse {
        command: command.to_owned(),
        output: String::from_utf8_lossy(&out[..out.len().min(512)]).into_owned(),
        source,
    })
}
