//! Test environment tool.
//!
//! - `e2e-env image OUT.tar [NAME]`: build the busybox OCI image tarball.
//! - `e2e-env demo [CONTAINERD] [RUNSC]`: start a private containerd, import the image and run
//!   `dmesg` in a gVisor container through `containerd-shim-runsc-v1`, then clean up.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "command line tool"
)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use e2e::containerd::{Config, Containerd};
use e2e::{image, versions};

fn demo(args: &[String]) -> Result<()> {
    let cd_name = args.first().map_or("1.6", String::as_str);
    let rs_name = args.get(1).map_or("2022", String::as_str);
    let cd = versions::containerds()
        .into_iter()
        .find(|c| c.name == cd_name)
        .with_context(|| format!("unknown containerd {cd_name} (1.6, 1.7, 2.1)"))?;
    let rs = versions::runscs()
        .into_iter()
        .find(|r| r.name == rs_name)
        .with_context(|| format!("unknown runsc {rs_name} (2022, 2024)"))?;
    let work =
        PathBuf::from(std::env::var("DEMO_DIR").unwrap_or_else(|_| "/tmp/runsc-shim-demo".into()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let tarball = work.join("busybox.tar");
    image::build(
        &tarball,
        "docker.io/library/busybox-e2e:latest",
        &[],
        &["/bin/sh"],
    )?;
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
        "docker.io/library/busybox-e2e:latest",
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
        "docker.io/library/busybox-e2e:latest",
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
                args.get(2)
                    .map_or("docker.io/library/busybox-e2e:latest", String::as_str),
                &[],
                &["/bin/sh"],
            ),
            None => Err(anyhow::anyhow!("usage: e2e-env image OUT.tar [NAME]")),
        },
        Some("demo") => demo(&args[1..]),
        _ => Err(anyhow::anyhow!(
            "usage: e2e-env image OUT.tar [NAME] | demo [1.6|1.7|2.1] [2022|2024]"
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
