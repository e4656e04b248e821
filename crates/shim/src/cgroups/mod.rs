//! Host cgroups: what the shim decides at Create, and what it reads for statistics.
//!
//! On a node whose kubelet uses the systemd cgroup driver (EKS AL2023, Bottlerocket, Debian
//! and Ubuntu with cgroup v2), every container arrives with a systemd cgroupsPath
//! (`<pod>.slice:cri-containerd:<id>`, see [`path`]). The runsc builds deployed today
//! understand that form only with their `--systemd-cgroup` flag, which users rarely set
//! (gVisor #12392, #13258); without it `runsc create` fails. The shim detects the form and
//! passes the flag itself, for the sandbox and every container of the pod, unless
//! `[runsc_config]` decides otherwise.

pub mod host;
pub mod path;
pub mod resources;
pub mod stats;

pub use host::Cgroup;
pub use path::{CgroupsPath, SystemdPath};
pub use resources::PodLimits;

use crate::error::{Error, Result};

/// The runsc flag that switches runsc to systemd cgroup handling.
pub const SYSTEMD_FLAG: &str = "systemd-cgroup";

/// Whether the shim must add `--systemd-cgroup=true` for a container with cgroups path
/// `path`, given the value `[runsc_config]` sets for the flag (if any). A systemd path on a
/// host without systemd and cgroup v2, or with the flag set to false, is an error naming
/// both.
pub fn needs_systemd_flag(path: &CgroupsPath, configured: Option<&str>) -> Result<bool> {
    let CgroupsPath::Systemd(p) = path else {
        return Ok(false);
    };
    let shown = format!("{}:{}:{}", p.slice, p.prefix, p.name);
    match configured.map(parse_go_bool) {
        Some(Some(true)) => Ok(false),
        Some(Some(false)) => Err(Error::InvalidArgument(format!(
            "cgroupsPath {shown:?} is a systemd path (slice:prefix:name) but [runsc_config] \
             sets {SYSTEMD_FLAG} = false: remove that setting"
        ))),
        Some(None) => Err(Error::InvalidArgument(format!(
            "[runsc_config] {SYSTEMD_FLAG} = {:?} is not a boolean",
            configured.unwrap_or_default()
        ))),
        None if host::is_v2() && host::systemd_running() => Ok(true),
        None => Err(Error::InvalidArgument(format!(
            "cgroupsPath {shown:?} is a systemd path (slice:prefix:name) but this host does not \
             run systemd with cgroup v2: configure the kubelet and containerd with the cgroupfs \
             driver"
        ))),
    }
}

/// Go's `strconv.ParseBool`, which runsc (and containerd's flag parsing) apply to boolean
/// flag values.
pub fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The pod's cgroup (on a cgroup v2 host), where the kubelet sets pod-level limits: the
/// slice of a systemd path, or the last `pod*` directory of a cgroupfs path.
pub fn pod_cgroup(path: &CgroupsPath) -> Option<Cgroup> {
    if !host::is_v2() {
        return None;
    }
    let rel = match path {
        CgroupsPath::Systemd(p) => p.slice_cgroup(),
        CgroupsPath::Fs(p) => {
            let parts: Vec<&str> = p.split('/').collect();
            let i = parts.iter().rposition(|part| part.starts_with("pod"))?;
            parts[..=i].join("/")
        }
        CgroupsPath::None => return None,
    };
    let dir = std::path::Path::new(host::CGROUP_ROOT).join(rel.trim_start_matches('/'));
    dir.is_dir().then(|| Cgroup::new(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn systemd() -> CgroupsPath {
        CgroupsPath::parse("kubepods-pod1.slice:cri-containerd:c1").unwrap()
    }

    #[test]
    fn flag_only_for_systemd_paths_and_as_configured() {
        let fs = CgroupsPath::parse("/kubepods/pod1/c1").unwrap();
        assert!(!needs_systemd_flag(&fs, None).unwrap());
        assert!(!needs_systemd_flag(&CgroupsPath::None, None).unwrap());
        assert!(!needs_systemd_flag(&systemd(), Some("true")).unwrap());
        let err = needs_systemd_flag(&systemd(), Some("false"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kubepods-pod1.slice:cri-containerd:c1"),
            "{err}"
        );
        assert!(err.contains("systemd-cgroup = false"), "{err}");
        assert!(needs_systemd_flag(&systemd(), Some("yes")).is_err());
    }

    #[test]
    fn flag_follows_the_host() {
        let host_ok = host::is_v2() && host::systemd_running();
        match needs_systemd_flag(&systemd(), None) {
            Ok(add) => assert!(host_ok && add),
            Err(e) => {
                assert!(!host_ok);
                assert!(e.to_string().contains("does not run systemd"), "{e}");
            }
        }
    }
}
