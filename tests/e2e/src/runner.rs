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
    /// selected, so that its expensive fixture is worth starting. A filter naming a group
    /// (of any suite: it starts with a group word) selects only matching groups; any other
    /// filter (a scenario name) may match in every group.
    pub fn wants_group(&self, prefix: &str) -> bool {
        const GROUP_WORDS: [&str; 5] = ["containerd", "cri", "reliability", "install", "node"];
        self.filters.is_empty()
            || self.filters.iter().any(|f| {
                let word = f.split(['-', '/']).next().unwrap_or_default();
                prefix.contains(f.as_str()) || f.starts_with(prefix) || !GROUP_WORDS.contains(&word)
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

    /// Whether suite `suite` can run here: it needs root (real containerd and runsc).
    /// Without root it is reported as skipped (never as passed) and the caller finishes.
    pub fn needs_root(&mut self, suite: &str) -> bool {
        if is_root() {
            return true;
        }
        println!("test {suite} ... skipped: needs root (real containerd, runsc, mounts)");
        self.skipped += 1;
        false
    }

    /// Runs `f` for each named group the filters select (its fixture, then its scenarios);
    /// a group whose fixture fails is reported as a failure under its name.
    pub fn each_group<T>(
        &mut self,
        groups: Vec<(String, T)>,
        mut f: impl FnMut(&mut Runner, &str, T) -> anyhow::Result<()>,
    ) {
        for (name, item) in groups {
            if !self.wants_group(&name) {
                continue;
            }
            if let Err(e) = f(self, &name, item) {
                self.fail(&name, format!("{e:#}"));
            }
        }
    }

    /// Prints the summary; the process exit code.
    pub fn finish(self) -> std::process::ExitCode {
        if self.results.is_empty() && self.skipped == 0 && !self.filters.is_empty() {
            println!("note: no scenario of this suite matches {:?}", self.filters);
        }
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
