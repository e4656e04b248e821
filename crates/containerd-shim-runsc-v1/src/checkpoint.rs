//! `checkpoint`: a node operator's checkpoint of a running task into a directory on the node,
//! through the task's shim. For a pod, the task is its sandbox (pause) container, and the
//! image holds the whole pod; a new pod whose pod annotation `dev.gvisor.restore.image-path`
//! names the directory is restored from it (docs/checkpoint.md).
//!
//! containerd's own checkpoint (`ctr task checkpoint`) puts the image into its content store
//! and its clients send the image path and the exit option only to runtimes named
//! `io.containerd.runc.*`; the kubelet's checkpoint API names one container and needs CRIU.
//! So this command asks the shim directly: it finds the shim's socket in the task's bundle
//! (containerd writes the `address` file there for every task) and sends the task API's
//! Checkpoint with runc's `CheckpointOptions`, as containerd would.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use containerd_shim_protos::api::CheckpointTaskRequest;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::oci::CheckpointOptions;
use containerd_shim_protos::shim_async::TaskClient;

use crate::args::Args;

const USAGE: &str = "usage: containerd-shim-runsc-v1 checkpoint --image-path DIR [--exit] \
[--namespace NS] [--state DIR] [--timeout SECONDS] ID
  ID            the pod's sandbox id (`crictl pods -q --name NAME`); the image is restored
                by a new pod with the pod annotation dev.gvisor.restore.image-path=DIR
  --image-path  where the image goes (made if missing; must not hold a checkpoint)
  --exit        stop the task after the checkpoint (default: it goes on running)
  --namespace   containerd namespace (default k8s.io, the kubelet's)
  --state       containerd's state directory (default /run/containerd)
  --timeout     seconds to wait for the checkpoint (default 300)";

/// Where containerd keeps the bundles of runtime v2 tasks, below its state directory.
const TASK_DIR: &str = "io.containerd.runtime.v2.task";

/// A checkpoint request from the command line.
#[derive(Debug, PartialEq)]
struct Request {
    id: String,
    image_path: PathBuf,
    exit: bool,
    namespace: String,
    state: PathBuf,
    timeout: Duration,
}

fn parse(args: &[String]) -> anyhow::Result<Request> {
    let mut id = None;
    let mut image_path = None;
    let mut exit = false;
    let mut namespace = "k8s.io".to_owned();
    let mut state = PathBuf::from("/run/containerd");
    let mut timeout = Duration::from_secs(300);
    let mut it = Args::new(args, USAGE);
    while let Some(flag) = it.next_arg() {
        match flag.as_str() {
            "--image-path" => image_path = Some(PathBuf::from(it.value(&flag)?)),
            "--exit" => exit = true,
            "--namespace" | "-n" => namespace = it.value(&flag)?,
            "--state" => state = PathBuf::from(it.value(&flag)?),
            "--timeout" => {
                let v = it.value(&flag)?;
                let secs: u64 =
                    v.parse().ok().filter(|s| *s > 0).with_context(|| {
                        format!("--timeout must be a number of seconds, got {v:?}")
                    })?;
                timeout = Duration::from_secs(secs);
            }
            "-h" | "--help" => bail!("{USAGE}"),
            other if other.starts_with('-') => bail!("unknown argument {other:?}\n{USAGE}"),
            other => {
                if id.replace(other.to_owned()).is_some() {
                    bail!("one task id only\n{USAGE}");
                }
            }
        }
    }
    let id = id.with_context(|| format!("the task id is missing\n{USAGE}"))?;
    let image_path = image_path.with_context(|| format!("--image-path is required\n{USAGE}"))?;
    runsc_shim::ids::validate("namespace", &namespace)?;
    runsc_shim::ids::validate("task id", &id)?;
    // The shim runs elsewhere: a relative path would be its own working directory's.
    let image_path = std::path::absolute(&image_path)
        .with_context(|| format!("resolve {}", image_path.display()))?;
    Ok(Request {
        id,
        image_path,
        exit,
        namespace,
        state,
        timeout,
    })
}

/// Runs `checkpoint`.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let a = parse(args)?;
    if a.image_path.join("checkpoint.img").exists() {
        bail!(
            "{} already holds a checkpoint: runsc does not overwrite one; remove it or choose \
             another directory",
            a.image_path.display()
        );
    }
    let bundle = a.state.join(TASK_DIR).join(&a.namespace).join(&a.id);
    let address = std::fs::read_to_string(bundle.join("address"))
        .map(|s| s.trim().to_owned())
        .map_err(|e| {
            anyhow::anyhow!(
                "no running task {:?} in namespace {:?} of the containerd whose state is {} \
                 ({}: {e}); a pod is named by its sandbox id (`crictl pods -q --name NAME`)",
                a.id,
                a.namespace,
                a.state.display(),
                bundle.join("address").display()
            )
        })?;
    let mut options = CheckpointOptions::new();
    options.exit = a.exit;
    options.image_path = a.image_path.display().to_string();
    let mut any = Any::new();
    any.type_url = "containerd.runc.v1.CheckpointOptions".to_owned();
    any.value = options
        .write_to_bytes()
        .context("encode checkpoint options")?;
    let mut req = CheckpointTaskRequest::new();
    req.id = a.id.clone();
    req.path = a.image_path.display().to_string();
    req.options = Some(any).into();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    rt.block_on(async {
        let client = ttrpc::r#async::Client::connect(&address)
            .await
            .with_context(|| format!("connect to the shim of task {} at {address}", a.id))?;
        let task = TaskClient::new(client);
        let ctx = ttrpc::context::with_timeout(a.timeout.as_nanos() as i64);
        task.checkpoint(ctx, &req)
            .await
            .map_err(|e| anyhow::anyhow!("checkpoint of task {} failed: {}", a.id, message(&e)))
    })?;
    let out = format!(
        "checkpointed {} into {}{}\n",
        a.id,
        a.image_path.display(),
        if a.exit { "; the task stops" } else { "" }
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    Ok(())
}

/// The message of a ttrpc error: the shim's own words for an RPC status.
fn message(e: &ttrpc::Error) -> String {
    match e {
        ttrpc::Error::RpcStatus(s) => s.message().to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_flags_and_defaults() {
        let a = parse(&args(&["--image-path", "/var/ckpt/a", "pod1"])).unwrap();
        assert_eq!(a.id, "pod1");
        assert_eq!(a.image_path, PathBuf::from("/var/ckpt/a"));
        assert!(!a.exit);
        assert_eq!(a.namespace, "k8s.io");
        assert_eq!(a.state, PathBuf::from("/run/containerd"));
        let a = parse(&args(&[
            "--exit",
            "--namespace=default",
            "--state",
            "/tmp/s",
            "--image-path=rel",
            "--timeout",
            "9",
            "c1",
        ]))
        .unwrap();
        assert!(a.exit && a.namespace == "default" && a.state == std::path::Path::new("/tmp/s"));
        assert!(a.image_path.is_absolute() && a.image_path.ends_with("rel"));
        assert_eq!(a.timeout, Duration::from_secs(9));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let e = |a: &[&str]| parse(&args(a)).unwrap_err().to_string();
        assert!(e(&["pod1"]).contains("--image-path is required"));
        assert!(e(&["--image-path", "/x"]).contains("task id is missing"));
        assert!(e(&["--image-path", "/x", "a", "b"]).contains("one task id only"));
        assert!(e(&["--image-path", "/x", "--leave", "a"]).contains("unknown argument"));
        assert!(e(&["--image-path", "/x", "../etc"]).contains("task id"));
        assert!(e(&["--image-path", "/x", "--timeout", "0", "a"]).contains("--timeout"));
    }
}
