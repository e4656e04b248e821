//! `containerd-shim-runsc-v1`: the containerd runtime v2 shim for gVisor.
//!
//! containerd runs this binary three ways (docs/runtime-v2.md):
//! - `start`: start (or find) the long-running shim for the task and print its address;
//! - `delete`: clean up after a task whose shim is gone;
//! - with no action: serve the Task API (the process `start` spawned).
//!
//! Node operations have their own verbs: `install` / `uninstall`, and `checkpoint` (a task's
//! sandbox into a directory, through its shim).

mod args;
mod checkpoint;
mod convert;
mod delete;
mod errors;
mod flags;
mod install;
mod logging;
mod options;
mod publisher;
mod sandbox;
mod serve;
mod start;
mod task;

use std::process::ExitCode;

/// The runtime name containerd knows this shim by.
pub const RUNTIME_NAME: &str = "io.containerd.runsc.v1";
/// Version, and the git revision it was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git revision of the build.
pub const REVISION: &str = env!("SHIM_GIT_REVISION");

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version") {
        return print_version();
    }
    // Node set-up: not part of containerd's protocol, so it has its own flag syntax.
    if let Some(cmd @ ("install" | "uninstall" | "checkpoint")) = args.first().map(String::as_str) {
        let done = match cmd {
            "checkpoint" => checkpoint::run(&args[1..]),
            _ => install::run(cmd == "uninstall", &args[1..]),
        };
        return match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                #[allow(clippy::print_stderr, reason = "command line error")]
                {
                    eprintln!("containerd-shim-runsc-v1 {cmd}: {e:#}");
                }
                ExitCode::FAILURE
            }
        };
    }
    let flags = match flags::Flags::parse(&args) {
        Ok(f) => f,
        Err(e) => {
            #[allow(clippy::print_stderr, reason = "command line error")]
            {
                eprintln!("containerd-shim-runsc-v1: {e}");
            }
            return ExitCode::from(2);
        }
    };
    if flags.version {
        return print_version();
    }
    let result = match flags.action.as_str() {
        "start" | "delete" | "" if !flags.info => check_ids(&flags),
        _ => Ok(()),
    }
    .and_then(|()| match flags.action.as_str() {
        "start" => start::run(&flags),
        "delete" => delete::run(&flags),
        "" if flags.info => start::info(),
        "" => serve::run(&flags),
        other => Err(anyhow::anyhow!(
            "unknown action {other:?} (expected start or delete)"
        )),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // containerd shows a failed command's output in its error.
            #[allow(clippy::print_stderr, reason = "the error report containerd reads")]
            {
                eprintln!("containerd-shim-runsc-v1: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The task id and the namespace name files, sockets and runsc state: both must be ids before
/// any of that happens.
fn check_ids(flags: &flags::Flags) -> anyhow::Result<()> {
    if flags.namespace.is_empty() {
        anyhow::bail!("-namespace is required");
    }
    runsc_shim::ids::validate("namespace", &flags.namespace)?;
    runsc_shim::ids::validate("container id", &flags.id)?;
    Ok(())
}

fn print_version() -> ExitCode {
    // One write, errors ignored: a reader that stops early (`| grep -q`) is not a failure.
    let text = format!(
        "containerd-shim-runsc-v1:\n  Runtime: {RUNTIME_NAME}\n  Version: {VERSION}\n  Revision: {REVISION}\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    ExitCode::SUCCESS
}
