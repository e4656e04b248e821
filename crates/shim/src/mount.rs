//! Mounting the container rootfs from the mounts in the create request.
//!
//! Option handling follows containerd's `mount.Mount` on Linux: known flag words become mount
//! flags, the rest is filesystem data; propagation and read-only bind mounts take a second
//! call. An overlay whose option string does not fit in a page is shortened by naming the
//! layers' common parent directory through `/proc/self/fd` (containerd forks and `chdir`s for
//! the same purpose; an fd path needs no fork).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::error::{Error, IoContext, Result};

/// One mount of the rootfs, as containerd sends it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// Filesystem type (`overlay`, `bind`, ...).
    pub kind: String,
    /// Source.
    pub source: String,
    /// Target below the rootfs (empty: the rootfs itself).
    pub target: String,
    /// Options (`ro`, `lowerdir=...`).
    pub options: Vec<String>,
}

const PROPAGATION: MsFlags = MsFlags::MS_SHARED
    .union(MsFlags::MS_PRIVATE)
    .union(MsFlags::MS_SLAVE)
    .union(MsFlags::MS_UNBINDABLE);

/// `(set, clear)` flags for a mount option word, or `None` for filesystem data.
fn flag(word: &str) -> Option<(MsFlags, MsFlags)> {
    let none = MsFlags::empty();
    Some(match word {
        "async" => (none, MsFlags::MS_SYNCHRONOUS),
        "atime" => (none, MsFlags::MS_NOATIME),
        "bind" => (MsFlags::MS_BIND, none),
        "defaults" => (none, none),
        "dev" => (none, MsFlags::MS_NODEV),
        "diratime" => (none, MsFlags::MS_NODIRATIME),
        "dirsync" => (MsFlags::MS_DIRSYNC, none),
        "exec" => (none, MsFlags::MS_NOEXEC),
        "mand" => (MsFlags::MS_MANDLOCK, none),
        "noatime" => (MsFlags::MS_NOATIME, none),
        "nodev" => (MsFlags::MS_NODEV, none),
        "nodiratime" => (MsFlags::MS_NODIRATIME, none),
        "noexec" => (MsFlags::MS_NOEXEC, none),
        "nomand" => (none, MsFlags::MS_MANDLOCK),
        "norelatime" => (none, MsFlags::MS_RELATIME),
        "nostrictatime" => (none, MsFlags::MS_STRICTATIME),
        "nosuid" => (MsFlags::MS_NOSUID, none),
        "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, none),
        "relatime" => (MsFlags::MS_RELATIME, none),
        "remount" => (MsFlags::MS_REMOUNT, none),
        "ro" => (MsFlags::MS_RDONLY, none),
        "rw" => (none, MsFlags::MS_RDONLY),
        "strictatime" => (MsFlags::MS_STRICTATIME, none),
        "suid" => (none, MsFlags::MS_NOSUID),
        "sync" => (MsFlags::MS_SYNCHRONOUS, none),
        "private" => (MsFlags::MS_PRIVATE, none),
        "rprivate" => (MsFlags::MS_PRIVATE | MsFlags::MS_REC, none),
        "shared" => (MsFlags::MS_SHARED, none),
        "rshared" => (MsFlags::MS_SHARED | MsFlags::MS_REC, none),
        "slave" => (MsFlags::MS_SLAVE, none),
        "rslave" => (MsFlags::MS_SLAVE | MsFlags::MS_REC, none),
        "unbindable" => (MsFlags::MS_UNBINDABLE, none),
        "runbindable" => (MsFlags::MS_UNBINDABLE | MsFlags::MS_REC, none),
        _ => return None,
    })
}

/// Splits options into flags and filesystem data.
fn parse_options(options: &[String]) -> (MsFlags, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match flag(o) {
            Some((set, clear)) => {
                flags.remove(clear);
                flags.insert(set);
            }
            None => data.push(o.clone()),
        }
    }
    (flags, data)
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(4096)
}

/// Shortens overlay `lowerdir`/`upperdir`/`workdir` paths by replacing their common parent
/// with an open directory descriptor. Returns the directory (keep it open until mounted).
fn compact_overlay(data: &mut [String]) -> Result<Option<File>> {
    let dirs: Vec<&str> = data
        .iter()
        .filter_map(|o| o.split_once('='))
        .filter(|(k, _)| matches!(*k, "lowerdir" | "upperdir" | "workdir"))
        .flat_map(|(_, v)| v.split(':'))
        .collect();
    let Some(first) = dirs.first() else {
        return Ok(None);
    };
    let mut prefix = Path::new(first)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    while !dirs.iter().all(|d| Path::new(d).starts_with(&prefix)) {
        if !prefix.pop() {
            return Ok(None);
        }
    }
    if prefix.as_os_str().len() <= 1 {
        return Ok(None);
    }
    let dir = File::open(&prefix).context(|| format!("open overlay layer parent {prefix:?}"))?;
    let fd_path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let prefix = prefix.to_string_lossy().into_owned();
    for o in data.iter_mut() {
        let Some((k, v)) = o.split_once('=') else {
            continue;
        };
        if !matches!(k, "lowerdir" | "upperdir" | "workdir") {
            continue;
        }
        let v = v
            .split(':')
            .map(|p| match p.strip_prefix(&prefix) {
                Some(rest) => format!("{fd_path}{rest}"),
                None => p.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(":");
        *o = format!("{k}={v}");
    }
    Ok(Some(dir))
}

/// Mounts `m` at `target`.
pub fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let (flags, mut data) = parse_options(&m.options);
    let fail = |what: &str, e: Errno| {
        Error::io(
            format!("{what} {} ({}) on {}", m.source, m.kind, target.display()),
            std::io::Error::from(e),
        )
    };
    let _dir_guard = if m.kind == "overlay" && data.join(",").len() > page_size() - 512 {
        compact_overlay(&mut data)?
    } else {
        None
    };
    let data = data.join(",");
    if data.len() >= page_size() {
        return Err(Error::InvalidArgument(format!(
            "mount options for {} are longer than a page ({} bytes)",
            m.source,
            data.len()
        )));
    }
    let kind = if m.kind == "bind" {
        None
    } else {
        Some(m.kind.as_str())
    };
    let data_opt = if data.is_empty() {
        None
    } else {
        Some(data.as_str())
    };
    if !flags.contains(MsFlags::MS_REMOUNT) || data_opt.is_some() {
        mount(
            Some(m.source.as_str()),
            target,
            kind,
            flags - PROPAGATION,
            data_opt,
        )
        .map_err(|e| fail("mount", e))?;
    }
    if flags.intersects(PROPAGATION) {
        let prop = flags & (PROPAGATION | MsFlags::MS_REC);
        mount(None::<&str>, target, None::<&str>, prop, None::<&str>)
            .map_err(|e| fail("set propagation of", e))?;
    }
    if flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
        let ro = (flags - PROPAGATION) | MsFlags::MS_REMOUNT;
        mount(None::<&str>, target, None::<&str>, ro, None::<&str>)
            .map_err(|e| fail("remount read-only", e))?;
    }
    Ok(())
}

/// Mounts every rootfs mount at `rootfs` (a mount's own target is relative to it). On
/// failure the mounts made so far are undone.
pub fn mount_rootfs(mounts: &[Mount], rootfs: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        let target = match m.target.trim_start_matches('/') {
            "" => rootfs.to_path_buf(),
            rel => rootfs.join(rel),
        };
        if let Err(e) = mount_one(m, &target) {
            for done in mounts[..i].iter().rev() {
                let t = rootfs.join(done.target.trim_start_matches('/'));
                let _ = unmount_all(&t);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts everything stacked on `target` (no error if nothing is mounted there).
pub fn unmount_all(target: &Path) -> Result<()> {
    if !target.exists() {
        return Ok(());
    }
    for _ in 0..64 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) => {
                umount2(target, MntFlags::MNT_DETACH)
                    .context(|| format!("unmount {}", target.display()))?;
            }
            Err(e) => return Err(e).context(|| format!("unmount {}", target.display())),
        }
    }
    Err(Error::FailedPrecondition(format!(
        "{} is still mounted after 64 unmounts",
        target.display()
    )))
}

/// Whether anything is mounted at `path` (from `/proc/self/mountinfo`).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = PathBuf::from(path);
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(&unescape(mp)) == want)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(o: &[&str]) -> Vec<String> {
        o.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) =
            parse_options(&opts(&["ro", "nosuid", "lowerdir=/a:/b", "rbind", "rw"]));
        assert_eq!(
            flags,
            MsFlags::MS_NOSUID | MsFlags::MS_BIND | MsFlags::MS_REC
        );
        assert_eq!(data, ["lowerdir=/a:/b"]);
    }

    #[test]
    fn overlay_paths_are_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir
            .path()
            .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
        for n in ["1", "2", "3"] {
            std::fs::create_dir_all(base.join(n).join("fs")).unwrap();
        }
        let b = base.display();
        let mut data = vec![
            format!("lowerdir={b}/2/fs:{b}/1/fs"),
            format!("upperdir={b}/3/fs"),
            format!("workdir={b}/3/work"),
            "index=off".to_owned(),
        ];
        let guard = compact_overlay(&mut data).unwrap().unwrap();
        let fd = format!("/proc/self/fd/{}", guard.as_raw_fd());
        assert_eq!(data[0], format!("lowerdir={fd}/2/fs:{fd}/1/fs"));
        assert_eq!(data[1], format!("upperdir={fd}/3/fs"));
        assert_eq!(data[3], "index=off");
        // The descriptor path resolves to the same directory.
        assert!(Path::new(&format!("{fd}/2/fs")).is_dir());
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
