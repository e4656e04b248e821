//! A private containerd: its own root, state, sockets and namespace, started by hand and
//! stopped (with everything it ran) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::versions::ContainerdBuild;

/// Output of a command.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit code (-1: killed).
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Out {
    /// Fails unless the command succeeded.
    pub fn ok(self) -> Result<Out> {
        if self.code != 0 {
            bail!(
                "exit code {}\nstdout: {}\nstderr: {}",
                self.code,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

/// Runs a command with a deadline (`timeout -k`), capturing output.
pub fn run(cmd: &mut Command, deadline: Duration) -> Result<Out> {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let mut wrapped = Command::new("timeout");
    wrapped
        .arg("-k")
        .arg("5")
        .arg(deadline.as_secs().max(1).to_string())
        .arg(&program)
        .args(&args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    let out = wrapped
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {program:?}"))?;
    Ok(Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A running private containerd.
#[derive(Debug)]
pub struct Containerd {
    /// Which build.
    pub build: ContainerdBuild,
    /// Its work directory.
    pub work: PathBuf,
    /// The namespace tests use.
    pub namespace: String,
    /// Directory put first on containerd's PATH (holds `containerd-shim-runsc-v1`).
    pub bin_dir: PathBuf,
    child: Option<Child>,
    /// Config file, PATH and network namespace, to start it again.
    launch: (PathBuf, String, Option<String>),
}

/// Extra configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Appended to the generated config (TOML, in the config version the build expects).
    pub extra: String,
    /// Run containerd inside this network namespace (`/run/netns/<name>`).
    pub netns: Option<String>,
    /// Use this complete config file instead of generating one (its gRPC address must be
    /// `<work>/containerd.sock`).
    pub config_file: Option<PathBuf>,
}

impl Containerd {
    /// Starts containerd `build` in `work` with `shim` on its PATH as `containerd-shim-runsc-v1`.
    pub fn start(
        build: &ContainerdBuild,
        work: &Path,
        shim: &Path,
        cfg: &Config,
    ) -> Result<Containerd> {
        check_binaries(build, shim)?;
        std::fs::create_dir_all(work)?;
        let bin_dir = link_shims(build, work, shim)?;
        let config_file = match &cfg.config_file {
            Some(f) => f.clone(),
            None => {
                let f = work.join("config.toml");
                std::fs::write(&f, generated_config(build, work, &cfg.extra))?;
                f
            }
        };
        // A fresh log for this containerd (restarts append to it).
        std::fs::File::create(work.join("containerd.log"))?;
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            bin_dir.display()
        );
        let mut c = Containerd {
            build: build.clone(),
            work: work.to_path_buf(),
            namespace: "e2e".into(),
            bin_dir,
            child: None,
            launch: (config_file, path, cfg.netns.clone()),
        };
        c.launch()?;
        c.wait_up()?;
        Ok(c)
    }

    /// containerd's state directory (task bundles, shim addresses).
    pub fn state_dir(&self) -> PathBuf {
        self.work.join("state")
    }

    /// Waits until the freshly launched daemon answers; stops it and fails if it never does.
    fn wait_up(&mut self) -> Result<()> {
        // Seconds normally; much longer in an emulated guest on a loaded machine, where the
        // binary is read over 9p.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.ctr(&["version"])?.code == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.work.join("containerd.log")).unwrap_or_default();
                self.stop();
                bail!(
                    "containerd {} did not come up:\n{}",
                    self.build.name,
                    tail(&log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn launch(&mut self) -> Result<()> {
        let (config_file, path, netns) = &self.launch;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.work.join("containerd.log"))?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg(&self.build.containerd);
                c
            }
            None => Command::new(&self.build.containerd),
        };
        cmd.arg("--config")
            .arg(config_file)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(cmd.spawn().context("start containerd")?);
        Ok(())
    }

    /// Stops only the containerd daemon (SIGTERM, as an upgrade does); tasks and shims stay.
    pub fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) with a pid we own and a valid signal number.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again with the same configuration and waits until it answers.
    pub fn start_daemon(&mut self) -> Result<()> {
        self.launch()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ctr(&["version"])?.code != 0 {
            if Instant::now() > deadline {
                bail!("containerd did not come back:\n{}", self.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// containerd's gRPC socket.
    pub fn address(&self) -> PathBuf {
        self.work.join("containerd.sock")
    }

    /// containerd's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A `ctr` command for this containerd and namespace.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.build.ctr);
        cmd.arg("--address")
            .arg(self.address())
            .arg("-n")
            .arg(&self.namespace)
            .args(args);
        cmd
    }

    /// Runs ctr (30 s deadline).
    pub fn ctr(&self, args: &[&str]) -> Result<Out> {
        run(&mut self.ctr_cmd(args), Duration::from_secs(30))
    }

    /// Runs ctr and requires success.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<String> {
        Ok(self
            .ctr(args)?
            .ok()
            .with_context(|| format!("ctr {}", args.join(" ")))?
            .stdout)
    }

    /// `ctr run -d` of `sh -c script` in `image` as `id`, through this shim's runtime with
    /// runtime options file `toml`.
    pub fn run_script(&self, toml: &str, image: &str, id: &str, script: &str) -> Result<()> {
        self.ctr_ok(&[
            "run",
            "-d",
            "--runtime",
            "io.containerd.runsc.v1",
            "--runtime-config-path",
            toml,
            image,
            id,
            "sh",
            "-c",
            script,
        ])
        .map(drop)
    }

    /// Imports an image tarball.
    pub fn import(&self, tarball: &Path) -> Result<()> {
        let t = tarball.display().to_string();
        self.ctr_ok(&["images", "import", &t])?;
        Ok(())
    }

    /// `ctr images export` of checkpoint image `image` into `tar`: every platform, and no
    /// Docker `manifest.json` (a checkpoint has none; without the flag ctr fails with "unable
    /// to create manifests file").
    pub fn export_checkpoint(&self, image: &str, tar: &Path) -> Result<()> {
        let t = tar.display().to_string();
        self.ctr_ok(&[
            "images",
            "export",
            "--all-platforms",
            "--skip-manifest-json",
            &t,
            image,
        ])?;
        Ok(())
    }

    /// The tail of containerd's log (for failure reports).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(
            &std::fs::read_to_string(self.work.join("containerd.log")).unwrap_or_default(),
            lines,
        )
    }

    /// Removes every task and container, then stops containerd.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        if let Ok(out) = self.ctr(&["task", "ls", "-q"]) {
            for id in out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
                let _ = self.ctr(&["task", "delete", "-f", id]);
            }
        }
        if let Ok(out) = self.ctr(&["containers", "ls", "-q"]) {
            for id in out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = self.ctr(&["containers", "rm", id]);
            }
        }
        self.stop_daemon();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fails with a hint when the containerd build or the shim binary is missing.
fn check_binaries(build: &ContainerdBuild, shim: &Path) -> Result<()> {
    if !build.available() {
        bail!(
            "containerd {} not found at {} (run scripts/fetch-runtimes.sh)",
            build.name,
            build.containerd.display()
        );
    }
    if !shim.is_file() {
        bail!(
            "shim binary {} not found (cargo build first)",
            shim.display()
        );
    }
    Ok(())
}

/// `<work>/bin` holding `shim` as `containerd-shim-runsc-v1` and, for comparisons, the
/// build's own runc shim.
fn link_shims(build: &ContainerdBuild, work: &Path, shim: &Path) -> Result<PathBuf> {
    let bin_dir = work.join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    let link = bin_dir.join("containerd-shim-runsc-v1");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(shim, &link)?;
    if let Some(dir) = build.containerd.parent() {
        let runc_shim = dir.join("containerd-shim-runc-v2");
        let l = bin_dir.join("containerd-shim-runc-v2");
        let _ = std::fs::remove_file(&l);
        if runc_shim.is_file() {
            std::os::unix::fs::symlink(&runc_shim, &l)?;
        }
    }
    Ok(bin_dir)
}

/// A private config for `build` in `work`, with `extra` appended.
fn generated_config(build: &ContainerdBuild, work: &Path, extra: &str) -> String {
    let w = work.display();
    let disabled = r#"disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]"#;
    // Config version 2 for containerd 1.x, 3 for 2.x (what each writes by default).
    let version = if build.major() >= 2 { 3 } else { 2 };
    format!(
        "version = {version}\nroot = \"{w}/root\"\nstate = \"{w}/state\"\n{disabled}\n\
         [grpc]\n  address = \"{w}/containerd.sock\"\n\
         [ttrpc]\n  address = \"{w}/containerd.sock.ttrpc\"\n\
         [debug]\n  address = \"{w}/debug.sock\"\n  level = \"debug\"\n{extra}"
    )
}

/// Last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `ctr events` of a containerd's namespace, written to a file while this lives.
#[derive(Debug)]
pub struct EventLog {
    child: Child,
    file: PathBuf,
}

impl EventLog {
    /// Subscribes to `c`'s events (its current namespace), writing them to `file`.
    pub fn start(c: &Containerd, file: PathBuf) -> Result<EventLog> {
        let child = c
            .ctr_cmd(&["events"])
            .stdout(std::fs::File::create(&file)?)
            .stderr(Stdio::null())
            .spawn()
            .context("start ctr events")?;
        Ok(EventLog { child, file })
    }

    /// Everything seen so far, a line per event.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap_or_default()
    }

    /// Topics of the events seen for container `id`, in the order containerd published them.
    pub fn topics(&self, id: &str) -> Vec<String> {
        let needle = format!("\"container_id\":\"{id}\"");
        self.text()
            .lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("/tasks/")))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
