//! End to end through containerd's CRI (what the kubelet uses): pods with runtime handler
//! `runsc`, on containerd 1.6, 1.7 and 2.1 and runsc 2022 and 2024.
//!
//! `cargo test -p e2e --test cri [FILTER...]` (root; run `scripts/fetch-runtimes.sh` first).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "test runner output"
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::cri;
use e2e::leftovers;
use e2e::pods::{HANDLER, IMAGE, PodEnv};
use e2e::runner::Runner;
use e2e::versions::{self, RunscBuild};

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `f` holds.
fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn shims_for(env: &PodEnv) -> Vec<leftovers::Proc> {
    leftovers::shims(&env.containerd.address())
}

fn scenarios(r: &mut Runner, env: &mut PodEnv, p: &str, _rs: &RunscBuild) {
    r.run(
        &format!("{p}/two_container_pod_logs_exec_and_one_shim"),
        || {
            let log_dir = env.logs.join("pod1");
            std::fs::create_dir_all(&log_dir)?;
            let pod_cfg = cri::pod_config(
                "pod1",
                "uid-pod1",
                &log_dir,
                &format!("{}/podpod1", env.cgroup_base),
            );
            let pod = env.cri.run_pod(&pod_cfg, HANDLER)?;
            let a = env.cri.start_container(
                &pod,
                &cri::container_config(
                    "app-a",
                    IMAGE,
                    &[
                        "sh",
                        "-c",
                        "echo hello-from-a; echo err-from-a >&2; exec sleep 100000",
                    ],
                ),
                &pod_cfg,
            )?;
            let b = env.cri.start_container(
                &pod,
                &cri::container_config(
                    "app-b",
                    IMAGE,
                    &["sh", "-c", "echo hello-from-b; exec sleep 100000"],
                ),
                &pod_cfg,
            )?;
            eventually("container logs", Duration::from_secs(20), || {
                let la = read_log(&log_dir.join("app-a.log"));
                let lb = read_log(&log_dir.join("app-b.log"));
                Ok(la.contains("stdout F hello-from-a")
                    && la.contains("stderr F err-from-a")
                    && lb.contains("stdout F hello-from-b"))
            })
            .with_context(|| {
                format!(
                    "a: {:?} b: {:?}",
                    read_log(&log_dir.join("app-a.log")),
                    read_log(&log_dir.join("app-b.log"))
                )
            })?;
            ensure!(
                !read_log(&log_dir.join("app-b.log")).contains("from-a"),
                "logs mixed"
            );
            for (id, name) in [(&a, "a"), (&b, "b")] {
                let out = env.cri.exec_sync(
                    id,
                    &["sh", "-c", &format!("echo exec-in-{name}; exit 3")],
                    10,
                )?;
                ensure!(out.exit_code == 3, "exit code {}", out.exit_code);
                ensure!(
                    String::from_utf8_lossy(&out.stdout) == format!("exec-in-{name}\n"),
                    "{:?}",
                    out
                );
            }
            let dmesg = env.cri.exec_sync(&a, &["dmesg"], 10)?;
            ensure!(
                String::from_utf8_lossy(&dmesg.stdout).contains("Starting gVisor"),
                "dmesg: {dmesg:?}"
            );
            let v = env.cri.exec_sync(&b, &["cat", "/proc/version"], 10)?;
            ensure!(
                String::from_utf8_lossy(&v.stdout).contains("Linux version 4.4.0"),
                "{v:?}"
            );
            let shims = shims_for(env);
            ensure!(
                shims.len() == 1,
                "expected one shim for the pod, found {}: {shims:?}",
                shims.len()
            );
            env.cri.remove_pod(&pod)?;
            eventually("shim exit", Duration::from_secs(10), || {
                Ok(shims_for(env).is_empty())
            })?;
            Ok(())
        },
    );
}

fn main() -> ExitCode {
    let mut r = Runner::from_args();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: the end-to-end tests need root (real containerd and runsc)");
        return ExitCode::SUCCESS;
    }
    let base =
        PathBuf::from(std::env::var("E2E_WORK").unwrap_or_else(|_| "/tmp/runsc-shim-e2e".into()));
    let shim = versions::shim_binary();
    for cd in versions::containerds() {
        for rs in versions::runscs() {
            let p = format!("cri-{}/runsc-{}", cd.name, rs.name);
            if !r.wants_group(&p) {
                continue;
            }
            let work = base.join(format!("cri{}-r{}", cd.name, rs.name));
            match PodEnv::start(&cd, &rs, &shim, &work, "") {
                Ok(mut env) => {
                    scenarios(&mut r, &mut env, &p, &rs);
                    env.stop();
                    let runsc_root = env.runsc_root.clone();
                    r.run(&format!("{p}/nothing_left_behind"), || {
                        let shims = leftovers::shims(&env.containerd.address());
                        let runsc = leftovers::runsc_processes(&runsc_root);
                        let mounts = leftovers::mounts_under(&work);
                        leftovers::kill_all(&shims);
                        leftovers::kill_all(&runsc);
                        leftovers::unmount_under(&work);
                        ensure!(shims.is_empty(), "shims left: {shims:?}");
                        ensure!(runsc.is_empty(), "runsc processes left: {runsc:?}");
                        ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
                        Ok(())
                    });
                }
                Err(e) => r.fail(&p, format!("{e:#}")),
            }
        }
    }
    r.finish()
}
