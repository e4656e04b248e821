//! Spec changes for Kubernetes pods, as gVisor users rely on them (gVisor's
//! `pkg/shim/v1/utils/volumes.go` and `setPodCgroup`):
//!
//! - the sandbox joins the **pod** cgroup (annotation `dev.gvisor.spec.cgroup-parent`), not the
//!   pause container's, so pod-level limits apply to the whole sandbox;
//! - **volume hints** `dev.gvisor.spec.mount.<name>.type` (passed through CRI's
//!   `pod_annotations`): the sandbox learns each volume's host path from the kubelet's pod
//!   directory; empty EmptyDirs become sandbox-internal tmpfs (fast), others shared bind
//!   mounts; containers' mounts of the volume take the same type;
//! - `/dev/shm` becomes one tmpfs shared by all containers of the pod (glibc's `shm_open`
//!   needs a tmpfs there).
//!
//! Edits are made on the JSON document so fields this shim does not model are kept.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::spec::{CRI_SANDBOX_LOG_DIR, ContainerKind};

/// Annotation making runsc place the sandbox in this cgroup.
pub const CGROUP_PARENT: &str = "dev.gvisor.spec.cgroup-parent";
const VOLUME_PREFIX: &str = "dev.gvisor.spec.mount.";
const EMPTY_DIR_PREFIX: &str = "dev.gvisor.empty-dir.";
const EMPTY_DIR_VOLUMES: &str = "kubernetes.io~empty-dir";
const SELF_FILESTORE_PREFIX: &str = ".gvisor.filestore.";
const DEVSHM_NAME: &str = "gvisorinternaldevshm";
const UDS_FLAG: &str = "dev.gvisor.flag.host-uds";
const GCSFUSE_TMP: &str = "gke-gcsfuse-tmp";

/// Where the kubelet keeps pods' volumes.
pub const KUBELET_PODS_DIR: &str = "/var/lib/kubelet/pods";

fn annotations(spec: &mut Value) -> &mut Map<String, Value> {
    if !spec.get("annotations").is_some_and(Value::is_object) {
        spec["annotations"] = Value::Object(Map::new());
    }
    match spec.get_mut("annotations") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("annotations was just made an object"),
    }
}

fn ann(spec: &Value, key: &str) -> Option<String> {
    spec.get("annotations")?
        .get(key)?
        .as_str()
        .map(str::to_owned)
}

/// Applies every pod change to `spec`; returns whether anything changed.
pub fn prepare(spec: &mut Value, kind: &ContainerKind, kubelet_pods: &Path) -> Result<bool> {
    let sandbox = kind.is_root();
    let mut changed = false;
    if sandbox {
        changed |= set_pod_cgroup(spec);
    }
    changed |= update_volumes(spec, sandbox, kubelet_pods)?;
    changed |= configure_shm(spec, sandbox);
    Ok(changed)
}

/// Points the sandbox at the pod cgroup: the last `pod*` element of `linux.cgroupsPath`.
fn set_pod_cgroup(spec: &mut Value) -> bool {
    let Some(path) = spec
        .pointer("/linux/cgroupsPath")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return false;
    };
    let parts: Vec<&str> = path.split('/').collect();
    let Some(i) = parts.iter().rposition(|p| p.starts_with("pod")) else {
        return false;
    };
    let parent = parts[..=i].join("/");
    let parent = if path.starts_with('/') && !parent.starts_with('/') {
        format!("/{parent}")
    } else {
        parent
    };
    annotations(spec).insert(CGROUP_PARENT.to_owned(), Value::String(parent));
    true
}

/// The pod UID from the CRI log directory (`.../<namespace>_<name>_<uid>`, or the old
/// `.../<uid>`).
fn pod_uid(spec: &Value) -> Option<String> {
    let dir = ann(spec, CRI_SANDBOX_LOG_DIR)?;
    let base = Path::new(&dir).file_name()?.to_str()?.to_owned();
    let fields: Vec<&str> = base.split('_').collect();
    match fields.len() {
        1 => Some(fields[0].to_owned()),
        3 => Some(fields[2].to_owned()),
        _ => None,
    }
}

/// `<pods>/<uid>/volumes/*/<volume>`: exactly one match.
fn volume_path(pods: &Path, uid: &str, volume: &str) -> Result<String> {
    let volumes = pods.join(uid).join("volumes");
    let mut found = Vec::new();
    if let Ok(kinds) = std::fs::read_dir(&volumes) {
        for k in kinds.flatten() {
            let candidate = k.path().join(volume);
            if candidate.exists() {
                found.push(candidate.display().to_string());
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        _ => Err(Error::InvalidArgument(format!(
            "volume hint for {volume:?}: expected one volume under {}/*/, found {found:?}",
            volumes.display()
        ))),
    }
}

/// Whether `path` is `<pods>/*/volumes/*/<volume>`.
fn is_volume_path(pods: &Path, volume: &str, path: &str) -> bool {
    let Ok(rest) = Path::new(path).strip_prefix(pods) else {
        return false;
    };
    let parts: Vec<_> = rest.components().collect();
    parts.len() == 4 && parts[1].as_os_str() == "volumes" && parts[3].as_os_str() == volume
}

fn force_shared(spec: &Value, volume: &str) -> bool {
    ann(spec, &format!("{EMPTY_DIR_PREFIX}{volume}.force-shared"))
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "True" | "TRUE"))
}

/// An EmptyDir is "empty" if it has no entries but gVisor's own filestore file.
fn is_empty_dir_empty(path: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else {
        return true;
    };
    let names: Vec<String> = entries
        .flatten()
        .take(2)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.is_empty() || (names.len() == 1 && names[0].starts_with(SELF_FILESTORE_PREFIX))
}

/// Changes a mount's type; for anything but bind, drops `bind`/`rbind` options.
fn change_mount_type(m: &mut Value, to: &str) -> bool {
    let mut changed = false;
    if m.get("type").and_then(Value::as_str) != Some(to) {
        m["type"] = Value::String(to.to_owned());
        changed = true;
    }
    if to != "bind"
        && let Some(Value::Array(opts)) = m.get_mut("options")
    {
        let before = opts.len();
        opts.retain(|o| !matches!(o.as_str(), Some("bind" | "rbind")));
        changed |= opts.len() != before;
    }
    changed
}

fn update_volumes(spec: &mut Value, sandbox: bool, pods: &Path) -> Result<bool> {
    let hints: Vec<(String, String, String)> = spec
        .get("annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let rest = k.strip_prefix(VOLUME_PREFIX)?;
                    let (volume, field) = rest.rsplit_once('.')?;
                    (field == "type" && !volume.contains('.')).then(|| {
                        (
                            k.clone(),
                            volume.to_owned(),
                            v.as_str().unwrap_or_default().to_owned(),
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut changed = false;
    for (key, volume, kind) in hints {
        if sandbox {
            let Some(uid) = pod_uid(spec) else {
                return Ok(changed);
            };
            let path = volume_path(pods, &uid, &volume)?;
            let a = annotations(spec);
            a.insert(
                format!("{VOLUME_PREFIX}{volume}.source"),
                Value::String(path.clone()),
            );
            if path.contains(EMPTY_DIR_VOLUMES) {
                let shared = force_shared(spec, &volume);
                let a = annotations(spec);
                if !shared && is_empty_dir_empty(&path) {
                    a.insert(key.clone(), Value::String("tmpfs".into()));
                } else {
                    a.insert(key.clone(), Value::String("bind".into()));
                    a.insert(
                        format!("{VOLUME_PREFIX}{volume}.share"),
                        Value::String("shared".into()),
                    );
                    if volume == GCSFUSE_TMP && !a.contains_key(UDS_FLAG) {
                        a.insert(UDS_FLAG.to_owned(), Value::String("open".into()));
                    }
                }
            }
            changed = true;
        } else {
            let shared = force_shared(spec, &volume);
            let mut gcsfuse = false;
            if let Some(Value::Array(mounts)) = spec.get_mut("mounts") {
                for m in mounts.iter_mut() {
                    let source = m
                        .get("source")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    if !is_volume_path(pods, &volume, &source) {
                        continue;
                    }
                    if source.contains(EMPTY_DIR_VOLUMES)
                        && (shared || !is_empty_dir_empty(&source))
                    {
                        gcsfuse |= volume == GCSFUSE_TMP;
                        continue;
                    }
                    changed |= change_mount_type(m, &kind);
                }
            }
            if gcsfuse && ann(spec, UDS_FLAG).is_none() {
                annotations(spec).insert(UDS_FLAG.to_owned(), Value::String("open".into()));
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// `/dev/shm` bind mount -> pod-shared tmpfs.
fn configure_shm(spec: &mut Value, sandbox: bool) -> bool {
    let Some(Value::Array(mounts)) = spec.get_mut("mounts") else {
        return false;
    };
    let is = |m: &Value, t: &str| {
        m.get("destination").and_then(Value::as_str) == Some("/dev/shm")
            && m.get("type").and_then(Value::as_str) == Some(t)
    };
    let duplicate = mounts.iter().position(|m| is(m, "tmpfs"));
    let Some(i) = mounts.iter().position(|m| is(m, "bind")) else {
        return false;
    };
    let source = mounts[i]
        .get("source")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    change_mount_type(&mut mounts[i], "tmpfs");
    if let Some(d) = duplicate {
        mounts.remove(d);
    }
    if sandbox {
        let a = annotations(spec);
        for (field, value) in [
            ("source", source.as_str()),
            ("type", "tmpfs"),
            ("share", "pod"),
            ("options", "rw"),
        ] {
            a.insert(
                format!("{VOLUME_PREFIX}{DEVSHM_NAME}.{field}"),
                Value::String(value.to_owned()),
            );
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sandbox() -> ContainerKind {
        ContainerKind::PodSandbox
    }

    fn container() -> ContainerKind {
        ContainerKind::PodContainer {
            sandbox_id: "p".into(),
        }
    }

    #[test]
    fn sandbox_joins_pod_cgroup() {
        let mut s = json!({"linux": {"cgroupsPath": "/kubepods/burstable/pod123/abc"}});
        assert!(prepare(&mut s, &sandbox(), Path::new("/none")).unwrap());
        assert_eq!(
            s["annotations"][CGROUP_PARENT],
            "/kubepods/burstable/pod123"
        );
        let mut s = json!({"linux": {"cgroupsPath": "kubepods-pod1.slice:cri-containerd:abc"}});
        assert!(!prepare(&mut s, &sandbox(), Path::new("/none")).unwrap());
        // Containers keep their own cgroup.
        let mut s = json!({"linux": {"cgroupsPath": "/kubepods/pod1/c"}});
        assert!(!prepare(&mut s, &container(), Path::new("/none")).unwrap());
    }

    #[test]
    fn volume_hints_for_sandbox_and_containers() {
        let pods = tempfile::tempdir().unwrap();
        let ed = pods
            .path()
            .join("uid1/volumes/kubernetes.io~empty-dir/cache");
        let full = pods
            .path()
            .join("uid1/volumes/kubernetes.io~empty-dir/data");
        let host = pods
            .path()
            .join("uid1/volumes/kubernetes.io~host-path/logs");
        for d in [&ed, &full, &host] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(full.join("file"), "x").unwrap();
        let mut s = json!({
            "annotations": {
                "io.kubernetes.cri.sandbox-log-directory": "/var/log/pods/default_web_uid1",
                "dev.gvisor.spec.mount.cache.type": "bind",
                "dev.gvisor.spec.mount.data.type": "bind",
                "dev.gvisor.spec.mount.logs.type": "bind",
            }
        });
        assert!(prepare(&mut s, &sandbox(), pods.path()).unwrap());
        let a = &s["annotations"];
        assert_eq!(
            a["dev.gvisor.spec.mount.cache.type"], "tmpfs",
            "empty EmptyDir becomes tmpfs"
        );
        assert_eq!(
            a["dev.gvisor.spec.mount.cache.source"],
            ed.display().to_string()
        );
        assert_eq!(a["dev.gvisor.spec.mount.data.type"], "bind");
        assert_eq!(a["dev.gvisor.spec.mount.data.share"], "shared");
        assert_eq!(
            a["dev.gvisor.spec.mount.logs.source"],
            host.display().to_string()
        );

        let mut c = json!({
            "annotations": {"dev.gvisor.spec.mount.cache.type": "tmpfs", "dev.gvisor.spec.mount.data.type": "bind"},
            "mounts": [
                {"destination": "/cache", "type": "bind", "source": ed.display().to_string(), "options": ["rbind", "rw"]},
                {"destination": "/data", "type": "bind", "source": full.display().to_string(), "options": ["rbind"]},
            ]
        });
        assert!(prepare(&mut c, &container(), pods.path()).unwrap());
        assert_eq!(c["mounts"][0]["type"], "tmpfs");
        assert_eq!(c["mounts"][0]["options"], json!(["rw"]));
        assert_eq!(
            c["mounts"][1]["type"], "bind",
            "non-empty EmptyDir keeps its bind mount"
        );
    }

    #[test]
    fn missing_volume_is_an_error_naming_it() {
        let pods = tempfile::tempdir().unwrap();
        let mut s = json!({"annotations": {
            "io.kubernetes.cri.sandbox-log-directory": "/var/log/pods/ns_name_uid9",
            "dev.gvisor.spec.mount.gone.type": "bind"}});
        let err = prepare(&mut s, &sandbox(), pods.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"gone\""), "{err}");
    }

    #[test]
    fn dev_shm_becomes_pod_tmpfs() {
        let mut s = json!({"mounts": [
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/dev/shm", "type": "bind", "source": "/run/sandboxes/p/shm", "options": ["rbind", "ro"]},
        ]});
        assert!(prepare(&mut s, &sandbox(), Path::new("/none")).unwrap());
        assert_eq!(
            s["mounts"].as_array().unwrap().len(),
            1,
            "duplicate tmpfs entry removed"
        );
        assert_eq!(s["mounts"][0]["type"], "tmpfs");
        assert_eq!(s["mounts"][0]["options"], json!(["ro"]));
        assert_eq!(
            s["annotations"]["dev.gvisor.spec.mount.gvisorinternaldevshm.source"],
            "/run/sandboxes/p/shm"
        );
        assert_eq!(
            s["annotations"]["dev.gvisor.spec.mount.gvisorinternaldevshm.share"],
            "pod"
        );
        let mut nothing = json!({"mounts": [{"destination": "/tmp", "type": "tmpfs"}]});
        assert!(!prepare(&mut nothing, &container(), Path::new("/none")).unwrap());
    }
}
