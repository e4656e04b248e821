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

use std::path::Path;
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

fn scenario(build: &ContainerdBuild, work: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work.join("bin"))?;
    std::fs::create_dir_all(work.join("cni"))?;
    let config = work.join("config.toml");
    let runsc_toml = work.join("runsc.toml");
    let original = user_config(build, work)?;
    std::fs::write(&config, &original)?;
    let c = config.display().to_string();
    let r = runsc_toml.display().to_string();
    let bin = work.join("bin").display().to_string();
    let containerd = build.containerd.display().to_string();
    let args = [
        "install",
        "--containerd-config",
        &c,
        "--runsc-config",
        &r,
        "--bin-dir",
        &bin,
        "--runsc",
        "/usr/bin/runsc",
        "--containerd",
        &containerd,
    ];

    // Dry run: prints the diff, changes nothing.
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let out = shim(&dry)?.ok()?;
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
        std::fs::read_to_string(&config)? == original && !runsc_toml.exists(),
        "dry run changed files"
    );

    shim(&args)?.ok()?;
    let patched = std::fs::read_to_string(&config)?;
    ensure!(
        keeps_all_lines(&original, &patched),
        "the installer lost or reordered lines:\n{patched}"
    );
    let doc: DocumentMut = patched.parse()?;
    let cri = if build.major() >= 2 {
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
        rt["options"]["ConfigPath"].as_str() == Some(r.as_str()),
        "{patched}"
    );
    ensure!(
        doc["plugins"][cri]["containerd"]["runtimes"]["kata"]["runtime_type"].as_str()
            == Some("io.containerd.kata.v2"),
        "the user's runtime must stay"
    );
    ensure!(
        work.join("bin/containerd-shim-runsc-v1").is_file() && work.join("bin/runsc").is_file()
    );
    // This kernel needs runsc without sandbox networking in the root netns (see README).
    let toml = std::fs::read_to_string(&runsc_toml)?.replacen(
        "[runsc_config]\n",
        &format!(
            "root = \"{}\"\n[runsc_config]\nnetwork = \"none\"\n",
            work.join("runsc-root").display()
        ),
        1,
    );
    std::fs::write(&runsc_toml, toml)?;

    {
        let cfg = Config {
            config_file: Some(config.clone()),
            ..Config::default()
        };
        let mut cd = Containerd::start(
            build,
            &work.join("ctd"),
            &work.join("bin/containerd-shim-runsc-v1"),
            &cfg,
        )?;
        // One namespace for both checks, the one CRI uses (`ctr -n k8s.io` on a node).
        cd.namespace = "k8s.io".into();
        node::import_pod_images(&cd, work)?;
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

        // Through CRI with handler "runsc" (its ConfigPath is the installed runsc.toml).
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
        cri.remove_pod(&pod)?;
        drop(cd);
    }

    // Second run: nothing to do, nothing changed.
    let restore_runsc = std::fs::read(&runsc_toml)?;
    let out = shim(&args)?.ok()?;
    ensure!(out.stdout.contains("nothing to do"), "{}", out.stdout);
    ensure!(
        std::fs::read_to_string(&config)? == patched,
        "second run changed the config"
    );

    // Uninstall restores the original byte for byte (runsc.toml was edited: it stays).
    let un = [
        "uninstall",
        "--containerd-config",
        &c,
        "--runsc-config",
        &r,
        "--bin-dir",
        &bin,
        "--runsc",
        "/usr/bin/runsc",
    ];
    shim(&un)?.ok()?;
    ensure!(
        std::fs::read_to_string(&config)? == original,
        "uninstall did not restore the original"
    );
    ensure!(
        !work.join("bin/containerd-shim-runsc-v1").exists(),
        "shim binary left"
    );
    ensure!(
        std::fs::read(&runsc_toml)? == restore_runsc,
        "an edited runsc.toml must stay"
    );

    // A config that cannot be parsed is refused and left alone.
    let broken = format!("{original}\n[plugins\n");
    std::fs::write(&config, &broken)?;
    let out = shim(&args)?;
    ensure!(
        out.code != 0 && out.stderr.contains("cannot parse"),
        "{out:?}"
    );
    ensure!(
        std::fs::read_to_string(&config)? == broken,
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
