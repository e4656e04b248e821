//! Typed options for runsc and its subcommands. Each renders its own arguments.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Format of runsc's `--log` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line; lets callers recover runsc's last error message.
    #[default]
    Json,
    /// Plain text.
    Text,
}

/// Options passed to every runsc invocation (before the subcommand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalOpts {
    /// The runsc binary: a path, or a name looked up in `PATH`.
    pub binary: PathBuf,
    /// `--root`: runsc's state directory.
    pub root: PathBuf,
    /// `--log`: where runsc writes its own log (and error messages).
    pub log: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// Extra global flags, rendered `--key=value` in key order (gVisor's `[runsc_config]`).
    pub flags: BTreeMap<String, String>,
    /// Deadline for one runsc invocation; the process is killed when it passes.
    pub timeout: Duration,
}

impl GlobalOpts {
    /// Default deadline for one runsc call. Creating a sandbox takes ~0.2 s on an idle
    /// machine; a loaded node can be much slower, and a hung runsc must still end.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// Options with the given binary and root and no log file.
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> GlobalOpts {
        GlobalOpts {
            binary: binary.into(),
            root: root.into(),
            log: None,
            log_format: LogFormat::Json,
            flags: BTreeMap::new(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Returns a copy that logs to `log`.
    pub fn with_log(&self, log: impl Into<PathBuf>) -> GlobalOpts {
        GlobalOpts {
            log: Some(log.into()),
            ..self.clone()
        }
    }

    /// The arguments placed before every subcommand.
    pub fn args(&self) -> Vec<OsString> {
        let mut args = Vec::with_capacity(4 + self.flags.len());
        args.push(flag_path("--root", &self.root));
        if let Some(log) = &self.log {
            args.push(flag_path("--log", log));
            args.push(
                match self.log_format {
                    LogFormat::Json => "--log-format=json",
                    LogFormat::Text => "--log-format=text",
                }
                .into(),
            );
        }
        for (key, value) in &self.flags {
            args.push(format!("--{key}={value}").into());
        }
        args
    }
}

fn flag_path(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push("=");
    arg.push(path);
    arg
}

/// Options of `runsc create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOpts {
    /// `--pid-file`: runsc writes the sandbox pid here.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`: runsc sends the pty master over this unix socket.
    pub console_socket: Option<PathBuf>,
    /// `--user-log`: the sandbox's user-visible log.
    pub user_log: Option<PathBuf>,
}

impl CreateOpts {
    pub(crate) fn args(&self, bundle: &Path, id: &str) -> Vec<OsString> {
        let mut args = vec!["create".into(), flag_path("--bundle", bundle)];
        if let Some(p) = &self.pid_file {
            args.push(flag_path("--pid-file", p));
        }
        if let Some(p) = &self.console_socket {
            args.push(flag_path("--console-socket", p));
        }
        if let Some(p) = &self.user_log {
            args.push(flag_path("--user-log", p));
        }
        args.push(id.into());
        args
    }
}

/// Options of `runsc exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOpts {
    /// `--process`: a JSON file holding the OCI process spec.
    pub process: PathBuf,
    /// `--pid-file`: host pid of the helper that lives as long as the process.
    pub pid_file: PathBuf,
    /// `--internal-pid-file`: the process's pid inside the sandbox.
    pub internal_pid_file: PathBuf,
    /// `--console-socket` for a terminal exec.
    pub console_socket: Option<PathBuf>,
}

impl ExecOpts {
    pub(crate) fn args(&self, id: &str) -> Vec<OsString> {
        let mut args = vec![
            "exec".into(),
            flag_path("--process", &self.process),
            "--detach".into(),
            flag_path("--pid-file", &self.pid_file),
            flag_path("--internal-pid-file", &self.internal_pid_file),
        ];
        if let Some(p) = &self.console_socket {
            args.push(flag_path("--console-socket", p));
        }
        args.push(id.into());
        args
    }
}

/// Options of `runsc checkpoint`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointOpts {
    /// `--image-path`: the directory the image is written to.
    pub image_path: PathBuf,
    /// `--leave-running`: the container goes on running after the checkpoint (otherwise its
    /// sandbox exits).
    pub leave_running: bool,
    /// Further flags as `(name, value)`, each passed `--name=value` (e.g. `compression`).
    pub extra: Vec<(String, String)>,
}

impl CheckpointOpts {
    pub(crate) fn args(&self, id: &str) -> Vec<OsString> {
        let mut args = vec![
            "checkpoint".into(),
            flag_path("--image-path", &self.image_path),
        ];
        if self.leave_running {
            args.push("--leave-running".into());
        }
        for (name, value) in &self.extra {
            args.push(format!("--{name}={value}").into());
        }
        args.push(id.into());
        args
    }
}

/// Options of `runsc restore` (always `--detach`: runsc returns once the container runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOpts {
    /// `--image-path`: the directory holding the checkpoint image.
    pub image_path: PathBuf,
    /// `--bundle`.
    pub bundle: PathBuf,
    /// `--pid-file`: runsc writes the sandbox pid here.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`: runsc sends the pty master over this unix socket.
    pub console_socket: Option<PathBuf>,
}

impl RestoreOpts {
    pub(crate) fn args(&self, id: &str) -> Vec<OsString> {
        let mut args = vec![
            "restore".into(),
            flag_path("--image-path", &self.image_path),
            flag_path("--bundle", &self.bundle),
            "--detach".into(),
        ];
        if let Some(p) = &self.pid_file {
            args.push(flag_path("--pid-file", p));
        }
        if let Some(p) = &self.console_socket {
            args.push(flag_path("--console-socket", p));
        }
        args.push(id.into());
        args
    }
}

/// Options of `runsc kill`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KillOpts {
    /// `--all`: signal every process of the container.
    pub all: bool,
    /// `--pid`: signal one process, by its pid inside the sandbox.
    pub pid: Option<i32>,
}

impl KillOpts {
    pub(crate) fn args(&self, id: &str, signal: u32) -> Vec<OsString> {
        let mut args = vec!["kill".into()];
        if self.all {
            args.push("--all".into());
        }
        if let Some(pid) = self.pid {
            args.push(format!("--pid={pid}").into());
        }
        args.push(id.into());
        args.push(signal.to_string().into());
        args
    }
}

/// Options of `runsc delete`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteOpts {
    /// `--force`: kill a running container first.
    pub force: bool,
}

impl DeleteOpts {
    pub(crate) fn args(&self, id: &str) -> Vec<OsString> {
        let mut args = vec!["delete".into()];
        if self.force {
            args.push("--force".into());
        }
        args.push(id.into());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn global_flags_are_sorted_and_after_log() {
        let mut g = GlobalOpts::new("runsc", "/run/r/ns").with_log("/b/log.json");
        g.flags.insert("platform".into(), "ptrace".into());
        g.flags.insert("debug".into(), "true".into());
        g.flags.insert("network".into(), "none".into());
        assert_eq!(
            strs(g.args()),
            [
                "--root=/run/r/ns",
                "--log=/b/log.json",
                "--log-format=json",
                "--debug=true",
                "--network=none",
                "--platform=ptrace",
            ]
        );
    }

    #[test]
    fn create_args() {
        let o = CreateOpts {
            pid_file: Some("/b/init.pid".into()),
            console_socket: Some("/tmp/c.sock".into()),
            user_log: None,
        };
        assert_eq!(
            strs(o.args(Path::new("/b"), "c1")),
            [
                "create",
                "--bundle=/b",
                "--pid-file=/b/init.pid",
                "--console-socket=/tmp/c.sock",
                "c1"
            ]
        );
    }

    #[test]
    fn checkpoint_and_restore_args() {
        let c = CheckpointOpts {
            image_path: "/ck".into(),
            leave_running: true,
            extra: vec![("compression".into(), "none".into())],
        };
        assert_eq!(
            strs(c.args("c1")),
            [
                "checkpoint",
                "--image-path=/ck",
                "--leave-running",
                "--compression=none",
                "c1"
            ]
        );
        let r = RestoreOpts {
            image_path: "/ck".into(),
            bundle: "/b".into(),
            pid_file: Some("/b/init.pid".into()),
            console_socket: None,
        };
        assert_eq!(
            strs(r.args("c1")),
            [
                "restore",
                "--image-path=/ck",
                "--bundle=/b",
                "--detach",
                "--pid-file=/b/init.pid",
                "c1"
            ]
        );
    }

    #[test]
    fn kill_args() {
        assert_eq!(strs(KillOpts::default().args("c", 15)), ["kill", "c", "15"]);
        assert_eq!(
            strs(
                KillOpts {
                    all: true,
                    pid: None
                }
                .args("c", 9)
            ),
            ["kill", "--all", "c", "9"]
        );
        assert_eq!(
            strs(
                KillOpts {
                    all: false,
                    pid: Some(4)
                }
                .args("c", 2)
            ),
            ["kill", "--pid=4", "c", "2"]
        );
    }
}
