//! Checkpoint of a task's sandbox, and the restore of a task created from a checkpoint.
//!
//! runsc checkpoints and restores a whole sandbox, so only a container that is a sandbox of
//! its own (`ctr run`, nerdctl) can be checkpointed or restored; the containers of a CRI pod
//! cannot. containerd publishes TaskCheckpointed itself once the Checkpoint call returns.
//!
//! Measured with the Debian runsc builds:
//! - 20240729: `runsc checkpoint` works on a running or a paused container, and with
//!   `--leave-running` leaves it as it was. Without it, the sandbox exits (a paused one once it
//!   is resumed). A restore is `runsc create`, then `runsc restore --detach` into the created
//!   container, which keeps the sandbox (pid, stdio) of the create.
//! - 20221219: `--leave-running` destroys the sandbox and restores a new one in the
//!   foreground (and panics on a paused container), so it is refused. A restore is `runsc
//!   restore --detach` with no prior create: it makes the sandbox, which gets the stdio of the
//!   restore process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use runsc::{CheckpointOpts, RestoreOpts, Runsc, StdioFds};

use super::create::CreateRequest;
use super::{Inner, Service, read_pid};
use crate::container::{Container, RestoreFrom};
use crate::error::{Error, IoContext, Result};
use crate::events::Event;
use crate::io::ConsoleSocket;
use crate::process::Status;
use crate::spec::ContainerKind;

/// The first runsc release measured to restore into a created container and to leave a
/// container running after a checkpoint. Older builds are handled like 20221219.
const RESTORE_INTO_CREATED_SINCE: u32 = 20240729;

/// The file `runsc checkpoint` writes into the image directory.
const IMAGE_FILE: &str = "checkpoint.img";

/// A Checkpoint request.
#[derive(Debug, Clone, Default)]
pub struct CheckpointRequest {
    /// The directory containerd asks the image to be written to.
    pub path: PathBuf,
    /// Whether the task exits after the checkpoint (otherwise it goes on running).
    pub exit: bool,
    /// A directory the image is also to be placed in (runc's `image_path` option).
    pub image_path: Option<PathBuf>,
}

/// Why a task cannot be checkpointed or restored because of where it runs, if it cannot.
fn refuse_pod(id: &str, kind: &ContainerKind, what: &str) -> Result<()> {
    match kind {
        ContainerKind::Standalone => Ok(()),
        ContainerKind::PodSandbox => Err(Error::FailedPrecondition(format!(
            "cannot {what} task {id}: it is the sandbox container of a pod; runsc checkpoints \
             and restores whole sandboxes, and containerd cannot restore a pod's containers \
             from one image"
        ))),
        ContainerKind::PodContainer { sandbox_id } => Err(Error::FailedPrecondition(format!(
            "cannot {what} task {id}: it is one container of pod sandbox {sandbox_id}; runsc \
             checkpoints and restores whole sandboxes, not one container of a pod"
        ))),
    }
}

/// The release date of the runsc binary, if its version says.
async fn runsc_date(runsc: &Runsc) -> (Option<u32>, String) {
    match runsc.version().await {
        Ok(v) => (v.date(), v.version),
        Err(e) => {
            tracing::warn!(error = %e, "runsc --version failed");
            (None, "of unknown version".to_owned())
        }
    }
}

/// Checks a restore request at Create and decides how runsc restores.
pub(super) async fn restore_plan(
    req: &CreateRequest,
    kind: &ContainerKind,
    image: &Path,
    runsc: &Runsc,
) -> Result<RestoreFrom> {
    refuse_pod(&req.id, kind, "restore")?;
    let file = image.join(IMAGE_FILE);
    if !file.is_file() {
        return Err(Error::InvalidArgument(format!(
            "cannot restore task {} from checkpoint {}: it has no {IMAGE_FILE} (not a runsc \
             checkpoint, or it is missing)",
            req.id,
            image.display()
        )));
    }
    let (date, version) = runsc_date(runsc).await;
    let into_created = date.is_none_or(|d| d >= RESTORE_INTO_CREATED_SINCE);
    tracing::info!(id = %req.id, image = %image.display(), runsc = %version, into_created, "task to be restored from a checkpoint at start");
    Ok(RestoreFrom {
        image: image.to_path_buf(),
        into_created,
    })
}

/// Copies the files of directory `from` into `to` (made if missing).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).context(|| format!("create {}", to.display()))?;
    for entry in std::fs::read_dir(from).context(|| format!("read {}", from.display()))? {
        let entry = entry.context(|| format!("read {}", from.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let dest = to.join(entry.file_name());
            std::fs::copy(entry.path(), &dest).context(|| format!("write {}", dest.display()))?;
        }
    }
    Ok(())
}

impl Service {
    /// Checkpoint: `runsc checkpoint` of the task's sandbox into `req.path`. The task must be
    /// running or paused (containerd pauses it around a checkpoint), and a sandbox of its own.
    pub async fn checkpoint(&self, id: &str, req: CheckpointRequest) -> Result<()> {
        let c = self.inner.container(id)?;
        refuse_pod(id, &c.kind, "checkpoint")?;
        let p = c.init.clone();
        let _lifecycle = p.lifecycle.lock().await;
        let status = p.snapshot().status;
        if !matches!(status, Status::Running | Status::Paused) {
            return Err(Error::FailedPrecondition(format!(
                "cannot checkpoint task {id}: it is {}",
                format!("{status:?}").to_lowercase()
            )));
        }
        let image = match (&req.path, &req.image_path) {
            (p, _) if !p.as_os_str().is_empty() => p.clone(),
            (_, Some(p)) if !p.as_os_str().is_empty() => p.clone(),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "cannot checkpoint task {id}: no image path given"
                )));
            }
        };
        if !req.exit {
            let (date, version) = runsc_date(&c.runsc).await;
            if date.is_some_and(|d| d < RESTORE_INTO_CREATED_SINCE) {
                return Err(Error::Unimplemented(format!(
                    "cannot checkpoint task {id} and leave it running: runsc {version} \
                     destroys the sandbox and restores a new one for that; checkpoint with \
                     exit, or use runsc {RESTORE_INTO_CREATED_SINCE} or newer"
                )));
            }
        }
        std::fs::create_dir_all(&image).context(|| format!("create {}", image.display()))?;
        let started = Instant::now();
        c.runsc
            .checkpoint(
                id,
                &CheckpointOpts {
                    image_path: image.clone(),
                    leave_running: !req.exit,
                    extra: c
                        .config
                        .runsc_checkpoint
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                },
            )
            .await
            .map_err(|e| {
                Error::runsc(format!("checkpoint task {id} into {}", image.display()), e)
            })?;
        tracing::info!(id, image = %image.display(), exit = req.exit, ms = started.elapsed().as_millis() as u64, "checkpointed");
        if req.exit && status == Status::Paused {
            // A checkpointed sandbox exits once it runs again; its exit is then reported as
            // for any task.
            if let Err(e) = c.runsc.resume(id).await {
                tracing::warn!(id, error = %e, "resume after checkpoint failed");
            }
        }
        if let Some(also) = req.image_path.as_ref().filter(|p| **p != image) {
            copy_dir(&image, also)?;
        }
        Ok(())
    }
}

impl Inner {
    /// Start of a task created from a checkpoint: `runsc restore`. The caller holds the init
    /// process's lifecycle lock. On failure no sandbox is left: the task ends (into a created
    /// container) or stays created (runsc 20221219), to be deleted as usual.
    pub(super) async fn start_restored(
        self: &Arc<Self>,
        c: &Arc<Container>,
        restore: &RestoreFrom,
    ) -> Result<u32> {
        let p = c.init.clone();
        let id = c.id.as_str();
        let failed = |e: runsc::Error| {
            // What runsc says when the image's state types are not its own.
            let foreign = e.to_string().contains("error decoding object");
            let hint = if foreign {
                ", which this runsc cannot read (made by another runsc build?)"
            } else {
                ""
            };
            Error::runsc(
                format!(
                    "restore task {id} from checkpoint {}{hint}",
                    restore.image.display()
                ),
                e,
            )
        };
        let since = Instant::now();
        let mut opts = RestoreOpts {
            image_path: restore.image.clone(),
            bundle: c.bundle.clone(),
            ..Default::default()
        };
        if restore.into_created {
            if let Err(e) = c.runsc.restore(id, &opts, StdioFds::default()).await {
                // The created sandbox goes; its exit ends the task.
                if let Err(d) = self.runsc_delete(c).await {
                    tracing::warn!(id, error = %d, "delete after a failed restore failed");
                }
                return Err(failed(e));
            }
        } else {
            let pid_file = c.bundle.join("init.pid");
            opts.pid_file = Some(pid_file.clone());
            let console_socket = if p.stdio.terminal {
                Some(ConsoleSocket::new()?)
            } else {
                None
            };
            opts.console_socket = console_socket.as_ref().map(|s| s.path().to_path_buf());
            let stdio = p
                .io()
                .as_mut()
                .map(|io| io.take_process_side())
                .unwrap_or_default();
            if let Err(e) = c.runsc.restore(id, &opts, stdio).await {
                if let Err(d) = self.runsc_delete(c).await {
                    tracing::warn!(id, error = %d, "delete after a failed restore failed");
                }
                return Err(failed(e));
            }
            let pid = match read_pid(&pid_file) {
                Ok(pid) => pid,
                Err(e) => {
                    let _ = self.runsc_delete(c).await;
                    return Err(e);
                }
            };
            if let Some(socket) = &console_socket {
                let console = socket.receive(self.options.console_timeout).await?;
                if let Some(io) = p.io().as_mut() {
                    io.attach_console(console.clone());
                }
                p.set_console(console);
            }
            p.state().pid = pid as u32;
            let exit = self.reaper.watch(pid, since);
            self.watch_exit(c.clone(), p.clone(), exit);
        }
        let pid = {
            let mut st = p.state();
            st.transition(Status::Running)?;
            st.pid
        };
        tracing::info!(
            id,
            pid,
            ms = since.elapsed().as_millis() as u64,
            "restored from checkpoint"
        );
        self.publish(Event::Start {
            container_id: id.to_owned(),
            pid,
        });
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_refused_with_the_reason() {
        refuse_pod("c", &ContainerKind::Standalone, "checkpoint").unwrap();
        let e = refuse_pod(
            "app",
            &ContainerKind::PodContainer {
                sandbox_id: "pod1".into(),
            },
            "checkpoint",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("pod sandbox pod1") && e.contains("whole sandboxes"),
            "{e}"
        );
        let e = refuse_pod("pause", &ContainerKind::PodSandbox, "restore")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot restore task pause"), "{e}");
    }

    #[test]
    fn image_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b/c"));
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join(IMAGE_FILE), b"img").unwrap();
        copy_dir(&a, &b).unwrap();
        assert_eq!(std::fs::read(b.join(IMAGE_FILE)).unwrap(), b"img");
    }
}
