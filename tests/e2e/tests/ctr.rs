//! End to end through `ctr`: real containerd (1.6, 1.7, 2.1), real runsc (2022, 2024), the
//! built shim. Each containerd x runsc pair gets a private containerd; every scenario runs
//! against it; afterwards nothing may be left behind.
//!
//! `cargo test -p e2e --test ctr [FILTER...]` (root; run `scripts/fetch-runtimes.sh` first).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "test runner output"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::containerd::{Config, Containerd, EventLog, Out, run};
use e2e::leftovers;
use e2e::pods::{self, IMAGE};
use e2e::runner::{self, Runner};
use e2e::versions::{self, ContainerdBuild, RunscBuild};

const RUNTIME: &str = "io.containerd.runsc.v1";

/// One containerd x runsc environment.
struct Env {
    c: Containerd,
    /// The runtime options file (`--runtime-config-path`).
    runsc_toml: String,
    runsc_root: PathBuf,
    work: PathBuf,
    events: EventLog,
    /// The image tarball imported at start.
    image: PathBuf,
    /// containerd's checkpoint directories that existed before.
    checkpoint_dirs: std::collections::BTreeSet<PathBuf>,
}

impl Env {
    fn start(
        cd: &ContainerdBuild,
        rs: &RunscBuild,
        shim: &Path,
        image: &Path,
        work: &Path,
    ) -> Result<Env> {
        if !rs.runsc.is_file() {
            bail!(
                "runsc {} not found at {} (run scripts/fetch-runtimes.sh)",
                rs.name,
                rs.runsc.display()
            );
        }
        let _ = std::fs::remove_dir_all(work);
        std::fs::create_dir_all(work)?;
        let runsc_root = work.join("runsc-root");
        let runsc_toml = work.join("runsc.toml");
        std::fs::write(
            &runsc_toml,
            format!(
                "binary_name = \"{}\"\nroot = \"{}\"\n[runsc_config]\n  network = \"none\"\n",
                rs.runsc.display(),
                runsc_root.display()
            ),
        )?;
        let c = Containerd::start(cd, &work.join("containerd"), shim, &Config::default())?;
        c.import(image)?;
        let events = EventLog::start(&c, work.join("events.log"))?;
        Ok(Env {
            c,
            runsc_toml: runsc_toml.display().to_string(),
            runsc_root,
            work: work.to_path_buf(),
            events,
            image: image.to_path_buf(),
            checkpoint_dirs: leftovers::checkpoint_dirs(),
        })
    }

    fn cfg(&self) -> String {
        self.runsc_toml.clone()
    }

    /// `ctr run --rm` with our runtime.
    fn run(&self, id: &str, flags: &[&str], args: &[&str]) -> Result<Out> {
        self.c.ctr(&self.run_args("--rm", id, flags, args))
    }

    /// `ctr run -d`.
    fn run_d(&self, id: &str, flags: &[&str], args: &[&str]) -> Result<()> {
        self.c
            .ctr_ok(&self.run_args("-d", id, flags, args))
            .map(drop)
    }

    /// `ctr run -d` of the [`COUNTER`] as `id`, with runtime options file `toml`.
    fn counter_with(&self, toml: &str, id: &str) -> Result<()> {
        self.c.run_script(toml, IMAGE, id, COUNTER)
    }

    /// The `ctr run` arguments for our runtime and the image.
    fn run_args<'a>(
        &'a self,
        mode: &'a str,
        id: &'a str,
        flags: &[&'a str],
        args: &[&'a str],
    ) -> Vec<&'a str> {
        let mut a = vec![
            "run",
            mode,
            "--runtime",
            RUNTIME,
            "--runtime-config-path",
            &self.runsc_toml,
        ];
        a.extend_from_slice(flags);
        a.push(IMAGE);
        a.push(id);
        a.extend_from_slice(args);
        a
    }

    /// A shell command line under a pseudo-terminal (`ctr -t` needs one).
    fn in_pty(&self, shell: &str) -> Result<Out> {
        run(
            Command::new("script").args(["-qec", shell, "/dev/null"]),
            Duration::from_secs(60),
        )
    }

    /// The ctr command line prefix, for `in_pty`.
    fn ctr_line(&self) -> String {
        format!(
            "{} --address {} -n {}",
            self.c.build.ctr.display(),
            self.c.address().display(),
            self.c.namespace
        )
    }

    fn task_status(&self, id: &str) -> Result<String> {
        let out = self.c.ctr_ok(&["task", "ls"])?;
        Ok(out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("")
            .to_owned())
    }

    fn wait_status(&self, id: &str, want: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.task_status(id)?;
            if s == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("task {id} is {s:?}, expected {want}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes a task and its container whatever state they are in.
    fn remove(&self, id: &str) {
        let _ = self.c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        let _ = self.c.ctr(&["task", "delete", "-f", id]);
        let _ = self.c.ctr(&["containers", "rm", id]);
    }

    /// The exit status in the last TaskExit event of process `id` (init: the container id).
    fn exit_status(&self, id: &str) -> Result<u32> {
        let needle = format!("\"id\":\"{id}\"");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.events.text();
            let line = log
                .lines()
                .rfind(|l| l.contains("/tasks/exit") && l.contains(&needle));
            if let Some(line) = line {
                let json = &line[line.find('{').unwrap_or(0)..];
                let v: serde_json::Value = serde_json::from_str(json)?;
                return Ok(v["exit_status"].as_u64().unwrap_or(0) as u32);
            }
            ensure!(Instant::now() < deadline, "no TaskExit event for {id}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Topics of the events seen for container `id`, in order.
    fn topics(&self, id: &str) -> Vec<String> {
        self.events.topics(id)
    }

    fn stop(mut self) -> Result<()> {
        drop(self.events);
        self.c.stop();
        // containerd's own leftovers of the restores.
        leftovers::remove_new_checkpoint_dirs(&self.checkpoint_dirs);
        // What is left now was left by the shim.
        let shims = leftovers::shims(&self.c.address());
        let runsc = leftovers::runsc_processes(&self.runsc_root);
        let mounts = leftovers::mounts_under(&self.work);
        leftovers::kill_all(&shims);
        leftovers::kill_all(&runsc);
        leftovers::unmount_under(&self.work);
        let sandboxes = leftovers::dir_entries(&self.runsc_root.join("e2e"));
        ensure!(shims.is_empty(), "shim processes left: {shims:?}");
        ensure!(runsc.is_empty(), "runsc processes left: {runsc:?}");
        ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
        ensure!(
            sandboxes.is_empty(),
            "runsc state left in {}: {sandboxes:?}",
            self.runsc_root.display()
        );
        Ok(())
    }
}

fn contains(out: &Out, needle: &str) -> Result<()> {
    ensure!(
        out.stdout.contains(needle),
        "stdout lacks {needle:?}\nstdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// A ctr scenario: the environment and the runsc build under test.
type Scenario = fn(&Env, &RunscBuild) -> Result<()>;

/// Every scenario, in the order they run; `<group>/<name>` is what filters match.
const SCENARIOS: &[(&str, Scenario)] = &[
    ("gvisor_banner_and_kernel", gvisor_banner_and_kernel),
    ("stdout_and_stderr_kept_apart", stdout_and_stderr_kept_apart),
    ("exit_codes", exit_codes),
    ("large_output_is_complete", large_output_is_complete),
    ("terminal_and_resize", terminal_and_resize),
    ("stdin_piped_with_i", stdin_piped_with_i),
    ("exec_with_and_without_tty", exec_with_and_without_tty),
    ("kill_term_kill_and_all", kill_term_kill_and_all),
    ("task_ps_and_metrics", task_ps_and_metrics),
    ("pause_resume", pause_resume),
    ("detached_kill_delete", detached_kill_delete),
    ("ids_that_prefix_each_other", ids_that_prefix_each_other),
    ("checkpoint_restore_continues", checkpoint_restore_continues),
    ("checkpoint_leave_running", checkpoint_leave_running),
    (
        "checkpoint_stopped_is_refused",
        checkpoint_stopped_is_refused,
    ),
    (
        "checkpoint_moves_to_another_containerd",
        checkpoint_moves_to_another_containerd,
    ),
    (
        "checkpoint_flags_from_runsc_toml",
        checkpoint_flags_from_runsc_toml,
    ),
    (
        "restore_by_another_runsc_build_fails_clearly",
        restore_by_another_runsc_build_fails_clearly,
    ),
    (
        "env_cwd_readonly_and_bind_mount",
        env_cwd_readonly_and_bind_mount,
    ),
    ("events_in_order", events_in_order),
    ("log_uri_file", log_uri_file),
    ("log_uri_binary", log_uri_binary),
    (
        "missing_program_is_a_clear_error",
        missing_program_is_a_clear_error,
    ),
    (
        "update_names_the_runsc_version",
        update_names_the_runsc_version,
    ),
    (
        "malformed_config_names_the_file",
        malformed_config_names_the_file,
    ),
];

fn scenarios(r: &mut Runner, e: &Env, p: &str, rs: &RunscBuild) {
    let has_update =
        e.c.ctr(&["task", "update", "--help"])
            .is_ok_and(|o| o.code == 0);
    for &(name, f) in SCENARIOS {
        let name = format!("{p}/{name}");
        if name.ends_with("/update_names_the_runsc_version") && !has_update {
            r.skip(&name, "this ctr has no `task update`");
            continue;
        }
        let needs_leave_running = name.ends_with("/checkpoint_leave_running")
            || name.ends_with("/checkpoint_moves_to_another_containerd")
            || name.ends_with("/checkpoint_flags_from_runsc_toml")
            || name.ends_with("/restore_by_another_runsc_build_fails_clearly");
        if needs_leave_running && rs.name == "2022" {
            r.skip(
                &name,
                "runsc 20221219 cannot leave a container running after a checkpoint",
            );
            continue;
        }
        r.run(&name, || f(e, rs));
    }
}

fn gvisor_banner_and_kernel(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let out = e.run("banner", &[], &["dmesg"])?.ok()?;
    ensure!(
        out.stdout.starts_with("[   0.000000] Starting gVisor..."),
        "dmesg: {}",
        out.stdout
    );
    let out = e.run("kernel", &[], &["cat", "/proc/version"])?.ok()?;
    contains(&out, "Linux version 4.4.0")
}

fn stdout_and_stderr_kept_apart(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let out = e
        .run(
            "streams",
            &[],
            &["sh", "-c", "echo to-out; echo to-err >&2; echo more-out"],
        )?
        .ok()?;
    ensure!(
        out.stdout == "to-out\nmore-out\n",
        "stdout {:?}",
        out.stdout
    );
    ensure!(out.stderr == "to-err\n", "stderr {:?}", out.stderr);
    Ok(())
}

fn exit_codes(e: &Env, _rs: &RunscBuild) -> Result<()> {
    for code in [0, 3, 7, 127] {
        let out = e.run(
            &format!("exit{code}"),
            &[],
            &["sh", "-c", &format!("exit {code}")],
        )?;
        ensure!(
            out.code == code,
            "exit {code}: got {} ({})",
            out.code,
            out.stderr
        );
    }
    // Killed by a signal: 128 + signal.
    let out = e.run("selfkill", &[], &["sh", "-c", "kill -9 $$"])?;
    ensure!(out.code == 137, "kill -9: got {}", out.code);
    Ok(())
}

fn large_output_is_complete(e: &Env, _rs: &RunscBuild) -> Result<()> {
    // 4 MiB through the pipes; every byte must arrive before the exit is reported.
    let out = e
        .run(
            "bigout",
            &[],
            &["sh", "-c", "head -c 4194304 /dev/zero | tr '\\0' x"],
        )?
        .ok()?;
    ensure!(
        out.stdout.len() == 4 * 1024 * 1024,
        "got {} bytes",
        out.stdout.len()
    );
    Ok(())
}

/// Shell run first in a `ctr -t` container or exec: ctr sends ResizePty only after Start
/// returned, so the terminal starts at `0 0`; poll (10 s at most) until the size arrives.
/// A failing `stty` is polled too: runsc 20240729 once failed an exec's terminal ioctl
/// ("No child processes", what runsc 20221219 answers in exec'd processes, where the test
/// expects no size).
const AWAIT_RESIZE: &str = r#"i=0; while s="$(stty size 2>/dev/null)"; [ -z "$s" -o "$s" = "0 0" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done"#;

fn terminal_and_resize(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let line = format!(
        "stty cols 123 rows 45; {} run -t --rm --runtime {RUNTIME} --runtime-config-path {} {IMAGE} tty1 sh -c '[ -t 0 ] && [ -t 1 ] && echo IS-A-TTY; {AWAIT_RESIZE}; stty size'",
        e.ctr_line(),
        e.cfg()
    );
    let out = e.in_pty(&line)?.ok()?;
    contains(&out, "IS-A-TTY")?;
    // `tty` itself prints "not a tty" under gVisor: the terminal is a host descriptor
    // whose /proc/self/fd link is "host:[N]", not a /dev/pts path.
    contains(&out, "45 123")
}

fn stdin_piped_with_i(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let cfg = e.cfg();
    // ctr always wires stdin (there is no -i in 1.6) and sends CloseIO at its EOF.
    let mut cmd = e.c.ctr_cmd(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        &cfg,
        IMAGE,
        "stdin1",
        "sh",
        "-c",
        "cat; echo END",
    ]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        // ctr sends CloseIO when its stdin ends, but only once the task exists: input that
        // ends before that never gets a CloseIO and hangs with any shim (runc's too).
        e.wait_status("stdin1", "RUNNING")?;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(b"line one\nline two\n")?;
    }
    let out = wait_output(child, Duration::from_secs(60))?;
    ensure!(
        out.code == 0 && out.stdout == "line one\nline two\nEND\n",
        "{out:?}"
    );
    Ok(())
}

fn exec_with_and_without_tty(e: &Env, rs: &RunscBuild) -> Result<()> {
    e.run_d("exec1", &[], &["sleep", "1000"])?;
    let res = (|| {
        let out = e.c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "x1",
            "exec1",
            "sh",
            "-c",
            "echo from-exec; echo err-exec >&2; exit 5",
        ])?;
        ensure!(
            out.code == 5,
            "exec exit code {} ({:?})",
            out.code,
            out.stderr
        );
        ensure!(
            out.stdout == "from-exec\n" && out.stderr == "err-exec\n",
            "{out:?}"
        );
        let out =
            e.c.ctr(&[
                "task",
                "exec",
                "--exec-id",
                "x2",
                "--cwd",
                "/tmp",
                "--user",
                "1000",
                "exec1",
                "sh",
                "-c",
                "pwd; id -u",
            ])?
            .ok()?;
        ensure!(out.stdout == "/tmp\n1000\n", "cwd/user: {:?}", out.stdout);
        let line = format!(
            "stty cols 77 rows 22; {} task exec -t --exec-id x3 exec1 sh -c '{AWAIT_RESIZE}; stty size; [ -t 1 ] && echo EXEC-TTY; exit 4'",
            e.ctr_line()
        );
        let out = e.in_pty(&line)?;
        contains(&out, "EXEC-TTY")?;
        // ctr sends ResizePty only after Start returned (until then the size is 0x0, with
        // runc too: hence AWAIT_RESIZE). runsc 20221219 fails terminal ioctls in exec'd
        // processes ("stty: standard input: No child processes"); 20240729 sees the size.
        if rs.name != "2022" {
            contains(&out, "22 77")?;
        }
        Ok(())
    })();
    e.remove("exec1");
    res
}

fn kill_term_kill_and_all(e: &Env, _rs: &RunscBuild) -> Result<()> {
    e.run_d("kill1", &[], &["sleep", "1000"])?;
    e.c.ctr_ok(&["task", "kill", "kill1"])?; // SIGTERM
    e.wait_status("kill1", "STOPPED")?;
    ensure!(
        e.exit_status("kill1")? == 143,
        "SIGTERM exit status {}",
        e.exit_status("kill1")?
    );
    e.c.ctr(&["task", "delete", "kill1"])?;
    e.c.ctr_ok(&["containers", "rm", "kill1"])?;
    kill_trapped_then_all(e)
}

/// A TERM trapped by the container's shell leaves it running; SIGKILL with `--all` ends it
/// and a later kill answers "not found".
fn kill_trapped_then_all(e: &Env) -> Result<()> {
    e.run_d(
        "kill2",
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo got-term > /tmp/term' TERM; while :; do sleep 1000 & wait; done",
        ],
    )?;
    // The task is running before `sh` has read its script: wait for the `sleep` it forks
    // after setting the trap, so TERM cannot arrive before the trap is in place.
    runner::eventually(
        "the trap of kill2 in place",
        Duration::from_secs(10),
        || {
            let out = e.c.ctr_ok(&["task", "ps", "kill2"])?;
            Ok(out.lines().skip(1).filter(|l| !l.trim().is_empty()).count() >= 2)
        },
    )?;
    e.c.ctr_ok(&["task", "kill", "kill2"])?;
    // The handler ran: TERM was delivered, and the task lives on.
    runner::eventually("kill2 to handle TERM", Duration::from_secs(10), || {
        let out = e.c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "t",
            "kill2",
            "cat",
            "/tmp/term",
        ])?;
        Ok(out.stdout == "got-term\n")
    })?;
    ensure!(e.task_status("kill2")? == "RUNNING", "TERM must be ignored");
    e.c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "--all", "kill2"])?;
    e.wait_status("kill2", "STOPPED")?;
    ensure!(
        e.exit_status("kill2")? == 137,
        "SIGKILL exit status {}",
        e.exit_status("kill2")?
    );
    let out = e.c.ctr(&["task", "kill", "kill2"])?;
    // NOT_FOUND "process already finished", as with runc (ctr 1.x prints "not found").
    ensure!(
        out.code != 0
            && (out.stderr.contains("not found") || out.stderr.contains("already finished")),
        "kill of a stopped task: {out:?}"
    );
    e.c.ctr(&["task", "delete", "kill2"])?;
    e.c.ctr_ok(&["containers", "rm", "kill2"])?;
    Ok(())
}

fn task_ps_and_metrics(e: &Env, _rs: &RunscBuild) -> Result<()> {
    e.run_d("ps1", &[], &["sh", "-c", "sleep 1000 & sleep 1000"])?;
    let res = (|| {
        let out = e.c.ctr_ok(&["task", "ps", "ps1"])?;
        let pids = out.lines().skip(1).filter(|l| !l.trim().is_empty()).count();
        ensure!(pids >= 2, "task ps: {out}");
        let out = e.c.ctr_ok(&["task", "metrics", "ps1"])?;
        let usage = out
            .lines()
            .find(|l| l.starts_with("memory.usage_in_bytes") || l.starts_with("memory.usage "))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        ensure!(usage > 0, "task metrics: {out}");
        Ok(())
    })();
    e.remove("ps1");
    res
}

fn pause_resume(e: &Env, _rs: &RunscBuild) -> Result<()> {
    e.run_d("pause1", &[], &["sleep", "1000"])?;
    let res = (|| {
        e.c.ctr_ok(&["task", "pause", "pause1"])?;
        ensure!(e.task_status("pause1")? == "PAUSED", "not paused");
        e.c.ctr_ok(&["task", "resume", "pause1"])?;
        ensure!(e.task_status("pause1")? == "RUNNING", "not resumed");
        let t = e.topics("pause1");
        let paused = t.iter().position(|x| x == "/tasks/paused");
        let resumed = t.iter().position(|x| x == "/tasks/resumed");
        ensure!(paused.is_some() && paused < resumed, "events: {t:?}");
        Ok(())
    })();
    e.remove("pause1");
    res
}

fn detached_kill_delete(e: &Env, _rs: &RunscBuild) -> Result<()> {
    e.run_d("det1", &[], &["sh", "-c", "echo started; sleep 1000"])?;
    ensure!(e.task_status("det1")? == "RUNNING", "not running");
    e.c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "det1"])?;
    e.wait_status("det1", "STOPPED")?;
    e.c.ctr(&["task", "delete", "det1"])?;
    e.c.ctr_ok(&["containers", "rm", "det1"])?;
    ensure!(e.task_status("det1")?.is_empty(), "task still listed");
    Ok(())
}

/// Issue 12: runsc resolves container ids by prefix, and users pick ids like these. Beside a
/// running `web2`: a task `we` that runs and exits, one that is only created and then
/// killed and removed, and a running `web` that is exec'd into, killed and removed; `web2`
/// runs on throughout and answers an exec at the end.
fn ids_that_prefix_each_other(e: &Env, _rs: &RunscBuild) -> Result<()> {
    e.run_d("web2", &[], &["sleep", "1000"])?;
    let res = (|| {
        e.run("we", &[], &["true"])?.ok()?;
        web2_runs(e, "after we ran")?;
        created_we_killed_and_removed(e)?;
        web2_runs(e, "after the created we was removed")?;
        web_beside_web2(e)?;
        let out =
            e.c.ctr_ok(&["task", "exec", "--exec-id", "x2", "web2", "echo", "in-web2"])?;
        ensure!(out == "in-web2\n", "exec into web2: {out:?}");
        Ok(())
    })();
    e.remove("web2");
    e.remove("web");
    e.remove("we");
    res
}

/// `web2` is still running.
fn web2_runs(e: &Env, when: &str) -> Result<()> {
    let st = e.task_status("web2")?;
    ensure!(st == "RUNNING", "web2 is {st:?} {when}");
    Ok(())
}

/// A task `we` that is created but never started, killed with SIGKILL, then removed.
fn created_we_killed_and_removed(e: &Env) -> Result<()> {
    e.c.ctr_ok(&[
        "container",
        "create",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        &e.runsc_toml,
        IMAGE,
        "we",
        "true",
    ])?;
    // No ctr command (1.6, 1.7 or 2.1) only creates a task: `task start` creates it, writes
    // `--pid-file`, then starts it. With `-d`, a pid file that cannot be written makes ctr
    // stop in between, leaving the task created.
    let pid_file = e.work.join("no-such-dir/we.pid").display().to_string();
    let out =
        e.c.ctr(&["task", "start", "-d", "--pid-file", &pid_file, "we"])?;
    ensure!(out.code != 0, "the pid file must not be writable: {out:?}");
    let st = e.task_status("we")?;
    ensure!(st == "CREATED", "we is {st:?}, expected CREATED");
    web2_runs(e, "beside the created we")?;
    e.c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "we"])?;
    e.wait_status("we", "STOPPED")?;
    // The earlier `we` exited 0: wait for this one's TaskExit.
    runner::eventually("the created we's exit 137", Duration::from_secs(10), || {
        Ok(e.exit_status("we")? == 137)
    })?;
    e.c.ctr_ok(&["task", "rm", "we"])?;
    e.c.ctr_ok(&["containers", "rm", "we"])?;
    Ok(())
}

/// A running `web` beside `web2`: an exec reaches it, SIGKILL ends it (not `web2`) and
/// `task rm -f` finishes (ctr's 30 s deadline).
fn web_beside_web2(e: &Env) -> Result<()> {
    e.run_d("web", &[], &["sleep", "1000"])?;
    let out =
        e.c.ctr_ok(&["task", "exec", "--exec-id", "x1", "web", "echo", "in-web"])?;
    ensure!(out == "in-web\n", "exec into web: {out:?}");
    e.c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "web"])?;
    e.wait_status("web", "STOPPED")?;
    ensure!(e.exit_status("web")? == 137, "web's exit");
    web2_runs(e, "after web was killed")?;
    e.c.ctr_ok(&["task", "rm", "-f", "web"])?;
    e.c.ctr_ok(&["containers", "rm", "web"])?;
    ensure!(e.task_status("web")?.is_empty(), "task web still listed");
    web2_runs(e, "after web was removed")
}

fn env_cwd_readonly_and_bind_mount(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let host = e.work.join("hostdir");
    std::fs::create_dir_all(&host)?;
    std::fs::write(host.join("hello.txt"), "from the host\n")?;
    let mount = format!(
        "type=bind,src={},dst=/mnt/host,options=rbind:ro",
        host.display()
    );
    let out = e.run(
        "envcwd",
        &["--env", "FOO=bar baz", "--cwd", "/tmp", "--read-only", "--mount", &mount],
        &["sh", "-c", "echo \"$FOO\"; pwd; cat /mnt/host/hello.txt; touch /rootfs-write 2>/dev/null && echo WRITABLE || echo READONLY"],
    )?
    .ok()?;
    ensure!(
        out.stdout == "bar baz\n/tmp\nfrom the host\nREADONLY\n",
        "{:?}",
        out.stdout
    );
    Ok(())
}

fn events_in_order(e: &Env, _rs: &RunscBuild) -> Result<()> {
    e.run("ev1", &[], &["true"])?.ok()?;
    e.run_d("ev2", &[], &["sleep", "1000"])?;
    e.c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "evx",
        "ev2",
        "sh",
        "-c",
        "exit 2",
    ])?;
    e.remove("ev2");
    // The subscriber sees the events a moment after the commands return.
    runner::eventually("the events of ev1 and ev2", Duration::from_secs(10), || {
        Ok(e.topics("ev1").len() >= 4 && e.topics("ev2").len() >= 7)
    })?;
    let t = e.topics("ev1");
    ensure!(
        t == [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "ev1 events: {t:?}"
    );
    let t = e.topics("ev2");
    let want = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/exit",
        "/tasks/exit",
        "/tasks/delete",
    ];
    ensure!(t == want, "ev2 events: {t:?}");
    Ok(())
}

fn log_uri_file(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let log = e.work.join("logs/file1.log");
    let uri = format!("file://{}", log.display());
    e.run(
        "file1",
        &["--log-uri", &uri],
        &["sh", "-c", "echo to-file; echo err-to-file >&2"],
    )?
    .ok()?;
    let got = std::fs::read_to_string(&log)?;
    ensure!(
        got.contains("to-file\n") && got.contains("err-to-file\n"),
        "{got:?}"
    );
    Ok(())
}

fn log_uri_binary(e: &Env, _rs: &RunscBuild) -> Result<()> {
    // A logging driver in the containerd protocol: fds 3/4 are the streams, closing fd 5
    // signals readiness.
    let out_file = e.work.join("logs/binary1.out");
    let script = e.work.join("logger.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec 5>&-\necho \"id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE args=$*\" > {o}.meta\ncat <&3 > {o} &\ncat <&4 > {o}.err\nwait\n",
            o = out_file.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    std::fs::create_dir_all(e.work.join("logs"))?;
    let uri = format!("binary://{}?mode=test", script.display());
    e.run(
        "binary1",
        &["--log-uri", &uri],
        &["sh", "-c", "echo via-binary; echo err-binary >&2"],
    )?
    .ok()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = std::fs::read_to_string(&out_file).unwrap_or_default();
        let err = std::fs::read_to_string(out_file.with_extension("out.err")).unwrap_or_default();
        if out == "via-binary\n" && err == "err-binary\n" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "logger got stdout {out:?} stderr {err:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let meta = std::fs::read_to_string(out_file.with_extension("out.meta"))?;
    ensure!(
        meta.trim() == "id=binary1 ns=e2e args=mode test",
        "{meta:?}"
    );
    Ok(())
}

fn missing_program_is_a_clear_error(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let out = e.run("missing1", &[], &["/bin/does-not-exist"])?;
    ensure!(out.code != 0, "must fail");
    ensure!(
        out.stderr.contains("/bin/does-not-exist"),
        "error does not name the program: {}",
        out.stderr
    );
    e.remove("missing1");
    // Through PATH: refused at create (like runc), so no task ever exists.
    let out = e.run("missing2", &[], &["no-such-program", "arg"])?;
    ensure!(
        out.code != 0
            && out.stderr.contains("cannot create task missing2")
            && out
                .stderr
                .contains("\"no-such-program\": executable file not found in $PATH"),
        "{out:?}"
    );
    ensure!(e.task_status("missing2")?.is_empty(), "no task is left");
    e.remove("missing2");
    Ok(())
}

fn update_names_the_runsc_version(e: &Env, _rs: &RunscBuild) -> Result<()> {
    e.run_d("upd1", &[], &["sleep", "1000"])?;
    let out =
        e.c.ctr(&["task", "update", "--memory-limit", "67108864", "upd1"]);
    e.remove("upd1");
    let out = out?;
    // Neither runsc 20221219 nor 20240729 has `update`: the error says so.
    ensure!(
        out.code != 0 && out.stderr.contains("has no `update` command"),
        "{out:?}"
    );
    ensure!(out.stderr.contains("runsc 0.0~20"), "{}", out.stderr);
    Ok(())
}

fn malformed_config_names_the_file(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let bad = e.work.join("bad.toml");
    std::fs::write(&bad, "binary_name = \n")?;
    let b = bad.display().to_string();
    let out = e.c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        &b,
        IMAGE,
        "badcfg",
        "true",
    ])?;
    e.remove("badcfg");
    ensure!(out.code != 0 && out.stderr.contains(&b), "{out:?}");
    Ok(())
}

fn wait_output(mut child: Child, limit: Duration) -> Result<Out> {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut stdout = String::new();
            let mut stderr = String::new();
            if let Some(mut s) = child.stdout.take() {
                s.read_to_string(&mut stdout)?;
            }
            if let Some(mut s) = child.stderr.take() {
                s.read_to_string(&mut stderr)?;
            }
            return Ok(Out {
                code: status.code().unwrap_or(-1),
                stdout,
                stderr,
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() -> ExitCode {
    let mut r = Runner::from_args();
    if !r.needs_root("ctr") {
        return r.finish();
    }
    let base = runner::work_base();
    let _ = std::fs::create_dir_all(&base);
    let image = base.join("busybox.tar");
    if let Err(e) = e2e::image::build(&image, IMAGE, &[], &["/bin/sh"]) {
        r.fail("image", format!("{e:#}"));
        return r.finish();
    }
    let shim = versions::shim_binary();
    r.each_group(versions::matrix("containerd"), |r, p, (cd, rs)| {
        let work = base.join(format!("c{}-r{}", cd.name, rs.name));
        let env = Env::start(&cd, &rs, &shim, &image, &work)?;
        scenarios(r, &env, p, &rs);
        r.run(&format!("{p}/nothing_left_behind"), || env.stop());
        Ok(())
    });
    r.finish()
}

/// A counter whose state is in memory (the shell's variable) and in the sandbox's /tmp.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done";

/// The counter of container `id`, read through `ctr task exec`.
fn read_count(e: &Env, id: &str, exec_id: &str) -> Result<u64> {
    read_count_in(&e.c, id, exec_id)
}

/// [`read_count`] on containerd `c`.
fn read_count_in(c: &Containerd, id: &str, exec_id: &str) -> Result<u64> {
    let out = c.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        exec_id,
        id,
        "cat",
        "/tmp/count",
    ])?;
    out.trim()
        .parse()
        .with_context(|| format!("count of {id}: {out:?}"))
}

/// Waits until the counter of `id` reaches `at_least`; returns it.
fn count_reaches(e: &Env, id: &str, at_least: u64) -> Result<u64> {
    let (mut n, mut count) = (0, 0);
    runner::eventually(
        &format!("{id} to count to {at_least}"),
        Duration::from_secs(20),
        || {
            n += 1;
            count = read_count(e, id, &format!("w{n}")).unwrap_or(0);
            Ok(count >= at_least)
        },
    )
    .with_context(|| format!("{id} counts too slowly: {count}"))?;
    Ok(count)
}

/// `ctr container checkpoint --task` of a counter, the container deleted, `ctr container
/// restore --live`: the restored counter goes on from where it was. runsc 20221219 cannot
/// leave a container running after a checkpoint (what ctr asks for): a clear error.
fn checkpoint_restore_continues(e: &Env, rs: &RunscBuild) -> Result<()> {
    let (id, image) = ("ckpt1", "checkpoint/ckpt1");
    e.run_d(id, &[], &["sh", "-c", COUNTER])?;
    let before = count_reaches(e, id, 10)?;
    let out = e.c.ctr(&["containers", "checkpoint", "--task", id, image]);
    if rs.name == "2022" {
        e.remove(id);
        let _ = e.c.ctr(&["images", "rm", image]);
        let out = out?;
        ensure!(
            out.code != 0
                && out.stderr.contains("runsc 0.0~20221219")
                && out.stderr.contains("leave it running"),
            "{out:?}"
        );
        return Ok(());
    }
    let out = out?;
    ensure!(out.code == 0, "checkpoint: {out:?}");
    e.wait_status(id, "RUNNING")?;
    e.remove(id);
    let restored = e.c.ctr(&["containers", "restore", "--live", id, image]);
    let check = (|| {
        let out = restored?;
        ensure!(out.code == 0, "restore: {out:?}");
        e.wait_status(id, "RUNNING")?;
        let after = read_count(e, id, "r1")?;
        // From the checkpoint on, not from 1 (the original ran on a little after it).
        ensure!(
            after >= before && after < before + 60,
            "counted {before} before the checkpoint, {after} after the restore"
        );
        let later = count_reaches(e, id, after + 3)?;
        ensure!(later > after, "the restored counter stopped at {after}");
        // Restoring into an id in use: refused (by containerd), the running one untouched.
        let again = e.c.ctr(&["containers", "restore", "--live", id, image])?;
        ensure!(
            again.code != 0 && again.stderr.contains("already exists"),
            "second restore into {id}: {again:?}"
        );
        count_reaches(e, id, later + 2)?;
        Ok(())
    })();
    e.remove(id);
    let _ = e.c.ctr(&["images", "rm", image]);
    check
}

/// `ctr task checkpoint` (leave-running: ctr sends no options to a non-runc runtime) keeps
/// the original running and counting.
/// (Skipped with runsc 20221219, which cannot leave a container running after a checkpoint.)
fn checkpoint_leave_running(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let id = "ckpt2";
    e.run_d(id, &[], &["sh", "-c", COUNTER])?;
    let check = (|| {
        let before = count_reaches(e, id, 5)?;
        let out = e.c.ctr(&["task", "checkpoint", id])?;
        ensure!(out.code == 0, "checkpoint: {out:?}");
        let name = out.stdout.trim().to_owned();
        if !name.is_empty() {
            let _ = e.c.ctr(&["images", "rm", &name]);
        }
        e.wait_status(id, "RUNNING")?;
        count_reaches(e, id, before + 5)?;
        Ok(())
    })();
    e.remove(id);
    check
}

/// The stand-in for moving a sandbox to another node: a counter checkpointed into an image
/// on this containerd, exported, the original removed; a second containerd (its own root,
/// state and network namespace) imports the image and restores it, and the counter goes on
/// from where it was. (Skipped with runsc 20221219: ctr's checkpoint leaves the task running.)
fn checkpoint_moves_to_another_containerd(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let (id, image) = ("ckpt4", "checkpoint/ckpt4");
    let tar = e.work.join("ckpt4.tar");
    let tar_s = tar.display().to_string();
    e.run_d(id, &[], &["sh", "-c", COUNTER])?;
    let exported = (|| -> Result<u64> {
        let before = count_reaches(e, id, 10)?;
        e.c.ctr_ok(&["containers", "checkpoint", "--task", id, image])?;
        e.c.export_checkpoint(image, &tar)?;
        Ok(before)
    })();
    e.remove(id);
    let _ = e.c.ctr(&["images", "rm", image]);
    let before = exported?;
    let netns = format!("rsc-move-{}", std::process::id());
    pods::fresh_netns(&netns)?;
    let cfg = Config {
        netns: Some(netns.clone()),
        ..Config::default()
    };
    let moved = Containerd::start(
        &e.c.build,
        &e.work.join("moved"),
        &versions::shim_binary(),
        &cfg,
    );
    let check = moved
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|c2| {
            c2.import(&e.image)?;
            // A checkpoint is no image to unpack (containerd 1.6 tries, and fails on its media
            // types).
            c2.ctr_ok(&["images", "import", "--no-unpack", &tar_s])?;
            c2.ctr_ok(&["containers", "restore", "--live", id, image])?;
            let count = |n: u32| read_count_in(c2, id, &format!("m{n}"));
            let after = count(0)?;
            ensure!(
                after >= before && after < before + 60,
                "counted {before} before the checkpoint, {after} after the move"
            );
            let mut n = 0;
            runner::eventually(
                "the moved counter to go on",
                Duration::from_secs(20),
                || {
                    n += 1;
                    Ok(count(n).unwrap_or(0) > after)
                },
            )
        });
    let mut left = Ok(());
    if let Ok(mut c2) = moved {
        c2.stop();
        let address = c2.address();
        left = runner::eventually(
            "the second containerd's shims to exit",
            Duration::from_secs(10),
            || Ok(leftovers::shims(&address).is_empty()),
        );
        leftovers::kill_all(&leftovers::shims(&address));
    }
    pods::delete_netns(&netns);
    let _ = std::fs::remove_file(&tar);
    check.and(left)
}

/// `[runsc_checkpoint]` in runsc.toml reaches `runsc checkpoint`: `compression = "none"`
/// checkpoints and restores; a value runsc does not know fails the checkpoint with runsc's
/// own message, and the task runs on. (Skipped with runsc 20221219, as above.)
fn checkpoint_flags_from_runsc_toml(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let base = std::fs::read_to_string(&e.runsc_toml)?;
    let toml = |name: &str, value: &str| -> Result<String> {
        let path = e.work.join(format!("runsc-{name}.toml"));
        std::fs::write(
            &path,
            format!("{base}[runsc_checkpoint]\n  compression = \"{value}\"\n"),
        )?;
        Ok(path.display().to_string())
    };
    let (id, image) = ("ckpt5", "checkpoint/ckpt5");
    e.counter_with(&toml("none", "none")?, id)?;
    let plain = (|| -> Result<()> {
        let before = count_reaches(e, id, 5)?;
        e.c.ctr_ok(&["containers", "checkpoint", "--task", id, image])?;
        e.remove(id);
        e.c.ctr_ok(&["containers", "restore", "--live", id, image])?;
        let after = read_count(e, id, "r1")?;
        ensure!(
            after >= before,
            "counted {before}, then {after} after the restore"
        );
        Ok(())
    })();
    e.remove(id);
    let _ = e.c.ctr(&["images", "rm", image]);
    plain?;
    let id = "ckpt6";
    e.counter_with(&toml("bogus", "bogus-codec")?, id)?;
    let refused = (|| -> Result<()> {
        count_reaches(e, id, 2)?;
        let out = e.c.ctr(&["task", "checkpoint", id])?;
        ensure!(
            out.code != 0 && out.stderr.contains("bogus-codec"),
            "checkpoint with compression \"bogus-codec\": {out:?}"
        );
        e.wait_status(id, "RUNNING")?;
        Ok(())
    })();
    e.remove(id);
    refused
}

/// A checkpoint made by runsc 20240729 restored by runsc 20221219 (the runtime options travel
/// with the checkpoint; here the runsc.toml they name is changed in between, as on a node with
/// another runsc): the restore fails with runsc's error, and no sandbox or runsc process is
/// left. (Skipped with runsc 20221219, which makes no checkpoint through ctr.)
fn restore_by_another_runsc_build_fails_clearly(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let (id, image) = ("ckpt7", "checkpoint/ckpt7");
    let base = std::fs::read_to_string(&e.runsc_toml)?;
    let toml = e.work.join("runsc-other.toml");
    std::fs::write(&toml, &base)?;
    e.counter_with(&toml.display().to_string(), id)?;
    let made = (|| -> Result<()> {
        count_reaches(e, id, 3)?;
        e.c.ctr_ok(&["containers", "checkpoint", "--task", id, image])?;
        Ok(())
    })();
    e.remove(id);
    made?;
    let (old, current) = (versions::runsc("2022")?, versions::runsc("2024")?);
    std::fs::write(
        &toml,
        base.replace(
            &current.runsc.display().to_string(),
            &old.runsc.display().to_string(),
        ),
    )?;
    let out = e.c.ctr(&["containers", "restore", "--live", id, image]);
    let left = leftovers::runsc_processes(&e.runsc_root.join("e2e").join(id));
    e.remove(id);
    let _ = e.c.ctr(&["images", "rm", image]);
    let out = out?;
    ensure!(out.code != 0, "the restore succeeded: {out:?}");
    // ctr's own error line (runsc's output before it went to the container's stderr, which
    // ctr prints too, Go stack trace included).
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("ctr: "))
        .unwrap_or_default();
    ensure!(
        error.contains("restore task ckpt7")
            && error.contains("made by another runsc build")
            && error.contains("error decoding object")
            && !error.contains("goroutine"),
        "no clear error: {out:?}"
    );
    ensure!(left.is_empty(), "runsc processes left: {left:?}");
    Ok(())
}

/// Checkpoint of a stopped task: a clear error, and the task is left as it was.
fn checkpoint_stopped_is_refused(e: &Env, _rs: &RunscBuild) -> Result<()> {
    let id = "ckpt3";
    e.run_d(id, &[], &["true"])?;
    e.wait_status(id, "STOPPED")?;
    let out = e.c.ctr(&["task", "checkpoint", id]);
    e.remove(id);
    let out = out?;
    // The client pauses the task before the checkpoint: the pause is what is refused.
    ensure!(
        out.code != 0 && out.stderr.contains(id) && out.stderr.to_lowercase().contains("stopped"),
        "{out:?}"
    );
    Ok(())
}
