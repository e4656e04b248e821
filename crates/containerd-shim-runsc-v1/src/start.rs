//! The `start` command: find or start the shim serving this task and print its address.
//!
//! Why not `containerd_shim::asynchronous::run`: containerd-shim 0.12 serves only task API v3
//! and answers `start` with `{"version":3,...}`, which containerd 1.6 takes for a socket path
//! and 1.7 rejects ("unsupported shim version (3)"). This command answers in the form the
//! calling containerd understands (a bare address for 1.6-2.2, a protobuf `BootstrapResult`
//! for 2.3's bootstrap protocol) and the daemon serves both task API versions.
//!
//! Nothing but the reply may reach stdout or stderr: containerd reads both as the reply.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use runsc_shim::config::ShimConfig;
use runsc_shim::spec::{BundleSpec, ContainerKind};

use crate::flags::{Flags, socket_address};

/// containerd never sends more; anything bigger is not a start request.
const STDIN_LIMIT: u64 = 10 * 1024 * 1024;

/// What `start` was given on stdin.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct StartInput {
    /// containerd 2.3+ bootstrap protocol (reply with a `BootstrapResult`).
    pub bootstrap: bool,
    /// Runtime options, if any.
    pub options: Option<Any>,
    /// containerd's ttrpc address from the bootstrap parameters.
    pub ttrpc_address: Option<String>,
    /// Socket directory containerd asked for.
    pub socket_dir: Option<String>,
    /// containerd asked for debug logging.
    pub debug: bool,
}

/// Decides between containerd 2.3's `BootstrapParams` and the legacy runtime options `Any`.
///
/// A legacy `Any` often decodes as `BootstrapParams` too (both start with two strings), so
/// bootstrap mode also requires the instance id and namespace to match the flags, as
/// containerd's own shim library does.
pub(crate) fn parse_input(input: &[u8], flags: &Flags) -> anyhow::Result<StartInput> {
    if input.is_empty() {
        return Ok(StartInput::default());
    }
    if let Ok(params) = BootstrapParams::parse_from_bytes(input)
        && params.instance_id == flags.id
        && params.namespace == flags.namespace
    {
        let options = params
            .extensions
            .iter()
            .filter_map(|e| e.value.as_ref())
            .find(|a| a.type_url.ends_with(crate::options::RUNTIME_OPTIONS))
            .cloned();
        let level = params.log_level.value();
        return Ok(StartInput {
            bootstrap: true,
            options,
            ttrpc_address: Some(params.containerd_ttrpc_address.clone()).filter(|a| !a.is_empty()),
            socket_dir: params.socket_dir.clone().filter(|d| !d.is_empty()),
            // LOG_LEVEL_DEBUG = -4, LOG_LEVEL_TRACE = -8.
            debug: level < 0,
        });
    }
    let any = Any::parse_from_bytes(input)
        .context("start: runtime options on stdin are not a protobuf Any")?;
    Ok(StartInput {
        options: Some(any).filter(|a| !a.type_url.is_empty()),
        ..Default::default()
    })
}

/// The grouping key: the pod sandbox id for containers of a pod (one shim per pod), the
/// task id otherwise or when `grouping = false`.
pub(crate) fn grouping_key(flags: &Flags, bundle: &Path, cfg: &ShimConfig) -> String {
    if !cfg.grouping {
        return flags.id.clone();
    }
    match BundleSpec::read(bundle).map(|s| s.kind()) {
        // An annotation: used only if it is an id (Create then refuses the container).
        Ok(ContainerKind::PodContainer { sandbox_id })
            if runsc_shim::ids::validate("sandbox id", &sandbox_id).is_ok() =>
        {
            sandbox_id
        }
        // The pause container's id is the sandbox id.
        _ => flags.id.clone(),
    }
}

pub(crate) fn run(flags: &Flags) -> anyhow::Result<()> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(STDIN_LIMIT)
        .read_to_end(&mut input)
        .context("read stdin")?;
    let input = parse_input(&input, flags)?;
    let bundle = std::env::current_dir().context("current directory (the bundle)")?;

    // A configuration problem is reported by Create, which names the file; here only the
    // grouping setting matters.
    let options = input
        .options
        .as_ref()
        .and_then(|a| crate::options::decode(&a.type_url, &a.value).ok().flatten());
    let cfg = ShimConfig::load(options.as_ref()).unwrap_or_default();
    let group = grouping_key(flags, &bundle, &cfg);
    let shim_cgroup = input
        .options
        .as_ref()
        .and_then(|a| crate::options::runc_shim_cgroup(&a.type_url, &a.value))
        .or_else(|| cfg.shim_cgroup.clone());

    let address = socket_address(
        &flags.address,
        &flags.namespace,
        &group,
        input.socket_dir.as_deref(),
    );
    let path = address
        .strip_prefix("unix://")
        .unwrap_or(&address)
        .to_owned();

    match bind(Path::new(&path))? {
        Some(listener) => {
            let mut daemon = spawn_daemon(flags, &address, listener, &input)?;
            if let Some(cgroup) = &shim_cgroup
                && let Err(e) = join_cgroup(
                    Path::new(CGROUP_ROOT),
                    crate::convert::host_is_cgroup_v2(),
                    cgroup,
                    daemon.id(),
                )
            {
                // Like runc's shim: a shim that cannot be placed does not run.
                let _ = daemon.kill();
                let _ = daemon.wait();
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            // Not waited for: it outlives us; containerd (a subreaper) reaps it eventually.
            drop(daemon);
        }
        None => { /* a live shim serves this group already */ }
    }
    write_address(&bundle, &address)?;
    reply(&address, input.bootstrap)
}

/// Binds the shim socket. `None`: a live shim already listens there (its group's shim).
fn bind(path: &Path) -> anyhow::Result<Option<UnixListener>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create socket directory {}", dir.display()))?;
    }
    for _ in 0..2 {
        match UnixListener::bind(path) {
            Ok(l) => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("chmod {}", path.display()))?;
                return Ok(Some(l));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if UnixStream::connect(path).is_ok() {
                    return Ok(None);
                }
                // A dead shim's socket: remove it and bind again.
                std::fs::remove_file(path)
                    .with_context(|| format!("remove stale socket {}", path.display()))?;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("bind shim socket {}", path.display()));
            }
        }
    }
    bail!("shim socket {} keeps being taken", path.display())
}

/// Starts the serving process: its own session, the listener as fd 3, stdio on /dev/null
/// (it logs to the bundle's `log` FIFO).
fn spawn_daemon(
    flags: &Flags,
    address: &str,
    listener: UnixListener,
    input: &StartInput,
) -> anyhow::Result<std::process::Child> {
    let exe = std::env::current_exe().context("find own executable")?;
    // A descriptor >= 10 so that placing it at 3 cannot clobber anything; CLOEXEC so that only
    // the copy made in the child survives exec.
    let raw = nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        .context("dup listener")?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor nobody else owns.
    let high = unsafe { OwnedFd::from_raw_fd(raw) };
    drop(listener);
    let high_raw = high.as_raw_fd();

    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "-namespace",
        &flags.namespace,
        "-id",
        &flags.id,
        "-address",
        &flags.address,
    ])
    .args(["-socket", address])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if flags.debug || input.debug {
        cmd.arg("-debug");
    }
    if let Some(ttrpc) = &input.ttrpc_address {
        cmd.env("TTRPC_ADDRESS", ttrpc);
    }
    // SAFETY: setsid and dup2 are async-signal-safe; `high_raw` stays open in the parent
    // until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::dup2(high_raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("spawn shim daemon")?;
    drop(high);
    adjust_oom_score(child.id());
    Ok(child)
}

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Moves process `pid` into cgroup `path` (runc's `ShimCgroup`, gVisor's `shim_cgroup`): on
/// cgroup v2 (`v2`, the host's mode) in the one hierarchy at `root`, on v1 in every hierarchy
/// under `root` that has the cgroup (runc's shim loads it the same way). The cgroup must exist.
fn join_cgroup(root: &Path, v2: bool, path: &str, pid: u32) -> anyhow::Result<()> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == "..") {
        bail!("shim cgroup {path:?} must name a cgroup below the root, without \"..\"");
    }
    let write = |procs: PathBuf| {
        std::fs::write(&procs, pid.to_string())
            .with_context(|| format!("add the shim to cgroup {path}: write {}", procs.display()))
    };
    if v2 {
        return write(root.join(rel).join("cgroup.procs"));
    }
    let mut joined = 0;
    for entry in std::fs::read_dir(root).with_context(|| format!("read {}", root.display()))? {
        let entry = entry?;
        // `cpu` and `cpuacct` are links to `cpu,cpuacct`: one hierarchy, joined once.
        if entry.file_type()?.is_symlink() {
            continue;
        }
        let procs = entry.path().join(rel).join("cgroup.procs");
        if procs.exists() {
            write(procs)?;
            joined += 1;
        }
    }
    if joined == 0 {
        bail!(
            "shim cgroup {path} does not exist in any hierarchy under {}",
            root.display()
        );
    }
    Ok(())
}

/// Like containerd's runc shim: the shim is slightly more killable than containerd itself.
/// Best effort (lowering a score needs CAP_SYS_RESOURCE).
fn adjust_oom_score(pid: u32) {
    let parent = std::fs::read_to_string(format!(
        "/proc/{}/oom_score_adj",
        std::os::unix::process::parent_id()
    ))
    .ok()
    .and_then(|s| s.trim().parse::<i32>().ok())
    .unwrap_or(0);
    let score = (parent + 1).min(1000);
    let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), score.to_string());
}

/// containerd 1.6 reads this file verbatim (no trimming): no trailing newline.
fn write_address(bundle: &Path, address: &str) -> anyhow::Result<()> {
    let tmp = bundle.join(".address.tmp");
    std::fs::write(&tmp, address).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, bundle.join("address")).context("write address file")
}

fn reply(address: &str, bootstrap: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if bootstrap {
        // Version 2: containerd then calls `start` for every container, so grouping stays
        // this shim's decision (with 3, containerd 2.x sends a pod's containers to the pause
        // container's shim without asking and never runs `delete` or Shutdown for them).
        let result = BootstrapResult {
            version: 2,
            address: address.to_owned(),
            protocol: "ttrpc".to_owned(),
            ..Default::default()
        };
        out.write_all(&result.write_to_bytes().context("encode BootstrapResult")?)?;
    } else {
        out.write_all(address.as_bytes())?;
    }
    out.flush().context("write reply")
}

/// `-info`: the runtime's name and version as a protobuf `RuntimeInfo`.
pub(crate) fn info() -> anyhow::Result<()> {
    use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
    let mut discard = Vec::new();
    let _ = std::io::stdin().take(STDIN_LIMIT).read_to_end(&mut discard);
    let info = RuntimeInfo {
        name: crate::RUNTIME_NAME.to_owned(),
        version: Some(RuntimeVersion {
            version: crate::VERSION.to_owned(),
            revision: crate::REVISION.to_owned(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&info.write_to_bytes()?)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use containerd_shim_protos::bootstrap_api::Extension;

    use super::*;

    fn flags() -> Flags {
        Flags {
            id: "c1".into(),
            namespace: "default".into(),
            ..Default::default()
        }
    }

    fn runtime_options(path: &str) -> Any {
        let opts = runsc_shim::config::RuntimeOptions {
            config_path: path.into(),
            ..Default::default()
        };
        Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: crate::options::encode_runtime_options(&opts),
            ..Default::default()
        }
    }

    #[test]
    fn empty_stdin_is_legacy_without_options() {
        assert_eq!(parse_input(b"", &flags()).unwrap(), StartInput::default());
    }

    #[test]
    fn legacy_any_is_options() {
        let any = runtime_options("/etc/containerd/runsc.toml");
        let got = parse_input(&any.write_to_bytes().unwrap(), &flags()).unwrap();
        assert!(!got.bootstrap);
        assert_eq!(got.options, Some(any));
    }

    #[test]
    fn bootstrap_params_are_recognized_only_when_they_match() {
        let params = BootstrapParams {
            instance_id: "c1".into(),
            namespace: "default".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            socket_dir: Some("/run/containerd/s2".into()),
            extensions: vec![Extension {
                value: Some(runtime_options("/x.toml")).into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = params.write_to_bytes().unwrap();
        let got = parse_input(&bytes, &flags()).unwrap();
        assert!(got.bootstrap);
        assert_eq!(got.options, Some(runtime_options("/x.toml")));
        assert_eq!(got.socket_dir.as_deref(), Some("/run/containerd/s2"));
        assert_eq!(
            got.ttrpc_address.as_deref(),
            Some("/run/containerd/containerd.sock.ttrpc")
        );
        let other = Flags {
            id: "c2".into(),
            ..flags()
        };
        assert!(!parse_input(&bytes, &other).unwrap().bootstrap);
    }

    /// Whatever containerd (or anything else) writes to `start`'s stdin, parsing never panics.
    #[test]
    fn fuzz_start_input() {
        let legacy = runtime_options("/etc/containerd/runsc.toml")
            .write_to_bytes()
            .unwrap();
        let boot = BootstrapParams {
            instance_id: "c1".into(),
            namespace: "default".into(),
            socket_dir: Some("/run/s".into()),
            extensions: vec![Extension {
                value: Some(runtime_options("/x.toml")).into(),
                ..Default::default()
            }],
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        fuzzkit::fuzz("start-input", &[&legacy, &boot, b""], |input| {
            let _ = parse_input(input, &flags());
        });
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_input(&[0xff, 0xff, 0xff], &flags()).is_err());
    }

    #[test]
    fn grouping_follows_the_pod() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |ann: &str| {
            format!(
                r#"{{"ociVersion":"1.0.2","process":{{"user":{{"uid":0,"gid":0}},"args":["sh"],"cwd":"/"}},"root":{{"path":"rootfs"}},"annotations":{{{ann}}}}}"#
            )
        };
        std::fs::write(
            dir.path().join("config.json"),
            spec(r#""io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"pod1""#),
        )
        .unwrap();
        let cfg = ShimConfig::default();
        assert_eq!(grouping_key(&flags(), dir.path(), &cfg), "pod1");
        let off = ShimConfig {
            grouping: false,
            ..ShimConfig::default()
        };
        assert_eq!(grouping_key(&flags(), dir.path(), &off), "c1");
        std::fs::write(dir.path().join("config.json"), spec("")).unwrap();
        assert_eq!(grouping_key(&flags(), dir.path(), &cfg), "c1");
    }

    #[test]
    fn shim_joins_its_cgroup_in_every_v1_hierarchy_or_the_v2_one() {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        // cgroup v1: the cgroup exists in memory and pids, not in cpuset; cpu is a link.
        let v1 = tempfile::tempdir().unwrap();
        for h in ["memory", "pids", "cpuset", "cpu,cpuacct"] {
            std::fs::create_dir_all(v1.path().join(h)).unwrap();
        }
        std::os::unix::fs::symlink("cpu,cpuacct", v1.path().join("cpu")).unwrap();
        for h in ["memory", "pids", "cpu,cpuacct"] {
            std::fs::create_dir_all(v1.path().join(h).join("shims/a")).unwrap();
            std::fs::write(v1.path().join(h).join("shims/a/cgroup.procs"), "").unwrap();
        }
        join_cgroup(v1.path(), false, "/shims/a", 42).unwrap();
        for h in ["memory", "pids", "cpu,cpuacct"] {
            assert_eq!(
                read(&v1.path().join(h).join("shims/a/cgroup.procs")),
                "42",
                "{h}"
            );
        }
        assert!(!v1.path().join("cpuset/shims").exists());
        let e = join_cgroup(v1.path(), false, "/nope", 42)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        // cgroup v2.
        let v2 = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(v2.path().join("shims")).unwrap();
        join_cgroup(v2.path(), true, "shims", 7).unwrap();
        assert_eq!(read(&v2.path().join("shims/cgroup.procs")), "7");
        assert!(join_cgroup(v2.path(), true, "/missing", 7).is_err());
        for bad in ["/", "", "/a/../../etc"] {
            assert!(join_cgroup(v2.path(), true, bad, 7).is_err(), "{bad:?}");
        }
    }
}
