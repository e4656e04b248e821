//! Arguments of the node commands (`install`, `uninstall`, `checkpoint`): `--flag value` or
//! `--flag=value`, and plain words. containerd's own protocol has its flag syntax
//! (`flags.rs`).

use anyhow::Context;

/// Walks a command's arguments.
pub(crate) struct Args<'a> {
    it: std::slice::Iter<'a, String>,
    usage: &'static str,
    inline: Option<String>,
}

impl<'a> Args<'a> {
    /// The arguments `args` of a command with usage text `usage` (added to errors).
    pub(crate) fn new(args: &'a [String], usage: &'static str) -> Args<'a> {
        Args {
            it: args.iter(),
            usage,
            inline: None,
        }
    }

    /// The next argument; of `--flag=value`, the flag (the value is kept for
    /// [`Args::value`]).
    pub(crate) fn next_arg(&mut self) -> Option<String> {
        let a = self.it.next()?;
        self.inline = None;
        match a.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                self.inline = Some(value.to_owned());
                Some(flag.to_owned())
            }
            _ => Some(a.clone()),
        }
    }

    /// The value of `flag`, the flag just read: after its `=`, or the next argument.
    pub(crate) fn value(&mut self, flag: &str) -> anyhow::Result<String> {
        match self.inline.take() {
            Some(v) => Ok(v),
            None => self
                .it
                .next()
                .cloned()
                .with_context(|| format!("{flag} needs a value\n{}", self.usage)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_values_and_words() {
        let args: Vec<String> = ["--a=1", "--b", "2", "word", "-h", "--c"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut it = Args::new(&args, "usage: x");
        assert_eq!(it.next_arg().as_deref(), Some("--a"));
        assert_eq!(it.value("--a").unwrap(), "1");
        assert_eq!(it.next_arg().as_deref(), Some("--b"));
        assert_eq!(it.value("--b").unwrap(), "2");
        assert_eq!(it.next_arg().as_deref(), Some("word"));
        assert_eq!(it.next_arg().as_deref(), Some("-h"));
        assert_eq!(it.next_arg().as_deref(), Some("--c"));
        let e = it.value("--c").unwrap_err().to_string();
        assert!(
            e.contains("--c needs a value") && e.contains("usage: x"),
            "{e}"
        );
        assert_eq!(it.next_arg(), None);
    }
}
