//! The copy loops between process pipes or terminals and containerd's side.

use std::io;
use std::os::fd::AsFd;

use nix::errno::Errno;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::console::Console;

/// Copy buffer size: the default pipe capacity, so one read empties a full pipe.
const BUF: usize = 64 * 1024;

/// Resolves once draining was requested (or the requester is gone).
async fn drain_requested(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|d| *d).await;
}

/// Copies a process's output pipe to `dst` until EOF, or until draining is requested; then
/// copies whatever the pipe holds without waiting for more.
pub(super) async fn copy_output<W: AsyncWrite + Unpin>(
    mut src: pipe::Receiver,
    mut dst: W,
    mut drain: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; BUF];
    loop {
        tokio::select! {
            // Draining wins over reading, so a writer that never stops cannot delay it.
            biased;
            () = drain_requested(&mut drain) => {
                loop {
                    match nix::unistd::read(src.as_fd(), &mut buf) {
                        Ok(0) | Err(Errno::EAGAIN) => break,
                        Ok(n) => {
                            if dst.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        Err(Errno::EINTR) => continue,
                        Err(_) => break,
                    }
                }
                break;
            }
            r = src.read(&mut buf) => match r {
                Ok(0) => break,
                Ok(n) => {
                    if dst.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            },
        }
    }
    let _ = dst.flush().await;
}

/// Copies the stdin FIFO into the process's stdin pipe; closes the pipe at EOF.
pub(super) async fn copy_stdin(mut src: pipe::Receiver, mut dst: pipe::Sender) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match src.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if dst.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    // Dropping `dst` closes the process's stdin.
}

/// Copies terminal output to `dst` until the terminal closes, or drains it on request.
pub(super) async fn copy_console<W: AsyncWrite + Unpin>(
    console: Console,
    mut dst: W,
    mut drain: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; BUF];
    loop {
        tokio::select! {
            biased;
            () = drain_requested(&mut drain) => {
                while let Ok(n) = console.try_read_now(&mut buf) {
                    if n == 0 || dst.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                break;
            }
            r = console.read(&mut buf) => match r {
                Ok(0) => break,
                Ok(n) => {
                    if dst.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                Err(_) => break,
            },
        }
    }
    let _ = dst.flush().await;
}

/// Copies the stdin FIFO into the terminal. A terminal has no separate EOF: at the end of
/// input the client's ^D (if any) has already been copied.
pub(super) async fn copy_to_console(mut src: pipe::Receiver, console: Console) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match src.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if console.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}
