//! Finds the program of a container's process in its root filesystem before `runsc create`;
//! the path resolver inside a rootfs is shared with [`crate::masked`].
//!
//! runc fails `create` when the program does not exist; runsc 20221219 only notices at
//! `start`, after containerd was told the task exists (containerd's client suite,
//! TestContainerNoBinaryExists and TestRegressionIssue6429, expects the create to fail). The
//! shim mounted the rootfs itself, so it can look the program up the way the container will:
//! `process.args[0]` with a `/` relative to `process.cwd`, otherwise through the `PATH` of
//! `process.env`, symlinks resolved inside the rootfs.
//!
//! The check only ever says "missing" when it is sure: a path that crosses a mount of the spec
//! (a volume may bring the program) or a spec with hooks (a hook may create it) is not judged.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// runsc's `PATH` when the process environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Symlinks followed before a path is called a loop (Linux's limit).
const MAX_LINKS: usize = 40;

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// An executable regular file.
    Executable,
    /// Something that cannot be executed (a directory, a file without an x bit).
    NotExecutable,
    /// Nothing.
    Missing,
    /// The path crosses a mount: its contents are not visible from here.
    Unknown,
}

/// Checks that the process of `spec` (the bundle's `config.json`) can find its program in
/// `root`. `Err` carries the reason, for the caller's error message.
pub fn check(root: &Path, spec: &Value) -> Result<(), String> {
    if spec.get("hooks").is_some_and(|h| !h.is_null()) {
        return Ok(());
    }
    let Some(process) = spec.get("process") else {
        return Ok(());
    };
    let Some(program) = process
        .pointer("/args/0")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    else {
        return Ok(());
    };
    let mounts: Vec<PathBuf> = spec
        .get("mounts")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|m| m.get("destination").and_then(Value::as_str))
                .map(normalize)
                .collect()
        })
        .unwrap_or_default();

    if program.contains('/') {
        let cwd = process.get("cwd").and_then(Value::as_str).unwrap_or("/");
        let path = Path::new("/").join(cwd).join(program);
        return match lookup(root, &path, &mounts) {
            Found::Executable | Found::Unknown => Ok(()),
            Found::NotExecutable => Err(format!(
                "exec: {program:?}: {} in the container is not an executable file",
                path.display()
            )),
            Found::Missing => Err(format!(
                "exec: {program:?}: no such file {} in the container's root filesystem",
                path.display()
            )),
        };
    }

    let env_path = process
        .get("env")
        .and_then(Value::as_array)
        .and_then(|env| {
            env.iter()
                .filter_map(Value::as_str)
                .filter_map(|e| e.strip_prefix("PATH="))
                .next_back()
        })
        .unwrap_or(DEFAULT_PATH);
    let mut not_executable = None;
    for dir in env_path.split(':').filter(|d| d.starts_with('/')) {
        let path = Path::new(dir).join(program);
        match lookup(root, &path, &mounts) {
            Found::Executable | Found::Unknown => return Ok(()),
            Found::NotExecutable => {
                not_executable.get_or_insert(path);
            }
            Found::Missing => {}
        }
    }
    Err(match not_executable {
        Some(path) => format!(
            "exec: {program:?}: {} in the container is not an executable file",
            path.display()
        ),
        None => format!("exec: {program:?}: executable file not found in $PATH ({env_path})"),
    })
}

/// A mount destination made absolute and cleaned of `.`/`..` (containerd cleans them too).
pub(crate) fn normalize(dest: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(dest).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Where a path of the container leads in its root filesystem.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// An existing file of the rootfs: its path in the container, symlinks resolved.
    Rootfs(PathBuf),
    /// Nothing there.
    Missing,
    /// The path (symlinks resolved up to there) reaches a mount destination: what follows is
    /// the mount's, not the rootfs's.
    UnderMount(PathBuf),
}

/// Resolves `path` (absolute, inside the container) in `root`, following symlinks as the
/// container would see them: absolute targets start again at `root`, `..` stops at it. A
/// path never leaves `root`. `mounts` are the (normalized) mount destinations of the spec;
/// `/` among them is ignored.
pub(crate) fn resolve(root: &Path, path: &Path, mounts: &[PathBuf]) -> Resolved {
    let under_mount = |p: &Path| {
        mounts
            .iter()
            .any(|m| m != Path::new("/") && p.starts_with(m))
    };
    let mut todo: VecDeque<OsString> = components(path);
    let mut cur = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&part);
        if under_mount(&next) {
            let mut rest = next;
            for c in todo {
                if c == ".." {
                    rest.pop();
                } else {
                    rest.push(c);
                }
            }
            return Resolved::UnderMount(rest);
        }
        let host = root.join(next.strip_prefix("/").unwrap_or(&next));
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            return Resolved::Missing;
        };
        if meta.file_type().is_symlink() {
            links += 1;
            let Ok(target) = std::fs::read_link(&host) else {
                return Resolved::Missing;
            };
            if links > MAX_LINKS {
                return Resolved::Missing;
            }
            if target.is_absolute() {
                cur = PathBuf::from("/");
            }
            for c in components(&target).into_iter().rev() {
                todo.push_front(c);
            }
        } else {
            cur = next;
        }
    }
    Resolved::Rootfs(cur)
}

/// Looks `path` (absolute, inside the container) up in `root` (see [`resolve`]).
fn lookup(root: &Path, path: &Path, mounts: &[PathBuf]) -> Found {
    let cur = match resolve(root, path, mounts) {
        Resolved::Rootfs(p) => p,
        Resolved::Missing => return Found::Missing,
        Resolved::UnderMount(_) => return Found::Unknown,
    };
    let host = root.join(cur.strip_prefix("/").unwrap_or(&cur));
    match std::fs::metadata(&host) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Found::Executable,
        Ok(_) => Found::NotExecutable,
        Err(_) => Found::Missing,
    }
}

/// The names of `path`, with `..` kept and `/`/`.` dropped.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use serde_json::json;

    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in ["bin", "usr/bin", "usr/local/bin", "etc", "data", "app"] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::fs::write(r.join("bin/busybox"), b"#!").unwrap();
        std::fs::set_permissions(r.join("bin/busybox"), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::write(r.join("etc/passwd"), b"root").unwrap();
        std::fs::set_permissions(r.join("etc/passwd"), PermissionsExt::from_mode(0o644)).unwrap();
        // Absolute and relative links, and a chain through a directory link.
        symlink("/bin/busybox", r.join("bin/sh")).unwrap();
        symlink("../../bin/busybox", r.join("usr/bin/env")).unwrap();
        symlink("/usr/bin", r.join("usr/local/bin/ub")).unwrap();
        symlink("../../../../../../bin/busybox", r.join("app/escape")).unwrap();
        symlink("loop2", r.join("bin/loop1")).unwrap();
        symlink("loop1", r.join("bin/loop2")).unwrap();
        symlink("/nowhere/x", r.join("bin/dangling")).unwrap();
        std::fs::write(r.join("app/run"), b"#!").unwrap();
        std::fs::set_permissions(r.join("app/run"), PermissionsExt::from_mode(0o700)).unwrap();
        d
    }

    fn spec(args: &[&str], env: &[&str], cwd: &str) -> Value {
        json!({
            "process": {"args": args, "env": env, "cwd": cwd},
            "mounts": [{"destination": "/proc"}, {"destination": "/data"}]
        })
    }

    #[test]
    fn finds_programs_through_path_and_links() {
        let d = rootfs();
        let r = d.path();
        for (args, env, cwd) in [
            (vec!["sh", "-c", "true"], vec!["PATH=/usr/bin:/bin"], "/"),
            (vec!["sh"], vec![], "/"), // runsc's default PATH
            (vec!["env"], vec!["PATH=/usr/bin"], "/"),
            (vec!["/bin/sh"], vec![], "/"),
            (vec!["./run"], vec![], "/app"),
            (vec!["../app/run"], vec![], "/etc"),
            (vec!["/usr/local/bin/ub/env"], vec![], "/"),
            // `..` cannot leave the rootfs: the link resolves to /bin/busybox.
            (vec!["/app/escape"], vec![], "/"),
            // Under a mount: not judged.
            (vec!["/data/tool"], vec![], "/"),
            (vec!["tool"], vec!["PATH=/nothing:/data"], "/"),
        ] {
            check(r, &spec(&args, &env, cwd)).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }

    #[test]
    fn missing_and_non_executable_programs_are_named() {
        let d = rootfs();
        let r = d.path();
        let e = check(r, &spec(&["nothing"], &["PATH=/usr/bin:/bin"], "/")).unwrap_err();
        assert!(
            e.contains("\"nothing\"") && e.contains("not found in $PATH (/usr/bin:/bin)"),
            "{e}"
        );
        let e = check(r, &spec(&["nothing"], &[], "/")).unwrap_err();
        assert!(e.contains(DEFAULT_PATH), "{e}");
        let e = check(r, &spec(&["/bin/nothing"], &[], "/")).unwrap_err();
        assert!(e.contains("no such file /bin/nothing"), "{e}");
        let e = check(r, &spec(&["/etc/passwd"], &[], "/")).unwrap_err();
        assert!(e.contains("not an executable file"), "{e}");
        let e = check(r, &spec(&["passwd"], &["PATH=/etc"], "/")).unwrap_err();
        assert!(
            e.contains("/etc/passwd in the container is not an executable"),
            "{e}"
        );
        let e = check(r, &spec(&["/usr/bin"], &[], "/")).unwrap_err();
        assert!(e.contains("not an executable file"), "{e}");
        for p in ["/bin/loop1", "/bin/dangling"] {
            assert!(check(r, &spec(&[p], &[], "/")).is_err(), "{p}");
        }
    }

    #[test]
    fn specs_it_cannot_judge_pass() {
        let d = rootfs();
        let r = d.path();
        let mut s = spec(&["nothing"], &[], "/");
        s["hooks"] = json!({"createRuntime": [{"path": "/usr/bin/true"}]});
        check(r, &s).unwrap();
        check(r, &json!({"process": {"args": []}})).unwrap();
        check(r, &json!({})).unwrap();
        // A mount of the whole root hides nothing more than the rootfs itself.
        let s = json!({"process": {"args": ["nothing"]}, "mounts": [{"destination": "/"}]});
        assert!(check(r, &s).is_err());
    }
}
