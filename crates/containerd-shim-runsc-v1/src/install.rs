//! `install` / `uninstall`: set up (or remove) the shim on a node. See the
//! `runsc-shim-installer` crate for what exactly is done.

use std::path::PathBuf;

use anyhow::{Context, bail};
use runsc_shim_installer::{self as installer, Options};

const USAGE: &str = "usage: containerd-shim-runsc-v1 install|uninstall [--dry-run] [--restart] \
[--bin-dir DIR] [--containerd-config FILE] [--runsc-config FILE] [--runsc PATH] \
[--containerd PATH] [--runtime-name NAME] [--config-version 2|3]";

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (a.as_str(), None),
        };
        let mut val = |name: &str| -> anyhow::Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value\n{USAGE}")),
            }
        };
        match flag {
            "--dry-run" => o.dry_run = true,
            "--restart" => o.restart = true,
            "--bin-dir" => o.bin_dir = PathBuf::from(val(flag)?),
            "--containerd-config" => o.containerd_config = PathBuf::from(val(flag)?),
            "--runsc-config" => o.runsc_config = PathBuf::from(val(flag)?),
            "--runsc" => o.runsc = Some(PathBuf::from(val(flag)?)),
            "--containerd" => o.containerd = Some(PathBuf::from(val(flag)?)),
            "--runtime-name" => o.runtime_name = val(flag)?,
            "--config-version" => {
                let v = val(flag)?;
                o.config_version = Some(v.parse().ok().filter(|v| [2, 3].contains(v)).with_context(|| {
                    format!("--config-version must be 2 (containerd 1.x) or 3 (containerd 2.x), got {v:?}")
                })?);
            }
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(o)
}

/// Runs `install` (`uninstall` when `remove`).
pub(crate) fn run(remove: bool, args: &[String]) -> anyhow::Result<()> {
    let opts = parse(args)?;
    let plan = if remove {
        installer::plan_uninstall(&opts)?
    } else {
        installer::plan_install(&opts)?
    };
    say(&installer::describe(&plan));
    if opts.dry_run {
        say("(dry run: nothing was changed)\n");
        return Ok(());
    }
    installer::apply(&plan)?;
    if plan.needs_restart {
        if opts.restart {
            say(&format!("{}\n", installer::restart()?));
        } else {
            say("restart containerd to apply the change\n");
        }
    }
    Ok(())
}

/// Reports to the user; a reader that went away (`| head`) does not stop the work.
fn say(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
}
