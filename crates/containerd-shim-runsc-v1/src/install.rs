//! `install` / `uninstall`: set up (or remove) the shim on a node. See the
//! `runsc-shim-installer` crate for what exactly is done.

use std::path::PathBuf;

use anyhow::{Context, bail};
use runsc_shim_installer::{self as installer, Options};

use crate::args::Args;

const USAGE: &str = "usage: containerd-shim-runsc-v1 install|uninstall [--dry-run] [--restart] \
[--bin-dir DIR] [--containerd-config FILE] [--runsc-config FILE] [--runsc PATH] \
[--containerd PATH] [--runtime-name NAME] [--config-version 2|3]";

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options::default();
    let mut it = Args::new(args, USAGE);
    while let Some(flag) = it.next_arg() {
        match flag.as_str() {
            "--dry-run" => o.dry_run = true,
            "--restart" => o.restart = true,
            "--bin-dir" => o.bin_dir = PathBuf::from(it.value(&flag)?),
            "--containerd-config" => o.containerd_config = PathBuf::from(it.value(&flag)?),
            "--runsc-config" => o.runsc_config = PathBuf::from(it.value(&flag)?),
            "--runsc" => o.runsc = Some(PathBuf::from(it.value(&flag)?)),
            "--containerd" => o.containerd = Some(PathBuf::from(it.value(&flag)?)),
            "--runtime-name" => o.runtime_name = it.value(&flag)?,
            "--config-version" => {
                let v = it.value(&flag)?;
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
