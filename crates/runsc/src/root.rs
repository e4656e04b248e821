//! runsc's files in its `--root` directory, read by exact name.
//!
//! runsc keeps one state file per container, `<id>_sandbox:<sandbox>.state` (and a `.lock`
//! beside it), in the same format in 20221219 and 20240729. On its command line, though, runsc
//! resolves a container id **by prefix**: with `web2` in the root, `runsc start we` fails as
//! "ambiguous", and `runsc delete --force we` after `we` is gone deletes `web2`. So before
//! acting on an id that may be gone, and before adding an id to a root, the caller asks here,
//! where names are compared exactly.

use std::path::PathBuf;

use crate::client::Runsc;

const STATE_SUFFIX: &str = ".state";
const LOCK_SUFFIX: &str = ".lock";
const SANDBOX_SEP: &str = "_sandbox:";

/// A container runsc has in its root, from its state file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootEntry {
    /// The container id.
    pub id: String,
    /// The sandbox it belongs to.
    pub sandbox_id: String,
}

impl RootEntry {
    /// Parses `<id>_sandbox:<sandbox>.state`.
    fn from_state_file_name(name: &str) -> Option<RootEntry> {
        let base = name.strip_suffix(STATE_SUFFIX)?;
        let (id, sandbox_id) = base.split_once(SANDBOX_SEP)?;
        (!id.is_empty() && !sandbox_id.is_empty()).then(|| RootEntry {
            id: id.to_owned(),
            sandbox_id: sandbox_id.to_owned(),
        })
    }
}

impl Runsc {
    fn root_file(&self, id: &str, sandbox_id: &str, suffix: &str) -> PathBuf {
        self.opts()
            .root
            .join(format!("{id}{SANDBOX_SEP}{sandbox_id}{suffix}"))
    }

    /// Whether runsc has exactly container `id` of sandbox `sandbox_id` (its state file
    /// exists). Unlike runsc's own lookup, `we` never matches `web`.
    pub fn has_container(&self, id: &str, sandbox_id: &str) -> bool {
        self.root_file(id, sandbox_id, STATE_SUFFIX).exists()
    }

    /// Every container runsc has in this root.
    pub fn containers(&self) -> Vec<RootEntry> {
        let Ok(entries) = std::fs::read_dir(&self.opts().root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| RootEntry::from_state_file_name(e.file_name().to_str()?))
            .collect()
    }

    /// The containers in this root whose id is a prefix of `id` or has `id` as a prefix
    /// (other than `id` itself): runsc could not tell them apart from `id`.
    pub fn prefix_conflicts(&self, id: &str) -> Vec<String> {
        self.containers()
            .into_iter()
            .map(|e| e.id)
            .filter(|other| {
                other != id && (other.starts_with(id) || id.starts_with(other.as_str()))
            })
            .collect()
    }

    /// Removes the lock file runsc may leave behind for a deleted container (runsc 20221219
    /// does after a sandbox was killed from outside, e.g. by the OOM killer). Only when the
    /// container's state file is gone.
    pub fn remove_stale_lock(&self, id: &str, sandbox_id: &str) {
        if !self.has_container(id, sandbox_id) {
            let _ = std::fs::remove_file(self.root_file(id, sandbox_id, LOCK_SUFFIX));
        }
    }

    /// Removes the root directory if it is empty: runsc has no container left in it. Lock
    /// files are not removed here, not even those without a state file: runsc creates a
    /// container's lock before its state file, so such a lock may be a sibling's being created
    /// right now. The caller removes the lock of the container it deleted first, by its exact
    /// name ([`Runsc::remove_stale_lock`]). Returns whether the root is gone.
    pub fn remove_root_if_unused(&self) -> bool {
        let root = &self.opts().root;
        std::fs::remove_dir(root).is_ok() || !root.exists()
    }

    /// Host pid of the gofer of container `id` in sandbox `sandbox_id`, from runsc's state
    /// file (key `goferPid`); `None` when it cannot be read. A container's gofer exits when
    /// the container's last process does.
    pub fn gofer_pid(&self, id: &str, sandbox_id: &str) -> Option<i32> {
        #[derive(serde::Deserialize)]
        struct StateFile {
            #[serde(rename = "goferPid", default)]
            gofer_pid: i32,
        }
        let bytes = std::fs::read(self.root_file(id, sandbox_id, STATE_SUFFIX)).ok()?;
        let state: StateFile = serde_json::from_slice(&bytes).ok()?;
        (state.gofer_pid > 0).then_some(state.gofer_pid)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{GlobalOpts, TokioSpawner};

    fn runsc(root: &std::path::Path) -> Runsc {
        Runsc::new(GlobalOpts::new("runsc", root), Arc::new(TokioSpawner))
    }

    fn touch(root: &std::path::Path, name: &str) {
        std::fs::write(root.join(name), "{}").unwrap();
    }

    #[test]
    fn exact_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let r = runsc(dir.path());
        touch(dir.path(), "web_sandbox:web.state");
        touch(dir.path(), "web2_sandbox:web2.state");
        touch(dir.path(), "web2_sandbox:web2.lock");
        touch(dir.path(), "calls");
        assert!(r.has_container("web", "web"));
        assert!(!r.has_container("we", "we"));
        assert!(!r.has_container("web", "web2"));
        let mut ids: Vec<_> = r.containers().into_iter().map(|e| e.id).collect();
        ids.sort();
        assert_eq!(ids, ["web", "web2"]);
        let mut c = r.prefix_conflicts("we");
        c.sort();
        assert_eq!(c, ["web", "web2"]);
        assert_eq!(r.prefix_conflicts("web"), ["web2"]);
        assert_eq!(prefixes("web23", &r), ["web", "web2"]);
        assert!(r.prefix_conflicts("db").is_empty());
    }

    fn prefixes(id: &str, r: &Runsc) -> Vec<String> {
        let mut v = r.prefix_conflicts(id);
        v.sort();
        v
    }

    #[test]
    fn root_removed_only_when_unused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sb");
        std::fs::create_dir(&root).unwrap();
        let r = runsc(&root);
        touch(&root, "a_sandbox:sb.state");
        touch(&root, "a_sandbox:sb.lock");
        assert!(!r.remove_root_if_unused());
        r.remove_stale_lock("a", "sb");
        assert!(root.join("a_sandbox:sb.lock").exists(), "a live lock stays");
        std::fs::remove_file(root.join("a_sandbox:sb.state")).unwrap();
        r.remove_stale_lock("a", "sb");
        assert!(
            !root.join("a_sandbox:sb.lock").exists(),
            "its stale lock goes"
        );
        assert!(r.remove_root_if_unused());
        assert!(!root.exists());
        assert!(r.remove_root_if_unused(), "already gone");
    }

    /// runsc creates a container's lock before its state file: a lock without a state file may
    /// be a sibling's being created. Deleting `a` removes `a`'s lock only, by its exact name.
    #[test]
    fn only_the_deleted_containers_lock_goes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sb");
        std::fs::create_dir(&root).unwrap();
        let r = runsc(&root);
        touch(&root, "a_sandbox:sb.lock");
        touch(&root, "ab_sandbox:sb.lock");
        touch(&root, "b_sandbox:sb.lock");
        r.remove_stale_lock("a", "sb");
        assert!(!r.remove_root_if_unused(), "b and ab are being created");
        assert!(!root.join("a_sandbox:sb.lock").exists());
        assert!(
            root.join("ab_sandbox:sb.lock").exists(),
            "not a prefix match"
        );
        assert!(
            root.join("b_sandbox:sb.lock").exists(),
            "a sibling's lock stays"
        );
        assert!(root.is_dir());
    }

    #[test]
    fn gofer_pid_from_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = runsc(dir.path());
        assert_eq!(r.gofer_pid("sub", "pod"), None);
        std::fs::write(
            dir.path().join("sub_sandbox:pod.state"),
            r#"{"id":"sub","goferPid":4321,"sandbox":{"pid":99},"status":"running"}"#,
        )
        .unwrap();
        assert_eq!(r.gofer_pid("sub", "pod"), Some(4321));
        std::fs::write(dir.path().join("sub_sandbox:pod.state"), "{garbage").unwrap();
        assert_eq!(r.gofer_pid("sub", "pod"), None);
    }
}
