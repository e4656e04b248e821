//! Container and exec stdio.
//!
//! containerd names each stream by a URI: a FIFO path (no scheme or `fifo://`), `file://` or
//! `binary://` (a logging driver such as nerdctl's), or nothing. The process never gets
//! containerd's FIFOs: it writes into pipes the shim owns (chowned to `io_uid`/`io_gid`) and the
//! shim copies them out, so a container restart of containerd or a stray descendant cannot
//! pin the FIFOs. When the process exits, the copies drain what the pipes hold and only then is
//! the exit reported: no output is lost at exit.
//!
//! runsc passes the stdio of the runsc process to the container (of `runsc create` for the
//! root container of a sandbox, of `runsc start` for later containers of a pod, of `runsc
//! exec` for execs) and a gofer may keep a copy of it, so the shim never waits for EOF on
//! these pipes after an exit: it drains them.

mod binary;
mod console;
mod copy;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use binary::BinaryLogger;
pub use console::{Console, ConsoleSocket};
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, IoContext, Result};
use crate::reaper::Reaper;

/// How long draining output after an exit may take before the copies are abandoned (only a
/// reader that stopped reading makes it take that long).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The stdio a process was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioConfig {
    /// stdin URI (empty: none).
    pub stdin: String,
    /// stdout URI (empty: none).
    pub stdout: String,
    /// stderr URI (empty: none).
    pub stderr: String,
    /// Whether the process gets a terminal (then stdout carries everything).
    pub terminal: bool,
}

/// Where one output stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Nowhere.
    Null,
    /// A FIFO containerd reads.
    Fifo(PathBuf),
    /// A file, appended to.
    File(PathBuf),
    /// A logging binary that reads the streams from fds 3 and 4.
    Binary {
        /// The binary.
        path: PathBuf,
        /// Arguments from the URI query, in order.
        args: Vec<String>,
    },
}

impl Target {
    /// Parses a stdio URI as containerd's runc shim does (`url.Parse`; no scheme = FIFO).
    pub fn parse(uri: &str) -> Result<Target> {
        if uri.is_empty() {
            return Ok(Target::Null);
        }
        let bad = |why: &str| {
            Err(Error::InvalidArgument(format!(
                "invalid stdio URI {uri:?}: {why}"
            )))
        };
        let Some((scheme, rest)) = uri.split_once("://") else {
            // A bare path: a FIFO, or an existing file (checked when opened).
            return if uri.starts_with('/') {
                Ok(Target::Fifo(uri.into()))
            } else {
                bad("not an absolute path")
            };
        };
        // `scheme://host/path?query`: containerd puts the path after an empty host.
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let path = percent_decode(path, false);
        if !path.starts_with('/') {
            return bad("the path must be absolute");
        }
        match scheme {
            "fifo" => Ok(Target::Fifo(path.into())),
            "file" => Ok(Target::File(path.into())),
            "binary" => {
                let mut args = Vec::new();
                for pair in query
                    .unwrap_or_default()
                    .split('&')
                    .filter(|p| !p.is_empty())
                {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    args.push(percent_decode(k, true));
                    if !v.is_empty() {
                        args.push(percent_decode(v, true));
                    }
                }
                Ok(Target::Binary {
                    path: path.into(),
                    args,
                })
            }
            other => bad(&format!(
                "unsupported scheme {other:?} (fifo, file and binary are)"
            )),
        }
    }
}

/// Decodes `%XX` escapes; in a query, `+` is a space (Go's `url.ParseQuery`).
fn percent_decode(s: &str, query: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(if query && b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Who a process's stdio belongs to (the logging binary's environment).
#[derive(Debug, Clone)]
pub struct IoOwner<'a> {
    /// containerd namespace.
    pub namespace: &'a str,
    /// Container id.
    pub id: &'a str,
    /// Owner of the pipes.
    pub uid: u32,
    /// Group of the pipes.
    pub gid: u32,
}

/// Where terminal output goes once the console arrives.
type ConsoleSink = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// The live stdio of one process.
pub struct ProcessIo {
    /// Descriptors for runsc to hand to the process; taken once.
    process_side: Option<runsc::StdioFds>,
    /// Our write handle on the stdin FIFO: keeps the copy from seeing EOF before the client
    /// has opened it; dropped by CloseIO.
    stdin_keepalive: Option<OwnedFd>,
    /// The stdin FIFO, until a console or the pipe copy takes it.
    stdin_fifo: Option<pipe::Receiver>,
    /// Terminal output destination, until the console arrives.
    console_sink: Option<ConsoleSink>,
    stdin_copy: Option<JoinHandle<()>>,
    output_copies: Vec<JoinHandle<()>>,
    drain: watch::Sender<bool>,
    logger: Option<BinaryLogger>,
    console: Option<Console>,
}

impl std::fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessIo")
            .field("copies", &self.output_copies.len())
            .field("logger", &self.logger)
            .field("console", &self.console.is_some())
            .finish_non_exhaustive()
    }
}

fn pipe_pair(what: &str) -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context(|| format!("create {what} pipe"))
}

fn chown_fd(fd: &OwnedFd, uid: u32, gid: u32) -> Result<()> {
    if uid == 0 && gid == 0 {
        return Ok(());
    }
    nix::unistd::fchown(fd, Some(uid.into()), Some(gid.into()))
        .context(|| format!("chown stdio pipe to {uid}:{gid}"))
}

fn open_output_fifo(path: &Path) -> Result<pipe::Sender> {
    // Read-write: opening never blocks, and with our own reader present a restart of
    // containerd never turns writes into EPIPE; the data waits for the next reader.
    pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .context(|| format!("open stdio FIFO {}", path.display()))
}

fn open_log_file(path: &Path, create: bool) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if create && let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .context(|| format!("create log directory {}", parent.display()))?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(create)
        .mode(0o644)
        .open(path)
        .context(|| format!("open log file {}", path.display()))
}

fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// What one output stream resolves to.
enum Output {
    Null,
    Fifo(pipe::Sender),
    /// A file the process (or the console copy) appends to directly.
    File(std::fs::File),
}

/// Opens a non-binary output target. A bare path that is not a FIFO is an existing file
/// (containerd's runc shim does the same); `file://` creates the file.
fn open_output(target: &Target) -> Result<Output> {
    Ok(match target {
        Target::Null => Output::Null,
        Target::Fifo(p) if is_fifo(p) => Output::Fifo(open_output_fifo(p)?),
        Target::Fifo(p) => Output::File(open_log_file(p, false)?),
        Target::File(p) => Output::File(open_log_file(p, true)?),
        Target::Binary { .. } => {
            return Err(Error::InvalidArgument(
                "binary:// must be used for stdout".into(),
            ));
        }
    })
}

impl ProcessIo {
    /// Opens containerd's side and creates the process side. Nothing is copied until the
    /// process runs; on error everything opened so far is closed again.
    pub async fn open(
        config: &StdioConfig,
        owner: IoOwner<'_>,
        reaper: &Reaper,
    ) -> Result<ProcessIo> {
        let mut io = ProcessIo {
            process_side: Some(runsc::StdioFds::default()),
            stdin_keepalive: None,
            stdin_fifo: None,
            console_sink: None,
            stdin_copy: None,
            output_copies: Vec::new(),
            drain: watch::channel(false).0,
            logger: None,
            console: None,
        };
        io.open_stdin(&config.stdin)?;
        let out = Target::parse(&config.stdout)?;
        if let Target::Binary { .. } = out {
            io.start_logger(&out, config.terminal, &owner, reaper)
                .await?;
        } else if config.terminal {
            io.console_sink = Some(match open_output(&out)? {
                Output::Null => Box::new(tokio::io::sink()),
                Output::Fifo(tx) => Box::new(tx),
                Output::File(f) => Box::new(tokio::fs::File::from_std(f)),
            });
        } else {
            io.open_outputs(&out, &Target::parse(&config.stderr)?, &owner)?;
            io.pipe_stdin(&owner)?;
        }
        Ok(io)
    }

    fn side(&mut self) -> &mut runsc::StdioFds {
        self.process_side.get_or_insert_with(Default::default)
    }

    /// Opens the stdin FIFO for reading, and a write handle that keeps it from reaching EOF
    /// before the client has opened it.
    fn open_stdin(&mut self, uri: &str) -> Result<()> {
        if uri.is_empty() {
            return Ok(());
        }
        let Target::Fifo(path) = Target::parse(uri)? else {
            return Err(Error::InvalidArgument(format!(
                "stdin {uri:?} must be a FIFO"
            )));
        };
        let rx = pipe::OpenOptions::new()
            .open_receiver(&path)
            .context(|| format!("open stdin FIFO {}", path.display()))?;
        let keep = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags_nonblock()
            .open(&path)
            .context(|| format!("open stdin FIFO {} for writing", path.display()))?;
        self.stdin_keepalive = Some(keep.into());
        self.stdin_fifo = Some(rx);
        Ok(())
    }

    /// A logging binary takes both streams (containerd's runc shim does the same); with a
    /// terminal, the terminal's copy feeds its stdout and its stderr stays empty.
    async fn start_logger(
        &mut self,
        out: &Target,
        terminal: bool,
        owner: &IoOwner<'_>,
        reaper: &Reaper,
    ) -> Result<()> {
        let (out_r, out_w) = pipe_pair("stdout")?;
        let (err_r, err_w) = pipe_pair("stderr")?;
        chown_fd(&out_w, owner.uid, owner.gid)?;
        chown_fd(&err_w, owner.uid, owner.gid)?;
        self.logger = Some(BinaryLogger::start(out, owner, out_r, err_r, reaper).await?);
        if terminal {
            let tx = pipe::Sender::from_owned_fd(out_w).context(|| "logger pipe".to_owned())?;
            self.console_sink = Some(Box::new(tx));
        } else {
            let side = self.side();
            side.stdout = Some(out_w);
            side.stderr = Some(err_w);
        }
        Ok(())
    }

    /// stdout and stderr without a terminal: a FIFO gets a pipe and a copy; a file is handed
    /// to the process directly (once, if both streams name the same file).
    fn open_outputs(&mut self, out: &Target, err: &Target, owner: &IoOwner<'_>) -> Result<()> {
        let same_file = matches!((out, err), (Target::File(a), Target::File(b)) if a == b);
        let outputs = [
            open_output(out)?,
            if same_file {
                Output::Null
            } else {
                open_output(err)?
            },
        ];
        for (i, output) in outputs.into_iter().enumerate() {
            let fd = match output {
                Output::Null => continue,
                // The process writes the file directly: nothing to copy or drain.
                Output::File(f) => OwnedFd::from(f),
                Output::Fifo(sink) => {
                    let (r, w) = pipe_pair(if i == 0 { "stdout" } else { "stderr" })?;
                    chown_fd(&w, owner.uid, owner.gid)?;
                    let src =
                        pipe::Receiver::from_owned_fd(r).context(|| "output pipe".to_owned())?;
                    self.output_copies.push(tokio::spawn(copy::copy_output(
                        copy::Output::Pipe(src),
                        sink,
                        self.drain.subscribe(),
                    )));
                    w
                }
            };
            if i == 0 && same_file {
                self.side().stderr = Some(fd.try_clone().context(|| "dup log file".to_owned())?);
            }
            let side = self.side();
            if i == 0 {
                side.stdout = Some(fd);
            } else {
                side.stderr = Some(fd);
            }
        }
        Ok(())
    }

    /// Without a terminal, stdin reaches the process through a pipe the shim feeds.
    fn pipe_stdin(&mut self, owner: &IoOwner<'_>) -> Result<()> {
        let Some(fifo) = self.stdin_fifo.take() else {
            return Ok(());
        };
        let (r, w) = pipe_pair("stdin")?;
        chown_fd(&r, owner.uid, owner.gid)?;
        let tx = pipe::Sender::from_owned_fd(w).context(|| "stdin pipe".to_owned())?;
        self.stdin_copy = Some(tokio::spawn(copy::copy_input(fifo, copy::Input::Pipe(tx))));
        self.side().stdin = Some(r);
        Ok(())
    }

    /// The descriptors runsc hands to the process (empty after the first call).
    pub fn take_process_side(&mut self) -> runsc::StdioFds {
        self.process_side.take().unwrap_or_default()
    }

    /// Starts copying between a terminal and containerd's side.
    pub fn attach_console(&mut self, console: Console) {
        if let Some(fifo) = self.stdin_fifo.take() {
            let input = copy::Input::Console(console.clone());
            self.stdin_copy = Some(tokio::spawn(copy::copy_input(fifo, input)));
        }
        let sink = self
            .console_sink
            .take()
            .unwrap_or_else(|| Box::new(tokio::io::sink()));
        self.output_copies.push(tokio::spawn(copy::copy_output(
            copy::Output::Console(console.clone()),
            sink,
            self.drain.subscribe(),
        )));
        self.console = Some(console);
    }

    /// The terminal, if the process has one.
    pub fn console(&self) -> Option<&Console> {
        self.console.as_ref()
    }

    /// CloseIO: the client will send no more input. The process sees EOF once the client's
    /// own write end is closed too.
    pub fn close_stdin(&mut self) {
        self.stdin_keepalive = None;
    }

    /// After the process exited: lets the copies deliver what the pipes still hold, then
    /// closes containerd's FIFOs (the client waits for that before it deletes the task). Only
    /// the hand-over happens here; the returned [`Closing`] is awaited without holding any
    /// lock, so no request ever waits on another process's output.
    pub fn drain(&mut self) -> Closing {
        let _ = self.drain.send(true);
        if let Some(stdin) = self.stdin_copy.take() {
            stdin.abort();
        }
        self.stdin_keepalive = None;
        self.stdin_fifo = None;
        self.console_sink = None;
        Closing {
            copies: std::mem::take(&mut self.output_copies),
            logger: None,
        }
    }

    /// Releases everything (at delete): the copies drain, a logging binary stops, the FIFOs
    /// close. As for [`ProcessIo::drain`], the waiting is in the returned [`Closing`].
    pub fn close(&mut self) -> Closing {
        let mut closing = self.drain();
        self.process_side = None;
        self.console = None;
        closing.logger = self.logger.take();
        closing
    }
}

/// Output copies (and a logging binary) being wound down. Dropped without
/// [`Closing::wait`], they are stopped at once.
#[derive(Debug, Default)]
#[must_use = "the copies deliver the last output only if waited for"]
pub struct Closing {
    copies: Vec<JoinHandle<()>>,
    logger: Option<BinaryLogger>,
}

impl Closing {
    /// Waits until the copies delivered what the pipes hold (at most 10 s: only
    /// a reader that stopped reading takes that long), then stops the logging binary.
    pub async fn wait(mut self) {
        let copies = std::mem::take(&mut self.copies);
        let aborts: Vec<_> = copies.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(DRAIN_TIMEOUT, futures::future::join_all(copies))
            .await
            .is_err()
        {
            tracing::warn!("stdio reader stopped reading; dropping undelivered output");
            aborts.iter().for_each(|a| a.abort());
        }
        if let Some(logger) = self.logger.take() {
            logger.stop().await;
        }
    }

    /// Waits for several at once (a task and its execs at delete).
    pub async fn wait_all(all: impl IntoIterator<Item = Closing>) {
        futures::future::join_all(all.into_iter().map(Closing::wait)).await;
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        for copy in self.copies.drain(..) {
            copy.abort();
        }
        if let Some(logger) = self.logger.take() {
            logger.kill_now();
        }
    }
}

impl Drop for ProcessIo {
    /// A ProcessIo dropped without `close` (a failed create) must not leave copy tasks
    /// holding containerd's FIFOs, nor a logging binary running.
    fn drop(&mut self) {
        for copy in self.output_copies.drain(..).chain(self.stdin_copy.take()) {
            copy.abort();
        }
        if let Some(logger) = self.logger.take() {
            logger.kill_now();
        }
    }
}

trait NonblockExt {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonblockExt for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

#[cfg(test)]
mod tests;
