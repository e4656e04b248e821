//! A node with the systemd cgroup driver, as the kubelet makes it: `kubepods.slice`, a slice
//! per QoS class and one per pod, as systemd units with the pod's limits; and reading the
//! cgroup v2 tree below them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::containerd::run;

/// The unified hierarchy.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether this host is what the node suite needs: cgroup v2 with systemd as PID 1.
pub fn is_systemd_v2_host() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").is_file()
        && Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> Result<String> {
    let out = run(
        Command::new("systemctl").args(args),
        Duration::from_secs(60),
    )?;
    if out.code != 0 {
        bail!("systemctl {args:?}: {}{}", out.stdout, out.stderr);
    }
    Ok(out.stdout)
}

/// `a-b-c.slice` -> `/a.slice/a-b.slice/a-b-c.slice`.
pub fn slice_path(name: &str) -> String {
    let stem = name.trim_end_matches(".slice");
    let mut out = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push_str(&format!("/{prefix}.slice"));
    }
    out
}

/// A slice unit made for a test (a runtime unit file under `/run/systemd/system`), stopped
/// and removed on drop.
#[derive(Debug)]
pub struct Slice {
    /// `kubepods-burstable-pod<uid>.slice`.
    pub name: String,
}

impl Slice {
    /// Creates and starts slice `name` with `[Slice]` properties (`MemoryMax=...`).
    pub fn start(name: &str, properties: &[&str]) -> Result<Slice> {
        let unit = format!(
            "[Unit]\nDescription=runsc-shim node test {name}\nDefaultDependencies=no\n[Slice]\n{}\n",
            properties.join("\n")
        );
        std::fs::write(Path::new("/run/systemd/system").join(name), unit)?;
        systemctl(&["daemon-reload"])?;
        systemctl(&["start", name])?;
        Ok(Slice { name: name.into() })
    }

    /// The slice's cgroup directory.
    pub fn dir(&self) -> PathBuf {
        Path::new(CGROUP_ROOT).join(slice_path(&self.name).trim_start_matches('/'))
    }

    /// The cgroup parent the kubelet hands CRI for a pod in this slice.
    pub fn cgroup_parent(&self) -> String {
        slice_path(&self.name)
    }

    /// The child cgroups (scopes) in the slice.
    pub fn children(&self) -> Vec<String> {
        std::fs::read_dir(self.dir())
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Slice {
    fn drop(&mut self) {
        let _ = systemctl(&["stop", &self.name]);
        let _ = std::fs::remove_file(Path::new("/run/systemd/system").join(&self.name));
        let _ = systemctl(&["daemon-reload"]);
    }
}

/// The kubelet's slices for one pod of QoS class Burstable: `kubepods.slice`,
/// `kubepods-burstable.slice` and `kubepods-burstable-pod<uid>.slice` (dashes of the uid
/// become underscores), the pod's with `properties`.
#[derive(Debug)]
pub struct PodSlices {
    /// The pod's slice (dropped first).
    pub pod: Slice,
    _qos: Slice,
    _kubepods: Slice,
}

impl PodSlices {
    /// Creates the three slices.
    pub fn start(uid: &str, properties: &[&str]) -> Result<PodSlices> {
        let kubepods = Slice::start("kubepods.slice", &[])?;
        let qos = Slice::start("kubepods-burstable.slice", &[])?;
        let pod = Slice::start(
            &format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_")),
            properties,
        )?;
        Ok(PodSlices {
            pod,
            _qos: qos,
            _kubepods: kubepods,
        })
    }
}

/// The cgroup v2 directory of process `pid` (relative to the root, with a leading `/`).
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_owned())
}

/// A cgroup file's content, trimmed.
pub fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_nest() {
        assert_eq!(
            slice_path("kubepods-burstable-podab_c.slice"),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podab_c.slice"
        );
    }
}
