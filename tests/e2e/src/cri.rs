//! A blocking CRI client (the `k8s-cri` crate's tonic client over containerd's socket).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
pub use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

/// A connected CRI client.
#[derive(Debug)]
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to containerd's gRPC socket.
    pub fn connect(socket: &Path) -> Result<Cri> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let path = socket.to_path_buf();
        let channel = rt.block_on(async move {
            Endpoint::try_from("http://[::]")?
                .timeout(Duration::from_secs(120))
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let p = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(p).await?,
                        ))
                    }
                }))
                .await
                .context("connect to containerd's CRI")
        })?;
        Ok(Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// Runs a request on the client's runtime.
    pub fn call<T>(
        &mut self,
        f: impl AsyncFnOnce(
            &mut RuntimeServiceClient<Channel>,
        ) -> Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T> {
        let Cri { rt, runtime, .. } = self;
        Ok(rt.block_on(f(runtime))?.into_inner())
    }

    /// The runtime's version (a liveness probe).
    pub fn version(&mut self) -> Result<VersionResponse> {
        self.call(async |c| {
            c.version(VersionRequest {
                version: "v1".into(),
            })
            .await
        })
    }

    /// Whether an image is present.
    pub fn image_present(&mut self, name: &str) -> Result<bool> {
        let Cri { rt, images, .. } = self;
        let r = rt.block_on(images.image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: name.into(),
                ..Default::default()
            }),
            verbose: false,
        }))?;
        Ok(r.into_inner().image.is_some())
    }

    /// RunPodSandbox with runtime handler `handler`.
    pub fn run_pod(&mut self, config: &PodSandboxConfig, handler: &str) -> Result<String> {
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        Ok(self
            .call(async |c| c.run_pod_sandbox(req).await)?
            .pod_sandbox_id)
    }

    /// CreateContainer + StartContainer.
    pub fn start_container(
        &mut self,
        pod: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String> {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        };
        let id = self
            .call(async |c| c.create_container(req).await)?
            .container_id;
        let start = StartContainerRequest {
            container_id: id.clone(),
        };
        self.call(async |c| c.start_container(start).await)?;
        Ok(id)
    }

    /// ContainerStatus.
    pub fn container_status(&mut self, id: &str) -> Result<ContainerStatus> {
        let req = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.call(async |c| c.container_status(req).await)?
            .status
            .context("no container status")
    }

    /// PodSandboxStatus.
    pub fn pod_status(&mut self, id: &str) -> Result<PodSandboxStatusResponse> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        self.call(async |c| c.pod_sandbox_status(req).await)
    }

    /// ExecSync with a timeout in seconds (0: none).
    pub fn exec_sync(&mut self, id: &str, cmd: &[&str], timeout: i64) -> Result<ExecSyncResponse> {
        let req = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        self.call(async |c| c.exec_sync(req).await)
    }

    /// Exec (streaming): the URL to connect to.
    pub fn exec_url(&mut self, id: &str, cmd: &[&str], tty: bool, stdin: bool) -> Result<String> {
        let req = ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        };
        Ok(self.call(async |c| c.exec(req).await)?.url)
    }

    /// StopContainer with a grace period in seconds.
    pub fn stop_container(&mut self, id: &str, timeout: i64) -> Result<()> {
        let req = StopContainerRequest {
            container_id: id.into(),
            timeout,
        };
        self.call(async |c| c.stop_container(req).await).map(drop)
    }

    /// RemoveContainer.
    pub fn remove_container(&mut self, id: &str) -> Result<()> {
        let req = RemoveContainerRequest {
            container_id: id.into(),
        };
        self.call(async |c| c.remove_container(req).await).map(drop)
    }

    /// StopPodSandbox + RemovePodSandbox.
    pub fn remove_pod(&mut self, id: &str) -> Result<()> {
        let stop = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call(async |c| c.stop_pod_sandbox(stop).await)?;
        let rm = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call(async |c| c.remove_pod_sandbox(rm).await)
            .map(drop)
    }

    /// Waits up to `limit` for container `id` to exit, then requires what the kubelet shows
    /// for an OOM kill: reason `OOMKilled`, exit code 137.
    pub fn wait_oom_killed(&mut self, id: &str, limit: Duration) -> Result<()> {
        let exited = ContainerState::ContainerExited as i32;
        crate::runner::eventually(&format!("{id} to be killed"), limit, || {
            Ok(self.container_status(id)?.state == exited)
        })?;
        let st = self.container_status(id)?;
        anyhow::ensure!(
            (st.reason.as_str(), st.exit_code) == ("OOMKilled", 137),
            "{id}: reason {:?} exit code {}",
            st.reason,
            st.exit_code
        );
        Ok(())
    }

    /// ContainerStats.
    pub fn container_stats(&mut self, id: &str) -> Result<ContainerStats> {
        let req = ContainerStatsRequest {
            container_id: id.into(),
        };
        self.call(async |c| c.container_stats(req).await)?
            .stats
            .context("no stats")
    }

    /// ListPodSandbox.
    pub fn list_pods(&mut self) -> Result<Vec<PodSandbox>> {
        Ok(self
            .call(async |c| {
                c.list_pod_sandbox(ListPodSandboxRequest { filter: None })
                    .await
            })?
            .items)
    }

    /// ListContainers.
    pub fn list_containers(&mut self) -> Result<Vec<Container>> {
        Ok(self
            .call(async |c| {
                c.list_containers(ListContainersRequest { filter: None })
                    .await
            })?
            .containers)
    }

    /// UpdateContainerResources.
    pub fn update_resources(&mut self, id: &str, resources: LinuxContainerResources) -> Result<()> {
        let req = UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(resources),
            ..Default::default()
        };
        self.call(async |c| c.update_container_resources(req).await)
            .map(drop)
    }

    /// ReopenContainerLog.
    pub fn reopen_log(&mut self, id: &str) -> Result<()> {
        let req = ReopenContainerLogRequest {
            container_id: id.into(),
        };
        self.call(async |c| c.reopen_container_log(req).await)
            .map(drop)
    }
}

/// The kubelet's default namespace modes: each container its own pid namespace
/// (`shareProcessNamespace: false`); network and IPC shared by the pod.
fn kubelet_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A pod config: name, uid, log directory, cgroup parent, host-network off.
pub fn pod_config(name: &str, uid: &str, log_dir: &Path, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config running `args` in `image`, logging to `<name>.log`.
pub fn container_config(name: &str, image: &str, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        // The kubelet repeats the pod's namespace modes for every container.
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Like [`container_config`], for a pod with one process namespace.
pub fn shared_pid_container_config(name: &str, image: &str, args: &[&str]) -> ContainerConfig {
    let mut cfg = container_config(name, image, args);
    if let Some(ns) = container_namespaces(&mut cfg) {
        ns.pid = NamespaceMode::Pod as i32;
    }
    cfg
}

/// Like [`pod_config`], with one process namespace for the whole pod
/// (`shareProcessNamespace: true`).
pub fn shared_pid_pod_config(
    name: &str,
    uid: &str,
    log_dir: &Path,
    cgroup_parent: &str,
) -> PodSandboxConfig {
    let mut cfg = pod_config(name, uid, log_dir, cgroup_parent);
    if let Some(ns) = pod_namespaces(&mut cfg) {
        ns.pid = NamespaceMode::Pod as i32;
    }
    cfg
}

/// The namespace modes of a pod config.
pub fn pod_namespaces(cfg: &mut PodSandboxConfig) -> Option<&mut NamespaceOption> {
    cfg.linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
}

/// The namespace modes of a container config.
pub fn container_namespaces(cfg: &mut ContainerConfig) -> Option<&mut NamespaceOption> {
    cfg.linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
}

/// A pod on the node's network (`hostNetwork: true`) with a container of it: no CNI needed.
pub fn host_network(pod: &mut PodSandboxConfig, containers: &mut [&mut ContainerConfig]) {
    if let Some(ns) = pod_namespaces(pod) {
        ns.network = NamespaceMode::Node as i32;
    }
    for c in containers {
        if let Some(ns) = container_namespaces(c) {
            ns.network = NamespaceMode::Node as i32;
        }
    }
}
