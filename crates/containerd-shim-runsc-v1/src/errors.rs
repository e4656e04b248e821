//! The one mapping from core errors to ttrpc status codes.
//!
//! containerd turns these codes back into its own error kinds (`errdefs`): NOT_FOUND makes a
//! kill of an exited process harmless to CRI, UNIMPLEMENTED is how a shim says it cannot do
//! something. The match is exhaustive on purpose: a new error variant must decide its code.

use runsc_shim::Error;
use ttrpc::Code;

/// The status code for `err`.
pub(crate) fn code(err: &Error) -> Code {
    match err {
        Error::NotFound(_) => Code::NOT_FOUND,
        Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
        Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
        Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
        Error::Unimplemented(_) => Code::UNIMPLEMENTED,
        Error::Config { .. } => Code::FAILED_PRECONDITION,
        Error::Runsc { source, .. } => match source {
            runsc::Error::Timeout { .. } => Code::DEADLINE_EXCEEDED,
            runsc::Error::Spawn { .. } => Code::FAILED_PRECONDITION,
            runsc::Error::Failed { .. }
            | runsc::Error::Parse { .. }
            | runsc::Error::OutputTooLarge { .. }
            | runsc::Error::Io { .. } => Code::UNKNOWN,
        },
        Error::Io { .. } => Code::UNKNOWN,
    }
}

/// The ttrpc error for `err`, with the whole cause chain as its message.
pub(crate) fn to_ttrpc(err: &Error) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code(err), err.chain()))
}

/// UNIMPLEMENTED for an RPC this shim does not offer.
pub(crate) fn unimplemented(what: &str) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(Code::UNIMPLEMENTED, what))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn failed(msg: &str) -> runsc::Error {
        runsc::Error::Failed {
            command: "start".into(),
            status: runsc::ExitStatus::Exited(128),
            message: msg.into(),
        }
    }

    #[test]
    fn every_variant_has_its_code_and_message() {
        let cases: Vec<(Error, Code, &str)> = vec![
            (
                Error::NotFound("task \"x\" not found".into()),
                Code::NOT_FOUND,
                "task \"x\" not found",
            ),
            (
                Error::AlreadyExists("task \"x\" already exists".into()),
                Code::ALREADY_EXISTS,
                "already exists",
            ),
            (
                Error::InvalidArgument("invalid signal 99".into()),
                Code::INVALID_ARGUMENT,
                "invalid signal 99",
            ),
            (
                Error::FailedPrecondition("it is Created".into()),
                Code::FAILED_PRECONDITION,
                "it is Created",
            ),
            (
                Error::Unimplemented("no update".into()),
                Code::UNIMPLEMENTED,
                "no update",
            ),
            (
                Error::Config {
                    path: "/etc/x.toml".into(),
                    message: "line 1".into(),
                },
                Code::FAILED_PRECONDITION,
                "invalid shim configuration \"/etc/x.toml\": line 1",
            ),
            (
                Error::runsc("start task c", failed("failed to load /bin/nope")),
                Code::UNKNOWN,
                "start task c: runsc start failed (exit status 128): failed to load /bin/nope",
            ),
            (
                Error::runsc(
                    "state",
                    runsc::Error::Timeout {
                        command: "state".into(),
                        timeout: Duration::from_secs(60),
                    },
                ),
                Code::DEADLINE_EXCEEDED,
                "did not finish within 60s",
            ),
            (
                Error::runsc(
                    "create task c",
                    runsc::Error::Spawn {
                        binary: "/opt/runsc".into(),
                        source: std::io::Error::from(std::io::ErrorKind::NotFound),
                    },
                ),
                Code::FAILED_PRECONDITION,
                "cannot run runsc binary \"/opt/runsc\"",
            ),
            (
                Error::io(
                    "open FIFO /x",
                    std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                ),
                Code::UNKNOWN,
                "open FIFO /x: permission denied",
            ),
        ];
        for (err, want_code, want_msg) in cases {
            match to_ttrpc(&err) {
                ttrpc::Error::RpcStatus(status) => {
                    assert_eq!(status.code(), want_code, "{err:?}");
                    assert!(
                        status.message.contains(want_msg),
                        "{}: {want_msg}",
                        status.message
                    );
                }
                other => panic!("not a status: {other:?}"),
            }
        }
        match unimplemented("checkpoint") {
            ttrpc::Error::RpcStatus(s) => assert_eq!(s.code(), Code::UNIMPLEMENTED),
            other => panic!("{other:?}"),
        }
    }
}
