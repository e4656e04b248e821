//! Errors of runsc invocations.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::spawn::ExitStatus;

/// A failed runsc invocation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runsc binary could not be started.
    #[error("cannot run runsc binary {binary:?}")]
    Spawn {
        /// The binary that was tried.
        binary: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// runsc did not finish in time and was killed.
    #[error("runsc {command} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The subcommand.
        command: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// runsc ran and failed.
    #[error("runsc {command} failed ({status}): {message}")]
    Failed {
        /// The subcommand.
        command: String,
        /// How runsc ended.
        status: ExitStatus,
        /// runsc's own error message: the last error line of its `--log` file, or its stderr.
        message: String,
    },
    /// runsc succeeded but printed something that could not be understood.
    #[error("runsc {command} printed unexpected output {output:?}")]
    Parse {
        /// The subcommand.
        command: String,
        /// The output (truncated).
        output: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// runsc printed more than the client is willing to hold.
    #[error("runsc {command} printed more than {limit} bytes")]
    OutputTooLarge {
        /// The subcommand.
        command: String,
        /// The limit.
        limit: usize,
    },
    /// Talking to the runsc process failed.
    #[error("i/o with runsc {command}")]
    Io {
        /// The subcommand.
        command: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// What a runsc failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The container or sandbox does not exist (any more).
    NotFound,
    /// The container exists but is not running (created, stopped, or its sandbox is gone).
    NotRunning,
    /// The container is paused and runsc refuses the operation.
    Paused,
    /// The subcommand does not exist in this runsc build.
    UnknownCommand,
    /// Anything else.
    Other,
}

impl Error {
    /// Classifies the failure.
    ///
    /// runsc reports every failure as exit status 128 with a message, so the message text is
    /// the only signal there is (containerd's own runc shim classifies runc the same way).
    /// All knowledge of runsc's wording lives here. Messages seen from runsc 20221219 and
    /// 20240729: "sandbox is not running", "cannot signal container \"x\" in state
    /// created|paused|stopped", "connecting to control server at PID n: connection refused"
    /// (sandbox exited, not yet reaped), "loading container \"x\": file does not exist", "no
    /// such process with PID n", and for a missing subcommand only the usage text
    /// (`Usage: runsc <flags> <subcommand> ...`).
    pub fn kind(&self) -> FailureKind {
        let Error::Failed { message, .. } = self else {
            return FailureKind::Other;
        };
        let m = message.to_ascii_lowercase();
        if m.contains("usage: runsc") || m.contains("unknown command") {
            FailureKind::UnknownCommand
        } else if m.contains("is ambiguous") {
            // "loading container \"we\": id \"we\" is ambiguous ...": the container may well
            // exist; never read this as "not found".
            FailureKind::Other
        } else if m.contains("in state paused") {
            FailureKind::Paused
        } else if m.contains("loading container") || m.contains("loading sandbox") {
            FailureKind::NotFound
        } else if m.contains("not running")
            || m.contains("control server at pid")
            || m.contains("no such process")
            || m.contains("in state stopped")
            || m.contains("in state created")
            || m.contains("is stopped")
        {
            FailureKind::NotRunning
        } else {
            FailureKind::Other
        }
    }

    /// The runsc message for a failed command, if any.
    pub fn message(&self) -> Option<&str> {
        match self {
            Error::Failed { message, .. } => Some(message),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(msg: &str) -> Error {
        Error::Failed {
            command: "kill".into(),
            status: ExitStatus::Exited(128),
            message: msg.into(),
        }
    }

    #[test]
    fn classifies_runsc_messages() {
        assert_eq!(
            failed("sandbox is not running").kind(),
            FailureKind::NotRunning
        );
        assert_eq!(
            failed("cannot signal container \"c\" in state stopped").kind(),
            FailureKind::NotRunning
        );
        assert_eq!(
            failed("cannot signal container \"c\" in state created").kind(),
            FailureKind::NotRunning
        );
        assert_eq!(
            failed("loading container \"c\": file does not exist").kind(),
            FailureKind::NotFound
        );
        assert_eq!(
            failed("loading sandbox: file does not exist").kind(),
            FailureKind::NotFound
        );
        assert_eq!(
            failed("signaling container \"c\": connecting to control server at PID 11004: connection refused").kind(),
            FailureKind::NotRunning
        );
        assert_eq!(
            failed("failed to signal pid 7: no such process with PID 7").kind(),
            FailureKind::NotRunning
        );
        assert_eq!(
            failed("cannot signal container \"c\" in state paused").kind(),
            FailureKind::Paused
        );
        assert_eq!(
            failed("Usage: runsc <flags> <subcommand> <subcommand args>\n\nSubcommands:").kind(),
            FailureKind::UnknownCommand
        );
        assert_eq!(failed("permission denied").kind(), FailureKind::Other);
        assert_eq!(
            failed("loading container \"we\": id \"we\" is ambiguous and could refer to multiple containers: \"web\", \"web2\"").kind(),
            FailureKind::Other
        );
        let t = Error::Timeout {
            command: "state".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(t.kind(), FailureKind::Other);
    }
}
