//! A typed, async client for gVisor's `runsc` command line.
//!
//! Every subcommand the shim needs is one method on [`Runsc`]; its options are a typed struct
//! that renders its own arguments. All process creation goes through an injected [`Spawner`],
//! so a containerd shim (which is a child subreaper and must reap every child itself) can run
//! `runsc` without racing its own reaper, and tests can record what would have run.
//!
//! Every call has a deadline: a `runsc` that hangs is killed and the call fails with
//! [`Error::Timeout`] instead of hanging the caller. The one exception is the caller's choice:
//! [`Runsc::wait`] with no timeout, which lasts as long as the container.
//!
//! ```no_run
//! # async fn demo() -> Result<(), runsc::Error> {
//! use std::sync::Arc;
//! use runsc::{GlobalOpts, Runsc, TokioSpawner};
//!
//! let runsc = Runsc::new(
//!     GlobalOpts::new("runsc", "/run/containerd/runsc/default"),
//!     Arc::new(TokioSpawner),
//! );
//! let state = runsc.state("my-container").await?;
//! println!("{} is {}", state.id, state.status);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod client;
mod error;
mod logjson;
mod opts;
mod root;
mod spawn;
mod types;

pub use client::{Runsc, StdioFds};
pub use error::{Error, FailureKind};
pub use logjson::log_errors;
pub use opts::{
    CheckpointOpts, CreateOpts, DeleteOpts, ExecOpts, GlobalOpts, KillOpts, LogFormat, RestoreOpts,
};
pub use root::RootEntry;
pub use spawn::{ExitStatus, Spawned, Spawner, TokioSpawner};
pub use types::{
    CpuStats, CpuUsage, Event, HugetlbStats, InterfaceStats, MemoryEntry, MemoryStats, PidsStats,
    ProcessInfo, State, Stats, Throttling, Version, WaitResult,
};
