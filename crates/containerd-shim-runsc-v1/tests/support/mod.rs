//! Test support: a mock containerd ([`containerd`]), the shim binary started and cleaned up
//! the way containerd does it ([`shim`]) and a ttrpc client addressed by service name
//! ([`api`]).

pub mod api;
pub mod containerd;
pub mod process;
pub mod shim;

use std::time::Duration;

/// How long anything may take on a loaded two-core machine (nothing normally comes close).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `done` until it holds; panics naming `what` after [`DEADLINE`].
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
