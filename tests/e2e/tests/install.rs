//! The installer against the real default configs of containerd 1.6, 1.7 and 2.1, turned into
//! a user's config (private paths, a comment, a custom runtime): the patched containerd
//! starts and runs gVisor containers through `ctr` and through the CRI handler `runsc`; a
//! second run changes nothing; `uninstall` restores the original byte for byte; a broken
//! config is refused and left unchanged.
#![allow(clippy::expect_used, reason = "test helper")]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "test runner output"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::containerd::{Config, Containerd, run};
use e2e::cri::{self, Cri};
use e2e::node::{self, IMAGE};
use e2e::runner::{self, Runner};
use e2e::versions::{self, ContainerdBuild};
use toml_edit::{DocumentMut, value};

/// `containerd config default` of this build, made private to `work` like a real node's
/// config would be customised, with a comment and a custom runtime of the user's.
fn user_config(build: &ContainerdBuild, work: &Path) -> Result<String> {
    let mut doc = node::private_default_config(build, work)?;
    let cri = node::cri_runtime_plugin(&doc);
    node::table(
        &mut doc,
        &["plugins", cri, "containerd", "runtimes", "kata"],
    )?
    .insert("runtime_type", value("io.containerd.kata.v2"));
    Ok(format!(
        "# node config, hand-edited: keep this comment\n{doc}"
    ))
}

fn shim(args: &[&str]) -> Result<e2e::containerd::Out> {
    run(
        Command::new(versions::shim_binary()).args(args),
        Duration::from_secs(60),
    )
}

/// Every line of `original` appears in `patched`, in order (nothing lost or reordered).
fn keeps_all_lines(original: &str, patched: &str) -> bool {
    let mut lines = patched.lines();
    original.lines().all(|want| lines.any(|l| l == want))
}

/// One containerd build's installer run: its files and the command lines used on them.
struct Setup<'a> {
    build: &'a ContainerdBuild,
    work: &'a Path,
    config: PathBuf,
    runsc_toml: PathBuf,
    /// The user's config before the installer ran.
    original: String,
    /// `install ...` arguments.
    install: Vec<String>,
    /// `uninstall ...` arguments.
    uninstall: Vec<String>,
}

impl Setup<'_> {
    fn runsc_toml_str(&self) -> String {
        self.runsc_toml.display().to_string()
    }
}

/// Runs the shim binary with `args` (owned strings).
fn shim_with(args: &[String], extra: &[&str]) -> Result<e2e::containerd::Out> {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    shim(&all)
}

fn setup<'a>(build: &'a ContainerdBuild, work: &'a Path) -> Result<Setup<'a>> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work.join("bin"))?;
    std::fs::create_dir_all(work.join("cni"))?;
    let config = work.join("config.toml");
    let runsc_toml = work.join("runsc.toml");
    let original = user_config(build, work)?;
    std::fs::write(&config, &original)?;
    let paths = vec![
        "--containerd-config".to_owned(),
        config.display().to_string(),
        "--runsc-config".to_owned(),
        runsc_toml.display().to_string(),
        "--bin-dir".to_owned(),
        work.join("bin").display().to_string(),
        "--runsc".to_owned(),
        "/usr/bin/runsc".to_owned(),
    ];
    let mut install = vec!["install".to_owned()];
    install.extend(paths.iter().cloned());
    install.extend([
        "--containerd".to_owned(),
        build.containerd.display().to_string(),
    ]);
    let mut uninstall = vec!["uninstall".to_owned()];
    uninstall.extend(paths);
    Ok(Setup {
        build,
        work,
        config,
        runsc_toml,
        original,
        install,
        uninstall,
    })
}

fn scenario(build: &ContainerdBuild, work: &Path) -> Result<()> {
    let s = setup(build, work)?;
    dry_run_changes_nothing(&s)?;
    let patched = install_patches_the_config(&s)?;
    containerd_runs_gvisor(&s)?;
    second_run_and_uninstall(&s, &patched)?;
    broken_config_is_refused(&s)
}

/// Dry run: prints the diff, changes nothing.
fn dry_run_changes_nothing(s: &Setup) -> Result<()> {
    let out = shim_with(&s.install, &["--dry-run"])?.ok()?;
    ensure!(
        out.stdout
            .contains("+  runtime_type = \"io.containerd.runsc.v1\"")
            || out
                .stdout
                .contains("+runtime_type = \"io.containerd.runsc.v1\""),
        "{}",
        out.stdout
    );
    ensure!(
        std::fs::read_to_string(&s.config)? == s.original && !s.runsc_toml.exists(),
        "dry run changed files"
    );
    Ok(())
}

/// The installer adds the `runsc` runtime, keeps the user's lines and runtime and installs
/// the binaries; the patched config is returned.
fn install_patches_the_config(s: &Setup) -> Result<String> {
    shim_with(&s.install, &[])?.ok()?;
    let patched = std::fs::read_to_string(&s.config)?;
    ensure!(
        keeps_all_lines(&s.original, &patched),
        "the installer lost or reordered lines:\n{patched}"
    );
    let doc: DocumentMut = patched.parse()?;
    let cri = if s.build.major() >= 2 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    };
    let rt = &doc["plugins"][cri]["containerd"]["runtimes"]["runsc"];
    ensure!(
        rt["runtime_type"].as_str() == Some("io.containerd.runsc.v1"),
        "{patched}"
    );
    ensure!(
        rt["options"]["ConfigPath"].as_str() == Some(s.runsc_toml_str().as_str()),
        "{patched}"
    );
    ensure!(
        doc["plugins"][cri]["containerd"]["runtimes"]["kata"]["runtime_type"].as_str()
            == Some("io.containerd.kata.v2"),
        "the user's runtime must stay"
    );
    ensure!(
        s.work.join("bin/containerd-shim-runsc-v1").is_file() && s.work.join("bin/runsc").is_file()
    );
    // This kernel needs runsc without sandbox networking in the root netns (see README).
    let toml = std::fs::read_to_string(&s.runsc_toml)?.replacen(
        "[runsc_config]\n",
        &format!(
            "root = \"{}\"\n[runsc_config]\nnetwork = \"none\"\n",
            s.work.join("runsc-root").display()
        ),
        1,
    );
    std::fs::write(&s.runsc_toml, toml)?;
    Ok(patched)
}

/// The patched containerd runs gVisor containers through `ctr` and through CRI.
fn containerd_runs_gvisor(s: &Setup) -> Result<()> {
    let cfg = Config {
        config_file: Some(s.config.clone()),
        ..Config::default()
    };
    let mut cd = Containerd::start(
        s.build,
        &s.work.join("ctd"),
        &s.work.join("bin/containerd-shim-runsc-v1"),
        &cfg,
    )?;
    // One namespace for both checks, the one CRI uses (`ctr -n k8s.io` on a node).
    cd.namespace = "k8s.io".into();
    node::import_pod_images(&cd, s.work)?;
    let r = s.runsc_toml_str();
    let out = cd
        .ctr(&[
            "run",
            "--rm",
            "--runtime",
            "io.containerd.runsc.v1",
            "--runtime-config-path",
            &r,
            IMAGE,
            "inst1",
            "dmesg",
        ])?
        .ok()?;
    ensure!(out.stdout.contains("Starting gVisor"), "{out:?}");
    cri_pod_runs(&cd, s.work)
}

/// Through CRI with handler "runsc" (its ConfigPath is the installed runsc.toml).
fn cri_pod_runs(cd: &Containerd, work: &Path) -> Result<()> {
    node::loopback_cni(&work.join("cni"))?;
    let mut cri = Cri::connect(&cd.address())?;
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut pod_cfg = cri::pod_config("inst", "uid-inst", &logs, "");
    let mut ccfg = cri::container_config(
        "hello",
        IMAGE,
        &[
            "sh",
            "-c",
            "echo hello from gvisor; dmesg | head -1; sleep 100000",
        ],
    );
    // Host network: no CNI bridge needed for this check.
    cri::host_network(&mut pod_cfg, &mut [&mut ccfg]);
    let pod = cri.run_pod(&pod_cfg, "runsc")?;
    cri.start_container(&pod, &ccfg, &pod_cfg)?;
    let log = logs.join("hello.log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    runner::eventually("the CRI container's log", Duration::from_secs(20), || {
        let text = read_log();
        Ok(text.contains("hello from gvisor") && text.contains("Starting gVisor"))
    })
    .with_context(|| format!("CRI container log: {:?}", read_log()))?;
    cri.remove_pod(&pod)
}

/// A second install changes nothing; uninstall restores the original byte for byte (the
/// edited runsc.toml stays).
fn second_run_and_uninstall(s: &Setup, patched: &str) -> Result<()> {
    let restore_runsc = std::fs::read(&s.runsc_toml)?;
    let out = shim_with(&s.install, &[])?.ok()?;
    ensure!(out.stdout.contains("nothing to do"), "{}", out.stdout);
    ensure!(
        std::fs::read_to_string(&s.config)? == patched,
        "second run changed the config"
    );
    shim_with(&s.uninstall, &[])?.ok()?;
    ensure!(
        std::fs::read_to_string(&s.config)? == s.original,
        "uninstall did not restore the original"
    );
    ensure!(
        !s.work.join("bin/containerd-shim-runsc-v1").exists(),
        "shim binary left"
    );
    ensure!(
        std::fs::read(&s.runsc_toml)? == restore_runsc,
        "an edited runsc.toml must stay"
    );
    Ok(())
}

/// A config that cannot be parsed is refused and left alone.
fn broken_config_is_refused(s: &Setup) -> Result<()> {
    let broken = format!("{}\n[plugins\n", s.original);
    std::fs::write(&s.config, &broken)?;
    let out = shim_with(&s.install, &[])?;
    ensure!(
        out.code != 0 && out.stderr.contains("cannot parse"),
        "{out:?}"
    );
    ensure!(
        std::fs::read_to_string(&s.config)? == broken,
        "broken config was touched"
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut r = Runner::from_args();
    if !r.needs_root("install") {
        return r.finish();
    }
    let base = runner::work_base();
    for build in versions::containerds() {
        let name = format!("install/containerd-{}", build.name);
        let work = base.join(format!("install-{}", build.name));
        r.run(&name, || scenario(&build, &work));
        e2e::leftovers::unmount_under(&work);
    }
    r.finish()
}
