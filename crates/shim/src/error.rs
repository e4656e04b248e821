//! The core's error type: semantic variants that the protocol layer maps to status codes.

use std::io;
use std::path::PathBuf;

/// Result alias for the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a task operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named task, process or resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is malformed (bad id, bad signal, bad options...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The task or process is in the wrong state for this request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// This shim, or the installed runsc, cannot do it.
    #[error("{0}")]
    Unimplemented(String),
    /// The shim configuration (TOML or runtime options) is unusable.
    #[error("invalid shim configuration {path:?}: {message}")]
    Config {
        /// The file (or `<config_body>` for inline configuration).
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// runsc failed.
    #[error("{context}")]
    Runsc {
        /// What the shim was doing.
        context: String,
        /// runsc's failure.
        #[source]
        source: runsc::Error,
    },
    /// A system call or file operation failed.
    #[error("{context}")]
    Io {
        /// What the shim was doing.
        context: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a runsc error with what was being done.
    pub fn runsc(context: impl Into<String>, source: runsc::Error) -> Error {
        Error::Runsc {
            context: context.into(),
            source,
        }
    }

    /// The message with its whole cause chain, `a: b: c`, as users should see it.
    pub fn chain(&self) -> String {
        let mut msg = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let s_msg = s.to_string();
            if !s_msg.is_empty() && !msg.ends_with(&s_msg) {
                msg.push_str(": ");
                msg.push_str(&s_msg);
            }
            source = s.source();
        }
        msg
    }
}

/// Adds context to I/O results.
pub(crate) trait IoContext<T> {
    /// Wraps the error with `context()`.
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), io::Error::from(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_includes_sources_once() {
        let e = Error::io("open /x", io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(e.chain(), "open /x: entity not found");
        let r = Error::runsc(
            "create container c1",
            runsc::Error::Failed {
                command: "create".into(),
                status: runsc::ExitStatus::Exited(128),
                message: "cannot read spec".into(),
            },
        );
        assert_eq!(
            r.chain(),
            "create container c1: runsc create failed (exit status 128): cannot read spec"
        );
    }
}
