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

/// A pod sandbox restored from a checkpoint of a whole pod: the pod's containers created
/// next are restored from the same image, until the sandbox has all the containers the image
/// holds.
#[derive(Debug)]
pub struct PodRestore {
    /// The checkpoint image directory.
    pub image: PathBuf,
    pending: Mutex<Pending>,
}

#[derive(Debug)]
struct Pending {
    /// Application containers of the image not restored yet.
    count: u32,
    /// Their CRI container names, when the image records them (a checkpoint by this shim).
    names: Option<Vec<String>>,
}

impl PodRestore {
    /// A pod restore from `image`, which holds `containers` application containers, named
    /// `names` if known.
    pub fn new(image: PathBuf, containers: u32, names: Option<Vec<String>>) -> PodRestore {
        PodRestore {
            image,
            pending: Mutex::new(Pending {
                count: containers,
                names,
            }),
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How the pod container `name` (its CRI container name) is to be made: restored from
    /// the image (`Some`), or started as usual once every container of the image is back
    /// (`None`). While containers of the image are still to come, a container the image does
    /// not hold cannot run (the sandbox is not running yet): an error naming the ones it
    /// holds.
    pub fn take(&self, name: Option<&str>) -> std::result::Result<Option<RestoreFrom>, String> {
        self.admit(name, true)
    }

    /// What [`PodRestore::take`] would answer, without taking anything.
    pub fn check(&self, name: Option<&str>) -> std::result::Result<Option<RestoreFrom>, String> {
        self.admit(name, false)
    }

    fn admit(
        &self,
        name: Option<&str>,
        commit: bool,
    ) -> std::result::Result<Option<RestoreFrom>, String> {
        let mut p = self.pending();
        if p.count == 0 {
            return Ok(None);
        }
        let restore = RestoreFrom {
            image: self.image.clone(),
            into_created: true,
        };
        match (&mut p.names, name) {
            (Some(names), Some(name)) => match names.iter().position(|n| n == name) {
                Some(i) => {
                    if commit {
                        names.remove(i);
                    }
                }
                None => {
                    return Err(format!(
                        "the pod is being restored from {} and container {name:?} is not in \
                         it; the image holds {names:?} still to come (init containers and \
                         containers added since the checkpoint cannot join a pod being \
                         restored)",
                        self.image.display()
                    ));
                }
            },
            (Some(names), None) => {
                return Err(format!(
                    "the pod is being restored from {} and this container has no CRI \
                     container name to match; the image holds {names:?} still to come",
                    self.image.display()
                ));
            }
            (None, _) => {}
        }
        if commit {
            p.count -= 1;
        }
        Ok(Some(restore))
    }

    /// Application containers still to come.
    pub fn remaining(&self) -> u32 {
        self.pending().count
    }
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
    /// For a pod sandbox restored from a pod checkpoint: the containers still to restore.
    pub pod_restore: Option<PodRestore>,
    /// The CRI container name (annotation `io.kubernetes.cri.container-name`), if any.
    pub cri_name: Option<String>,
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
            pod_restore: None,
            cri_name: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_restore_by_name_then_as_usual() {
        let r = PodRestore::new("/img".into(), 2, Some(vec!["a".into(), "b".into()]));
        // A container the image does not hold is refused while containers are to come.
        let e = r.check(Some("init")).unwrap_err();
        assert!(
            e.contains("\"init\" is not in it") && e.contains("[\"a\", \"b\"]"),
            "{e}"
        );
        assert!(r.check(None).unwrap_err().contains("no CRI container name"));
        // check takes nothing.
        assert!(r.check(Some("b")).unwrap().is_some());
        assert_eq!(r.remaining(), 2);
        let b = r.take(Some("b")).unwrap().unwrap();
        assert_eq!(b.image, PathBuf::from("/img"));
        assert!(b.into_created);
        assert_eq!(r.remaining(), 1);
        // Each name comes back once.
        assert!(r.take(Some("b")).is_err());
        assert!(r.take(Some("a")).unwrap().is_some());
        // Then containers start as usual (a restart by the kubelet).
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.take(Some("a")).unwrap(), None);
        assert_eq!(r.take(Some("other")).unwrap(), None);
    }

    #[test]
    fn pod_restore_by_count_without_names() {
        let r = PodRestore::new("/img".into(), 1, None);
        assert!(r.take(None).unwrap().is_some());
        assert_eq!(r.take(Some("x")).unwrap(), None);
    }
}
