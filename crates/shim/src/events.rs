//! Task events, as the core emits them. The protocol layer turns them into containerd's
//! `containerd.events.*` messages; the sink must keep their order.

use std::fmt;
use std::time::SystemTime;

use crate::io::StdioConfig;
use crate::mount::Mount;

/// One task event. containerd requires, per task, Create < Start < Exit < Delete and, per
/// exec, ExecAdded < ExecStarted < Exit; the core emits them in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A task was created.
    Create {
        /// Task id.
        container_id: String,
        /// Bundle directory.
        bundle: String,
        /// Rootfs mounts.
        rootfs: Vec<Mount>,
        /// The requested stdio.
        stdio: StdioConfig,
        /// Task pid.
        pid: u32,
    },
    /// A task's init process started.
    Start {
        /// Task id.
        container_id: String,
        /// Task pid.
        pid: u32,
    },
    /// A process exited.
    Exit {
        /// Task id.
        container_id: String,
        /// The process: the exec id, or the task id for the init process.
        id: String,
        /// Its pid.
        pid: u32,
        /// Exit status (code, or 128 + signal).
        exit_status: u32,
        /// When.
        exited_at: SystemTime,
    },
    /// A task was deleted.
    Delete {
        /// Task id.
        container_id: String,
        /// Its pid.
        pid: u32,
        /// Exit status.
        exit_status: u32,
        /// When it exited.
        exited_at: SystemTime,
    },
    /// An exec process was added.
    ExecAdded {
        /// Task id.
        container_id: String,
        /// Exec id.
        exec_id: String,
    },
    /// An exec process started.
    ExecStarted {
        /// Task id.
        container_id: String,
        /// Exec id.
        exec_id: String,
        /// Its pid.
        pid: u32,
    },
    /// A task was paused.
    Paused {
        /// Task id.
        container_id: String,
    },
    /// A task was resumed.
    Resumed {
        /// Task id.
        container_id: String,
    },
    /// A task ran out of memory.
    Oom {
        /// Task id.
        container_id: String,
    },
}

impl Event {
    /// containerd's topic for the event.
    pub fn topic(&self) -> &'static str {
        match self {
            Event::Create { .. } => "/tasks/create",
            Event::Start { .. } => "/tasks/start",
            Event::Exit { .. } => "/tasks/exit",
            Event::Delete { .. } => "/tasks/delete",
            Event::ExecAdded { .. } => "/tasks/exec-added",
            Event::ExecStarted { .. } => "/tasks/exec-started",
            Event::Paused { .. } => "/tasks/paused",
            Event::Resumed { .. } => "/tasks/resumed",
            Event::Oom { .. } => "/tasks/oom",
        }
    }
}

/// Receives events in order. `publish` must not block.
pub trait EventSink: Send + Sync + fmt::Debug {
    /// Queues one event.
    fn publish(&self, event: Event);
}
