//! The command line containerd gives a shim, and the shim socket's address.
//!
//! containerd runs `containerd-shim-runsc-v1 -namespace NS -address SOCK -publish-binary BIN
//! -id ID [-debug] [-bundle B] [-socket S] start|delete`, Go `flag` syntax. The
//! `containerd-shim` crate offers exactly this (`parse`, `StartOpts::socket_address`), but
//! it cannot be had without its shim runtime: `cgroups-rs`, `zbus`, a second `nix`,
//! `go-flag` and `signal-hook`, some 130 crates, for a hundred lines. Both pieces are
//! therefore ours, written to the same behaviour (the socket name is the same hash, so a
//! running shim started by a build that used the crate is still found).

use sha2::{Digest, Sha256};

/// Where containerd 1.6-2.2 expect shim sockets (`/run/containerd/s/<hash>`).
const SOCKET_ROOT: &str = "/run/containerd/s";

/// The parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    /// `-debug`.
    pub debug: bool,
    /// `-namespace`: the containerd namespace.
    pub namespace: String,
    /// `-id`: the task id.
    pub id: String,
    /// `-socket`: the socket the serving shim listens on.
    pub socket: String,
    /// `-bundle`: the bundle (else the working directory).
    pub bundle: String,
    /// `-address`: containerd's gRPC socket.
    pub address: String,
    /// `-publish-binary`: containerd's binary (unused: events go over ttrpc).
    pub publish_binary: String,
    /// The action: `start`, `delete`, or empty to serve.
    pub action: String,
    /// `-v` / `-version`.
    pub version: bool,
    /// `-info`.
    pub info: bool,
}

/// A command line that is not containerd's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FlagError {
    /// A flag this shim does not know.
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    /// A flag that takes a value has none.
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    /// A boolean flag with a value that is no boolean.
    #[error("invalid boolean value {value:?} for -{flag}")]
    NotBool {
        /// The flag.
        flag: String,
        /// Its value.
        value: String,
    },
}

impl Flags {
    /// Parses `args` (without the program name) like Go's `flag` package: flags (`-f`, `--f`,
    /// `-f value`, `-f=value`; booleans take no separate value) up to the first non-flag
    /// argument or `--`; the first argument after them is the action.
    pub(crate) fn parse(args: &[String]) -> Result<Flags, FlagError> {
        let mut flags = Flags::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if arg == "--" {
                break;
            }
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                flags.action = arg.clone();
                break;
            };
            if flag.is_empty() {
                flags.action = arg.clone();
                break;
            }
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (flag, None),
            };
            if let Some(field) = flags.bool_flag(name) {
                *field = match inline.as_deref() {
                    None => true,
                    Some(v) => {
                        runsc_shim::cgroups::parse_go_bool(v).ok_or_else(|| FlagError::NotBool {
                            flag: name.to_owned(),
                            value: v.to_owned(),
                        })?
                    }
                };
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => rest
                    .next()
                    .cloned()
                    .ok_or_else(|| FlagError::MissingValue(name.to_owned()))?,
            };
            *flags
                .string_flag(name)
                .ok_or_else(|| FlagError::Unknown(name.to_owned()))? = value;
        }
        if flags.action.is_empty()
            && let Some(action) = rest.next()
        {
            flags.action = action.clone();
        }
        Ok(flags)
    }

    fn bool_flag(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "debug" => &mut self.debug,
            "v" | "version" => &mut self.version,
            "info" => &mut self.info,
            _ => return None,
        })
    }

    fn string_flag(&mut self, name: &str) -> Option<&mut String> {
        Some(match name {
            "namespace" => &mut self.namespace,
            "id" => &mut self.id,
            "socket" => &mut self.socket,
            "bundle" => &mut self.bundle,
            "address" => &mut self.address,
            "publish-binary" => &mut self.publish_binary,
            _ => return None,
        })
    }
}

/// The shim socket for a group (the pod's sandbox id, or the task id): `unix://<dir>/<hash>`,
/// where `<hash>` is the hex sha256 of `<containerd address>/<namespace>/<group>` and `<dir>`
/// is the directory containerd 2.3 asks for, else `/run/containerd/s` (containerd's own
/// shims and the `containerd-shim` crate compute the same name).
pub(crate) fn socket_address(
    address: &str,
    namespace: &str,
    group: &str,
    socket_dir: Option<&str>,
) -> String {
    let path = std::path::Path::new(address).join(namespace).join(group);
    let digest = Sha256::digest(path.display().to_string().as_bytes());
    let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let dir = socket_dir.map_or(SOCKET_ROOT, |d| d.trim_end_matches('/'));
    format!("unix://{dir}/{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn containerd_command_lines() {
        let f = Flags::parse(&args(
            "-namespace k8s.io -address /run/containerd/containerd.sock \
             -publish-binary /usr/bin/containerd -id abc -debug start",
        ))
        .unwrap();
        assert_eq!(f.namespace, "k8s.io");
        assert_eq!(f.address, "/run/containerd/containerd.sock");
        assert_eq!(f.publish_binary, "/usr/bin/containerd");
        assert_eq!(f.id, "abc");
        assert!(f.debug && !f.version && !f.info);
        assert_eq!(f.action, "start");
        let f = Flags::parse(&args(
            "--id=x -bundle /b -socket unix:///s -debug=false delete",
        ))
        .unwrap();
        assert_eq!(
            (f.id.as_str(), f.bundle.as_str(), f.socket.as_str()),
            ("x", "/b", "unix:///s")
        );
        assert!(!f.debug);
        assert_eq!(f.action, "delete");
        assert!(Flags::parse(&args("-v")).unwrap().version);
        assert!(Flags::parse(&args("-info")).unwrap().info);
        assert_eq!(
            Flags::parse(&args("-id x -- start")).unwrap().action,
            "start"
        );
        assert_eq!(Flags::parse(&[]).unwrap(), Flags::default());
    }

    #[test]
    fn bad_command_lines_say_why() {
        let e = Flags::parse(&args("-frobnicate 1"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "flag provided but not defined: -frobnicate");
        let e = Flags::parse(&args("-id")).unwrap_err().to_string();
        assert_eq!(e, "flag needs an argument: -id");
        let e = Flags::parse(&args("-debug=maybe")).unwrap_err().to_string();
        assert!(e.contains("invalid boolean value"), "{e}");
    }

    #[test]
    fn socket_names_are_containerds() {
        // The name containerd's Go shims and the containerd-shim crate give this triple.
        let a = socket_address("/run/containerd/containerd.sock", "default", "c1", None);
        let expected = {
            let d = Sha256::digest(b"/run/containerd/containerd.sock/default/c1");
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        assert_eq!(a, format!("unix:///run/containerd/s/{expected}"));
        let b = socket_address(
            "/run/containerd/containerd.sock",
            "default",
            "c1",
            Some("/tmp/s/"),
        );
        assert_eq!(b, format!("unix:///tmp/s/{expected}"));
    }
}
