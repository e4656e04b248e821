//! A busybox OCI image layout tarball, built reproducibly from the host's `busybox-static`.
//!
//! Layout: `oci-layout`, `index.json` (with `io.containerd.image.name` so `ctr images import`
//! names the image), `blobs/sha256/<config, manifest, one gzip layer>`. The layer holds
//! `/bin/busybox`, a symlink per applet, `/etc/passwd`, `/etc/group` and the usual empty
//! directories. Fixed mtimes and gzip mtime 0: the same busybox gives the same digests.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

const MTIME: u64 = 1_700_000_000;

/// The host binary the image is made of.
pub const BUSYBOX: &str = "/bin/busybox";

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

fn applets() -> Result<Vec<String>> {
    let out = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .context("run busybox --list")?;
    if !out.status.success() {
        bail!("busybox --list failed");
    }
    let mut list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|a| a != "busybox")
        .collect();
    list.sort();
    Ok(list)
}

/// The uncompressed layer tar.
fn layer() -> Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("read {BUSYBOX} (apt-get install busybox-static)"))?;
    let mut b = tar::Builder::new(Vec::new());
    for dir in [
        "bin/", "dev/", "etc/", "proc/", "sys/", "tmp/", "root/", "home/", "var/", "run/", "mnt/",
    ] {
        let mode = if dir == "tmp/" { 0o1777 } else { 0o755 };
        b.append(
            &header(dir, tar::EntryType::Directory, mode, 0),
            std::io::empty(),
        )?;
    }
    b.append(
        &header(
            "bin/busybox",
            tar::EntryType::Regular,
            0o755,
            busybox.len() as u64,
        ),
        &busybox[..],
    )?;
    for applet in applets()? {
        let mut h = header(&format!("bin/{applet}"), tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("busybox")?;
        h.set_cksum();
        b.append(&h, std::io::empty())?;
    }
    let files: [(&str, &str); 3] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nuser:x:1000:1000:user:/home:/bin/sh\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\nuser:x:1000:\n"),
        ("etc/hosts", "127.0.0.1 localhost\n"),
    ];
    for (path, content) in files {
        b.append(
            &header(path, tar::EntryType::Regular, 0o644, content.len() as u64),
            content.as_bytes(),
        )?;
    }
    Ok(b.into_inner()?)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    // GzBuilder writes mtime 0 unless told otherwise.
    let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::fast());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// Writes an OCI layout tarball for image `name` (e.g. `docker.io/library/busybox-e2e:latest`)
/// whose process is `entrypoint` + `cmd`.
pub fn build(out: &Path, name: &str, entrypoint: &[&str], cmd: &[&str]) -> Result<()> {
    let layer = layer()?;
    let diff_id = sha256(&layer);
    let gz = gzip(&layer)?;
    let layer_digest = sha256(&gz);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": if entrypoint.is_empty() { serde_json::Value::Null } else { serde_json::json!(entrypoint) },
            "Cmd": cmd,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    }))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{layer_digest}"), "size": gz.len()}],
    }))?;
    let manifest_digest = sha256(&manifest);
    let reference = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": reference},
        }],
    }))?;
    let mut t = tar::Builder::new(
        std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?,
    );
    let mut add = |path: &str, data: &[u8]| -> Result<()> {
        t.append(
            &header(path, tar::EntryType::Regular, 0o644, data.len() as u64),
            data,
        )?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    add(&format!("blobs/sha256/{config_digest}"), &config)?;
    add(&format!("blobs/sha256/{manifest_digest}"), &manifest)?;
    add(&format!("blobs/sha256/{layer_digest}"), &gz)?;
    t.into_inner()?.flush()?;
    Ok(())
}
