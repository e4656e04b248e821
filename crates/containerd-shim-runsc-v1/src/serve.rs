//! The long-running shim: serves the Task API on the socket `start` bound (fd 3).

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::flags::Flags;
use anyhow::Context;
use runsc_shim::Service;
use runsc_shim::reaper::{Reaper, ReaperSpawner};
use tokio::signal::unix::{SignalKind, signal};

use crate::logging;
use crate::publisher::Publisher;
use crate::task::TaskService;

/// The listening socket `start` passes.
const LISTENER_FD: RawFd = 3;

pub(crate) fn run(flags: &Flags) -> anyhow::Result<()> {
    // One thread: a shim mostly waits, and every extra thread costs memory on a node running
    // hundreds of sandboxes. Blocking work (mounts) goes to tokio's blocking pool.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .thread_keep_alive(Duration::from_secs(5))
        .build()
        .context("start runtime")?;
    rt.block_on(serve(flags))
}

async fn serve(flags: &Flags) -> anyhow::Result<()> {
    let logs = logging::init(flags.debug);
    tracing::info!(id = %flags.id, namespace = %flags.namespace, version = crate::VERSION, "shim starting");
    let reaper = Reaper::start_subreaper().context("become child subreaper")?;
    let publisher = Publisher::start(std::env::var("TTRPC_ADDRESS").ok(), flags.namespace.clone());
    let svc = Service::new(
        flags.namespace.clone(),
        reaper.clone(),
        Arc::new(ReaperSpawner(reaper)),
        Arc::new(publisher.clone()),
    );
    let mut services = TaskService::new(svc.clone(), logs).services();
    services.extend(crate::sandbox::SandboxService::services());
    // SAFETY: fd 3 is the listening socket `start` placed there for this process; nothing
    // else in this process uses it, and the server takes ownership.
    let server = unsafe { ttrpc::r#async::Server::new().add_unix_listener(LISTENER_FD) }
        .context("use the listening socket (fd 3)")?;
    let mut server = server.register_service(services);
    server.start().await.context("start ttrpc server")?;

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let socket_path = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket);
    loop {
        tokio::select! {
            () = svc.shutdown_requested() => break,
            () = abandoned(&svc, socket_path) => {
                tracing::info!("no task and no client left: exiting");
                break;
            }
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        // A signal: leave only if no task is left; running sandboxes must never lose
        // their shim (they would be unmanageable).
        if svc.shutdown() {
            break;
        }
        tracing::warn!(
            tasks = svc.task_count(),
            "termination signal ignored while tasks exist"
        );
    }
    tracing::info!("shim shutting down");
    // The socket file goes first: containerd returns from a task delete once the connection
    // closes, and by then nothing of the shim may be left on disk (its client suite checks).
    // Connections already made are not affected by the unlink.
    if let Some(path) = flags.socket.strip_prefix("unix://") {
        let _ = std::fs::remove_file(path);
    }
    // Let the Shutdown reply reach containerd before connections close.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await;
    publisher.flush(Duration::from_secs(3)).await;
    Ok(())
}

/// How long a shim may hold no task and have no client before it exits. containerd connects
/// right after `start` returns and creates the task at once; this is only for a shim nobody
/// will use: its Create failed (a missing image, a Sandbox API call, a bad config) and
/// containerd, which sends Shutdown only to shims that had tasks, closed the connection.
const ABANDONED_AFTER: Duration = Duration::from_secs(10);

/// Resolves once the shim has had no task (none being created either) and no client
/// connection for [`ABANDONED_AFTER`].
async fn abandoned(svc: &Service, socket_path: &str) {
    let mut idle_since: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if !svc.is_idle() || client_connections(socket_path) > 0 {
            idle_since = None;
            continue;
        }
        let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= ABANDONED_AFTER {
            return;
        }
    }
}

/// Connections accepted on the shim socket and still open: the kernel lists each accepted
/// socket in `/proc/net/unix` with the listener's path and state 03 (connected).
fn client_connections(socket_path: &str) -> usize {
    std::fs::read_to_string("/proc/net/unix")
        .map(|table| count_connected(&table, socket_path))
        .unwrap_or(0)
}

/// Counts the connected (`St` = 03) entries for `path` in a `/proc/net/unix` table.
fn count_connected(table: &str, path: &str) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path
            fields.len() >= 8 && fields[5] == "03" && fields[7] == path
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_connections_on_the_socket() {
        let table = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 100 /run/containerd/s/abc
0000000000000000: 00000003 00000000 00000000 0001 03 101 /run/containerd/s/abc
0000000000000000: 00000003 00000000 00000000 0001 03 102
0000000000000000: 00000003 00000000 00000000 0001 03 103 /run/containerd/s/other
";
        assert_eq!(count_connected(table, "/run/containerd/s/abc"), 1);
        assert_eq!(count_connected(table, "/run/containerd/s/none"), 0);
    }

    #[test]
    fn counts_a_real_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let p = path.to_str().unwrap();
        assert_eq!(client_connections(p), 0);
        let client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        assert_eq!(client_connections(p), 1);
        drop(client);
        drop(server_side);
        assert_eq!(client_connections(p), 0);
    }
}
