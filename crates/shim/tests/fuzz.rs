//! Fuzzing every parser of outside input in the core: shim configuration (TOML; the runtime
//! options are decoded, and fuzzed, in the binary), the bundle's OCI spec and its pod rewriting, stdio URIs, ids.

use std::path::Path;

use runsc_shim::config::{ShimConfig, Source};
use runsc_shim::io::Target;
use runsc_shim::spec::BundleSpec;

#[test]
fn fuzz_shim_toml() {
    fuzzkit::fuzz(
        "shim-toml",
        &[
            b"binary_name = \"/usr/local/bin/runsc\"\nroot = \"/run/containerd/runsc\"\nlog_level = \"debug\"\ngrouping = false\nio_uid = 1000\n[runsc_config]\n  debug = \"true\"\n  network = \"none\"\n  overlay2 = true\n",
            b"TypeUrl = \"io.containerd.runsc.v1.options\"\nBinaryName = \"/opt/runsc\"\n",
            b"[runsc_config]\n\"--x\" = \"1\"\n",
        ],
        |input| {
            let _ = ShimConfig::parse(&String::from_utf8_lossy(input), Source::Body);
        },
    );
}

#[test]
fn fuzz_bundle_spec_and_pod_rewrites() {
    let pods = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(
        pods.path()
            .join("uid1/volumes/kubernetes.io~empty-dir/cache"),
    )
    .unwrap();
    fuzzkit::fuzz(
        "bundle-spec",
        &[
            br#"{"ociVersion":"1.0.2","process":{"terminal":false,"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},"linux":{"cgroupsPath":"/kubepods/pod1/c","namespaces":[{"type":"pid"}]},"annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-log-directory":"/var/log/pods/ns_n_uid1","dev.gvisor.spec.mount.cache.type":"bind"},"mounts":[{"destination":"/dev/shm","type":"bind","source":"/run/shm","options":["rbind"]}]}"#,
            br#"{"ociVersion":"1","process":{"user":{"uid":0,"gid":0},"args":["a"],"cwd":"/"},"root":{"path":"/r"},"annotations":{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"p","dev.gvisor.spec.mount.cache.type":"tmpfs"},"mounts":[{"destination":"/c","type":"bind","source":"/var/lib/kubelet/pods/uid1/volumes/kubernetes.io~empty-dir/cache"}]}"#,
        ],
        |input| {
            if let Ok(mut spec) = BundleSpec::parse(input, Path::new("/bundle")) {
                let kind = spec.kind();
                let _ = spec.own_pid_namespace();
                let _ = runsc_shim::podspec::prepare(&mut spec.json, &kind, pods.path());
            }
            // Arbitrary JSON (not necessarily a valid spec) through the pod rewrites too.
            if let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(input) {
                for kind in [
                    runsc_shim::spec::ContainerKind::PodSandbox,
                    runsc_shim::spec::ContainerKind::PodContainer { sandbox_id: "p".into() },
                ] {
                    let _ = runsc_shim::podspec::prepare(&mut json, &kind, pods.path());
                }
            }
        },
    );
}

#[test]
fn fuzz_stdio_uris_and_ids() {
    fuzzkit::fuzz(
        "stdio-uri",
        &[
            b"/run/containerd/fifo/1/c-stdout",
            b"binary:///usr/local/bin/nerdctl?_NERDCTL_INTERNAL_LOGGING=%2Fvar%2Flib%2Fnerdctl&x",
            b"file:///var/log/a%20b.log",
            b"fifo:///x",
            b"a-b_c.d",
        ],
        |input| {
            let s = String::from_utf8_lossy(input);
            let _ = Target::parse(&s);
            let _ = runsc_shim::ids::validate("id", &s);
        },
    );
}
