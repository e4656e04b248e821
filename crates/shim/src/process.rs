//! Processes (a task's init process and its execs) and their state machine.
//!
//! ```text
//!   Created ──start──▶ Running ◀──resume── Paused
//!      │                 │  └────pause────▶  │
//!      │ kill/delete     │ exit              │ exit
//!      ▼                 ▼                   ▼
//!   Stopped ◀────────────┴───────────────────┘ ──delete──▶ Deleted
//! ```
//!
//! Every change goes through [`State::transition`], which refuses anything not drawn above
//! with `FailedPrecondition`. Operations that run runsc hold the process's lifecycle lock from
//! their check to their commit, so an exit is recorded (and its event sent) only after a
//! concurrent start has committed and sent its own event.

use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::io::{Closing, Console, ProcessIo, StdioConfig};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Paused (init only).
    Paused,
    /// Exited.
    Stopped,
    /// Deleted (terminal).
    Deleted,
}

impl Status {
    fn can_become(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Created, Running | Stopped | Deleted)
                | (Running, Paused | Stopped)
                | (Paused, Running | Stopped)
                | (Stopped, Deleted)
        )
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit status: the code, or 128 + signal.
    pub status: u32,
    /// When.
    pub at: SystemTime,
}

/// The mutable state of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Life cycle position.
    pub status: Status,
    /// Host pid (the sandbox for init, the runsc exec helper for an exec; 0 before known).
    pub pid: u32,
    /// Pid inside the sandbox (execs), for `runsc kill --pid`.
    pub internal_pid: Option<i32>,
    /// How it ended.
    pub exit: Option<Exit>,
}

impl State {
    fn new() -> State {
        State {
            status: Status::Created,
            pid: 0,
            internal_pid: None,
            exit: None,
        }
    }

    /// Moves to `to`, or fails with `FailedPrecondition` naming both states.
    pub fn transition(&mut self, to: Status) -> Result<()> {
        if !self.status.can_become(to) {
            return Err(Error::FailedPrecondition(format!(
                "invalid state transition: {:?} => {:?}",
                self.status, to
            )));
        }
        self.status = to;
        Ok(())
    }
}

/// One process of a task.
#[derive(Debug)]
pub struct Process {
    /// Exec id, or `None` for the init process.
    pub exec_id: Option<String>,
    /// The stdio it was asked for.
    pub stdio: StdioConfig,
    state: Mutex<State>,
    exited: watch::Sender<Option<Exit>>,
    /// Serializes start, kill, pause/resume, delete and exit handling of this process.
    pub lifecycle: tokio::sync::Mutex<()>,
    /// Live stdio, once opened.
    /// A plain mutex: nothing waits while holding it (draining and closing hand a
    /// [`Closing`] out to be awaited after the lock is released).
    io: Mutex<Option<ProcessIo>>,
    console: Mutex<Option<Console>>,
    /// An exec's OCI process spec (JSON), until it is started.
    spec: Mutex<Option<serde_json::Value>>,
}

impl Process {
    /// A new process in state `Created`.
    pub fn new(exec_id: Option<String>, stdio: StdioConfig) -> Process {
        Process {
            exec_id,
            stdio,
            state: Mutex::new(State::new()),
            exited: watch::channel(None).0,
            lifecycle: tokio::sync::Mutex::new(()),
            io: Mutex::new(None),
            console: Mutex::new(None),
            spec: Mutex::new(None),
        }
    }

    /// A new exec process with its OCI process spec.
    pub fn new_exec(exec_id: String, stdio: StdioConfig, spec: serde_json::Value) -> Process {
        let p = Process::new(Some(exec_id), stdio);
        *p.spec.lock().unwrap_or_else(|e| e.into_inner()) = Some(spec);
        p
    }

    /// The exec's process spec (shared; it stays for a retried start).
    pub fn spec(&self) -> Option<serde_json::Value> {
        self.spec.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The live stdio (held only briefly, never across an await).
    pub fn io(&self) -> MutexGuard<'_, Option<ProcessIo>> {
        self.io.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After an exit: the stdio's remaining output, to be awaited with no lock held.
    pub fn drain_io(&self) -> Option<Closing> {
        self.io().as_mut().map(ProcessIo::drain)
    }

    /// At delete: the whole stdio's wind-down, to be awaited with no lock held.
    pub fn close_io(&self) -> Option<Closing> {
        self.io().as_mut().map(ProcessIo::close)
    }

    /// The state lock (held only briefly, never across an await).
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Snapshot of the state.
    pub fn snapshot(&self) -> State {
        self.state().clone()
    }

    /// Records the exit (once; later calls return `None`) and wakes waiters.
    pub fn set_exited(&self, status: u32) -> Option<Exit> {
        let exit = {
            let mut st = self.state();
            if st.exit.is_some() || st.transition(Status::Stopped).is_err() {
                return None;
            }
            let exit = Exit {
                status,
                at: SystemTime::now(),
            };
            st.exit = Some(exit);
            exit
        };
        self.exited.send_replace(Some(exit));
        Some(exit)
    }

    /// Waits until the process has exited.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exited.subscribe();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; unreachable in practice.
                return Exit {
                    status: 255,
                    at: SystemTime::now(),
                };
            }
        }
    }

    /// Remembers the terminal for ResizePty.
    pub fn set_console(&self, console: Console) {
        *self.console.lock().unwrap_or_else(|p| p.into_inner()) = Some(console);
    }

    /// The terminal, if any.
    pub fn console(&self) -> Option<Console> {
        self.console
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    /// The diagram in the module documentation, edge by edge.
    const ALLOWED: [(Status, Status); 8] = [
        (Created, Running),
        (Created, Stopped),
        (Created, Deleted),
        (Running, Paused),
        (Running, Stopped),
        (Paused, Running),
        (Paused, Stopped),
        (Stopped, Deleted),
    ];

    #[test]
    fn allowed_transitions() {
        for (from, to) in ALLOWED {
            let mut s = State {
                status: from,
                ..State::new()
            };
            s.transition(to)
                .unwrap_or_else(|e| panic!("{from:?} => {to:?}: {e}"));
            assert_eq!(s.status, to);
        }
    }

    #[test]
    fn forbidden_transitions() {
        let all = [Created, Running, Paused, Stopped, Deleted];
        for from in all {
            for to in all {
                if ALLOWED.contains(&(from, to)) {
                    continue;
                }
                let mut s = State {
                    status: from,
                    ..State::new()
                };
                let err = s.transition(to).unwrap_err();
                assert!(matches!(err, Error::FailedPrecondition(_)));
                assert_eq!(
                    err.to_string(),
                    format!("invalid state transition: {from:?} => {to:?}")
                );
                assert_eq!(s.status, from, "a refused transition changes nothing");
            }
        }
    }

    #[tokio::test]
    async fn exit_is_recorded_once_and_wakes_waiters() {
        let p = std::sync::Arc::new(Process::new(None, StdioConfig::default()));
        p.state().transition(Running).unwrap();
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.wait().await }
        });
        let exit = p.set_exited(3).unwrap();
        assert_eq!(exit.status, 3);
        assert!(p.set_exited(9).is_none(), "second exit is ignored");
        assert_eq!(waiter.await.unwrap(), exit);
        // A late waiter returns at once.
        assert_eq!(p.wait().await, exit);
        assert_eq!(p.snapshot().status, Stopped);
    }
}
