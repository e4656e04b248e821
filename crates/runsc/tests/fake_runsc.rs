//! The client against a scripted fake runsc: exact argv, output parsing, error recovery from
//! the JSON log, and the deadline.
#![allow(clippy::unwrap_used, reason = "test helpers")]

#[path = "../../shim/tests/support/executable.rs"]
mod executable;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runsc::{
    CreateOpts, DeleteOpts, Error, ExecOpts, FailureKind, GlobalOpts, KillOpts, Runsc, StdioFds,
    TokioSpawner,
};

/// A fake runsc: records its argv (one line per call) and stdin, then acts by subcommand.
const FAKE: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/argv"
log=""
for a in "$@"; do case "$a" in --log=*) log="${a#--log=}";; esac; done
sub=""
for a in "$@"; do case "$a" in --*) ;; *) sub="$a"; break;; esac; done
case "$sub" in
  state) echo '{"ociVersion":"1.0.2","id":"c1","pid":4242,"status":"running","bundle":"/b"}' ;;
  ps) echo '[{"UID":0,"PID":1,"PPID":0,"C":0,"STime":"12:00","Time":"0s","Cmd":"sleep"}]' ;;
  events) echo '{"type":"stats","id":"c1","data":{"cpu":{"usage":{"total":5}},"pids":{"current":2}}}' ;;
  update) cat > "$dir/stdin" ;;
  kill)
    echo '{"level":"info","msg":"noise","time":"t"}' >> "$log"
    echo '{"level":"error","msg":"cannot signal container \"c1\" in state stopped","time":"t"}' >> "$log"
    echo "some stderr" >&2
    exit 128 ;;
  delete) echo "delete failed on stderr" >&2; exit 1 ;;
  pause) exec sleep 30 ;;
  resume) echo 'garbage' ;;
  wait) echo '{"id":"c1","exitStatus":143}' ;;
  create) for a in "$@"; do case "$a" in --pid-file=*) echo 777 > "${a#--pid-file=}";; esac; done
          echo "container says hi" ;;
esac
exit 0
"#;

fn fake(dir: &Path) -> PathBuf {
    let path = dir.join("runsc");
    executable::write_executable(&path, FAKE);
    path
}

fn client(dir: &Path) -> Runsc {
    let mut opts = GlobalOpts::new(fake(dir), "/run/test-root");
    opts.flags.insert("network".into(), "none".into());
    opts.flags.insert("debug-log".into(), "/tmp/x/".into());
    opts.timeout = Duration::from_secs(2);
    Runsc::new(opts, Arc::new(TokioSpawner)).with_log(dir.join("log.json"))
}

fn argv(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("argv"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn exact_argv_and_parsed_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = client(d);
    let g = format!(
        "--root=/run/test-root --log={}/log.json --log-format=json --debug-log=/tmp/x/ --network=none",
        d.display()
    );

    let state = r.state("c1").await.unwrap();
    assert_eq!((state.pid, state.status.as_str()), (4242, "running"));
    let ps = r.ps("c1").await.unwrap();
    assert_eq!(ps.len(), 1);
    assert_eq!((ps[0].pid, ps[0].cmd.as_str()), (1, "sleep"));
    let stats = r.stats("c1").await.unwrap();
    assert_eq!((stats.cpu.usage.total, stats.pids.current), (5, 2));
    r.update("c1", br#"{"memory":{"limit":1048576}}"#)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(d.join("stdin")).unwrap(),
        br#"{"memory":{"limit":1048576}}"#
    );
    assert_eq!(r.wait("c1", None).await.unwrap().exit_status, 143);

    let create = CreateOpts {
        pid_file: Some(d.join("init.pid")),
        console_socket: None,
        user_log: None,
    };
    r.create("c1", Path::new("/bundle"), &create, StdioFds::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(d.join("init.pid")).unwrap().trim(),
        "777"
    );
    let exec = ExecOpts {
        process: "/b/p.json".into(),
        pid_file: "/b/e.pid".into(),
        internal_pid_file: "/b/e.ipid".into(),
        console_socket: Some("/tmp/s.sock".into()),
    };
    r.exec("c1", &exec, StdioFds::default()).await.unwrap();

    assert_eq!(
        argv(d),
        vec![
            format!("{g} state c1"),
            format!("{g} ps --format=json c1"),
            format!("{g} events --stats c1"),
            format!("{g} update --resources=- c1"),
            format!("{g} wait c1"),
            format!(
                "{g} create --bundle=/bundle --pid-file={}/init.pid c1",
                d.display()
            ),
            format!(
                "{g} exec --process=/b/p.json --detach --pid-file=/b/e.pid \
                 --internal-pid-file=/b/e.ipid --console-socket=/tmp/s.sock c1"
            ),
        ]
    );
}

#[tokio::test]
async fn error_message_comes_from_the_json_log() {
    let dir = tempfile::tempdir().unwrap();
    let r = client(dir.path());
    let err = r
        .kill(
            "c1",
            9,
            KillOpts {
                all: true,
                pid: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        Some("cannot signal container \"c1\" in state stopped")
    );
    assert_eq!(err.kind(), FailureKind::NotRunning);
    assert!(
        err.to_string()
            .contains("runsc kill failed (exit status 128)"),
        "{err}"
    );
}

#[tokio::test]
async fn error_message_falls_back_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let r = client(dir.path());
    let err = r
        .delete("c1", DeleteOpts { force: true })
        .await
        .unwrap_err();
    assert_eq!(err.message(), Some("delete failed on stderr"));
}

#[tokio::test]
async fn garbage_output_is_a_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = client(dir.path());
    // `resume` prints garbage but succeeds: nothing to parse, so fine.
    r.resume("c1").await.unwrap();
    let mut opts = r.opts().clone();
    opts.binary = "/bin/echo".into();
    let echo = Runsc::new(opts, Arc::new(TokioSpawner));
    let err = echo.state("c1").await.unwrap_err();
    assert!(matches!(err, Error::Parse { .. }), "{err:?}");
}

#[tokio::test]
async fn hung_runsc_is_killed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let r = client(dir.path());
    let started = Instant::now();
    let err = r.pause("c1").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn missing_binary_names_the_binary() {
    let r = Runsc::new(
        GlobalOpts::new("/nonexistent/runsc", "/r"),
        Arc::new(TokioSpawner),
    );
    let err = r.state("c1").await.unwrap_err();
    assert!(matches!(err, Error::Spawn { .. }));
    assert!(err.to_string().contains("/nonexistent/runsc"), "{err}");
}

#[tokio::test]
async fn false_binary_fails_with_status() {
    let r = Runsc::new(GlobalOpts::new("/bin/false", "/r"), Arc::new(TokioSpawner));
    let err = r.kill("c1", 15, KillOpts::default()).await.unwrap_err();
    match err {
        Error::Failed { status, .. } => assert_eq!(status, runsc::ExitStatus::Exited(1)),
        other => panic!("unexpected {other:?}"),
    }
}
