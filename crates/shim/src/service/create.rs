//! Create: from a bundle to a created runsc container.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use runsc::{CreateOpts, DeleteOpts, GlobalOpts, Runsc, StdioFds};

use super::{Inner, Service, read_pid};
use crate::cgroups::stats::SpecLimits;
use crate::cgroups::{self, Cgroup, CgroupsPath, PodLimits};
use crate::config::{self, ShimConfig, Source};
use crate::container::Container;
use crate::error::{Error, IoContext, Result};
use crate::events::Event;
use crate::io::{ConsoleSocket, IoOwner, ProcessIo, StdioConfig};
use crate::mount::{self, Mount};
use crate::persist::PersistedState;
use crate::podspec;
use crate::process::Process;
use crate::spec::{BundleSpec, ContainerKind};

/// runsc flags naming files or directories, in which `%ID%` is replaced by the sandbox id.
/// runsc does this itself only since 2026; the builds deployed today do not.
const PATH_FLAGS: [&str; 9] = [
    "log",
    "panic-log",
    "debug-log",
    "coverage-report",
    "profile-block",
    "profile-cpu",
    "profile-heap",
    "profile-mutex",
    "trace",
];

/// A Create request.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// Task id.
    pub id: String,
    /// Bundle directory (holds `config.json`).
    pub bundle: PathBuf,
    /// Rootfs mounts (may be empty when the bundle has its rootfs already).
    pub rootfs: Vec<Mount>,
    /// The requested stdio.
    pub stdio: StdioConfig,
    /// The runtime options, if containerd sent any.
    pub options: Option<config::RuntimeOptions>,
    /// A checkpoint image directory to restore the task from (at Start).
    pub checkpoint: Option<PathBuf>,
}

/// What must be undone if create fails half way.
#[derive(Default)]
struct Undo {
    state_file: Option<PathBuf>,
    rootfs: Option<PathBuf>,
    io: Option<ProcessIo>,
    /// runsc, the container id and its sandbox id: runsc may hold the container.
    runsc: Option<(Runsc, String, String)>,
    /// A sandbox root directory this create made.
    sandbox_root: Option<Runsc>,
}

impl Undo {
    async fn run(mut self) {
        if let Some((runsc, id, sandbox_id)) = self.runsc.take() {
            // Only a container runsc really has under this exact id: runsc resolves ids by
            // prefix, and `delete --force we` would delete a sibling `web`.
            if runsc.has_container(&id, &sandbox_id)
                && let Err(e) = runsc.delete(&id, DeleteOpts { force: true }).await
            {
                tracing::warn!(error = %e, "rollback: runsc delete failed");
            }
            runsc.remove_stale_lock(&id, &sandbox_id);
        }
        if let Some(runsc) = self.sandbox_root.take() {
            runsc.remove_root_if_unused();
        }
        if let Some(mut io) = self.io.take() {
            io.close().wait().await;
        }
        if let Some(rootfs) = self.rootfs.take()
            && let Err(e) = mount::unmount_all(&rootfs)
        {
            tracing::warn!(error = %e.chain(), "rollback: unmount failed");
        }
        if let Some(f) = self.state_file.take() {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Finds the runsc binary: a path is checked, a name is looked up in `PATH`.
fn resolve_binary(cfg: &ShimConfig) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let name = &cfg.binary_name;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if name.contains('/') {
        Some(PathBuf::from(name)).filter(|p| executable(p))
    } else {
        std::env::var_os("PATH")
            .unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            })
            .to_string_lossy()
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(name))
            .find(|p| executable(p))
    };
    found.ok_or_else(|| Error::Config {
        path: source_label(cfg),
        message: format!("runsc binary {name:?} not found or not executable (set `binary_name`)"),
    })
}

fn source_label(cfg: &ShimConfig) -> PathBuf {
    match &cfg.source {
        Source::File(p) => p.clone(),
        Source::Body => PathBuf::from("<containerd runtime options config_body>"),
        Source::Defaults => PathBuf::from("<defaults>"),
    }
}

/// `[runsc_config]` with `%ID%` replaced in path flags, and their directories created.
fn runsc_flags(cfg: &ShimConfig, sandbox_id: &str) -> BTreeMap<String, String> {
    let mut flags = cfg.runsc_config.clone();
    for (key, value) in flags.iter_mut() {
        if !PATH_FLAGS.contains(&key.as_str()) || value.is_empty() {
            continue;
        }
        *value = value.replace("%ID%", sandbox_id);
        let dir = if value.ends_with('/') {
            Some(Path::new(value.as_str()))
        } else {
            Path::new(value.as_str()).parent()
        };
        if let Some(dir) = dir.filter(|d| !d.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(flag = %key, dir = %dir.display(), error = %e, "cannot create runsc log directory");
        }
    }
    flags
}

/// The runsc root of sandbox `sandbox_id`: `<root>/<namespace>/<sandbox id>`. One root per
/// sandbox, because runsc resolves container ids by prefix within a root: containers of
/// different sandboxes (`ctr run ... web` beside `web2`) never meet there. A sandbox created
/// by an earlier version of this shim lives directly in `<root>/<namespace>`; its later
/// containers join it there.
fn sandbox_root(ns_root: &Path, sandbox_id: &str, kind: &ContainerKind) -> PathBuf {
    let own = ns_root.join(sandbox_id);
    let legacy_state = ns_root.join(format!("{sandbox_id}_sandbox:{sandbox_id}.state"));
    if !kind.is_root() && !own.exists() && legacy_state.exists() {
        return ns_root.to_path_buf();
    }
    own
}

impl Service {
    /// Create: mounts the rootfs, prepares stdio and runs `runsc create`. On any failure
    /// everything done so far is undone: no sandbox, mount, FIFO handle or file is left.
    pub async fn create(&self, req: CreateRequest) -> Result<u32> {
        crate::ids::validate("container id", &req.id)?;
        crate::ids::validate("namespace", &self.inner.namespace)?;
        let inner = &self.inner;
        {
            let table = inner.table();
            let mut creating = inner.creating();
            if table.contains_key(&req.id) || creating.contains_key(&req.id) {
                return Err(Error::AlreadyExists(format!(
                    "task {:?} already exists",
                    req.id
                )));
            }
            creating.insert(req.id.clone(), None);
        }
        let mut undo = Undo::default();
        // Boxed: the create future is large and callers keep it on their stack.
        let result = Box::pin(inner.create(&req, &mut undo)).await;
        let result = match result {
            Ok(container) => {
                let pid = container.init.snapshot().pid;
                inner.table().insert(req.id.clone(), container);
                inner.publish(Event::Create {
                    container_id: req.id.clone(),
                    bundle: req.bundle.display().to_string(),
                    rootfs: req.rootfs.clone(),
                    stdio: req.stdio.clone(),
                    pid,
                });
                Ok(pid)
            }
            Err(e) => {
                undo.run().await;
                Err(e)
            }
        };
        inner.creating().remove(&req.id);
        result
    }
}

/// The spec of a create, read and prepared.
struct Prepared {
    spec: BundleSpec,
    kind: ContainerKind,
    sandbox_id: String,
    cgroups: CgroupsPath,
}

impl Inner {
    async fn create(
        self: &Arc<Self>,
        req: &CreateRequest,
        undo: &mut Undo,
    ) -> Result<Arc<Container>> {
        let cfg = load_config(req)?;
        let mut prepared = self.prepare_spec(req)?;
        check_pod_features(req, &cfg, &prepared)?;
        let runsc = self.runsc_for(req, &cfg, &prepared, undo)?;
        let restores = self
            .plan_restores(req, &prepared.kind, &prepared.spec.json, &runsc)
            .await?;
        let rootfs = prepare_bundle(req, &mut prepared, &runsc, undo).await?;
        let since = Instant::now();
        let pid = if restores.restore.as_ref().is_some_and(|r| !r.into_created) {
            // runsc makes the sandbox at the restore (Start): only the stdio is opened now.
            self.open_io(req, &cfg, undo).await?;
            0
        } else {
            self.run_create(req, &cfg, &prepared, &runsc, undo).await?
        };
        let Prepared { spec, kind, .. } = prepared;

        let init = Process::new(None, req.stdio.clone());
        init.state().pid = pid as u32;
        if let Some(console) = undo.io.as_ref().and_then(|io| io.console().cloned()) {
            init.set_console(console);
        }
        *init.io() = undo.io.take();
        let mut container = Container::new(
            req.id.clone(),
            req.bundle.clone(),
            kind.clone(),
            runsc,
            cfg,
            rootfs,
            spec.own_pid_namespace(),
            init,
        );
        container.limits = SpecLimits::from_spec(&spec.json);
        restores.apply(&mut container)?;
        if pid == 0 {
            // Restored at Start into a sandbox that does not exist yet.
            *undo = Undo::default();
            return Ok(Arc::new(container));
        }
        if kind.is_root() {
            container.oom = crate::oom::OomCounter::for_pid(pid);
        }
        // The sandbox's host cgroup (the pid runsc reports is the sandbox's, for every
        // container of a pod) and the container's own limits, for statistics.
        container.sandbox_cgroup = Cgroup::of_pid(pid);
        let container = Arc::new(container);
        if kind.is_root() {
            // The sandbox exits with the root container's status (a signal inside the sandbox
            // arrives as 128+N): no helper process is needed to learn it.
            let exit = self.reaper.watch(pid, since);
            self.watch_exit(container.clone(), container.init.clone(), exit);
        }
        // Success: nothing to undo.
        *undo = Undo::default();
        Ok(container)
    }

    /// Reads `config.json`, applies the pod changes and finds the sandbox the container
    /// belongs to.
    fn prepare_spec(&self, req: &CreateRequest) -> Result<Prepared> {
        let mut spec = BundleSpec::read(&req.bundle)?;
        if spec.terminal != req.stdio.terminal {
            return Err(Error::InvalidArgument(format!(
                "the request asks for terminal={} but config.json has process.terminal={}",
                req.stdio.terminal, spec.terminal
            )));
        }
        let kind = spec.kind();
        let sandbox_id = match &kind {
            ContainerKind::PodContainer { sandbox_id } => {
                // From an annotation: it names directories and runsc's files below.
                crate::ids::validate(
                    &format!("sandbox id (annotation {})", crate::spec::CRI_SANDBOX_ID),
                    sandbox_id,
                )?;
                sandbox_id.clone()
            }
            _ => req.id.clone(),
        };
        let cgroups = CgroupsPath::parse(
            spec.json
                .pointer("/linux/cgroupsPath")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default(),
        )?;
        let mut changed = podspec::prepare(&mut spec.json, &kind, &self.options.kubelet_pods_dir)?;
        if kind == ContainerKind::PodSandbox {
            let pod = cgroups::pod_cgroup(&cgroups);
            changed |= PodLimits::find(&spec.json, pod.as_ref()).apply(&mut spec.json);
        }
        if changed {
            write_spec(&req.bundle, &spec.json)?;
        }
        Ok(Prepared {
            spec,
            kind,
            sandbox_id,
            cgroups,
        })
    }

    /// The runsc client of the container: its sandbox's root (made if this container makes
    /// the sandbox), the configured flags, the bundle's log. Refuses an id runsc could not
    /// tell from another one in that root.
    fn runsc_for(
        &self,
        req: &CreateRequest,
        cfg: &ShimConfig,
        prepared: &Prepared,
        undo: &mut Undo,
    ) -> Result<Runsc> {
        let (kind, sandbox_id) = (&prepared.kind, prepared.sandbox_id.as_str());
        let binary = resolve_binary(cfg)?;
        let root = sandbox_root(&cfg.runsc_root(&self.namespace), sandbox_id, kind);
        if !kind.is_root() && !root.is_dir() {
            return Err(Error::NotFound(format!(
                "cannot create task {}: its pod sandbox {sandbox_id} is not running here \
                 (no runsc root {})",
                req.id,
                root.display()
            )));
        }
        let made_root = !root.exists();
        ensure_dir(&root).map_err(|e| Error::Config {
            path: source_label(cfg),
            message: format!("runsc root {} is not usable: {}", root.display(), e.chain()),
        })?;
        let mut opts = GlobalOpts::new(binary, root);
        opts.flags = runsc_flags(cfg, sandbox_id);
        let configured = cfg
            .runsc_config
            .get(cgroups::SYSTEMD_FLAG)
            .map(String::as_str);
        if cgroups::needs_systemd_flag(&prepared.cgroups, configured)? {
            opts.flags
                .insert(cgroups::SYSTEMD_FLAG.to_owned(), "true".to_owned());
        }
        opts.timeout = self.options.runsc_timeout;
        let runsc = Runsc::new(opts, self.spawner.clone()).with_log(req.bundle.join("log.json"));
        if made_root {
            undo.sandbox_root = Some(runsc.clone());
        }
        self.claim_id_in_root(&req.id, sandbox_id, &runsc)?;
        Ok(runsc)
    }

    /// Refuses an id runsc could not tell from another container's in the same root, and
    /// records the root of this create. Under the `creating` lock, so that concurrent creates
    /// of `ap` and `app` in one pod see each other before runsc has a state file for either.
    fn claim_id_in_root(&self, id: &str, sandbox_id: &str, runsc: &Runsc) -> Result<()> {
        let root = &runsc.opts().root;
        let mut creating = self.creating();
        let mut conflicts = runsc.prefix_conflicts(id);
        conflicts.extend(
            creating
                .iter()
                .filter(|(other, other_root)| {
                    other.as_str() != id
                        && other_root.as_ref() == Some(root)
                        && (other.starts_with(id) || id.starts_with(other.as_str()))
                })
                .map(|(other, _)| other.clone()),
        );
        if !conflicts.is_empty() {
            conflicts.sort();
            conflicts.dedup();
            return Err(Error::InvalidArgument(format!(
                "cannot create task {id} in pod sandbox {sandbox_id}: runsc resolves container \
                 ids by prefix and could not tell it from {conflicts:?} in the same sandbox"
            )));
        }
        if runsc.has_container(id, sandbox_id) {
            return Err(Error::AlreadyExists(format!(
                "runsc already has a container {id} in {}",
                root.display()
            )));
        }
        creating.insert(id.to_owned(), Some(root.clone()));
        Ok(())
    }

    /// Opens the stdio only (left in `undo`), for a sandbox that `runsc restore` makes later.
    async fn open_io(&self, req: &CreateRequest, cfg: &ShimConfig, undo: &mut Undo) -> Result<()> {
        let owner = IoOwner {
            namespace: &self.namespace,
            id: &req.id,
            uid: cfg.io_uid,
            gid: cfg.io_gid,
        };
        undo.io = Some(ProcessIo::open(&req.stdio, owner, &self.reaper).await?);
        Ok(())
    }

    /// Opens the stdio and runs `runsc create`; returns the sandbox pid. The io and the
    /// runsc container are left in `undo` (the io is taken from there on success).
    async fn run_create(
        &self,
        req: &CreateRequest,
        cfg: &ShimConfig,
        prepared: &Prepared,
        runsc: &Runsc,
        undo: &mut Undo,
    ) -> Result<i32> {
        let (spec, kind) = (&prepared.spec, &prepared.kind);
        let owner = IoOwner {
            namespace: &self.namespace,
            id: &req.id,
            uid: cfg.io_uid,
            gid: cfg.io_gid,
        };
        let mut io = ProcessIo::open(&req.stdio, owner, &self.reaper).await?;
        let console_socket = if req.stdio.terminal {
            Some(ConsoleSocket::new()?)
        } else {
            None
        };
        let pid_file = req.bundle.join("init.pid");
        let create_opts = CreateOpts {
            pid_file: Some(pid_file.clone()),
            console_socket: console_socket.as_ref().map(|s| s.path().to_path_buf()),
            // gVisor's own log for the pod, next to the containers' logs (sandbox only).
            user_log: (*kind == ContainerKind::PodSandbox)
                .then(|| spec.annotations.get(crate::spec::CRI_SANDBOX_LOG_DIR))
                .flatten()
                .filter(|d| !d.is_empty())
                .map(|d| Path::new(d).join("gvisor.log")),
        };
        // runsc gives the root container of a sandbox the stdio of `runsc create`; a later
        // container of a pod gets the stdio of `runsc start`.
        let create_stdio = if kind.is_root() {
            io.take_process_side()
        } else {
            StdioFds::default()
        };
        let created = runsc
            .create(&req.id, &req.bundle, &create_opts, create_stdio)
            .await;
        // Whatever happened, runsc may have left a container behind.
        undo.runsc = Some((runsc.clone(), req.id.clone(), prepared.sandbox_id.clone()));
        undo.io = Some(io);
        created.map_err(|e| Error::runsc(format!("create task {}", req.id), e))?;

        if let Some(socket) = &console_socket {
            let console = socket.receive(self.options.console_timeout).await?;
            if let Some(io) = undo.io.as_mut() {
                io.attach_console(console);
            }
        }
        read_pid(&pid_file)
    }
}

/// Refuses what gVisor cannot give a pod (Bidirectional mount propagation, sysctls) and warns
/// about a seccomp profile runsc applies in part or not at all.
fn check_pod_features(req: &CreateRequest, cfg: &ShimConfig, prepared: &Prepared) -> Result<()> {
    let json = &prepared.spec.json;
    crate::podcheck::check(json).map_err(|e| match e {
        Error::InvalidArgument(m) => {
            Error::InvalidArgument(format!("cannot create task {}: {m}", req.id))
        }
        e => e,
    })?;
    let oci_seccomp = cfg
        .runsc_config
        .get("oci-seccomp")
        .is_some_and(|v| cgroups::parse_go_bool(v) == Some(true));
    // Once per shim (one shim serves a whole pod): most pods carry a profile.
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if let Some(warning) = crate::podcheck::seccomp_warning(json, oci_seccomp)
        && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(id = %req.id, "{warning}");
    }
    Ok(())
}

/// The configuration the request's options point at.
fn load_config(req: &CreateRequest) -> Result<ShimConfig> {
    let cfg = ShimConfig::load(req.options.as_ref())?;
    if !cfg.unknown_keys.is_empty() {
        tracing::warn!(
            config = %source_label(&cfg).display(),
            keys = ?cfg.unknown_keys,
            "ignoring unknown configuration keys"
        );
    }
    Ok(cfg)
}

/// Records the state `delete` needs, mounts the rootfs and checks that the program exists.
/// Returns the rootfs this shim mounted.
async fn prepare_bundle(
    req: &CreateRequest,
    prepared: &mut Prepared,
    runsc: &Runsc,
    undo: &mut Undo,
) -> Result<Option<PathBuf>> {
    let rootfs = (!req.rootfs.is_empty()).then(|| req.bundle.join("rootfs"));
    let opts = runsc.opts();
    PersistedState {
        rootfs: rootfs.clone(),
        binary: opts.binary.display().to_string(),
        runsc_root: opts.root.clone(),
        runsc_flags: opts.flags.clone(),
        sandbox_id: prepared.sandbox_id.clone(),
    }
    .save(&req.bundle)?;
    undo.state_file = Some(req.bundle.join(crate::persist::STATE_FILE));

    if let Some(rootfs) = &rootfs {
        mount_rootfs(req.rootfs.clone(), rootfs.clone()).await?;
        undo.rootfs = Some(rootfs.clone());
    }
    let spec = &mut prepared.spec;
    if !spec.root.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "container rootfs {} does not exist or is not a directory",
            spec.root.display()
        )));
    }
    // Masked and read-only paths as mounts (runsc ignores the spec's lists); the rootfs must
    // be mounted to resolve them.
    if crate::masked::apply(&mut spec.json, &spec.root) {
        write_spec(&req.bundle, &spec.json)?;
    }
    // Like runc, fail the create (not the start) when the program is missing.
    crate::program::check(&spec.root, &spec.json).map_err(|reason| {
        Error::InvalidArgument(format!("cannot create task {}: {reason}", req.id))
    })?;
    Ok(rootfs)
}

/// Rewrites `<bundle>/config.json` (atomically).
fn write_spec(bundle: &Path, json: &serde_json::Value) -> Result<()> {
    let path = bundle.join("config.json");
    let tmp = bundle.join(".config.json.tmp");
    let bytes = serde_json::to_vec(json).map_err(|e| Error::io("encode config.json", e.into()))?;
    std::fs::write(&tmp, bytes).context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).context(|| format!("write {}", path.display()))
}

fn ensure_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(path)
        .context(|| format!("create {}", path.display()))?;
    // Writable by us? runsc creates its state files here.
    let probe = path.join(".runsc-shim-probe");
    std::fs::write(&probe, b"").context(|| format!("write to {}", path.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

async fn mount_rootfs(mounts: Vec<Mount>, rootfs: PathBuf) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&rootfs)
            .context(|| format!("create {}", rootfs.display()))?;
        mount::mount_rootfs(&mounts, &rootfs)
    })
    .await
    .map_err(|e| Error::io("mount rootfs", std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_substitution_in_path_flags_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ShimConfig::default();
        let d = dir.path().display();
        cfg.runsc_config
            .insert("debug-log".into(), format!("{d}/%ID%/"));
        cfg.runsc_config
            .insert("panic-log".into(), format!("{d}/p/%ID%.log"));
        cfg.runsc_config.insert("network".into(), "%ID%".into());
        let flags = runsc_flags(&cfg, "sb1");
        assert_eq!(flags["debug-log"], format!("{d}/sb1/"));
        assert_eq!(flags["panic-log"], format!("{d}/p/sb1.log"));
        assert_eq!(flags["network"], "%ID%");
        assert!(dir.path().join("sb1").is_dir());
        assert!(dir.path().join("p").is_dir());
    }

    #[test]
    fn binary_resolution_names_the_config() {
        let cfg = ShimConfig {
            binary_name: "definitely-not-a-runsc".into(),
            source: Source::File("/etc/containerd/runsc.toml".into()),
            ..ShimConfig::default()
        };
        let err = resolve_binary(&cfg).unwrap_err().to_string();
        assert!(err.contains("/etc/containerd/runsc.toml"), "{err}");
        assert!(err.contains("definitely-not-a-runsc"), "{err}");
        let sh = ShimConfig {
            binary_name: "sh".into(),
            ..ShimConfig::default()
        };
        assert!(resolve_binary(&sh).unwrap().ends_with("sh"));
    }
}
