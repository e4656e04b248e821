//! The `delete` command: cleanup after a task whose shim is gone.
//!
//! containerd runs it when its connection to the shim closes, which is after every normal
//! task delete too, so it must be idempotent, quick (containerd allows 5 s) and harmless to
//! other containers of the same pod. Unlike gVisor's shim it succeeds without `state.json`
//! (the shim may have died before writing it) and passes the same runsc flags as every other
//! runsc call.

use std::io::Write;
use std::sync::Arc;

use crate::flags::Flags;
use anyhow::Context;
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;

pub(crate) fn run(flags: &Flags) -> anyhow::Result<()> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().context("current directory (the bundle)")?
    } else {
        flags.bundle.clone().into()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cleaned = rt
        .block_on(runsc_shim::persist::cleanup(
            &bundle,
            &flags.id,
            Arc::new(runsc::TokioSpawner),
        ))
        .map_err(|e| anyhow::anyhow!("cleanup of {}: {}", flags.id, e.chain()))?;
    let resp = DeleteResponse {
        pid: 0,
        exit_status: cleaned.exit_status,
        exited_at: Some(crate::convert::timestamp(std::time::SystemTime::now())).into(),
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&resp.write_to_bytes()?)?;
    out.flush()?;
    Ok(())
}
