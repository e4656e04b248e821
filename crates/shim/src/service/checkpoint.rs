//! Checkpoint of a task's sandbox, and the restore of a task created from a checkpoint.
//!
//! runsc checkpoints and restores a whole sandbox. A container that is a sandbox of its own
//! (`ctr run`, nerdctl) is checkpointed and restored through containerd's task API. A CRI
//! pod is checkpointed as a whole through its sandbox (pause) container, and restored as a
//! whole into a new pod whose sandbox carries [`RESTORE_POD_ANNOTATION`]: the new pod's
//! containers are restored from the image as they are created (runsc 20240729 and later:
//! runsc matches them by their CRI container name and resumes the sandbox once the last one
//! is back). One container of a pod cannot be checkpointed or restored on its own.
//! containerd publishes TaskCheckpointed itself once the Checkpoint call returns.
//!
//! Measured with the Debian runsc builds:
//! - 20240729: `runsc checkpoint` works on a running or a paused container, and with
//!   `--leave-running` leaves it as it was. Without it, the sandbox exits (a paused one once it
//!   is resumed). A restore is `runsc create`, then `runsc restore --detach` into the created
//!   container, which keeps the sandbox (pid, stdio) of the create.
//! - 20221219: `--leave-running` destroys the sandbox and restores a new one in the
//!   foreground (and panics on a paused container), so it is refused. A restore is `runsc
//!   restore --detach` with no prior create: it makes the sandbox, which gets the stdio of the
//!   restore process. It cannot restore a sandbox of several containers.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use runsc::{CheckpointOpts, RestoreOpts, Runsc};

use super::create::CreateRequest;
use super::{Inner, Service, read_pid};
use crate::container::{Container, PodRestore, RestoreFrom};
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

/// The pod annotation that makes a new pod the restore of a pod checkpoint: the image
/// directory. containerd passes it to the runtime when the runtime's `pod_annotations` lists
/// it (`pod_annotations = ["dev.gvisor.*"]`).
pub const RESTORE_POD_ANNOTATION: &str = "dev.gvisor.restore.image-path";

/// The magic bytes a runsc state file starts with; an 8-byte big-endian length and that many
/// bytes of JSON metadata (a map of strings) follow.
const STATE_MAGIC: &[u8; 8] = b"gVisorSF";

/// The largest metadata runsc writes (its own limit).
const MAX_METADATA: u64 = 16 << 20;

/// The file a pod checkpoint also gets: the CRI names of the pod's containers, which the
/// restore matches the new pod's containers against (runsc's image does not say).
const POD_NAMES_FILE: &str = "pod.json";

fn write_pod_names(image: &Path, names: &[String]) -> Result<()> {
    let path = image.join(POD_NAMES_FILE);
    let text = serde_json::json!({ "containers": names }).to_string();
    std::fs::write(&path, text).context(|| format!("write {}", path.display()))
}

/// The container names a pod checkpoint recorded; `None` for an image without them (made
/// by runsc itself).
fn read_pod_names(image: &Path) -> std::result::Result<Option<Vec<String>>, String> {
    let path = image.join(POD_NAMES_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    #[derive(serde::Deserialize)]
    struct PodNames {
        containers: Vec<String>,
    }
    serde_json::from_slice::<PodNames>(&text)
        .map(|p| Some(p.containers))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// How many containers the sandbox saved in a state file held: its metadata's
/// `container_count` (1 when absent, as runsc assumes).
fn image_containers(file: &Path) -> std::result::Result<u32, String> {
    let mut f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut head = [0u8; 16];
    f.read_exact(&mut head)
        .map_err(|_| "too short for a runsc state file".to_owned())?;
    if &head[..8] != STATE_MAGIC {
        return Err("not a runsc state file (bad magic header)".into());
    }
    let len = u64::from_be_bytes(head[8..].try_into().unwrap_or_default());
    if len > MAX_METADATA {
        return Err(format!("metadata length {len} is out of range"));
    }
    let mut meta = Vec::new();
    f.take(len)
        .read_to_end(&mut meta)
        .map_err(|e| e.to_string())?;
    let map: std::collections::HashMap<String, String> =
        serde_json::from_slice(&meta).map_err(|e| format!("unreadable metadata: {e}"))?;
    match map.get("container_count") {
        None => Ok(1),
        Some(n) => n
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("invalid container_count {n:?}")),
    }
}

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
/// A pod sandbox can be checkpointed (the whole pod) but not restored through containerd's
/// checkpoint path: a pod is restored through [`RESTORE_POD_ANNOTATION`].
fn refuse_pod(id: &str, kind: &ContainerKind, what: &str) -> Result<()> {
    match kind {
        ContainerKind::Standalone => Ok(()),
        ContainerKind::PodSandbox if what == "checkpoint" => Ok(()),
        ContainerKind::PodSandbox => Err(Error::FailedPrecondition(format!(
            "cannot {what} task {id} from a containerd checkpoint: it is the sandbox \
             container of a pod, and containerd cannot restore a pod's containers from one \
             image; restore a pod with the pod annotation {RESTORE_POD_ANNOTATION}"
        ))),
        ContainerKind::PodContainer { sandbox_id } => Err(Error::FailedPrecondition(format!(
            "cannot {what} task {id}: it is one container of pod sandbox {sandbox_id}; runsc \
             checkpoints and restores whole sandboxes, not one container of a pod (checkpoint \
             the pod through its sandbox {sandbox_id})"
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
async fn restore_plan(
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

/// The restore of a new pod from a pod checkpoint, if its sandbox's spec asks for one with
/// [`RESTORE_POD_ANNOTATION`]. Checked at the sandbox's Create: the image must be a runsc
/// state file and runsc able to restore several containers into one sandbox.
async fn pod_restore_plan(
    id: &str,
    kind: &ContainerKind,
    spec: &serde_json::Value,
    runsc: &Runsc,
) -> Result<Option<PodRestore>> {
    let Some(image) = spec
        .get("annotations")
        .and_then(|a| a.get(RESTORE_POD_ANNOTATION))
        .and_then(serde_json::Value::as_str)
    else {
        return Ok(None);
    };
    match kind {
        ContainerKind::PodSandbox => {}
        // containerd copies the pod's passed-through annotations into each container's
        // spec too; a pod's container is restored with its sandbox.
        ContainerKind::PodContainer { .. } => return Ok(None),
        ContainerKind::Standalone => {
            return Err(Error::InvalidArgument(format!(
                "cannot create task {id}: annotation {RESTORE_POD_ANNOTATION} restores a pod \
                 (a pod annotation); a container of its own is restored from a containerd \
                 checkpoint (`ctr container restore`)"
            )));
        }
    }
    let image = PathBuf::from(image);
    let refuse = |why: String| {
        Error::InvalidArgument(format!(
            "cannot restore pod sandbox {id} from {} (annotation {RESTORE_POD_ANNOTATION}): \
             {why}",
            image.display()
        ))
    };
    if !image.is_absolute() {
        return Err(refuse("the path must be absolute".into()));
    }
    let file = image.join(IMAGE_FILE);
    if !file.is_file() {
        return Err(refuse(format!(
            "it has no {IMAGE_FILE} (not a runsc checkpoint, or it is missing)"
        )));
    }
    let containers = image_containers(&file).map_err(|e| refuse(format!("{IMAGE_FILE}: {e}")))?;
    let (date, version) = runsc_date(runsc).await;
    if date.is_some_and(|d| d < RESTORE_INTO_CREATED_SINCE) {
        return Err(refuse(format!(
            "runsc {version} cannot restore a pod; runsc {RESTORE_INTO_CREATED_SINCE} or newer \
             can"
        )));
    }
    let names = read_pod_names(&image).map_err(refuse)?;
    if let Some(names) = names.as_ref().filter(|n| n.len() as u32 != containers - 1) {
        return Err(refuse(format!(
            "{POD_NAMES_FILE} names {} containers, {IMAGE_FILE} holds {}",
            names.len(),
            containers - 1
        )));
    }
    tracing::info!(id, image = %image.display(), containers, names = ?names, runsc = %version, "pod sandbox to be restored from a checkpoint");
    Ok(Some(PodRestore::new(image, containers - 1, names)))
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
        let pod_names = if c.kind == ContainerKind::PodSandbox {
            Some(self.check_pod_checkpoint(&c).await?)
        } else {
            None
        };
        if pod_names.is_none() && !req.exit {
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
        if let Some(Some(names)) = &pod_names {
            write_pod_names(&image, names)?;
        }
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

impl Service {
    /// A pod is checkpointed whole, and restored into a new pod container by container: every
    /// container in the image must come back, so none may have exited (an init container, a
    /// finished job), and runsc must be able to restore several containers.
    /// Returns the CRI names of the pod's containers (`None` if one has none).
    async fn check_pod_checkpoint(&self, sandbox: &Container) -> Result<Option<Vec<String>>> {
        let id = sandbox.id.as_str();
        let (date, version) = runsc_date(&sandbox.runsc).await;
        if date.is_some_and(|d| d < RESTORE_INTO_CREATED_SINCE) {
            return Err(Error::Unimplemented(format!(
                "cannot checkpoint pod sandbox {id}: runsc {version} cannot restore a pod; \
                 runsc {RESTORE_INTO_CREATED_SINCE} or newer can"
            )));
        }
        let members: Vec<Arc<Container>> = self
            .inner
            .table()
            .values()
            .filter(|c| c.kind != ContainerKind::PodSandbox && c.sandbox_id == id)
            .cloned()
            .collect();
        let mut idle: Vec<String> = members
            .iter()
            .filter(|c| !matches!(c.init.snapshot().status, Status::Running | Status::Paused))
            .map(|c| c.id.clone())
            .collect();
        if !idle.is_empty() {
            // containerd deletes the task of a container that exited; one still here was
            // never started, or has only just exited.
            idle.sort();
            return Err(Error::FailedPrecondition(format!(
                "cannot checkpoint pod sandbox {id}: its containers {idle:?} are not running; \
                 a restore brings back every container of the sandbox, so start or remove them \
                 first"
            )));
        }
        if sandbox
            .pod_restore
            .as_ref()
            .is_some_and(|r| r.remaining() > 0)
        {
            return Err(Error::FailedPrecondition(format!(
                "cannot checkpoint pod sandbox {id}: it is still being restored"
            )));
        }
        Ok(members.iter().map(|c| c.cri_name.clone()).collect())
    }
}

/// How a task being created comes back from a checkpoint, if it does.
pub(super) struct Restores {
    /// The task's own restore at Start.
    pub restore: Option<RestoreFrom>,
    /// For a pod sandbox restored from a pod checkpoint: its containers still to come.
    pod: Option<PodRestore>,
    /// The pod sandbox being restored that this container joins.
    joining: Option<Arc<Container>>,
    /// The task's CRI container name.
    cri_name: Option<String>,
}

impl Restores {
    /// Records the plan in the created container; a container joining a pod being restored
    /// takes its place in the pod's restore (it is restored, or started as usual once the
    /// pod is back).
    pub(super) fn apply(self, c: &mut Container) -> Result<()> {
        c.restore = self.restore;
        c.pod_restore = self.pod;
        if let Some(r) = self.joining.as_ref().and_then(|s| s.pod_restore.as_ref()) {
            c.restore = r.take(self.cri_name.as_deref()).map_err(|why| {
                Error::FailedPrecondition(format!("cannot create task {}: {why}", c.id))
            })?;
        }
        c.cri_name = self.cri_name;
        Ok(())
    }
}

impl Inner {
    /// Decides at Create how the task comes back from a checkpoint: containerd's checkpoint
    /// path (a container of its own), a pod sandbox's restore annotation, or its pod's
    /// restore (a pod's container, refused here, before anything is made, if the pod's image
    /// does not hold it).
    pub(super) async fn plan_restores(
        &self,
        req: &CreateRequest,
        kind: &ContainerKind,
        spec: &serde_json::Value,
        runsc: &Runsc,
    ) -> Result<Restores> {
        let mut restore = match &req.checkpoint {
            Some(image) => Some(restore_plan(req, kind, image, runsc).await?),
            None => None,
        };
        let cri_name = spec
            .pointer("/annotations")
            .and_then(|a| a.get(crate::spec::CRI_CONTAINER_NAME))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let joining = match kind {
            ContainerKind::PodContainer { sandbox_id } => self.table().get(sandbox_id).cloned(),
            _ => None,
        };
        if let Some(r) = joining.as_ref().and_then(|s| s.pod_restore.as_ref()) {
            r.check(cri_name.as_deref()).map_err(|why| {
                Error::FailedPrecondition(format!("cannot create task {}: {why}", req.id))
            })?;
        }
        let pod = pod_restore_plan(&req.id, kind, spec, runsc).await?;
        if let Some(p) = &pod {
            restore = Some(RestoreFrom {
                image: p.image.clone(),
                into_created: true,
            });
        }
        Ok(Restores {
            restore,
            pod,
            joining,
            cri_name,
        })
    }

    /// The pod sandbox of `c` (or `c` itself), if it is being restored from a pod checkpoint
    /// and still waits for containers of the image: until they are all back, nothing runs in
    /// it.
    pub(super) fn restore_pending(&self, c: &Container) -> Option<Arc<Container>> {
        self.table()
            .get(&c.sandbox_id)
            .filter(|s| s.pod_restore.as_ref().is_some_and(|r| r.remaining() > 0))
            .filter(|s| s.init.snapshot().status == Status::Running)
            .cloned()
    }

    /// A signal for a container of a pod whose restore still waits for containers: runsc
    /// cannot deliver it (no process runs until the restore completes), so the sandbox is
    /// ended, as the pod cannot run without the containers it waits for. Its exit ends every
    /// container of the pod.
    pub(super) fn end_pending_restore(&self, c: &Container, signal: u32) {
        let Some(sandbox) = self.restore_pending(c) else {
            return;
        };
        let pid = sandbox.init.snapshot().pid;
        let waiting = sandbox
            .pod_restore
            .as_ref()
            .map(PodRestore::remaining)
            .unwrap_or(0);
        tracing::warn!(
            id = %c.id,
            sandbox = %sandbox.id,
            signal,
            waiting,
            "signal for a pod whose restore waits for containers: ending the sandbox"
        );
        if pid > 0 {
            // The sandbox process is this shim's child until it is reaped: the pid is its.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

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
            let stdio = super::lifecycle::start_stdio(c);
            if let Err(e) = c.runsc.restore(id, &opts, stdio).await {
                // The created container goes; for a root container its sandbox's exit ends
                // the task, a pod's container is ended here.
                if let Err(d) = self.runsc_delete(c).await {
                    tracing::warn!(id, error = %d, "delete after a failed restore failed");
                }
                if !c.kind.is_root() {
                    self.finish(c, &p, 255).await;
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
        let waiting = self
            .table()
            .get(&c.sandbox_id)
            .and_then(|s| s.pod_restore.as_ref().map(PodRestore::remaining))
            .unwrap_or(0);
        tracing::info!(
            id,
            pid,
            ms = since.elapsed().as_millis() as u64,
            pod_containers_to_come = waiting,
            "restored from checkpoint"
        );
        self.publish(Event::Start {
            container_id: id.to_owned(),
            pid,
        });
        if !c.kind.is_root() {
            super::lifecycle::place_gofer(c);
            self.watch_sub_container(c.clone(), since);
            self.guard_memory(c.clone());
        }
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_file(dir: &Path, metadata: &[u8]) -> PathBuf {
        let path = dir.join(IMAGE_FILE);
        let mut bytes = STATE_MAGIC.to_vec();
        bytes.extend_from_slice(&(metadata.len() as u64).to_be_bytes());
        bytes.extend_from_slice(metadata);
        bytes.extend_from_slice(b"state data");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn container_count_from_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = state_file(dir.path(), br#"{"container_count":"3","other":"x"}"#);
        assert_eq!(image_containers(&f), Ok(3));
        // runsc assumes one container when the count is absent.
        let f = state_file(dir.path(), b"{}");
        assert_eq!(image_containers(&f), Ok(1));
        for (meta, why) in [
            (
                &br#"{"container_count":"0"}"#[..],
                "invalid container_count",
            ),
            (
                &br#"{"container_count":"x"}"#[..],
                "invalid container_count",
            ),
            (&b"{not json"[..], "unreadable metadata"),
        ] {
            let f = state_file(dir.path(), meta);
            let e = image_containers(&f).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let f = dir.path().join("bad");
        std::fs::write(&f, b"NOTSTATE________rest").unwrap();
        assert!(image_containers(&f).unwrap_err().contains("bad magic"));
        std::fs::write(&f, b"gVisor").unwrap();
        assert!(image_containers(&f).unwrap_err().contains("too short"));
        let mut huge = STATE_MAGIC.to_vec();
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        std::fs::write(&f, huge).unwrap();
        assert!(image_containers(&f).unwrap_err().contains("out of range"));
    }

    #[test]
    fn pod_names_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_pod_names(dir.path()), Ok(None));
        write_pod_names(dir.path(), &["a".into(), "b".into()]).unwrap();
        assert_eq!(
            read_pod_names(dir.path()),
            Ok(Some(vec!["a".to_owned(), "b".to_owned()]))
        );
        std::fs::write(dir.path().join(POD_NAMES_FILE), b"[1]").unwrap();
        assert!(
            read_pod_names(dir.path())
                .unwrap_err()
                .contains(POD_NAMES_FILE)
        );
    }

    #[test]
    fn pods_are_refused_with_the_reason() {
        refuse_pod("c", &ContainerKind::Standalone, "checkpoint").unwrap();
        // A pod is checkpointed whole, through its sandbox.
        refuse_pod("pause", &ContainerKind::PodSandbox, "checkpoint").unwrap();
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
        assert!(
            e.contains("cannot restore task pause") && e.contains(RESTORE_POD_ANNOTATION),
            "{e}"
        );
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
