//! `linux.maskedPaths` and `linux.readonlyPaths` as mounts runsc understands.
//!
//! runsc (20221219 and 20240729, measured) ignores both arrays: a container with
//! `maskedPaths: ["/etc/secret"]` reads the file, one with `readonlyPaths: ["/tmp"]` writes
//! there. runc masks a file by bind-mounting `/dev/null` over it, a directory with a read-only
//! tmpfs, and makes a read-only path a read-only bind mount of itself, skipping paths that do
//! not exist. The same is expressed here as spec mounts, which runsc does apply (measured with
//! both builds):
//!
//! - a masked file: a bind mount of the host's `/dev/null`, `ro` (reads are empty, `exec`
//!   fails with "Permission denied", writes with "Read-only file system");
//! - a masked directory: a `tmpfs` mount with `ro` (empty, writes fail);
//! - a read-only path: `ro` added to the spec mount of that destination, or else a bind mount
//!   (`rbind`, `ro`) of the host file behind the path (in the rootfs, or inside a bind mount of
//!   the spec) onto it, placed before the spec mounts below it so they stay visible (runsc
//!   mounts in spec order; a later mount covers an earlier one).
//!
//! Paths are resolved inside the rootfs as the container will see them (symlinks followed,
//! never leaving the rootfs), with `program::resolve`. Paths under `/proc` and `/sys`
//! are left to gVisor: there these are the sentry's own synthetic filesystems, with no host
//! data (containerd's defaults, `/proc/kcore`, `/proc/keys`, `/proc/timer_list`, `/proc/acpi`,
//! `/proc/scsi`, ..., do not exist in them), and a mount over a missing `/proc` entry would
//! create it. Paths under a mount that is not a bind mount (a tmpfs, `/dev`) are skipped: they
//! are empty when the container starts. The two arrays stay in the spec: runsc ignores them.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::program::{Resolved, normalize, resolve};

/// What a masked file becomes: the host's null device, as with runc.
pub const NULL_DEVICE: &str = "/dev/null";

/// Applies the spec's masked and read-only paths to its mounts, with `root` the container's
/// root filesystem (mounted). Returns whether the spec changed.
pub fn apply(spec: &mut Value, root: &Path) -> bool {
    let readonly = strings(spec, "/linux/readonlyPaths");
    let masked = strings(spec, "/linux/maskedPaths");
    let mut changed = false;
    // runc's order: read-only paths first, then the masks (which may lie below them).
    for path in &readonly {
        changed |= read_only(spec, root, path);
    }
    for path in &masked {
        changed |= mask(spec, root, path);
    }
    changed
}

fn strings(spec: &Value, pointer: &str) -> Vec<String> {
    spec.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// gVisor's own `/proc` and `/sys`.
fn is_sentry_fs(path: &Path) -> bool {
    path.starts_with("/proc") || path.starts_with("/sys")
}

/// A mount of the spec, as far as it matters here.
struct SpecMount {
    dest: PathBuf,
    bind: bool,
    source: Option<PathBuf>,
    kind: String,
}

fn spec_mounts(spec: &Value) -> Vec<SpecMount> {
    spec.get("mounts")
        .and_then(Value::as_array)
        .map(|mounts| {
            mounts
                .iter()
                .map(|m| {
                    let kind = m
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let bind = kind == "bind"
                        || m.get("options").and_then(Value::as_array).is_some_and(|o| {
                            o.iter()
                                .any(|o| matches!(o.as_str(), Some("bind" | "rbind")))
                        });
                    SpecMount {
                        dest: normalize(
                            m.get("destination")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        ),
                        bind,
                        source: m
                            .get("source")
                            .and_then(Value::as_str)
                            .filter(|s| s.starts_with('/'))
                            .map(PathBuf::from),
                        kind,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What a masked or read-only path is in the container.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A file the host has at `host`, seen at `dest` in the container.
    Host { dest: PathBuf, host: PathBuf },
    /// Exactly the destination of spec mount `index`.
    Mount { dest: PathBuf, index: usize },
    /// Nothing this shim handles, and why.
    Skip(&'static str),
}

fn target(spec: &Value, root: &Path, path: &str) -> Target {
    let path = normalize(path);
    if path == Path::new("/") {
        return Target::Skip("the root itself");
    }
    if is_sentry_fs(&path) {
        return Target::Skip("gVisor's own /proc or /sys");
    }
    let mounts = spec_mounts(spec);
    let dests: Vec<PathBuf> = mounts.iter().map(|m| m.dest.clone()).collect();
    let dest = match resolve(root, &path, &dests) {
        Resolved::Missing => return Target::Skip("does not exist"),
        Resolved::Rootfs(dest) => {
            let host = root.join(dest.strip_prefix("/").unwrap_or(&dest));
            return Target::Host { dest, host };
        }
        Resolved::UnderMount(dest) => dest,
    };
    if is_sentry_fs(&dest) {
        return Target::Skip("gVisor's own /proc or /sys");
    }
    // The mount that shows `dest`: the deepest one above it, the later of equals.
    let Some((index, mount)) = mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| m.dest != Path::new("/") && dest.starts_with(&m.dest))
        .max_by_key(|(i, m)| (m.dest.components().count(), *i))
    else {
        return Target::Skip("does not exist");
    };
    if mount.dest == dest {
        return Target::Mount { dest, index };
    }
    let (true, Some(source)) = (mount.bind, &mount.source) else {
        return Target::Skip("inside a mount that is not a bind mount");
    };
    // Inside a bind mount: the host path below its source, without symlinks (their targets
    // would mean something else on the host than in the container).
    let mut host = source.clone();
    for part in dest.strip_prefix(&mount.dest).unwrap_or(&dest).components() {
        host.push(part);
        match std::fs::symlink_metadata(&host) {
            Err(_) => return Target::Skip("does not exist"),
            Ok(m) if m.file_type().is_symlink() => {
                tracing::warn!(
                    path = %dest.display(), mount = %mount.dest.display(), kind = %mount.kind,
                    "masked or read-only path crosses a symlink inside a bind mount: not applied"
                );
                return Target::Skip("crosses a symlink inside a bind mount");
            }
            Ok(_) => {}
        }
    }
    Target::Host { dest, host }
}

fn mounts_mut(spec: &mut Value) -> &mut Vec<Value> {
    if !spec.get("mounts").is_some_and(Value::is_array) {
        spec["mounts"] = Value::Array(Vec::new());
    }
    match spec.get_mut("mounts") {
        Some(Value::Array(m)) => m,
        _ => unreachable!("mounts was just made an array"),
    }
}

/// Adds `mount` at `at` (the end if `None`) unless the same mount is there already (a
/// create retried on the same bundle).
fn add_mount(spec: &mut Value, mount: Value, at: Option<usize>) -> bool {
    let mounts = mounts_mut(spec);
    if mounts.contains(&mount) {
        return false;
    }
    match at {
        Some(i) => mounts.insert(i, mount),
        None => mounts.push(mount),
    }
    true
}

fn read_only(spec: &mut Value, root: &Path, path: &str) -> bool {
    match target(spec, root, path) {
        Target::Skip(why) => {
            tracing::debug!(path, why, "read-only path left alone");
            false
        }
        Target::Mount { index, .. } => {
            let mount = &mut mounts_mut(spec)[index];
            if !mount.get("options").is_some_and(Value::is_array) {
                mount["options"] = Value::Array(Vec::new());
            }
            let Some(Value::Array(opts)) = mount.get_mut("options") else {
                return false;
            };
            let before = opts.clone();
            opts.retain(|o| o.as_str() != Some("rw"));
            if !opts.iter().any(|o| o.as_str() == Some("ro")) {
                opts.push(Value::String("ro".into()));
            }
            *opts != before
        }
        Target::Host { dest, host } => {
            // Before the first spec mount below it, which must stay visible on top.
            let at = spec_mounts(spec)
                .iter()
                .position(|m| m.dest != dest && m.dest.starts_with(&dest));
            let mount = json!({
                "destination": dest.display().to_string(),
                "type": "bind",
                "source": host.display().to_string(),
                "options": ["rbind", "ro"],
            });
            add_mount(spec, mount, at)
        }
    }
}

fn mask(spec: &mut Value, root: &Path, path: &str) -> bool {
    let (dest, dir) = match target(spec, root, path) {
        Target::Skip(why) => {
            tracing::debug!(path, why, "masked path left alone");
            return false;
        }
        Target::Mount { dest, index } => {
            let m = &spec_mounts(spec)[index];
            let dir = match (m.bind, &m.source) {
                (true, Some(source)) => std::fs::metadata(source).is_ok_and(|m| m.is_dir()),
                _ => true,
            };
            (dest, dir)
        }
        Target::Host { dest, host } => {
            let dir = std::fs::metadata(&host).is_ok_and(|m| m.is_dir());
            (dest, dir)
        }
    };
    let mount = if dir {
        json!({
            "destination": dest.display().to_string(),
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["ro"],
        })
    } else {
        json!({
            "destination": dest.display().to_string(),
            "type": "bind",
            "source": NULL_DEVICE,
            "options": ["rbind", "ro"],
        })
    };
    add_mount(spec, mount, None)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A rootfs with files, a directory, links (one trying to leave the rootfs) and a volume
    /// directory outside it.
    fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("rootfs");
        let vol = d.path().join("volume");
        for dir in ["bin", "etc/conf.d", "tmp", "proc", "sys", "data", "dev"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("bin/busybox"), b"elf").unwrap();
        std::fs::write(root.join("bin/tool"), b"elf").unwrap();
        std::fs::write(root.join("etc/secret"), b"s").unwrap();
        symlink("busybox", root.join("bin/ls")).unwrap();
        symlink("../../../../etc/secret", root.join("bin/escape")).unwrap();
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::write(vol.join("sub/file"), b"v").unwrap();
        symlink("/etc", vol.join("link")).unwrap();
        (d, root, vol)
    }

    fn spec(masked: &[&str], readonly: &[&str], vol: &Path) -> Value {
        json!({
            "linux": {"maskedPaths": masked, "readonlyPaths": readonly},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/data", "type": "bind", "source": vol.display().to_string(), "options": ["rbind", "rw"]},
                {"destination": "/etc/hosts", "type": "bind", "source": "/h/hosts", "options": ["rbind", "rw"]},
            ]
        })
    }

    fn mounts(s: &Value) -> Vec<Value> {
        s["mounts"].as_array().unwrap().clone()
    }

    #[test]
    fn masked_file_gets_dev_null_and_directory_an_empty_read_only_tmpfs() {
        let (_d, root, vol) = fixture();
        let mut s = spec(&["/bin/tool", "/etc/conf.d", "/nothing/here"], &[], &vol);
        assert!(apply(&mut s, &root));
        let m = mounts(&s);
        assert_eq!(m.len(), 6, "{m:?}");
        assert_eq!(
            m[4],
            json!({"destination": "/bin/tool", "type": "bind", "source": "/dev/null", "options": ["rbind", "ro"]})
        );
        assert_eq!(
            m[5],
            json!({"destination": "/etc/conf.d", "type": "tmpfs", "source": "tmpfs", "options": ["ro"]})
        );
        // The arrays stay (runsc ignores them).
        assert_eq!(s["linux"]["maskedPaths"].as_array().unwrap().len(), 3);
        // A second run (create retried on the same bundle) adds nothing.
        assert!(!apply(&mut s, &root));
        assert_eq!(mounts(&s).len(), 6);
    }

    #[test]
    fn links_resolve_inside_the_rootfs() {
        let (_d, root, vol) = fixture();
        let mut s = spec(&["/bin/ls", "/bin/escape", "/../../bin/tool"], &[], &vol);
        assert!(apply(&mut s, &root));
        let dests: Vec<_> = mounts(&s)[4..]
            .iter()
            .map(|m| m["destination"].as_str().unwrap().to_owned())
            .collect();
        // /bin/ls -> busybox, like a mount over the link would; /bin/escape stays inside.
        assert_eq!(dests, ["/bin/busybox", "/etc/secret", "/bin/tool"]);
    }

    #[test]
    fn proc_sys_and_paths_under_other_mounts_are_left_to_gvisor() {
        let (_d, root, vol) = fixture();
        // containerd's defaults, plus a path under /dev's tmpfs.
        let mut s = spec(
            &[
                "/proc/acpi",
                "/proc/kcore",
                "/proc/keys",
                "/sys/firmware",
                "/sys/devices/virtual/powercap",
                "/dev/thing",
            ],
            &["/proc/bus", "/proc/sys", "/proc/sysrq-trigger", "/sys"],
            &vol,
        );
        let before = s.clone();
        assert!(!apply(&mut s, &root));
        assert_eq!(s, before);
        // No arrays at all.
        let mut s = json!({"mounts": []});
        assert!(!apply(&mut s, &root));
    }

    #[test]
    fn read_only_paths_bind_themselves_read_only_before_their_submounts() {
        let (_d, root, vol) = fixture();
        let mut s = spec(&[], &["/tmp", "/etc", "/etc/hosts", "/missing"], &vol);
        assert!(apply(&mut s, &root));
        let m = mounts(&s);
        assert_eq!(m.len(), 6, "{m:?}");
        assert_eq!(
            m[3],
            json!({"destination": "/etc", "type": "bind", "source": root.join("etc").display().to_string(), "options": ["rbind", "ro"]}),
            "/etc goes before the /etc/hosts mount, which stays visible"
        );
        assert_eq!(m[4]["destination"], "/etc/hosts");
        assert_eq!(
            m[4]["options"],
            json!(["rbind", "ro"]),
            "a mount destination gets ro instead of rw"
        );
        assert_eq!(
            m[5],
            json!({"destination": "/tmp", "type": "bind", "source": root.join("tmp").display().to_string(), "options": ["rbind", "ro"]})
        );
        assert!(!apply(&mut s, &root));
    }

    #[test]
    fn paths_inside_a_bind_mount_use_its_source() {
        let (_d, root, vol) = fixture();
        let mut s = spec(
            &["/data/sub/file", "/data/link/secret", "/data/none"],
            &["/data/sub"],
            &vol,
        );
        assert!(apply(&mut s, &root));
        let m = mounts(&s);
        assert_eq!(m.len(), 6, "{m:?}");
        assert_eq!(
            m[4],
            json!({"destination": "/data/sub", "type": "bind", "source": vol.join("sub").display().to_string(), "options": ["rbind", "ro"]})
        );
        // Found under the new read-only bind, and masked after it.
        assert_eq!(m[5]["destination"], "/data/sub/file");
        assert_eq!(m[5]["source"], NULL_DEVICE);
        // A whole mount masked: a directory source gets the tmpfs.
        let mut s = spec(&["/data"], &[], &vol);
        assert!(apply(&mut s, &root));
        assert_eq!(mounts(&s)[4]["type"], "tmpfs");
    }
}
