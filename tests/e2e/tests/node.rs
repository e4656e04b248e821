//! Nodes as users run them: cgroup v2 with systemd as the cgroup driver (EKS AL2023,
//! Bottlerocket, Debian 12/13, Ubuntu). The kubelet puts each pod in a slice of its own and
//! containerd's CRI hands every runtime `<pod>.slice:cri-containerd:<id>` cgroups paths.
//!
//! Runs where the host is such a node: in CI, the guest of `scripts/guest.sh`, through
//! `scripts/test-guest.sh`. Elsewhere it is reported as skipped. For containerd 1.6 (the
//! guest's own) and 2.1 (config version 3) with both runsc builds, with the runsc.toml users
//! write (no `systemd-cgroup`):
//!
//! - a two-container pod in the kubelet's slices: gVisor's kernel, sandbox and gofers in the
//!   pod's slice with the pod's limit, the shim outside it, real per-container stats with
//!   limits, removal within 10 s leaving no scope, cgroup, process, mount or netns;
//! - a container over the pod's memory ends `OOMKilled` (137);
//! - runc with `SystemdCgroup = true` as the baseline of the same two scenarios;
//! - `ctr` with systemd and cgroupfs paths, v2 metrics with limits, and malformed paths;
//! - the installer restarting the system containerd through systemd, then a pod.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "test runner output"
)]

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use e2e::containerd::run;
use e2e::cri::{self, ContainerState, Cri};
use e2e::leftovers;
use e2e::node;
use e2e::pods::{HANDLER, IMAGE, PodEnv};
use e2e::runner::{self, Runner, eventually};
use e2e::systemd::{self, PodSlices};
use e2e::versions::{self, ContainerdBuild, RunscBuild};

const MIB: i64 = 1 << 20;
/// Each container's memory limit.
const CONTAINER_LIMIT: i64 = 64 * MIB;
/// The pod's: the kubelet's sum of the containers' limits plus the RuntimeClass overhead.
const POD_LIMIT: i64 = 2 * CONTAINER_LIMIT + 64 * MIB;
/// Emulated guests are slow: a container start takes seconds.
const SLOW: Duration = Duration::from_secs(120);

/// A pod created the kubelet's way, with its slices.
struct KubeletPod {
    id: String,
    cfg: cri::PodSandboxConfig,
    slices: PodSlices,
    /// The network namespaces CRI had before this pod.
    netns_before: Vec<String>,
}

/// Where CRI keeps pods' network namespaces (`netns_mounts_under_state_dir`).
fn netns_dir(env: &PodEnv) -> std::path::PathBuf {
    env.work
        .join("containerd/state/io.containerd.grpc.v1.cri/netns")
}

/// Removes a pod after a failed check, so that later scenarios start clean.
fn abandon(env: &mut PodEnv, pod: KubeletPod, err: anyhow::Error) -> anyhow::Error {
    let _ = env.cri.remove_pod(&pod.id);
    err
}

fn limited(mut c: cri::ContainerConfig, memory: i64) -> cri::ContainerConfig {
    if let Some(linux) = c.linux.as_mut() {
        linux.resources = Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: memory,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            ..Default::default()
        });
    }
    c
}

/// The pod's slices (with `MemoryMax`, as the kubelet sets them) and RunPodSandbox with the
/// pod slice as cgroup parent and the pod-level resources the kubelet sends.
fn kubelet_pod(env: &mut PodEnv, name: &str, handler: &str) -> Result<KubeletPod> {
    let uid = format!("1234abcd-{name}-4e5f-9a0b-{}", std::process::id());
    let slices = PodSlices::start(&uid, &[&format!("MemoryMax={POD_LIMIT}")])?;
    let log_dir = env.logs.join(name);
    std::fs::create_dir_all(&log_dir)?;
    let mut cfg = cri::pod_config(name, &uid, &log_dir, &slices.pod.cgroup_parent());
    if let Some(linux) = cfg.linux.as_mut() {
        linux.resources = Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 2 * CONTAINER_LIMIT,
            cpu_period: 100_000,
            cpu_quota: 100_000,
            cpu_shares: 1024,
            ..Default::default()
        });
    }
    let netns_before = leftovers::dir_entries(&netns_dir(env));
    let id = env.cri.run_pod(&cfg, handler)?;
    Ok(KubeletPod {
        id,
        cfg,
        slices,
        netns_before,
    })
}

fn start(env: &mut PodEnv, pod: &KubeletPod, name: &str, args: &[&str]) -> Result<String> {
    let cfg = limited(cri::container_config(name, IMAGE, args), CONTAINER_LIMIT);
    env.cri.start_container(&pod.id, &cfg, &pod.cfg)
}

/// Processes of this environment's sandboxes that must live in the pod: the sandbox
/// (`runsc-sandbox`) and the gofers, not a runsc command that happens to run.
fn sandbox_processes(env: &PodEnv) -> Vec<leftovers::Proc> {
    leftovers::runsc_processes(&env.runsc_root)
        .into_iter()
        .filter(|p| p.cmdline.starts_with("runsc-sandbox") || p.cmdline.starts_with("runsc-gofer"))
        .collect()
}

/// `ctr -n k8s.io task metrics --format json`: the shim's v2 metrics of a container.
fn metrics(env: &PodEnv, id: &str) -> Result<serde_json::Value> {
    let out = env
        .containerd
        .ctr_ok(&["task", "metrics", "--format", "json", id])?;
    serde_json::from_str(&out).with_context(|| format!("metrics of {id}: {out}"))
}

fn working_set(st: &cri::ContainerStats) -> (u64, u64, u64) {
    let cpu = st
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map_or(0, |v| v.value);
    let mem = st.memory.as_ref();
    let ws = mem
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |v| v.value);
    let available = mem
        .and_then(|m| m.available_bytes.as_ref())
        .map_or(0, |v| v.value);
    (cpu, ws, available)
}

/// Removes the pod the way the kubelet does and checks that nothing of it is left, within
/// 10 s: no scope or cgroup in its slice, no runsc process, no mount, no netns.
fn remove_leaving_nothing(env: &mut PodEnv, pod: KubeletPod) -> Result<()> {
    let started = Instant::now();
    env.cri.remove_pod(&pod.id)?;
    let took = started.elapsed();
    ensure!(took < Duration::from_secs(10), "pod removal took {took:?}");
    let slice = &pod.slices.pod;
    eventually("the pod's cgroups to go", Duration::from_secs(10), || {
        Ok(slice.children().is_empty())
    })
    .with_context(|| format!("left in {}: {:?}", slice.dir().display(), slice.children()))?;
    let procs = sandbox_processes(env);
    ensure!(procs.is_empty(), "sandbox processes left: {procs:?}");
    let mounts = leftovers::mounts_under(&env.work.join("containerd"));
    let mounts: Vec<_> = mounts.iter().filter(|m| m.contains(&pod.id)).collect();
    ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
    let netns: Vec<_> = leftovers::dir_entries(&netns_dir(env))
        .into_iter()
        .filter(|n| !pod.netns_before.contains(n))
        .collect();
    ensure!(netns.is_empty(), "netns left: {netns:?}");
    drop(pod.slices);
    Ok(())
}

/// The done-when scenario: a two-container pod in the kubelet's slices.
fn pod_in_kubelet_slices(env: &mut PodEnv, rs: &RunscBuild) -> Result<()> {
    let pod = kubelet_pod(env, "slices", HANDLER)?;
    match check_pod(env, rs, &pod) {
        Ok(()) => remove_leaving_nothing(env, pod),
        Err(e) => Err(abandon(env, pod, e)),
    }
}

fn check_pod(env: &mut PodEnv, rs: &RunscBuild, pod: &KubeletPod) -> Result<()> {
    let app = start(
        env,
        pod,
        "app",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 100000",
        ],
    )?;
    let side = start(env, pod, "side", &["sleep", "100000"])?;
    let out = env.cri.exec_sync(&app, &["cat", "/proc/version"], 60)?;
    let version = String::from_utf8_lossy(&out.stdout);
    ensure!(
        version.contains("Linux version 4.4.0"),
        "not gVisor's kernel: {version}"
    );

    check_placement(env, pod)?;
    check_stats(env, rs, pod, &app, &side)
}

/// The sandbox in its scope under the pod's slice with the pod's limit, every gofer in the
/// slice, the shim outside it.
fn check_placement(env: &PodEnv, pod: &KubeletPod) -> Result<()> {
    let scope = pod
        .slices
        .pod
        .dir()
        .join(format!("cri-containerd-{}.scope", pod.id));
    ensure!(
        scope.is_dir(),
        "no sandbox scope {}; slice holds {:?}",
        scope.display(),
        pod.slices.pod.children()
    );
    let max = systemd::read(&scope, "memory.max");
    ensure!(
        max == POD_LIMIT.to_string(),
        "sandbox scope memory.max {max}, want {POD_LIMIT}"
    );
    // The pod slice sets no CPU limit here: the pod's CPU quota from CRI's sandbox
    // annotations (one CPU) is the sandbox's.
    let cpu = systemd::read(&scope, "cpu.max");
    ensure!(cpu == "100000 100000", "sandbox scope cpu.max {cpu:?}");
    // Sandbox and every gofer (the app containers' too) in the pod's slice.
    let slice_path = pod.slices.pod.cgroup_parent();
    let procs = sandbox_processes(env);
    ensure!(procs.len() >= 4, "sandbox and 3 gofers expected: {procs:?}");
    for p in &procs {
        let cg = systemd::cgroup_of(p.pid).unwrap_or_default();
        ensure!(
            cg.starts_with(&slice_path),
            "{} (pid {}) is in {cg}",
            p.cmdline,
            p.pid
        );
    }
    // The shim stays out of the pod (it must never keep the pod's units alive).
    for s in leftovers::shims(&env.containerd.address()) {
        let cg = systemd::cgroup_of(s.pid).unwrap_or_default();
        ensure!(
            !cg.starts_with("/kubepods.slice"),
            "shim {} is in {cg}",
            s.pid
        );
    }

    Ok(())
}

/// Per-container stats through CRI (and the v2 metrics behind them): CPU of the busy one,
/// memory of each, each container's own limit; the pod's stats.
fn check_stats(
    env: &mut PodEnv,
    rs: &RunscBuild,
    pod: &KubeletPod,
    app: &str,
    side: &str,
) -> Result<()> {
    // Stats per container: CPU of the busy one, memory of each, each container's own limit.
    let mut last = Default::default();
    eventually("per-container stats", SLOW, || {
        let a = working_set(&env.cri.container_stats(app)?);
        let s = working_set(&env.cri.container_stats(side)?);
        last = (a, s);
        Ok(a.0 > 0 && a.1 > 0 && s.1 > 0)
    })
    .with_context(|| {
        format!(
            "app (cpu, working set, available) {:?}, side {:?}",
            last.0, last.1
        )
    })?;
    let ((_, a_ws, a_avail), (_, s_ws, s_avail)) = last;
    for (name, ws, avail) in [("app", a_ws, a_avail), ("side", s_ws, s_avail)] {
        ensure!(
            avail > 0 && ws + avail == CONTAINER_LIMIT as u64,
            "{name}: working set {ws} + available {avail} is not its limit {CONTAINER_LIMIT}"
        );
    }
    // runsc 20221219 gives every container the sandbox's memory; 20240729 counts each.
    if rs.name != "2022" {
        ensure!(
            a_ws != s_ws,
            "both containers report the same working set {a_ws}"
        );
    }
    let listed = env.cri.call(async |c| {
        c.list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            }),
        })
        .await
    })?;
    ensure!(
        listed.stats.len() == 2,
        "ListContainerStats: {:?}",
        listed.stats.len()
    );
    // Pod stats: containerd reads the pod's cgroup for the pod's figures and asks the shim for
    // each container's.
    let pods = env.cri.call(async |c| {
        c.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                id: pod.id.clone(),
                ..Default::default()
            }),
        })
        .await
    });
    match pods {
        Ok(resp) => {
            let linux = resp
                .stats
                .first()
                .and_then(|s| s.linux.as_ref())
                .context("no pod stats")?;
            let pod_ws = linux
                .memory
                .as_ref()
                .and_then(|m| m.working_set_bytes.as_ref())
                .map_or(0, |v| v.value);
            ensure!(pod_ws > 0, "pod working set: {linux:?}");
            ensure!(
                linux.containers.len() == 2,
                "pod stats list {} containers",
                linux.containers.len()
            );
        }
        // containerd 1.6 does not implement it on Linux.
        Err(e) if format!("{e:#}").contains("nimplemented") => {}
        Err(e) => return Err(e),
    }
    // The v2 metrics behind them: user and system time, the limits.
    let m = metrics(env, app)?;
    let cpu = &m["cpu"];
    ensure!(
        cpu["user_usec"].as_u64().unwrap_or(0) + cpu["system_usec"].as_u64().unwrap_or(0) > 0,
        "no user/system time: {cpu}"
    );
    ensure!(
        m["memory"]["usage_limit"].as_i64() == Some(CONTAINER_LIMIT),
        "memory limit: {}",
        m["memory"]
    );
    Ok(())
}

/// A container past the pod's memory ends OOMKilled with 137.
fn over_limit_is_oomkilled(env: &mut PodEnv, handler: &str) -> Result<()> {
    let pod = kubelet_pod(env, &format!("oom-{handler}"), handler)?;
    // gVisor: one big read of /dev/zero makes the sandbox fault in 300 MiB at once (a
    // pipeline through the sentry is slow under emulation). runc: such a read would fail with
    // EFAULT at the limit instead of drawing the OOM killer, so the container's last command
    // writes the memory itself (tail keeps the one endless line it reads) and its OOM kill
    // ends the container.
    let hog_cmd = if handler == "runc" {
        "sleep 1; head -c 314572800 /dev/zero | tail >/dev/null"
    } else {
        "sleep 1; dd if=/dev/zero of=/dev/null bs=300M count=1; sleep 100000"
    };
    let hog = match start(env, &pod, "hog", &["sh", "-c", hog_cmd]) {
        Ok(hog) => hog,
        Err(e) => return Err(abandon(env, pod, e)),
    };
    let exited = ContainerState::ContainerExited as i32;
    let res = eventually("the hog to be killed", SLOW, || {
        Ok(env.cri.container_status(&hog)?.state == exited)
    })
    .and_then(|()| {
        let st = env.cri.container_status(&hog)?;
        ensure!(
            st.reason == "OOMKilled" && st.exit_code == 137,
            "reason {:?} exit code {}",
            st.reason,
            st.exit_code
        );
        Ok(())
    });
    if let Err(e) = res {
        return Err(abandon(env, pod, e));
    }
    remove_leaving_nothing(env, pod)
}

/// runc with `SystemdCgroup = true` in the same containerd: each container in a scope of
/// its own under the pod's slice, with its own `memory.max`.
fn runc_baseline(env: &mut PodEnv) -> Result<()> {
    let pod = kubelet_pod(env, "runc", "runc")?;
    let res = start(env, &pod, "app", &["sleep", "100000"]).and_then(|app| {
        let scope = pod
            .slices
            .pod
            .dir()
            .join(format!("cri-containerd-{app}.scope"));
        let max = systemd::read(&scope, "memory.max");
        ensure!(
            max == CONTAINER_LIMIT.to_string(),
            "runc container scope memory.max {max:?}"
        );
        Ok(())
    });
    match res {
        Ok(()) => remove_leaving_nothing(env, pod),
        Err(e) => Err(abandon(env, pod, e)),
    }
}

/// `ctr` on this host: systemd and cgroupfs paths without any `systemd-cgroup` setting, v2
/// metrics with the limit, and malformed systemd paths refused with nothing left.
fn ctr_paths(env: &PodEnv, toml: &str) -> Result<()> {
    let c = &env.containerd;
    let run = |mode: &str, id: &str, extra: &[&str], args: &[&str]| {
        let mut a = vec![
            "run",
            mode,
            "--runtime",
            "io.containerd.runsc.v1",
            "--runtime-config-path",
            toml,
        ];
        a.extend_from_slice(extra);
        a.push(IMAGE);
        a.push(id);
        a.extend_from_slice(args);
        c.ctr(&a)
    };
    let out = run("--rm", "fs1", &[], &["cat", "/proc/version"])?.ok()?;
    ensure!(out.stdout.contains("Linux version 4.4.0"), "{out:?}");
    run(
        "-d",
        "sd1",
        &[
            "--cgroup",
            "system.slice:runsc-e2e:sd1",
            "--memory-limit",
            "67108864",
        ],
        &["sleep", "100000"],
    )?
    .ok()?;
    let scope = Path::new(systemd::CGROUP_ROOT).join("system.slice/runsc-e2e-sd1.scope");
    let max = systemd::read(&scope, "memory.max");
    let m: serde_json::Value =
        serde_json::from_str(&c.ctr_ok(&["task", "metrics", "--format", "json", "sd1"])?)?;
    let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", "sd1"]);
    eventually("sd1 to stop", SLOW, || {
        Ok(c.ctr_ok(&["task", "ls"])?
            .lines()
            .any(|l| l.starts_with("sd1 ") && l.contains("STOPPED")))
    })?;
    c.ctr_ok(&["task", "delete", "sd1"])?;
    c.ctr_ok(&["containers", "rm", "sd1"])?;
    ensure!(
        max == "67108864",
        "scope {} memory.max {max:?}",
        scope.display()
    );
    ensure!(
        m["memory"]["usage_limit"].as_u64() == Some(67_108_864),
        "metrics: {m}"
    );
    ensure!(
        m["cpu"]["usage_usec"].as_u64().unwrap_or(0) > 0,
        "metrics: {m}"
    );
    eventually("the scope to go", Duration::from_secs(10), || {
        Ok(!scope.exists())
    })?;
    for bad in ["a.slice:b", "kube--pods.slice:p:x", "a.slice:p:../x"] {
        let out = run("--rm", "bad1", &["--cgroup", bad], &["true"])?;
        let _ = c.ctr(&["containers", "rm", "bad1"]);
        ensure!(
            out.code != 0 && out.stderr.contains("systemd cgroupsPath") && out.stderr.contains(bad),
            "{bad}: {out:?}"
        );
    }
    let procs = sandbox_processes(env);
    ensure!(procs.is_empty(), "left: {procs:?}");
    Ok(())
}

fn node_group(
    r: &mut Runner,
    p: &str,
    cd: &ContainerdBuild,
    rs: &RunscBuild,
    base: &Path,
) -> Result<()> {
    let work = base.join(format!("node{}-r{}", cd.name, rs.name));
    let mut env = PodEnv::start_with(cd, rs, &versions::shim_binary(), &work, "", true)?;
    r.run(&format!("{p}/pod_in_kubelet_slices"), || {
        pod_in_kubelet_slices(&mut env, rs)
    });
    r.run(&format!("{p}/over_limit_container_is_oomkilled"), || {
        over_limit_is_oomkilled(&mut env, HANDLER)
    });
    if rs.name == "2022" {
        // The baseline once per containerd.
        r.run(&format!("{p}/runc_baseline_scopes"), || {
            runc_baseline(&mut env)
        });
        r.run(&format!("{p}/runc_baseline_oomkilled"), || {
            over_limit_is_oomkilled(&mut env, "runc")
        });
    }
    env.containerd.namespace = "e2e".into();
    let imported = env.containerd.import(&work.join("busybox.tar"));
    let toml = work.join("runsc.toml").display().to_string();
    r.run(&format!("{p}/ctr_systemd_and_cgroupfs_paths"), || {
        imported
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|()| ctr_paths(&env, &toml))
    });
    env.containerd.namespace = "k8s.io".into();
    env.stop();
    r.run(&format!("{p}/nothing_left_behind"), || {
        let shims = leftovers::shims(&env.containerd.address());
        let runsc = leftovers::runsc_processes(&env.runsc_root);
        leftovers::kill_all(&shims);
        leftovers::kill_all(&runsc);
        leftovers::unmount_under(&work);
        ensure!(shims.is_empty(), "shims left: {shims:?}");
        ensure!(runsc.is_empty(), "runsc processes left: {runsc:?}");
        Ok(())
    });
    Ok(())
}

fn main() -> ExitCode {
    let mut r = Runner::from_args();
    if !r.needs_root("node") {
        return r.finish();
    }
    if !systemd::is_systemd_v2_host() {
        r.skip(
            "node",
            "needs cgroup v2 with systemd as PID 1 (scripts/test-guest.sh runs it in a guest)",
        );
        return r.finish();
    }
    let base = runner::work_base();
    let groups = versions::matrix("node")
        .into_iter()
        .filter(|(_, (cd, _))| cd.name == "1.6" || cd.name == "2.1")
        .collect();
    r.each_group(groups, |r, p, (cd, rs)| node_group(r, p, &cd, &rs, &base));
    let runsc = versions::runscs().remove(1);
    for cd in versions::containerds() {
        if cd.name == "1.6" || cd.name == "2.1" {
            let name = format!("node-install/containerd-{}", cd.name);
            let work = base.join(format!("node-install-{}", cd.name));
            r.run(&name, || installer_with_systemd(&cd, &runsc, &work));
        }
    }
    r.finish()
}

const DROP_IN_DIR: &str = "/run/systemd/system/containerd.service.d";

fn systemctl(args: &[&str]) -> Result<String> {
    let out = run(
        Command::new("systemctl").args(args),
        Duration::from_secs(120),
    )?;
    ensure!(
        out.code == 0,
        "systemctl {args:?}: {}{}",
        out.stdout,
        out.stderr
    );
    Ok(out.stdout.trim().to_owned())
}

fn main_pid() -> Result<String> {
    systemctl(&["show", "-p", "MainPID", "--value", "containerd"])
}

/// The system's containerd.service, made to run `build` with a private config (the node's
/// config.toml) and the work directory's `bin` first on its PATH; stopped and put back on
/// drop.
struct SystemContainerd;

impl SystemContainerd {
    fn start(build: &ContainerdBuild, config: &Path, bin: &Path) -> Result<SystemContainerd> {
        std::fs::create_dir_all(DROP_IN_DIR)?;
        std::fs::write(
            Path::new(DROP_IN_DIR).join("runsc-e2e.conf"),
            format!(
                "[Service]\nExecStart=\nExecStart={} --config {}\n\
                 Environment=PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
                build.containerd.display(),
                config.display(),
                bin.display()
            ),
        )?;
        systemctl(&["daemon-reload"])?;
        systemctl(&["restart", "containerd"])?;
        Ok(SystemContainerd)
    }
}

impl Drop for SystemContainerd {
    fn drop(&mut self) {
        let _ = systemctl(&["stop", "containerd"]);
        let _ = std::fs::remove_file(Path::new(DROP_IN_DIR).join("runsc-e2e.conf"));
        let _ = systemctl(&["daemon-reload"]);
    }
}

fn ctr_at(build: &ContainerdBuild, sock: &Path, args: &[&str]) -> Result<e2e::containerd::Out> {
    let mut cmd = Command::new(&build.ctr);
    cmd.arg("--address")
        .arg(sock)
        .args(["-n", "k8s.io"])
        .args(args);
    run(&mut cmd, Duration::from_secs(120))?.ok()
}

/// `install --restart` restarts the system containerd through systemd; a pod in the
/// kubelet's slices runs right after; `uninstall --restart` puts the config back.
fn installer_with_systemd(build: &ContainerdBuild, rs: &RunscBuild, work: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(work);
    for d in ["bin", "cni", "logs"] {
        std::fs::create_dir_all(work.join(d))?;
    }
    let config = work.join("config.toml");
    let original = node::private_default_config(build, work)?.to_string();
    std::fs::write(&config, &original)?;
    node::loopback_cni(&work.join("cni"))?;
    let runsc_toml = work.join("runsc.toml");
    std::fs::write(
        &runsc_toml,
        format!(
            "binary_name = \"{}\"\nroot = \"{}\"\n[runsc_config]\n  network = \"host\"\n",
            rs.runsc.display(),
            work.join("runsc-root").display()
        ),
    )?;
    let _system = SystemContainerd::start(build, &config, &work.join("bin"))?;
    let before = main_pid()?;
    let (c, t, b) = (
        config.display().to_string(),
        runsc_toml.display().to_string(),
        work.join("bin").display().to_string(),
    );
    let containerd = build.containerd.display().to_string();
    let shim = versions::shim_binary();
    let install = [
        "install",
        "--containerd-config",
        &c,
        "--runsc-config",
        &t,
        "--bin-dir",
        &b,
        "--containerd",
        &containerd,
        "--restart",
    ];
    let out = run(Command::new(&shim).args(install), SLOW)?.ok()?;
    ensure!(
        out.stdout
            .contains("restarted containerd (systemctl restart containerd)"),
        "{out:?}"
    );
    let after = main_pid()?;
    ensure!(
        after != before && after != "0",
        "containerd was not restarted ({before} -> {after})"
    );
    let sock = work.join("ctd/containerd.sock");
    eventually("containerd to answer", SLOW, || {
        Ok(ctr_at(build, &sock, &["version"]).is_ok())
    })?;

    // A pod through CRI right away, in the kubelet's slices, on the host network.
    for (tar, name, entry, probe) in [
        ("busybox.tar", IMAGE, &[][..], &["/bin/sh"][..]),
        (
            "pause.tar",
            node::PAUSE,
            &["/bin/sleep", "2147483647"][..],
            &[][..],
        ),
    ] {
        let path = work.join(tar);
        e2e::image::build(&path, name, entry, probe)?;
        ctr_at(
            build,
            &sock,
            &["images", "import", &path.display().to_string()],
        )?;
    }
    let mut cri = Cri::connect(&sock)?;
    let uid = format!("abcd1234-inst-{}", std::process::id());
    let slices = PodSlices::start(&uid, &[&format!("MemoryMax={POD_LIMIT}")])?;
    let mut pod_cfg = cri::pod_config(
        "inst",
        &uid,
        &work.join("logs"),
        &slices.pod.cgroup_parent(),
    );
    let mut ccfg = cri::container_config("hello", IMAGE, &["sleep", "100000"]);
    cri::host_network(&mut pod_cfg, &mut [&mut ccfg]);
    let pod = cri.run_pod(&pod_cfg, HANDLER)?;
    let res = (|| {
        let c = cri.start_container(&pod, &ccfg, &pod_cfg)?;
        let out = cri.exec_sync(&c, &["cat", "/proc/version"], 60)?;
        let v = String::from_utf8_lossy(&out.stdout);
        ensure!(v.contains("Linux version 4.4.0"), "{v}");
        Ok(())
    })();
    cri.remove_pod(&pod)?;
    res?;
    eventually("the pod's cgroups to go", Duration::from_secs(10), || {
        Ok(slices.pod.children().is_empty())
    })?;
    drop(slices);

    let uninstall = [
        "uninstall",
        "--containerd-config",
        &c,
        "--runsc-config",
        &t,
        "--bin-dir",
        &b,
        "--restart",
    ];
    run(Command::new(&shim).args(uninstall), SLOW)?.ok()?;
    ensure!(
        std::fs::read_to_string(&config)? == original,
        "uninstall did not restore the config"
    );
    ensure!(main_pid()? != after, "uninstall did not restart containerd");
    Ok(())
}
