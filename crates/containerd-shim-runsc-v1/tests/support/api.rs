//! A ttrpc client for the shim's services, addressed by service name: the generated
//! `TaskClient` always says `containerd.task.v3.Task`, while containerd 1.x (and 2.x's v2
//! bridge) say `containerd.task.v2.Task`.

use std::path::Path;

use containerd_shim_protos::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, KillRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest,
    StateResponse, WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use ttrpc::r#async::Client;

use super::DEADLINE;

/// The task API as containerd 1.6, 1.7 and 2.x's v2 bridge call it.
pub const TASK_V2: &str = "containerd.task.v2.Task";
/// The task API as containerd 2.x calls a shim that answered `start` with version 3.
pub const TASK_V3: &str = "containerd.task.v3.Task";
/// containerd 2.x's Sandbox API (`sandboxer = "shim"`).
pub const SANDBOX: &str = "containerd.runtime.sandbox.v1.Sandbox";

/// One connection to the shim.
#[derive(Clone)]
pub struct Conn {
    client: Client,
}

impl Conn {
    /// Connects to the shim socket at `path`.
    pub async fn connect(path: &Path) -> Conn {
        let client = Client::connect(&format!("unix://{}", path.display()))
            .await
            .unwrap();
        Conn { client }
    }

    /// Calls `service`/`method` with `req`.
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
    ) -> ttrpc::Result<Resp> {
        let request = ttrpc::Request {
            service: service.to_owned(),
            method: method.to_owned(),
            timeout_nano: i64::try_from(DEADLINE.as_nanos()).unwrap(),
            payload: req.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let response = self.client.request(request).await?;
        Ok(Resp::parse_from_bytes(&response.payload).unwrap())
    }

    /// The task API under the name `service`.
    pub fn task(&self, service: &'static str) -> Task {
        Task {
            conn: self.clone(),
            service,
        }
    }
}

/// The task API under one of its names.
#[derive(Clone)]
pub struct Task {
    conn: Conn,
    service: &'static str,
}

impl Task {
    async fn call<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
    ) -> ttrpc::Result<Resp> {
        self.conn.call(self.service, method, req).await
    }

    /// `Connect`.
    pub async fn connect(&self, id: &str) -> ttrpc::Result<ConnectResponse> {
        let req = ConnectRequest {
            id: id.to_owned(),
            ..Default::default()
        };
        self.call("Connect", &req).await
    }

    /// `Create`.
    pub async fn create(&self, req: &CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
        self.call("Create", req).await
    }

    /// `Start` of the task's init process.
    pub async fn start(&self, id: &str) -> ttrpc::Result<StartResponse> {
        let req = StartRequest {
            id: id.to_owned(),
            ..Default::default()
        };
        self.call("Start", &req).await
    }

    /// `State` of the task's init process.
    pub async fn state(&self, id: &str) -> ttrpc::Result<StateResponse> {
        let req = StateRequest {
            id: id.to_owned(),
            ..Default::default()
        };
        self.call("State", &req).await
    }

    /// `Kill` of the task's init process.
    pub async fn kill(&self, id: &str, signal: u32) -> ttrpc::Result<Empty> {
        let req = KillRequest {
            id: id.to_owned(),
            signal,
            ..Default::default()
        };
        self.call("Kill", &req).await
    }

    /// `Wait` for the task's init process.
    pub async fn wait(&self, id: &str) -> ttrpc::Result<WaitResponse> {
        let req = WaitRequest {
            id: id.to_owned(),
            ..Default::default()
        };
        self.call("Wait", &req).await
    }

    /// `Delete` of the task.
    pub async fn delete(&self, id: &str) -> ttrpc::Result<DeleteResponse> {
        let req = DeleteRequest {
            id: id.to_owned(),
            ..Default::default()
        };
        self.call("Delete", &req).await
    }

    /// `Shutdown` of the shim.
    pub async fn shutdown(&self, id: &str) -> ttrpc::Result<Empty> {
        let req = ShutdownRequest {
            id: id.to_owned(),
            ..Default::default()
        };
        self.call("Shutdown", &req).await
    }
}
