//! The Kubernetes manifests in `packaging/k8s`: they parse, carry the required fields, and
//! agree with each other and with the installer (the RuntimeClass handler is the runtime
//! name the installer writes into containerd's config; every pod template uses the
//! RuntimeClass). The node install script runs against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use yaml_rust2::{Yaml, YamlLoader};

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/k8s")
}

fn docs(rel: &str) -> Vec<Yaml> {
    let path = k8s_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs =
        YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!docs.is_empty(), "{rel}: no documents");
    for d in &docs {
        assert!(
            d["apiVersion"].as_str().is_some(),
            "{rel}: apiVersion missing"
        );
        assert!(d["kind"].as_str().is_some(), "{rel}: kind missing");
        assert!(
            d["metadata"]["name"].as_str().is_some(),
            "{rel}: metadata.name missing"
        );
    }
    docs
}

fn all_files() -> Vec<String> {
    let mut out = Vec::new();
    for dir in [k8s_dir(), k8s_dir().join("agent-sandbox")] {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") {
                let rel = e
                    .path()
                    .strip_prefix(k8s_dir())
                    .unwrap()
                    .display()
                    .to_string();
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// The pod spec inside a Deployment, Sandbox, SandboxTemplate, DaemonSet...
fn pod_spec(d: &Yaml) -> Option<&Yaml> {
    let spec = &d["spec"];
    [&spec["template"]["spec"], &spec["podTemplate"]["spec"]]
        .into_iter()
        .find(|s| !s.is_badvalue())
}

#[test]
fn every_manifest_parses_with_required_fields() {
    let files = all_files();
    assert!(files.len() >= 8, "{files:?}");
    for f in files {
        docs(&f);
    }
}

#[test]
fn runtime_class_matches_the_installer() {
    let handler = runsc_shim_installer::Options::default().runtime_name;
    let classes: Vec<Yaml> = docs("runtimeclass.yaml")
        .into_iter()
        .filter(|d| d["kind"].as_str() == Some("RuntimeClass"))
        .collect();
    let gvisor = classes
        .iter()
        .find(|c| c["metadata"]["name"].as_str() == Some("gvisor"))
        .expect("RuntimeClass gvisor");
    assert_eq!(gvisor["apiVersion"].as_str(), Some("node.k8s.io/v1"));
    for c in &classes {
        assert_eq!(
            c["handler"].as_str(),
            Some(handler.as_str()),
            "{:?}",
            c["metadata"]["name"]
        );
    }
}

#[test]
fn workloads_use_the_gvisor_runtime_class() {
    let mut checked = 0;
    for f in all_files() {
        for d in docs(&f) {
            let kind = d["kind"].as_str().unwrap().to_owned();
            if matches!(
                kind.as_str(),
                "DaemonSet"
                    | "RuntimeClass"
                    | "Namespace"
                    | "ServiceAccount"
                    | "ClusterRole"
                    | "ClusterRoleBinding"
                    | "SandboxClaim"
                    | "SandboxWarmPool"
            ) {
                continue;
            }
            let spec = pod_spec(&d).unwrap_or_else(|| panic!("{f}: {kind} without a pod template"));
            assert_eq!(
                spec["runtimeClassName"].as_str(),
                Some("gvisor"),
                "{f}: {kind}"
            );
            assert!(
                spec["containers"].as_vec().is_some_and(|c| !c.is_empty()),
                "{f}: no containers"
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "{checked}");
}

#[test]
fn agent_sandbox_kinds_and_references() {
    let sb = docs("agent-sandbox/sandbox-mcp.yaml");
    assert_eq!(
        sb[0]["apiVersion"].as_str(),
        Some("agents.x-k8s.io/v1alpha1")
    );
    assert_eq!(sb[0]["kind"].as_str(), Some("Sandbox"));
    let ports = &pod_spec(&sb[0]).unwrap()["containers"][0]["ports"][0]["containerPort"];
    assert_eq!(ports.as_i64(), Some(3001), "the MCP server port");
    let tpl = docs("agent-sandbox/sandbox-template.yaml");
    let name = tpl[0]["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        tpl[0]["apiVersion"].as_str(),
        Some("extensions.agents.x-k8s.io/v1alpha1")
    );
    for (file, kind) in [
        ("agent-sandbox/sandbox-claim.yaml", "SandboxClaim"),
        ("agent-sandbox/sandbox-warmpool.yaml", "SandboxWarmPool"),
    ] {
        let d = &docs(file)[0];
        assert_eq!(d["kind"].as_str(), Some(kind));
        assert_eq!(
            d["apiVersion"].as_str(),
            Some("extensions.agents.x-k8s.io/v1alpha1")
        );
        assert_eq!(
            d["spec"]["sandboxTemplateRef"]["name"].as_str(),
            Some(name),
            "{file} refers to the template"
        );
    }
}

#[test]
fn installer_daemonset_runs_the_install_script_privileged() {
    let ds = docs("installer-daemonset.yaml")
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .expect("DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostPID"].as_bool(), Some(true));
    let c = &spec["containers"][0];
    assert_eq!(c["securityContext"]["privileged"].as_bool(), Some(true));
    let cmd: Vec<&str> = c["command"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        cmd.iter().any(|a| a.ends_with("install-node.sh")),
        "{cmd:?}"
    );
}

/// install-node.sh against the real binary: it installs into the given paths, labels the
/// node (kubectl stubbed), then sleeps until terminated.
#[test]
fn install_node_script_runs_the_installer() {
    let shim = e2e::versions::shim_binary();
    if !shim.is_file() {
        eprintln!("skipped: {} not built", shim.display());
        return;
    }
    let dir = tempfile_dir();
    let bin = dir.join("stub-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("kubectl"),
        format!("#!/bin/sh\necho \"$@\" >> {}/kubectl.log\n", dir.display()),
    )
    .unwrap();
    std::fs::write(dir.join("runsc"), "#!/bin/sh\necho fake runsc\n").unwrap();
    for f in [bin.join("kubectl"), dir.join("runsc")] {
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::write(dir.join("config.toml"), "version = 2\n").unwrap();
    let mut child = std::process::Command::new("sh")
        .arg(k8s_dir().join("install-node.sh"))
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("NODE_NAME", "node-1")
        .env("SHIM", &shim)
        .env("RUNSC", dir.join("runsc"))
        .env("BIN_DIR", dir.join("usr-local-bin"))
        .env("CONTAINERD_CONFIG", dir.join("config.toml"))
        .env("RUNSC_CONFIG", dir.join("runsc.toml"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(dir.join("kubectl.log"))
        .is_ok_and(|l| l.contains("label node node-1"))
    {
        assert!(
            Instant::now() < deadline,
            "the script never labelled the node"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) with a pid we own and a valid signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM ends the script cleanly: {status}"
    );
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(
        config.contains("runtime_type = \"io.containerd.runsc.v1\""),
        "{config}"
    );
    assert!(dir.join("usr-local-bin/containerd-shim-runsc-v1").is_file());
    assert!(dir.join("usr-local-bin/runsc").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("manifests-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
