//! Terminals: receiving the pty master from runsc and using it.
//!
//! For a process with a terminal, runsc creates the pty and sends the master over the unix
//! socket named by `--console-socket` (the runc console-socket protocol: one message with the
//! descriptor as `SCM_RIGHTS`). The socket lives in a private directory under the runtime
//! directory (a bundle path can be longer than a socket path may be).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::error::{Error, IoContext, Result};

/// A listening console socket. Removed (with its directory) when dropped.
#[derive(Debug)]
pub struct ConsoleSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    /// Creates the socket in a fresh private directory.
    pub fn new() -> Result<ConsoleSocket> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = nix::unistd::mkdtemp(&base.join("runsc-pty.XXXXXX"))
            .context(|| format!("create console socket directory in {}", base.display()))?;
        let path = dir.join("pty.sock");
        let listener = match std::os::unix::net::UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Error::io(
                    format!("bind console socket {}", path.display()),
                    e,
                ));
            }
        };
        Ok(ConsoleSocket {
            dir,
            path,
            listener,
        })
    }

    /// The path to pass as `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits (at most `timeout`) for runsc to send the pty master.
    pub async fn receive(&self, timeout: Duration) -> Result<Console> {
        let recv = async {
            self.listener.set_nonblocking(true)?;
            let listener = tokio::net::UnixListener::from_std(self.listener.try_clone()?)?;
            let (stream, _) = listener.accept().await?;
            loop {
                stream.readable().await?;
                match stream.try_io(Interest::READABLE, || receive_fd(stream.as_raw_fd())) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
        };
        let master = tokio::time::timeout(timeout, recv)
            .await
            .map_err(|_| {
                Error::io(
                    "receive terminal from runsc",
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("nothing arrived within {timeout:?}"),
                    ),
                )
            })?
            .context(|| "receive terminal from runsc".to_owned())?;
        Console::from_master(master).context(|| "use terminal from runsc".to_owned())
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn receive_fd(sock: RawFd) -> io::Result<OwnedFd> {
    let mut name = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut name)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            let mut fds = fds.into_iter();
            if let Some(fd) = fds.next() {
                for extra in fds {
                    // SAFETY: `extra` was just received and is owned by nobody else.
                    drop(unsafe { OwnedFd::from_raw_fd(extra) });
                }
                // SAFETY: the kernel installed this descriptor for us; we are its only owner.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "console socket message carried no descriptor",
    ))
}

/// A pty master, shared by the copy loops and ResizePty.
#[derive(Debug, Clone)]
pub struct Console {
    master: Arc<AsyncFd<OwnedFd>>,
}

impl Console {
    /// Wraps a pty master (made non-blocking).
    pub fn from_master(master: OwnedFd) -> io::Result<Console> {
        let flags = nix::fcntl::fcntl(master.as_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(master.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: `OwnedFd` owns its descriptor: it stays open and refers to the same pty
        // master until the AsyncFd (which owns the OwnedFd) is dropped.
        let fd = unsafe { AsyncFd::register(master) }.map_err(io::Error::from)?;
        Ok(Console {
            master: Arc::new(fd),
        })
    }

    /// Reads terminal output. The end of the terminal (`EIO` once the other side is
    /// closed) reads as 0.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|fd| read_master(fd.get_ref(), buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads what is available now, without waiting (`WouldBlock` when nothing is).
    pub fn try_read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_master(self.master.get_ref(), buf)
    }

    /// Writes all of `buf` to the terminal.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    /// Sets the terminal size.
    pub fn resize(&self, width: u32, height: u32) -> io::Result<()> {
        let ws = libc::winsize {
            ws_row: u16::try_from(height).unwrap_or(u16::MAX),
            ws_col: u16::try_from(width).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the call.
        let rc = unsafe { libc::ioctl(self.master.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn read_master(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    match nix::unistd::read(fd, buf) {
        Ok(n) => Ok(n),
        // The slave side is closed: the terminal is over.
        Err(Errno::EIO) => Ok(0),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real pty pair: output written to the slave comes out of the console, input written
    /// to the console reaches the slave, resize sets the slave's size, and closing the slave
    /// ends the output.
    #[tokio::test]
    async fn pty_round_trip() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let console = Console::from_master(pty.master).unwrap();
        nix::unistd::write(&pty.slave, b"hello\n").unwrap();
        let mut buf = [0u8; 64];
        let n = console.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("hello"));

        console.resize(120, 40).unwrap();
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the valid pointer.
        let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_col, ws.ws_row), (120, 40));

        drop(pty.slave);
        loop {
            match console.read(&mut buf).await {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[tokio::test]
    async fn console_socket_receives_a_descriptor() {
        use nix::sys::socket::{ControlMessage, sendmsg};
        let sock = ConsoleSocket::new().unwrap();
        let path = sock.path().to_path_buf();
        let pty = nix::pty::openpty(None, None).unwrap();
        let master_raw = pty.master.as_raw_fd();
        let sender = std::thread::spawn(move || {
            let s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            let fds = [master_raw];
            let iov = [io::IoSlice::new(b"/dev/pts/x")];
            sendmsg::<()>(
                s.as_raw_fd(),
                &iov,
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .unwrap();
        });
        let console = sock.receive(Duration::from_secs(5)).await.unwrap();
        sender.join().unwrap();
        nix::unistd::write(&pty.slave, b"x").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(console.read(&mut buf).await.unwrap(), 1);
        let dir = sock.path().parent().unwrap().to_path_buf();
        drop(sock);
        assert!(!dir.exists(), "socket directory must be removed");
    }

    #[tokio::test]
    async fn console_socket_times_out() {
        let sock = ConsoleSocket::new().unwrap();
        let err = sock.receive(Duration::from_millis(50)).await.unwrap_err();
        assert!(err.chain().contains("nothing arrived"), "{}", err.chain());
    }
}
