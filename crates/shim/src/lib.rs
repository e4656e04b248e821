//! The protocol-free core of `containerd-shim-runsc-v1`.
//!
//! It knows tasks, processes and their state machine, the subreaper, stdio, events and the
//! shim configuration, and drives gVisor through the [`runsc`] client. It knows nothing of
//! ttrpc or protobuf: the binary crate adapts containerd's Task API onto [`Service`].
#![warn(missing_docs)]

pub mod cgroups;
pub mod config;
pub mod container;
pub mod error;
pub mod events;
pub mod ids;
pub mod io;
pub mod masked;
pub mod mount;
pub mod oom;
pub mod persist;
pub mod podcheck;
pub mod podspec;
pub mod process;
pub mod program;
pub mod reaper;
pub mod service;
pub mod spec;

pub use error::{Error, Result};
pub use service::Service;
