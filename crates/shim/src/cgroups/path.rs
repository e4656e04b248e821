//! The OCI `linux.cgroupsPath` in its two forms.
//!
//! - cgroupfs: a path (`/kubepods/burstable/pod<uid>/<id>`, or `ctr`'s `/<namespace>/<id>`).
//! - systemd: `slice:prefix:name`. containerd's CRI hands it to **every** runtime when the
//!   pod's `cgroup_parent` ends in `.slice`, which is what a kubelet with the systemd cgroup
//!   driver sends (containerd `getCgroupsPath`, 1.6 to 2.x): the runtime's own options are
//!   not consulted. The container then belongs in the transient unit `<prefix>-<name>.scope`
//!   inside `slice`, whose cgroup is `<expanded slice>/<prefix>-<name>.scope`.
//!
//! The checks follow runc's and runsc's (`runsc/cgroup/systemd.go`): three fields, a slice
//! named `*.slice` without `/` or empty `-` parts, and unit names without `/` or `..`.

use crate::error::{Error, Result};

/// A parsed `linux.cgroupsPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupsPath {
    /// No path in the spec.
    None,
    /// A cgroupfs path, as given.
    Fs(String),
    /// The systemd form.
    Systemd(SystemdPath),
}

/// `slice:prefix:name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdPath {
    /// The parent slice (`kubepods-besteffort-pod<uid>.slice`); empty means `system.slice`.
    pub slice: String,
    /// The unit name prefix (`cri-containerd`).
    pub prefix: String,
    /// The unit name (the container id).
    pub name: String,
}

impl CgroupsPath {
    /// Parses a spec's `linux.cgroupsPath`; a malformed systemd path is an error naming it.
    pub fn parse(path: &str) -> Result<CgroupsPath> {
        if path.is_empty() {
            return Ok(CgroupsPath::None);
        }
        if !path.contains(':') {
            return Ok(CgroupsPath::Fs(path.to_owned()));
        }
        let bad = |why: &str| {
            Err(Error::InvalidArgument(format!(
                "invalid systemd cgroupsPath {path:?} (expected slice:prefix:name): {why}"
            )))
        };
        let fields: Vec<&str> = path.split(':').collect();
        let [slice, prefix, name] = fields.as_slice() else {
            return bad(&format!("{} fields", fields.len()));
        };
        if !slice.is_empty() {
            if !slice.ends_with(".slice") {
                return bad(&format!("the slice {slice:?} does not end in .slice"));
            }
            let stem = &slice[..slice.len() - ".slice".len()];
            if stem.is_empty() || stem.split('-').any(str::is_empty) {
                return bad(&format!("the slice {slice:?} has an empty part"));
            }
        }
        for (what, field) in [("slice", slice), ("prefix", prefix), ("name", name)] {
            if *what != *"slice" && field.is_empty() {
                return bad(&format!("the {what} is empty"));
            }
            if field.contains("..") || !field.chars().all(unit_char) {
                return bad(&format!("the {what} {field:?} is not a unit name"));
            }
        }
        Ok(CgroupsPath::Systemd(SystemdPath {
            slice: (*slice).to_owned(),
            prefix: (*prefix).to_owned(),
            name: (*name).to_owned(),
        }))
    }
}

/// Characters systemd allows in unit names (`/` is not one of them).
fn unit_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@')
}

impl SystemdPath {
    /// The parent slice, `system.slice` when none is given (runc and runsc default).
    pub fn slice(&self) -> &str {
        if self.slice.is_empty() {
            "system.slice"
        } else {
            &self.slice
        }
    }

    /// The scope unit: `<prefix>-<name>.scope`.
    pub fn unit(&self) -> String {
        format!("{}-{}.scope", self.prefix, self.name)
    }

    /// The slice's cgroup below the cgroup root: `a-b-c.slice` lives at
    /// `/a.slice/a-b.slice/a-b-c.slice` (systemd's slice nesting).
    pub fn slice_cgroup(&self) -> String {
        expand_slice(self.slice())
    }

    /// The scope's cgroup below the cgroup root.
    pub fn cgroup(&self) -> String {
        format!("{}/{}", self.slice_cgroup(), self.unit())
    }
}

/// `a-b-c.slice` -> `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` (the root slice) -> `/`.
pub fn expand_slice(slice: &str) -> String {
    let stem = slice.strip_suffix(".slice").unwrap_or(slice);
    if stem.is_empty() || stem == "-" {
        return "/".to_owned();
    }
    let mut out = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push('/');
        out.push_str(&prefix);
        out.push_str(".slice");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_paths() {
        let p = CgroupsPath::parse("kubepods-besteffort-pod1a2b_3c.slice:cri-containerd:0123abcd")
            .unwrap();
        let CgroupsPath::Systemd(s) = p else {
            panic!("{p:?}")
        };
        assert_eq!(s.unit(), "cri-containerd-0123abcd.scope");
        assert_eq!(
            s.cgroup(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b_3c.slice/cri-containerd-0123abcd.scope"
        );
        let CgroupsPath::Systemd(g) =
            CgroupsPath::parse("kubepods-pod9.slice:cri-containerd:x").unwrap()
        else {
            panic!()
        };
        assert_eq!(g.slice_cgroup(), "/kubepods.slice/kubepods-pod9.slice");
        let CgroupsPath::Systemd(d) = CgroupsPath::parse(":runsc:c1").unwrap() else {
            panic!()
        };
        assert_eq!(d.cgroup(), "/system.slice/runsc-c1.scope");
    }

    #[test]
    fn cgroupfs_and_none() {
        assert_eq!(CgroupsPath::parse("").unwrap(), CgroupsPath::None);
        assert_eq!(
            CgroupsPath::parse("/default/c1").unwrap(),
            CgroupsPath::Fs("/default/c1".into())
        );
    }

    #[test]
    fn malformed_systemd_paths_are_named() {
        for (path, why) in [
            ("a.slice:b", "2 fields"),
            ("a.slice:b:c:d", "4 fields"),
            ("kubepods:cri-containerd:x", "does not end in .slice"),
            ("kube--pods.slice:p:x", "empty part"),
            ("-pods.slice:p:x", "empty part"),
            (".slice:p:x", "empty part"),
            ("a.slice::x", "prefix is empty"),
            ("a.slice:p:", "name is empty"),
            ("a.slice:p:../../etc", "not a unit name"),
            ("a.slice:p:x/y", "not a unit name"),
            ("a/b.slice:p:x", "not a unit name"),
            ("a.slice:p q:x", "not a unit name"),
        ] {
            let err = CgroupsPath::parse(path).unwrap_err().to_string();
            assert!(err.contains(path) && err.contains(why), "{path}: {err}");
        }
    }

    #[test]
    fn slices_expand() {
        assert_eq!(expand_slice("-.slice"), "/");
        assert_eq!(expand_slice("system.slice"), "/system.slice");
        assert_eq!(
            expand_slice("a-b-c.slice"),
            "/a.slice/a-b.slice/a-b-c.slice"
        );
    }
}
