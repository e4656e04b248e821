//! The task options containerd sends with `start` and `Create`, decoded.
//!
//! - `runtimeoptions.v1.Options` (CRI, and `ctr --runtime-config-path`): where the shim's
//!   configuration is. Compiled from `proto/runtimeoptions/v1/api.proto`.
//! - runc's option types, which containerd 1.6/1.7 clients send to every runtime whose name
//!   is not `io.containerd.runc.*`: only their `ShimCgroup` is honoured
//!   (`containerd.runc.v1.Options` from `containerd-shim-protos`,
//!   `containerd.linux.runc.CreateOptions` from `proto/runctypes/runc.proto`).
//! - anything else is ignored with a warning.

use containerd_shim_protos::protobuf::Message as _;
use prost::Message as _;
use runsc_shim::Error;
use runsc_shim::config::RuntimeOptions;

/// Generated from `proto/` by `build.rs`.
mod pb {
    pub(super) mod runtimeoptions {
        include!(concat!(env!("OUT_DIR"), "/runtimeoptions.v1.rs"));
    }
    pub(super) mod runctypes {
        include!(concat!(env!("OUT_DIR"), "/containerd.linux.runc.rs"));
    }
}

/// Type URL suffix of CRI's runtime options.
pub(crate) const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
const RUNC_CREATE_OPTIONS: &str = "containerd.linux.runc.CreateOptions";
/// Option types of other runtimes that containerd clients send to any runtime: tolerated.
const OTHER_RUNTIMES: [&str; 3] = [
    RUNC_OPTIONS,
    RUNC_CREATE_OPTIONS,
    "containerd.runhcs.v1.Options",
];

/// The message name of a type URL (`types.containerd.io/x.y.Z` -> `x.y.Z`).
fn name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or_default()
}

/// Decodes the options `Any`. `None` for no options and for other runtimes' option types;
/// malformed runtime options are an error.
pub(crate) fn decode(type_url: &str, value: &[u8]) -> Result<Option<RuntimeOptions>, Error> {
    if type_url.is_empty() && value.is_empty() {
        return Ok(None);
    }
    let name = name(type_url);
    if name == RUNTIME_OPTIONS {
        let o = pb::runtimeoptions::Options::decode(value).map_err(|e| {
            Error::InvalidArgument(format!("malformed runtime options ({type_url}): {e}"))
        })?;
        return Ok(Some(RuntimeOptions {
            type_url: o.type_url,
            config_path: o.config_path,
            config_body: o.config_body,
        }));
    }
    if OTHER_RUNTIMES.contains(&name) {
        tracing::debug!(type_url, "ignoring options of another runtime type");
    } else {
        tracing::warn!(type_url, "ignoring runtime options of unknown type");
    }
    Ok(None)
}

/// Type URL suffix of runc's checkpoint options (what containerd clients send with a
/// checkpoint, for any runtime).
const RUNC_CHECKPOINT_OPTIONS: &str = "containerd.runc.v1.CheckpointOptions";

/// The options of a Checkpoint request: runc's `CheckpointOptions` (`exit`, `image_path`
/// are honoured; `work_path` and the CRIU-only fields mean nothing to runsc). Options of any
/// other type are ignored with a warning; malformed ones are an error.
pub(crate) fn checkpoint(
    type_url: &str,
    value: &[u8],
) -> Result<containerd_shim_protos::shim::oci::CheckpointOptions, Error> {
    if type_url.is_empty() && value.is_empty() {
        return Ok(Default::default());
    }
    if name(type_url) != RUNC_CHECKPOINT_OPTIONS {
        tracing::warn!(type_url, "ignoring checkpoint options of an unknown type");
        return Ok(Default::default());
    }
    let o = containerd_shim_protos::shim::oci::CheckpointOptions::parse_from_bytes(value).map_err(
        |e| Error::InvalidArgument(format!("malformed checkpoint options ({type_url}): {e}")),
    )?;
    if !o.work_path.is_empty() {
        tracing::info!(work_path = %o.work_path, "checkpoint work path ignored: runsc has no use for it");
    }
    Ok(o)
}

/// The `ShimCgroup` of runc's option types (what `ctr run --runc-shim-cgroup`, the client's
/// `WithShimCgroup` and containerd's runtime `options` table set), if the options are one of
/// them and name a cgroup.
pub(crate) fn runc_shim_cgroup(type_url: &str, value: &[u8]) -> Option<String> {
    let cgroup = match name(type_url) {
        RUNC_OPTIONS => {
            containerd_shim_protos::shim::oci::Options::parse_from_bytes(value)
                .ok()?
                .shim_cgroup
        }
        RUNC_CREATE_OPTIONS => {
            pb::runctypes::CreateOptions::decode(value)
                .ok()?
                .shim_cgroup
        }
        _ => return None,
    };
    Some(cgroup).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod checkpoint_tests {
    use containerd_shim_protos::protobuf::Message as _;
    use containerd_shim_protos::shim::oci::CheckpointOptions;

    #[test]
    fn runc_checkpoint_options_decode() {
        let o = CheckpointOptions {
            exit: true,
            image_path: "/img".into(),
            ..Default::default()
        };
        let bytes = o.write_to_bytes().unwrap();
        let got = super::checkpoint(
            "types.containerd.io/containerd.runc.v1.CheckpointOptions",
            &bytes,
        )
        .unwrap();
        assert!(got.exit);
        assert_eq!(got.image_path, "/img");
        assert!(!super::checkpoint("", &[]).unwrap().exit);
        assert!(!super::checkpoint("x.y.Other", &[1, 2]).unwrap().exit);
        assert!(super::checkpoint("containerd.runc.v1.CheckpointOptions", &[0xff, 0xff]).is_err());
    }
}

#[cfg(test)]
pub(crate) fn encode_runtime_options(o: &RuntimeOptions) -> Vec<u8> {
    pb::runtimeoptions::Options {
        type_url: o.type_url.clone(),
        config_path: o.config_path.clone(),
        config_body: o.config_body.clone(),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RuntimeOptions {
        RuntimeOptions {
            type_url: "io.containerd.runsc.v1.options".into(),
            config_path: "/etc/containerd/runsc.toml".into(),
            config_body: b"x = 1".to_vec(),
        }
    }

    #[test]
    fn runtime_options() {
        let bytes = encode_runtime_options(&sample());
        // The wire form of the shipped .proto: fields 1, 2 and 3, length-delimited.
        let mut expected = vec![0x0a, 30];
        expected.extend_from_slice(b"io.containerd.runsc.v1.options");
        expected.extend_from_slice(&[0x12, 26]);
        expected.extend_from_slice(b"/etc/containerd/runsc.toml");
        expected.extend_from_slice(&[0x1a, 5]);
        expected.extend_from_slice(b"x = 1");
        assert_eq!(bytes, expected);
        assert_eq!(decode(RUNTIME_OPTIONS, &bytes).unwrap(), Some(sample()));
        assert_eq!(
            decode("type.googleapis.com/runtimeoptions.v1.Options", &bytes).unwrap(),
            Some(sample())
        );
        assert_eq!(decode("", &[]).unwrap(), None);
        assert_eq!(decode(RUNC_CREATE_OPTIONS, &[8, 1]).unwrap(), None);
        let err = decode(RUNTIME_OPTIONS, &[0xff, 0xff]).unwrap_err();
        assert!(
            err.to_string().starts_with("malformed runtime options"),
            "{err}"
        );
    }

    #[test]
    fn shim_cgroup_of_runc_options() {
        // containerd.runc.v1.Options{binary_name: "runc" (6), shim_cgroup: "/a/b" (3)}
        let mut v = vec![0x32, 4];
        v.extend_from_slice(b"runc");
        v.extend_from_slice(&[0x1a, 4]);
        v.extend_from_slice(b"/a/b");
        assert_eq!(
            runc_shim_cgroup("types.containerd.io/containerd.runc.v1.Options", &v).as_deref(),
            Some("/a/b")
        );
        // containerd.linux.runc.CreateOptions{io_uid: 1 (10), shim_cgroup: "/c" (9)}
        let mut v = vec![0x50, 1, 0x4a, 2];
        v.extend_from_slice(b"/c");
        assert_eq!(
            runc_shim_cgroup(RUNC_CREATE_OPTIONS, &v).as_deref(),
            Some("/c")
        );
        assert_eq!(runc_shim_cgroup(RUNC_OPTIONS, &[0x32, 1, b'x']), None);
        assert_eq!(runc_shim_cgroup(RUNTIME_OPTIONS, &[0x1a, 1, b'x']), None);
        assert_eq!(runc_shim_cgroup(RUNC_OPTIONS, &[0xff]), None);
    }

    #[test]
    fn fuzz_options() {
        let bytes = encode_runtime_options(&sample());
        fuzzkit::fuzz("runtime-options", &[&bytes, b""], |input| {
            let _ = decode(RUNTIME_OPTIONS, input);
            let _ = decode(&String::from_utf8_lossy(input), input);
            let _ = runc_shim_cgroup(RUNC_OPTIONS, input);
            let _ = runc_shim_cgroup(RUNC_CREATE_OPTIONS, input);
        });
    }
}
