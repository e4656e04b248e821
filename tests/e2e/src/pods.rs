//! A private containerd with its CRI plugin, a runtime handler `runsc` like the user's
//! (`runtime_type = "io.containerd.runsc.v1"`, `TypeUrl`/`ConfigPath` options), CNI bridge
//! networking inside a private network namespace, and local images in `k8s.io`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::containerd::{Config, Containerd, run};
use crate::cri::Cri;
use crate::versions::{ContainerdBuild, RunscBuild};

/// The app image.
pub const IMAGE: &str = "docker.io/library/busybox-e2e:latest";
/// The pause image (CRI `sandbox_image`).
pub const PAUSE: &str = "docker.io/library/pause-e2e:latest";
/// The runtime handler name, as in the user's RuntimeClass.
pub const HANDLER: &str = "runsc";
/// containerd 2.x only: our runtime configured with `sandboxer = "shim"` (containerd's
/// Sandbox API, which this shim refuses with a message).
pub const SANDBOXER_HANDLER: &str = "runsc-sandboxer";
/// Our runtime with runsc's network stack off (`network = "none"`: runsc cannot checkpoint a
/// sandbox using the host's network stack, and these runsc builds refuse their own stack on
/// this kernel) and the pod annotations `dev.gvisor.*` passed through (a pod restore).
pub const CHECKPOINT_HANDLER: &str = "runsc-ckpt";

/// The pod annotation that restores a new pod from a pod checkpoint.
pub const RESTORE_ANNOTATION: &str = "dev.gvisor.restore.image-path";

/// A counter: `i` lives in the shell's memory, `/tmp/count` only shows it.
pub const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done";

/// The runsc config of [`CHECKPOINT_HANDLER`], next to the handler's own `runsc_toml`.
pub fn checkpoint_toml(runsc_toml: &Path) -> PathBuf {
    runsc_toml.with_file_name("runsc-ckpt.toml")
}

/// Builds the images a pod needs, `IMAGE` (busybox) and `PAUSE`, as OCI tarballs
/// `busybox.tar` and `pause.tar` in `dir`, and imports both into `containerd`'s current
/// namespace.
pub fn import_pod_images(containerd: &Containerd, dir: &Path) -> Result<()> {
    let image = dir.join("busybox.tar");
    crate::image::build(&image, IMAGE, &[], &["/bin/sh"])?;
    containerd.import(&image)?;
    let pause = dir.join("pause.tar");
    crate::image::build(&pause, PAUSE, &["/bin/sleep", "2147483647"], &[])?;
    containerd.import(&pause)
}

/// CRI section of containerd's config for this build. `systemd_cgroup`: runc uses systemd
/// for cgroups (`SystemdCgroup = true`, what every systemd node has).
pub fn cri_config(
    build: &ContainerdBuild,
    runsc_toml: &Path,
    cni_conf: &Path,
    cni_bin: &str,
    systemd_cgroup: bool,
) -> String {
    let cfg = runsc_toml.display();
    let conf = cni_conf.display();
    let plugin = if build.major() >= 2 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    };
    let runc_options = if systemd_cgroup {
        format!("[plugins.\"{plugin}\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n")
    } else {
        String::new()
    };
    let base = cri_base_config(build, &cfg.to_string(), &conf.to_string(), cni_bin);
    format!("{base}{runc_options}")
}

/// The tables of our runtime as CRI handler `name` of CRI plugin `plugin`: `extra` lines
/// in the runtime's table, the shim's config file `cfg`.
fn runsc_runtime(plugin: &str, name: &str, extra: &str, cfg: &str) -> String {
    let table = format!("[plugins.\"{plugin}\".containerd.runtimes.{name}]");
    format!(
        "{table}\n  runtime_type = \"io.containerd.runsc.v1\"\n{extra}\
         {}.options]\n  TypeUrl = \"io.containerd.runsc.v1.options\"\n  ConfigPath = \"{cfg}\"\n",
        table.trim_end_matches(']')
    )
}

fn cri_base_config(build: &ContainerdBuild, cfg: &str, conf: &str, cni_bin: &str) -> String {
    let ckpt = checkpoint_toml(Path::new(cfg)).display().to_string();
    let plugin = if build.major() >= 2 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    };
    let mut runtimes = runsc_runtime(plugin, HANDLER, "", cfg);
    if build.major() >= 2 {
        runtimes += &runsc_runtime(plugin, SANDBOXER_HANDLER, "  sandboxer = \"shim\"\n", cfg);
    }
    runtimes += &runsc_runtime(
        plugin,
        CHECKPOINT_HANDLER,
        "  pod_annotations = [\"dev.gvisor.*\"]\n",
        &ckpt,
    );
    if build.major() >= 2 {
        format!(
            r#"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{PAUSE}"
[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{runtimes}[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["{cni_bin}"]
  conf_dir = "{conf}"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
"#
        )
    } else {
        format!(
            r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  enable_selinux = false
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{runtimes}[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{conf}"
"#
        )
    }
}

/// A CRI environment.
#[derive(Debug)]
pub struct PodEnv {
    /// containerd (in `netns`).
    pub containerd: Containerd,
    /// The CRI client.
    pub cri: Cri,
    /// Work directory.
    pub work: PathBuf,
    /// runsc state root.
    pub runsc_root: PathBuf,
    /// The network namespace containerd runs in.
    pub netns: String,
    /// Where pods' cgroups go (below every cgroup v1 hierarchy).
    pub cgroup_base: String,
    /// Pod log directories.
    pub logs: PathBuf,
}

/// Makes network namespace `name` afresh (`/run/netns/<name>`, loopback up), for a containerd
/// of its own (`Config::netns`).
pub fn fresh_netns(name: &str) -> Result<()> {
    delete_netns(name);
    sh(Command::new("ip").args(["netns", "add", name]))?;
    sh(Command::new("ip").args(["netns", "exec", name, "ip", "link", "set", "lo", "up"]))
}

/// Removes network namespace `name`, if it exists.
pub fn delete_netns(name: &str) {
    let _ = run(
        Command::new("ip").args(["netns", "del", name]),
        Duration::from_secs(10),
    );
}

fn sh(cmd: &mut Command) -> Result<()> {
    let out = run(cmd, Duration::from_secs(30))?;
    if out.code != 0 {
        bail!(
            "{:?} failed: {}{}",
            cmd.get_program(),
            out.stdout,
            out.stderr
        );
    }
    Ok(())
}

impl PodEnv {
    /// Starts containerd `build` with runsc `rs` for CRI, in `work`.
    pub fn start(
        build: &ContainerdBuild,
        rs: &RunscBuild,
        shim: &Path,
        work: &Path,
        runsc_extra: &str,
    ) -> Result<PodEnv> {
        Self::start_with(build, rs, shim, work, runsc_extra, false)
    }

    /// Like [`PodEnv::start`]; `systemd_cgroup`: runc (the baseline handler `runc`) uses
    /// systemd for cgroups, as on a node whose kubelet has the systemd cgroup driver.
    pub fn start_with(
        build: &ContainerdBuild,
        rs: &RunscBuild,
        shim: &Path,
        work: &Path,
        runsc_extra: &str,
        systemd_cgroup: bool,
    ) -> Result<PodEnv> {
        let _ = std::fs::remove_dir_all(work);
        std::fs::create_dir_all(work)?;
        let tag = work
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("e2e")
            .replace('.', "");
        let netns = format!("rsc-{tag}");
        fresh_netns(&netns)?;

        let runsc_root = work.join("runsc-root");
        let runsc_toml = work.join("runsc.toml");
        std::fs::write(
            &runsc_toml,
            format!(
                "binary_name = \"{}\"\nroot = \"{}\"\n{runsc_extra}\n[runsc_config]\n  network = \"host\"\n",
                rs.runsc.display(),
                runsc_root.display()
            ),
        )?;
        std::fs::write(
            checkpoint_toml(&runsc_toml),
            format!(
                "binary_name = \"{}\"\nroot = \"{}\"\n{runsc_extra}\n[runsc_config]\n  network = \"none\"\n",
                rs.runsc.display(),
                runsc_root.display()
            ),
        )?;
        let cni_conf = work.join("cni");
        std::fs::create_dir_all(&cni_conf)?;
        // Each environment has its own network namespace: the subnet can be the same.
        let subnet = "10.88.99.0/24";
        std::fs::write(
            cni_conf.join("10-e2e.conflist"),
            format!(
                r#"{{"cniVersion":"0.4.0","name":"e2e-pods","plugins":[{{"type":"bridge","bridge":"e2ebr0","isGateway":true,"ipMasq":false,"hairpinMode":true,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}}}]}}"#,
                work.join("cni-ipam").display()
            ),
        )?;
        let extra = cri_config(
            build,
            &runsc_toml,
            &cni_conf,
            "/usr/lib/cni",
            systemd_cgroup,
        );
        let cfg = Config {
            extra,
            netns: Some(netns.clone()),
            config_file: None,
        };
        let mut containerd = Containerd::start(build, &work.join("containerd"), shim, &cfg)?;
        containerd.namespace = "k8s.io".into();
        import_pod_images(&containerd, work)?;
        let mut cri = Cri::connect(&containerd.address())?;
        cri.version().context("CRI version")?;
        if !cri.image_present(PAUSE)? {
            bail!("pause image not visible to CRI");
        }
        let logs = work.join("logs");
        std::fs::create_dir_all(&logs)?;
        Ok(PodEnv {
            containerd,
            cri,
            work: work.to_path_buf(),
            runsc_root,
            netns,
            cgroup_base: format!("/e2e-{tag}"),
            logs,
        })
    }

    /// `containerd-shim-runsc-v1 checkpoint ARGS` (the node command) against this
    /// environment's containerd.
    pub fn checkpoint_cli(&self, args: &[&str]) -> Result<crate::containerd::Out> {
        let mut cmd = Command::new(crate::versions::shim_binary());
        cmd.arg("checkpoint")
            .arg("--state")
            .arg(self.containerd.state_dir())
            .args(args);
        run(&mut cmd, Duration::from_secs(120))
    }

    /// The value of a [`COUNTER`] in container `id`.
    pub fn counter(&mut self, id: &str) -> Result<u64> {
        let out = self.cri.exec_sync(id, &["cat", "/tmp/count"], 30)?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .with_context(|| format!("count in {id}: {out:?}"))
    }

    /// Runs a command inside containerd's network namespace.
    pub fn in_netns(&self, args: &[&str]) -> Result<crate::containerd::Out> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).args(args);
        run(&mut cmd, Duration::from_secs(30))
    }

    /// Stops containerd and removes the network namespace and cgroups.
    pub fn stop(&mut self) {
        if let Ok(pods) = self.cri.list_pods() {
            for p in pods {
                let _ = self.cri.remove_pod(&p.id);
            }
        }
        self.containerd.stop();
        delete_netns(&self.netns);
        remove_cgroups(&self.cgroup_base);
    }
}

/// Removes a cgroup subtree (deepest first) in every v1 hierarchy.
pub fn remove_cgroups(base: &str) {
    let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hier.flatten() {
        let root = h.path().join(base.trim_start_matches('/'));
        if !root.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&root, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}
