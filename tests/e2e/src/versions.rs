//! The containerd and runsc builds the tests run against.
//!
//! containerd 1.6 and runsc 20221219 come from bookworm's packages; containerd 1.7 and 2.1 and
//! runsc 20240729 are unpacked by `scripts/fetch-runtimes.sh` into a cache directory
//! (`$E2E_CACHE`, default `/var/cache/runsc-shim-e2e`).

use std::path::PathBuf;

/// The cache `scripts/fetch-runtimes.sh` fills.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("E2E_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/runsc-shim-e2e"), PathBuf::from)
}

/// A containerd build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdBuild {
    /// Short name: `1.6`, `1.7`, `2.1`.
    pub name: &'static str,
    /// The daemon.
    pub containerd: PathBuf,
    /// Its ctr.
    pub ctr: PathBuf,
}

impl ContainerdBuild {
    /// Whether both binaries exist.
    pub fn available(&self) -> bool {
        self.containerd.is_file() && self.ctr.is_file()
    }

    /// Major version (config layout, CRI plugin name).
    pub fn major(&self) -> u32 {
        if self.name.starts_with('2') { 2 } else { 1 }
    }
}

/// A runsc build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunscBuild {
    /// Short name: `2022`, `2024`.
    pub name: &'static str,
    /// The binary.
    pub runsc: PathBuf,
}

/// All containerd builds under test.
pub fn containerds() -> Vec<ContainerdBuild> {
    let c = cache_dir();
    vec![
        ContainerdBuild {
            name: "1.6",
            containerd: "/usr/bin/containerd".into(),
            ctr: "/usr/bin/ctr".into(),
        },
        ContainerdBuild {
            name: "1.7",
            containerd: c.join("containerd-1.7/usr/bin/containerd"),
            ctr: c.join("containerd-1.7/usr/bin/ctr"),
        },
        ContainerdBuild {
            name: "2.1",
            containerd: c.join("containerd-2.1/usr/bin/containerd"),
            ctr: c.join("containerd-2.1/usr/bin/ctr"),
        },
    ]
}

/// The runsc build named `name` (`2022`, `2024`).
pub fn runsc(name: &str) -> anyhow::Result<RunscBuild> {
    runscs()
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| anyhow::anyhow!("unknown runsc {name} (2022, 2024)"))
}

/// All runsc builds under test.
pub fn runscs() -> Vec<RunscBuild> {
    vec![
        RunscBuild {
            name: "2022",
            runsc: "/usr/bin/runsc".into(),
        },
        RunscBuild {
            name: "2024",
            runsc: cache_dir().join("runsc-2024/usr/bin/runsc"),
        },
    ]
}

/// The built shim binary (from `$SHIM_BINARY`, else next to the test executable's target dir).
pub fn shim_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SHIM_BINARY") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/ctr-xxxx -> target/<profile>/containerd-shim-runsc-v1
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    profile_dir.join("containerd-shim-runsc-v1")
}

/// Every containerd x runsc pair, named `<prefix>-<containerd>/runsc-<runsc>`.
pub fn matrix(prefix: &str) -> Vec<(String, (ContainerdBuild, RunscBuild))> {
    let mut out = Vec::new();
    for cd in containerds() {
        for rs in runscs() {
            let name = format!("{prefix}-{}/runsc-{}", cd.name, rs.name);
            out.push((name, (cd.clone(), rs)));
        }
    }
    out
}
