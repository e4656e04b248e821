//! Benchmarks, side by side with the peers, in one run on one machine.
//!
//! `cargo run --release -p e2e --bin bench -- [--runs N] [--out BENCHMARKS.md] [--svg docs/bench.svg]`
//! (root). It starts its own containerd 1.6 (with CRI and CNI in a private network
//! namespace), imports the local busybox image and measures:
//!
//! 1. lifecycle latency of `ctr run --rm IMG id true`: this shim + runsc, containerd's Go
//!    runc shim driving the same runsc (through a wrapper adding `--network=none`), raw
//!    `runsc run` of the same bundle (the floor), the Go runc shim + runc, raw `runc run`;
//! 2. exec latency (`ctr task exec ... true`): this shim vs the Go runc shim + runsc;
//! 3. stdout throughput (256 MiB through the shim to ctr): this shim vs the Go runc shim + runsc;
//! 4. memory of one shim instance per container / per pod (PSS and RSS from
//!    `/proc/PID/smaps_rollup`);
//! 5. density, where many shims share their pages: 20 `ctr` containers started concurrently
//!    (one shim each) through this shim, then through the Go runc shim + runsc, with the
//!    shims' memory per container; and 20 pods x 2 containers started and removed
//!    concurrently through CRI;
//! 6. CRI pod start latency (RunPodSandbox + CreateContainer + StartContainer);
//! 7. time to ready of a slow-initialising container: cold start vs restore from its
//!    checkpoint, with the checkpoint's time and size (runsc 20240729);
//! 8. the shims' CPU at rest with 20 pods, with and without containers' own memory limits
//!    (which the shim enforces, `crates/shim/src/service/memlimit.rs`).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark tool"
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use e2e::containerd::{Containerd, run};
use e2e::cri::{self, Cri};
use e2e::leftovers::{self, Proc};
use e2e::pods::{HANDLER, IMAGE, PodEnv};
use e2e::versions::ContainerdBuild;
use e2e::{runner, versions};

const RUNSC: &str = "/usr/bin/runsc";
/// Containers (through `ctr`) or pods (through CRI) started at once in the density section.
const DENSITY: usize = 20;
/// Where the Go runc shim keeps runsc's state for namespace `bench` (its default root).
const GO_RUNSC_ROOT: &str = "/run/containerd/runc/bench";

/// Median, min, max of samples (milliseconds or any unit).
#[derive(Debug, Clone, Copy)]
struct Summary {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn summarize(mut v: Vec<f64>) -> Summary {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Summary {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    }
}

fn time_ms(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Runs `f` once to warm up, then `runs` times.
fn sample(runs: usize, mut f: impl FnMut(usize) -> Result<f64>) -> Result<Summary> {
    f(usize::MAX)?;
    let mut v = Vec::with_capacity(runs);
    for i in 0..runs {
        v.push(f(i)?);
    }
    Ok(summarize(v))
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = run(cmd, Duration::from_secs(300))?;
    if out.code != 0 {
        bail!(
            "{:?} failed ({}): {}{}",
            cmd.get_program(),
            out.code,
            out.stdout,
            out.stderr
        );
    }
    Ok(out.stdout)
}

/// PSS and RSS in KiB of a process.
fn mem(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

fn total_mem(procs: &[Proc]) -> (u64, u64) {
    procs
        .iter()
        .map(|p| mem(p.pid))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// A bundle for raw runsc/runc runs: the image's rootfs and a `runc spec` running `true`.
fn bundle(dir: &Path, tarball: &Path) -> Result<PathBuf> {
    let b = dir.join("bundle");
    let rootfs = b.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    // The image tarball holds one gzip layer among its blobs: the largest blob.
    let mut archive = tar::Archive::new(std::fs::File::open(tarball)?);
    let mut layer: Vec<u8> = Vec::new();
    for entry in archive.entries()? {
        let mut e = entry?;
        if e.header().size()? as usize > layer.len() {
            layer.clear();
            std::io::Read::read_to_end(&mut e, &mut layer)?;
        }
    }
    tar::Archive::new(flate2::read::GzDecoder::new(&layer[..])).unpack(&rootfs)?;
    sh(Command::new("runc").arg("spec").current_dir(&b))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json"))?)?;
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(b.join("config.json"), serde_json::to_vec(&spec)?)?;
    Ok(b)
}

/// PSS and RSS (KiB) of a set of processes.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    procs: usize,
    pss: u64,
    rss: u64,
}

fn measure(procs: &[Proc]) -> Mem {
    let (pss, rss) = total_mem(procs);
    Mem {
        procs: procs.len(),
        pss,
        rss,
    }
}

/// One instance each (section 4): our shim and the Go runc shim with one `ctr` container
/// each, our shim with one CRI pod of 2 containers.
#[derive(Debug, Clone, Copy)]
struct Single {
    ours: Mem,
    go: Mem,
    pod: Mem,
}

/// `DENSITY` containers (through `ctr`, one shim each) or pods (through CRI) started and
/// removed concurrently: how many failed, the seconds until all ran, their shims' memory, the
/// seconds to remove them all.
#[derive(Debug, Clone, Copy)]
struct Density {
    failed: usize,
    up: f64,
    mem: Mem,
    down: f64,
}

impl Density {
    /// Shim PSS per container or pod that ran.
    fn per_unit(&self) -> u64 {
        self.mem.pss / (DENSITY - self.failed).max(1) as u64
    }
}

struct Report {
    md: String,
    svg_rows: Vec<(String, String, f64, &'static str)>,
}

impl Report {
    fn row(&mut self, group: &str, name: &str, s: Summary, unit: &'static str) {
        let _ = writeln!(
            self.md,
            "| {name} | {:.1} | {:.1} | {:.1} | {} |",
            s.median, s.min, s.max, s.n
        );
        self.svg_rows
            .push((group.to_owned(), name.to_owned(), s.median, unit));
    }

    /// A latency or throughput table: its heading, then one row (and one bar) per variant.
    fn table(&mut self, heading: &str, group: &str, unit: &'static str, rows: &[(&str, Summary)]) {
        let _ = writeln!(
            self.md,
            "{heading}\n\n| variant | median {unit} | min | max | runs |\n|---|---|---|---|---|"
        );
        for (name, s) in rows {
            self.row(group, name, *s, unit);
        }
    }

    /// Memory bars (KiB).
    fn kib_bars(&mut self, group: &str, bars: &[(&str, u64)]) {
        for (name, kib) in bars {
            self.svg_rows
                .push((group.to_owned(), (*name).to_owned(), *kib as f64, "KiB"));
        }
    }
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}", a / b)
}

fn svg(rows: &[(String, String, f64, &'static str)]) -> String {
    let bar_h = 18.0;
    let gap = 6.0;
    let label_w = 330.0;
    let width = 900.0;
    let mut groups: Vec<&str> = Vec::new();
    for r in rows {
        if !groups.contains(&r.0.as_str()) {
            groups.push(&r.0);
        }
    }
    let mut y = 20.0;
    let mut body = String::new();
    for g in &groups {
        let items: Vec<_> = rows.iter().filter(|r| r.0 == *g).collect();
        let max = items.iter().map(|r| r.2).fold(0.0f64, f64::max).max(1e-9);
        let _ = writeln!(body, r#"<text x="4" y="{y}" font-weight="bold">{g}</text>"#);
        y += bar_h;
        for r in items {
            let w = (width - label_w - 90.0) * r.2 / max;
            let color = if r.1.starts_with("containerd-shim-runsc-v1") {
                "#2a7ab8"
            } else {
                "#9aa5b1"
            };
            let _ = writeln!(
                body,
                r#"<text x="8" y="{ty}">{name}</text><rect x="{label_w}" y="{ry}" width="{w:.1}" height="{h}" fill="{color}"/><text x="{tx:.1}" y="{ty}">{v:.1} {u}</text>"#,
                ty = y + bar_h * 0.75,
                name = r.1,
                ry = y + 2.0,
                h = bar_h - 4.0,
                tx = label_w + w + 6.0,
                v = r.2,
                u = r.3
            );
            y += bar_h;
        }
        y += gap + 8.0;
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"#,
        h = y + 10.0
    )
}

/// The shims the `ctr` comparisons run through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shim {
    /// This shim, with a `runsc.toml` adding `network = "none"`.
    Ours,
    /// containerd's Go runc shim driving runsc through a wrapper adding `--network=none`.
    GoRunsc,
    /// containerd's Go runc shim driving runc.
    GoRunc,
}

/// What the sections share: containerd (with CRI), the image, the runs count, the report.
struct Bench {
    env: PodEnv,
    /// containerd's gRPC socket.
    ctd: PathBuf,
    work: PathBuf,
    /// The busybox image (OCI layout tarball).
    tarball: PathBuf,
    /// Our shim's `runsc.toml` for `ctr` runs.
    none_toml: String,
    /// The runsc wrapper the Go runc shim runs.
    wrapper: String,
    runs: usize,
    rep: Report,
    stopped: bool,
}

impl Bench {
    /// Starts containerd with CRI in `work`, and prepares the `ctr` comparisons
    /// (namespace `bench`).
    fn start(cd: &ContainerdBuild, shim: &Path, work: &Path, runs: usize) -> Result<Bench> {
        let rs = versions::runsc("2022")?;
        let mut env = PodEnv::start(cd, &rs, shim, work, "")?;
        env.containerd.namespace = "bench".into();
        let tarball = work.join("busybox.tar");
        env.containerd.import(&tarball)?;
        let none_toml = work.join("runsc-none.toml");
        std::fs::write(
            &none_toml,
            format!(
                "binary_name = \"{RUNSC}\"\nroot = \"{}\"\n[runsc_config]\n  network = \"none\"\n",
                work.join("runsc-root").display()
            ),
        )?;
        let wrapper = work.join("runsc-wrapper");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec {RUNSC} --network=none \"$@\"\n"),
        )?;
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        Ok(Bench {
            ctd: env.containerd.address(),
            env,
            work: work.to_path_buf(),
            tarball,
            none_toml: none_toml.display().to_string(),
            wrapper: wrapper.display().to_string(),
            runs,
            rep: Report {
                md: String::new(),
                svg_rows: Vec::new(),
            },
            stopped: false,
        })
    }

    fn c(&self) -> &Containerd {
        &self.env.containerd
    }

    /// `ctr run` flags selecting `shim`.
    fn flags(&self, shim: Shim) -> Vec<&str> {
        match shim {
            Shim::Ours => vec![
                "--runtime",
                "io.containerd.runsc.v1",
                "--runtime-config-path",
                &self.none_toml,
            ],
            Shim::GoRunsc => vec!["--runc-binary", &self.wrapper],
            Shim::GoRunc => vec![],
        }
    }

    /// `ctr run --rm IMG id cmd...` through `shim`.
    fn ctr_run(&self, shim: Shim, id: &str, cmd: &[&str]) -> Result<()> {
        let mut a = vec!["run", "--rm"];
        a.extend(self.flags(shim));
        a.push(IMAGE);
        a.push(id);
        a.extend_from_slice(cmd);
        self.c().ctr_ok(&a).map(drop)
    }

    /// `ctr run -d IMG id sleep 100000` through `shim` (2 minutes at most: the density runs
    /// start 20 at once).
    fn ctr_detached(&self, shim: Shim, id: &str) -> Result<()> {
        let mut a = vec!["run", "-d"];
        a.extend(self.flags(shim));
        a.extend_from_slice(&[IMAGE, id, "sleep", "100000"]);
        run(&mut self.c().ctr_cmd(&a), Duration::from_secs(120))?
            .ok()
            .with_context(|| format!("ctr {}", a.join(" ")))
            .map(drop)
    }

    /// Kills and deletes a task and its container (whatever state they are in).
    fn ctr_remove(&self, id: &str) {
        let c = self.c();
        let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        // Delete once the kill has taken effect (or there was no task): `delete -f` of a
        // task still running would kill it again. No deadline error: `delete -f` follows.
        let _ = runner::eventually(
            &format!("task {id} to stop"),
            Duration::from_secs(10),
            || {
                let ls = c.ctr_ok(&["task", "ls"])?;
                let status = ls
                    .lines()
                    .find(|l| l.split_whitespace().next() == Some(id))
                    .and_then(|l| l.split_whitespace().nth(2));
                Ok(status.is_none_or(|s| s == "STOPPED"))
            },
        );
        let _ = c.ctr(&["task", "delete", "-f", id]);
        let _ = c.ctr(&["containers", "rm", id]);
    }

    /// The shim processes of `shim` serving this containerd.
    fn shims(&self, shim: Shim) -> Vec<Proc> {
        if shim == Shim::Ours {
            return leftovers::shims(&self.ctd);
        }
        let a = self.ctd.display().to_string();
        leftovers::processes(|l| l.contains("containerd-shim-runc-v2") && l.contains(&a))
    }

    /// Stops containerd (removing every pod, task and container first), once.
    fn stop(&mut self) {
        if !std::mem::replace(&mut self.stopped, true) {
            self.env.stop();
            // The Go runc shim's state directory for namespace `bench`, once empty.
            let _ = std::fs::remove_dir(GO_RUNSC_ROOT);
        }
    }

    /// What this benchmark has left running or mounted: shims, runsc processes, mounts
    /// below containerd's directory, runsc state (one line each).
    fn leftovers(&self) -> Vec<String> {
        let ours = self.work.join("runsc-root");
        let mut procs = self.shims(Shim::Ours);
        procs.extend(self.shims(Shim::GoRunsc));
        procs.extend(leftovers::runsc_processes(&ours));
        procs.extend(leftovers::runsc_processes(Path::new(GO_RUNSC_ROOT)));
        let mut left: Vec<String> = procs.into_iter().map(|p| p.cmdline).collect();
        left.extend(leftovers::mounts_under(&self.c().work));
        for dir in [
            ours.join("bench"),
            ours.join("k8s.io"),
            PathBuf::from(GO_RUNSC_ROOT),
        ] {
            let entries = leftovers::dir_entries(&dir);
            left.extend(entries.iter().map(|e| format!("{}", dir.join(e).display())));
        }
        left
    }

    /// Kills what is left running, unmounts what is left mounted, removes the Go runc
    /// shim's runsc state of namespace `bench`.
    fn clean_up(&self) {
        let ours = self.work.join("runsc-root");
        let mut procs = self.shims(Shim::Ours);
        procs.extend(self.shims(Shim::GoRunsc));
        procs.extend(leftovers::runsc_processes(&ours));
        procs.extend(leftovers::runsc_processes(Path::new(GO_RUNSC_ROOT)));
        leftovers::kill_all(&procs);
        leftovers::unmount_under(&self.work);
        let _ = std::fs::remove_dir_all(GO_RUNSC_ROOT);
    }

    /// Waits (30 s at most) until nothing of this benchmark is left (see `leftovers`);
    /// otherwise cleans up and fails naming what was left.
    fn check_clean(&self, when: &str) -> Result<()> {
        let limit = Duration::from_secs(30);
        if runner::eventually(when, limit, || Ok(self.leftovers().is_empty())).is_ok() {
            return Ok(());
        }
        let left = self.leftovers();
        self.clean_up();
        bail!("left behind {when}: {left:#?}")
    }
}

impl Drop for Bench {
    /// Stops containerd; on an early exit (an error), also kills and unmounts what a failed
    /// step may have left.
    fn drop(&mut self) {
        self.stop();
        let left = self.leftovers();
        if !left.is_empty() {
            eprintln!("bench: cleaning up {left:#?}");
            self.clean_up();
        }
    }
}

/// `runsc run` / `runc run` (`cmd` holds the binary and its global flags) of bundle `b`.
fn raw_run(cmd: &mut Command, b: &Path, id: &str) -> Result<()> {
    sh(cmd.args(["run", "--bundle"]).arg(b).arg(id)).map(drop)
}

impl Bench {
    /// Section 1: `ctr run --rm IMG id true` through each shim, and the raw runtimes.
    fn lifecycle(&mut self) -> Result<()> {
        let runs = self.runs;
        eprintln!("bench: lifecycle latency ({runs} runs each)");
        let b = bundle(&self.work, &self.tarball)?;
        let raw_root = self.work.join("raw-root");
        std::fs::create_dir_all(&raw_root)?;
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("l{n}")
        };
        let mut through =
            |shim| sample(runs, |_| time_ms(|| self.ctr_run(shim, &next(), &["true"])));
        let ours = through(Shim::Ours)?;
        let go_runsc = through(Shim::GoRunsc)?;
        let raw_runsc = sample(runs, |_| {
            let id = next();
            let mut cmd = Command::new(RUNSC);
            cmd.arg(format!("--root={}", raw_root.display()))
                .arg("--network=none");
            time_ms(|| raw_run(&mut cmd, &b, &id))
        })?;
        let go_runc = sample(runs, |_| {
            time_ms(|| self.ctr_run(Shim::GoRunc, &next(), &["true"]))
        })?;
        let raw_runc = sample(runs, |_| {
            let id = next();
            let mut cmd = Command::new("runc");
            cmd.arg("--root").arg(&raw_root);
            time_ms(|| raw_run(&mut cmd, &b, &id))
        })?;
        self.rep.table(
            "## 1. Lifecycle latency: `ctr run --rm IMG id true`",
            "lifecycle latency (ms, lower is better)",
            "ms",
            &[
                ("containerd-shim-runsc-v1 + runsc", ours),
                ("Go containerd-shim-runc-v2 + runsc", go_runsc),
                ("raw runsc run (no containerd)", raw_runsc),
                ("Go containerd-shim-runc-v2 + runc", go_runc),
                ("raw runc run (no containerd)", raw_runc),
            ],
        );
        let _ = writeln!(
            self.rep.md,
            "\n- ours / Go runc shim + runsc: **{}** (target <= 0.90)\n- added on top of the raw runtime: ours + containerd {:.0} ms over raw runsc; Go runc shim + containerd {:.0} ms over raw runc (target: ours <= runc's)\n",
            ratio(ours.median, go_runsc.median),
            ours.median - raw_runsc.median,
            go_runc.median - raw_runc.median
        );
        Ok(())
    }

    /// Section 2: `ctr task exec ... true` in a running container of each shim; then, while
    /// those containers run, the memory of one shim instance each (section 4): ours, Go's.
    fn exec_latency(&mut self) -> Result<(Mem, Mem)> {
        eprintln!("bench: exec latency");
        self.ctr_detached(Shim::Ours, "exec-ours")?;
        self.ctr_detached(Shim::GoRunsc, "exec-go")?;
        let mut k = 0;
        let mut exec = |id: &str| -> Result<f64> {
            k += 1;
            let e = format!("e{k}");
            time_ms(|| {
                self.c()
                    .ctr_ok(&["task", "exec", "--exec-id", &e, id, "true"])
                    .map(drop)
            })
        };
        let ex_ours = sample(self.runs, |_| exec("exec-ours"))?;
        let ex_go = sample(self.runs, |_| exec("exec-go"))?;
        self.rep.table(
            "## 2. Exec latency: `ctr task exec ... true` in a running container",
            "exec latency (ms, lower is better)",
            "ms",
            &[
                ("containerd-shim-runsc-v1 + runsc", ex_ours),
                ("Go containerd-shim-runc-v2 + runsc", ex_go),
            ],
        );
        let _ = writeln!(
            self.rep.md,
            "\n- ours / Go runc shim + runsc: **{}** (target <= 1.0)\n",
            ratio(ex_ours.median, ex_go.median)
        );
        eprintln!("bench: memory");
        std::thread::sleep(Duration::from_secs(2));
        let ours = measure(&self.shims(Shim::Ours));
        let go = measure(&self.shims(Shim::GoRunsc));
        for id in ["exec-ours", "exec-go"] {
            self.ctr_remove(id);
        }
        Ok((ours, go))
    }

    /// Section 3: a container writes 256 MiB to its stdout, ctr reads it, through each shim.
    fn throughput(&mut self) -> Result<()> {
        eprintln!("bench: stdout throughput");
        let io_runs = self.runs.min(5);
        let mut j = 0;
        let mut io = |shim| -> Result<f64> {
            j += 1;
            let id = format!("io{j}");
            let mut a = vec!["run", "--rm"];
            a.extend(self.flags(shim));
            a.extend_from_slice(&[IMAGE, &id, "sh", "-c", "head -c 268435456 /dev/zero"]);
            let t = Instant::now();
            let mut cmd = self.c().ctr_cmd(&a);
            let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
            if !status.success() {
                bail!("throughput run failed: {status}");
            }
            Ok(256.0 / t.elapsed().as_secs_f64())
        };
        let io_ours = sample(io_runs, |_| io(Shim::Ours))?;
        let io_go = sample(io_runs, |_| io(Shim::GoRunsc))?;
        self.rep.table(
            "## 3. Stdout throughput: a container writes 256 MiB, ctr reads it",
            "stdout throughput (MiB/s, higher is better)",
            "MiB/s",
            &[
                ("containerd-shim-runsc-v1 + runsc", io_ours),
                ("Go containerd-shim-runc-v2 + runsc", io_go),
            ],
        );
        let _ = writeln!(
            self.rep.md,
            "\n- ours / Go runc shim + runsc: **{}** (target >= 1.0)\n",
            ratio(io_ours.median, io_go.median)
        );
        Ok(())
    }

    /// Section 6: RunPodSandbox + CreateContainer + StartContainer of pods of 2 containers;
    /// the first (warm-up) pod's shim memory is section 4's one pod.
    fn cri_pod_start(&mut self) -> Result<Mem> {
        eprintln!("bench: CRI pod start");
        let mut cri = Cri::connect(&self.ctd)?;
        let logs = self.work.join("logs");
        let mut pod_times = Vec::new();
        let mut pod = Mem::default();
        for i in 0..=self.runs {
            let name = format!("p{i}");
            let (id, ms) = two_container_pod(&mut cri, &logs, &self.env.cgroup_base, &name)?;
            if i == 0 {
                std::thread::sleep(Duration::from_secs(2));
                pod = measure(&leftovers::shims(&self.ctd));
            } else {
                pod_times.push(ms);
            }
            cri.remove_pod(&id)?;
        }
        self.rep.table(
            "## 6. CRI pod start: RunPodSandbox + CreateContainer + StartContainer (one container)",
            "CRI pod start (ms)",
            "ms",
            &[("containerd-shim-runsc-v1 + runsc", summarize(pod_times))],
        );
        Ok(pod)
    }
}

/// Section 7's container: a few seconds of work before it is ready (the file `/tmp/ready`).
const SLOW_INIT: &str =
    "i=0; while [ $i -lt 2500000 ]; do i=$((i+1)); done; touch /tmp/ready; exec sleep 100000";

impl Bench {
    /// Section 7: time to ready of a container with a slow initialisation, started cold and
    /// restored from a checkpoint taken once it was ready; the checkpoint's time and size.
    /// runsc 20240729 (20221219 cannot leave a container running after a checkpoint).
    fn restore_vs_cold(&mut self) -> Result<()> {
        eprintln!("bench: cold start vs restore from a checkpoint (runsc 2024)");
        let rs = versions::runsc("2024")?;
        let toml = self.work.join("runsc-2024.toml");
        std::fs::write(
            &toml,
            format!(
                "binary_name = \"{}\"\nroot = \"{}\"\n[runsc_config]\n  network = \"none\"\n",
                rs.runsc.display(),
                self.work.join("runsc-root-2024").display()
            ),
        )?;
        let toml = toml.display().to_string();
        let image = "checkpoint/slow";
        let cold = self.ready_times("cold", |b, id| b.run_slow(&toml, id))?;
        let (checkpoint_ms, size) = self.slow_checkpoint(&toml, image)?;
        let restored = self.ready_times("rst", |b, id| {
            b.c()
                .ctr_ok(&["containers", "restore", "--live", id, image])
                .map(drop)
        });
        let _ = self.c().ctr(&["images", "rm", image]);
        let restored = restored?;
        let ratio_text = ratio(cold.median, restored.median);
        self.rep.table(
            "\n## 7. Time to ready: cold start vs restore from a checkpoint (runsc 20240729)\n\n\
             A container that works a few seconds (a shell loop) before it creates `/tmp/ready`. \
             Cold: `ctr run -d`; restore: `ctr container restore --live` of a checkpoint taken \
             once it was ready. Both until the same probe (`ctr task exec ... test -e \
             /tmp/ready`, polled) succeeds.",
            "time to ready (ms)",
            "ms",
            &[
                ("cold start (ctr run -d)", cold),
                (
                    "restore from checkpoint (ctr container restore --live)",
                    restored,
                ),
            ],
        );
        let _ = writeln!(
            self.rep.md,
            "\n- restore is **{ratio_text}x** faster to ready than the cold start (medians)\n\
             - checkpoint (`ctr container checkpoint --task`, the task left running): {checkpoint_ms:.0} ms; \
             the checkpoint exported (`ctr images export`: runsc's image, spec, read-write layer): {size}\n"
        );
        Ok(())
    }

    /// Starts containers with `start` (warm-up, then `runs` of them), each timed until it is
    /// ready, then removed.
    fn ready_times(
        &self,
        tag: &str,
        start: impl Fn(&Bench, &str) -> Result<()>,
    ) -> Result<Summary> {
        let mut times = Vec::new();
        for i in 0..=self.runs {
            let id = format!("{tag}{i:02}");
            let t = Instant::now();
            let res = start(self, &id).and_then(|_| self.wait_ready(&id));
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            self.ctr_remove(&id);
            res?;
            if i > 0 {
                times.push(ms);
            }
        }
        Ok(summarize(times))
    }

    /// Polls container `id` until `/tmp/ready` exists in it.
    fn wait_ready(&self, id: &str) -> Result<()> {
        let mut n = 0;
        runner::eventually(
            &format!("{id} to be ready"),
            Duration::from_secs(120),
            || {
                n += 1;
                let probe = format!("ready{n}");
                let out = self.c().ctr(&[
                    "task",
                    "exec",
                    "--exec-id",
                    &probe,
                    id,
                    "test",
                    "-e",
                    "/tmp/ready",
                ])?;
                Ok(out.code == 0)
            },
        )
    }

    /// `ctr run -d` of the [`SLOW_INIT`] container as `id` with runtime options file `toml`.
    fn run_slow(&self, toml: &str, id: &str) -> Result<()> {
        self.c().run_script(toml, IMAGE, id, SLOW_INIT)
    }

    /// A slow-initialising container, once ready, checkpointed into `image` and removed: the
    /// checkpoint's milliseconds and the size of the checkpoint as `ctr images export` writes it.
    fn slow_checkpoint(&self, toml: &str, image: &str) -> Result<(f64, String)> {
        let id = "slowckpt";
        let res = (|| {
            self.run_slow(toml, id)?;
            self.wait_ready(id)?;
            let ms = time_ms(|| {
                self.c()
                    .ctr_ok(&["containers", "checkpoint", "--task", id, image])
                    .map(drop)
            })?;
            // What moves to another node: the export of the checkpoint (runsc's image, the
            // spec, the container's read-write layer).
            let tar = self.work.join("slow-checkpoint.tar");
            self.c().export_checkpoint(image, &tar)?;
            let size = format!("{} KiB", std::fs::metadata(&tar)?.len() / 1024);
            let _ = std::fs::remove_file(&tar);
            Ok((ms, size))
        })();
        self.ctr_remove(id);
        res
    }
}

/// Runs pod `name` (its logs in `logs/<name>`, its cgroup below `cgroup_base`) with two
/// `sleep` containers; the pod's id and the milliseconds from RunPodSandbox until the first
/// container started.
fn two_container_pod(
    cri: &mut Cri,
    logs: &Path,
    cgroup_base: &str,
    name: &str,
) -> Result<(String, f64)> {
    limited_pod(cri, logs, cgroup_base, name, 0)
}

/// Like [`two_container_pod`], each container with a memory limit of `limit` bytes (0: none).
fn limited_pod(
    cri: &mut Cri,
    logs: &Path,
    cgroup_base: &str,
    name: &str,
    limit: i64,
) -> Result<(String, f64)> {
    let dir = logs.join(name);
    std::fs::create_dir_all(&dir)?;
    let cgroup = format!("{cgroup_base}/pod{name}");
    let pcfg = cri::pod_config(name, &format!("uid-{name}"), &dir, &cgroup);
    let config = |c: &str| {
        let mut cfg = cri::container_config(c, IMAGE, &["sleep", "100000"]);
        if let (Some(linux), true) = (cfg.linux.as_mut(), limit > 0) {
            linux.resources = Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: limit,
                ..Default::default()
            });
        }
        cfg
    };
    let t = Instant::now();
    let pod = cri.run_pod(&pcfg, HANDLER)?;
    cri.start_container(&pod, &config("a"), &pcfg)?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    cri.start_container(&pod, &config("b"), &pcfg)?;
    Ok((pod, ms))
}

impl Bench {
    /// Section 4: one shim instance each: per container (ours, the Go runc shim), per pod (ours).
    fn memory(&mut self, one: &Single) {
        let _ = writeln!(
            self.rep.md,
            "\n## 4. Memory added per container / pod (steady state, `/proc/PID/smaps_rollup`)\n\n\
             | what | processes | PSS KiB | RSS KiB |\n|---|---|---|---|\n\
             | containerd-shim-runsc-v1, one `ctr` container | {} | {} | {} |\n\
             | containerd-shim-runsc-v1, one CRI pod of 2 containers | 1 shim, no helpers | {} | {} |\n\
             | Go containerd-shim-runc-v2 (driving runsc), one `ctr` container | {} | {} | {} |\n\
             | Go gVisor shim design, one pod of 2 containers (not measured here: it cannot be built offline; per the reference doc, one shim per container in its long-deployed mode plus one `runsc wait` helper of ~8.6 MiB PSS per container) | 2 shims + 2 helpers | ~{} | |\n\n\
             - target: <= 4096 KiB PSS per pod, helpers included\n",
            one.ours.procs,
            one.ours.pss,
            one.ours.rss,
            one.pod.pss,
            one.pod.rss,
            one.go.procs,
            one.go.pss,
            one.go.rss,
            2 * one.go.pss + 2 * 8806
        );
        self.rep.kib_bars(
            "memory, one instance (KiB PSS, lower is better)",
            &[
                ("containerd-shim-runsc-v1, 1 ctr container", one.ours.pss),
                ("containerd-shim-runsc-v1, 1 pod of 2", one.pod.pss),
                ("Go runc shim + runsc, 1 ctr container", one.go.pss),
            ],
        );
    }

    /// Section 5: `DENSITY` `ctr` containers through our shim, then through the Go runc
    /// shim + runsc (one shim each, nothing else running), and `DENSITY` pods x 2 containers
    /// through CRI.
    fn density(&mut self, one: &Single) -> Result<()> {
        self.check_clean("before the density runs")?;
        let ours = self.density_ctr(Shim::Ours)?;
        let go = self.density_ctr(Shim::GoRunsc)?;
        let pods = self.density_cri()?;
        self.density_ctr_report(one, &ours, &go);
        self.density_cri_report(one, &pods);
        self.rep.kib_bars(
            &format!("memory at density {DENSITY} (KiB PSS per container or pod, lower is better)"),
            &[
                (
                    "containerd-shim-runsc-v1, per ctr container",
                    ours.per_unit(),
                ),
                ("Go runc shim + runsc, per ctr container", go.per_unit()),
                (
                    "containerd-shim-runsc-v1, per CRI pod of 2",
                    pods.per_unit(),
                ),
            ],
        );
        Ok(())
    }

    /// Starts `DENSITY` `ctr` containers through `shim` concurrently, measures their shims
    /// once settled, removes them concurrently and checks that nothing is left.
    fn density_ctr(&self, shim: Shim) -> Result<Density> {
        let tag = if shim == Shim::Ours { "ours" } else { "go" };
        eprintln!("bench: density ({DENSITY} ctr containers through the {tag} shim, concurrently)");
        // No id may be a prefix of another: runsc resolves ids by prefix within a root, and the
        // Go runc shim runs every container in one root.
        let ids: Vec<String> = (0..DENSITY).map(|i| format!("d{tag}{i:02}")).collect();
        let t = Instant::now();
        let failed = std::thread::scope(|s| {
            let started: Vec<_> = ids
                .iter()
                .map(|id| s.spawn(move || self.ctr_detached(shim, id)))
                .collect();
            let errors = started.into_iter().filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(_) => Some("thread panicked".to_owned()),
            });
            errors
                .inspect(|e| eprintln!("bench: container failed: {e}"))
                .count()
        });
        let up = t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(3));
        let mem = measure(&self.shims(shim));
        let t = Instant::now();
        std::thread::scope(|s| {
            for id in &ids {
                s.spawn(move || self.ctr_remove(id));
            }
        });
        let down = t.elapsed().as_secs_f64();
        let listed = self.c().ctr_ok(&["containers", "ls", "-q"])?;
        let kept: Vec<&str> = listed
            .lines()
            .filter(|l| ids.iter().any(|i| i == l.trim()))
            .collect();
        if !kept.is_empty() {
            bail!("containers not removed: {kept:?}");
        }
        self.check_clean(&format!("after the {tag} shim's density run"))?;
        Ok(Density {
            failed,
            up,
            mem,
            down,
        })
    }

    /// Starts `DENSITY` pods x 2 containers concurrently through CRI, measures the shims once
    /// settled, removes the pods concurrently.
    fn density_cri(&self) -> Result<Density> {
        eprintln!("bench: density ({DENSITY} pods x 2 containers, concurrently)");
        let before = total_mem(&leftovers::shims(&self.ctd));
        let t = Instant::now();
        let logs = self.work.join("logs");
        let (pods, failed) = start_pods(&self.ctd, &logs, &self.env.cgroup_base);
        let up = t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(3));
        let shims = leftovers::shims(&self.ctd);
        let (pss, rss) = total_mem(&shims);
        let mem = Mem {
            procs: shims.len(),
            pss: pss.saturating_sub(before.0),
            rss: rss.saturating_sub(before.1),
        };
        let t = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = pods
                .iter()
                .map(|pod| s.spawn(move || Cri::connect(&self.ctd)?.remove_pod(pod)))
                .collect();
            for h in handles {
                h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
            }
            Ok(())
        })?;
        let down = t.elapsed().as_secs_f64();
        Ok(Density {
            failed,
            up,
            mem,
            down,
        })
    }

    /// Section 5, `ctr`: ours and the Go runc shim's, measured the same way.
    fn density_ctr_report(&mut self, one: &Single, ours: &Density, go: &Density) {
        let _ = writeln!(
            self.rep.md,
            "## 5. Density: {DENSITY} at once, where the shims share their pages\n\n\
             ### {DENSITY} `ctr` containers started concurrently, one shim each (same `ctr` path for both)\n\n\
             | variant | containers that failed | wall time until all run | shim processes | total shim PSS / RSS | PSS per container | wall time to remove all |\n\
             |---|---|---|---|---|---|---|"
        );
        for (name, d) in [
            ("containerd-shim-runsc-v1 + runsc", ours),
            ("Go containerd-shim-runc-v2 + runsc", go),
        ] {
            let _ = writeln!(
                self.rep.md,
                "| {name} | {} | {:.1} s | {} | {} KiB / {} KiB | {} KiB | {:.1} s |",
                d.failed,
                d.up,
                d.mem.procs,
                d.mem.pss,
                d.mem.rss,
                d.per_unit(),
                d.down
            );
        }
        let _ = writeln!(
            self.rep.md,
            "\n- PSS per container at {DENSITY}, ours / Go runc shim + runsc: **{}** (one container alone: {} KiB / {} KiB, section 4)\n",
            ratio(ours.per_unit() as f64, go.per_unit() as f64),
            one.ours.pss,
            one.go.pss,
        );
    }

    /// Section 5, CRI: ours per pod of 2 containers.
    fn density_cri_report(&mut self, one: &Single, pods: &Density) {
        let _ = writeln!(
            self.rep.md,
            "### {DENSITY} pods x 2 containers, started and removed concurrently through CRI (one shim per pod)\n\n\
             | measure | value |\n|---|---|\n\
             | pods that failed | {} |\n\
             | wall time until all {} containers run | {:.1} s |\n\
             | shim processes | {} |\n\
             | total shim PSS / RSS | {} KiB / {} KiB |\n\
             | PSS per pod | {} KiB (one pod alone: {} KiB) |\n\
             | wall time to remove all pods | {:.1} s |\n",
            pods.failed,
            2 * DENSITY,
            pods.up,
            pods.mem.procs,
            pods.mem.pss,
            pods.mem.rss,
            pods.per_unit(),
            one.pod.pss,
            pods.down
        );
    }
}

/// Starts `DENSITY` pods x 2 containers concurrently (one CRI connection each, logs in
/// `logs`, cgroups below `base`); the pods started and how many failed.
fn start_pods(ctd: &Path, logs: &Path, base: &str) -> (Vec<String>, usize) {
    start_limited_pods(ctd, logs, base, 0)
}

/// Like [`start_pods`], each container with a memory limit of `limit` bytes (0: none).
fn start_limited_pods(ctd: &Path, logs: &Path, base: &str, limit: i64) -> (Vec<String>, usize) {
    let results: Vec<Result<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..DENSITY)
            .map(|i| {
                s.spawn(move || -> Result<String> {
                    let mut cri = Cri::connect(ctd)?;
                    Ok(limited_pod(&mut cri, logs, base, &format!("d{i}"), limit)?.0)
                })
            })
            .collect();
        let joined = handles.into_iter().map(|h| h.join());
        joined
            .map(|r| r.unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked"))))
            .collect()
    });
    let mut pods = Vec::new();
    let mut failed = 0;
    for r in results {
        match r {
            Ok(p) => pods.push(p),
            Err(e) => {
                eprintln!("bench: pod failed: {e:#}");
                failed += 1;
            }
        }
    }
    (pods, failed)
}

/// How long the shims' CPU time is sampled at rest in section 8.
const AT_REST: Duration = Duration::from_secs(60);

/// CPU time of processes, in clock ticks: their own, and that of their children they reaped.
fn cpu_ticks(procs: &[Proc]) -> (u64, u64) {
    procs
        .iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.pid)).ok()?;
            // After "pid (comm) ": state, ..., utime (11), stime, cutime, cstime.
            let f: Vec<u64> = stat
                .rsplit_once(") ")?
                .1
                .split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|v| v.parse().ok())
                .collect();
            (f.len() == 4).then(|| (f[0] + f[1], f[2] + f[3]))
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Section 8, one variant: `DENSITY` pods x 2 containers with memory limit `limit` (0: none)
/// started, left at rest for [`AT_REST`], removed; the shims' CPU time meanwhile (their own,
/// and their reaped children's: the `runsc events` calls), in ms per minute, and the pods
/// that failed.
fn cpu_at_rest(env: &PodEnv, limit: i64) -> Result<(f64, f64, usize)> {
    let ctd = env.containerd.address();
    let logs = env.work.join(format!("logs-{limit}"));
    let (pods, failed) = start_limited_pods(&ctd, &logs, &env.cgroup_base, limit);
    // Settle: every guard has run its first checks.
    std::thread::sleep(Duration::from_secs(5));
    let shims = leftovers::shims(&ctd);
    let tick_ms = 1000.0
        / sh(Command::new("getconf").arg("CLK_TCK"))?
            .trim()
            .parse::<f64>()?;
    let before = cpu_ticks(&shims);
    std::thread::sleep(AT_REST);
    let after = cpu_ticks(&shims);
    std::thread::scope(|s| {
        for pod in &pods {
            let ctd = &ctd;
            s.spawn(move || Cri::connect(ctd).and_then(|mut c| c.remove_pod(pod)));
        }
    });
    let per_min =
        |a: u64, b: u64| (b.saturating_sub(a)) as f64 * tick_ms * 60.0 / AT_REST.as_secs_f64();
    Ok((
        per_min(before.0, after.0),
        per_min(before.1, after.1),
        failed,
    ))
}

/// Section 8: what enforcing containers' own memory limits costs at rest, with runsc 20240729
/// (per-container figures) on its own containerd.
fn limit_cost(cd: &ContainerdBuild, shim: &Path, work: &Path) -> Result<String> {
    let rs = versions::runsc("2024")?;
    eprintln!("bench: memory-limit cost at rest ({DENSITY} pods x 2 containers, runsc 2024)");
    let mut env = PodEnv::start(cd, &rs, shim, work, "")?;
    let variants: [(&str, i64); 3] = [
        ("no container memory limits", 0),
        (
            "64 MiB limit per container: the sandbox (~25 MiB) holds less, no runsc call",
            64 << 20,
        ),
        (
            "16 MiB limit per container: the sandbox holds more, runsc asked every 30 s per container",
            16 << 20,
        ),
    ];
    let mut rows = Vec::new();
    let mut res = Ok(());
    for (label, limit) in variants {
        match cpu_at_rest(&env, limit) {
            Ok(r) => rows.push((label, r)),
            Err(e) => {
                res = Err(e);
                break;
            }
        }
    }
    env.stop();
    res?;
    let mut md = format!(
        "\n## 8. Cost of enforcing containers' own memory limits, at rest\n\n\
         {DENSITY} CRI pods x 2 `sleep` containers through this shim and runsc 20240729 (its own \
         containerd 1.6), left alone for {} s after a 5 s settle; CPU time of the {DENSITY} shim \
         processes from `/proc/PID/stat`: their own, and their reaped children's (the `runsc \
         events --stats` calls of the memory checks), in ms of CPU per minute for all {DENSITY} \
         pods together.\n\n\
         | variant | pods that failed | shims' own CPU (ms/min) | runsc calls' CPU (ms/min) |\n|---|---|---|---|\n",
        AT_REST.as_secs()
    );
    for (label, (own, children, failed)) in &rows {
        let _ = writeln!(md, "| {label} | {failed} | {own:.0} | {children:.0} |");
    }
    Ok(md)
}

/// Command-line options.
struct Opts {
    runs: usize,
    out_md: PathBuf,
    out_svg: PathBuf,
}

fn opts() -> Result<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = arg("--runs")
        .map_or(Ok(9), |v| v.parse())
        .context("--runs")?;
    Ok(Opts {
        runs,
        out_md: PathBuf::from(arg("--out").unwrap_or_else(|| "BENCHMARKS.md".into())),
        out_svg: PathBuf::from(arg("--svg").unwrap_or_else(|| "docs/bench.svg".into())),
    })
}

/// The report's header: the machine and the builds.
fn environment(cd: &ContainerdBuild, shim: &Path) -> Result<String> {
    let uname = sh(Command::new("uname").arg("-r"))?.trim().to_owned();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let ctd_v = sh(Command::new(&cd.containerd).arg("--version"))?
        .trim()
        .to_owned();
    let runsc_v = sh(Command::new(RUNSC).arg("--version"))?
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let shim_v = sh(Command::new(shim).arg("-v"))?.replace('\n', " ");
    Ok(format!(
        "- machine: {cpu}, {nproc} CPUs, kernel {uname} (a shared, noisy VM: compare ratios within one run)\n\
         - containerd: {ctd_v}\n- runsc: {runsc_v} (`--network=none`, ptrace platform)\n- shim: {shim_v}\n"
    ))
}

/// Writes the Markdown report and its chart.
fn write_report(opts: &Opts, env: &str, rep: &Report) -> Result<()> {
    let runs = opts.runs;
    let doc = format!(
        "# Benchmarks\n\nGenerated by `scripts/bench.sh` (`cargo run --release -p e2e --bin bench -- --runs {runs}`) on {}.\n\n\
         {env}\
         - every latency is a median of {runs} runs after one warm-up run; min and max are shown\n\n\
         ![chart](docs/bench.svg)\n\n{}",
        sh(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?.trim(),
        rep.md
    );
    std::fs::write(&opts.out_md, doc)?;
    if let Some(d) = opts.out_svg.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&opts.out_svg, svg(&rep.svg_rows))?;
    eprintln!(
        "bench: wrote {} and {}",
        opts.out_md.display(),
        opts.out_svg.display()
    );
    Ok(())
}

fn main() -> Result<()> {
    let opts = opts()?;
    if !runner::is_root() {
        bail!("the benchmark needs root (it starts containerd and runsc)");
    }
    let shim = versions::shim_binary();
    let cd = versions::containerds()
        .into_iter()
        .next()
        .context("containerd 1.6")?;
    let work = PathBuf::from("/tmp/runsc-shim-bench");
    let checkpoint_dirs = leftovers::checkpoint_dirs();
    let mut b = Bench::start(&cd, &shim, &work, opts.runs)?;
    b.lifecycle()?;
    let (ours, go) = b.exec_latency()?;
    b.throughput()?;
    let pod = b.cri_pod_start()?;
    let one = Single { ours, go, pod };
    b.memory(&one);
    b.density(&one)?;
    b.restore_vs_cold()?;
    b.stop();
    let clean = b.check_clean("when the benchmark ends");
    let cost = limit_cost(&cd, &shim, &work.join("limits"));
    match &cost {
        Ok(md) => b.rep.md.push_str(md),
        Err(e) => eprintln!("bench: memory-limit cost: {e:#}"),
    }
    leftovers::remove_new_checkpoint_dirs(&checkpoint_dirs);
    write_report(&opts, &environment(&cd, &shim)?, &b.rep)?;
    clean.and(cost.map(drop))
}
