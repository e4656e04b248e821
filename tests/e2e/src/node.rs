//! A node's containerd configuration as a user has it before installing the shim: the
//! build's own `containerd config default`, made private to a work directory so it can run
//! next to other containerds on this machine.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use toml_edit::{DocumentMut, Item, Table, value};

use crate::containerd::run;
use crate::versions::ContainerdBuild;

pub use crate::pods::{IMAGE, PAUSE, import_pod_images};

/// A CNI configuration with only the loopback plugin in `conf_dir`: enough for pods on the
/// host network, which is all a machine without a CNI bridge can run.
pub fn loopback_cni(conf_dir: &Path) -> Result<()> {
    std::fs::write(
        conf_dir.join("10-loopback.conflist"),
        r#"{"cniVersion":"0.4.0","name":"lo","plugins":[{"type":"loopback"}]}"#,
    )
    .with_context(|| format!("write the loopback CNI config in {}", conf_dir.display()))
}

/// The table at `path`, created (empty) where missing.
pub fn table<'a>(doc: &'a mut DocumentMut, path: &[&str]) -> Result<&'a mut Table> {
    let mut t = doc.as_table_mut();
    for k in path {
        if !t.contains_key(k) {
            t.insert(k, Item::Table(Table::new()));
        }
        t = match t.get_mut(k).and_then(Item::as_table_mut) {
            Some(t) => t,
            None => bail!("`{k}` of {path:?} is not a table"),
        };
    }
    Ok(t)
}

/// The CRI plugin's runtime table: `plugins."io.containerd.cri.v1.runtime"` in config
/// version 3 (containerd 2.x), `plugins."io.containerd.grpc.v1.cri"` in version 2.
pub fn cri_runtime_plugin(doc: &DocumentMut) -> &'static str {
    if doc.get("version").and_then(Item::as_integer) == Some(3) {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    }
}

/// `containerd config default` of `build`, with root, state, sockets (`<work>/ctd`, where
/// [`crate::containerd::Containerd`] expects them), the CNI config directory (`<work>/cni`)
/// and the sandbox image made private to `work`.
pub fn private_default_config(build: &ContainerdBuild, work: &Path) -> Result<DocumentMut> {
    let out = run(
        Command::new(&build.containerd).args(["config", "default"]),
        Duration::from_secs(20),
    )?
    .ok()?;
    let mut doc: DocumentMut = out.stdout.parse().context("parse default config")?;
    let w = work.display();
    doc.insert("root", value(format!("{w}/root")));
    doc.insert("state", value(format!("{w}/state")));
    table(&mut doc, &["grpc"])?.insert("address", value(format!("{w}/ctd/containerd.sock")));
    table(&mut doc, &["ttrpc"])?.insert("address", value(format!("{w}/ctd/containerd.sock.ttrpc")));
    let cri = cri_runtime_plugin(&doc);
    if cri == "io.containerd.cri.v1.runtime" {
        table(
            &mut doc,
            &["plugins", "io.containerd.cri.v1.images", "pinned_images"],
        )?
        .insert("sandbox", value(PAUSE));
    } else {
        table(&mut doc, &["plugins", cri])?.insert("sandbox_image", value(PAUSE));
    }
    let rt = table(&mut doc, &["plugins", cri])?;
    // Root lacks CAP_SYS_RESOURCE on these machines (pod sandboxes fail to start without
    // this), and pod network namespaces belong under the private state directory.
    rt.insert("restrict_oom_score_adj", value(true));
    rt.insert("netns_mounts_under_state_dir", value(true));
    table(&mut doc, &["plugins", cri, "cni"])?
        .insert("conf_dir", value(work.join("cni").display().to_string()));
    Ok(doc)
}
