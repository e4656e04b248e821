//! Test environment for end-to-end tests: an OCI image built locally (no registry), a
//! private containerd of a chosen version, the runsc builds to test with, and checks that
//! nothing is left behind.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "test tooling reports progress"
)]

pub mod containerd;
pub mod cri;
pub mod image;
pub mod leftovers;
pub mod node;
pub mod pods;
pub mod runner;
pub mod stream;
pub mod systemd;
pub mod versions;
