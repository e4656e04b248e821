//! The ttrpc Task service: converts requests, calls the core, converts results and errors.
//!
//! The same implementation is registered as `containerd.task.v2.Task` (containerd 1.6, 1.7
//! and the v2 bridge of 2.x) and `containerd.task.v3.Task` (the messages are identical).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim_protos::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::shim_async::{Task, create_task};
use containerd_shim_protos::types::task::{ProcessInfo, Status as PbStatus};
use runsc_shim::Service;
use runsc_shim::io::StdioConfig;
use runsc_shim::process::Status;
use runsc_shim::service::{CheckpointRequest, CreateRequest, ExecRequest};
use tracing::Instrument;
use ttrpc::r#async::TtrpcContext;

use crate::convert;
use crate::errors::to_ttrpc;
use crate::logging::LogControl;

/// ttrpc service names this shim answers to.
pub(crate) const TASK_V2: &str = "containerd.task.v2.Task";
const TASK_V3: &str = "containerd.task.v3.Task";

/// The Task service.
#[derive(Debug, Clone)]
pub(crate) struct TaskService {
    svc: Service,
    logs: LogControl,
}

type TResult<T> = ttrpc::Result<T>;

fn status(s: Status) -> PbStatus {
    match s {
        Status::Created => PbStatus::CREATED,
        Status::Running => PbStatus::RUNNING,
        Status::Paused => PbStatus::PAUSED,
        Status::Stopped | Status::Deleted => PbStatus::STOPPED,
    }
}

impl TaskService {
    pub(crate) fn new(svc: Service, logs: LogControl) -> TaskService {
        TaskService { svc, logs }
    }

    /// The ttrpc services: the task API under both version names.
    pub(crate) fn services(self) -> HashMap<String, ttrpc::r#async::Service> {
        let task: Arc<dyn Task + Send + Sync> = Arc::new(self);
        let mut services = create_task(task.clone());
        let mut v2 = create_task(task);
        if let Some(service) = v2.remove(TASK_V3) {
            services.insert(TASK_V2.to_owned(), service);
        }
        services
    }
}

/// One span per call, carrying the task and exec id.
macro_rules! rpc {
    ($name:literal, $id:expr, $exec:expr, $body:expr) => {{
        let span = tracing::info_span!("rpc", rpc = $name, id = %$id, exec_id = %$exec);
        async {
            tracing::debug!("request");
            let r = $body.await;
            match &r {
                Ok(_) => tracing::debug!("done"),
                Err(e) => tracing::info!(error = %e.chain(), "failed"),
            }
            r.map_err(|e| to_ttrpc(&e))
        }
        .instrument(span)
        .await
    }};
}

#[async_trait]
impl Task for TaskService {
    async fn state(&self, _: &TtrpcContext, req: StateRequest) -> TResult<StateResponse> {
        let st = rpc!("state", req.id, req.exec_id, async {
            self.svc.state(&req.id, &req.exec_id)
        })?;
        Ok(StateResponse {
            id: st.id,
            bundle: st.bundle,
            pid: st.pid,
            status: status(st.status).into(),
            stdin: st.stdio.stdin,
            stdout: st.stdio.stdout,
            stderr: st.stdio.stderr,
            terminal: st.stdio.terminal,
            exit_status: st.exit.map_or(0, |e| e.status),
            exited_at: st.exit.map(|e| convert::timestamp(e.at)).into(),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TResult<CreateTaskResponse> {
        let create = CreateRequest {
            id: req.id.clone(),
            bundle: req.bundle.clone().into(),
            rootfs: req.rootfs.iter().map(convert::mount_from_pb).collect(),
            stdio: StdioConfig {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            options: match req.options.as_ref() {
                Some(a) => {
                    crate::options::decode(&a.type_url, &a.value).map_err(|e| to_ttrpc(&e))?
                }
                None => None,
            },
            checkpoint: (!req.checkpoint.is_empty()).then(|| req.checkpoint.clone().into()),
        };
        let pid = rpc!("create", req.id, "", self.svc.create(create))?;
        if let Some(cfg) = self.svc.config_of(&req.id) {
            if let Some(level) = &cfg.log_level {
                self.logs.set_level(level);
            }
            if let Some(path) = &cfg.log_path {
                self.logs.set_file(path, &req.id);
            }
        }
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(&self, _: &TtrpcContext, req: StartRequest) -> TResult<StartResponse> {
        let pid = rpc!(
            "start",
            req.id,
            req.exec_id,
            self.svc.start(&req.id, &req.exec_id)
        )?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> TResult<DeleteResponse> {
        let d = rpc!(
            "delete",
            req.id,
            req.exec_id,
            self.svc.delete(&req.id, &req.exec_id)
        )?;
        Ok(DeleteResponse {
            pid: d.pid,
            exit_status: d.exit_status,
            exited_at: d.exited_at.map(convert::timestamp).into(),
            ..Default::default()
        })
    }

    async fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> TResult<PidsResponse> {
        let list = rpc!("pids", req.id, "", self.svc.pids(&req.id))?;
        let processes = list
            .into_iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                info: p
                    .exec_id
                    .map(|exec_id| {
                        convert::any(&ProcessDetails {
                            exec_id,
                            ..Default::default()
                        })
                    })
                    .into(),
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> TResult<Empty> {
        rpc!("pause", req.id, "", self.svc.pause(&req.id))?;
        Ok(Empty::new())
    }

    async fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> TResult<Empty> {
        rpc!("resume", req.id, "", self.svc.resume(&req.id))?;
        Ok(Empty::new())
    }

    async fn checkpoint(&self, _: &TtrpcContext, req: CheckpointTaskRequest) -> TResult<Empty> {
        let opts = match req.options.as_ref() {
            Some(a) => {
                crate::options::checkpoint(&a.type_url, &a.value).map_err(|e| to_ttrpc(&e))?
            }
            None => Default::default(),
        };
        let ck = CheckpointRequest {
            path: req.path.clone().into(),
            exit: opts.exit,
            image_path: (!opts.image_path.is_empty()).then(|| opts.image_path.clone().into()),
        };
        rpc!("checkpoint", req.id, "", self.svc.checkpoint(&req.id, ck))?;
        Ok(Empty::new())
    }

    async fn kill(&self, _: &TtrpcContext, req: KillRequest) -> TResult<Empty> {
        rpc!(
            "kill",
            req.id,
            req.exec_id,
            self.svc.kill(&req.id, &req.exec_id, req.signal, req.all)
        )?;
        Ok(Empty::new())
    }

    async fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> TResult<Empty> {
        let exec = ExecRequest {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            stdio: StdioConfig {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            spec: req
                .spec
                .as_ref()
                .map(|a| a.value.clone())
                .unwrap_or_default(),
        };
        rpc!("exec", req.id, req.exec_id, self.svc.exec(exec))?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> TResult<Empty> {
        rpc!("resize_pty", req.id, req.exec_id, async {
            self.svc
                .resize_pty(&req.id, &req.exec_id, req.width, req.height)
        })?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> TResult<Empty> {
        rpc!(
            "close_io",
            req.id,
            req.exec_id,
            self.svc.close_io(&req.id, &req.exec_id)
        )?;
        Ok(Empty::new())
    }

    async fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> TResult<Empty> {
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        rpc!("update", req.id, "", self.svc.update(&req.id, &resources))?;
        Ok(Empty::new())
    }

    async fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> TResult<WaitResponse> {
        let exit = rpc!(
            "wait",
            req.id,
            req.exec_id,
            self.svc.wait(&req.id, &req.exec_id)
        )?;
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: Some(convert::timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    async fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> TResult<StatsResponse> {
        let stats = rpc!("stats", req.id, "", self.svc.stats(&req.id))?;
        Ok(StatsResponse {
            stats: Some(convert::metrics(&stats, convert::host_is_cgroup_v2())).into(),
            ..Default::default()
        })
    }

    async fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> TResult<ConnectResponse> {
        let (shim_pid, task_pid) = self.svc.connect(&req.id);
        Ok(ConnectResponse {
            shim_pid,
            task_pid,
            version: crate::VERSION.to_owned(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _: &TtrpcContext, req: ShutdownRequest) -> TResult<Empty> {
        let accepted = self.svc.shutdown();
        tracing::debug!(id = %req.id, accepted, "shutdown");
        Ok(Empty::new())
    }
}
