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

use anyhow::{Context, Result, ensure};
use e2e::cri::{self, ContainerState};
use e2e::leftovers;
use e2e::pods::{
    CHECKPOINT_HANDLER, COUNTER, HANDLER, IMAGE, PodEnv, RESTORE_ANNOTATION, SANDBOXER_HANDLER,
};
use e2e::runner::{self, Runner, eventually};
use e2e::versions;

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `f` holds.
fn shims_for(env: &PodEnv) -> Vec<leftovers::Proc> {
    leftovers::shims(&env.containerd.address())
}

/// A pod and its config, removed with `remove`.
struct Pod {
    id: String,
    cfg: cri::PodSandboxConfig,
    log_dir: PathBuf,
}

/// Removes every pod (what a failed scenario may have left).
fn reset(env: &mut PodEnv) {
    if let Ok(pods) = env.cri.list_pods() {
        for p in pods {
            let _ = env.cri.remove_pod(&p.id);
        }
    }
}

fn new_pod(env: &mut PodEnv, name: &str) -> Result<Pod> {
    let log_dir = env.logs.join(name);
    std::fs::create_dir_all(&log_dir)?;
    let cfg = cri::pod_config(
        name,
        &format!("uid-{name}"),
        &log_dir,
        &format!("{}/pod{name}", env.cgroup_base),
    );
    let id = env.cri.run_pod(&cfg, HANDLER)?;
    Ok(Pod { id, cfg, log_dir })
}

fn container(env: &mut PodEnv, pod: &Pod, name: &str, args: &[&str]) -> Result<String> {
    env.cri
        .start_container(&pod.id, &cri::container_config(name, IMAGE, args), &pod.cfg)
}

fn state(env: &mut PodEnv, id: &str) -> Result<(i32, i32)> {
    let st = env.cri.container_status(id)?;
    Ok((st.state, st.exit_code))
}

/// ExecSync of `echo WORD` in container `id` prints exactly that: the container runs and
/// answers execs.
fn answers_exec(env: &mut PodEnv, id: &str, word: &str) -> Result<()> {
    let out = env.cri.exec_sync(id, &["echo", word], 10)?;
    ensure!(
        out.stdout == format!("{word}\n").as_bytes(),
        "exec `echo {word}` in {id}: {out:?}"
    );
    Ok(())
}

const EXITED: i32 = ContainerState::ContainerExited as i32;
const RUNNING: i32 = ContainerState::ContainerRunning as i32;

fn main() -> ExitCode {
    let mut r = Runner::from_args();
    if !r.needs_root("cri") {
        return r.finish();
    }
    let base = runner::work_base();
    let shim = versions::shim_binary();
    r.each_group(versions::matrix("cri"), |r, p, (cd, rs)| {
        let work = base.join(format!("cri{}-r{}", cd.name, rs.name));
        let mut env = PodEnv::start(&cd, &rs, &shim, &work, "")?;
        scenarios(r, &mut env, p);
        env.stop();
        r.run(&format!("{p}/nothing_left_behind"), || {
            let shims = leftovers::shims(&env.containerd.address());
            let runsc = leftovers::runsc_processes(&env.runsc_root);
            let mounts = leftovers::mounts_under(&work);
            leftovers::kill_all(&shims);
            leftovers::kill_all(&runsc);
            leftovers::unmount_under(&work);
            ensure!(shims.is_empty(), "shims left: {shims:?}");
            ensure!(runsc.is_empty(), "runsc processes left: {runsc:?}");
            ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
            Ok(())
        });
        Ok(())
    });
    r.finish()
}

/// A CRI scenario: the pod environment and the group name (`cri-<containerd>/runsc-<runsc>`).
type Scenario = fn(&mut PodEnv, &str) -> Result<()>;

/// Every scenario, in the order they run; `<group>/<name>` is what filters match.
const SCENARIOS: &[(&str, Scenario)] = &[
    (
        "two_container_pod_logs_exec_and_one_shim",
        two_container_pod_logs_exec_and_one_shim,
    ),
    (
        "sandbox_api_refused_and_its_shim_exits",
        sandbox_api_refused,
    ),
    (
        "exec_sync_streams_exit_code_and_timeout",
        exec_sync_streams_exit_code_and_timeout,
    ),
    (
        "streaming_exec_with_tty_like_kubectl_exec_it",
        streaming_exec_with_tty_like_kubectl_exec_it,
    ),
    ("shared_process_namespace_pod", shared_process_namespace_pod),
    (
        "one_container_exits_3_the_other_keeps_running",
        one_container_exits_3_the_other_keeps_running,
    ),
    (
        "stop_container_escalates_to_sigkill",
        stop_container_escalates_to_sigkill,
    ),
    (
        "stats_per_container_and_update",
        stats_per_container_and_update,
    ),
    (
        "server_on_port_3001_reachable_from_the_host",
        server_on_port_3001_reachable_from_the_host,
    ),
    ("oom_killed_reason", oom_killed_reason),
    (
        "own_memory_limit_enforced_in_a_shared_pod",
        own_memory_limit_enforced_in_a_shared_pod,
    ),
    ("reopen_container_log", reopen_container_log),
    ("masked_and_readonly_paths", masked_and_readonly_paths),
    (
        "bidirectional_propagation_refused",
        bidirectional_propagation_refused,
    ),
    ("missing_sysctl_refused", missing_sysctl_refused),
    ("runtime_default_seccomp_runs", runtime_default_seccomp_runs),
    (
        "checkpoint_container_fails_clearly_and_the_pod_runs_on",
        checkpoint_container_fails_clearly,
    ),
    (
        "pod_suspended_and_resumed_with_its_memory",
        pod_suspended_and_resumed,
    ),
    ("pod_checkpoint_bad_input", pod_checkpoint_bad_input),
    (
        "ten_pods_created_and_removed_leave_nothing",
        ten_pods_created_and_removed_leave_nothing,
    ),
];

fn scenarios(r: &mut Runner, env: &mut PodEnv, p: &str) {
    for &(name, f) in SCENARIOS {
        // The Sandbox API (`sandboxer = "shim"`) exists from containerd 2.0.
        if name == "sandbox_api_refused_and_its_shim_exits" && env.containerd.build.major() < 2 {
            continue;
        }
        r.run(&format!("{p}/{name}"), || f(env, p));
    }
}

fn two_container_pod_logs_exec_and_one_shim(env: &mut PodEnv, _p: &str) -> Result<()> {
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
    logs_kept_apart(&log_dir)?;
    exec_in_each(env, &a, &b)?;
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
}

/// Each container's CRI log holds its own output, streams tagged.
fn logs_kept_apart(log_dir: &Path) -> Result<()> {
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
    Ok(())
}

/// Execs in both containers of the pod: exit codes, output, and both under gVisor.
fn exec_in_each(env: &mut PodEnv, a: &str, b: &str) -> Result<()> {
    for (id, name) in [(a, "a"), (b, "b")] {
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
    let dmesg = env.cri.exec_sync(a, &["dmesg"], 10)?;
    ensure!(
        String::from_utf8_lossy(&dmesg.stdout).contains("Starting gVisor"),
        "dmesg: {dmesg:?}"
    );
    let v = env.cri.exec_sync(b, &["cat", "/proc/version"], 10)?;
    ensure!(
        String::from_utf8_lossy(&v.stdout).contains("Linux version 4.4.0"),
        "{v:?}"
    );
    Ok(())
}

fn exec_sync_streams_exit_code_and_timeout(env: &mut PodEnv, _p: &str) -> Result<()> {
    reset(env);
    let pod = new_pod(env, "execsync")?;
    let c = container(env, &pod, "a", &["sleep", "100000"])?;
    let out = env
        .cri
        .exec_sync(&c, &["sh", "-c", "echo out; echo err >&2; exit 2"], 10)?;
    ensure!(out.exit_code == 2, "{out:?}");
    ensure!(out.stdout == b"out\n" && out.stderr == b"err\n", "{out:?}");
    let started = Instant::now();
    let res = env.cri.exec_sync(&c, &["sleep", "30"], 1);
    ensure!(
        res.is_err() && started.elapsed() < Duration::from_secs(10),
        "timeout: {res:?} after {:?}",
        started.elapsed()
    );
    // The container is unharmed.
    answers_exec(env, &c, "still-here")?;
    env.cri.remove_pod(&pod.id)
}

fn streaming_exec_with_tty_like_kubectl_exec_it(env: &mut PodEnv, p: &str) -> Result<()> {
    reset(env);
    let pod = new_pod(env, "stream")?;
    let c = container(env, &pod, "a", &["sleep", "100000"])?;
    let url = env.cri.exec_url(&c, &["sh"], true, true)?;
    let res = e2e::stream::exec(
        &env.netns,
        &url,
        Some((100, 30)),
        &[
            b"[ -t 0 ] && echo interactive-tty; stty size\r",
            b"exit 3\r",
        ],
        Duration::from_secs(30),
    )?;
    let text = String::from_utf8_lossy(&res.stdout);
    ensure!(text.contains("interactive-tty"), "output: {text:?}");
    // runsc 20221219 fails terminal ioctls of exec'd processes (see ctr.rs); later ones
    // see the size sent on the resize channel.
    ensure!(
        p.ends_with("runsc-2022") || text.contains("30 100"),
        "output: {text:?}"
    );
    ensure!(
        res.status.contains("NonZeroExitCode") && res.status.contains("\"3\""),
        "status: {}",
        res.status
    );
    env.cri.remove_pod(&pod.id)
}

fn shared_process_namespace_pod(env: &mut PodEnv, _p: &str) -> Result<()> {
    reset(env);
    let log_dir = env.logs.join("shared");
    std::fs::create_dir_all(&log_dir)?;
    let cgroup = format!("{}/podshared", env.cgroup_base);
    let cfg = cri::shared_pid_pod_config("shared", "uid-shared", &log_dir, &cgroup);
    let id = env.cri.run_pod(&cfg, HANDLER)?;
    let pod = Pod { id, cfg, log_dir };
    let a = env.cri.start_container(
        &pod.id,
        &cri::shared_pid_container_config("a", IMAGE, &["sleep", "100000"]),
        &pod.cfg,
    )?;
    let b = env.cri.start_container(
        &pod.id,
        &cri::shared_pid_container_config("b", IMAGE, &["sh", "-c", "exit 5"]),
        &pod.cfg,
    )?;
    eventually("b to exit", Duration::from_secs(20), || {
        Ok(state(env, &b)?.0 == EXITED)
    })?;
    ensure!(state(env, &b)? == (EXITED, 5), "{:?}", state(env, &b)?);
    ensure!(state(env, &a)?.0 == RUNNING, "a: {:?}", state(env, &a)?);
    env.cri.remove_pod(&pod.id)
}

fn one_container_exits_3_the_other_keeps_running(env: &mut PodEnv, _p: &str) -> Result<()> {
    let pod = new_pod(env, "exit3")?;
    let a = container(env, &pod, "stays", &["sleep", "100000"])?;
    let b = container(env, &pod, "quits", &["sh", "-c", "echo bye; exit 3"])?;
    eventually("quits to exit", Duration::from_secs(20), || {
        Ok(state(env, &b)?.0 == EXITED)
    })?;
    ensure!(
        state(env, &b)? == (EXITED, 3),
        "quits: {:?}",
        state(env, &b)?
    );
    ensure!(state(env, &a)?.0 == RUNNING, "stays: {:?}", state(env, &a)?);
    answers_exec(env, &a, "alive")?;
    // Replace the exited container (what a restartPolicy does): the pod lives on.
    env.cri.remove_container(&b)?;
    let b2 = env.cri.start_container(
        &pod.id,
        &cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "quits".into(),
                attempt: 1,
            }),
            ..cri::container_config("quits", IMAGE, &["sh", "-c", "exit 4"])
        },
        &pod.cfg,
    )?;
    eventually(
        "restarted container to exit",
        Duration::from_secs(20),
        || Ok(state(env, &b2)?.0 == EXITED),
    )?;
    ensure!(state(env, &b2)? == (EXITED, 4), "{:?}", state(env, &b2)?);
    ensure!(state(env, &a)?.0 == RUNNING, "stays died with the restart");
    env.cri.remove_pod(&pod.id)
}

fn stop_container_escalates_to_sigkill(env: &mut PodEnv, _p: &str) -> Result<()> {
    reset(env);
    let pod = new_pod(env, "grace")?;
    let c = container(
        env,
        &pod,
        "stubborn",
        &[
            "sh",
            "-c",
            "trap 'echo got-term' TERM; echo trap-set; while true; do sleep 1; done",
        ],
    )?;
    let polite = container(env, &pod, "polite", &["sleep", "100000"])?;
    // A running container may not have set its trap yet: SIGTERM only once it says so.
    eventually("stubborn to set its trap", Duration::from_secs(10), || {
        Ok(read_log(&pod.log_dir.join("stubborn.log")).contains("trap-set"))
    })?;
    let started = Instant::now();
    env.cri.stop_container(&c, 2)?;
    let took = started.elapsed();
    // CRI may answer StopContainer a moment before it records the exit (runc too).
    eventually("stubborn to be exited", Duration::from_secs(10), || {
        Ok(state(env, &c)?.0 == EXITED)
    })?;
    ensure!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "stop took {took:?}"
    );
    ensure!(
        state(env, &c)? == (EXITED, 137),
        "{:?}",
        env.cri.container_status(&c)?
    );
    let log = read_log(&pod.log_dir.join("stubborn.log"));
    ensure!(log.contains("got-term"), "SIGTERM first: {log:?}");
    let started = Instant::now();
    env.cri.stop_container(&polite, 30)?;
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM should end sleep at once"
    );
    eventually("polite to be exited", Duration::from_secs(10), || {
        Ok(state(env, &polite)?.0 == EXITED)
    })?;
    ensure!(
        state(env, &polite)? == (EXITED, 143),
        "{:?}",
        state(env, &polite)?
    );
    let started = Instant::now();
    env.cri.remove_pod(&pod.id)?;
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "pod removal took {:?}",
        started.elapsed()
    );
    Ok(())
}

fn stats_per_container_and_update(env: &mut PodEnv, _p: &str) -> Result<()> {
    reset(env);
    let pod = new_pod(env, "stats")?;
    let busy = container(
        env,
        &pod,
        "busy",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 100000",
        ],
    )?;
    let idle = container(
        env,
        &pod,
        "idle",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; sleep 100000",
        ],
    )?;
    // gVisor counts a task's CPU time in whole scheduler ticks (linux.ClockTick, 10 ms:
    // `TaskGoroutineSchedInfo` in pkg/sentry/kernel/task_sched.go), so a container that
    // ran for a millisecond or two can truly show 0: only the busy one must show CPU
    // time, each its own memory. Polled: the sandbox reports when it has sampled.
    let mut last = (0, 0, 0, 0);
    eventually("per-container stats", Duration::from_secs(30), || {
        let ((bc, bm), (ic, im)) = (cpu_and_memory(env, &busy)?, cpu_and_memory(env, &idle)?);
        last = (bc, bm, ic, im);
        Ok(bc > 0 && bm > 0 && im > 0)
    })
    .with_context(|| {
        format!(
            "busy cpu/mem {}/{}, idle cpu/mem {}/{}",
            last.0, last.1, last.2, last.3
        )
    })?;
    ensure!(
        last.0 >= last.2,
        "the busy container used less CPU than the idle one: {last:?}"
    );
    update_is_refused(env, &busy)?;
    env.cri.remove_pod(&pod.id)
}

/// A container's CPU time (ns) and working set (bytes) from ContainerStats.
fn cpu_and_memory(env: &mut PodEnv, id: &str) -> Result<(u64, u64)> {
    let st = env.cri.container_stats(id)?;
    let cpu = st
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map_or(0, |v| v.value);
    let mem = st
        .memory
        .and_then(|m| m.working_set_bytes)
        .map_or(0, |v| v.value);
    Ok((cpu, mem))
}

/// UpdateContainerResources fails clearly: neither Debian runsc has `update`.
fn update_is_refused(env: &mut PodEnv, id: &str) -> Result<()> {
    let err = env
        .cri
        .update_resources(
            id,
            cri::LinuxContainerResources {
                memory_limit_in_bytes: 256 << 20,
                ..Default::default()
            },
        )
        .err()
        .map(|e| format!("{e:#}"));
    ensure!(
        err.as_deref()
            .is_some_and(|e| e.contains("has no `update` command")),
        "update: {err:?}"
    );
    Ok(())
}

fn server_on_port_3001_reachable_from_the_host(env: &mut PodEnv, _p: &str) -> Result<()> {
    reset(env);
    let pod = new_pod(env, "web")?;
    container(
        env,
        &pod,
        "mcp",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo mcp-ok > /www/index.html && exec httpd -f -p 3001 -h /www",
        ],
    )?;
    let ip = env
        .cri
        .pod_status(&pod.id)?
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .filter(|ip| !ip.is_empty())
        .context("pod has no IP")?;
    let mut last = String::new();
    eventually("HTTP answer", Duration::from_secs(20), || {
        // A plain HTTP/1.0 request with bash's /dev/tcp (the static busybox wget crashes
        // in glibc's resolver on the host).
        let script = format!(
            "exec 3<>/dev/tcp/{ip}/3001 && printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
        );
        let out = env.in_netns(&["bash", "-c", &script])?;
        last = format!("{out:?}");
        Ok(out.code == 0 && out.stdout.contains("mcp-ok"))
    })
    .with_context(|| {
        let diag = env.in_netns(&["ip", "-o", "addr"]).map(|o| o.stdout).unwrap_or_default();
        format!("{last}\nnetns addresses: {diag}")
    })?;
    env.cri.remove_pod(&pod.id)
}

fn oom_killed_reason(env: &mut PodEnv, _p: &str) -> Result<()> {
    reset(env);
    // The kubelet puts a pod's memory limit on the pod cgroup; the sandbox lives there.
    let cg = format!("/sys/fs/cgroup/memory{}/podoom", env.cgroup_base);
    std::fs::create_dir_all(&cg)?;
    std::fs::write(
        format!("{cg}/memory.limit_in_bytes"),
        (192u64 << 20).to_string(),
    )?;
    let pod = new_pod(env, "oom")?;
    let hog = container(
        env,
        &pod,
        "hog",
        &[
            "sh",
            "-c",
            "i=0; while [ ! -e /tmp/go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; \
             dd if=/dev/zero of=/dev/null bs=600M count=1; sleep 100000",
        ],
    )?;
    // The hog allocates only once StartContainer has answered and this exec ran (30 s at
    // most): an OOM kill during the start would fail the start instead. The exec's own
    // answer may be lost to the OOM kill it triggers, hence no error check.
    let _ = env.cri.exec_sync(&hog, &["touch", "/tmp/go"], 10);
    eventually("the hog to be killed", Duration::from_secs(60), || {
        Ok(state(env, &hog)?.0 == EXITED)
    })?;
    let st = env.cri.container_status(&hog)?;
    ensure!(
        st.reason == "OOMKilled",
        "reason {:?} exit code {}",
        st.reason,
        st.exit_code
    );
    ensure!(st.exit_code == 137, "exit code {}", st.exit_code);
    env.cri.remove_pod(&pod.id)
}

/// A container over its own memory limit inside a pod sandbox without one ends OOMKilled
/// (137) while a sibling under its own limit runs on, although the sandbox as a whole holds
/// more than the sibling's limit. runsc 20221219 reports one figure for the whole sandbox,
/// so there the limit is enforced for a container alone in its pod (documented).
fn own_memory_limit_enforced_in_a_shared_pod(env: &mut PodEnv, p: &str) -> Result<()> {
    reset(env);
    let pod = new_pod(env, "memlimit")?;
    let per_container_figures = !p.ends_with("runsc-2022");
    let calm = if per_container_figures {
        Some(limited_container(
            env,
            &pod,
            "calm",
            64 << 20,
            &["sleep", "100000"],
        )?)
    } else {
        None
    };
    // dd holds its 100 MiB buffer while sleep never reads the pipe.
    let hog = limited_container(
        env,
        &pod,
        "hog",
        32 << 20,
        &["sh", "-c", "dd if=/dev/zero bs=100M count=1 | sleep 100000"],
    )?;
    env.cri.wait_oom_killed(&hog, Duration::from_secs(30))?;
    if let Some(calm) = calm {
        ensure!(state(env, &calm)?.0 == RUNNING, "calm died with the hog");
        answers_exec(env, &calm, "still-here")?;
    }
    env.cri.remove_pod(&pod.id)
}

/// Starts a container with its own memory limit of `limit` bytes.
fn limited_container(
    env: &mut PodEnv,
    pod: &Pod,
    name: &str,
    limit: i64,
    args: &[&str],
) -> Result<String> {
    let mut cfg = cri::container_config(name, IMAGE, args);
    if let Some(linux) = cfg.linux.as_mut() {
        linux.resources = Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: limit,
            ..Default::default()
        });
    }
    env.cri.start_container(&pod.id, &cfg, &pod.cfg)
}

/// CRI CheckpointContainer (the kubelet's checkpoint API) of a pod's container: runsc
/// checkpoints whole sandboxes, so it cannot be done for one container of a pod; whichever
/// layer refuses it (containerd 1.6: not implemented; 2.x: its CRIU check, then the shim), the
/// error is clear, nothing is written, and the container runs on.
fn checkpoint_container_fails_clearly(env: &mut PodEnv, p: &str) -> Result<()> {
    reset(env);
    let pod = new_pod(env, "ckpt")?;
    let c = container(env, &pod, "app", &["sleep", "100000"])?;
    let location = env.work.join("ckpt-app.tar");
    let req = cri::CheckpointContainerRequest {
        container_id: c.clone(),
        location: location.display().to_string(),
        timeout: 30,
    };
    let res = env.cri.call(async |rt| rt.checkpoint_container(req).await);
    let err = match res {
        Ok(_) => anyhow::bail!("CheckpointContainer of a gVisor pod's container succeeded"),
        Err(e) => format!("{e:#}"),
    };
    println!("{p}: CheckpointContainer: {err}");
    let clear = [
        "not implemented",
        "unimplemented",
        "criu",
        "CRIU",
        "pod sandbox",
    ]
    .iter()
    .any(|w| err.contains(w));
    ensure!(clear, "unclear CheckpointContainer error: {err}");
    ensure!(!location.exists(), "{} was written", location.display());
    ensure!(state(env, &c)?.0 == RUNNING, "the container stopped");
    env.cri.remove_pod(&pod.id)
}

/// A pod of the checkpoint handler (runsc without a network stack), with `annotations`.
fn checkpoint_pod(env: &mut PodEnv, name: &str, annotations: &[(&str, &str)]) -> Result<Pod> {
    let log_dir = env.logs.join(name);
    std::fs::create_dir_all(&log_dir)?;
    let mut cfg = cri::pod_config(
        name,
        &format!("uid-{name}"),
        &log_dir,
        &format!("{}/pod{name}", env.cgroup_base),
    );
    for (k, v) in annotations {
        cfg.annotations.insert((*k).to_owned(), (*v).to_owned());
    }
    let id = env.cri.run_pod(&cfg, CHECKPOINT_HANDLER)?;
    Ok(Pod { id, cfg, log_dir })
}

/// A pod of two counting containers checkpointed as a whole through its sandbox id (the
/// node-level suspend), removed, and restored into a new pod whose pod annotation names the
/// image: each container goes on counting from its value in memory, and the restored pod
/// behaves as any (exec, removal). runsc 20221219 cannot restore a pod: refused clearly.
fn pod_suspended_and_resumed(env: &mut PodEnv, p: &str) -> Result<()> {
    reset(env);
    let image = env.work.join("pod-image");
    let _ = std::fs::remove_dir_all(&image);
    let image_arg = image.display().to_string();
    let pod = checkpoint_pod(env, "agent", &[])?;
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let cfg = cri::container_config(name, IMAGE, &["sh", "-c", COUNTER]);
        ids.push(env.cri.start_container(&pod.id, &cfg, &pod.cfg)?);
    }
    if p.ends_with("runsc-2022") {
        let out = env.checkpoint_cli(&["--image-path", &image_arg, &pod.id])?;
        ensure!(
            out.code != 0 && out.stderr.contains("cannot restore a pod"),
            "checkpoint with runsc 2022: {out:?}"
        );
        ensure!(
            !image.join("checkpoint.img").exists(),
            "an image was written"
        );
        ensure!(state(env, &ids[0])?.0 == RUNNING, "the pod stopped");
        return env.cri.remove_pod(&pod.id);
    }
    // 25 counts take 5 s: a counter started afresh cannot be past them within the 4 s the
    // restored one is given below.
    let mut before = Vec::new();
    for id in &ids {
        eventually("the counter to pass 25", Duration::from_secs(30), || {
            // Until its first write the counter has no /tmp/count.
            Ok(env.counter(id).is_ok_and(|n| n >= 25))
        })?;
    }
    for id in &ids {
        before.push(env.counter(id)?);
    }
    let out = env.checkpoint_cli(&["--image-path", &image_arg, &pod.id])?;
    ensure!(out.code == 0, "checkpoint: {out:?}");
    ensure!(image.join("checkpoint.img").is_file(), "no image written");
    ensure!(state(env, &ids[0])?.0 == RUNNING, "the pod stopped");
    env.cri.remove_pod(&pod.id)?;

    let restored = checkpoint_pod(env, "agent", &[(RESTORE_ANNOTATION, &image_arg)])?;
    let mut new_ids = Vec::new();
    for name in ["a", "b"] {
        let cfg = cri::container_config(name, IMAGE, &["sh", "-c", COUNTER]);
        new_ids.push(env.cri.start_container(&restored.id, &cfg, &restored.cfg)?);
    }
    for (id, was) in new_ids.iter().zip(&before) {
        let mut last = 0;
        eventually(
            "the restored counter to go on",
            Duration::from_secs(4),
            || {
                last = env.counter(id)?;
                Ok(last > *was)
            },
        )
        .with_context(|| format!("{id}: {last} after {was} at the checkpoint"))?;
        ensure!(state(env, id)?.0 == RUNNING, "{id} is not running");
    }
    answers_exec(env, &new_ids[1], "resumed")?;
    env.cri.remove_pod(&restored.id)
}

/// What a pod checkpoint and a pod restore refuse, each with a message naming the problem
/// and nothing left: an unknown task; a container the image does not hold joining a pod
/// being restored; a pod annotation naming a directory without an image; runsc 20221219.
fn pod_checkpoint_bad_input(env: &mut PodEnv, p: &str) -> Result<()> {
    reset(env);
    let image = env.work.join("bad-image");
    let _ = std::fs::remove_dir_all(&image);
    let image_arg = image.display().to_string();
    let out = env.checkpoint_cli(&["--image-path", &image_arg, "no-such-pod"])?;
    ensure!(
        out.code != 0 && out.stderr.contains("no running task \"no-such-pod\""),
        "unknown task: {out:?}"
    );
    if !p.ends_with("runsc-2022") {
        pod_with_a_finished_container(env, &image)?;
    }

    let empty = env.work.join("empty-image");
    std::fs::create_dir_all(&empty)?;
    let empty_arg = empty.display().to_string();
    let err = checkpoint_pod(env, "noimage", &[(RESTORE_ANNOTATION, &empty_arg)])
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    ensure!(
        err.contains("has no checkpoint.img") && err.contains(RESTORE_ANNOTATION),
        "restore from a directory without an image: {err:?}"
    );
    if p.ends_with("runsc-2022") {
        // Refused before runsc is asked for anything, with an image there.
        std::fs::write(
            empty.join("checkpoint.img"),
            b"gVisorSF\0\0\0\0\0\0\0\x02{}",
        )?;
        let err = checkpoint_pod(env, "oldrunsc", &[(RESTORE_ANNOTATION, &empty_arg)])
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        ensure!(
            err.contains("cannot restore a pod"),
            "restore with runsc 20221219: {err:?}"
        );
    }
    // containerd removes a pod whose RunPodSandbox failed; its shim and runsc must go too.
    let left: Vec<String> = env
        .cri
        .list_pods()?
        .into_iter()
        .filter_map(|p| p.metadata.map(|m| m.name))
        .collect();
    ensure!(left.is_empty(), "pods left: {left:?}");
    let runsc = leftovers::runsc_processes(&env.runsc_root);
    ensure!(runsc.is_empty(), "runsc processes left: {runsc:?}");
    Ok(())
}

/// A pod whose short-lived container has exited is checkpointed with the running one only
/// (containerd deletes an exited container's task, and runsc's sandbox no longer holds it);
/// its restore refuses the finished container (not in the image), as it would an init
/// container, while the running one comes back.
fn pod_with_a_finished_container(env: &mut PodEnv, image: &Path) -> Result<()> {
    let image_arg = image.display().to_string();
    let pod = checkpoint_pod(env, "finished", &[])?;
    let live = container(env, &pod, "live", &["sleep", "100000"])?;
    let done = container(env, &pod, "done", &["true"])?;
    eventually(
        "the short container to exit",
        Duration::from_secs(30),
        || Ok(state(env, &done)?.0 == EXITED),
    )?;
    // containerd deletes an exited container's task just after reporting the exit; until
    // then the shim still has it and refuses.
    let mut last = None;
    eventually("the checkpoint", Duration::from_secs(20), || {
        let out = env.checkpoint_cli(&["--image-path", &image_arg, &pod.id])?;
        if out.code != 0 {
            ensure!(out.stderr.contains("not running"), "checkpoint: {out:?}");
        }
        let ok = out.code == 0;
        last = Some(out);
        Ok(ok)
    })
    .with_context(|| format!("{last:?}"))?;
    ensure!(state(env, &live)?.0 == RUNNING, "the pod stopped");
    env.cri.remove_pod(&pod.id)?;

    let restored = checkpoint_pod(env, "finished", &[(RESTORE_ANNOTATION, &image_arg)])?;
    let err = env
        .cri
        .start_container(
            &restored.id,
            &cri::container_config("done", IMAGE, &["true"]),
            &restored.cfg,
        )
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    ensure!(
        err.contains("done") && err.contains("is not in it") && err.contains("live"),
        "a container the image does not hold: {err:?}"
    );
    // A pod removed while its restore waits for containers goes completely.
    env.cri.remove_pod(&restored.id)?;
    let runsc = leftovers::runsc_processes(&env.runsc_root);
    ensure!(
        runsc.is_empty(),
        "runsc processes left by a pending restore: {runsc:?}"
    );

    let restored = checkpoint_pod(env, "finished", &[(RESTORE_ANNOTATION, &image_arg)])?;
    let live = container(env, &restored, "live", &["sleep", "100000"])?;
    answers_exec(env, &live, "back")?;
    env.cri.remove_pod(&restored.id)
}

fn reopen_container_log(env: &mut PodEnv, _p: &str) -> Result<()> {
    reset(env);
    let pod = new_pod(env, "logs")?;
    let c = container(
        env,
        &pod,
        "ticker",
        &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
    )?;
    let log = pod.log_dir.join("ticker.log");
    eventually("first ticks", Duration::from_secs(20), || {
        Ok(read_log(&log).contains("tick"))
    })?;
    std::fs::rename(&log, pod.log_dir.join("ticker.log.1"))?;
    env.cri.reopen_log(&c)?;
    eventually("ticks in the new file", Duration::from_secs(20), || {
        Ok(read_log(&log).contains("stdout F tick"))
    })?;
    env.cri.remove_pod(&pod.id)
}

fn ten_pods_created_and_removed_leave_nothing(env: &mut PodEnv, _p: &str) -> Result<()> {
    let before = shims_for(env).len();
    for round in 0..2 {
        let mut pods = Vec::new();
        for i in 0..10 {
            let pod = new_pod(env, &format!("many{round}x{i}"))?;
            container(env, &pod, "a", &["sleep", "100000"])?;
            container(env, &pod, "b", &["sh", "-c", "echo hi; sleep 100000"])?;
            pods.push(pod);
        }
        let shims = shims_for(env).len() - before;
        ensure!(shims == 10, "one shim per pod: {shims} shims for 10 pods");
        for pod in &pods {
            env.cri.remove_pod(&pod.id)?;
        }
    }
    eventually("shims to exit", Duration::from_secs(20), || {
        Ok(shims_for(env).len() == before)
    })?;
    let runsc = leftovers::runsc_processes(&env.runsc_root);
    ensure!(runsc.is_empty(), "runsc processes left: {runsc:?}");
    let state = env.containerd.work.join("state");
    let mounts = leftovers::mounts_under(&state);
    ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
    let netns = leftovers::dir_entries(&state.join("io.containerd.grpc.v1.cri/netns"));
    ensure!(netns.is_empty(), "netns left: {netns:?}");
    let sandboxes = leftovers::dir_entries(&env.runsc_root.join("k8s.io"));
    ensure!(sandboxes.is_empty(), "runsc state left: {sandboxes:?}");
    ensure!(
        env.cri.list_pods()?.is_empty() && env.cri.list_containers()?.is_empty(),
        "CRI objects left"
    );
    Ok(())
}

/// containerd 2.x with `sandboxer = "shim"`: RunPodSandbox fails with the shim's message
/// naming the setting, and the shim containerd started for that sandbox (its `-id` is the
/// sandbox id) does not stay: every kubelet retry would leave one more.
fn sandbox_api_refused(env: &mut PodEnv, _p: &str) -> Result<()> {
    reset(env);
    let log_dir = env.logs.join("sbx");
    std::fs::create_dir_all(&log_dir)?;
    let cfg = cri::pod_config(
        "sbx",
        "uid-sbx",
        &log_dir,
        &format!("{}/podsbx", env.cgroup_base),
    );
    let err = env
        .cri
        .run_pod(&cfg, SANDBOXER_HANDLER)
        .map(drop)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    ensure!(
        err.contains("does not serve containerd's Sandbox API")
            && err.contains("remove `sandboxer ="),
        "RunPodSandbox with sandboxer = shim: {err:?}"
    );
    let id = err
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 64)
        .context("no sandbox id in the error")?
        .to_owned();
    let shims_of_it = || {
        leftovers::shims(&env.containerd.address())
            .into_iter()
            .filter(|s| s.cmdline.contains(&id))
            .count()
    };
    eventually("the refused shim to exit", Duration::from_secs(30), || {
        Ok(shims_of_it() == 0)
    })
}

/// `maskedPaths` / `readonlyPaths` (critest's MaskedPaths and ReadonlyPaths): a masked file
/// reads empty and cannot be executed, a read-only path cannot be written. The image's
/// `/bin/ls` is a symlink to busybox (masking it would mask busybox itself), so the masked
/// program is a copy of busybox named `ls` in a volume, next to an unmasked copy.
fn masked_and_readonly_paths(env: &mut PodEnv, _p: &str) -> Result<()> {
    reset(env);
    let tools = env.logs.join("masked-tools");
    std::fs::create_dir_all(&tools)?;
    for name in ["ls", "echo"] {
        std::fs::copy(e2e::image::BUSYBOX, tools.join(name))?;
    }
    let pod = new_pod(env, "masked")?;
    let mut cfg = cri::container_config("a", IMAGE, &["sleep", "100000"]);
    cfg.mounts.push(cri::Mount {
        container_path: "/mnt/tools".into(),
        host_path: tools.display().to_string(),
        ..Default::default()
    });
    let sc = cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .context("no security context")?;
    sc.masked_paths = vec!["/mnt/tools/ls".into(), "/etc/group".into()];
    sc.readonly_paths = vec!["/tmp".into()];
    let c = env.cri.start_container(&pod.id, &cfg, &pod.cfg)?;

    let ls = env
        .cri
        .exec_sync(&c, &["/bin/sh", "-c", "/mnt/tools/ls /"], 10)?;
    ensure!(
        ls.exit_code != 0 && String::from_utf8_lossy(&ls.stderr).contains("Permission denied"),
        "masked /mnt/tools/ls ran: {ls:?}"
    );
    let echo = env
        .cri
        .exec_sync(&c, &["/mnt/tools/echo", "unmasked"], 10)?;
    ensure!(echo.stdout == b"unmasked\n", "the unmasked copy: {echo:?}");
    for file in ["/mnt/tools/ls", "/etc/group"] {
        let cat = env.cri.exec_sync(&c, &["cat", file], 10)?;
        ensure!(
            cat.exit_code == 0 && cat.stdout.is_empty(),
            "cat {file}: {cat:?}"
        );
    }
    let touch = env.cri.exec_sync(&c, &["touch", "/tmp/x"], 10)?;
    ensure!(
        touch.exit_code != 0
            && String::from_utf8_lossy(&touch.stderr).contains("Read-only file system"),
        "touch /tmp/x: {touch:?}"
    );
    // The rest of the rootfs stays writable.
    let other = env.cri.exec_sync(&c, &["touch", "/root/x"], 10)?;
    ensure!(other.exit_code == 0, "touch /root/x: {other:?}");
    env.cri.remove_pod(&pod.id)
}

/// A mount with `Bidirectional` propagation (containerd: mount option `rshared`, root
/// propagation `rshared`) is refused when containerd creates the task (StartContainer), with
/// the mount named and what gVisor supports; the pod stays usable. containerd itself insists
/// that the host path is on a shared mount, so the test makes one.
fn bidirectional_propagation_refused(env: &mut PodEnv, _p: &str) -> Result<()> {
    reset(env);
    let dir = env.logs.join("propagation");
    std::fs::create_dir_all(&dir)?;
    let d = dir.display().to_string();
    let mount = |args: &[&str]| -> Result<()> {
        let st = std::process::Command::new("mount").args(args).status()?;
        ensure!(st.success(), "mount {args:?}: {st}");
        Ok(())
    };
    mount(&["--bind", &d, &d])?;
    let result = (|| {
        mount(&["--make-rshared", &d])?;
        let pod = new_pod(env, "bidir")?;
        let mut cfg = cri::container_config("a", IMAGE, &["sleep", "100000"]);
        cfg.mounts.push(cri::Mount {
            container_path: "/mnt/shared".into(),
            host_path: d.clone(),
            propagation: cri::MountPropagation::PropagationBidirectional as i32,
            ..Default::default()
        });
        let err = env
            .cri
            .start_container(&pod.id, &cfg, &pod.cfg)
            .map(drop)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        ensure!(
            err.contains("Bidirectional (rshared)")
                && err.contains("/mnt/shared")
                && err.contains("HostToContainer (rslave)"),
            "starting a container with a Bidirectional mount: {err:?}"
        );
        let ok = container(env, &pod, "b", &["sleep", "100000"])?;
        answers_exec(env, &ok, "fine")?;
        env.cri.remove_pod(&pod.id)
    })();
    let _ = std::process::Command::new("umount").arg(&d).status();
    result
}

/// A pod sysctl gVisor does not implement (critest's "safe sysctls") is refused at
/// RunPodSandbox, naming it, instead of a pod running without it.
fn missing_sysctl_refused(env: &mut PodEnv, _p: &str) -> Result<()> {
    reset(env);
    let log_dir = env.logs.join("sysctl");
    std::fs::create_dir_all(&log_dir)?;
    let mut cfg = cri::pod_config(
        "sysctl",
        "uid-sysctl",
        &log_dir,
        &format!("{}/podsysctl", env.cgroup_base),
    );
    cfg.linux
        .as_mut()
        .context("no linux config")?
        .sysctls
        .insert("kernel.shm_rmid_forced".into(), "1".into());
    let err = env
        .cri
        .run_pod(&cfg, HANDLER)
        .map(drop)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    ensure!(
        err.contains("kernel.shm_rmid_forced=1 (gVisor does not implement it)"),
        "RunPodSandbox with kernel.shm_rmid_forced: {err:?}"
    );
    reset(env);
    Ok(())
}

/// A pod with the RuntimeDefault seccomp profile (the kubelet's default with SeccompDefault)
/// runs: runsc filters at most the container's own process, and the shim only warns.
fn runtime_default_seccomp_runs(env: &mut PodEnv, _p: &str) -> Result<()> {
    reset(env);
    let pod = new_pod(env, "seccomp")?;
    let mut cfg = cri::container_config("a", IMAGE, &["sleep", "100000"]);
    cfg.linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .context("no security context")?
        .seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
    let c = env.cri.start_container(&pod.id, &cfg, &pod.cfg)?;
    answers_exec(env, &c, "filtered-or-not")?;
    // The documented warning, in containerd's log (where the shim's log goes).
    eventually("the seccomp warning", Duration::from_secs(10), || {
        Ok(env.containerd.log_tail(5000).lines().any(|l| {
            l.contains("seccomp profile is not applied") && (l.contains(&c) || l.contains(&pod.id))
        }))
    })?;
    env.cri.remove_pod(&pod.id)
}
