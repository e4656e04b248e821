//! Shim logs in containerd's format, to the bundle's `log` FIFO.
//!
//! containerd reads `<bundle>/log` and copies it into its own log, so lines are logrus'
//! logfmt (`time="..." level=info msg="..." key=value`), like every other line there. Writing
//! never blocks the shim: when containerd is not reading (restarting), lines that do not fit
//! are dropped. The level comes from `-debug` and can be changed by `log_level`; `log_path`
//! adds a file.
//!
//! The layer is ours rather than `tracing-logfmt`'s: that formatter names its keys `ts` and
//! `message` and has no way to write logrus' `time` and `msg`, which is what containerd's
//! journal and the log parsers pointed at it expect from a shim.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

fn level_num(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// logrus' level names.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Parses a `log_level` value (logrus names).
pub(crate) fn parse_level(s: &str) -> Option<u8> {
    Some(match s.to_ascii_lowercase().as_str() {
        "trace" => 5,
        "debug" => 4,
        "info" => 3,
        "warn" | "warning" => 2,
        "error" | "fatal" | "panic" => 1,
        _ => return None,
    })
}

struct Sink {
    fifo: Option<File>,
    extra: Mutex<Option<File>>,
    level: AtomicU8,
}

impl Sink {
    fn write_line(&self, line: &[u8]) {
        if let Some(mut f) = self.fifo.as_ref() {
            // Non-blocking: EAGAIN (nobody reading) or EPIPE drop the line.
            let _ = f.write_all(line);
        }
        if let Some(f) = self
            .extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            let _ = f.write_all(line);
        }
    }
}

/// Changes logging after start-up.
#[derive(Clone)]
pub(crate) struct LogControl {
    sink: Arc<Sink>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("level", &self.sink.level.load(Ordering::Relaxed))
            .finish()
    }
}

impl LogControl {
    /// Applies a `log_level` value; unknown values are ignored (the config parser rejects
    /// them already).
    pub(crate) fn set_level(&self, level: &str) {
        if let Some(l) = parse_level(level) {
            self.sink.level.store(l, Ordering::Relaxed);
        }
    }

    /// Adds a log file (`log_path`) for this shim process, once: the first task created
    /// names it (for a pod, the pause container, whose id is the pod sandbox id). A trailing
    /// `/` means `<dir>/runsc-shim-<id>.log`; `%ID%` is replaced by that id.
    pub(crate) fn set_file(&self, log_path: &str, id: &str) {
        if self
            .sink
            .extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return;
        }
        let path = if log_path.ends_with('/') {
            format!("{log_path}runsc-shim-{id}.log")
        } else {
            log_path.replace("%ID%", id)
        };
        let path = Path::new(&path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
        {
            Ok(f) => *self.sink.extra.lock().unwrap_or_else(|p| p.into_inner()) = Some(f),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot open log_path"),
        }
    }
}

/// Opens `<cwd>/log` and installs the global subscriber.
pub(crate) fn init(debug: bool) -> LogControl {
    let fifo = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log")
        .or_else(|_| {
            // No reader yet: read-write never fails to open on a FIFO.
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open("log")
        })
        .ok();
    let sink = Arc::new(Sink {
        fifo,
        extra: Mutex::new(None),
        level: AtomicU8::new(if debug { 4 } else { 3 }),
    });
    let layer = LogfmtLayer { sink: sink.clone() };
    let _ = tracing_subscriber::registry().with(layer).try_init();
    LogControl { sink }
}

struct LogfmtLayer {
    sink: Arc<Sink>,
}

/// Span fields, rendered once.
struct SpanFields(String);

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            push_pair(&mut self.rest, field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        self.record_str(field, &v);
    }
}

fn push_pair(out: &mut String, key: &str, value: &str) {
    out.push(' ');
    out.push_str(key);
    out.push('=');
    push_value(out, value);
}

/// logfmt value: bare if safe, else quoted with escapes.
fn push_value(out: &mut String, value: &str) {
    let bare = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if bare {
        out.push_str(value);
    } else {
        push_quoted(out, value);
    }
}

/// A quoted logfmt value (logrus always quotes `msg`).
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl<S> Layer<S> for LogfmtLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // The level can change at run time.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        level_num(metadata.level()) <= self.sink.level.load(Ordering::Relaxed)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(f.rest));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        values.record(&mut f);
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            fields.0.push_str(&f.rest);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let mut line = String::with_capacity(128);
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        line.push_str("time=\"");
        line.push_str(&now);
        line.push('"');
        line.push_str(" level=");
        line.push_str(level_name(event.metadata().level()));
        line.push_str(" msg=");
        push_quoted(&mut line, &f.message);
        line.push_str(&f.rest);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    line.push_str(&fields.0);
                }
            }
        }
        line.push_str(" runtime=io.containerd.runsc.v1\n");
        self.sink.write_line(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let mut s = String::new();
        push_value(&mut s, "plain");
        assert_eq!(s, "plain");
        let mut s = String::new();
        push_value(&mut s, "two words \"quoted\"\nnext");
        assert_eq!(s, r#""two words \"quoted\"\nnext""#);
        let mut s = String::new();
        push_value(&mut s, "");
        assert_eq!(s, r#""""#);
        let mut s = String::new();
        push_value(&mut s, "a=b");
        assert_eq!(s, r#""a=b""#);
    }

    /// Parses one logfmt line into (key, value) pairs, undoing the escapes; `None` if the
    /// line is not well-formed (an unterminated quote, a stray escape).
    fn parse_logfmt(line: &str) -> Option<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            if chars.peek().is_none() {
                return Some(pairs);
            }
            let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
            chars.next_if_eq(&'=')?;
            let mut value = String::new();
            if chars.next_if_eq(&'"').is_some() {
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            'n' => value.push('\n'),
                            'r' => value.push('\r'),
                            't' => value.push('\t'),
                            '"' => value.push('"'),
                            '\\' => value.push('\\'),
                            'u' => {
                                let hex: String = (0..4).filter_map(|_| chars.next()).collect();
                                value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                            }
                            _ => return None,
                        },
                        c => value.push(c),
                    }
                }
                if chars.peek().is_some_and(|c| *c != ' ') {
                    return None;
                }
            } else {
                value = std::iter::from_fn(|| chars.next_if(|c| *c != ' ')).collect();
            }
            pairs.push((key, value));
        }
    }

    /// Every event renders as one well-formed line whose `msg` and fields read back exactly,
    /// whatever they hold (issue 12: a value ending in `"` was left unterminated).
    #[test]
    fn lines_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim.log");
        let sink = Arc::new(Sink {
            fifo: None,
            extra: Mutex::new(Some(File::create(&path).unwrap())),
            level: AtomicU8::new(5),
        });
        let subscriber = tracing_subscriber::registry().with(LogfmtLayer { sink });
        let mut rng = fuzzkit::Rng::new(7);
        let mut cases: Vec<String> = [
            "say \"hi\"",
            "ends with a quote\"",
            "\"",
            "back\\slash\\",
            "",
            "multi\nline\ttab\r",
            "ctl \u{1}\u{7f}",
            "a=b c",
            "ünïcödé",
        ]
        .map(String::from)
        .to_vec();
        for _ in 0..200 {
            let len = rng.below(12);
            let s: String = (0..len)
                .map(|_| *b"ab \"\\=\n\t\x01\x7fz".get(rng.below(12)).unwrap_or(&b'x') as char)
                .collect();
            cases.push(s);
        }
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc", id = "c\"1");
            let _g = span.enter();
            for c in &cases {
                tracing::info!(detail = %c, "{c}");
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), cases.len());
        for (line, case) in lines.iter().zip(&cases) {
            let pairs = parse_logfmt(line).unwrap_or_else(|| panic!("malformed: {line}"));
            let get = |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            assert_eq!(get("msg").as_deref(), Some(case.as_str()), "{line}");
            assert_eq!(get("detail").as_deref(), Some(case.as_str()), "{line}");
            assert_eq!(get("id").as_deref(), Some("c\"1"), "{line}");
            assert_eq!(get("level").as_deref(), Some("info"), "{line}");
            assert!(line.starts_with("time=\""), "{line}");
        }
    }

    #[test]
    fn log_file_is_set_once_per_shim() {
        let dir = tempfile::tempdir().unwrap();
        let control = LogControl {
            sink: Arc::new(Sink {
                fifo: None,
                extra: Mutex::new(None),
                level: AtomicU8::new(3),
            }),
        };
        let d = format!("{}/", dir.path().display());
        control.set_file(&d, "pod");
        control.set_file(&d, "app");
        assert!(dir.path().join("runsc-shim-pod.log").exists());
        assert!(!dir.path().join("runsc-shim-app.log").exists());
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("debug"), Some(4));
        assert_eq!(parse_level("Warning"), Some(2));
        assert_eq!(parse_level("loud"), None);
    }
}
