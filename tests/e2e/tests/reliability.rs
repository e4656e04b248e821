//! Reliability against real containerd and runsc: containerd restarts, a killed shim,
//! concurrency and load, flooding containers, file modes.
//!
//! `cargo test -p e2e --test reliability [FILTER...]` (root). `SOAK_CYCLES` sets the number
//! of create/delete cycles of the soak (default 30; the documented long run is 1000).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "test runner output"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use e2e::cri::{self, ContainerState, Cri};
use e2e::leftovers::{self, Proc};
use e2e::pods::{HANDLER, IMAGE, PodEnv};
use e2e::runner::{self, Runner, eventually};
use e2e::versions::{self, ContainerdBuild, RunscBuild};

const RUNTIME: &str = "io.containerd.runsc.v1";

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn status_of(field: &str, pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn zombie_children(pid: u32) -> Vec<u32> {
    leftovers::processes(|_| true)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{}/stat", p.pid)).is_ok_and(|s| {
                let rest = s
                    .rsplit_once(')')
                    .map(|(_, r)| r.to_owned())
                    .unwrap_or_default();
                let mut it = rest.split_whitespace();
                it.next() == Some("Z") && it.next() == Some(pid.to_string().as_str())
            })
        })
        .map(|p| p.pid)
        .collect()
}

struct Env {
    pods: PodEnv,
    none_toml: String,
}

impl Env {
    /// `ctr run -d` with our runtime; `flags` go before the image.
    fn ctr_run_d(&self, id: &str, flags: &[&str], args: &[&str]) -> Result<()> {
        let mut a = vec![
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            "--runtime-config-path",
            &self.none_toml,
        ];
        a.extend_from_slice(flags);
        a.extend_from_slice(&[IMAGE, id]);
        a.extend_from_slice(args);
        self.pods.containerd.ctr_ok(&a).map(drop)
    }

    fn shims(&self) -> Vec<Proc> {
        leftovers::shims(&self.pods.containerd.address())
    }

    fn pod(&mut self, name: &str) -> Result<(String, cri::PodSandboxConfig, PathBuf)> {
        let dir = self.pods.logs.join(name);
        std::fs::create_dir_all(&dir)?;
        let cfg = cri::pod_config(
            name,
            &format!("uid-{name}"),
            &dir,
            &format!("{}/pod{name}", self.pods.cgroup_base),
        );
        let id = self.pods.cri.run_pod(&cfg, HANDLER)?;
        Ok((id, cfg, dir))
    }
}

/// A reliability scenario.
type Scenario = fn(&mut Env) -> Result<()>;

/// Every scenario, in the order they run; `<group>/<name>` is what filters match.
const SCENARIOS: &[(&str, Scenario)] = &[
    (
        "containerd_restart_keeps_containers_and_reports_exits",
        containerd_restart_keeps_containers_and_reports_exits,
    ),
    ("killed_shim_is_cleaned_up", killed_shim_is_cleaned_up),
    ("fifty_concurrent_execs", fifty_concurrent_execs),
    (
        "twenty_containers_in_a_pod_concurrently",
        twenty_containers_in_a_pod_concurrently,
    ),
    (
        "soak_create_delete_cycles_in_one_shim",
        soak_create_delete_cycles_in_one_shim,
    ),
    (
        "flooding_container_and_file_modes",
        flooding_container_and_file_modes,
    ),
];

fn scenarios(r: &mut Runner, e: &mut Env, p: &str) {
    for &(name, f) in SCENARIOS {
        r.run(&format!("{p}/{name}"), || f(e));
    }
}

/// What `dies` runs: it waits for `/signal/exit-now`, which the test creates once
/// containerd is down, then exits 7 (8 if the file never came: 60 s at most).
const DIES_SCRIPT: &str = "i=0; while [ ! -e /signal/exit-now ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; [ -e /signal/exit-now ] && exit 7; exit 8";

fn containerd_restart_keeps_containers_and_reports_exits(e: &mut Env) -> Result<()> {
    let signal = e.pods.work.join("dies-signal");
    let _ = std::fs::remove_dir_all(&signal);
    std::fs::create_dir_all(&signal)?;
    let mount = format!(
        "type=bind,src={},dst=/signal,options=rbind:rw",
        signal.display()
    );
    e.pods.containerd.namespace = "e2e".into();
    e.ctr_run_d("keep", &[], &["sleep", "100000"])?;
    e.ctr_run_d("dies", &["--mount", &mount], &["sh", "-c", DIES_SCRIPT])?;
    e.pods.containerd.namespace = "k8s.io".into();
    let (pod, pcfg, dir) = e.pod("restart")?;
    let ticker = e.pods.cri.start_container(
        &pod,
        &cri::container_config(
            "ticker",
            IMAGE,
            &[
                "sh",
                "-c",
                "while true; do echo tick-$(date +%s); sleep 0.3; done",
            ],
        ),
        &pcfg,
    )?;
    let shims_before = e.shims();
    ensure!(shims_before.len() == 3, "shims: {shims_before:?}");
    e.pods.containerd.namespace = "e2e".into();
    let dies = task_pid(&e.pods.containerd, "dies")?;
    e.pods.containerd.namespace = "k8s.io".into();

    e.pods.containerd.stop_daemon();
    ensure!(alive(dies), "dies ended before containerd was down");
    // "dies" exits while containerd is down: its sandbox process goes.
    std::fs::write(signal.join("exit-now"), "")?;
    eventually("dies to exit", Duration::from_secs(30), || Ok(!alive(dies)))?;
    ensure!(
        shims_before.iter().all(|s| alive(s.pid)),
        "a shim died with containerd"
    );
    e.pods.containerd.start_daemon()?;
    // CRI needs a new connection after the restart.
    e.pods.cri = Cri::connect(&e.pods.containerd.address())?;
    ctr_tasks_after_restart(e)?;
    cri_pod_after_restart(e, &pod, &ticker, &dir)
}

/// After the restart, through ctr: `keep` runs and takes an exec, `dies` is reported
/// stopped with the exit 7 it made while containerd was down.
fn ctr_tasks_after_restart(e: &mut Env) -> Result<()> {
    e.pods.containerd.namespace = "e2e".into();
    let c = &e.pods.containerd;
    let status = |id: &str| -> Result<String> {
        Ok(c.ctr_ok(&["task", "ls"])?
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("")
            .to_owned())
    };
    ensure!(status("keep")? == "RUNNING", "keep: {}", status("keep")?);
    eventually("dies to be stopped", Duration::from_secs(20), || {
        Ok(status("dies")? == "STOPPED")
    })?;
    let out = c
        .ctr(&[
            "task",
            "exec",
            "--exec-id",
            "after",
            "keep",
            "sh",
            "-c",
            "echo exec-after-restart",
        ])?
        .ok()?;
    ensure!(out.stdout == "exec-after-restart\n", "{out:?}");
    let del = c.ctr(&["task", "delete", "dies"])?;
    ensure!(
        del.stderr.contains("exit code 7"),
        "the exit while containerd was down: {del:?}"
    );
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "keep"])?;
    eventually("keep to stop", Duration::from_secs(20), || {
        Ok(status("keep")? == "STOPPED")
    })?;
    let _ = c.ctr(&["task", "delete", "keep"]);
    let _ = c.ctr(&["containers", "rm", "keep", "dies"]);
    e.pods.containerd.namespace = "k8s.io".into();
    Ok(())
}

/// After the restart, through CRI: the pod's container runs, takes an exec and its log keeps
/// growing; removing the pod ends every shim.
fn cri_pod_after_restart(e: &mut Env, pod: &str, ticker: &str, dir: &Path) -> Result<()> {
    let st = e.pods.cri.container_status(ticker)?;
    ensure!(
        st.state == ContainerState::ContainerRunning as i32,
        "ticker after restart: {st:?}"
    );
    let out = e
        .pods
        .cri
        .exec_sync(ticker, &["echo", "cri-exec-after-restart"], 10)?;
    ensure!(
        String::from_utf8_lossy(&out.stdout) == "cri-exec-after-restart\n",
        "{out:?}"
    );
    // Logs keep flowing into the CRI log after containerd reattached the FIFOs.
    let log = dir.join("ticker.log");
    let len = std::fs::metadata(&log)?.len();
    eventually(
        "new log lines after the restart",
        Duration::from_secs(20),
        || Ok(std::fs::metadata(&log)?.len() > len + 20),
    )?;
    e.pods.cri.remove_pod(pod)?;
    eventually("shims to exit", Duration::from_secs(20), || {
        Ok(e.shims().is_empty())
    })
}

fn killed_shim_is_cleaned_up(e: &mut Env) -> Result<()> {
    let (pod, pcfg, _) = e.pod("killed")?;
    let a = e.pods.cri.start_container(
        &pod,
        &cri::container_config("a", IMAGE, &["sleep", "100000"]),
        &pcfg,
    )?;
    e.pods.cri.start_container(
        &pod,
        &cri::container_config("b", IMAGE, &["sleep", "100000"]),
        &pcfg,
    )?;
    let shims = e.shims();
    ensure!(shims.len() == 1, "{shims:?}");
    let addr = std::fs::read_to_string(e.pods.containerd.work.join(format!(
        "state/io.containerd.runtime.v2.task/k8s.io/{pod}/address"
    )))?;
    leftovers::kill_all(&shims);
    eventually(
        "the container to be reported exited",
        Duration::from_secs(30),
        || Ok(e.pods.cri.container_status(&a)?.state == ContainerState::ContainerExited as i32),
    )?;
    let st = e.pods.cri.container_status(&a)?;
    ensure!(st.exit_code != 0, "{st:?}");
    e.pods.cri.remove_pod(&pod)?;
    // containerd cleans up after a dead shim in the background (it runs the shim's `delete`,
    // which unmounts the rootfs), so RemovePodSandbox may answer first: poll.
    let state = e.pods.containerd.work.join("state");
    eventually(
        "runsc processes and mounts to go",
        Duration::from_secs(20),
        || {
            Ok(leftovers::runsc_processes(&e.pods.runsc_root).is_empty()
                && leftovers::mounts_under(&state).is_empty())
        },
    )
    .with_context(|| {
        format!(
            "left: runsc {:?}, mounts {:?}",
            leftovers::runsc_processes(&e.pods.runsc_root),
            leftovers::mounts_under(&state)
        )
    })?;
    let sock = addr.trim().trim_start_matches("unix://");
    ensure!(!Path::new(sock).exists(), "shim socket {sock} left");
    // A new pod starts fine afterwards.
    let (pod2, pcfg2, _) = e.pod("after")?;
    let c = e.pods.cri.start_container(
        &pod2,
        &cri::container_config("a", IMAGE, &["sleep", "100000"]),
        &pcfg2,
    )?;
    ensure!(e.pods.cri.container_status(&c)?.state == ContainerState::ContainerRunning as i32);
    e.pods.cri.remove_pod(&pod2)
}

fn fifty_concurrent_execs(e: &mut Env) -> Result<()> {
    let (pod, pcfg, _) = e.pod("execs")?;
    let c = e.pods.cri.start_container(
        &pod,
        &cri::container_config("a", IMAGE, &["sleep", "100000"]),
        &pcfg,
    )?;
    let addr = e.pods.containerd.address();
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let (addr, c) = (addr.clone(), c.clone());
            std::thread::spawn(move || -> Result<(i32, String)> {
                let mut cri = Cri::connect(&addr)?;
                let out =
                    cri.exec_sync(&c, &["sh", "-c", &format!("echo {i}; exit {}", i % 7)], 60)?;
                Ok((
                    out.exit_code,
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                ))
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (code, out) = h.join().map_err(|_| anyhow::anyhow!("panic"))??;
        ensure!(
            code == (i % 7) as i32 && out == format!("{i}\n"),
            "exec {i}: {code} {out:?}"
        );
    }
    let shim = e.shims();
    ensure!(
        zombie_children(shim[0].pid).is_empty(),
        "zombies under the shim"
    );
    e.pods.cri.remove_pod(&pod)
}

fn twenty_containers_in_a_pod_concurrently(e: &mut Env) -> Result<()> {
    let (pod, pcfg, _) = e.pod("twenty")?;
    let addr = e.pods.containerd.address();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let (addr, pod, pcfg) = (addr.clone(), pod.clone(), pcfg.clone());
            std::thread::spawn(move || -> Result<()> {
                let mut cri = Cri::connect(&addr)?;
                let c = cri.start_container(
                    &pod,
                    &cri::container_config(
                        &format!("c{i}"),
                        IMAGE,
                        &["sh", "-c", &format!("exit {}", i % 5)],
                    ),
                    &pcfg,
                )?;
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let st = cri.container_status(&c)?;
                    if st.state == ContainerState::ContainerExited as i32 {
                        ensure!(st.exit_code == i % 5, "c{i}: exit code {}", st.exit_code);
                        break;
                    }
                    ensure!(Instant::now() < deadline, "c{i} never exited");
                    std::thread::sleep(Duration::from_millis(100));
                }
                cri.remove_container(&c)
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("panic"))??;
    }
    e.pods.cri.remove_pod(&pod)
}

fn soak_create_delete_cycles_in_one_shim(e: &mut Env) -> Result<()> {
    let cycles: usize = std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let (pod, pcfg, _) = e.pod("soak")?;
    let events_log = e.pods.work.join("soak-events.log");
    let mut events = e
        .pods
        .containerd
        .ctr_cmd(&["events"])
        .stdout(std::fs::File::create(&events_log)?)
        .stderr(Stdio::null())
        .spawn()?;
    let shim = e.shims().first().context("pod shim")?.pid;
    let mut ids = Vec::new();
    let mut cycle = |i: usize| soak_cycle(&mut e.pods.cri, &pod, &pcfg, i);
    for i in 0..5 {
        ids.push(cycle(i)?);
    }
    let (fd0, threads0, rss0) = (
        fds(shim),
        status_of("Threads:", shim),
        status_of("VmRSS:", shim),
    );
    for i in 5..cycles {
        ids.push(cycle(i)?);
    }
    // Descriptors of the last cycle close as its copies finish.
    let _ = eventually(
        "the last cycle's descriptors to close",
        Duration::from_secs(10),
        || Ok(fds(shim) <= fd0 + 2),
    );
    let (fd1, threads1, rss1) = (
        fds(shim),
        status_of("Threads:", shim),
        status_of("VmRSS:", shim),
    );
    let _ = events.kill();
    let _ = events.wait();
    println!(
        "    soak: {cycles} cycles; shim fds {fd0} -> {fd1}, threads {threads0} -> {threads1}, RSS {rss0} -> {rss1} KiB"
    );
    ensure!(fd1 <= fd0 + 2, "descriptors grew {fd0} -> {fd1}");
    ensure!(
        threads1 <= threads0 + 2,
        "threads grew {threads0} -> {threads1}"
    );
    ensure!(rss1 <= rss0 + 1024, "RSS grew {rss0} -> {rss1} KiB");
    ensure!(zombie_children(shim).is_empty(), "zombies under the shim");
    each_cycle_has_its_events(&std::fs::read_to_string(&events_log)?, &ids)?;
    e.pods.cri.remove_pod(&pod)
}

/// One soak cycle: container attempt `i` starts, exits and is removed; its id.
fn soak_cycle(cri: &mut Cri, pod: &str, pcfg: &cri::PodSandboxConfig, i: usize) -> Result<String> {
    let c = cri.start_container(
        pod,
        &cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "cycler".into(),
                attempt: i as u32,
            }),
            ..cri::container_config("cycler", IMAGE, &["sh", "-c", "echo x; exit 3"])
        },
        pcfg,
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cri.container_status(&c)?.state != ContainerState::ContainerExited as i32 {
        ensure!(Instant::now() < deadline, "cycle {i}: no exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    cri.remove_container(&c)?;
    Ok(c)
}

/// Every cycle's container has exactly create, start, exit, delete in the events `log`.
fn each_cycle_has_its_events(log: &str, ids: &[String]) -> Result<()> {
    for id in ids {
        let needle = format!("\"container_id\":\"{id}\"");
        let topics: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("/tasks/")))
            .collect();
        ensure!(
            topics
                == [
                    "/tasks/create",
                    "/tasks/start",
                    "/tasks/exit",
                    "/tasks/delete"
                ],
            "{id}: {topics:?}"
        );
    }
    Ok(())
}

fn flooding_container_and_file_modes(e: &mut Env) -> Result<()> {
    let (pod, pcfg, dir) = e.pod("flood")?;
    let c = e.pods.cri.start_container(
        &pod,
        &cri::container_config("yes", IMAGE, &["yes", "flood"]),
        &pcfg,
    )?;
    let shim = e.shims().first().context("pod shim")?.pid;
    let log = dir.join("yes.log");
    eventually("the flood to start", Duration::from_secs(30), || {
        Ok(std::fs::metadata(&log).is_ok_and(|m| m.len() > 1 << 20))
    })?;
    let rss0 = status_of("VmRSS:", shim);
    // A measurement window, not a synchronisation: the flood runs on meanwhile.
    std::thread::sleep(Duration::from_secs(4));
    let rss1 = status_of("VmRSS:", shim);
    ensure!(
        rss1 <= rss0 + 2048,
        "shim RSS grew under a flood: {rss0} -> {rss1} KiB"
    );
    ensure!(
        std::fs::metadata(dir.join("yes.log"))?.len() > 1 << 20,
        "the flood reached the log"
    );
    let bundle = e
        .pods
        .containerd
        .work
        .join(format!("state/io.containerd.runtime.v2.task/k8s.io/{c}"));
    let mode = std::fs::metadata(bundle.join("state.json"))?
        .permissions()
        .mode()
        & 0o777;
    ensure!(mode == 0o600, "state.json mode {mode:o}");
    let addr = std::fs::read_to_string(bundle.join("address"))?;
    let sock = addr.trim().trim_start_matches("unix://");
    let mode = std::fs::metadata(sock)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "socket mode {mode:o}");
    e.pods.cri.stop_container(&c, 1)?;
    e.pods.cri.remove_pod(&pod)
}

fn main() -> ExitCode {
    let mut r = Runner::from_args();
    if !r.needs_root("reliability") {
        return r.finish();
    }
    let base = runner::work_base();
    let shim = versions::shim_binary();
    let rs: RunscBuild = versions::runscs().remove(0);
    let groups = versions::containerds()
        .into_iter()
        .map(|cd| (format!("reliability-{}", cd.name), cd))
        .collect();
    r.each_group(groups, |r, p, cd: ContainerdBuild| {
        let work = base.join(format!("rel{}", cd.name));
        let pods = PodEnv::start(&cd, &rs, &shim, &work, "")?;
        let none_toml = work.join("runsc-none.toml");
        let toml = format!(
            "binary_name = \"{}\"\nroot = \"{}\"\n[runsc_config]\n  network = \"none\"\n",
            rs.runsc.display(),
            pods.runsc_root.display()
        );
        std::fs::write(&none_toml, toml)?;
        let mut e = Env {
            pods,
            none_toml: none_toml.display().to_string(),
        };
        e.pods.containerd.namespace = "e2e".into();
        let imported = e.pods.containerd.import(&work.join("busybox.tar"));
        e.pods.containerd.namespace = "k8s.io".into();
        if imported.is_ok() {
            scenarios(r, &mut e, p);
        }
        e.pods.stop();
        let left = leftovers::shims(&e.pods.containerd.address());
        leftovers::kill_all(&left);
        leftovers::unmount_under(&work);
        imported
    });
    r.finish()
}

/// The host pid of task `id` (`ctr task ls`).
fn task_pid(c: &e2e::containerd::Containerd, id: &str) -> Result<u32> {
    c.ctr_ok(&["task", "ls"])?
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no pid for task {id}"))
}
