//! Editing containerd's `config.toml` without disturbing it: comments, order and every
//! other setting stay exactly as they were (`toml_edit`); only the runtime table is added,
//! changed or removed.

use std::path::Path;

use toml_edit::{DocumentMut, Item, Table, value};

use crate::Error;

/// The runtime type containerd maps to `containerd-shim-runsc-v1`.
pub const RUNTIME_TYPE: &str = "io.containerd.runsc.v1";
/// gVisor's documented `TypeUrl`.
pub const TYPE_URL: &str = "io.containerd.runsc.v1.options";

/// containerd config layouts by `version`.
pub fn runtime_path(version: i64, name: &str) -> Vec<String> {
    let cri: &[&str] = match version {
        3 => &["plugins", "io.containerd.cri.v1.runtime"],
        2 => &["plugins", "io.containerd.grpc.v1.cri"],
        _ => &["plugins", "cri"],
    };
    cri.iter()
        .map(|s| s.to_string())
        .chain(["containerd", "runtimes", name].map(String::from))
        .collect()
}

/// The `version` of a config document (a missing key means version 1).
pub fn config_version(doc: &DocumentMut) -> i64 {
    doc.get("version").and_then(Item::as_integer).unwrap_or(1)
}

/// Parses a config; an empty file is an empty document.
pub fn parse(text: &str, path: &Path) -> Result<DocumentMut, Error> {
    text.parse::<DocumentMut>().map_err(|e| Error::Parse {
        path: path.to_owned(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

/// Walks to (creating as needed) the table at `path`. New intermediate tables are implicit:
/// they add no headers of their own.
fn table_mut<'a>(doc: &'a mut DocumentMut, path: &[String]) -> Result<&'a mut Table, Error> {
    let mut t: &mut Table = doc.as_table_mut();
    for key in path {
        if !t.contains_key(key) {
            let mut new = Table::new();
            new.set_implicit(true);
            t.insert(key, Item::Table(new));
        }
        t = match t.get_mut(key) {
            Some(Item::Table(next)) => next,
            _ => {
                return Err(Error::Layout(format!(
                    "`{}` is not a table in the containerd config",
                    path.join(".")
                )));
            }
        };
    }
    Ok(t)
}

fn set_str(t: &mut Table, key: &str, v: &str) -> bool {
    if t.get(key).and_then(Item::as_str) == Some(v) {
        return false;
    }
    t.insert(key, value(v));
    true
}

/// Adds (or updates) runtime `name` of type `io.containerd.runsc.v1` with options
/// `TypeUrl`/`ConfigPath`. Returns whether anything changed; an unchanged document renders
/// byte for byte as it was read.
pub fn add_runtime(
    doc: &mut DocumentMut,
    version: i64,
    name: &str,
    runsc_config: &Path,
) -> Result<bool, Error> {
    let path = runtime_path(version, name);
    let runtime = table_mut(doc, &path)?;
    runtime.set_implicit(false);
    let mut changed = set_str(runtime, "runtime_type", RUNTIME_TYPE);
    let mut opts_path = path.clone();
    opts_path.push("options".into());
    let opts = table_mut(doc, &opts_path)?;
    opts.set_implicit(false);
    changed |= set_str(opts, "TypeUrl", TYPE_URL);
    changed |= set_str(opts, "ConfigPath", &runsc_config.display().to_string());
    Ok(changed)
}

/// The runtime table `name`, if present.
pub fn runtime(doc: &DocumentMut, version: i64, name: &str) -> Option<Table> {
    let mut item = doc.as_item();
    for key in runtime_path(version, name) {
        item = item.get(&key)?;
    }
    item.as_table().cloned()
}

/// Replaces runtime `name` with `table` (restoring what a backup had).
pub fn set_runtime(
    doc: &mut DocumentMut,
    version: i64,
    name: &str,
    table: Table,
) -> Result<bool, Error> {
    // (A table's own rendering leaves out its sub-tables: compare whole documents.)
    let before = doc.to_string();
    let path = runtime_path(version, name);
    let (parents, leaf) = path.split_at(path.len() - 1);
    let parent = table_mut(doc, parents)?;
    parent.insert(&leaf[0], Item::Table(table));
    Ok(doc.to_string() != before)
}

/// Removes runtime `name` if it is ours (`runtime_type = "io.containerd.runsc.v1"`), and
/// the intermediate tables that only existed to hold it. Returns whether anything changed.
pub fn remove_runtime(doc: &mut DocumentMut, version: i64, name: &str) -> bool {
    let path = runtime_path(version, name);
    let (parents, leaf) = path.split_at(path.len() - 1);
    let mut t: &mut Table = doc.as_table_mut();
    let mut chain: Vec<String> = Vec::new();
    for key in parents {
        t = match t.get_mut(key) {
            Some(Item::Table(next)) => next,
            _ => return false,
        };
        chain.push(key.clone());
    }
    let ours = t
        .get(&leaf[0])
        .and_then(Item::as_table)
        .and_then(|r| r.get("runtime_type"))
        .and_then(Item::as_str)
        == Some(RUNTIME_TYPE);
    if !ours {
        return false;
    }
    t.remove(&leaf[0]);
    // Drop implicit parents left empty (they never had headers of their own).
    for depth in (1..=chain.len()).rev() {
        let mut t: &mut Table = doc.as_table_mut();
        for key in &chain[..depth - 1] {
            t = match t.get_mut(key) {
                Some(Item::Table(next)) => next,
                _ => return true,
            };
        }
        let key = &chain[depth - 1];
        let empty_implicit = t
            .get(key)
            .and_then(Item::as_table)
            .is_some_and(|x| x.is_implicit() && x.is_empty());
        if empty_implicit {
            t.remove(key);
        } else {
            break;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"# my containerd config
version = 2
root = "/var/lib/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9" # pinned
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true
        # a custom runtime
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
          runtime_type = "io.containerd.kata.v2"
"#;

    fn p() -> &'static Path {
        Path::new("/etc/containerd/runsc.toml")
    }

    #[test]
    fn add_keeps_everything_else_and_is_idempotent() {
        let mut doc = parse(V2, p()).unwrap();
        assert_eq!(config_version(&doc), 2);
        assert!(add_runtime(&mut doc, 2, "runsc", p()).unwrap());
        let out = doc.to_string();
        assert!(
            out.starts_with(V2.trim_end()),
            "the original text is kept verbatim:\n{out}"
        );
        let added = &out[V2.trim_end().len()..];
        assert!(
            added.contains(r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]"#),
            "{added}"
        );
        assert!(
            added.contains(r#"runtime_type = "io.containerd.runsc.v1""#),
            "{added}"
        );
        assert!(
            added.contains(r#"ConfigPath = "/etc/containerd/runsc.toml""#),
            "{added}"
        );
        // Twice: nothing changes.
        let mut again = parse(&out, p()).unwrap();
        assert!(!add_runtime(&mut again, 2, "runsc", p()).unwrap());
        assert_eq!(again.to_string(), out);
        // And removing restores the original exactly.
        assert!(remove_runtime(&mut again, 2, "runsc"));
        assert_eq!(again.to_string(), V2);
    }

    #[test]
    fn empty_config_version_3() {
        let mut doc = parse("version = 3\n", p()).unwrap();
        add_runtime(&mut doc, 3, "runsc", p()).unwrap();
        let out = doc.to_string();
        assert!(
            out.contains(r#"[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc]"#),
            "{out}"
        );
        assert!(
            !out.contains("[plugins]\n"),
            "no empty parent headers:\n{out}"
        );
        let mut back = parse(&out, p()).unwrap();
        remove_runtime(&mut back, 3, "runsc");
        assert_eq!(back.to_string(), "version = 3\n");
    }

    #[test]
    fn foreign_runtime_of_that_name_is_not_removed() {
        let mut doc = parse(V2, p()).unwrap();
        assert!(!remove_runtime(&mut doc, 2, "kata"));
        assert!(!remove_runtime(&mut doc, 2, "missing"));
        assert_eq!(doc.to_string(), V2);
    }

    #[test]
    fn broken_and_odd_layouts_are_errors() {
        let err = parse("[plugins\n", p()).unwrap_err().to_string();
        assert!(err.contains("cannot parse"), "{err}");
        let mut doc = parse("version = 2\nplugins = 5\n", p()).unwrap();
        let err = add_runtime(&mut doc, 2, "runsc", p())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a table"), "{err}");
    }
}
