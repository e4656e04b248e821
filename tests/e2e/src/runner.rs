//! A tiny test runner for suites that share expensive fixtures (a running containerd) and
//! must clean up after themselves whatever happens.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// Collects scenario results.
#[derive(Debug, Default)]
pub struct Runner {
    filters: Vec<String>,
    results: Vec<(String, Result<(), String>, f64)>,
    skipped: usize,
}

impl Runner {
    /// Reads name filters from the command line (cargo test passes its own flags too).
    pub fn from_args() -> Runner {
        let filters = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        Runner {
            filters,
            results: Vec::new(),
            skipped: 0,
        }
    }

    /// Whether `name` is selected.
    pub fn selected(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    /// Whether any scenario of the group `prefix` (e.g. `containerd-1.6/runsc-2022`) can be
    /// selected, so that its expensive fixture is worth starting.
    pub fn wants_group(&self, prefix: &str) -> bool {
        self.filters.is_empty()
            || self.filters.iter().any(|f| {
                prefix.contains(f.as_str())
                    || f.starts_with(prefix)
                    || !(f.starts_with("containerd") || f.starts_with("cri-"))
            })
    }

    /// Runs one scenario (unless filtered out), catching panics.
    pub fn run(&mut self, name: &str, f: impl FnOnce() -> anyhow::Result<()>) {
        if !self.selected(name) {
            return;
        }
        let start = Instant::now();
        let result = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(p) => Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into())),
        };
        let secs = start.elapsed().as_secs_f64();
        match &result {
            Ok(()) => println!("test {name} ... ok ({secs:.1}s)"),
            Err(e) => println!(
                "test {name} ... FAILED ({secs:.1}s)\n    {}",
                e.replace('\n', "\n    ")
            ),
        }
        self.results.push((name.to_owned(), result, secs));
    }

    /// Records a scenario that cannot run in this environment (not counted as passed).
    pub fn skip(&mut self, name: &str, why: &str) {
        if self.selected(name) {
            println!("test {name} ... skipped: {why}");
            self.skipped += 1;
        }
    }

    /// Records a failure not tied to a scenario (a fixture that could not start).
    pub fn fail(&mut self, name: &str, why: String) {
        println!("test {name} ... FAILED\n    {why}");
        self.results.push((name.to_owned(), Err(why), 0.0));
    }

    /// Prints the summary; the process exit code.
    pub fn finish(self) -> std::process::ExitCode {
        let failed: Vec<_> = self
            .results
            .iter()
            .filter(|r| r.1.is_err())
            .map(|r| r.0.clone())
            .collect();
        println!(
            "\ntest result: {}. {} passed; {} failed; {} skipped",
            if failed.is_empty() { "ok" } else { "FAILED" },
            self.results.len() - failed.len(),
            failed.len(),
            self.skipped
        );
        for f in &failed {
            println!("    failed: {f}");
        }
        if failed.is_empty() {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether the tests run as root (real containerd and runsc need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The scratch directory of the end-to-end suites (`$E2E_WORK`, default `/tmp/runsc-shim-e2e`).
pub fn work_base() -> std::path::PathBuf {
    std::env::var_os("E2E_WORK")
        .map_or_else(|| "/tmp/runsc-shim-e2e".into(), std::path::PathBuf::from)
}

/// Polls `f` every 100 ms until it returns `true`, failing after `limit`.
pub fn eventually(
    what: &str,
    limit: std::time::Duration,
    mut f: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
