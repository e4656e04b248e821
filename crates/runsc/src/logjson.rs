//! Recovers runsc's own error message from its JSON `--log` file.
//!
//! runsc prints little to stderr; its reason for failing is the last `"level":"error"` line it
//! writes to `--log` (with `--log-format=json`). Only lines written by the current invocation
//! are considered: the caller remembers the file length before running runsc.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// At most this much of the log tail is read.
const MAX_TAIL: u64 = 256 * 1024;

/// Current length of the log file (0 if it does not exist yet).
pub(crate) fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The message of the last error line written after byte `from`.
pub(crate) fn last_error(path: &Path, from: u64) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    if len <= from {
        return None;
    }
    let start = from.max(len.saturating_sub(MAX_TAIL));
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    file.take(MAX_TAIL).read_to_end(&mut buf).ok()?;
    last_error_in(&String::from_utf8_lossy(&buf))
}

fn last_error_in(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Line {
        #[serde(default)]
        level: String,
        #[serde(default)]
        msg: String,
    }
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Line>(line).ok())
        .find(|l| l.level == "error" || l.level == "fatal")
        .map(|l| l.msg.trim().to_owned())
        .filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn picks_last_error_line() {
        let text = concat!(
            r#"{"level":"info","msg":"starting","time":"t"}"#,
            "\n",
            r#"{"level":"error","msg":"first","time":"t"}"#,
            "\n",
            "not json\n",
            r#"{"level":"error","msg":"creating container: cannot find /bin/x","time":"t"}"#,
            "\n",
            r#"{"level":"warning","msg":"later warning","time":"t"}"#,
            "\n",
        );
        assert_eq!(last_error_in(text).as_deref(), Some("creating container: cannot find /bin/x"));
        assert_eq!(last_error_in("{\"level\":\"info\",\"msg\":\"x\"}\n"), None);
    }

    #[test]
    fn only_reads_lines_after_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let mut f = File::create(&path).unwrap();
        writeln!(f, r#"{{"level":"error","msg":"old failure"}}"#).unwrap();
        let mark = log_len(&path);
        assert_eq!(last_error(&path, mark), None);
        writeln!(f, r#"{{"level":"error","msg":"new failure"}}"#).unwrap();
        assert_eq!(last_error(&path, mark).as_deref(), Some("new failure"));
        assert_eq!(last_error(&dir.path().join("missing"), 0), None);
    }
}
