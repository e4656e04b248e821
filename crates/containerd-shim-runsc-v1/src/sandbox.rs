//! containerd's Sandbox API (`containerd.runtime.sandbox.v1.Sandbox`), answered with a clear
//! error.
//!
//! containerd 2.x calls it on the shim when the runtime is configured with
//! `sandboxer = "shim"`. This shim runs pods through the Task API (containerd's default
//! `podsandbox` sandboxer: the pause container is the pod's gVisor sandbox), so every call
//! says which setting to change instead of ttrpc's bare "service does not exist".

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim_protos::sandbox_api::{
    CreateSandboxRequest, CreateSandboxResponse, PingRequest, PingResponse, PlatformRequest,
    PlatformResponse, SandboxMetricsRequest, SandboxMetricsResponse, SandboxStatusRequest,
    SandboxStatusResponse, ShutdownSandboxRequest, ShutdownSandboxResponse, StartSandboxRequest,
    StartSandboxResponse, StopSandboxRequest, StopSandboxResponse, WaitSandboxRequest,
    WaitSandboxResponse,
};
use containerd_shim_protos::sandbox_async::{Sandbox, create_sandbox};
use ttrpc::r#async::TtrpcContext;

use crate::errors::unimplemented;

/// The error every Sandbox API call gets.
pub(crate) const NOT_SERVED: &str = "containerd-shim-runsc-v1 does not serve containerd's \
    Sandbox API: remove `sandboxer = \"shim\"` from the runsc runtime in containerd's config \
    (the default sandboxer, \"podsandbox\", runs pods in gVisor through this shim)";

/// The Sandbox service: every method refuses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SandboxService;

impl SandboxService {
    /// The ttrpc service to register beside the Task API.
    pub(crate) fn services() -> HashMap<String, ttrpc::r#async::Service> {
        create_sandbox(Arc::new(SandboxService))
    }
}

macro_rules! refuse {
    ($($method:ident($req:ty) -> $resp:ty;)*) => {
        #[async_trait]
        impl Sandbox for SandboxService {
            $(
                async fn $method(&self, _ctx: &TtrpcContext, _req: $req) -> ttrpc::Result<$resp> {
                    tracing::warn!(rpc = stringify!($method), "Sandbox API call refused");
                    Err(unimplemented(NOT_SERVED))
                }
            )*
        }
    };
}

refuse! {
    create_sandbox(CreateSandboxRequest) -> CreateSandboxResponse;
    start_sandbox(StartSandboxRequest) -> StartSandboxResponse;
    platform(PlatformRequest) -> PlatformResponse;
    stop_sandbox(StopSandboxRequest) -> StopSandboxResponse;
    wait_sandbox(WaitSandboxRequest) -> WaitSandboxResponse;
    sandbox_status(SandboxStatusRequest) -> SandboxStatusResponse;
    ping_sandbox(PingRequest) -> PingResponse;
    shutdown_sandbox(ShutdownSandboxRequest) -> ShutdownSandboxResponse;
    sandbox_metrics(SandboxMetricsRequest) -> SandboxMetricsResponse;
}
