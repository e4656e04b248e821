//! A task: its runsc client, bundle, init process and execs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use runsc::Runsc;

use crate::config::ShimConfig;
use crate::error::{Error, Result};
use crate::process::Process;
use crate::spec::ContainerKind;

/// Where and how a task created from a checkpoint is restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFrom {
    /// The checkpoint image directory (holds `checkpoint.img`).
    pub image: PathBuf,
    /// Whether runsc restores into the container `runsc create` made (runsc 20240729 and
    /// later); otherwise `runsc restore` makes the sandbox itself (runsc 20221219).
    pub into_created: bool,
}

/// One task served by this shim.
#[derive(Debug)]
pub struct Container {
    /// Task id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// How it relates to a sandbox.
    pub kind: ContainerKind,
    /// The id of the sandbox it runs in (its own id for a root container).
    pub sandbox_id: String,
    /// runsc, configured for this container (root, flags, log file in the bundle).
    pub runsc: Runsc,
    /// The configuration it was created with.
    pub config: ShimConfig,
    /// The rootfs this shim mounted (unmounted at delete), if any.
    pub mounted_rootfs: Option<PathBuf>,
    /// Whether the container has a pid namespace of its own (then its gofer exits with it).
    pub own_pid_ns: bool,
    /// The sandbox's OOM counter (root containers).
    pub oom: Option<crate::oom::OomCounter>,
    /// The sandbox's host cgroup (cgroup v2 hosts).
    pub sandbox_cgroup: Option<crate::cgroups::Cgroup>,
    /// The limits the container's spec sets.
    pub limits: crate::cgroups::stats::SpecLimits,
    /// The checkpoint the init process is restored from at Start, if it was created from one.
    pub restore: Option<RestoreFrom>,
    /// The init process.
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
}

impl Container {
    /// A container whose init process is `init`.
    #[allow(
        clippy::too_many_arguments,
        reason = "plain constructor of a plain struct"
    )]
    pub fn new(
        id: String,
        bundle: PathBuf,
        kind: ContainerKind,
        runsc: Runsc,
        config: ShimConfig,
        mounted_rootfs: Option<PathBuf>,
        own_pid_ns: bool,
        init: Process,
    ) -> Container {
        let sandbox_id = match &kind {
            ContainerKind::PodContainer { sandbox_id } => sandbox_id.clone(),
            _ => id.clone(),
        };
        Container {
            id,
            bundle,
            kind,
            sandbox_id,
            runsc,
            config,
            mounted_rootfs,
            own_pid_ns,
            oom: None,
            sandbox_cgroup: None,
            limits: Default::default(),
            restore: None,
            init: Arc::new(init),
            execs: Mutex::new(HashMap::new()),
        }
    }

    fn execs(&self) -> MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The init process (empty `exec_id`) or an exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs().get(exec_id).cloned().ok_or_else(|| {
            Error::NotFound(format!("exec {exec_id:?} not found in task {}", self.id))
        })
    }

    /// Adds an exec; fails if the id is taken.
    pub fn add_exec(&self, exec_id: &str, process: Process) -> Result<Arc<Process>> {
        let mut execs = self.execs();
        if execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {exec_id:?} already exists in task {}",
                self.id
            )));
        }
        let p = Arc::new(process);
        execs.insert(exec_id.to_owned(), p.clone());
        Ok(p)
    }

    /// Removes an exec.
    pub fn remove_exec(&self, exec_id: &str) -> Option<Arc<Process>> {
        self.execs().remove(exec_id)
    }

    /// All execs.
    pub fn exec_list(&self) -> Vec<Arc<Process>> {
        self.execs().values().cloned().collect()
    }
}
