//! Shim configuration: CRI runtime options and gVisor's `runsc.toml`.
//!
//! containerd hands a non-runc runtime `runtimeoptions.v1.Options` (see
//! `proto/runtimeoptions/v1/api.proto`): a `config_path` to a TOML file, or, when the runtime's
//! containerd `options` table has no `ConfigPath`, the table itself as `config_body`. gVisor's
//! Go shim ignores `config_body`; we read it. The TOML keys are gVisor's (`binary_name`, `root`,
//! `log_level`, `log_path`, `grouping`, `io_uid`, `io_gid`, `[runsc_config]`, ...), so an
//! existing `runsc.toml` works unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the shim's configuration is, as containerd's runtime options say (CRI's
/// `runtimeoptions.v1.Options`, decoded by the binary from `proto/runtimeoptions/v1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Type of the configuration the file holds (gVisor documents
    /// `io.containerd.runsc.v1.options`).
    pub type_url: String,
    /// Path of the TOML configuration file.
    pub config_path: String,
    /// Inline TOML, used when `config_path` is empty.
    pub config_body: Vec<u8>,
}

/// Global config files read when containerd passes no configuration at all (the same paths
/// gVisor's shim reads its shim-wide settings from).
pub const GLOBAL_CONFIG_PATHS: [&str; 2] = [
    "/run/containerd/runsc/config.toml",
    "/etc/containerd/runsc/config.toml",
];

/// Default runsc state root; the namespace is appended.
pub const DEFAULT_ROOT: &str = "/run/containerd/runsc";

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Nothing configured: defaults.
    Defaults,
    /// A TOML file (`config_path`, or a global config file).
    File(PathBuf),
    /// containerd's inline `config_body`.
    Body,
}

impl Source {
    fn label(&self) -> PathBuf {
        match self {
            Source::Defaults => PathBuf::from("<defaults>"),
            Source::File(p) => p.clone(),
            Source::Body => PathBuf::from("<containerd runtime options config_body>"),
        }
    }
}

/// The shim's configuration (gVisor `runsc.toml` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimConfig {
    /// Where this came from.
    pub source: Source,
    /// runsc binary (`binary_name`), a path or a name looked up in `PATH`.
    pub binary_name: String,
    /// runsc state root base (`root`); the namespace is appended.
    pub root: PathBuf,
    /// Shim log level (`log_level`), if set.
    pub log_level: Option<String>,
    /// Extra shim log file (`log_path`); a trailing `/` means a file per container there.
    pub log_path: Option<String>,
    /// One shim per pod (`grouping`, default true).
    pub grouping: bool,
    /// The cgroup `start` puts the shim into (`shim_cgroup`; gVisor's shim accepts the key
    /// but ignores it). runc's `ShimCgroup` option, when sent, takes precedence.
    pub shim_cgroup: Option<String>,
    /// Owner of the stdio pipes (`io_uid`, `io_gid`).
    pub io_uid: u32,
    /// See `io_uid`.
    pub io_gid: u32,
    /// Global runsc flags (`[runsc_config]`), each rendered `--key=value`.
    pub runsc_config: BTreeMap<String, String>,
    /// Flags of `runsc checkpoint` (`[runsc_checkpoint]`, e.g. `compression = "none"`), each
    /// rendered `--key=value`.
    pub runsc_checkpoint: BTreeMap<String, String>,
    /// Keys that were present but are not understood (warned about, not fatal).
    pub unknown_keys: Vec<String>,
}

impl Default for ShimConfig {
    fn default() -> Self {
        ShimConfig {
            source: Source::Defaults,
            binary_name: "runsc".to_owned(),
            root: PathBuf::from(DEFAULT_ROOT),
            log_level: None,
            log_path: None,
            grouping: true,
            shim_cgroup: None,
            io_uid: 0,
            io_gid: 0,
            runsc_config: BTreeMap::new(),
            runsc_checkpoint: BTreeMap::new(),
            unknown_keys: Vec::new(),
        }
    }
}

const LOG_LEVELS: [&str; 8] = [
    "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic",
];

impl ShimConfig {
    /// Loads the configuration the options point at: `config_path`, else `config_body`, else
    /// the first existing global config file, else defaults.
    pub fn load(options: Option<&RuntimeOptions>) -> Result<ShimConfig> {
        if let Some(opts) = options {
            if !opts.config_path.is_empty() {
                return Self::from_file(Path::new(&opts.config_path));
            }
            if !opts.config_body.is_empty() {
                let text = std::str::from_utf8(&opts.config_body).map_err(|_| Error::Config {
                    path: Source::Body.label(),
                    message: "not UTF-8".into(),
                })?;
                return Self::parse(text, Source::Body);
            }
        }
        for path in GLOBAL_CONFIG_PATHS {
            let path = Path::new(path);
            if path.exists() {
                return Self::from_file(path);
            }
        }
        Ok(ShimConfig::default())
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<ShimConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_owned(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, Source::File(path.to_owned()))
    }

    /// Parses TOML text. Keys match gVisor's `runsc.toml`; containerd-style spellings
    /// (`BinaryName`, `Root`) of an inline `config_body` are accepted too.
    pub fn parse(text: &str, source: Source) -> Result<ShimConfig> {
        let label = source.label();
        let err = |message: String| Error::Config {
            path: label.clone(),
            message,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| err(e.to_string().trim().replace('\n', " ")))?;
        let mut cfg = ShimConfig {
            source,
            ..ShimConfig::default()
        };
        for (key, value) in &table {
            let string = |v: &toml::Value| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err(format!("`{key}` must be a string")))
            };
            let uint = |v: &toml::Value| {
                v.as_integer()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| err(format!("`{key}` must be an integer between 0 and 2^32-1")))
            };
            match normalize(key).as_str() {
                "binaryname" => {
                    cfg.binary_name = string(value)?;
                    if cfg.binary_name.is_empty() {
                        return Err(err("`binary_name` must not be empty".into()));
                    }
                }
                "root" => {
                    let root = string(value)?;
                    if !root.starts_with('/') {
                        return Err(err(format!(
                            "`root` must be an absolute path, got {root:?}"
                        )));
                    }
                    cfg.root = PathBuf::from(root);
                }
                "loglevel" => {
                    let level = string(value)?.to_ascii_lowercase();
                    if !level.is_empty() {
                        if !LOG_LEVELS.contains(&level.as_str()) {
                            return Err(err(format!(
                                "`log_level` {level:?} is not one of {}",
                                LOG_LEVELS.join(", ")
                            )));
                        }
                        cfg.log_level = Some(level);
                    }
                }
                "logpath" => cfg.log_path = Some(string(value)?).filter(|p| !p.is_empty()),
                "grouping" => {
                    cfg.grouping = value
                        .as_bool()
                        .ok_or_else(|| err("`grouping` must be true or false".into()))?
                }
                "iouid" => cfg.io_uid = uint(value)?,
                "iogid" => cfg.io_gid = uint(value)?,
                "runscconfig" => {
                    let flags = flag_table("runsc_config", value, &[]).map_err(&err)?;
                    cfg.runsc_config.extend(flags);
                }
                "runsccheckpoint" => {
                    let flags = flag_table("runsc_checkpoint", value, &CHECKPOINT_OWNED_FLAGS)
                        .map_err(&err)?;
                    cfg.runsc_checkpoint.extend(flags);
                }
                "shimcgroup" => cfg.shim_cgroup = Some(string(value)?).filter(|c| !c.is_empty()),
                // Known to gVisor's shim, meaningless here or handled elsewhere: accepted
                // silently. containerd's own option keys appear in an inline config_body.
                "enablehibernateserver" | "typeurl" | "configpath" => {}
                _ => cfg.unknown_keys.push(key.clone()),
            }
        }
        Ok(cfg)
    }

    /// The effective runsc root for a namespace: `<root>/<namespace>`.
    pub fn runsc_root(&self, namespace: &str) -> PathBuf {
        self.root.join(namespace)
    }
}

/// `binary_name`, `BinaryName`, `binaryName` all become `binaryname`.
fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Global runsc flags the shim sets itself on every call and depends on, with what to use
/// instead: `--root` (where runsc keeps the state the shim reads), `--log`/`--log-format`
/// (runsc's error messages, read back as JSON from the bundle's `log.json`). A
/// `[runsc_config]` entry would silently take them over.
const SHIM_OWNED_FLAGS: [(&str, &str); 4] = [
    ("root", "set the top-level `root` key instead"),
    ("log", "use `debug-log` for runsc's own logs"),
    ("log-format", "use `debug-log-format` for runsc's own logs"),
    ("log-fd", "use `debug-log` for runsc's own logs"),
];

/// Flags of `runsc checkpoint` the shim sets from containerd's request, with why.
const CHECKPOINT_OWNED_FLAGS: [(&str, &str); 3] = [
    ("image-path", "from containerd's checkpoint request"),
    ("leave-running", "from containerd's checkpoint request"),
    ("work-path", "from containerd's checkpoint request"),
];

/// A table of runsc flags (`[runsc_config]`, `[runsc_checkpoint]`), each value as flag text;
/// `owned`: flags the shim sets itself in that table's command, refused with the reason.
fn flag_table(
    table: &str,
    value: &toml::Value,
    owned: &[(&str, &str)],
) -> std::result::Result<BTreeMap<String, String>, String> {
    let flags = value
        .as_table()
        .ok_or_else(|| format!("`{table}` must be a table"))?;
    flags
        .iter()
        .map(|(flag, v)| Ok((flag.clone(), runsc_flag_value(table, flag, v, owned)?)))
        .collect()
}

/// A value of table `table` as runsc flag text. gVisor's shim takes strings only; booleans and
/// numbers (`debug = true`) are accepted here too. Global flags the shim owns
/// ([`SHIM_OWNED_FLAGS`]) are refused in every table, and so are the table's `owned` ones.
fn runsc_flag_value(
    table: &str,
    flag: &str,
    v: &toml::Value,
    owned: &[(&str, &str)],
) -> std::result::Result<String, String> {
    if flag.is_empty()
        || flag.starts_with('-')
        || flag.contains('=')
        || flag.contains(char::is_whitespace)
    {
        return Err(format!("`{table}` key {flag:?} is not a runsc flag name"));
    }
    let canonical = flag.replace('_', "-").to_ascii_lowercase();
    if let Some((_, instead)) = SHIM_OWNED_FLAGS.iter().find(|(f, _)| *f == canonical) {
        return Err(format!(
            "`{table}.{flag}` cannot be set: the shim passes --{canonical} to runsc itself \
             and relies on it ({instead})"
        ));
    }
    if let Some((_, from)) = owned.iter().find(|(f, _)| *f == canonical) {
        return Err(format!(
            "`{table}.{flag}` cannot be set: the shim passes --{canonical} {from}"
        ));
    }
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        _ => Err(format!(
            "`{table}.{flag}` must be a string, boolean or number"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gvisor_runsc_toml() {
        let cfg = ShimConfig::parse(
            r#"
            # comment
            binary_name = "/usr/local/bin/runsc"
            root = "/run/containerd/runsc"
            log_level = "debug"
            log_path = "/var/log/runsc/%ID%/shim.log"
            grouping = false
            io_uid = 1000
            io_gid = 1001
            shim_cgroup = ""
            [runsc_config]
              debug = "true"
              debug-log = "/var/log/runsc/%ID%/"
              network = "none"
              overlay2 = true
              watchdog-action = 1
            "#,
            Source::File("/etc/containerd/runsc.toml".into()),
        )
        .unwrap();
        assert_eq!(cfg.binary_name, "/usr/local/bin/runsc");
        assert_eq!(cfg.log_level.as_deref(), Some("debug"));
        assert!(!cfg.grouping);
        assert_eq!((cfg.io_uid, cfg.io_gid), (1000, 1001));
        assert_eq!(cfg.shim_cgroup, None, "an empty shim_cgroup is none");
        let other = ShimConfig::parse("shim_cgroup = \"/pods/shims\"", Source::Body).unwrap();
        assert_eq!(other.shim_cgroup.as_deref(), Some("/pods/shims"));
        assert_eq!(
            cfg.runsc_config
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            [
                "debug=true",
                "debug-log=/var/log/runsc/%ID%/",
                "network=none",
                "overlay2=true",
                "watchdog-action=1"
            ]
        );
        assert!(cfg.unknown_keys.is_empty());
        assert_eq!(
            cfg.runsc_root("k8s.io"),
            PathBuf::from("/run/containerd/runsc/k8s.io")
        );
    }

    #[test]
    fn defaults() {
        let cfg = ShimConfig::parse("", Source::Body).unwrap();
        assert_eq!(cfg.binary_name, "runsc");
        assert_eq!(cfg.root, PathBuf::from(DEFAULT_ROOT));
        assert!(cfg.grouping);
        assert!(cfg.runsc_config.is_empty());
    }

    #[test]
    fn containerd_style_body_keys() {
        let cfg = ShimConfig::parse(
            "TypeUrl = \"io.containerd.runsc.v1.options\"\nBinaryName = \"/opt/runsc\"\nSystemdCgroup = true\n",
            Source::Body,
        )
        .unwrap();
        assert_eq!(cfg.binary_name, "/opt/runsc");
        assert_eq!(cfg.unknown_keys, ["SystemdCgroup"]);
    }

    #[test]
    fn unknown_keys_are_collected_not_fatal() {
        let cfg = ShimConfig::parse("frobnicate = 1\n[extra]\nx=1\n", Source::Body).unwrap();
        assert_eq!(cfg.unknown_keys, ["extra", "frobnicate"]);
    }

    #[test]
    fn malformed_toml_names_file_and_problem() {
        let err = ShimConfig::parse("binary_name = \n", Source::File("/etc/x.toml".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid shim configuration \"/etc/x.toml\":"),
            "{err}"
        );
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn wrong_types_are_named() {
        for (text, needle) in [
            ("io_uid = \"x\"", "`io_uid` must be an integer"),
            ("io_uid = -1", "`io_uid` must be an integer"),
            ("grouping = \"yes\"", "`grouping` must be true or false"),
            ("root = \"relative\"", "`root` must be an absolute path"),
            ("log_level = \"loud\"", "`log_level` \"loud\" is not one of"),
            ("runsc_config = 1", "`runsc_config` must be a table"),
            (
                "[runsc_config]\n\"--x\" = \"1\"",
                "is not a runsc flag name",
            ),
            ("[runsc_config]\nx = [1]", "`runsc_config.x` must be"),
            ("binary_name = \"\"", "must not be empty"),
        ] {
            let err = ShimConfig::parse(text, Source::Body)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    /// Issue 12, item 2: flags the shim owns cannot be taken over from `[runsc_config]`.
    #[test]
    fn shim_owned_runsc_flags_are_refused() {
        for key in ["root", "log", "log-format", "log_format", "log-fd", "LOG"] {
            let text = format!("[runsc_config]\n{key} = \"/x\"\n");
            let err = ShimConfig::parse(&text, Source::File("/etc/runsc.toml".into()))
                .unwrap_err()
                .to_string();
            assert!(err.contains("/etc/runsc.toml"), "{key}: {err}");
            assert!(
                err.contains(&format!("`runsc_config.{key}` cannot be set")),
                "{err}"
            );
        }
        // Flags next to them stay the user's.
        let cfg = ShimConfig::parse(
            "[runsc_config]\ndebug-log = \"/d/\"\nlog-packets = \"true\"\nsystemd-cgroup = \"true\"\n",
            Source::Body,
        )
        .unwrap();
        assert_eq!(cfg.runsc_config.len(), 3);
    }

    #[test]
    fn missing_file_is_named() {
        let opts = RuntimeOptions {
            config_path: "/nonexistent/runsc.toml".into(),
            ..Default::default()
        };
        let err = ShimConfig::load(Some(&opts)).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/runsc.toml") && err.contains("cannot read"),
            "{err}"
        );
    }

    /// The example `runsc.toml` shipped in the packages parses, as shipped and with every
    /// commented-out setting switched on, and uses no key this shim does not know.
    #[test]
    fn packaged_example_parses_with_every_setting() {
        let text = include_str!("../../../packaging/runsc.toml");
        let shipped = ShimConfig::parse(text, Source::Body).unwrap();
        assert!(
            shipped.unknown_keys.is_empty(),
            "{:?}",
            shipped.unknown_keys
        );
        let all: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(setting) if setting.contains(" = ") && !setting.contains(": ") => setting,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let all = ShimConfig::parse(&all, Source::Body).unwrap();
        assert!(all.unknown_keys.is_empty(), "{:?}", all.unknown_keys);
        assert!(
            all.shim_cgroup.is_some() && !all.runsc_config.is_empty(),
            "{all:?}"
        );
    }

    #[test]
    fn checkpoint_flags_are_passed_and_request_owned_ones_refused() {
        let cfg = ShimConfig::parse(
            "[runsc_checkpoint]\ncompression = \"none\"\nexclude-committed-zero-pages = true\n",
            Source::Defaults,
        )
        .unwrap();
        assert_eq!(
            cfg.runsc_checkpoint.iter().collect::<Vec<_>>(),
            [
                (&"compression".to_owned(), &"none".to_owned()),
                (
                    &"exclude-committed-zero-pages".to_owned(),
                    &"true".to_owned()
                )
            ]
        );
        assert!(cfg.unknown_keys.is_empty());
        for bad in [
            "leave_running = true",
            "image-path = \"/x\"",
            "work_path = \"/x\"",
        ] {
            let err = ShimConfig::parse(&format!("[runsc_checkpoint]\n{bad}\n"), Source::Defaults)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("runsc_checkpoint.") && err.contains("checkpoint request"),
                "{err}"
            );
        }
        let err = ShimConfig::parse("[runsc_checkpoint]\n\"-x\" = 1\n", Source::Defaults)
            .unwrap_err()
            .to_string();
        assert!(err.contains("runsc_checkpoint"), "{err}");
    }
}
