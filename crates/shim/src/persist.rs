//! What the shim records in the bundle so that the `delete` command can clean up after a shim
//! that is gone (killed, crashed, or simply already exited).
//!
//! `<bundle>/state.json` is written before anything else is created for a container. Unlike
//! gVisor's shim, the runsc flags from `[runsc_config]` are recorded too, so cleanup runs runsc
//! with the same `--root`, platform and so on as every other call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// File name in the bundle.
pub const STATE_FILE: &str = "state.json";

/// The recorded state of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// The rootfs the shim mounts (and must unmount).
    pub rootfs: Option<PathBuf>,
    /// The runsc binary.
    pub binary: String,
    /// The effective runsc root (already including the namespace).
    pub runsc_root: PathBuf,
    /// Global runsc flags.
    #[serde(default)]
    pub runsc_flags: BTreeMap<String, String>,
    /// The sandbox the container runs in.
    pub sandbox_id: String,
}

impl PersistedState {
    /// Writes `<bundle>/state.json` (atomically).
    pub fn save(&self, bundle: &Path) -> Result<()> {
        let path = bundle.join(STATE_FILE);
        let tmp = bundle.join(".state.json.tmp");
        let json =
            serde_json::to_vec_pretty(self).map_err(|e| Error::io("encode state", e.into()))?;
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // Root-only: it names the runsc binary and flags the cleanup will run.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .context(|| format!("write {}", tmp.display()))?;
            f.write_all(&json)
                .context(|| format!("write {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, &path).context(|| format!("write {}", path.display()))
    }

    /// Reads `<bundle>/state.json`; `None` if there is none.
    pub fn load(bundle: &Path) -> Result<Option<PersistedState>> {
        let path = bundle.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::InvalidArgument(format!("corrupt shim state {}: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }
}

/// Result of a cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleaned {
    /// Exit status to report (137: the task was killed).
    pub exit_status: u32,
}

/// How long the whole cleanup may take (containerd gives the `delete` command 5 s).
const CLEANUP_RUNSC_TIMEOUT: Duration = Duration::from_secs(4);

/// Cleans up container `id` of `bundle` whatever state it is in: deletes it from runsc
/// (killing its sandbox if it is the root container and still running) and unmounts the
/// rootfs. Idempotent; a container that is already gone is fine. containerd runs this after
/// every task delete, not only after a shim was lost.
pub async fn cleanup(
    bundle: &Path,
    id: &str,
    spawner: std::sync::Arc<dyn runsc::Spawner>,
) -> Result<Cleaned> {
    crate::ids::validate("container id", id)?;
    let state = PersistedState::load(bundle)?;
    // containerd runs this after every normal delete too, on the path of the client's
    // `task delete`: when runsc has nothing left for this container, there is nothing to ask.
    // runsc resolves ids by prefix, so only an exact state file of this container (in its
    // sandbox's root) lets runsc be asked: `delete --force we` would otherwise delete `web`.
    if let Some(state) = state.as_ref() {
        crate::ids::validate("sandbox id", &state.sandbox_id)?;
        let mut opts = runsc::GlobalOpts::new(&state.binary, &state.runsc_root);
        opts.flags = state.runsc_flags.clone();
        opts.timeout = CLEANUP_RUNSC_TIMEOUT;
        let runsc = runsc::Runsc::new(opts, spawner).with_log(bundle.join("log.json"));
        if runsc.has_container(id, &state.sandbox_id) {
            let deleted = runsc.delete(id, runsc::DeleteOpts { force: true }).await;
            if let Err(e) = deleted
                && !matches!(e.kind(), runsc::FailureKind::NotFound)
            {
                tracing::warn!(error = %e, "runsc delete during cleanup failed");
            }
        }
        runsc.remove_stale_lock(id, &state.sandbox_id);
        runsc.remove_root_if_unused();
    }
    let rootfs = state
        .and_then(|s| s.rootfs)
        .unwrap_or_else(|| bundle.join("rootfs"));
    crate::mount::unmount_all(&rootfs)?;
    remove_dead_socket(bundle);
    Ok(Cleaned {
        exit_status: 128 + libc::SIGKILL as u32,
    })
}

/// Removes the shim socket named in `<bundle>/address` if no shim answers on it any more
/// (a shim that was killed cannot remove it itself). A live socket is a pod's shim that
/// still serves other containers: it stays.
fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = address.trim().trim_start_matches("unix://");
    if path.is_empty() || std::os::unix::net::UnixStream::connect(path).is_ok() {
        return;
    }
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(PersistedState::load(dir.path()).unwrap(), None);
        let s = PersistedState {
            rootfs: Some(dir.path().join("rootfs")),
            binary: "runsc".into(),
            runsc_root: "/run/containerd/runsc/default".into(),
            runsc_flags: [("network".to_string(), "none".to_string())].into(),
            sandbox_id: "c1".into(),
        };
        s.save(dir.path()).unwrap();
        assert_eq!(PersistedState::load(dir.path()).unwrap(), Some(s));
        std::fs::write(dir.path().join(STATE_FILE), b"{garbage").unwrap();
        let err = PersistedState::load(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("corrupt shim state"), "{err}");
    }
}
