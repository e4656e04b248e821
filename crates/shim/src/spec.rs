//! The bundle's OCI spec (`config.json`): validation and what the shim needs from it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// CRI annotation: `sandbox` for the pause container, `container` for the others.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI annotation: the pod sandbox id.
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// containerd CRI annotation: the container's name in its pod (what runsc matches the
/// containers of a restored pod by).
pub const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
/// CRI annotation: the pod's log directory.
pub const CRI_SANDBOX_LOG_DIR: &str = "io.kubernetes.cri.sandbox-log-directory";
/// CRI-O annotation: `sandbox` or `container`.
pub const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
/// CRI-O annotation: the pod sandbox id.
pub const CRIO_SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";

/// How a container relates to a gVisor sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerKind {
    /// A container of its own (`ctr run`, nerdctl): the root container of its own sandbox.
    Standalone,
    /// A pod's sandbox (pause) container: the root container of the pod's sandbox.
    PodSandbox,
    /// An application container joining the sandbox of pod `sandbox_id`.
    PodContainer {
        /// The pod sandbox id (the pause container's id).
        sandbox_id: String,
    },
}

impl ContainerKind {
    /// Whether this container creates the sandbox (its own, or the pod's).
    pub fn is_root(&self) -> bool {
        !matches!(self, ContainerKind::PodContainer { .. })
    }

    /// From the spec's annotations (containerd's CRI, then CRI-O's).
    pub fn from_annotations(annotations: &HashMap<String, String>) -> ContainerKind {
        let kind = annotations
            .get(CRI_CONTAINER_TYPE)
            .or_else(|| annotations.get(CRIO_CONTAINER_TYPE));
        let sandbox = annotations
            .get(CRI_SANDBOX_ID)
            .or_else(|| annotations.get(CRIO_SANDBOX_ID));
        match (kind.map(String::as_str), sandbox) {
            (Some("sandbox"), _) => ContainerKind::PodSandbox,
            (Some("container"), Some(id)) if !id.is_empty() => ContainerKind::PodContainer {
                sandbox_id: id.clone(),
            },
            _ => ContainerKind::Standalone,
        }
    }
}

/// The parsed `config.json` of a bundle.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// The document as read (edits keep fields this shim does not know).
    pub json: serde_json::Value,
    /// Spec annotations.
    pub annotations: HashMap<String, String>,
    /// The rootfs, made absolute against the bundle.
    pub root: PathBuf,
    /// Whether the process wants a terminal.
    pub terminal: bool,
}

impl BundleSpec {
    /// Reads and validates `<bundle>/config.json`.
    pub fn read(bundle: &Path) -> Result<BundleSpec> {
        let path = bundle.join("config.json");
        let text = std::fs::read(&path).map_err(|e| {
            Error::InvalidArgument(format!("cannot read OCI spec {}: {e}", path.display()))
        })?;
        Self::parse(&text, bundle)
    }

    /// Parses spec JSON of the bundle at `bundle`.
    pub fn parse(text: &[u8], bundle: &Path) -> Result<BundleSpec> {
        let path = bundle.join("config.json");
        let invalid = |why: String| {
            Error::InvalidArgument(format!("invalid OCI spec {}: {why}", path.display()))
        };
        let json: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| invalid(e.to_string()))?;
        let spec: oci_spec::runtime::Spec =
            serde_json::from_value(json.clone()).map_err(|e| invalid(e.to_string()))?;
        let root = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| invalid("no root filesystem (`root.path`)".into()))?;
        let root = if root.is_absolute() {
            root
        } else {
            bundle.join(root)
        };
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| invalid("no `process`".into()))?;
        if process.args().as_ref().is_none_or(Vec::is_empty) {
            return Err(invalid("`process.args` is empty".into()));
        }
        Ok(BundleSpec {
            annotations: spec.annotations().clone().unwrap_or_default(),
            terminal: process.terminal().unwrap_or(false),
            root,
            json,
        })
    }

    /// Whether the process gets a pid namespace of its own (a `pid` namespace without a
    /// `path`); pods sharing one process namespace do not.
    pub fn own_pid_namespace(&self) -> bool {
        self.json
            .pointer("/linux/namespaces")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|nss| {
                nss.iter().any(|ns| {
                    ns.get("type").and_then(serde_json::Value::as_str) == Some("pid")
                        && ns
                            .get("path")
                            .and_then(serde_json::Value::as_str)
                            .is_none_or(str::is_empty)
                })
            })
    }

    /// How the container relates to a sandbox.
    pub fn kind(&self) -> ContainerKind {
        ContainerKind::from_annotations(&self.annotations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"}}"#;

    #[test]
    fn parses_minimal_spec() {
        let s = BundleSpec::parse(MINIMAL.as_bytes(), Path::new("/b")).unwrap();
        assert_eq!(s.root, PathBuf::from("/b/rootfs"));
        assert!(!s.terminal);
        assert_eq!(s.kind(), ContainerKind::Standalone);
    }

    #[test]
    fn malformed_specs_name_the_file_and_problem() {
        for (text, needle) in [
            ("{not json", "key must be a string"),
            (
                r#"{"ociVersion":"1","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"}}"#,
                "no root filesystem",
            ),
            (r#"{"ociVersion":"1","root":{"path":"r"}}"#, "no `process`"),
            (
                r#"{"ociVersion":"1","process":{"user":{"uid":0,"gid":0},"args":[],"cwd":"/"},"root":{"path":"r"}}"#,
                "is empty",
            ),
            (
                r#"{"ociVersion":"1","process":{"user":{"uid":0,"gid":0},"args":"sh","cwd":"/"},"root":{"path":"r"}}"#,
                "invalid type",
            ),
            (
                r#"{"ociVersion":"1","process":{"args":["sh"],"cwd":"/"},"root":{"path":"r"}}"#,
                "missing field `user`",
            ),
        ] {
            let err = BundleSpec::parse(text.as_bytes(), Path::new("/b"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("invalid OCI spec /b/config.json: "),
                "{err}"
            );
            assert!(err.contains(needle), "{text}: {err}");
        }
        let err = BundleSpec::read(Path::new("/nonexistent-bundle"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent-bundle/config.json"), "{err}");
    }

    #[test]
    fn kinds_from_annotations() {
        let a = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            ContainerKind::from_annotations(&a(&[])),
            ContainerKind::Standalone
        );
        assert_eq!(
            ContainerKind::from_annotations(&a(&[
                (CRI_CONTAINER_TYPE, "sandbox"),
                (CRI_SANDBOX_ID, "p")
            ])),
            ContainerKind::PodSandbox
        );
        assert_eq!(
            ContainerKind::from_annotations(&a(&[
                (CRI_CONTAINER_TYPE, "container"),
                (CRI_SANDBOX_ID, "p")
            ])),
            ContainerKind::PodContainer {
                sandbox_id: "p".into()
            }
        );
        assert_eq!(
            ContainerKind::from_annotations(&a(&[
                (CRIO_CONTAINER_TYPE, "container"),
                (CRIO_SANDBOX_ID, "q")
            ])),
            ContainerKind::PodContainer {
                sandbox_id: "q".into()
            }
        );
        // A "container" without a sandbox id cannot join anything: it gets its own sandbox.
        assert_eq!(
            ContainerKind::from_annotations(&a(&[(CRI_CONTAINER_TYPE, "container")])),
            ContainerKind::Standalone
        );
    }
}
