//! What runsc prints, as typed values. Every field has a default: runsc versions differ in
//! what they include, and a missing field must not fail a whole call.

use std::collections::HashMap;

use serde::Deserialize;

/// `runsc state`: the OCI runtime state of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct State {
    /// Container id.
    pub id: String,
    /// Host pid of the sandbox process.
    pub pid: i32,
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// Bundle directory.
    pub bundle: String,
    /// Spec annotations.
    pub annotations: HashMap<String, String>,
}

/// `runsc wait`: the exit of a container or process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct WaitResult {
    /// The status in the shell convention: code, or 128 + signal.
    #[serde(rename = "exitStatus")]
    pub exit_status: u32,
}

/// One process of `runsc ps --format json`. runsc prints bare pids (`[1,7]`); runc-style
/// objects are accepted too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "PsEntry")]
pub struct ProcessInfo {
    /// Pid inside the sandbox.
    #[serde(rename = "PID")]
    pub pid: i32,
    /// Parent pid inside the sandbox.
    #[serde(rename = "PPID")]
    pub ppid: i32,
    /// User id.
    #[serde(rename = "UID")]
    pub uid: u32,
    /// Command name.
    #[serde(rename = "Cmd")]
    pub cmd: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PsEntry {
    Pid(i32),
    Full {
        #[serde(rename = "PID", default)]
        pid: i32,
        #[serde(rename = "PPID", default)]
        ppid: i32,
        #[serde(rename = "UID", default)]
        uid: u32,
        #[serde(rename = "Cmd", default)]
        cmd: String,
    },
}

impl From<PsEntry> for ProcessInfo {
    fn from(e: PsEntry) -> Self {
        match e {
            PsEntry::Pid(pid) => ProcessInfo {
                pid,
                ..Default::default()
            },
            PsEntry::Full {
                pid,
                ppid,
                uid,
                cmd,
            } => ProcessInfo {
                pid,
                ppid,
                uid,
                cmd,
            },
        }
    }
}

/// One `runsc events` record.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Event {
    /// `stats`, `oom`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Container id.
    pub id: String,
    /// Statistics (for `stats` events).
    pub data: Option<Stats>,
}

/// Container statistics as computed by the sandbox (runc's `types.Stats` layout).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// CPU accounting.
    pub cpu: CpuStats,
    /// Memory accounting.
    pub memory: MemoryStats,
    /// Task counts.
    pub pids: PidsStats,
    /// Huge page accounting, by page size.
    pub hugetlb: HashMap<String, HugetlbStats>,
    /// Network interfaces.
    pub network_interfaces: Option<Vec<InterfaceStats>>,
}

/// CPU statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CpuStats {
    /// Usage in nanoseconds.
    pub usage: CpuUsage,
    /// CFS throttling.
    pub throttling: Throttling,
}

/// CPU time used, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CpuUsage {
    /// Total.
    pub total: u64,
    /// Per CPU.
    pub percpu: Vec<u64>,
    /// In the (sentry) kernel.
    pub kernel: u64,
    /// In user mode.
    pub user: u64,
}

/// CFS throttling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Throttling {
    /// Enforcement periods.
    pub periods: u64,
    /// Periods in which the group was throttled.
    #[serde(rename = "throttledPeriods")]
    pub throttled_periods: u64,
    /// Total throttled time in nanoseconds.
    #[serde(rename = "throttledTime")]
    pub throttled_time: u64,
}

/// Memory statistics.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct MemoryStats {
    /// Page cache.
    pub cache: u64,
    /// Memory usage.
    pub usage: MemoryEntry,
    /// Swap usage.
    pub swap: MemoryEntry,
    /// Kernel memory.
    pub kernel: MemoryEntry,
    /// Kernel TCP buffers.
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// Raw cgroup counters, if runsc passes them through.
    pub raw: HashMap<String, u64>,
}

/// One memory counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MemoryEntry {
    /// Limit in bytes.
    pub limit: u64,
    /// Current usage in bytes.
    pub usage: u64,
    /// Peak usage in bytes.
    pub max: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
}

/// Task counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PidsStats {
    /// Current number of tasks.
    pub current: u64,
    /// Limit (0 = none).
    pub limit: u64,
}

/// Huge page statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct HugetlbStats {
    /// Usage in bytes.
    pub usage: u64,
    /// Peak usage.
    pub max: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
}

/// One network interface (runsc prints Go field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct InterfaceStats {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Receive drops.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Send drops.
    pub tx_dropped: u64,
}

/// `runsc --version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    /// The version string, e.g. `0.0~20221219.0` or `release-20240729.0`.
    pub version: String,
    /// The OCI spec version runsc implements.
    pub spec: String,
}

impl Version {
    /// Parses `runsc --version` output.
    pub fn parse(text: &str) -> Version {
        let mut v = Version::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("runsc version ") {
                v.version = rest.trim().to_owned();
            } else if let Some(rest) = line.strip_prefix("spec: ") {
                v.spec = rest.trim().to_owned();
            }
        }
        v
    }

    /// The release date in the version string (`0.0~20221219.0`, `release-20240729.0`):
    /// the first run of eight digits starting with `20`. `None` for a build without one.
    pub fn date(&self) -> Option<u32> {
        let b = self.version.as_bytes();
        (0..b.len().saturating_sub(7)).find_map(|i| {
            let run = &b[i..i + 8];
            let starts_run = i == 0 || !b[i - 1].is_ascii_digit();
            let ends_run = b.get(i + 8).is_none_or(|c| !c.is_ascii_digit());
            (starts_run && ends_run && run.starts_with(b"20") && run.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(run).ok()?.parse().ok())
                .flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_tolerates_missing_fields() {
        let s: State = serde_json::from_str(
            r#"{"ociVersion":"1.0.2-dev","id":"c","status":"running","pid":42,"bundle":"/b"}"#,
        )
        .unwrap();
        assert_eq!(
            (s.id.as_str(), s.pid, s.status.as_str()),
            ("c", 42, "running")
        );
        assert!(s.annotations.is_empty());
    }

    #[test]
    fn stats_event_parses() {
        let e: Event = serde_json::from_str(
            r#"{"type":"stats","id":"c","data":{"cpu":{"usage":{"total":1200,"kernel":200,"user":1000,"percpu":[600,600]},"throttling":{}},"memory":{"cache":4096,"usage":{"usage":8192,"limit":1048576},"swap":{},"kernel":{},"kernelTCP":{},"raw":{"rss":100}},"pids":{"current":3,"limit":0},"hugetlb":{}}}"#,
        )
        .unwrap();
        let s = e.data.unwrap();
        assert_eq!(e.kind, "stats");
        assert_eq!(s.cpu.usage.total, 1200);
        assert_eq!(s.cpu.usage.percpu, vec![600, 600]);
        assert_eq!(s.memory.usage.usage, 8192);
        assert_eq!(s.memory.raw.get("rss"), Some(&100));
        assert_eq!(s.pids.current, 3);
    }

    #[test]
    fn ps_accepts_bare_pids_and_objects() {
        let bare: Vec<ProcessInfo> = serde_json::from_str("[1,7]").unwrap();
        assert_eq!(bare.iter().map(|p| p.pid).collect::<Vec<_>>(), [1, 7]);
        let full: Vec<ProcessInfo> =
            serde_json::from_str(r#"[{"UID":0,"PID":3,"PPID":1,"Cmd":"sleep"}]"#).unwrap();
        assert_eq!(
            (full[0].pid, full[0].ppid, full[0].cmd.as_str()),
            (3, 1, "sleep")
        );
    }

    #[test]
    fn version_parses() {
        let v = Version::parse("runsc version 0.0~20221219.0\nspec: 1.0.2-dev\n");
        assert_eq!(v.version, "0.0~20221219.0");
        assert_eq!(v.spec, "1.0.2-dev");
        assert_eq!(v.date(), Some(20221219));
        let v = Version::parse("runsc version release-20240729.0\n");
        assert_eq!(v.date(), Some(20240729));
        assert_eq!(Version::parse("runsc version dev\n").date(), None);
        assert_eq!(Version::parse("runsc version 1.2024072912\n").date(), None);
    }
}
