//! The long-running shim: serves the Task API on the socket `start` bound (fd 3).

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use containerd_shim::Flags;
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
    let services = TaskService::new(svc.clone(), logs).services();
    // SAFETY: fd 3 is the listening socket `start` placed there for this process; nothing
    // else in this process uses it, and the server takes ownership.
    let server = unsafe { ttrpc::r#async::Server::new().add_unix_listener(LISTENER_FD) }
        .context("use the listening socket (fd 3)")?;
    let mut server = server.register_service(services);
    server.start().await.context("start ttrpc server")?;

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            () = svc.shutdown_requested() => break,
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
