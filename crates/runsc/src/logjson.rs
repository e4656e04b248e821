//! Recovers runsc's own error message from its JSON `--log` file.
//!
//! runsc's reason for failing is what it writes to `--log` as `"level":"error"` objects (in
//! JSON whatever `--log-format` says). Only lines written by the current invocation
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

/// The error messages written after byte `from`, joined.
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
    log_errors(&String::from_utf8_lossy(&buf))
}

/// `msg` without the Go stack trace runsc appends to some errors (a panic recovered inside the
/// sandbox, e.g. while decoding a checkpoint image: "...: \ngoroutine 13 [running]:\n...").
fn without_stack_trace(msg: &str) -> &str {
    let msg = msg.trim();
    match msg.find("\ngoroutine ") {
        Some(at) => msg[..at].trim_end().trim_end_matches(':').trim_end(),
        None => msg,
    }
}

/// runsc's error messages in the text of its `--log` file, joined with `; `.
///
/// runsc writes its JSON log objects back to back, often with no newline between them, and
/// one failure can produce several (gofer, sandbox, then the CLI's generic summary), the
/// most useful first. All distinct error messages are kept, in order.
pub fn log_errors(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        level: String,
        #[serde(default)]
        msg: String,
    }
    let mut msgs: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        rest = &rest[start..];
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Entry>();
        match stream.next() {
            Some(Ok(e)) => {
                let msg = without_stack_trace(&e.msg);
                if (e.level == "error" || e.level == "fatal")
                    && !msg.is_empty()
                    && !msgs.iter().any(|m| m == msg)
                {
                    msgs.push(msg.to_owned());
                }
                rest = &rest[stream.byte_offset()..];
            }
            // Not an object here: skip this brace and look for the next one.
            _ => rest = &rest[1..],
        }
    }
    if msgs.is_empty() {
        None
    } else {
        Some(msgs.join("; "))
    }
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
        assert_eq!(
            log_errors(text).as_deref(),
            Some("first; creating container: cannot find /bin/x")
        );
        assert_eq!(log_errors("{\"level\":\"info\",\"msg\":\"x\"}\n"), None);
    }

    /// As runsc 20221219 writes a bad rootfs: three objects, no newlines, the first is the
    /// useful one.
    #[test]
    fn concatenated_objects() {
        let text = concat!(
            r#"{"msg":"Error setting up root FS: mounting root on root (\"/proc/root\") err: no such file or directory","level":"error","time":"t"}"#,
            r#"{"msg":"Error reading mounts file: unexpected end of JSON input\nJSON bytes:\n","level":"error","time":"t"}"#,
            r#"{"msg":"creating container: cannot create sandbox: EOF","level":"error","time":"t"}"#,
        );
        let msg = log_errors(text).unwrap();
        assert!(
            msg.starts_with("Error setting up root FS: mounting root on root"),
            "{msg}"
        );
        assert!(
            msg.ends_with("creating container: cannot create sandbox: EOF"),
            "{msg}"
        );
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

    #[test]
    fn go_stack_traces_are_cut() {
        let trace = "restoring container \"c\": error decoding object ID 1 (cpuid.FeatureSet): \
                     different fields:\ngoroutine 13 [running]:\ngvisor.dev/gvisor/pkg/state.safely.func1()\n\t\
                     gvisor.dev/gvisor/pkg/state/state.go:308 +0x17d\n";
        let text = format!(
            "{}{}",
            serde_json::json!({"msg": trace, "level": "error"}),
            serde_json::json!({"msg": format!("{trace}:\ngoroutine 13 [running]:\n"), "level": "error"})
        );
        assert_eq!(
            log_errors(&text).unwrap(),
            "restoring container \"c\": error decoding object ID 1 (cpuid.FeatureSet): different fields"
        );
    }
}
