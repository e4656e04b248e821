//! Installs `containerd-shim-runsc-v1` on a node, idempotently:
//!
//! 1. places the shim (and, if given, `runsc`) into a bin directory on containerd's `PATH`;
//! 2. adds the runtime `runsc` (`runtime_type = "io.containerd.runsc.v1"`, options `TypeUrl`
//!    and `ConfigPath`) to containerd's `config.toml` in the layout of its config version
//!    (2: `plugins."io.containerd.grpc.v1.cri"`, 3: `plugins."io.containerd.cri.v1.runtime"`),
//!    keeping comments and every other setting, with a backup of the original;
//! 3. writes a `runsc.toml` if there is none;
//! 4. restarts containerd through systemd when asked (and says what to do otherwise).
//!
//! A second run changes nothing. `uninstall` reverses it. A config that cannot be parsed is
//! left untouched. `--dry-run` prints the diff and the actions without doing them.
#![warn(missing_docs)]

pub mod config;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Installer failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The containerd config is not valid TOML (the file is left as it is).
    #[error("cannot parse {path}: {message}; the file was not changed")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The config has a shape this installer cannot extend.
    #[error("{0}")]
    Layout(String),
    /// The containerd version could not be learned.
    #[error("cannot determine the containerd version: {0}")]
    Version(String),
    /// A file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// Restarting containerd failed.
    #[error("restarting containerd failed: {0}")]
    Restart(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// What to install where.
#[derive(Debug, Clone)]
pub struct Options {
    /// containerd's config file.
    pub containerd_config: PathBuf,
    /// The shim's `runsc.toml`.
    pub runsc_config: PathBuf,
    /// Where binaries go (on containerd's PATH).
    pub bin_dir: PathBuf,
    /// The shim binary to install (normally this executable).
    pub shim_binary: PathBuf,
    /// A runsc binary to install next to it.
    pub runsc: Option<PathBuf>,
    /// The containerd binary to ask for its version (default: `containerd` from PATH).
    pub containerd: Option<PathBuf>,
    /// Runtime (handler) name.
    pub runtime_name: String,
    /// Config version to write into a new config (default: from `containerd --version`).
    pub config_version: Option<i64>,
    /// Only print what would be done.
    pub dry_run: bool,
    /// Restart containerd afterwards.
    pub restart: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            containerd_config: "/etc/containerd/config.toml".into(),
            runsc_config: "/etc/containerd/runsc.toml".into(),
            bin_dir: "/usr/local/bin".into(),
            shim_binary: std::env::current_exe()
                .unwrap_or_else(|_| "containerd-shim-runsc-v1".into()),
            runsc: None,
            containerd: None,
            runtime_name: "runsc".into(),
            config_version: None,
            dry_run: false,
            restart: false,
        }
    }
}

/// Parses `containerd --version` output ("containerd github.com/containerd/containerd v1.7.24
/// ..." or Debian's "containerd github.com/containerd/containerd 1.6.20~ds1 ...").
pub fn parse_containerd_major(text: &str) -> Option<u32> {
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix('v').or(Some(w)))
        .find_map(|w| {
            let (major, rest) = w.split_once('.')?;
            rest.chars().next().filter(char::is_ascii_digit)?;
            major.parse::<u32>().ok().filter(|m| (1..10).contains(m))
        })
}

fn containerd_major(opts: &Options) -> Result<u32, Error> {
    let bin = opts
        .containerd
        .clone()
        .unwrap_or_else(|| PathBuf::from("containerd"));
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .map_err(|e| Error::Version(format!("{}: {e}", bin.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_containerd_major(&text)
        .ok_or_else(|| Error::Version(format!("unexpected output {:?}", text.trim())))
}

/// The `runsc.toml` written when there is none.
pub fn default_runsc_toml(runsc: Option<&Path>) -> String {
    let binary = match runsc {
        Some(p) => format!("binary_name = \"{}\"\n", p.display()),
        None => "# binary_name = \"runsc\"            # a path, or a name looked up in PATH\n"
            .to_owned(),
    };
    format!(
        "# containerd-shim-runsc-v1 configuration (the keys of gVisor's runsc.toml).\n\
         {binary}\
         # root = \"/run/containerd/runsc\"     # runsc state; the containerd namespace is appended\n\
         # log_level = \"info\"\n\
         # grouping = true                     # one shim per pod\n\
         \n\
         # Global runsc flags: each key = \"value\" becomes --key=value.\n\
         [runsc_config]\n\
         # platform = \"systrap\"\n\
         # debug = \"true\"\n\
         # debug-log = \"/var/log/runsc/%ID%/\"\n"
    )
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Copy a binary into place.
    Copy {
        /// From.
        from: PathBuf,
        /// To.
        to: PathBuf,
    },
    /// Remove a file.
    Remove(PathBuf),
    /// Write a file (the containerd config, runsc.toml, a backup).
    Write {
        /// The file.
        path: PathBuf,
        /// Its new content.
        content: String,
        /// The file whose mode and owner it gets (itself when it is rewritten, the original
        /// for a backup); `None`: a new file, 0644 and owned by the installer.
        like: Option<PathBuf>,
    },
}

/// What an install or uninstall will do.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The steps, in order.
    pub actions: Vec<Action>,
    /// Unified diff of the containerd config.
    pub diff: String,
    /// containerd must be restarted to pick the change up.
    pub needs_restart: bool,
}

fn same_file_content(a: &Path, b: &Path) -> bool {
    match (std::fs::read(a), std::fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn diff(path: &Path, before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .header(
            &format!("{} (current)", path.display()),
            &format!("{} (new)", path.display()),
        )
        .to_string()
}

fn backup_path(config: &Path) -> PathBuf {
    let mut name = config.file_name().unwrap_or_default().to_os_string();
    name.push(".runsc-shim.bak");
    config.with_file_name(name)
}

/// Works out what `install` has to do.
pub fn plan_install(opts: &Options) -> Result<Plan, Error> {
    let mut plan = Plan::default();
    for (from, name) in [
        (Some(&opts.shim_binary), "containerd-shim-runsc-v1"),
        (opts.runsc.as_ref(), "runsc"),
    ] {
        let Some(from) = from else { continue };
        if !from.is_file() {
            return Err(Error::Io {
                context: format!("{} is not a file", from.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let to = opts.bin_dir.join(name);
        if !same_file_content(from, &to) {
            plan.actions.push(Action::Copy {
                from: from.clone(),
                to,
            });
        }
    }

    let existing = match std::fs::read_to_string(&opts.containerd_config) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(format!("read {}", opts.containerd_config.display()))(e)),
    };
    let before = existing.clone().unwrap_or_default();
    let mut doc = config::parse(&before, &opts.containerd_config)?;
    let version = if existing.as_deref().is_some_and(|t| !t.trim().is_empty()) {
        config::config_version(&doc)
    } else {
        // A new file: the layout containerd itself writes by default.
        let v = match opts.config_version {
            Some(v) => v,
            None if containerd_major(opts)? >= 2 => 3,
            None => 2,
        };
        doc.insert("version", toml_edit::value(v));
        v
    };
    let changed = config::add_runtime(&mut doc, version, &opts.runtime_name, &opts.runsc_config)?;
    let after = doc.to_string();
    if changed || existing.is_none() {
        plan.diff = diff(&opts.containerd_config, &before, &after);
        let backup = backup_path(&opts.containerd_config);
        if let Some(original) = &existing
            && !backup.exists()
        {
            plan.actions.push(Action::Write {
                path: backup,
                content: original.clone(),
                like: Some(opts.containerd_config.clone()),
            });
        }
        plan.actions.push(Action::Write {
            path: opts.containerd_config.clone(),
            content: after,
            like: existing.is_some().then(|| opts.containerd_config.clone()),
        });
        plan.needs_restart = true;
    }
    if !opts.runsc_config.exists() {
        let runsc = opts.runsc.as_ref().map(|_| opts.bin_dir.join("runsc"));
        plan.actions.push(Action::Write {
            path: opts.runsc_config.clone(),
            content: default_runsc_toml(runsc.as_deref()),
            like: None,
        });
    }
    Ok(plan)
}

/// Works out what `uninstall` has to do: take the runtime out of the config (or put back the
/// one the original config had, from the backup), leaving the rest as it is; remove the
/// installed shim binary, and `runsc.toml` if it is still the default.
pub fn plan_uninstall(opts: &Options) -> Result<Plan, Error> {
    let mut plan = Plan::default();
    let backup = backup_path(&opts.containerd_config);
    let original_runtime = std::fs::read_to_string(&backup).ok().and_then(|t| {
        let doc = config::parse(&t, &backup).ok()?;
        config::runtime(&doc, config::config_version(&doc), &opts.runtime_name)
    });
    if let Ok(before) = std::fs::read_to_string(&opts.containerd_config) {
        let mut doc = config::parse(&before, &opts.containerd_config)?;
        let version = config::config_version(&doc);
        let changed = match original_runtime {
            Some(table) => config::set_runtime(&mut doc, version, &opts.runtime_name, table)?,
            None => config::remove_runtime(&mut doc, version, &opts.runtime_name),
        };
        if changed {
            let after = doc.to_string();
            plan.diff = diff(&opts.containerd_config, &before, &after);
            plan.actions.push(Action::Write {
                path: opts.containerd_config.clone(),
                content: after,
                like: Some(opts.containerd_config.clone()),
            });
            plan.needs_restart = true;
        }
    }
    if backup.exists() {
        plan.actions.push(Action::Remove(backup));
    }
    let shim = opts.bin_dir.join("containerd-shim-runsc-v1");
    if shim.exists() {
        plan.actions.push(Action::Remove(shim));
    }
    if let Some(runsc) = &opts.runsc {
        let installed = opts.bin_dir.join("runsc");
        if same_file_content(runsc, &installed) {
            plan.actions.push(Action::Remove(installed));
        }
    }
    let defaults = [
        default_runsc_toml(None),
        default_runsc_toml(Some(&opts.bin_dir.join("runsc"))),
    ];
    if std::fs::read_to_string(&opts.runsc_config).is_ok_and(|t| defaults.contains(&t)) {
        plan.actions.push(Action::Remove(opts.runsc_config.clone()));
    }
    Ok(plan)
}

/// Human-readable description of a plan.
pub fn describe(plan: &Plan) -> String {
    let mut out = String::new();
    if plan.actions.is_empty() {
        out.push_str("nothing to do: already in place\n");
    }
    for a in &plan.actions {
        let _ = match a {
            Action::Copy { from, to } => {
                writeln!(out, "install {} -> {}", from.display(), to.display())
            }
            Action::Remove(p) => writeln!(out, "remove {}", p.display()),
            Action::Write { path, .. } => writeln!(out, "write {}", path.display()),
        };
    }
    out.push_str(&plan.diff);
    out
}

/// Mode and owner a written file gets.
#[derive(Debug, Clone, Copy)]
struct FileMode {
    mode: u32,
    owner: Option<(u32, u32)>,
}

impl FileMode {
    /// Those of `like`, if it exists; else `default` and the installer's own user.
    fn like(like: Option<&Path>, default: u32) -> FileMode {
        use std::os::unix::fs::MetadataExt;
        match like.and_then(|p| std::fs::metadata(p).ok()) {
            Some(m) => FileMode {
                mode: m.mode() & 0o7777,
                owner: Some((m.uid(), m.gid())),
            },
            None => FileMode {
                mode: default,
                owner: None,
            },
        }
    }
}

/// Writes `path` through a temporary file renamed over it. The temporary file is created
/// owner-only, then given its final owner and mode before any content is written: a
/// config holding credentials is never readable by anyone it was not readable by.
fn write_atomic(path: &Path, content: &[u8], fm: FileMode) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    }
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".runsc-shim.tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some((uid, gid)) = fm.owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(fm.mode))?;
        f.write_all(content)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(format!("write {}", tmp.display()))(e));
    }
    std::fs::rename(&tmp, path).map_err(io(format!("write {}", path.display())))
}

/// Carries out a plan.
pub fn apply(plan: &Plan) -> Result<(), Error> {
    for a in &plan.actions {
        match a {
            Action::Copy { from, to } => {
                let bytes = std::fs::read(from).map_err(io(format!("read {}", from.display())))?;
                write_atomic(to, &bytes, FileMode::like(None, 0o755))?;
            }
            Action::Remove(p) => {
                std::fs::remove_file(p).map_err(io(format!("remove {}", p.display())))?
            }
            Action::Write {
                path,
                content,
                like,
            } => write_atomic(
                path,
                content.as_bytes(),
                FileMode::like(like.as_deref(), 0o644),
            )?,
        }
    }
    Ok(())
}

/// How containerd can be restarted here.
pub fn restart_command() -> Option<Vec<String>> {
    if Path::new("/run/systemd/system").is_dir() {
        return Some(vec![
            "systemctl".into(),
            "restart".into(),
            "containerd".into(),
        ]);
    }
    // In a privileged DaemonSet pod with hostPID: the host's systemd, through pid 1.
    if Path::new("/proc/1/root/run/systemd/system").is_dir() {
        return Some(
            [
                "nsenter",
                "-t",
                "1",
                "-m",
                "-u",
                "-i",
                "-n",
                "-p",
                "--",
                "systemctl",
                "restart",
                "containerd",
            ]
            .map(String::from)
            .to_vec(),
        );
    }
    None
}

/// Restarts containerd, or explains how to.
pub fn restart() -> Result<String, Error> {
    let Some(cmd) = restart_command() else {
        return Ok(
            "containerd is not managed by systemd here: restart it yourself to apply the change"
                .into(),
        );
    };
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .output()
        .map_err(|e| Error::Restart(e.to_string()))?;
    if !out.status.success() {
        return Err(Error::Restart(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(format!("restarted containerd ({})", cmd.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_versions() {
        assert_eq!(
            parse_containerd_major(
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"
            ),
            Some(1)
        );
        assert_eq!(
            parse_containerd_major("containerd github.com/containerd/containerd v1.7.24 88bf19b2"),
            Some(1)
        );
        assert_eq!(
            parse_containerd_major("containerd github.com/containerd/containerd/v2 2.1.9+unknown"),
            Some(2)
        );
        assert_eq!(parse_containerd_major("nonsense"), None);
    }

    fn opts(dir: &Path) -> Options {
        let shim = dir.join("build/containerd-shim-runsc-v1");
        std::fs::create_dir_all(shim.parent().unwrap()).unwrap();
        std::fs::write(&shim, b"shim binary").unwrap();
        Options {
            containerd_config: dir.join("etc/config.toml"),
            runsc_config: dir.join("etc/runsc.toml"),
            bin_dir: dir.join("bin"),
            shim_binary: shim,
            // A stand-in that prints a containerd 1.7 version line.
            containerd: Some(PathBuf::from("/bin/echo")),
            ..Options::default()
        }
    }

    /// Issue 12, item 3: a config readable by root only (it may hold registry credentials)
    /// stays so, and so does its backup: same mode, same owner.
    #[test]
    fn modes_and_owners_are_kept() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(&o.containerd_config, "version = 2\n").unwrap();
        std::fs::set_permissions(&o.containerd_config, PermissionsExt::from_mode(0o600)).unwrap();
        // As root, a distinct owner shows that ownership is copied; otherwise our own.
        if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
            std::os::unix::fs::chown(&o.containerd_config, Some(4321), Some(4322)).unwrap();
        }
        let before = std::fs::metadata(&o.containerd_config).unwrap();
        apply(&plan_install(&o).unwrap()).unwrap();
        for path in [
            o.containerd_config.clone(),
            backup_path(&o.containerd_config),
        ] {
            let m = std::fs::metadata(&path).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o600, "{}", path.display());
            assert_eq!(
                (m.uid(), m.gid()),
                (before.uid(), before.gid()),
                "{}",
                path.display()
            );
        }
        let runsc = std::fs::metadata(&o.runsc_config).unwrap();
        assert_eq!(runsc.mode() & 0o7777, 0o644);
        let shim = std::fs::metadata(dir.path().join("bin/containerd-shim-runsc-v1")).unwrap();
        assert_eq!(shim.mode() & 0o7777, 0o755);
        apply(&plan_uninstall(&o).unwrap()).unwrap();
        let m = std::fs::metadata(&o.containerd_config).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600);
        assert_eq!((m.uid(), m.gid()), (before.uid(), before.gid()));
        // No temporary file is left.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("etc"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn install_twice_then_uninstall_restores() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        let original = "# keep me\nversion = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause\"\n";
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(&o.containerd_config, original).unwrap();

        let plan = plan_install(&o).unwrap();
        assert!(plan.needs_restart);
        assert!(
            plan.diff
                .contains("+[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc]"),
            "{}",
            plan.diff
        );
        apply(&plan).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("bin/containerd-shim-runsc-v1")).unwrap(),
            b"shim binary"
        );
        assert!(o.runsc_config.exists());
        assert_eq!(
            std::fs::read_to_string(backup_path(&o.containerd_config)).unwrap(),
            original
        );

        let again = plan_install(&o).unwrap();
        assert!(again.actions.is_empty(), "second run: {again:?}");
        assert!(describe(&again).starts_with("nothing to do"));

        apply(&plan_uninstall(&o).unwrap()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&o.containerd_config).unwrap(),
            original
        );
        assert!(!dir.path().join("bin/containerd-shim-runsc-v1").exists());
        assert!(!o.runsc_config.exists(), "the default runsc.toml goes too");
        assert!(!backup_path(&o.containerd_config).exists());
    }

    #[test]
    fn dry_run_plan_changes_nothing_until_applied() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(&o.containerd_config, "version = 3\n").unwrap();
        let plan = plan_install(&o).unwrap();
        assert!(describe(&plan).contains("io.containerd.cri.v1.runtime"));
        assert_eq!(
            std::fs::read_to_string(&o.containerd_config).unwrap(),
            "version = 3\n"
        );
        assert!(!o.runsc_config.exists());
    }

    #[test]
    fn broken_config_is_refused_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(&o.containerd_config, "version = 2\n[plugins\n").unwrap();
        let err = plan_install(&o).unwrap_err().to_string();
        assert!(
            err.contains("cannot parse") && err.contains("was not changed"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&o.containerd_config).unwrap(),
            "version = 2\n[plugins\n"
        );
    }

    /// A node that already had a `runsc` runtime (set up by hand, e.g. for gVisor's shim)
    /// gets it back on uninstall.
    #[test]
    fn uninstall_restores_a_preexisting_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let original = "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc]\n  runtime_type = \"io.containerd.runsc.v1\"\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc.options]\n    ConfigPath = \"/etc/other.toml\"\n";
        std::fs::write(&o.containerd_config, original).unwrap();
        apply(&plan_install(&o).unwrap()).unwrap();
        let installed = std::fs::read_to_string(&o.containerd_config).unwrap();
        assert!(
            installed.contains(&o.runsc_config.display().to_string()),
            "{installed}"
        );
        apply(&plan_uninstall(&o).unwrap()).unwrap();
        let restored = std::fs::read_to_string(&o.containerd_config).unwrap();
        assert!(
            restored.contains("ConfigPath = \"/etc/other.toml\""),
            "{restored}"
        );
        assert!(!restored.contains("TypeUrl"), "{restored}");
    }

    #[test]
    fn user_runsc_toml_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(&o.runsc_config, "[runsc_config]\nplatform = \"kvm\"\n").unwrap();
        std::fs::write(&o.containerd_config, "version = 2\n").unwrap();
        apply(&plan_install(&o).unwrap()).unwrap();
        apply(&plan_uninstall(&o).unwrap()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&o.runsc_config).unwrap(),
            "[runsc_config]\nplatform = \"kvm\"\n"
        );
    }
}
