//! The two copy loops: output (a process's pipe or terminal to containerd's side) and input
//! (the stdin FIFO to the process's pipe or terminal).

use std::io;
use std::os::fd::AsFd;

use nix::errno::Errno;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::console::Console;

/// Copy buffer size: the default pipe capacity, so one read empties a full pipe.
const BUF: usize = 64 * 1024;

/// Where a process's output comes from.
pub(super) enum Output {
    /// The process's stdout or stderr pipe.
    Pipe(pipe::Receiver),
    /// Its terminal.
    Console(Console),
}

impl Output {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Output::Pipe(p) => p.read(buf).await,
            Output::Console(c) => c.read(buf).await,
        }
    }

    /// Reads what is there right now; `None` when nothing is (or the source is done).
    fn read_now(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            let r = match self {
                Output::Pipe(p) => nix::unistd::read(p.as_fd(), buf).map_err(io::Error::from),
                Output::Console(c) => c.try_read_now(buf),
            };
            match r {
                Ok(0) => return None,
                Ok(n) => return Some(n),
                Err(e) if e.raw_os_error() == Some(Errno::EINTR as i32) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// Where a process's input goes.
pub(super) enum Input {
    /// The process's stdin pipe (dropped at the end: the process sees EOF).
    Pipe(pipe::Sender),
    /// Its terminal (no EOF of its own: the client's ^D, if any, has been copied).
    Console(Console),
}

impl Input {
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Input::Pipe(p) => p.write_all(buf).await,
            Input::Console(c) => c.write_all(buf).await,
        }
    }
}

/// Resolves once draining was requested (or the requester is gone). The borrow of the
/// channel ends here, not across the copying that follows.
async fn drain_requested(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|d| *d).await;
}

/// Copies `src` to `dst` until it ends, or until draining is requested; then copies what
/// `src` holds right now without waiting for more, and flushes.
pub(super) async fn copy_output<W: AsyncWrite + Unpin>(
    mut src: Output,
    mut dst: W,
    mut drain: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; BUF];
    loop {
        tokio::select! {
            // Draining wins over reading, so a writer that never stops cannot delay it.
            biased;
            () = drain_requested(&mut drain) => {
                while let Some(n) = src.read_now(&mut buf) {
                    if dst.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                break;
            }
            r = src.read(&mut buf) => match r {
                Ok(0) => break,
                Ok(n) if dst.write_all(&buf[..n]).await.is_err() => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            },
        }
    }
    let _ = dst.flush().await;
}

/// Copies the stdin FIFO into the process's input until the FIFO ends.
pub(super) async fn copy_input(mut src: pipe::Receiver, mut dst: Input) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match src.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) if dst.write_all(&buf[..n]).await.is_err() => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}
