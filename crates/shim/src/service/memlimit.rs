//! A container's own memory limit inside a shared pod sandbox.
//!
//! runc puts every container of a pod in a cgroup of its own with the container's memory
//! limit, and the kernel OOM-kills the container that exceeds it. A gVisor pod is one sandbox
//! in one host cgroup holding the pod total, and the sentry enforces no container limit
//! (measured with runsc 20221219 and 20240729: a container limited to 32 MiB holds 100 MiB and
//! runs on). The shim enforces it instead: a container that exceeds its limit gets TaskOOM,
//! then SIGKILL, so it ends with 137 and CRI reports `OOMKilled`, while its siblings run on.
//!
//! The cost at rest is one wakeup of the shim per check interval (every container it guards
//! is checked on one timer) and one read of each sandbox's host cgroup usage. runsc is asked
//! for a container's own figure (`runsc events --stats`, one short-lived process) only when
//! that read cannot rule the container out:
//!
//! - a container's usage inside the sandbox cannot exceed what the host charges the whole
//!   sandbox, so while the sandbox holds no more than the limit nothing is asked;
//! - past that (a small limit beside the sentry's own ~25 MiB, or big siblings), the last
//!   figure plus what the sandbox grew by since bounds the container's usage, as its new
//!   pages are new host pages; the figure is refreshed every 30 s all the same
//!   (`Options::memory_figure_refresh`), for a container that grows into pages a sibling
//!   freed inside the sandbox.
//!
//! runsc 20221219 reports the whole sandbox's usage for every container (measured), so there
//! the figure is the container's own only while it is the one application container of its
//! pod; with running siblings its limit cannot be told apart and is not enforced (a warning
//! says so, once per container). Later builds report each container's own usage.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runsc::KillOpts;

use super::Inner;
use crate::container::Container;
use crate::events::Event;
use crate::process::Status;

/// The first runsc release measured to report each container's own memory usage.
const PER_CONTAINER_USAGE_SINCE: u32 = 20240729;

/// Without the sandbox's host usage to gate on, runsc is asked only every this many checks.
const UNGATED_EVERY: u32 = 10;

/// The container's own usage as runsc last reported it, and the sandbox's host usage then.
#[derive(Debug, Clone, Copy)]
struct Sample {
    own: u64,
    sandbox: u64,
    at: Instant,
}

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Under the limit (or not measurable now).
    Within,
    /// Its usage, over the limit.
    Exceeded(u64),
    /// The container is no longer running: the guard ends.
    Done,
}

/// The guard of one container.
#[derive(Debug)]
struct Guard {
    container: Arc<Container>,
    limit: u64,
    /// The sandbox's host cgroup usage file, if found.
    gate: Option<PathBuf>,
    /// Whether runsc reports the container's own usage (else the sandbox's); learned from
    /// `runsc --version` the first time a figure is needed.
    own_usage: Option<bool>,
    warned: bool,
    checks: u32,
    last: Option<Sample>,
    /// How long `last` is relied on.
    refresh: Duration,
}

/// The guards of one shim, checked together on one timer: at rest the shim wakes once per
/// interval whatever the number of containers it guards, and reads each sandbox's usage once.
#[derive(Debug, Default)]
pub(super) struct Guards {
    list: Vec<Guard>,
    /// Whether the checking task runs (it ends when the list is empty).
    running: bool,
}

impl Inner {
    /// Starts enforcing the memory limit of pod container `c`, just started, if it has one.
    pub(super) fn guard_memory(self: &Arc<Self>, c: Arc<Container>) {
        let Some(limit) = c.limits.memory else {
            return;
        };
        if c.kind.is_root() {
            // The sandbox's own host cgroup carries a root container's limit.
            return;
        }
        let sandbox_pid = self
            .table()
            .get(&c.sandbox_id)
            .map(|root| root.init.snapshot().pid);
        let gate = sandbox_pid.and_then(|pid| crate::oom::usage_file(pid as i32));
        if gate.is_none() {
            tracing::info!(id = %c.id, "no host memory cgroup found for the sandbox: the container's memory limit is checked through runsc every {UNGATED_EVERY} intervals");
        }
        let guard = Guard {
            container: c,
            limit,
            gate,
            own_usage: None,
            warned: false,
            checks: 0,
            last: None,
            refresh: self.options.memory_figure_refresh,
        };
        let start = {
            let mut guards = self.guards();
            guards.list.push(guard);
            !std::mem::replace(&mut guards.running, true)
        };
        if start {
            tokio::spawn(self.clone().check_guards());
        }
    }

    fn guards(&self) -> std::sync::MutexGuard<'_, Guards> {
        self.guards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks every guarded container each interval until none is left.
    async fn check_guards(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.options.memory_check_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let batch = std::mem::take(&mut self.guards().list);
            let mut usage = HashMap::new();
            let mut keep = Vec::with_capacity(batch.len());
            for mut g in batch {
                let sandbox = g.gate.as_ref().and_then(|f| {
                    *usage
                        .entry(f.clone())
                        .or_insert_with(|| crate::oom::read_number(f))
                });
                match self.check(&mut g, sandbox).await {
                    Verdict::Within => keep.push(g),
                    Verdict::Exceeded(used) => self.oom_kill(&g.container, used, g.limit).await,
                    Verdict::Done => {}
                }
            }
            let mut guards = self.guards();
            // Guards added while this batch was checked are in the list already.
            guards.list.extend(keep);
            if guards.list.is_empty() {
                guards.running = false;
                return;
            }
        }
    }

    /// One check of `g`; `sandbox`: what the host charges its sandbox now, if known.
    async fn check(&self, g: &mut Guard, sandbox: Option<u64>) -> Verdict {
        let c = &g.container;
        match c.init.snapshot().status {
            Status::Running => {}
            // A paused container's usage does not grow; a created one is not watched yet.
            Status::Paused | Status::Created => return Verdict::Within,
            Status::Stopped | Status::Deleted => return Verdict::Done,
        }
        g.checks = g.checks.wrapping_add(1);
        match sandbox {
            Some(h) if !needs_figure(h, g.limit, g.last, g.refresh, Instant::now()) => {
                return Verdict::Within;
            }
            None if !g.checks.is_multiple_of(UNGATED_EVERY) => return Verdict::Within,
            _ => {}
        }
        let own_usage = match g.own_usage {
            Some(own) => own,
            None => {
                let own = match c.runsc.version().await {
                    Ok(v) => v.date().is_none_or(|d| d >= PER_CONTAINER_USAGE_SINCE),
                    Err(e) => {
                        tracing::warn!(id = %c.id, error = %e, "runsc --version failed: taking its memory figures as per container");
                        true
                    }
                };
                *g.own_usage.insert(own)
            }
        };
        if !own_usage && self.has_running_siblings(c) {
            if !g.warned {
                g.warned = true;
                tracing::warn!(id = %c.id, limit = g.limit, "this runsc reports one memory figure for the whole sandbox: the container's own memory limit is not enforced while other containers of its pod run (the pod's limit still is)");
            }
            return Verdict::Within;
        }
        match c.runsc.stats(&c.id).await {
            Ok(s) if s.memory.usage.usage > g.limit => Verdict::Exceeded(s.memory.usage.usage),
            Ok(s) => {
                g.last = sandbox.map(|h| Sample {
                    own: s.memory.usage.usage,
                    sandbox: h,
                    at: Instant::now(),
                });
                Verdict::Within
            }
            Err(e) => {
                tracing::debug!(id = %c.id, error = %e, "memory check: runsc events failed");
                Verdict::Within
            }
        }
    }

    /// Whether another application container of `c`'s pod is running.
    fn has_running_siblings(&self, c: &Container) -> bool {
        self.table().values().any(|m| {
            !m.kind.is_root()
                && m.sandbox_id == c.sandbox_id
                && m.id != c.id
                && matches!(m.init.snapshot().status, Status::Running | Status::Paused)
        })
    }

    /// Ends `c` as the kernel ends a container over its cgroup's limit: TaskOOM, then SIGKILL
    /// to every process of the container. Its exit (137) is learned as any other.
    async fn oom_kill(&self, c: &Container, usage: u64, limit: u64) {
        // Under the lifecycle lock: the exit cannot be recorded between the check and the
        // event, so TaskOOM is never sent for a container that already ended by itself.
        let _lifecycle = c.init.lifecycle.lock().await;
        if c.init.snapshot().status != Status::Running {
            return;
        }
        tracing::warn!(id = %c.id, usage, limit, "container exceeded its memory limit: killing it");
        self.publish(Event::Oom {
            container_id: c.id.clone(),
        });
        let opts = KillOpts {
            all: true,
            pid: None,
        };
        if let Err(e) = c.runsc.kill(&c.id, libc::SIGKILL as u32, opts).await {
            tracing::warn!(id = %c.id, error = %e, "kill of the container over its memory limit failed");
        }
    }
}

/// Whether the container's own figure is needed to tell whether a container limited to
/// `limit` is over it, while its whole sandbox holds `sandbox` bytes on the host; `last`: the
/// previous figure, if any.
fn needs_figure(
    sandbox: u64,
    limit: u64,
    last: Option<Sample>,
    refresh: Duration,
    now: Instant,
) -> bool {
    if sandbox <= limit {
        return false;
    }
    match last {
        Some(s) if now.saturating_duration_since(s.at) < refresh => {
            let grown = sandbox.saturating_sub(s.sandbox);
            s.own.saturating_add(grown) > limit
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const REFRESH: Duration = Duration::from_secs(10);

    #[test]
    fn a_sandbox_within_the_limit_needs_no_figure() {
        let now = Instant::now();
        assert!(!needs_figure(0, 16 * MIB, None, REFRESH, now));
        assert!(!needs_figure(16 * MIB, 16 * MIB, None, REFRESH, now));
        assert!(needs_figure(16 * MIB + 1, 16 * MIB, None, REFRESH, now));
    }

    #[test]
    fn the_last_figure_plus_the_sandbox_growth_bounds_the_container() {
        let now = Instant::now();
        // 4 MiB of its own when the sandbox held 30 MiB; limit 16 MiB.
        let last = Some(Sample {
            own: 4 * MIB,
            sandbox: 30 * MIB,
            at: now,
        });
        assert!(!needs_figure(30 * MIB, 16 * MIB, last, REFRESH, now));
        assert!(
            !needs_figure(42 * MIB, 16 * MIB, last, REFRESH, now),
            "4 + 12 = 16: not over"
        );
        assert!(needs_figure(42 * MIB + 1, 16 * MIB, last, REFRESH, now));
        // The sandbox shrank: still bounded by the old figure.
        assert!(!needs_figure(20 * MIB, 16 * MIB, last, REFRESH, now));
    }

    #[test]
    fn the_figure_is_refreshed_after_a_while() {
        let then = Instant::now();
        let last = Some(Sample {
            own: 4 * MIB,
            sandbox: 30 * MIB,
            at: then,
        });
        assert!(!needs_figure(
            30 * MIB,
            16 * MIB,
            last,
            REFRESH,
            then + REFRESH - Duration::from_millis(1)
        ));
        assert!(needs_figure(
            30 * MIB,
            16 * MIB,
            last,
            REFRESH,
            then + REFRESH
        ));
    }
}
