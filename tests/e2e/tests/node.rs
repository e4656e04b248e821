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
//! - a container over its own limit in a pod with room ends `OOMKilled` (137), its sibling
//!   running on;
//! - runc with `SystemdCgroup = true` as the baseline of the same two scenarios;
//! - a pod suspended with `containerd-shim-runsc-v1 checkpoint` and resumed into a new pod of
//!   the kubelet's slices with the pod annotation (runsc 20240729): the counter goes on, the
//!   restored sandbox and its gofers are in the new pod's slice;
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
use e2e::containerd::{EventLog, run};
use e2e::cri::{self, ContainerState, Cri};
use e2e::leftovers;
use e2e::node;
use e2e::pods::{CHECKPOINT_HANDLER, COUNTER, HANDLER, IMAGE, PodEnv, RESTORE_ANNOTATION};
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
/// The pod's task limit (the kubelet's `podPidsLimit`, `TasksMax` of the pod slice).
const POD_PIDS: u64 = 4096;

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
    kubelet_pod_with(env, name, handler, &[])
}

/// [`kubelet_pod`] with pod annotations.
fn kubelet_pod_with(
    env: &mut PodEnv,
    name: &str,
    handler: &str,
    annotations: &[(&str, &str)],
) -> Result<KubeletPod> {
    let uid = format!("1234abcd-{name}-4e5f-9a0b-{}", std::process::id());
    let slices = PodSlices::start(
        &uid,
        &[
            &format!("MemoryMax={POD_LIMIT}"),
            &format!("TasksMax={POD_PIDS}"),
        ],
    )?;
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
    for (k, v) in annotations {
        cfg.annotations.insert((*k).to_owned(), (*v).to_owned());
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
/// 10 s in all: no scope or cgroup in its slice, no systemd unit, no runsc process, no mount
/// of any of its containers, no netns.
fn remove_leaving_nothing(env: &mut PodEnv, pod: KubeletPod) -> Result<()> {
    let ids: Vec<String> = env
        .cri
        .list_containers()?
        .into_iter()
        .filter(|c| c.pod_sandbox_id == pod.id)
        .map(|c| c.id)
        .chain([pod.id.clone()])
        .collect();
    let started = Instant::now();
    env.cri.remove_pod(&pod.id)?;
    let slice = &pod.slices.pod;
    let rest = Duration::from_secs(10).saturating_sub(started.elapsed());
    eventually("the pod's cgroups and units to go", rest, || {
        Ok(slice.children().is_empty() && pod_units(&ids).is_empty())
    })
    .with_context(|| {
        format!(
            "after {:?}: left in {}: {:?}, units {:?}",
            started.elapsed(),
            slice.dir().display(),
            slice.children(),
            pod_units(&ids)
        )
    })?;
    let procs = sandbox_processes(env);
    ensure!(procs.is_empty(), "sandbox processes left: {procs:?}");
    let mounts = leftovers::mounts_under(&env.work.join("containerd"));
    let mounts: Vec<_> = mounts
        .iter()
        .filter(|m| ids.iter().any(|id| m.contains(id.as_str())))
        .collect();
    ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
    let netns: Vec<_> = leftovers::dir_entries(&netns_dir(env))
        .into_iter()
        .filter(|n| !pod.netns_before.contains(n))
        .collect();
    ensure!(netns.is_empty(), "netns left: {netns:?}");
    drop(pod.slices);
    Ok(())
}

/// systemd units (loaded, active or failed) named after any of `ids`.
fn pod_units(ids: &[String]) -> Vec<String> {
    let out = run(
        Command::new("systemctl").args([
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "cri-containerd-*",
        ]),
        Duration::from_secs(30),
    )
    .map(|o| o.stdout)
    .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|u| ids.iter().any(|id| u.contains(id.as_str())))
        .map(str::to_owned)
        .collect()
}

/// The done-when scenario: a two-container pod in the kubelet's slices, under `handler`
/// (ours, or runc as the baseline of the same checks).
fn pod_in_kubelet_slices(env: &mut PodEnv, rs: &RunscBuild, handler: &str) -> Result<()> {
    let pod = kubelet_pod(env, &format!("slices-{handler}"), handler)?;
    match check_pod(env, rs, &pod, handler) {
        Ok(()) => remove_leaving_nothing(env, pod),
        Err(e) => Err(abandon(env, pod, e)),
    }
}

fn check_pod(env: &mut PodEnv, rs: &RunscBuild, pod: &KubeletPod, handler: &str) -> Result<()> {
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
    let gvisor = version.contains("Linux version 4.4.0");
    ensure!(
        version.starts_with("Linux version") && gvisor == (handler == HANDLER),
        "{handler}: /proc/version {version}"
    );
    if handler == HANDLER {
        check_placement(env, pod)?;
    } else {
        check_runc_placement(pod, &[&app, &side])?;
    }
    check_stats(env, rs, pod, handler, &app, &side)
}

/// The sandbox in its scope under the pod's slice with the pod's limit, every gofer in the
/// slice, the shim outside it (where containerd put it).
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
    sandbox_in_pod_slice(env, pod, 2)?;
    // One shim for the pod, in containerd's cgroup (this test started containerd): never in
    // a unit of the pod, which it would keep alive.
    let shims = leftovers::shims(&env.containerd.address());
    ensure!(shims.len() == 1, "one shim expected: {shims:?}");
    let ours = systemd::cgroup_of(std::process::id()).unwrap_or_default();
    let cg = systemd::cgroup_of(shims[0].pid).unwrap_or_default();
    ensure!(
        cg == ours && !cg.starts_with("/kubepods.slice"),
        "shim {} is in {cg}, containerd in {ours}",
        shims[0].pid
    );
    Ok(())
}

/// The sandbox and the gofers of the pod's `containers` application containers (and its
/// own) are all in the pod's slice.
fn sandbox_in_pod_slice(env: &PodEnv, pod: &KubeletPod, containers: usize) -> Result<()> {
    let slice_path = pod.slices.pod.cgroup_parent();
    let procs = sandbox_processes(env);
    ensure!(
        procs.len() > containers + 1,
        "sandbox and {} gofers expected: {procs:?}",
        containers + 1
    );
    for p in &procs {
        let cg = systemd::cgroup_of(p.pid).unwrap_or_default();
        ensure!(
            cg.starts_with(&slice_path),
            "{} (pid {}) is in {cg}",
            p.cmdline,
            p.pid
        );
    }
    Ok(())
}

/// runc: each container in a scope of its own under the pod's slice, with its own limit.
fn check_runc_placement(pod: &KubeletPod, containers: &[&str]) -> Result<()> {
    for id in containers {
        let scope = pod
            .slices
            .pod
            .dir()
            .join(format!("cri-containerd-{id}.scope"));
        let max = systemd::read(&scope, "memory.max");
        ensure!(
            max == CONTAINER_LIMIT.to_string(),
            "runc container scope {} memory.max {max:?}",
            scope.display()
        );
    }
    Ok(())
}

/// Per-container stats through CRI (and the v2 metrics behind them): CPU of the busy one,
/// memory of each, each container's own limit; the list and the pod's stats.
fn check_stats(
    env: &mut PodEnv,
    rs: &RunscBuild,
    pod: &KubeletPod,
    handler: &str,
    app: &str,
    side: &str,
) -> Result<()> {
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
    // runsc 20221219 gives every container the sandbox's memory (documented); 20240729 and
    // runc count each.
    if handler != HANDLER || rs.name != "2022" {
        ensure!(
            a_ws != s_ws,
            "both containers report the same working set {a_ws}"
        );
    }
    check_listed_stats(env, pod, &[app, side])?;
    check_pod_stats(env, pod, &[app, side])?;
    check_metrics(env, handler, app)
}

/// Working set of each stats entry, by container id.
fn working_sets<'a>(
    stats: impl IntoIterator<Item = &'a cri::ContainerStats>,
) -> std::collections::BTreeMap<String, u64> {
    stats
        .into_iter()
        .map(|s| {
            let id = s.attributes.as_ref().map_or("", |a| a.id.as_str());
            (id.to_owned(), working_set(s).1)
        })
        .collect()
}

fn ensure_each_listed(
    what: &str,
    got: &std::collections::BTreeMap<String, u64>,
    want: &[&str],
) -> Result<()> {
    let ids: Vec<&str> = got.keys().map(String::as_str).collect();
    let mut want = want.to_vec();
    want.sort_unstable();
    ensure!(ids == want, "{what} lists {ids:?}, want {want:?}");
    ensure!(got.values().all(|ws| *ws > 0), "{what}: {got:?}");
    Ok(())
}

/// ListContainerStats of the pod: each container, with its own figures.
fn check_listed_stats(env: &mut PodEnv, pod: &KubeletPod, containers: &[&str]) -> Result<()> {
    let listed = env.cri.call(async |c| {
        c.list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            }),
        })
        .await
    })?;
    ensure_each_listed(
        "ListContainerStats",
        &working_sets(&listed.stats),
        containers,
    )
}

/// Pod stats: containerd reads the pod's cgroup for the pod's figures and asks the shim for
/// each container's.
fn check_pod_stats(env: &mut PodEnv, pod: &KubeletPod, containers: &[&str]) -> Result<()> {
    let pods = env.cri.call(async |c| {
        c.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                id: pod.id.clone(),
                ..Default::default()
            }),
        })
        .await
    });
    let resp = match pods {
        Ok(resp) => resp,
        // containerd 1.6 does not implement it on Linux; later ones must.
        Err(e)
            if env.containerd.build.name == "1.6" && format!("{e:#}").contains("nimplemented") =>
        {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
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
    ensure_each_listed("pod stats", &working_sets(&linux.containers), containers)
}

/// The v2 metrics behind them: user and system time, the memory limit, the tasks (and,
/// for the sandbox, the pod's task limit).
fn check_metrics(env: &PodEnv, handler: &str, app: &str) -> Result<()> {
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
    let pids = &m["pids"];
    ensure!(pids["current"].as_u64().unwrap_or(0) > 0, "pids: {pids}");
    // runc reads the container scope's own pids.max (unset); the shim reports the limit in
    // force on the sandbox, the pod slice's TasksMax.
    if handler == HANDLER {
        ensure!(pids["limit"].as_u64() == Some(POD_PIDS), "pids: {pids}");
    }
    Ok(())
}

/// A container past the pod's memory ends OOMKilled with 137; under our shim containerd
/// hears TaskOOM before TaskExit.
fn over_limit_is_oomkilled(env: &mut PodEnv, handler: &str) -> Result<()> {
    let pod = kubelet_pod(env, &format!("oom-{handler}"), handler)?;
    let log = env.work.join(format!("events-{}.log", pod.id));
    let events = match EventLog::start(&env.containerd, log) {
        Ok(events) => events,
        Err(e) => return Err(abandon(env, pod, e)),
    };
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
        if handler != HANDLER {
            return Ok(());
        }
        // The subscriber sees the exit a moment after CRI does.
        let mut topics = Vec::new();
        eventually("the hog's TaskExit event", Duration::from_secs(10), || {
            topics = events.topics(&hog);
            Ok(topics.iter().any(|t| t == "/tasks/exit"))
        })
        .with_context(|| format!("events of the hog: {topics:?}"))?;
        let at = |topic: &str| topics.iter().position(|t| t == topic);
        ensure!(
            at("/tasks/oom").is_some_and(|oom| Some(oom) < at("/tasks/exit")),
            "TaskOOM must come before TaskExit: {topics:?}"
        );
        Ok(())
    });
    drop(events);
    if let Err(e) = res {
        return Err(abandon(env, pod, e));
    }
    remove_leaving_nothing(env, pod)
}

/// A container over its own limit (32 MiB, holding 100 MiB) in a pod whose slice has room
/// for it: the shim ends it OOMKilled (137) from the sandbox scope's `memory.current` and
/// runsc's figure, and its sibling (64 MiB, runsc 2024: per-container figures) runs on.
fn own_limit_in_a_shared_pod(env: &mut PodEnv, rs: &RunscBuild) -> Result<()> {
    let pod = kubelet_pod(env, "ownlimit", HANDLER)?;
    let res = (|| {
        let calm = if rs.name == "2022" {
            None
        } else {
            Some(start(env, &pod, "calm", &["sleep", "100000"])?)
        };
        let hog_cfg = limited(
            cri::container_config(
                "hog",
                IMAGE,
                &["sh", "-c", "dd if=/dev/zero bs=100M count=1 | sleep 100000"],
            ),
            32 * MIB,
        );
        let hog = env.cri.start_container(&pod.id, &hog_cfg, &pod.cfg)?;
        env.cri.wait_oom_killed(&hog, SLOW)?;
        if let Some(calm) = calm {
            let running = ContainerState::ContainerRunning as i32;
            ensure!(
                env.cri.container_status(&calm)?.state == running,
                "calm ended with the hog"
            );
        }
        Ok(())
    })();
    if let Err(e) = res {
        return Err(abandon(env, pod, e));
    }
    remove_leaving_nothing(env, pod)
}

/// A pod of the kubelet's slices suspended with the node command and resumed into a new pod
/// whose pod annotation names the image: the counter goes on from its value in memory (no
/// value read after the restore is below the one before the checkpoint: a counter started
/// afresh would begin at 1), and the restored sandbox and its gofers are in the new pod's
/// slice; each pod's removal leaves nothing.
fn pod_suspended_and_resumed(env: &mut PodEnv) -> Result<()> {
    let image = env.work.join("pod-image");
    let _ = std::fs::remove_dir_all(&image);
    let image_arg = image.display().to_string();
    let pod = kubelet_pod(env, "suspend", CHECKPOINT_HANDLER)?;
    let res = (|| {
        let a = start(env, &pod, "a", &["sh", "-c", COUNTER])?;
        eventually(
            "the counter to pass 10",
            SLOW,
            // Until its first write the counter has no /tmp/count.
            || Ok(env.counter(&a).is_ok_and(|n| n >= 10)),
        )?;
        let before = env.counter(&a)?;
        let out = env.checkpoint_cli(&["--image-path", &image_arg, &pod.id])?;
        ensure!(out.code == 0, "checkpoint: {out:?}");
        Ok(before)
    })();
    let before = match res {
        Ok(b) => b,
        Err(e) => return Err(abandon(env, pod, e)),
    };
    remove_leaving_nothing(env, pod)?;

    let restored = kubelet_pod_with(
        env,
        "resumed",
        CHECKPOINT_HANDLER,
        &[(RESTORE_ANNOTATION, &image_arg)],
    )?;
    let res = (|| {
        let a = start(env, &restored, "a", &["sh", "-c", COUNTER])?;
        let mut last = 0;
        eventually("the restored counter to go on", SLOW, || {
            last = env.counter(&a)?;
            ensure!(last >= before, "{last} after {before} at the checkpoint");
            Ok(last > before)
        })?;
        sandbox_in_pod_slice(env, &restored, 1)
    })();
    if let Err(e) = res {
        return Err(abandon(env, restored, e));
    }
    remove_leaving_nothing(env, restored)
}

/// `ctr run MODE ... IMAGE ID ARGS` through our runtime with runsc.toml `toml`.
fn ctr_run(
    c: &e2e::containerd::Containerd,
    toml: &str,
    mode: &str,
    id: &str,
    extra: &[&str],
    args: &[&str],
) -> Result<e2e::containerd::Out> {
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
}

/// A `ctr` container with the systemd cgroups path `system.slice:runsc-e2e:<id>`: its scope
/// has the container's `memory.max`, the v2 metrics report the limit and CPU, and the scope
/// goes with the container.
fn ctr_in_scope(c: &e2e::containerd::Containerd, toml: &str, id: &str) -> Result<()> {
    let path = format!("system.slice:runsc-e2e:{id}");
    let extra = ["--cgroup", &path, "--memory-limit", "67108864"];
    ctr_run(c, toml, "-d", id, &extra, &["sleep", "100000"])?.ok()?;
    let scope = Path::new(systemd::CGROUP_ROOT).join(format!("system.slice/runsc-e2e-{id}.scope"));
    let max = systemd::read(&scope, "memory.max");
    let m: serde_json::Value =
        serde_json::from_str(&c.ctr_ok(&["task", "metrics", "--format", "json", id])?)?;
    let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    eventually(&format!("{id} to stop"), SLOW, || {
        Ok(c.ctr_ok(&["task", "ls"])?
            .lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains("STOPPED")))
    })?;
    c.ctr_ok(&["task", "delete", id])?;
    c.ctr_ok(&["containers", "rm", id])?;
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
    })
}

/// `ctr` on this host: cgroupfs and systemd paths without any `systemd-cgroup` setting and
/// with an explicit `systemd-cgroup = "true"`, v2 metrics with the limit, and malformed
/// systemd paths refused with nothing left.
fn ctr_paths(env: &PodEnv, toml: &str) -> Result<()> {
    let c = &env.containerd;
    let out = ctr_run(c, toml, "--rm", "fs1", &[], &["cat", "/proc/version"])?.ok()?;
    ensure!(out.stdout.contains("Linux version 4.4.0"), "{out:?}");
    ctr_in_scope(c, toml, "sd1")?;
    // The runsc_config table is the file's last: the key lands in it.
    let explicit = format!("{toml}.explicit");
    std::fs::write(
        &explicit,
        std::fs::read_to_string(toml)? + "  systemd-cgroup = \"true\"\n",
    )?;
    ctr_in_scope(c, &explicit, "sd2").context("explicit systemd-cgroup = \"true\"")?;
    for bad in [
        "a.slice:b",
        "kube--pods.slice:p:x",
        "a.slice:p:../x",
        "nodot:p:x",
        "a.slice:p/q:x",
    ] {
        let out = ctr_run(c, toml, "--rm", "bad1", &["--cgroup", bad], &["true"])?;
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
        pod_in_kubelet_slices(&mut env, rs, HANDLER)
    });
    r.run(&format!("{p}/over_limit_container_is_oomkilled"), || {
        over_limit_is_oomkilled(&mut env, HANDLER)
    });
    r.run(&format!("{p}/own_limit_enforced_in_a_shared_pod"), || {
        own_limit_in_a_shared_pod(&mut env, rs)
    });
    if rs.name != "2022" {
        // runsc 20221219 cannot restore a pod.
        r.run(&format!("{p}/pod_suspended_and_resumed"), || {
            pod_suspended_and_resumed(&mut env)
        });
    }
    if rs.name == "2022" {
        // The baseline once per containerd.
        r.run(&format!("{p}/runc_baseline_pod_in_kubelet_slices"), || {
            pod_in_kubelet_slices(&mut env, rs, "runc")
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
        // In the guest of scripts/test-guest.sh this is a broken guest, not a reason to skip.
        if std::env::var_os("RUNSC_SHIM_GUEST").is_some() {
            r.fail(
                "node",
                "the guest is not a cgroup v2 host with systemd as PID 1".into(),
            );
            return r.finish();
        }
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
        // The shim stays in containerd's unit, never in the pod's.
        let shims = leftovers::shims(&sock);
        ensure!(shims.len() == 1, "one shim expected: {shims:?}");
        let cg = systemd::cgroup_of(shims[0].pid).unwrap_or_default();
        ensure!(cg == "/system.slice/containerd.service", "shim in {cg}");
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
