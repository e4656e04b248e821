//! The shim binary driven the way containerd drives it: `start` in each containerd version's
//! form (argv, environment, stdin, reply; docs/test-environment.md "How containerd starts a
//! shim"), the `delete` action, and a guard that leaves no process or socket behind.
//!
//! Where the socket goes: containerd 1.6-2.2 leave it to the shim, which uses
//! `/run/containerd/s` (root only). As root that is where it goes; otherwise `start` runs in
//! a user and mount namespace whose `/run` is a directory of the test (the serving shim it
//! spawns inherits both, and the test reaches the socket through that directory).
//! containerd 2.3 names a socket directory in its bootstrap parameters: a test directory.

#[path = "../../../shim/tests/support/executable.rs"]
mod executable;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Mutex, OnceLock};

use containerd_shim_protos::api::CreateTaskRequest;
use containerd_shim_protos::bootstrap_api::{BootstrapParams, Extension, LogLevel};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::api::Conn;
use super::containerd::MockContainerd;
use super::process::{argv_has, daemons, kill, processes, session, socket_arg};
use super::{DEADLINE, eventually};

/// The binary under test.
const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-runsc-v1");
/// The scripted runsc of the core's tests.
const FAKE_RUNSC: &str = include_str!("../../../shim/tests/support/fake-runsc.sh");
/// The containerd namespace of every test.
pub const NS: &str = "shimtest";

/// How a containerd version runs `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// 1.6: `TTRPC_ADDRESS`, the runtime options `Any` on stdin, a bare address back.
    Containerd16,
    /// 1.7: as 1.6, plus `GRPC_ADDRESS`, `NAMESPACE`, `MAX_SHIM_VERSION=2`, `GOMAXPROCS`.
    Containerd17,
    /// 2.0-2.2: as 1.7 (`MAX_SHIM_VERSION` is still 2), at debug level (`-debug`).
    Containerd2,
    /// 2.3: `BootstrapParams` on stdin, a `BootstrapResult` back.
    Containerd23,
}

/// Where the legacy forms' `/run/containerd/s` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegacyRun {
    /// The host's (the tests run as root).
    Host,
    /// A test directory mounted on `/run` in a user and mount namespace.
    Private,
}

fn legacy_run() -> LegacyRun {
    static RUN: OnceLock<LegacyRun> = OnceLock::new();
    *RUN.get_or_init(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return LegacyRun::Host;
        }
        let userns = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "true"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            userns,
            "the containerd 1.6-2.2 start forms put the shim socket in /run/containerd/s: \
             run the tests as root or where unprivileged user namespaces work (unshare -Urm)"
        );
        LegacyRun::Private
    })
}

/// A test's world: the mock containerd, the fake runsc and its `runsc.toml`, bundles. Its
/// shims, and everything in their sessions, die with it.
pub struct World {
    dir: tempfile::TempDir,
    /// containerd's events service.
    pub containerd: MockContainerd,
    /// Every shim process seen (a session id: the shim made its own session).
    sessions: Mutex<Vec<i32>>,
}

impl World {
    /// A new world in a temporary directory.
    pub async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("runsc");
        executable::write_executable(&fake, FAKE_RUNSC);
        let toml = format!(
            "binary_name = \"{}\"\nroot = \"{}\"\n",
            fake.display(),
            dir.path().join("root").display()
        );
        std::fs::write(dir.path().join("runsc.toml"), toml).unwrap();
        let containerd = MockContainerd::start(&dir.path().join("containerd.sock.ttrpc")).await;
        World {
            dir,
            containerd,
            sessions: Mutex::new(Vec::new()),
        }
    }

    /// The live shims of this world: `-address <its containerd>` in their argv.
    fn shims(&self) -> Vec<i32> {
        let needle = format!("\0-address\0{}\0", self.grpc_address());
        processes().filter(|&pid| argv_has(pid, &needle)).collect()
    }

    /// containerd's gRPC address (`-address`): here only part of the socket name.
    fn grpc_address(&self) -> String {
        self.dir
            .path()
            .join("containerd.sock")
            .display()
            .to_string()
    }

    /// containerd 2.3's socket directory.
    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    /// The legacy forms' `/run` when it is private.
    fn private_run(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// A bundle: `config.json` (with `annotations`, a JSON object body) and a rootfs holding
    /// only the program, plus a plain file as the shim's `log` (containerd's is a FIFO).
    pub fn bundle_with(&self, id: &str, annotations: &str) -> PathBuf {
        let b = self.dir.path().join("bundles").join(id);
        std::fs::create_dir_all(b.join("rootfs/bin")).unwrap();
        std::fs::write(b.join("rootfs/bin/sh"), b"").unwrap();
        std::fs::set_permissions(b.join("rootfs/bin/sh"), PermissionsExt::from_mode(0o755))
            .unwrap();
        let spec = format!(
            r#"{{"ociVersion":"1.0.2","process":{{"user":{{"uid":0,"gid":0}},"args":["sh"],"cwd":"/"}},"root":{{"path":"rootfs"}},"annotations":{{{annotations}}}}}"#
        );
        std::fs::write(b.join("config.json"), spec).unwrap();
        std::fs::write(b.join("log"), b"").unwrap();
        b
    }

    /// A bundle without annotations.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.bundle_with(id, "")
    }

    /// An empty directory as a bundle.
    pub fn empty_bundle(&self, id: &str) -> PathBuf {
        let b = self.dir.path().join("bundles").join(id);
        std::fs::create_dir_all(&b).unwrap();
        b
    }

    /// CRI's runtime options naming this world's `runsc.toml`.
    pub fn runtime_options(&self) -> Any {
        /// `runtimeoptions.v1.Options`.
        #[derive(Clone, PartialEq, prost::Message)]
        struct Options {
            #[prost(string, tag = "1")]
            type_url: String,
            #[prost(string, tag = "2")]
            config_path: String,
        }
        let options = Options {
            type_url: "io.containerd.runsc.v1.options".into(),
            config_path: self.dir.path().join("runsc.toml").display().to_string(),
        };
        Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: prost::Message::encode_to_vec(&options),
            ..Default::default()
        }
    }

    /// containerd's Create for the task `id` (bundle made by [`World::bundle`]), no rootfs
    /// mounts, no stdio.
    pub fn create_request(&self, id: &str) -> CreateTaskRequest {
        CreateTaskRequest {
            id: id.to_owned(),
            bundle: self
                .dir
                .path()
                .join("bundles")
                .join(id)
                .display()
                .to_string(),
            options: Some(self.runtime_options()).into(),
            ..Default::default()
        }
    }

    /// The fake runsc's container `id` exits with `status` once started.
    pub fn exits_with(&self, id: &str, status: u32) {
        let ctl = self.dir.path().join("root").join(NS);
        std::fs::create_dir_all(&ctl).unwrap();
        std::fs::write(ctl.join(format!("{id}.exit")), status.to_string()).unwrap();
    }

    /// The address `start` must answer for the shim of `group`: the hash of containerd's
    /// address, the namespace and the group, in the socket directory of the form.
    pub fn expected_address(&self, form: Form, group: &str) -> String {
        let digest = Sha256::digest(format!("{}/{NS}/{group}", self.grpc_address()));
        let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        match form {
            Form::Containerd23 => format!("unix://{}/{hash}", self.socket_dir().display()),
            _ => format!("unix:///run/containerd/s/{hash}"),
        }
    }

    /// The socket file of `group`'s shim, as the test sees it.
    pub fn socket_path(&self, form: Form, group: &str) -> PathBuf {
        self.host_path(&self.expected_address(form, group))
    }

    /// Where the socket of `address` is, seen from the test.
    fn host_path(&self, address: &str) -> PathBuf {
        let path = address.strip_prefix("unix://").unwrap();
        match path.strip_prefix("/run/") {
            Some(rest) if legacy_run() == LegacyRun::Private => self.private_run().join(rest),
            _ => PathBuf::from(path),
        }
    }

    /// Runs `start` for task `id` (bundle made already) as containerd of `form` does.
    pub async fn run_start(&self, form: Form, id: &str) -> Output {
        let bundle = self.dir.path().join("bundles").join(id);
        let mut args = vec!["-namespace", NS, "-address"];
        let grpc = self.grpc_address();
        args.extend([
            grpc.as_str(),
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            id,
        ]);
        if form == Form::Containerd2 {
            args.push("-debug");
        }
        args.push("start");
        let mut cmd = self.command(form, &args);
        cmd.current_dir(&bundle);
        for (k, v) in self.environment(form) {
            cmd.env(k, v);
        }
        let stdin = match form {
            Form::Containerd23 => self.bootstrap_params(id).write_to_bytes().unwrap(),
            _ => self.runtime_options().write_to_bytes().unwrap(),
        };
        let out = run(cmd, &stdin).await;
        // Before anything can fail: the shim `start` left running is killed at the end.
        self.sessions.lock().unwrap().extend(self.shims());
        out
    }

    /// The shim command (in the private `/run` for the legacy forms when not root).
    fn command(&self, form: Form, args: &[&str]) -> Command {
        let mut cmd = if form != Form::Containerd23 && legacy_run() == LegacyRun::Private {
            let run = self.private_run();
            std::fs::create_dir_all(&run).unwrap();
            let mut cmd = Command::new("unshare");
            cmd.args(["--user", "--map-root-user", "--mount", "--", "sh", "-c"])
                .arg(r#"mount --bind "$0" /run && exec "$@""#)
                .arg(run)
                .arg(SHIM);
            cmd
        } else {
            Command::new(SHIM)
        };
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/bin".into());
        cmd.args(args).env_clear().env("PATH", path);
        cmd
    }

    /// The environment containerd of `form` gives the shim.
    fn environment(&self, form: Form) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("GRPC_ADDRESS", self.grpc_address()),
            ("NAMESPACE", NS.to_owned()),
            ("MAX_SHIM_VERSION", "2".to_owned()),
            ("GOMAXPROCS", "2".to_owned()),
        ];
        match form {
            Form::Containerd16 => env.clear(),
            Form::Containerd17 | Form::Containerd2 => {}
            // The events address comes only from the bootstrap parameters here, so that
            // the test sees those are what the shim uses.
            Form::Containerd23 => return env,
        }
        env.push(("TTRPC_ADDRESS", self.containerd.address()));
        env
    }

    /// containerd 2.3's `start` input.
    fn bootstrap_params(&self, id: &str) -> BootstrapParams {
        BootstrapParams {
            instance_id: id.to_owned(),
            namespace: NS.to_owned(),
            log_level: LogLevel::LOG_LEVEL_DEBUG.into(),
            containerd_version: "v2.3.0".to_owned(),
            containerd_ttrpc_address: self.containerd.address(),
            containerd_grpc_address: self.grpc_address(),
            containerd_binary: "/usr/bin/containerd".to_owned(),
            extensions: vec![Extension {
                value: Some(self.runtime_options()).into(),
                ..Default::default()
            }],
            socket_dir: Some(self.socket_dir().display().to_string()),
            ..Default::default()
        }
    }

    /// Runs `start` (which must succeed, printing nothing but its reply) and returns the
    /// serving shim.
    pub async fn start(&self, form: Form, id: &str) -> Shim {
        let out = self.run_start(form, id).await;
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "start failed: {out:?}"
        );
        let address = match form {
            Form::Containerd23 => {
                let result =
                    containerd_shim_protos::bootstrap_api::BootstrapResult::parse_from_bytes(
                        &out.stdout,
                    )
                    .unwrap();
                assert_eq!((result.version, result.protocol.as_str()), (2, "ttrpc"));
                result.address
            }
            _ => String::from_utf8(out.stdout).unwrap(),
        };
        self.shim_at(address, id)
    }

    /// The shim serving `address`, found by its command line.
    fn shim_at(&self, address: String, id: &str) -> Shim {
        let pids = daemons(&address);
        assert_eq!(pids.len(), 1, "one shim serves {address}: {pids:?}");
        Shim {
            socket: self.host_path(&address),
            pid: pids[0],
            log: self.dir.path().join("bundles").join(id).join("log"),
            address,
        }
    }

    /// Runs the `delete` action for task `id` on `bundle`, as containerd does.
    pub async fn run_delete(&self, id: &str, bundle: &Path) -> Output {
        let grpc = self.grpc_address();
        let bundle_arg = bundle.display().to_string();
        let args = [
            "-namespace",
            NS,
            "-address",
            &grpc,
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            id,
            "-bundle",
            &bundle_arg,
            "delete",
        ];
        let mut cmd = self.command(Form::Containerd23, &args);
        cmd.current_dir(bundle)
            .env("TTRPC_ADDRESS", self.containerd.address());
        run(cmd, b"").await
    }
}

/// Runs `cmd` with `stdin`, within the deadline.
async fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("the command finishes")
        .unwrap()
}

/// A serving shim (its [`World`] ends it); dropping it removes its socket and, in a failed
/// test, shows its log.
#[derive(Debug)]
pub struct Shim {
    /// The address `start` answered.
    pub address: String,
    socket: PathBuf,
    pid: i32,
    log: PathBuf,
}

impl Shim {
    /// The socket file, as the test sees it.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The shim's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A new connection.
    pub async fn connect(&self) -> Conn {
        Conn::connect(&self.socket).await
    }

    /// Whether the shim process still runs.
    pub fn is_running(&self) -> bool {
        daemons(&self.address).contains(&self.pid)
    }

    /// Whether the shim still listens on its socket: the kernel lists a listening socket in
    /// `/proc/net/unix` under the name it was bound to (unlinked or not) with the flag
    /// `__SO_ACCEPTCON` (`00010000`).
    pub fn is_listening(&self) -> bool {
        let name = self.address.strip_prefix("unix://").unwrap();
        let table = std::fs::read_to_string("/proc/net/unix").unwrap();
        table.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() >= 8 && fields[3] == "00010000" && fields[7] == name
        })
    }

    /// Waits until the shim process has exited.
    pub async fn exited(&self) {
        eventually("the shim exits", || !self.is_running()).await;
    }

    /// The shim's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        if std::thread::panicking() {
            #[allow(clippy::print_stderr, reason = "the failed test's evidence")]
            {
                eprintln!("--- shim log ({}):\n{}", self.log.display(), self.log());
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let live = self.shims();
        let sockets: Vec<String> = live.iter().filter_map(|&pid| socket_arg(pid)).collect();
        let mut sessions = std::mem::take(self.sessions.get_mut().unwrap());
        sessions.extend(&live);
        // A session id stays taken while any member lives, so members of a shim's session
        // are the shim's (runsc's processes), even after the shim itself died.
        for pid in processes() {
            let member = session(pid).is_some_and(|s| s != pid && sessions.contains(&s));
            if live.contains(&pid) || member {
                kill(pid);
            }
        }
        // A socket outside the test directory (the host's /run/containerd/s).
        for address in sockets {
            let _ = std::fs::remove_file(self.host_path(&address));
        }
    }
}
