//! Identifier validation.
//!
//! Task and exec ids become file names in the bundle and runsc root and arguments of runsc,
//! so they must never be able to name another path. The rule is containerd's own
//! (`pkg/identifiers`): alphanumeric components joined by single `.`, `_` or `-`, at most 76
//! characters. It rules out `/`, `..`, NUL, whitespace and leading dashes.

use crate::error::{Error, Result};

/// The longest id containerd accepts.
pub const MAX_ID_LEN: usize = 76;

/// Checks a task or exec id; `what` names it in the error ("container id", "exec id").
pub fn validate(what: &str, id: &str) -> Result<()> {
    let bad = |why: &str| {
        let shown: String = id.chars().take(80).flat_map(char::escape_default).collect();
        Err(Error::InvalidArgument(format!(
            "invalid {what} \"{shown}\": {why}"
        )))
    };
    if id.is_empty() {
        return bad("must not be empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad(&format!("longer than {MAX_ID_LEN} characters"));
    }
    let mut prev_sep = true; // no separator at the start
    for c in id.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => prev_sep = false,
            '.' | '_' | '-' if !prev_sep => prev_sep = true,
            _ => {
                return bad(
                    "only letters, digits and single '.', '_' or '-' between them are allowed",
                );
            }
        }
    }
    if prev_sep {
        return bad("must not end with '.', '_' or '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_ids() {
        for id in ["a", "c1", "my-container", "exec.1_x", "0123456789abcdef"] {
            validate("id", id).unwrap();
        }
        validate("id", &"a".repeat(MAX_ID_LEN)).unwrap();
    }

    #[test]
    fn rejects_path_tricks_and_garbage() {
        for id in [
            "", "..", ".", "a/b", "../x", "a\0b", "-rf", "a..b", "a-", " a", "a b", "é",
            "--root=/", "a\nb",
        ] {
            let err = validate("container id", id).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{id:?}");
            assert!(err.to_string().starts_with("invalid container id"), "{err}");
        }
        assert!(validate("id", &"a".repeat(1000)).is_err());
    }

    #[test]
    fn error_escapes_control_characters() {
        let err = validate("exec id", "a\0b").unwrap_err().to_string();
        assert!(err.contains("a\\u{0}b"), "{err}");
    }
}
