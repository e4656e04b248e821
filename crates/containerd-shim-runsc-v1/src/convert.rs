//! Conversions between the core's types and containerd's protobuf messages.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::types::mount::Mount as PbMount;
use runsc_shim::events::Event;
use runsc_shim::mount::Mount;

/// A protobuf timestamp.
pub(crate) fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// containerd's type URL of a message: its protobuf full name, with no
/// `type.googleapis.com/` prefix (what containerd's `typeurl` produces). Spelled out rather
/// than read from the rust-protobuf descriptor: the first use of a descriptor builds the
/// reflection tables of its whole .proto file, hundreds of KiB in every shim.
pub(crate) trait TypeUrl: Message {
    /// The full name.
    const TYPE_URL: &'static str;
}

macro_rules! type_urls {
    ($($t:ty => $name:literal),* $(,)?) => {
        $(impl TypeUrl for $t { const TYPE_URL: &'static str = $name; })*
        #[cfg(test)]
        fn check_type_urls() {
            $(assert_eq!(
                <$t as TypeUrl>::TYPE_URL,
                <$t as containerd_shim_protos::protobuf::MessageFull>::descriptor().full_name()
            );)*
        }
    };
}

type_urls! {
    ev::TaskCreate => "containerd.events.TaskCreate",
    ev::TaskStart => "containerd.events.TaskStart",
    ev::TaskExit => "containerd.events.TaskExit",
    ev::TaskDelete => "containerd.events.TaskDelete",
    ev::TaskExecAdded => "containerd.events.TaskExecAdded",
    ev::TaskExecStarted => "containerd.events.TaskExecStarted",
    ev::TaskPaused => "containerd.events.TaskPaused",
    ev::TaskResumed => "containerd.events.TaskResumed",
    ev::TaskOOM => "containerd.events.TaskOOM",
    v1::Metrics => "io.containerd.cgroups.v1.Metrics",
    v2::Metrics => "io.containerd.cgroups.v2.Metrics",
    containerd_shim_protos::shim::oci::ProcessDetails => "containerd.runc.v1.ProcessDetails",
}

/// Packs a message as an `Any` with containerd's type URL.
pub(crate) fn any<M: TypeUrl>(m: &M) -> Any {
    Any {
        type_url: M::TYPE_URL.to_owned(),
        value: m.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}

/// A containerd mount from the request.
pub(crate) fn mount_from_pb(m: &PbMount) -> Mount {
    Mount {
        kind: m.type_.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
    }
}

fn mount_to_pb(m: &Mount) -> PbMount {
    PbMount {
        type_: m.kind.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
        ..Default::default()
    }
}

/// The event as containerd's message.
pub(crate) fn event(e: &Event) -> Any {
    match e {
        Event::Create {
            container_id,
            bundle,
            rootfs,
            stdio,
            pid,
        } => any(&ev::TaskCreate {
            container_id: container_id.clone(),
            bundle: bundle.clone(),
            rootfs: rootfs.iter().map(mount_to_pb).collect(),
            io: Some(ev::TaskIO {
                stdin: stdio.stdin.clone(),
                stdout: stdio.stdout.clone(),
                stderr: stdio.stderr.clone(),
                terminal: stdio.terminal,
                ..Default::default()
            })
            .into(),
            pid: *pid,
            ..Default::default()
        }),
        Event::Start { container_id, pid } => any(&ev::TaskStart {
            container_id: container_id.clone(),
            pid: *pid,
            ..Default::default()
        }),
        Event::Exit {
            container_id,
            id,
            pid,
            exit_status,
            exited_at,
        } => any(&ev::TaskExit {
            container_id: container_id.clone(),
            id: id.clone(),
            pid: *pid,
            exit_status: *exit_status,
            exited_at: Some(timestamp(*exited_at)).into(),
            ..Default::default()
        }),
        Event::Delete {
            container_id,
            pid,
            exit_status,
            exited_at,
        } => any(&ev::TaskDelete {
            container_id: container_id.clone(),
            pid: *pid,
            exit_status: *exit_status,
            exited_at: Some(timestamp(*exited_at)).into(),
            ..Default::default()
        }),
        Event::ExecAdded {
            container_id,
            exec_id,
        } => any(&ev::TaskExecAdded {
            container_id: container_id.clone(),
            exec_id: exec_id.clone(),
            ..Default::default()
        }),
        Event::ExecStarted {
            container_id,
            exec_id,
            pid,
        } => any(&ev::TaskExecStarted {
            container_id: container_id.clone(),
            exec_id: exec_id.clone(),
            pid: *pid,
            ..Default::default()
        }),
        Event::Paused { container_id } => any(&ev::TaskPaused {
            container_id: container_id.clone(),
            ..Default::default()
        }),
        Event::Resumed { container_id } => any(&ev::TaskResumed {
            container_id: container_id.clone(),
            ..Default::default()
        }),
        Event::Oom { container_id } => any(&ev::TaskOOM {
            container_id: container_id.clone(),
            ..Default::default()
        }),
    }
}

/// Whether the host uses the unified cgroup hierarchy (cgroup v2). containerd expects the
/// metrics type of the host's mode (gVisor's shim decided by a runsc flag: gVisor #11472).
pub(crate) fn host_is_cgroup_v2() -> bool {
    static V2: OnceLock<bool> = OnceLock::new();
    *V2.get_or_init(|| {
        nix::sys::statfs::statfs("/sys/fs/cgroup")
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false)
    })
}

/// Statistics as `io.containerd.cgroups.v1.Metrics` or `...v2.Metrics`.
pub(crate) fn metrics(s: &runsc::Stats, cgroup_v2: bool) -> Any {
    if cgroup_v2 {
        any(&metrics_v2(s))
    } else {
        any(&metrics_v1(s))
    }
}

/// Network interfaces as `$ty` (the v1 and v2 `NetworkStat` messages have the same fields).
macro_rules! network_stats {
    ($s:expr, $($ty:ident)::+) => {
        $s.network_interfaces
            .iter()
            .flatten()
            .map(|n| $($ty)::+ {
                name: n.name.clone(),
                rx_bytes: n.rx_bytes,
                rx_packets: n.rx_packets,
                rx_errors: n.rx_errors,
                rx_dropped: n.rx_dropped,
                tx_bytes: n.tx_bytes,
                tx_packets: n.tx_packets,
                tx_errors: n.tx_errors,
                tx_dropped: n.tx_dropped,
                ..Default::default()
            })
            .collect()
    };
}

pub(crate) fn metrics_v1(s: &runsc::Stats) -> v1::Metrics {
    let entry = |e: &runsc::MemoryEntry| v1::MemoryEntry {
        limit: e.limit,
        usage: e.usage,
        max: e.max,
        failcnt: e.failcnt,
        ..Default::default()
    };
    let raw = |k: &str| s.memory.raw.get(k).copied().unwrap_or_default();
    v1::Metrics {
        cpu: Some(v1::CPUStat {
            usage: Some(v1::CPUUsage {
                total: s.cpu.usage.total,
                kernel: s.cpu.usage.kernel,
                user: s.cpu.usage.user,
                per_cpu: s.cpu.usage.percpu.clone(),
                ..Default::default()
            })
            .into(),
            throttling: Some(v1::Throttle {
                periods: s.cpu.throttling.periods,
                throttled_periods: s.cpu.throttling.throttled_periods,
                throttled_time: s.cpu.throttling.throttled_time,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        memory: Some(v1::MemoryStat {
            cache: s.memory.cache,
            rss: raw("rss"),
            mapped_file: raw("mapped_file"),
            total_cache: raw("total_cache"),
            total_rss: raw("total_rss"),
            inactive_file: raw("inactive_file"),
            active_file: raw("active_file"),
            total_inactive_file: raw("total_inactive_file"),
            usage: Some(entry(&s.memory.usage)).into(),
            swap: Some(entry(&s.memory.swap)).into(),
            kernel: Some(entry(&s.memory.kernel)).into(),
            kernel_tcp: Some(entry(&s.memory.kernel_tcp)).into(),
            ..Default::default()
        })
        .into(),
        pids: Some(v1::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        })
        .into(),
        network: network_stats!(s, v1::NetworkStat),
        ..Default::default()
    }
}

pub(crate) fn metrics_v2(s: &runsc::Stats) -> v2::Metrics {
    let raw = |k: &str| s.memory.raw.get(k).copied().unwrap_or_default();
    v2::Metrics {
        cpu: Some(v2::CPUStat {
            usage_usec: s.cpu.usage.total / 1000,
            user_usec: s.cpu.usage.user / 1000,
            system_usec: s.cpu.usage.kernel / 1000,
            nr_periods: s.cpu.throttling.periods,
            nr_throttled: s.cpu.throttling.throttled_periods,
            throttled_usec: s.cpu.throttling.throttled_time / 1000,
            ..Default::default()
        })
        .into(),
        memory: Some(v2::MemoryStat {
            usage: s.memory.usage.usage,
            usage_limit: s.memory.usage.limit,
            max_usage: s.memory.usage.max,
            swap_usage: s.memory.swap.usage,
            swap_limit: s.memory.swap.limit,
            slab: s.memory.kernel.usage,
            file: s.memory.cache,
            anon: raw("rss"),
            inactive_file: raw("inactive_file"),
            active_file: raw("active_file"),
            ..Default::default()
        })
        .into(),
        pids: Some(v2::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        })
        .into(),
        network: network_stats!(s, v2::NetworkStat),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use containerd_shim_protos::protobuf::Message;

    use super::*;

    fn sample() -> runsc::Stats {
        serde_json::from_str(
            r#"{"cpu":{"usage":{"total":93089930,"kernel":1000,"user":2000}},"memory":{"cache":7,"usage":{"limit":1073741824,"usage":2027520,"failcnt":0}},"pids":{"current":3},"network_interfaces":[{"Name":"eth0","RxBytes":10,"TxBytes":20}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn v1_metrics_carry_usage() {
        let m = metrics_v1(&sample());
        assert_eq!(m.cpu.usage.total, 93089930);
        assert_eq!(m.memory.usage.usage, 2027520);
        assert_eq!(m.memory.usage.limit, 1073741824);
        assert_eq!(m.memory.cache, 7);
        assert_eq!(m.pids.current, 3);
        assert_eq!(
            (m.network[0].name.as_str(), m.network[0].rx_bytes),
            ("eth0", 10)
        );
        let a = metrics(&sample(), false);
        assert_eq!(a.type_url, "io.containerd.cgroups.v1.Metrics");
    }

    #[test]
    fn v2_metrics_use_microseconds() {
        let m = metrics_v2(&sample());
        assert_eq!(m.cpu.usage_usec, 93089);
        assert_eq!(m.memory.usage, 2027520);
        assert_eq!(m.memory.usage_limit, 1073741824);
        assert_eq!(m.pids.current, 3);
        assert_eq!(
            metrics(&sample(), true).type_url,
            "io.containerd.cgroups.v2.Metrics"
        );
    }

    #[test]
    fn type_urls_match_the_descriptors() {
        check_type_urls();
    }

    #[test]
    fn event_type_urls_are_bare_names() {
        let e = event(&Event::Exit {
            container_id: "c".into(),
            id: "c".into(),
            pid: 5,
            exit_status: 7,
            exited_at: UNIX_EPOCH + std::time::Duration::from_secs(10),
        });
        assert_eq!(e.type_url, "containerd.events.TaskExit");
        let exit = ev::TaskExit::parse_from_bytes(&e.value).unwrap();
        assert_eq!(
            (exit.id.as_str(), exit.exit_status, exit.exited_at.seconds),
            ("c", 7, 10)
        );
    }
}
