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
//! 4. memory added per container / per pod (PSS and RSS from `/proc/PID/smaps_rollup`);
//! 5. density: 20 pods x 2 containers started and removed concurrently through CRI;
//! 6. CRI pod start latency (RunPodSandbox + CreateContainer + StartContainer).
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
use e2e::containerd::run;
use e2e::cri::{self, Cri};
use e2e::leftovers::{self, Proc};
use e2e::pods::{HANDLER, IMAGE, PodEnv};
use e2e::{runner, versions};

const RUNSC: &str = "/usr/bin/runsc";

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

struct Report {
    md: String,
    svg_rows: Vec<(String, String, f64, &'static str)>,
}

impl Report {
    fn row(&mut self, group: &str, name: &str, s: Summary, unit: &str) {
        let _ = writeln!(
            self.md,
            "| {name} | {:.1} | {:.1} | {:.1} | {} |",
            s.median, s.min, s.max, s.n
        );
        let unit: &'static str = if unit == "ms" { "ms" } else { "MiB" };
        self.svg_rows
            .push((group.to_owned(), name.to_owned(), s.median, unit));
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

fn main() -> Result<()> {
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
    let out_md = PathBuf::from(arg("--out").unwrap_or_else(|| "BENCHMARKS.md".into()));
    let out_svg = PathBuf::from(arg("--svg").unwrap_or_else(|| "docs/bench.svg".into()));
    if !runner::is_root() {
        bail!("the benchmark needs root (it starts containerd and runsc)");
    }
    let shim = versions::shim_binary();
    let cd = versions::containerds()
        .into_iter()
        .next()
        .context("containerd 1.6")?;
    let rs = versions::runscs()
        .into_iter()
        .next()
        .context("runsc 2022")?;
    let work = PathBuf::from("/tmp/runsc-shim-bench");
    let mut env = PodEnv::start(&cd, &rs, &shim, &work, "")?;
    let ctd = env.containerd.address();
    let mut rep = Report {
        md: String::new(),
        svg_rows: Vec::new(),
    };

    // ---- set-up for ctr-based comparisons (namespace "bench")
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
    let none = none_toml.display().to_string();
    let wrap = wrapper.display().to_string();
    let ours_flags = [
        "--runtime",
        "io.containerd.runsc.v1",
        "--runtime-config-path",
        none.as_str(),
    ];
    let go_runsc_flags = ["--runc-binary", wrap.as_str()];
    let c = &env.containerd;
    let ctr_run = |flags: &[&str], id: &str, cmd: &[&str]| -> Result<()> {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(flags);
        a.push(IMAGE);
        a.push(id);
        a.extend_from_slice(cmd);
        c.ctr_ok(&a).map(drop)
    };

    // ---- 1. lifecycle latency
    eprintln!("bench: lifecycle latency ({runs} runs each)");
    let b = bundle(&work, &tarball)?;
    let raw_root = work.join("raw-root");
    std::fs::create_dir_all(&raw_root)?;
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("l{n}")
    };
    let ours = sample(runs, |_| {
        time_ms(|| ctr_run(&ours_flags, &next(), &["true"]))
    })?;
    let go_runsc = sample(runs, |_| {
        time_ms(|| ctr_run(&go_runsc_flags, &next(), &["true"]))
    })?;
    let raw_runsc = sample(runs, |_| {
        let id = next();
        time_ms(|| {
            sh(Command::new(RUNSC)
                .arg(format!("--root={}", raw_root.display()))
                .args(["--network=none", "run", "--bundle"])
                .arg(&b)
                .arg(&id))
            .map(drop)
        })
    })?;
    let go_runc = sample(runs, |_| time_ms(|| ctr_run(&[], &next(), &["true"])))?;
    let raw_runc = sample(runs, |_| {
        let id = next();
        time_ms(|| {
            sh(Command::new("runc")
                .arg("--root")
                .arg(&raw_root)
                .args(["run", "--bundle"])
                .arg(&b)
                .arg(&id))
            .map(drop)
        })
    })?;
    let _ = writeln!(
        rep.md,
        "## 1. Lifecycle latency: `ctr run --rm IMG id true`\n\n| variant | median ms | min | max | runs |\n|---|---|---|---|---|"
    );
    rep.row(
        "lifecycle latency (ms, lower is better)",
        "containerd-shim-runsc-v1 + runsc",
        ours,
        "ms",
    );
    rep.row(
        "lifecycle latency (ms, lower is better)",
        "Go containerd-shim-runc-v2 + runsc",
        go_runsc,
        "ms",
    );
    rep.row(
        "lifecycle latency (ms, lower is better)",
        "raw runsc run (no containerd)",
        raw_runsc,
        "ms",
    );
    rep.row(
        "lifecycle latency (ms, lower is better)",
        "Go containerd-shim-runc-v2 + runc",
        go_runc,
        "ms",
    );
    rep.row(
        "lifecycle latency (ms, lower is better)",
        "raw runc run (no containerd)",
        raw_runc,
        "ms",
    );
    let _ = writeln!(
        rep.md,
        "\n- ours / Go runc shim + runsc: **{}** (target <= 0.90)\n- added on top of the raw runtime: ours + containerd {:.0} ms over raw runsc; Go runc shim + containerd {:.0} ms over raw runc (target: ours <= runc's)\n",
        ratio(ours.median, go_runsc.median),
        ours.median - raw_runsc.median,
        go_runc.median - raw_runc.median
    );

    // ---- 2. exec latency
    eprintln!("bench: exec latency");
    let ctr_d = |flags: &[&str], id: &str| -> Result<()> {
        let mut a = vec!["run", "-d"];
        a.extend_from_slice(flags);
        a.push(IMAGE);
        a.push(id);
        a.extend_from_slice(&["sleep", "100000"]);
        c.ctr_ok(&a).map(drop)
    };
    ctr_d(&ours_flags, "exec-ours")?;
    ctr_d(&go_runsc_flags, "exec-go")?;
    let mut k = 0;
    let mut exec = |id: &str| -> Result<f64> {
        k += 1;
        let e = format!("e{k}");
        time_ms(|| {
            c.ctr_ok(&["task", "exec", "--exec-id", &e, id, "true"])
                .map(drop)
        })
    };
    let ex_ours = sample(runs, |_| exec("exec-ours"))?;
    let ex_go = sample(runs, |_| exec("exec-go"))?;
    let _ = writeln!(
        rep.md,
        "## 2. Exec latency: `ctr task exec ... true` in a running container\n\n| variant | median ms | min | max | runs |\n|---|---|---|---|---|"
    );
    rep.row(
        "exec latency (ms, lower is better)",
        "containerd-shim-runsc-v1 + runsc",
        ex_ours,
        "ms",
    );
    rep.row(
        "exec latency (ms, lower is better)",
        "Go containerd-shim-runc-v2 + runsc",
        ex_go,
        "ms",
    );
    let _ = writeln!(
        rep.md,
        "\n- ours / Go runc shim + runsc: **{}** (target <= 1.0)\n",
        ratio(ex_ours.median, ex_go.median)
    );

    // ---- 4a. memory of one container (while the exec containers run)
    eprintln!("bench: memory");
    std::thread::sleep(Duration::from_secs(2));
    let a = ctd.display().to_string();
    let our_shims = leftovers::shims(&ctd);
    let go_shims =
        leftovers::processes(|l| l.contains("containerd-shim-runc-v2") && l.contains(&a));
    let (our_pss, our_rss) = total_mem(&our_shims);
    let (go_pss, go_rss) = total_mem(&go_shims);
    for id in ["exec-ours", "exec-go"] {
        let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        std::thread::sleep(Duration::from_millis(300));
        let _ = c.ctr(&["task", "delete", "-f", id]);
        let _ = c.ctr(&["containers", "rm", id]);
    }

    // ---- 3. stdout throughput
    eprintln!("bench: stdout throughput");
    let io_runs = runs.min(5);
    let mut j = 0;
    let mut io = |flags: &[&str]| -> Result<f64> {
        j += 1;
        let id = format!("io{j}");
        let mut a: Vec<&str> = vec!["run", "--rm"];
        a.extend_from_slice(flags);
        a.extend_from_slice(&[IMAGE, &id, "sh", "-c", "head -c 268435456 /dev/zero"]);
        let t = Instant::now();
        let mut cmd = c.ctr_cmd(&a);
        let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
        if !status.success() {
            bail!("throughput run failed: {status}");
        }
        Ok(256.0 / t.elapsed().as_secs_f64())
    };
    let io_ours = sample(io_runs, |_| io(&ours_flags))?;
    let io_go = sample(io_runs, |_| io(&go_runsc_flags))?;
    let _ = writeln!(
        rep.md,
        "## 3. Stdout throughput: a container writes 256 MiB, ctr reads it\n\n| variant | median MiB/s | min | max | runs |\n|---|---|---|---|---|"
    );
    rep.row(
        "stdout throughput (MiB/s, higher is better)",
        "containerd-shim-runsc-v1 + runsc",
        io_ours,
        "MiB/s",
    );
    rep.row(
        "stdout throughput (MiB/s, higher is better)",
        "Go containerd-shim-runc-v2 + runsc",
        io_go,
        "MiB/s",
    );
    let _ = writeln!(
        rep.md,
        "\n- ours / Go runc shim + runsc: **{}** (target >= 1.0)\n",
        ratio(io_ours.median, io_go.median)
    );

    // ---- 6. CRI pod start latency, and 4b. memory of a 2-container pod
    eprintln!("bench: CRI pod start");
    let mut cri = Cri::connect(&ctd)?;
    let mut pod_times = Vec::new();
    let mut pod_pss = 0;
    let mut pod_rss = 0;
    let logs = work.join("logs");
    for i in 0..=runs {
        let dir = logs.join(format!("p{i}"));
        std::fs::create_dir_all(&dir)?;
        let pcfg = cri::pod_config(
            &format!("p{i}"),
            &format!("uid-p{i}"),
            &dir,
            &format!("{}/podp{i}", env.cgroup_base),
        );
        let t = Instant::now();
        let pod = cri.run_pod(&pcfg, HANDLER)?;
        cri.start_container(
            &pod,
            &cri::container_config("a", IMAGE, &["sleep", "100000"]),
            &pcfg,
        )?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        cri.start_container(
            &pod,
            &cri::container_config("b", IMAGE, &["sleep", "100000"]),
            &pcfg,
        )?;
        if i == 0 {
            std::thread::sleep(Duration::from_secs(2));
            let shims = leftovers::shims(&ctd);
            (pod_pss, pod_rss) = total_mem(&shims);
        } else {
            pod_times.push(ms);
        }
        cri.remove_pod(&pod)?;
    }
    let pod_start = summarize(pod_times);
    let _ = writeln!(
        rep.md,
        "## 6. CRI pod start: RunPodSandbox + CreateContainer + StartContainer (one container)\n\n| variant | median ms | min | max | runs |\n|---|---|---|---|---|"
    );
    rep.row(
        "CRI pod start (ms)",
        "containerd-shim-runsc-v1 + runsc",
        pod_start,
        "ms",
    );

    let _ = writeln!(
        rep.md,
        "\n## 4. Memory added per container / pod (steady state, `/proc/PID/smaps_rollup`)\n\n\
         | what | processes | PSS KiB | RSS KiB |\n|---|---|---|---|\n\
         | containerd-shim-runsc-v1, one `ctr` container | {} | {our_pss} | {our_rss} |\n\
         | containerd-shim-runsc-v1, one CRI pod of 2 containers | 1 shim, no helpers | {pod_pss} | {pod_rss} |\n\
         | Go containerd-shim-runc-v2 (driving runsc), one `ctr` container | {} | {go_pss} | {go_rss} |\n\
         | Go gVisor shim design, one pod of 2 containers (not measured here: it cannot be built offline; per the reference doc, one shim per container in its long-deployed mode plus one `runsc wait` helper of ~8.6 MiB PSS per container) | 2 shims + 2 helpers | ~{} | |\n\n\
         - target: <= 4096 KiB PSS per pod, helpers included\n",
        our_shims.len(),
        go_shims.len(),
        2 * go_pss + 2 * 8806
    );

    // ---- 5. density
    eprintln!("bench: density (20 pods x 2 containers, concurrently)");
    let before = total_mem(&leftovers::shims(&ctd));
    let t = Instant::now();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let ctd = ctd.clone();
            let dir = logs.join(format!("d{i}"));
            let cg = format!("{}/podd{i}", env.cgroup_base);
            std::thread::spawn(move || -> Result<String> {
                std::fs::create_dir_all(&dir)?;
                let mut cri = Cri::connect(&ctd)?;
                let pcfg = cri::pod_config(&format!("d{i}"), &format!("uid-d{i}"), &dir, &cg);
                let pod = cri.run_pod(&pcfg, HANDLER)?;
                cri.start_container(
                    &pod,
                    &cri::container_config("a", IMAGE, &["sleep", "100000"]),
                    &pcfg,
                )?;
                cri.start_container(
                    &pod,
                    &cri::container_config("b", IMAGE, &["sleep", "100000"]),
                    &pcfg,
                )?;
                Ok(pod)
            })
        })
        .collect();
    let mut pods = Vec::new();
    let mut failures = 0;
    for h in handles {
        match h.join().map_err(|_| anyhow::anyhow!("thread panicked"))? {
            Ok(p) => pods.push(p),
            Err(e) => {
                eprintln!("bench: pod failed: {e:#}");
                failures += 1;
            }
        }
    }
    let up = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    let shims = leftovers::shims(&ctd);
    let (d_pss, d_rss) = total_mem(&shims);
    let t = Instant::now();
    let handles: Vec<_> = pods
        .into_iter()
        .map(|pod| {
            let ctd = ctd.clone();
            std::thread::spawn(move || -> Result<()> { Cri::connect(&ctd)?.remove_pod(&pod) })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
    }
    let down = t.elapsed().as_secs_f64();
    let _ = writeln!(
        rep.md,
        "## 5. Density: 20 pods x 2 containers, started and removed concurrently through CRI\n\n\
         | measure | value |\n|---|---|\n\
         | pods that failed | {failures} |\n\
         | wall time until all 40 containers run | {up:.1} s |\n\
         | shim processes | {} |\n\
         | total shim PSS / RSS | {} KiB / {} KiB |\n\
         | PSS per pod | {} KiB (one pod alone: {pod_pss} KiB) |\n\
         | wall time to remove all pods | {down:.1} s |\n",
        shims.len(),
        d_pss - before.0,
        d_rss - before.1,
        (d_pss - before.0) / 20,
    );
    rep.svg_rows.push((
        "memory per pod (KiB PSS, lower is better)".into(),
        "containerd-shim-runsc-v1, 1 pod alone".into(),
        pod_pss as f64,
        "MiB",
    ));
    rep.svg_rows.push((
        "memory per pod (KiB PSS, lower is better)".into(),
        "containerd-shim-runsc-v1, per pod of 20".into(),
        ((d_pss - before.0) / 20) as f64,
        "MiB",
    ));
    rep.svg_rows.push((
        "memory per pod (KiB PSS, lower is better)".into(),
        "Go runc shim (1 container)".into(),
        go_pss as f64,
        "MiB",
    ));
    for r in rep.svg_rows.iter_mut() {
        if r.0.starts_with("memory") {
            r.3 = "KiB";
        } else if r.0.starts_with("stdout") {
            r.3 = "MiB/s";
        }
    }

    drop(cri);
    env.stop();

    // ---- write
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
    let shim_v = sh(Command::new(&shim).arg("-v"))?.replace('\n', " ");
    let doc = format!(
        "# Benchmarks\n\nGenerated by `scripts/bench.sh` (`cargo run --release -p e2e --bin bench -- --runs {runs}`) on {}.\n\n\
         - machine: {cpu}, {nproc} CPUs, kernel {uname} (a shared, noisy VM: compare ratios within one run)\n\
         - containerd: {ctd_v}\n- runsc: {runsc_v} (`--network=none`, ptrace platform)\n- shim: {shim_v}\n\
         - every latency is a median of {runs} runs after one warm-up run; min and max are shown\n\n\
         ![chart](docs/bench.svg)\n\n{}",
        sh(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?.trim(),
        rep.md
    );
    std::fs::write(&out_md, doc)?;
    if let Some(d) = out_svg.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&out_svg, svg(&rep.svg_rows))?;
    eprintln!(
        "bench: wrote {} and {}",
        out_md.display(),
        out_svg.display()
    );
    Ok(())
}
