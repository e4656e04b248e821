//! What a test run may leave behind, and cleaning it up.

use std::path::Path;

/// A process: pid and command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Pid.
    pub pid: u32,
    /// Command line, arguments joined by spaces.
    pub cmdline: String,
}

/// All processes whose command line matches `pred`.
pub fn processes(pred: impl Fn(&str) -> bool) -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if raw.is_empty() {
            continue;
        }
        let cmdline = String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim()
            .to_owned();
        if pred(&cmdline) {
            out.push(Proc { pid, cmdline });
        }
    }
    out
}

/// The directories containerd unpacks a checkpoint into for a restore, which it never
/// removes, with any runtime (`ctrd-checkpoint*` in `$XDG_RUNTIME_DIR`, else the temp
/// directory; see docs/checkpoint.md).
pub fn checkpoint_dirs() -> std::collections::BTreeSet<std::path::PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::read_dir(base)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("ctrd-checkpoint")
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the checkpoint directories containerd made since `before` was listed.
pub fn remove_new_checkpoint_dirs(before: &std::collections::BTreeSet<std::path::PathBuf>) {
    for dir in checkpoint_dirs().difference(before) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Shim processes serving the containerd at `address`.
pub fn shims(address: &Path) -> Vec<Proc> {
    let a = address.display().to_string();
    processes(|c| c.contains("containerd-shim-runsc-v1") && c.contains(&a))
}

/// runsc processes (sandbox, gofer, helpers) using runsc root `root`.
pub fn runsc_processes(root: &Path) -> Vec<Proc> {
    let r = root.display().to_string();
    processes(|c| (c.starts_with("runsc") || c.contains("/runsc ")) && c.contains(&r))
}

/// Mount points under `prefix`.
pub fn mounts_under(prefix: &Path) -> Vec<String> {
    let p = prefix.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| mp.starts_with(&p))
        .map(str::to_owned)
        .collect()
}

/// Entries of a directory (empty if it does not exist).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs the processes.
pub fn kill_all(procs: &[Proc]) {
    for p in procs {
        // SAFETY: kill(2) with a valid signal; the pid may be gone already (harmless).
        unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
    }
}

/// Lazily unmounts everything under `prefix`, deepest first.
pub fn unmount_under(prefix: &Path) {
    let mut mps = mounts_under(prefix);
    mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mp in mps {
        if let Ok(c) = std::ffi::CString::new(mp) {
            // SAFETY: umount2 with a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
