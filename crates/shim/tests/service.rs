//! The task service end to end against a scripted fake runsc: lifecycle, event order, and the
//! fault paths a real runsc cannot be made to take (failures at each step, hangs, garbage),
//! each with nothing left behind.
//!
//! The fake keeps a "sandbox" per container: a background process that the test process (a
//! child subreaper, like the shim) reaps, which exits when killed or with the code written
//! to `<root>/<id>.exit` once started.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers")]

#[path = "support/executable.rs"]
mod executable;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use runsc_shim::Error;
use runsc_shim::events::{Event, EventSink};
use runsc_shim::io::StdioConfig;
use runsc_shim::process::Status;
use runsc_shim::reaper::{Reaper, ReaperSpawner};
use runsc_shim::service::{CheckpointRequest, CreateRequest, ExecRequest, Options, Service};

/// The scripted fake runsc (shared with the binary's tests).
const FAKE: &str = include_str!("support/fake-runsc.sh");
/// The events of a task that is created, started, exits and is deleted, in order.
const LIFECYCLE: [&str; 4] = [
    "/tasks/create",
    "/tasks/start",
    "/tasks/exit",
    "/tasks/delete",
];

/// One reaper for the whole test process, on its own runtime thread (the per-test runtimes
/// come and go).
fn reaper() -> Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    tx.send(Reaper::start_subreaper().unwrap()).unwrap();
                    std::future::pending::<()>().await;
                });
            });
            rx.recv().unwrap()
        })
        .clone()
}

#[derive(Debug, Default)]
struct Events(Mutex<Vec<Event>>);

impl EventSink for Events {
    fn publish(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

impl Events {
    fn topics(&self, id: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| match e {
                Event::Create { container_id, .. }
                | Event::Start { container_id, .. }
                | Event::Exit { container_id, .. }
                | Event::Delete { container_id, .. }
                | Event::ExecAdded { container_id, .. }
                | Event::ExecStarted { container_id, .. }
                | Event::Paused { container_id }
                | Event::Resumed { container_id }
                | Event::Oom { container_id } => container_id == id,
            })
            .map(|e| e.topic().to_owned())
            .collect()
    }

    fn exit_of(&self, id: &str) -> Option<u32> {
        self.0.lock().unwrap().iter().rev().find_map(|e| match e {
            Event::Exit {
                id: pid,
                exit_status,
                ..
            } if pid == id => Some(*exit_status),
            _ => None,
        })
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    svc: Service,
    events: Arc<Events>,
}

/// A test that ends early (or leaves a container on purpose) must not leave the fake's
/// "sandbox" and exec processes running on the host.
impl Drop for Fixture {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.runsc_root()) else {
            return;
        };
        let dir = self.dir.path().as_os_str().as_encoded_bytes().to_vec();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.ends_with(".pid") || name.ends_with(".execs")) {
                continue;
            }
            let pids = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // Only the fake's own processes (its `sleep`s, its waiting subshell, which runs
                // the fake's script), not a process that reused the pid since.
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let ours = cmdline.starts_with(b"sleep\0")
                    || cmdline.windows(dir.len()).any(|w| w == dir.as_slice());
                if pid > 1 && ours {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

impl Fixture {
    fn new() -> Fixture {
        Self::with_timeout(Duration::from_secs(20))
    }

    /// Makes the fake runsc print the version of Debian 12's runsc.
    fn runsc_version_20221219(&self) {
        std::fs::write(
            self.dir.path().join("version"),
            "runsc version 0.0~20221219.0\nspec: 1.0.2-dev\n",
        )
        .unwrap();
    }

    fn with_timeout(timeout: Duration) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("runsc");
        executable::write_executable(&fake, FAKE);
        std::fs::write(
            dir.path().join("runsc.toml"),
            format!(
                "binary_name = \"{}\"\nroot = \"{}\"\n",
                fake.display(),
                dir.path().join("root").display()
            ),
        )
        .unwrap();
        let events = Arc::new(Events::default());
        let r = reaper();
        let svc = Service::with_options(
            "ns",
            r.clone(),
            Arc::new(ReaperSpawner(r)),
            events.clone(),
            Options {
                runsc_timeout: timeout,
                memory_check_interval: Duration::from_millis(20),
                // runsc's figure asked at every check past the gate.
                memory_figure_refresh: Duration::ZERO,
                ..Options::default()
            },
        );
        Fixture { dir, svc, events }
    }

    fn runsc_root(&self) -> PathBuf {
        self.dir.path().join("root/ns")
    }

    /// A bundle with a config.json and a rootfs holding only the program, `/bin/sh`.
    fn bundle(&self, id: &str, terminal: bool) -> PathBuf {
        let b = self.dir.path().join("bundles").join(id);
        std::fs::create_dir_all(b.join("rootfs/bin")).unwrap();
        std::fs::write(b.join("rootfs/bin/sh"), b"").unwrap();
        std::fs::set_permissions(b.join("rootfs/bin/sh"), PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(
            b.join("config.json"),
            format!(
                r#"{{"ociVersion":"1.0.2","process":{{"terminal":{terminal},"user":{{"uid":0,"gid":0}},"args":["sh"],"cwd":"/"}},"root":{{"path":"rootfs"}}}}"#
            ),
        )
        .unwrap();
        b
    }

    fn request(&self, id: &str) -> CreateRequest {
        let options = runsc_shim::config::RuntimeOptions {
            config_path: self.dir.path().join("runsc.toml").display().to_string(),
            ..Default::default()
        };
        CreateRequest {
            id: id.to_owned(),
            bundle: self.bundle(id, false),
            rootfs: Vec::new(),
            stdio: StdioConfig::default(),
            options: Some(options),
            checkpoint: None,
        }
    }

    /// A request for a container of CRI pod `pod` (`kind`: "sandbox" or "container").
    fn pod_request(&self, id: &str, kind: &str) -> CreateRequest {
        let req = self.request(id);
        let config = req.bundle.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        spec["annotations"] = serde_json::json!({
            "io.kubernetes.cri.container-type": kind,
            "io.kubernetes.cri.sandbox-id": "pod",
        });
        std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
        req
    }

    /// Like [`Fixture::pod_request`], for a container with its own memory limit.
    fn limited_pod_request(&self, id: &str, limit: u64) -> CreateRequest {
        let req = self.pod_request(id, "container");
        let config = req.bundle.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        spec["linux"] = serde_json::json!({"resources": {"memory": {"limit": limit}}});
        std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
        req
    }

    /// Checkpoint of task `id` into `<dir>/<name>`, leaving it running.
    async fn checkpoint(&self, id: &str, name: &str) -> runsc_shim::error::Result<()> {
        let req = CheckpointRequest {
            path: self.dir.path().join(name),
            ..Default::default()
        };
        self.svc.checkpoint(id, req).await
    }

    /// How many times the fake ran `runsc <sub> <id>`.
    fn count_calls(&self, sub: &str, id: &str) -> usize {
        let call = format!("{sub} {id}");
        self.calls().iter().filter(|c| **c == call).count()
    }

    /// The exit of process `exec_id` of task `id` (10 s at most: a bound for liveness).
    async fn exited(&self, id: &str, exec_id: &str) -> runsc_shim::process::Exit {
        tokio::time::timeout(Duration::from_secs(10), self.svc.wait(id, exec_id))
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits (10 s at most) for task `id` to end as the shim ends a container over its memory
    /// limit: exit 137, with TaskOOM before TaskExit.
    async fn oom_killed(&self, id: &str) {
        let exit = self.exited(id, "").await;
        assert_eq!(exit.status, 137);
        assert_eq!(
            self.events.topics(id),
            ["/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit"]
        );
    }

    /// Ends task `id`: SIGKILL, its exit, Delete.
    async fn end(&self, id: &str) {
        self.svc.kill(id, "", 9, false).await.unwrap();
        self.svc.wait(id, "").await.unwrap();
        self.svc.delete(id, "").await.unwrap();
    }

    fn touch(&self, name: &str, content: &str) {
        std::fs::create_dir_all(self.runsc_root()).unwrap();
        std::fs::write(self.runsc_root().join(name), content).unwrap();
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.runsc_root().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn sandbox_alive(pid: u32) -> bool {
    // A zombie does not count: the reaper collects it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
        .unwrap_or(false)
}

#[tokio::test]
async fn lifecycle_exit_code_and_event_order() {
    let f = Fixture::new();
    let pid = f.svc.create(f.request("c1")).await.unwrap();
    assert!(pid > 0);
    assert_eq!(f.svc.state("c1", "").unwrap().status, Status::Created);
    f.touch("c1.exit", "7");
    assert_eq!(f.svc.start("c1", "").await.unwrap(), pid);
    let exit = f.exited("c1", "").await;
    assert_eq!(exit.status, 7);
    let st = f.svc.state("c1", "").unwrap();
    assert_eq!(
        (st.status, st.exit.map(|e| e.status)),
        (Status::Stopped, Some(7))
    );
    let d = f.svc.delete("c1", "").await.unwrap();
    assert_eq!(d.exit_status, 7);
    assert_eq!(f.events.topics("c1"), LIFECYCLE);
    assert!(matches!(f.svc.state("c1", ""), Err(Error::NotFound(_))));
    assert!(!f.dir.path().join("bundles/c1/state.json").exists() || f.svc.task_count() == 0);
    assert!(f.svc.shutdown(), "no tasks left: shutdown is accepted");
}

#[tokio::test]
async fn kill_running_reports_128_plus_signal_and_not_found_after() {
    let f = Fixture::new();
    let pid = f.svc.create(f.request("k1")).await.unwrap();
    f.svc.start("k1", "").await.unwrap();
    f.svc.kill("k1", "", 15, false).await.unwrap();
    let exit = f.exited("k1", "").await;
    assert_eq!(exit.status, 143);
    assert!(!sandbox_alive(pid));
    let err = f.svc.kill("k1", "", 9, false).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert!(matches!(
        f.svc.kill("k1", "", 0, false).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        f.svc.kill("k1", "", 65, false).await,
        Err(Error::InvalidArgument(_))
    ));
    f.svc.delete("k1", "").await.unwrap();
}

/// runsc refuses to signal a created container; the shim removes it and reports the kill.
#[tokio::test]
async fn kill_before_start_ends_the_task() {
    let f = Fixture::new();
    let pid = f.svc.create(f.request("kc")).await.unwrap();
    f.svc.kill("kc", "", 9, false).await.unwrap();
    let exit = f.exited("kc", "").await;
    assert_eq!(exit.status, 137);
    assert_eq!(f.events.exit_of("kc"), Some(137));
    assert!(!sandbox_alive(pid));
    assert!(
        f.calls().contains(&"delete kc".to_owned()),
        "{:?}",
        f.calls()
    );
    f.svc.delete("kc", "").await.unwrap();
    assert_eq!(
        f.events.topics("kc"),
        ["/tasks/create", "/tasks/exit", "/tasks/delete"]
    );
}

#[tokio::test]
async fn delete_of_running_task_is_refused() {
    let f = Fixture::new();
    f.svc.create(f.request("d1")).await.unwrap();
    f.svc.start("d1", "").await.unwrap();
    assert!(matches!(
        f.svc.delete("d1", "").await,
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        f.svc.start("d1", "").await,
        Err(Error::FailedPrecondition(_))
    ));
    f.svc.kill("d1", "", 9, false).await.unwrap();
    f.svc.wait("d1", "").await.unwrap();
    f.svc.delete("d1", "").await.unwrap();
}

#[tokio::test]
async fn exec_lifecycle_and_pids() {
    let f = Fixture::new();
    f.svc.create(f.request("e1")).await.unwrap();
    f.svc.start("e1", "").await.unwrap();
    exec_refusals_then_exit(&f).await;
    exec_pids_and_stats(&f).await;
    f.svc.kill("e1", "", 9, true).await.unwrap();
    f.svc.wait("e1", "").await.unwrap();
    f.svc.delete("e1", "").await.unwrap();
    assert_exec_events(&f);
}

/// Exec `x1` of task `e1`: bad requests are refused, then it runs and exits with 5.
async fn exec_refusals_then_exit(f: &Fixture) {
    let req = |exec_id: &str, args: &str| exec_req("e1", exec_id, args, false);
    f.svc.exec(req("x1", r#""exit5""#)).await.unwrap();
    let err = f.svc.exec(req("x1", r#""sh""#)).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    assert!(matches!(
        f.svc.exec(req("../x", r#""sh""#)).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        f.svc.exec(req("x9", "")).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        f.svc.kill("e1", "x1", 9, false).await,
        Err(Error::FailedPrecondition(_))
    ));
    let pid = f.svc.start("e1", "x1").await.unwrap();
    assert!(pid > 0);
    let exit = f.exited("e1", "x1").await;
    assert_eq!(exit.status, 5);
    let d = f.svc.delete("e1", "x1").await.unwrap();
    assert_eq!(d.exit_status, 5);
}

/// A running exec `x2` of task `e1` is listed in Pids, counted in Stats, and cannot be deleted.
async fn exec_pids_and_stats(f: &Fixture) {
    f.svc
        .exec(exec_req("e1", "x2", r#""sleep""#, false))
        .await
        .unwrap();
    f.svc.start("e1", "x2").await.unwrap();
    let pids = f.svc.pids("e1").await.unwrap();
    // The fake lists pid 1 and every exec it ever started (x1's is gone from the shim).
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert_eq!(pids[0].exec_id, None, "pid 1 is the container's own");
    let tagged: Vec<_> = pids.iter().filter_map(|p| p.exec_id.as_deref()).collect();
    assert_eq!(tagged, ["x2"], "{pids:?}");
    assert!(matches!(
        f.svc.delete("e1", "x2").await,
        Err(Error::FailedPrecondition(_))
    ));
    let stats = f.svc.stats("e1").await.unwrap();
    assert_eq!(stats.pids.current, 2);
}

/// The events of task `e1` with its two execs, in order.
fn assert_exec_events(f: &Fixture) {
    let t = f.events.topics("e1");
    assert_eq!(
        t,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    // SIGKILL ended x2 with the sandbox: its exit comes before the init process's, which is
    // the last exit containerd sees of a task.
    let exits: Vec<String> = f
        .events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Exit { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(exits, ["x1", "x2", "e1"]);
    assert_eq!(f.events.exit_of("x2"), Some(137));
}

#[tokio::test]
async fn pause_resume_update_and_unknown_update() {
    let f = Fixture::new();
    f.svc.create(f.request("p1")).await.unwrap();
    // Nothing ran yet: empty statistics, without asking runsc (20221219 crashes on it).
    let before = f.calls().len();
    assert_eq!(f.svc.stats("p1").await.unwrap(), runsc::Stats::default());
    assert_eq!(f.calls().len(), before, "no runsc call for a created task");
    f.svc.start("p1", "").await.unwrap();
    f.svc.pause("p1").await.unwrap();
    assert_eq!(f.svc.state("p1", "").unwrap().status, Status::Paused);
    assert!(matches!(
        f.svc.pause("p1").await,
        Err(Error::FailedPrecondition(_))
    ));
    f.svc.resume("p1").await.unwrap();
    assert_eq!(f.svc.state("p1", "").unwrap().status, Status::Running);
    f.svc
        .update("p1", br#"{"memory":{"limit":1048576}}"#)
        .await
        .unwrap();
    assert!(matches!(
        f.svc.update("p1", b"{bad").await,
        Err(Error::InvalidArgument(_))
    ));
    f.touch(
        "fail-update",
        "Usage: runsc <flags> <subcommand> <subcommand args>",
    );
    let err = f
        .svc
        .update("p1", br#"{"memory":{"limit":1048576}}"#)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unimplemented(_)), "{err:?}");
    assert!(err.to_string().contains("has no `update` command"), "{err}");
    f.svc.kill("p1", "", 9, false).await.unwrap();
    f.svc.wait("p1", "").await.unwrap();
    f.svc.delete("p1", "").await.unwrap();
    let t = f.events.topics("p1");
    assert_eq!(&t[2..4], ["/tasks/paused", "/tasks/resumed"]);
}

/// A failing `runsc create`: runsc's message reaches the caller and everything is undone.
#[tokio::test]
async fn create_failure_is_reported_and_rolled_back() {
    let f = Fixture::new();
    // Early: runsc made nothing, so there is nothing to delete (and no id to guess at).
    f.touch("fail-create", "creating container: cannot stat rootfs");
    let req = f.request("f1");
    let bundle = req.bundle.clone();
    let err = f.svc.create(req).await.unwrap_err();
    assert!(
        err.chain().contains("cannot stat rootfs"),
        "{}",
        err.chain()
    );
    assert_eq!(f.calls(), ["create f1"]);
    assert!(!bundle.join("state.json").exists());
    assert!(!f.runsc_root().join("f1").exists(), "sandbox root removed");
    std::fs::remove_file(f.runsc_root().join("fail-create")).unwrap();
    // Late: runsc made the container, then failed; rollback deletes it.
    f.touch("fail-after-create", "starting sandbox: boom");
    let req = f.request("f1");
    let err = f.svc.create(req).await.unwrap_err();
    assert!(err.chain().contains("boom"), "{}", err.chain());
    assert!(
        f.calls().contains(&"delete f1".to_owned()),
        "rollback deletes: {:?}",
        f.calls()
    );
    assert!(!bundle.join("state.json").exists());
    assert!(!f.runsc_root().join("f1").exists(), "sandbox root removed");
    assert_eq!(f.svc.task_count(), 0);
    assert!(f.events.topics("f1").is_empty());
    // The id is free again.
    std::fs::remove_file(f.runsc_root().join("fail-after-create")).unwrap();
    f.svc.create(f.request("f1")).await.unwrap();
    f.svc.delete("f1", "").await.unwrap();
    assert!(!f.runsc_root().join("f1").exists(), "sandbox root removed");
}

#[tokio::test]
async fn start_failure_is_reported() {
    let f = Fixture::new();
    f.svc.create(f.request("s1")).await.unwrap();
    f.touch(
        "fail-start",
        "starting container: failed to load /bin/nope: no such file or directory",
    );
    let err = f.svc.start("s1", "").await.unwrap_err();
    assert!(
        err.chain().contains("failed to load /bin/nope"),
        "{}",
        err.chain()
    );
    assert_eq!(f.svc.state("s1", "").unwrap().status, Status::Created);
    f.svc.delete("s1", "").await.unwrap();
}

/// A runsc that hangs is killed at the deadline: the call fails instead of hanging.
#[tokio::test]
async fn hung_runsc_times_out() {
    let f = Fixture::with_timeout(Duration::from_secs(1));
    f.svc.create(f.request("h1")).await.unwrap();
    f.svc.start("h1", "").await.unwrap();
    f.touch("hang-pause", "");
    let started = std::time::Instant::now();
    let err = f.svc.pause("h1").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(
            err,
            Error::Runsc {
                source: runsc::Error::Timeout { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        f.svc.state("h1", "").unwrap().status,
        Status::Running,
        "state unchanged"
    );
    f.touch("hang-create", "");
    let err = f.svc.create(f.request("h2")).await.unwrap_err();
    assert!(err.chain().contains("did not finish"), "{}", err.chain());
    assert_eq!(f.svc.task_count(), 1);
    std::fs::remove_file(f.runsc_root().join("hang-create")).unwrap();
    f.svc.kill("h1", "", 9, false).await.unwrap();
    f.svc.wait("h1", "").await.unwrap();
    f.svc.delete("h1", "").await.unwrap();
}

#[tokio::test]
async fn garbage_output_is_an_error() {
    let f = Fixture::new();
    f.svc.create(f.request("g1")).await.unwrap();
    f.svc.start("g1", "").await.unwrap();
    f.touch("garbage-events", "");
    let err = f.svc.stats("g1").await.unwrap_err();
    assert!(err.chain().contains("unexpected output"), "{}", err.chain());
    f.svc.kill("g1", "", 9, false).await.unwrap();
    f.svc.wait("g1", "").await.unwrap();
    f.svc.delete("g1", "").await.unwrap();
}

#[tokio::test]
async fn bad_requests_name_the_problem() {
    let f = Fixture::new();
    bad_ids_and_namespace(&f).await;
    bad_cgroups_path_and_shim_owned_flag(&f).await;
    bad_bundles(&f).await;
    bad_configs(&f).await;
    // Terminal mismatch between the request and the spec.
    let mut req = f.request("tty");
    req.stdio.terminal = true;
    let err = f.svc.create(req).await.unwrap_err().to_string();
    assert!(err.contains("terminal"), "{err}");
    // Duplicate id.
    f.svc.create(f.request("dup")).await.unwrap();
    assert!(matches!(
        f.svc.create(f.request("dup")).await,
        Err(Error::AlreadyExists(_))
    ));
    f.svc.delete("dup", "").await.unwrap();
    assert_eq!(f.svc.task_count(), 0);
    // Unknown task.
    assert!(matches!(
        f.svc.start("nope", "").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(f.svc.state("dup", "x"), Err(Error::NotFound(_))));
}

/// `path` with `.` and `..` resolved without the file system (as `Path::join` then a
/// directory walk would reach it).
fn lexical(path: &std::path::Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// A request for `id` with runsc options from `toml` (written to `<tmp>/<name>`).
fn request_with_config(f: &Fixture, id: &str, name: &str, toml: &str) -> (CreateRequest, PathBuf) {
    let path = f.dir.path().join(name);
    std::fs::write(&path, toml).unwrap();
    let mut req = f.request(id);
    req.options = Some(runsc_shim::config::RuntimeOptions {
        config_path: path.display().to_string(),
        ..Default::default()
    });
    (req, path)
}

/// Task ids that are no ids, and a namespace that is none: refused before any path is made.
async fn bad_ids_and_namespace(f: &Fixture) {
    for id in ["", "a/b", "..", &"x".repeat(1000), "a\0b"] {
        let mut req = f.request("ok");
        req.id = id.to_owned();
        let err = f.svc.create(req).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{id:?}: {err:?}");
    }
    // A root two levels down in the test's directory, so that `<root>/../../etc`, where the
    // namespace would lead, is in it too.
    let root = f.dir.path().join("a/b/root");
    let escaped = lexical(&root.join("../../etc"));
    assert!(escaped.starts_with(f.dir.path()), "{}", escaped.display());
    // Should the namespace get through, the fake runsc (whose control files are in the
    // directory above its --root) fails the create at once rather than leave a "sandbox".
    std::fs::create_dir_all(&escaped).unwrap();
    std::fs::write(escaped.join("fail-create"), "unexpected create").unwrap();
    let made = escaped.join("nsok");
    let (req, _) = request_with_config(
        f,
        "nsok",
        "deep-root.toml",
        &format!(
            "binary_name = \"{}\"\nroot = \"{}\"\n",
            f.dir.path().join("runsc").display(),
            root.display()
        ),
    );
    let bad_ns = Service::new(
        "../../etc",
        reaper(),
        Arc::new(ReaperSpawner(reaper())),
        f.events.clone(),
    );
    let err = bad_ns.create(req).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("invalid namespace"), "{err}");
    assert!(!made.exists(), "{} was made", made.display());
    assert!(!root.exists(), "{} was made", root.display());
}

/// A systemd cgroups path that is no systemd path, and a runsc flag the shim owns.
async fn bad_cgroups_path_and_shim_owned_flag(f: &Fixture) {
    let req = f.request("badcg");
    let config = req.bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["linux"] = serde_json::json!({"cgroupsPath": "kubepods.slice:cri-containerd:../x"});
    std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    let err = f.svc.create(req).await.unwrap_err().to_string();
    assert!(
        err.contains("invalid systemd cgroupsPath") && err.contains("../x"),
        "{err}"
    );
    assert!(!f.runsc_root().join("badcg").exists(), "no runsc root made");
    // `[runsc_config] root` would take the sandboxes' state away from the shim.
    let elsewhere = f.dir.path().join("elsewhere");
    let (req, _) = request_with_config(
        f,
        "owned",
        "owned.toml",
        &format!(
            "binary_name = \"{}\"\nroot = \"{}\"\n[runsc_config]\nroot = \"{}\"\n",
            f.dir.path().join("runsc").display(),
            f.dir.path().join("root").display(),
            elsewhere.display()
        ),
    );
    let err = f.svc.create(req).await.unwrap_err().to_string();
    assert!(
        err.contains("runsc_config.root") && err.contains("cannot be set"),
        "{err}"
    );
    assert!(!elsewhere.exists());
    assert!(!f.runsc_root().join("owned").exists(), "no runsc root made");
}

/// Bundles without a config.json, with a malformed one, without a rootfs or the program.
async fn bad_bundles(f: &Fixture) {
    let mut req = f.request("nocfg");
    std::fs::remove_file(req.bundle.join("config.json")).unwrap();
    let err = f.svc.create(req.clone()).await.unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::write(req.bundle.join("config.json"), "{").unwrap();
    let err = f.svc.create(req.clone()).await.unwrap_err().to_string();
    assert!(err.starts_with("invalid OCI spec"), "{err}");
    req = f.request("noroot");
    std::fs::remove_dir_all(req.bundle.join("rootfs")).unwrap();
    let err = f.svc.create(req.clone()).await.unwrap_err().to_string();
    assert!(
        err.contains("rootfs") && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        !req.bundle.join("state.json").exists(),
        "nothing left behind"
    );
    // A program the rootfs does not have: refused at create, like runc, before runsc runs.
    let before = f.calls().len();
    let req = f.request("noprog");
    std::fs::remove_file(req.bundle.join("rootfs/bin/sh")).unwrap();
    let err = f.svc.create(req.clone()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = err.to_string();
    assert!(
        err.contains("noprog") && err.contains("\"sh\"") && err.contains("not found in $PATH"),
        "{err}"
    );
    assert_eq!(f.calls().len(), before, "runsc is not started for it");
    assert!(
        !req.bundle.join("state.json").exists(),
        "nothing left behind"
    );
}

/// Malformed TOML (malformed options are the binary's to decode:
/// crates/containerd-shim-runsc-v1/src/options.rs) and a binary_name that does not exist.
async fn bad_configs(f: &Fixture) {
    let (req, bad_toml) = request_with_config(f, "badtoml", "bad.toml", "root = 5\n");
    let err = f.svc.create(req).await.unwrap_err().to_string();
    assert!(
        err.contains(&bad_toml.display().to_string()) && err.contains("`root` must be a string"),
        "{err}"
    );
    let (req, _) = request_with_config(
        f,
        "nobin",
        "missing.toml",
        "binary_name = \"/nonexistent/runsc\"\n",
    );
    let err = f.svc.create(req).await.unwrap_err().to_string();
    assert!(err.contains("/nonexistent/runsc"), "{err}");
}

/// An unwritable runsc root is named in the error.
#[tokio::test]
async fn unusable_root_is_named() {
    let f = Fixture::new();
    let file_root = f.dir.path().join("a-file");
    std::fs::write(&file_root, "").unwrap();
    let cfg = f.dir.path().join("root.toml");
    std::fs::write(
        &cfg,
        format!(
            "binary_name = \"{}\"\nroot = \"{}\"\n",
            f.dir.path().join("runsc").display(),
            file_root.display()
        ),
    )
    .unwrap();
    let mut req = f.request("r1");
    let opts = runsc_shim::config::RuntimeOptions {
        config_path: cfg.display().to_string(),
        ..Default::default()
    };
    req.options = Some(opts);
    let err = f.svc.create(req).await.unwrap_err().to_string();
    assert!(
        err.contains("runsc root") && err.contains("not usable"),
        "{err}"
    );
}

/// Handler futures stay small: they live in every in-flight request (and on the stack of
/// whoever awaits them).
#[tokio::test]
async fn request_futures_stay_small() {
    let f = Fixture::new();
    let create = f.svc.create(f.request("sz"));
    assert!(
        size_of_val(&create) < 16 * 1024,
        "create: {} bytes",
        size_of_val(&create)
    );
    drop(create);
    let start = f.svc.start("sz", "");
    assert!(
        size_of_val(&start) < 16 * 1024,
        "start: {} bytes",
        size_of_val(&start)
    );
}

fn exec_req(id: &str, exec_id: &str, args: &str, terminal: bool) -> ExecRequest {
    ExecRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        stdio: StdioConfig {
            terminal,
            ..Default::default()
        },
        spec: format!(r#"{{"user":{{"uid":0,"gid":0}},"args":[{args}],"cwd":"/"}}"#).into_bytes(),
    }
}

/// A terminal exec whose terminal never arrives is ended and reported, not left hanging.
#[tokio::test]
async fn terminal_exec_without_console_fails_cleanly() {
    let mut f = Fixture::new();
    f.svc = Service::with_options(
        "ns",
        reaper(),
        Arc::new(ReaperSpawner(reaper())),
        f.events.clone(),
        Options {
            console_timeout: Duration::from_millis(300),
            ..Options::default()
        },
    );
    f.svc.create(f.request("t1")).await.unwrap();
    f.svc.start("t1", "").await.unwrap();
    f.svc
        .exec(exec_req("t1", "x", r#""sleep""#, true))
        .await
        .unwrap();
    let err = f.svc.start("t1", "x").await.unwrap_err();
    assert!(err.chain().contains("receive terminal"), "{}", err.chain());
    assert!(
        f.calls()
            .ends_with(&["exec t1".to_owned(), "kill 9".to_owned()]),
        "the exec was killed: {:?}",
        f.calls()
    );
    assert_eq!(f.svc.state("t1", "x").unwrap().status, Status::Created);
    f.svc.delete("t1", "x").await.unwrap();
    f.svc.kill("t1", "", 9, false).await.unwrap();
    f.svc.wait("t1", "").await.unwrap();
    f.svc.delete("t1", "").await.unwrap();
}

/// runsc failing at each later step: the error reaches the caller with runsc's message and
/// the task stays consistent.
#[tokio::test]
async fn runsc_failures_at_each_step() {
    let f = Fixture::new();
    f.svc.create(f.request("r1")).await.unwrap();
    f.svc.start("r1", "").await.unwrap();

    f.touch("fail-exec", "executing processes: no such file");
    f.svc
        .exec(exec_req("r1", "x1", r#""sleep""#, false))
        .await
        .unwrap();
    let err = f.svc.start("r1", "x1").await.unwrap_err();
    assert!(
        err.chain().contains("executing processes: no such file"),
        "{}",
        err.chain()
    );
    assert_eq!(
        f.svc.state("r1", "x1").unwrap().status,
        Status::Created,
        "can be retried or deleted"
    );
    std::fs::remove_file(f.runsc_root().join("fail-exec")).unwrap();
    f.svc.start("r1", "x1").await.unwrap();

    f.touch("fail-kill", "permission denied");
    let err = f.svc.kill("r1", "", 15, false).await.unwrap_err();
    assert!(err.chain().contains("permission denied"), "{}", err.chain());
    assert_eq!(f.svc.state("r1", "").unwrap().status, Status::Running);
    std::fs::remove_file(f.runsc_root().join("fail-kill")).unwrap();

    f.touch("fail-ps", "cannot list");
    assert!(
        f.svc
            .pids("r1")
            .await
            .unwrap_err()
            .chain()
            .contains("cannot list")
    );
    f.touch("fail-events", "cannot collect");
    assert!(
        f.svc
            .stats("r1")
            .await
            .unwrap_err()
            .chain()
            .contains("cannot collect")
    );
    f.touch("fail-pause", "freezer busy");
    assert!(
        f.svc
            .pause("r1")
            .await
            .unwrap_err()
            .chain()
            .contains("freezer busy")
    );
    assert_eq!(
        f.svc.state("r1", "").unwrap().status,
        Status::Running,
        "no state change"
    );

    f.svc.kill("r1", "", 9, true).await.unwrap();
    f.svc.wait("r1", "").await.unwrap();
    f.touch("fail-delete", "device busy");
    let err = f.svc.delete("r1", "").await.unwrap_err();
    assert!(err.chain().contains("device busy"), "{}", err.chain());
    assert_eq!(
        f.svc.task_count(),
        1,
        "a failed delete keeps the task so it can be retried"
    );
    std::fs::remove_file(f.runsc_root().join("fail-delete")).unwrap();
    f.svc.delete("r1", "").await.unwrap();
    assert_eq!(f.svc.task_count(), 0);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Many concurrent execs in one container, each exit delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_execs() {
    let f = Arc::new(Fixture::new());
    f.svc.create(f.request("c50")).await.unwrap();
    f.svc.start("c50", "").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("x{i}");
            f.svc
                .exec(exec_req("c50", &id, r#""exit5""#, false))
                .await
                .unwrap();
            f.svc.start("c50", &id).await.unwrap();
            let exit = f.svc.wait("c50", &id).await.unwrap();
            f.svc.delete("c50", &id).await.unwrap();
            exit.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 5);
    }
    let exits = f
        .events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::Exit { .. }))
        .count();
    assert_eq!(exits, 50, "one TaskExit per exec");
    f.svc.kill("c50", "", 9, false).await.unwrap();
    f.svc.wait("c50", "").await.unwrap();
    f.svc.delete("c50", "").await.unwrap();
}

/// Many containers created and deleted concurrently in one shim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_containers() {
    let f = Arc::new(Fixture::new());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("cc{i}");
            f.svc.create(f.request(&id)).await.unwrap();
            f.touch(&format!("{id}.exit"), &i.to_string());
            f.svc.start(&id, "").await.unwrap();
            let exit = f.svc.wait(&id, "").await.unwrap();
            f.svc.delete(&id, "").await.unwrap();
            (i, exit.status)
        }));
    }
    for t in tasks {
        let (i, status) = t.await.unwrap();
        assert_eq!(status, i);
    }
    for i in 0..20 {
        let t = f.events.topics(&format!("cc{i}"));
        assert_eq!(t, LIFECYCLE, "cc{i}");
    }
    assert_eq!(f.svc.task_count(), 0);
}

/// A long-running shim creating and deleting containers keeps its descriptors and threads
/// flat, leaves no zombies, and sends every event once, in order.
/// `SOAK_CYCLES` (default 200) sets the number of cycles; the documented long run is 1000.
#[tokio::test]
async fn create_delete_cycles_leak_nothing() {
    let cycles: usize = std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let f = Fixture::new();
    let run = |i: usize| {
        let f = &f;
        async move {
            let id = format!("soak{i}");
            f.svc.create(f.request(&id)).await.unwrap();
            f.touch(&format!("{id}.exit"), "0");
            f.svc.start(&id, "").await.unwrap();
            f.svc.wait(&id, "").await.unwrap();
            f.svc.delete(&id, "").await.unwrap();
        }
    };
    // Warm up (lazily created runtime resources), then measure.
    for i in 0..5 {
        run(i).await;
    }
    let fds = open_fds();
    for i in 5..cycles {
        run(i).await;
    }
    // Descriptors of the last cycle may still be closing on the runtime's threads: wait for
    // the count to come down, up to a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while open_fds() > fds + 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        open_fds() <= fds + 2,
        "descriptors grew from {fds} to {}",
        open_fds()
    );
    let events = f.events.0.lock().unwrap().len();
    assert_eq!(events, cycles * 4, "create, start, exit, delete per cycle");
    for i in [0, cycles / 2, cycles - 1] {
        assert_eq!(f.events.topics(&format!("soak{i}")), LIFECYCLE);
    }
    // No zombie children of this process.
    let me = std::process::id().to_string();
    let zombies: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let after = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim().to_owned())
                .unwrap_or_default();
            let mut it = after.split_whitespace();
            it.next() == Some("Z") && it.next() == Some(me.as_str())
        })
        .collect();
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
}

/// Issue 12, item 1: runsc resolves ids by prefix. Containers whose ids prefix each other
/// (`ctr run ... web`, `web2`, `we`) each work, and no path acts on a sibling: not a start, an
/// exec, a kill, the delete of a stopped task, nor containerd's cleanup after the task is gone.
#[tokio::test]
async fn issue_12_ids_that_prefix_each_other() {
    let f = Fixture::new();
    f.svc.create(f.request("web2")).await.unwrap();
    let web2 = f.svc.start("web2", "").await.unwrap();
    // A new id that is a prefix of a running one.
    f.svc.create(f.request("we")).await.unwrap();
    f.svc.start("we", "").await.unwrap();
    f.svc.create(f.request("web")).await.unwrap();
    f.svc.start("web", "").await.unwrap();
    // Exec into and kill the one in the middle.
    f.svc
        .exec(exec_req("web", "x1", r#""sh""#, false))
        .await
        .unwrap();
    f.svc.start("web", "x1").await.unwrap();
    f.svc.kill("web", "", 9, false).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), f.svc.wait("web", ""))
        .await
        .expect("web ends when killed")
        .unwrap();
    assert_eq!(exit.status, 137);
    f.svc.delete("web", "x1").await.unwrap();
    f.svc.delete("web", "").await.unwrap();
    // `we` ends on its own; its delete and a later cleanup (as containerd runs after every
    // delete, or after a dead shim) must not reach web2.
    f.svc.kill("we", "", 15, false).await.unwrap();
    f.svc.wait("we", "").await.unwrap();
    f.svc.delete("we", "").await.unwrap();
    let bundle_we = f.dir.path().join("bundles/we");
    let spawner: Arc<dyn runsc::Spawner> = Arc::new(ReaperSpawner(reaper()));
    runsc_shim::persist::cleanup(&bundle_we, "we", spawner.clone())
        .await
        .unwrap();
    assert!(
        sandbox_alive(web2),
        "web2 survived everything done to web and we"
    );
    assert_eq!(f.svc.state("web2", "").unwrap().status, Status::Running);
    for id in ["we", "web"] {
        assert!(
            !f.runsc_root().join(id).exists(),
            "{id}: sandbox root removed"
        );
    }
    f.svc.kill("web2", "", 9, false).await.unwrap();
    f.svc.wait("web2", "").await.unwrap();
    f.svc.delete("web2", "").await.unwrap();
}

/// Inside one pod sandbox runsc still resolves ids by prefix: a container whose id runsc could
/// not tell from a sibling's is refused with a clear error, and nothing is left of it.
#[tokio::test]
async fn pod_container_ids_that_prefix_each_other_are_refused() {
    let f = Fixture::new();
    let pod_req = |id: &str, kind: &str| f.pod_request(id, kind);
    f.svc.create(pod_req("pod", "sandbox")).await.unwrap();
    f.svc.start("pod", "").await.unwrap();
    f.svc.create(pod_req("app", "container")).await.unwrap();
    let req = pod_req("ap", "container");
    let bundle = req.bundle.clone();
    let err = f.svc.create(req).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("ap") && msg.contains("\"app\"") && msg.contains("prefix"),
        "{msg}"
    );
    assert!(!bundle.join("state.json").exists());
    // A container of a sandbox that is not here.
    let mut req = pod_req("other", "container");
    let config = req.bundle.join("config.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"pod\"", "\"nopod\"");
    std::fs::write(&config, text).unwrap();
    req.id = "other".into();
    let err = f.svc.create(req).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert!(err.to_string().contains("nopod"), "{err}");
    assert!(!f.runsc_root().join("nopod").exists());
    // A sandbox id that is no id.
    let req = pod_req("evil", "container");
    let config = req.bundle.join("config.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"pod\"", "\"../../etc\"");
    std::fs::write(&config, text).unwrap();
    let err = f.svc.create(req).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("sandbox id"), "{err}");
    f.svc.delete("app", "").await.unwrap();
    f.svc.kill("pod", "", 9, false).await.unwrap();
    f.svc.wait("pod", "").await.unwrap();
    f.svc.delete("pod", "").await.unwrap();
    assert!(!f.runsc_root().join("pod").exists(), "sandbox root removed");
}

/// Issue 12, item 6: no request waits on another process's output. An exec floods a FIFO
/// nobody reads and exits; while its output drains (up to the drain timeout), CloseIO of the
/// same exec and requests for the task answer at once.
#[tokio::test]
async fn issue_12_close_io_does_not_wait_for_a_drain() {
    let f = Fixture::new();
    f.svc.create(f.request("d1")).await.unwrap();
    f.svc.start("d1", "").await.unwrap();
    let fifo = f.dir.path().join("out.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut req = exec_req("d1", "flood", r#""flood""#, false);
    req.stdio.stdout = fifo.display().to_string();
    f.svc.exec(req).await.unwrap();
    let pid = f.svc.start("d1", "flood").await.unwrap();
    // The flood has exited (and was reaped) once its pid is gone: the drain is under way,
    // stuck on the full FIFO.
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the flooding exec exits");
    let started = std::time::Instant::now();
    f.svc.close_io("d1", "flood").await.unwrap();
    f.svc.state("d1", "flood").unwrap();
    f.svc.pids("d1").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "CloseIO waited {:?} for the drain",
        started.elapsed()
    );
    // The drain gives up on the reader that never reads (10 s); then the exit is reported.
    // The bound is liveness only.
    let exit = tokio::time::timeout(Duration::from_secs(60), f.svc.wait("d1", "flood"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.status, 0);
    f.svc.delete("d1", "flood").await.unwrap();
    f.svc.kill("d1", "", 9, false).await.unwrap();
    f.svc.wait("d1", "").await.unwrap();
    f.svc.delete("d1", "").await.unwrap();
}

/// Issue 12, item 1, in a root shared by several containers (a pod's, or a namespace's root
/// from an earlier version of this shim): runsc resolves `we` to `web2` there once `we` is
/// gone. containerd's cleanup (the `delete` subcommand) must not run `runsc delete` for `we`,
/// and must leave `web2` and the lock of a sibling being created alone.
#[tokio::test]
async fn cleanup_in_a_shared_root_spares_a_neighbour_whose_id_we_prefixes() {
    let f = Fixture::new();
    let shared = f.runsc_root();
    f.touch("web2_sandbox:web2.state", "{}");
    f.touch("web2_sandbox:web2.lock", "");
    // runsc writes a container's lock before its state file: web3 is being created.
    f.touch("web3_sandbox:web3.lock", "");
    // What runsc 20221219 leaves of `we` after its sandbox was killed from outside.
    f.touch("we_sandbox:we.lock", "");
    let bundle = f.bundle("we", false);
    runsc_shim::persist::PersistedState {
        rootfs: None,
        binary: f.dir.path().join("runsc").display().to_string(),
        runsc_root: shared.clone(),
        runsc_flags: Default::default(),
        sandbox_id: "we".into(),
    }
    .save(&bundle)
    .unwrap();
    let spawner: Arc<dyn runsc::Spawner> = Arc::new(ReaperSpawner(reaper()));
    let cleaned = runsc_shim::persist::cleanup(&bundle, "we", spawner)
        .await
        .unwrap();
    assert_eq!(cleaned.exit_status, 137);
    // The fake logs its calls in the directory above its --root.
    let calls = std::fs::read_to_string(f.dir.path().join("root/calls")).unwrap_or_default();
    assert!(
        !calls.lines().any(|c| c.starts_with("delete")),
        "runsc delete was run: {calls:?}"
    );
    for kept in [
        "web2_sandbox:web2.state",
        "web2_sandbox:web2.lock",
        "web3_sandbox:web3.lock",
    ] {
        assert!(shared.join(kept).exists(), "{kept} was removed");
    }
    assert!(
        !shared.join("we_sandbox:we.lock").exists(),
        "we's own stale lock goes"
    );
}

/// The same on the service's delete path: runsc lost `we` (its sandbox was killed from
/// outside) while its pod's root holds a `web2` (made beside the shim, which itself refuses
/// such a pair in one pod). Deleting the task `we` does not run `runsc delete we`.
#[tokio::test]
async fn delete_of_a_container_runsc_lost_spares_a_neighbour_whose_id_it_prefixes() {
    let f = Fixture::new();
    f.svc.create(f.pod_request("pod", "sandbox")).await.unwrap();
    f.svc.start("pod", "").await.unwrap();
    f.svc
        .create(f.pod_request("we", "container"))
        .await
        .unwrap();
    let root = f.runsc_root().join("pod");
    std::fs::remove_file(root.join("we_sandbox:pod.state")).unwrap();
    std::fs::write(root.join("web2_sandbox:pod.state"), "{}").unwrap();
    f.svc.delete("we", "").await.unwrap();
    assert!(
        !f.calls().iter().any(|c| c == "delete we"),
        "runsc delete was run: {:?}",
        f.calls()
    );
    assert!(
        root.join("web2_sandbox:pod.state").exists(),
        "web2 was deleted"
    );
    std::fs::remove_file(root.join("web2_sandbox:pod.state")).unwrap();
    f.svc.kill("pod", "", 9, false).await.unwrap();
    f.svc.wait("pod", "").await.unwrap();
    f.svc.delete("pod", "").await.unwrap();
}

/// Two creates of ids that prefix each other in one pod, at the same time: runsc has a state
/// file for neither while both run `runsc create`, so the in-flight creates are checked too,
/// under the same lock. One is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pod_creates_of_ids_that_prefix_each_other() {
    let f = Arc::new(Fixture::new());
    f.svc.create(f.pod_request("pod", "sandbox")).await.unwrap();
    f.svc.start("pod", "").await.unwrap();
    // The fake's `runsc create` waits while this file exists, before writing its state file.
    f.touch("hold-create", "");
    let spawn = |id: &'static str| {
        let f = f.clone();
        tokio::spawn(async move { f.svc.create(f.pod_request(id, "container")).await })
    };
    let (app, ap) = (spawn("app"), spawn("ap"));
    // Release runsc once one create was refused, or once both reached `runsc create` (as both
    // do without the in-flight check).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let in_runsc = f
            .calls()
            .iter()
            .filter(|c| *c == "create app" || *c == "create ap")
            .count();
        if app.is_finished() || ap.is_finished() || in_runsc == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "neither create was refused nor reached runsc"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_file(f.runsc_root().join("hold-create")).unwrap();
    let results = [("app", app.await.unwrap()), ("ap", ap.await.unwrap())];
    let refused: Vec<&Error> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert_eq!(refused.len(), 1, "{results:?}");
    assert!(
        matches!(refused[0], Error::InvalidArgument(_))
            && refused[0].to_string().contains("prefix"),
        "{:?}",
        refused[0]
    );
    for (id, r) in &results {
        if r.is_ok() {
            f.svc.delete(id, "").await.unwrap();
        }
    }
    f.svc.kill("pod", "", 9, false).await.unwrap();
    f.svc.wait("pod", "").await.unwrap();
    f.svc.delete("pod", "").await.unwrap();
}

/// A checkpoint image directory as runsc writes it.
fn image_dir(f: &Fixture, name: &str, content: &str) -> PathBuf {
    let dir = f.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("checkpoint.img"), content).unwrap();
    dir
}

#[tokio::test]
async fn checkpoint_leave_running_then_exit() {
    let f = Fixture::new();
    f.svc.create(f.request("c1")).await.unwrap();
    let req = |path: PathBuf, exit| CheckpointRequest {
        path,
        exit,
        image_path: None,
    };
    // Not started yet: nothing to checkpoint.
    let err = f
        .svc
        .checkpoint("c1", req(f.dir.path().join("ck0"), false))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot checkpoint task c1: it is created"),
        "{err}"
    );
    f.svc.start("c1", "").await.unwrap();
    let ck1 = f.dir.path().join("ck1");
    f.svc
        .checkpoint("c1", req(ck1.clone(), false))
        .await
        .unwrap();
    assert!(ck1.join("checkpoint.img").is_file());
    assert_eq!(f.svc.state("c1", "").unwrap().status, Status::Running);
    // runc's image_path option: the image is also placed there.
    let also = f.dir.path().join("also");
    let ck2 = f.dir.path().join("ck2");
    f.svc
        .checkpoint(
            "c1",
            CheckpointRequest {
                path: ck2,
                exit: true,
                image_path: Some(also.clone()),
            },
        )
        .await
        .unwrap();
    assert!(also.join("checkpoint.img").is_file());
    f.exited("c1", "").await;
    assert!(f.calls().iter().any(|c| c == "checkpoint c1"));
    let err = f
        .svc
        .checkpoint("c1", req(f.dir.path().join("ck3"), false))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("it is stopped"), "{err}");
    f.svc.delete("c1", "").await.unwrap();
    assert_eq!(f.events.topics("c1"), LIFECYCLE);
}

#[tokio::test]
async fn old_runsc_cannot_leave_a_checkpointed_task_running() {
    let f = Fixture::new();
    f.runsc_version_20221219();
    f.svc.create(f.request("c1")).await.unwrap();
    f.svc.start("c1", "").await.unwrap();
    let err = f
        .svc
        .checkpoint(
            "c1",
            CheckpointRequest {
                path: f.dir.path().join("ck"),
                exit: false,
                image_path: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unimplemented(_)), "{err:?}");
    assert!(err.to_string().contains("runsc 0.0~20221219.0"), "{err}");
    assert_eq!(f.svc.state("c1", "").unwrap().status, Status::Running);
    f.svc.kill("c1", "", 9, false).await.unwrap();
    f.svc.wait("c1", "").await.unwrap();
    f.svc.delete("c1", "").await.unwrap();
}

#[tokio::test]
async fn restore_into_a_created_container() {
    let f = Fixture::new();
    let image = image_dir(&f, "img", "image of c0");
    let mut req = f.request("c1");
    req.checkpoint = Some(image);
    let pid = f.svc.create(req).await.unwrap();
    assert!(pid > 0, "runsc create made the sandbox");
    assert_eq!(f.svc.state("c1", "").unwrap().status, Status::Created);
    assert_eq!(f.svc.start("c1", "").await.unwrap(), pid);
    assert_eq!(f.svc.state("c1", "").unwrap().status, Status::Running);
    let calls = f.calls();
    assert!(calls.contains(&"create c1".to_owned()) && calls.contains(&"restore c1".to_owned()));
    assert!(!calls.contains(&"start c1".to_owned()), "{calls:?}");
    f.svc.kill("c1", "", 9, false).await.unwrap();
    f.svc.wait("c1", "").await.unwrap();
    f.svc.delete("c1", "").await.unwrap();
    assert_eq!(f.events.topics("c1"), LIFECYCLE);
}

#[tokio::test]
async fn old_runsc_restores_without_create() {
    let f = Fixture::new();
    f.runsc_version_20221219();
    let mut req = f.request("c1");
    req.checkpoint = Some(image_dir(&f, "img", "image of c0"));
    assert_eq!(f.svc.create(req).await.unwrap(), 0);
    assert!(!f.calls().contains(&"create c1".to_owned()));
    let pid = f.svc.start("c1", "").await.unwrap();
    assert!(pid > 0 && sandbox_alive(pid));
    assert_eq!(f.svc.state("c1", "").unwrap().pid, pid);
    f.svc.kill("c1", "", 9, false).await.unwrap();
    f.svc.wait("c1", "").await.unwrap();
    f.svc.delete("c1", "").await.unwrap();
    assert!(!sandbox_alive(pid));
}

#[tokio::test]
async fn bad_checkpoint_images_are_refused_and_nothing_is_left() {
    let f = Fixture::new();
    // No image file at all: refused at create, nothing made.
    let mut req = f.request("c1");
    req.checkpoint = Some(f.dir.path().join("empty"));
    let err = f.svc.create(req).await.unwrap_err().to_string();
    assert!(err.contains("has no checkpoint.img"), "{err}");
    assert!(!f.calls().contains(&"create c1".to_owned()));
    assert_eq!(f.svc.task_count(), 0);
    // A corrupt image: runsc's error at start; the created sandbox goes, the task ends.
    let mut req = f.request("c2");
    req.checkpoint = Some(image_dir(&f, "bad", "garbage"));
    let pid = f.svc.create(req).await.unwrap();
    let err = f.svc.start("c2", "").await.unwrap_err().chain();
    assert!(err.contains("restore task c2 from checkpoint"), "{err}");
    assert!(err.contains("bad magic header"), "{err}");
    f.exited("c2", "").await;
    assert!(!sandbox_alive(pid));
    f.svc.delete("c2", "").await.unwrap();
    assert!(f.svc.shutdown());
}

/// A request for the sandbox container of CRI pod `id`, with pod annotations `extra`.
fn pod_sandbox(f: &Fixture, id: &str, extra: &[(&str, &str)]) -> CreateRequest {
    annotated(f, id, "sandbox", id, None, extra)
}

/// A request for a container of CRI pod `sandbox` named `name` in the pod, with `extra`
/// annotations.
fn pod_member(
    f: &Fixture,
    id: &str,
    sandbox: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> CreateRequest {
    annotated(f, id, "container", sandbox, Some(name), extra)
}

fn annotated(
    f: &Fixture,
    id: &str,
    kind: &str,
    sandbox: &str,
    name: Option<&str>,
    extra: &[(&str, &str)],
) -> CreateRequest {
    let req = f.request(id);
    let config = req.bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let mut annotations = serde_json::json!({
        "io.kubernetes.cri.container-type": kind,
        "io.kubernetes.cri.sandbox-id": sandbox,
    });
    if let Some(name) = name {
        annotations["io.kubernetes.cri.container-name"] = serde_json::Value::from(name);
    }
    for (k, v) in extra {
        annotations[*k] = serde_json::Value::from(*v);
    }
    spec["annotations"] = annotations;
    std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    req
}

/// Creates and starts a task.
async fn run_task(f: &Fixture, req: CreateRequest) {
    let id = req.id.clone();
    f.svc.create(req).await.unwrap();
    f.svc.start(&id, "").await.unwrap();
}

/// A pod checkpoint image: a runsc state file of `containers` containers (sandbox included)
/// and, if given, the container names the shim records.
fn pod_image(f: &Fixture, name: &str, containers: u32, names: Option<&[&str]>) -> PathBuf {
    let dir = f.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let meta = format!(r#"{{"container_count":"{containers}"}}"#);
    let mut bytes = b"gVisorSF".to_vec();
    bytes.extend_from_slice(&(meta.len() as u64).to_be_bytes());
    bytes.extend_from_slice(meta.as_bytes());
    std::fs::write(dir.join("checkpoint.img"), bytes).unwrap();
    if let Some(names) = names {
        std::fs::write(
            dir.join("pod.json"),
            serde_json::json!({ "containers": names }).to_string(),
        )
        .unwrap();
    }
    dir
}

const RESTORE_FROM: &str = "dev.gvisor.restore.image-path";

/// A pod is checkpointed through its sandbox, with its containers' names; a new pod whose
/// sandbox names the image is restored: the sandbox at its start, each container of the
/// image at its start (matched by name), a container the image does not hold refused before
/// anything is made, and a container created once all are back started as usual.
#[tokio::test]
async fn pod_checkpoint_then_restore_by_name() {
    let f = Fixture::new();
    run_task(&f, pod_sandbox(&f, "pod", &[])).await;
    run_task(&f, pod_member(&f, "app", "pod", "web", &[])).await;
    // A task of the pod created and not started would be in the image but never come back.
    f.svc
        .create(pod_member(&f, "idle", "pod", "idle", &[]))
        .await
        .unwrap();
    let err = f.checkpoint("pod", "ck0").await.unwrap_err().to_string();
    assert!(err.contains("[\"idle\"] are not running"), "{err}");
    assert!(!f.calls().contains(&"checkpoint pod".to_owned()));
    f.svc.kill("idle", "", 9, false).await.unwrap();
    f.svc.delete("idle", "").await.unwrap();
    f.checkpoint("pod", "ck").await.unwrap();
    assert!(f.calls().contains(&"checkpoint pod".to_owned()));
    assert_eq!(
        std::fs::read_to_string(f.dir.path().join("ck/pod.json")).unwrap(),
        r#"{"containers":["web"]}"#
    );
    // One container of the pod alone: refused, naming the sandbox.
    let err = f.checkpoint("app", "ck-app").await.unwrap_err().to_string();
    assert!(
        err.contains("checkpoint the pod through its sandbox pod"),
        "{err}"
    );

    let image = pod_image(&f, "img", 2, Some(&["web"]));
    let image_arg = image.display().to_string();
    let restore = [(RESTORE_FROM, image_arg.as_str())];
    run_task(&f, pod_sandbox(&f, "pod2", &restore)).await;
    let err = f
        .svc
        .create(pod_member(&f, "init2", "pod2", "init", &restore))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("container \"init\" is not in it") && err.contains("[\"web\"]"),
        "{err}"
    );
    assert!(!f.calls().contains(&"create init2".to_owned()));
    run_task(&f, pod_member(&f, "app2", "pod2", "web", &restore)).await;
    // The kubelet restarting it later: a usual start.
    run_task(&f, pod_member(&f, "app3", "pod2", "web", &restore)).await;
    let calls = f.calls();
    for call in ["restore pod2", "restore app2", "start app3"] {
        assert!(calls.contains(&call.to_owned()), "{call}: {calls:?}");
    }
    for call in ["start pod2", "start app2", "restore app3"] {
        assert!(!calls.contains(&call.to_owned()), "{call}: {calls:?}");
    }
    for id in ["app3", "app2", "app", "pod2", "pod"] {
        f.end(id).await;
    }
}

/// A pod whose restore waits for a container that never comes runs nothing, so runsc cannot
/// deliver a signal: a stop signal ends the sandbox (and with it the pod). Bad images and
/// runsc 20221219 are refused at the sandbox's create.
#[tokio::test]
async fn pending_pod_restore_ends_on_a_signal_and_bad_images_are_refused() {
    let f = Fixture::new();
    let image = pod_image(&f, "img", 3, Some(&["a", "b"]));
    let image_arg = image.display().to_string();
    let restore = [(RESTORE_FROM, image_arg.as_str())];
    let pid = f
        .svc
        .create(pod_sandbox(&f, "pod", &restore))
        .await
        .unwrap();
    f.svc.start("pod", "").await.unwrap();
    run_task(&f, pod_member(&f, "a1", "pod", "a", &restore)).await;
    f.svc.kill("pod", "", 15, false).await.unwrap();
    let exit = f.exited("pod", "").await;
    assert_eq!(exit.status, 137);
    assert!(!sandbox_alive(pid));
    assert!(!f.calls().contains(&"kill pod".to_owned()));
    // In runsc the sandbox's end ends its containers; the fake runs one process each.
    let a1: i32 = std::fs::read_to_string(f.runsc_root().join("a1.pid"))
        .unwrap()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a1),
        nix::sys::signal::Signal::SIGKILL,
    );
    tokio::time::timeout(Duration::from_secs(15), f.svc.wait("a1", ""))
        .await
        .unwrap()
        .unwrap();
    f.svc.delete("a1", "").await.unwrap();
    f.svc.delete("pod", "").await.unwrap();

    let refused = async |name: &str, dir: &str| {
        let restore = [(RESTORE_FROM, dir)];
        let err = f
            .svc
            .create(pod_sandbox(&f, name, &restore))
            .await
            .unwrap_err()
            .to_string();
        assert!(!f.calls().contains(&format!("create {name}")), "{name}");
        err
    };
    let bad = image_dir(&f, "bad", "garbage, not a runsc state file");
    let err = refused("p1", &bad.display().to_string()).await;
    assert!(err.contains("not a runsc state file"), "{err}");
    let err = refused("p2", &f.dir.path().join("none").display().to_string()).await;
    assert!(err.contains("has no checkpoint.img"), "{err}");
    let err = refused("p3", "relative/dir").await;
    assert!(err.contains("must be absolute"), "{err}");
    let odd = pod_image(&f, "odd", 3, Some(&["a"]));
    let err = refused("p4", &odd.display().to_string()).await;
    assert!(err.contains("pod.json names 1 containers"), "{err}");
    f.runsc_version_20221219();
    let err = refused("p5", &image_arg).await;
    assert!(err.contains("cannot restore a pod"), "{err}");
    // A container of its own with the pod annotation: refused, naming the right way.
    let mut req = f.request("c1");
    let config = req.bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["annotations"] = serde_json::json!({ RESTORE_FROM: image_arg });
    std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    req.checkpoint = None;
    let err = f.svc.create(req).await.unwrap_err().to_string();
    assert!(err.contains("ctr container restore"), "{err}");
    assert_eq!(f.svc.task_count(), 0);
}

/// Issue 14, item 2: a pod container over its own memory limit gets TaskOOM, then is killed
/// (137), while a sibling under its own limit runs on. The limit (4 KiB) is below what the
/// test's own cgroup holds, so the host gate is open and runsc is asked every interval.
#[tokio::test]
async fn pod_container_over_its_own_memory_limit_is_oom_killed() {
    let f = Fixture::new();
    f.svc.create(f.pod_request("pod", "sandbox")).await.unwrap();
    f.svc.start("pod", "").await.unwrap();
    for id in ["app", "side"] {
        f.svc.create(f.limited_pod_request(id, 4096)).await.unwrap();
        f.svc.start(id, "").await.unwrap();
    }
    f.touch("side.memory", "4096");
    // Checked several times while both are within their limits: nothing happens.
    let checked = || f.count_calls("events", "app") >= 3 && f.count_calls("events", "side") >= 3;
    tokio::time::timeout(Duration::from_secs(10), async {
        while !checked() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(f.svc.state("app", "").unwrap().status, Status::Running);
    f.touch("app.memory", "4097");
    f.oom_killed("app").await;
    assert_eq!(f.svc.state("side", "").unwrap().status, Status::Running);
    assert_eq!(f.events.topics("side"), ["/tasks/create", "/tasks/start"]);
    f.svc.delete("app", "").await.unwrap();
    f.end("side").await;
    f.end("pod").await;
}

/// With runsc 20221219 every container's figure is the sandbox's: a container's own limit is
/// enforced only while it is the one application container running in its pod.
#[tokio::test]
async fn runsc_2022_enforces_a_container_limit_only_alone_in_its_pod() {
    let f = Fixture::new();
    f.runsc_version_20221219();
    f.svc.create(f.pod_request("pod", "sandbox")).await.unwrap();
    f.svc.start("pod", "").await.unwrap();
    f.svc
        .create(f.pod_request("side", "container"))
        .await
        .unwrap();
    f.svc.start("side", "").await.unwrap();
    f.touch("app.memory", "1000000");
    f.svc
        .create(f.limited_pod_request("app", 4096))
        .await
        .unwrap();
    f.svc.start("app", "").await.unwrap();
    // An absence: 15 check intervals with a sibling running, and no figure asked for.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.svc.state("app", "").unwrap().status, Status::Running);
    assert_eq!(f.count_calls("events", "app"), 0);
    f.svc.kill("side", "", 15, false).await.unwrap();
    f.svc.wait("side", "").await.unwrap();
    // Alone now: the sandbox's figure is the container's.
    f.oom_killed("app").await;
    for id in ["app", "side"] {
        f.svc.delete(id, "").await.unwrap();
    }
    f.end("pod").await;
}
