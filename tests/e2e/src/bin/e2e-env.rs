//! Test environment tool.
//!
//! - `e2e-env image OUT.tar [NAME]`: build the busybox OCI image tarball.
//! - `e2e-env demo [CONTAINERD] [RUNSC]`: start a private containerd, import the image and run
//!   `dmesg` in a gVisor container through `containerd-shim-runsc-v1`, then clean up.
//! - `e2e-env pod-demo [CONTAINERD] [RUNSC]`: take that containerd's default config, install
//!   the shim into it with `containerd-shim-runsc-v1 install`, start containerd and run a pod
//!   through CRI with the handler `runsc`, exec into it, then remove the pod, uninstall and
//!   clean up.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "command line tool"
)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail, ensure};
use e2e::containerd::{Config, Containerd, run};
use e2e::cri::{self, Cri};
use e2e::node::{self, IMAGE};
use e2e::versions::{ContainerdBuild, RunscBuild};
use e2e::{image, runner, versions};

/// The containerd and runsc builds named on the command line (default: 1.6 and 2022).
fn builds(args: &[String]) -> Result<(ContainerdBuild, RunscBuild)> {
    let cd_name = args.first().map_or("1.6", String::as_str);
    let rs_name = args.get(1).map_or("2022", String::as_str);
    let cd = versions::containerds()
        .into_iter()
        .find(|c| c.name == cd_name)
        .with_context(|| format!("unknown containerd {cd_name} (1.6, 1.7, 2.1)"))?;
    let rs = versions::runsc(rs_name)?;
    Ok((cd, rs))
}

/// Runs the shim binary with `args`, echoing the command line.
fn shim_cmd(args: &[&str]) -> Result<()> {
    println!("$ containerd-shim-runsc-v1 {}", args.join(" "));
    let out = run(
        std::process::Command::new(versions::shim_binary()).args(args),
        std::time::Duration::from_secs(60),
    )?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    out.ok().map(drop)
}

fn pod_demo(args: &[String]) -> Result<()> {
    let (cd, rs) = builds(args)?;
    let work = PathBuf::from(
        std::env::var("DEMO_DIR").unwrap_or_else(|_| "/tmp/runsc-shim-pod-demo".into()),
    );
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("cni"))?;
    let result = pod_demo_in(&cd, &rs, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn pod_demo_in(cd: &ContainerdBuild, rs: &RunscBuild, work: &std::path::Path) -> Result<()> {
    // A node's containerd config before the shim is installed: the build's defaults.
    let config = work.join("config.toml");
    std::fs::write(&config, node::private_default_config(cd, work)?.to_string())?;
    let c = config.display().to_string();
    let runsc_toml = work.join("runsc.toml");
    let r = runsc_toml.display().to_string();
    let bin = work.join("bin").display().to_string();
    let runsc = rs.runsc.display().to_string();
    let containerd = cd.containerd.display().to_string();
    println!(
        "containerd {} ({containerd}), runsc {} ({runsc})",
        cd.name, rs.name
    );
    // On a node: `containerd-shim-runsc-v1 install --runsc /path/to/runsc --restart`; here
    // every path points into the private directory.
    let paths = [
        "--containerd-config",
        c.as_str(),
        "--runsc-config",
        &r,
        "--bin-dir",
        &bin,
        "--runsc",
        &runsc,
    ];
    shim_cmd(&[&["install"], &paths[..], &["--containerd", &containerd]].concat())?;
    // This kernel: old runsc refuses sandbox networking in the root network namespace (see
    // the README); a private runsc state root keeps the machine's own untouched.
    let toml = std::fs::read_to_string(&runsc_toml)?.replacen(
        "[runsc_config]\n",
        &format!(
            "root = \"{}\"\n[runsc_config]\nnetwork = \"none\"\n",
            work.join("runsc-root").display()
        ),
        1,
    );
    std::fs::write(&runsc_toml, toml)?;
    run_pod_through_installed(cd, work, &config)?;
    shim_cmd(&[&["uninstall"], &paths[..]].concat())?;
    println!("OK: a pod ran inside gVisor through CRI and containerd-shim-runsc-v1");
    Ok(())
}

/// Starts containerd with the installed `config`, runs the demo pod and removes it.
fn run_pod_through_installed(
    cd: &ContainerdBuild,
    work: &std::path::Path,
    config: &std::path::Path,
) -> Result<()> {
    let mut ctd = Containerd::start(
        cd,
        &work.join("ctd"),
        &work.join("bin/containerd-shim-runsc-v1"),
        &Config {
            config_file: Some(config.to_path_buf()),
            ..Config::default()
        },
    )?;
    ctd.namespace = "k8s.io".into();
    node::import_pod_images(&ctd, work)?;
    node::loopback_cni(&work.join("cni"))?;

    let mut cri = Cri::connect(&ctd.address())?;
    let logs = work.join("pod-logs");
    std::fs::create_dir_all(&logs)?;
    let mut pod_cfg = cri::pod_config("demo", "uid-demo", &logs, "");
    let mut app = cri::container_config(
        "app",
        IMAGE,
        &[
            "sh",
            "-c",
            "dmesg | head -2; echo hello from a gVisor pod; sleep 100000",
        ],
    );
    let mut sidecar = cri::container_config("sidecar", IMAGE, &["sleep", "100000"]);
    // The node's network (hostNetwork: true): this machine has no CNI bridge set up.
    cri::host_network(&mut pod_cfg, &mut [&mut app, &mut sidecar]);
    println!("RunPodSandbox(runtime_handler = \"runsc\"), two containers");
    let pod = cri.run_pod(&pod_cfg, "runsc")?;
    let outcome = (|| -> Result<()> {
        let app_id = cri.start_container(&pod, &app, &pod_cfg)?;
        cri.start_container(&pod, &sidecar, &pod_cfg)?;
        show_pod(&mut cri, &ctd, &app_id, &logs.join("app.log"))
    })();
    cri.remove_pod(&pod)?;
    ctd.stop();
    outcome
}

/// Prints what the demo pod shows (its log, an exec, its shim) and checks it ran in gVisor.
fn show_pod(cri: &mut Cri, ctd: &Containerd, app_id: &str, log: &std::path::Path) -> Result<()> {
    runner::eventually("the app's log", std::time::Duration::from_secs(30), || {
        Ok(std::fs::read_to_string(log)?.contains("hello from a gVisor pod"))
    })?;
    println!("== {} (the CRI log kubectl logs reads)", log.display());
    print!("{}", std::fs::read_to_string(log)?);
    println!("== ExecSync(app, cat /proc/version) (what kubectl exec runs)");
    let out = cri.exec_sync(app_id, &["cat", "/proc/version"], 10)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let shims = e2e::leftovers::shims(&ctd.address());
    println!(
        "== shim processes for this pod: {} ({})",
        shims.len(),
        shims
            .iter()
            .map(|p| format!("pid {}", p.pid))
            .collect::<Vec<_>>()
            .join(", ")
    );
    ensure!(
        std::fs::read_to_string(log)?.contains("Starting gVisor"),
        "the pod did not run under gVisor"
    );
    ensure!(shims.len() == 1, "expected one shim for the pod");
    Ok(())
}

fn demo(args: &[String]) -> Result<()> {
    let (cd, rs) = builds(args)?;
    let work =
        PathBuf::from(std::env::var("DEMO_DIR").unwrap_or_else(|_| "/tmp/runsc-shim-demo".into()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let tarball = work.join("busybox.tar");
    image::build(&tarball, IMAGE, &[], &["/bin/sh"])?;
    let runsc_toml = work.join("runsc.toml");
    std::fs::write(
        &runsc_toml,
        format!(
            "# gVisor shim configuration (same keys as gVisor's runsc.toml)\nbinary_name = \"{}\"\nroot = \"{}\"\n\
             [runsc_config]\n  # This kernel makes old runsc refuse networking in the root netns.\n  network = \"none\"\n",
            rs.runsc.display(),
            work.join("runsc-root").display()
        ),
    )?;
    let shim = versions::shim_binary();
    println!(
        "containerd {} ({}), runsc {} ({}), shim {}",
        cd.name,
        cd.containerd.display(),
        rs.name,
        rs.runsc.display(),
        shim.display()
    );
    let c = Containerd::start(&cd, &work.join("containerd"), &shim, &Config::default())?;
    c.import(&tarball)?;
    let cfg = runsc_toml.display().to_string();
    println!(
        "$ ctr run --rm --runtime io.containerd.runsc.v1 --runtime-config-path {cfg} busybox-e2e demo dmesg"
    );
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.runsc.v1",
        "--runtime-config-path",
        &cfg,
        IMAGE,
        "demo",
        "dmesg",
    ])?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    let version = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.runsc.v1",
        "--runtime-config-path",
        &cfg,
        IMAGE,
        "demo2",
        "cat",
        "/proc/version",
    ])?;
    print!("{}", version.stdout);
    drop(c);
    if out.code != 0 || !out.stdout.contains("Starting gVisor") {
        bail!(
            "the container did not run under gVisor (exit code {})",
            out.code
        );
    }
    println!("OK: the container ran inside gVisor through containerd-shim-runsc-v1");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("image") => match args.get(1) {
            Some(out) => image::build(
                out.as_ref(),
                args.get(2).map_or(IMAGE, String::as_str),
                &[],
                &["/bin/sh"],
            ),
            None => Err(anyhow::anyhow!("usage: e2e-env image OUT.tar [NAME]")),
        },
        Some("demo") => demo(&args[1..]),
        Some("pod-demo") => pod_demo(&args[1..]),
        _ => Err(anyhow::anyhow!(
            "usage: e2e-env image OUT.tar [NAME] | demo|pod-demo [1.6|1.7|2.1] [2022|2024]"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e-env: {e:#}");
            ExitCode::FAILURE
        }
    }
}
