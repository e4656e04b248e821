//! Shim logs in containerd's format, to the bundle's `log` FIFO.
//!
//! containerd reads `<bundle>/log` and copies it into its own log, so lines are logrus'
//! logfmt (`time="..." level=info msg="..." key=value`). Writing never blocks the shim: when
//! containerd is not reading (restarting), lines that do not fit are dropped. The level comes
//! from `-debug` and can be changed by `log_level`; `log_path` adds a file.

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

    /// Adds a log file (`log_path`): a trailing `/` means `<dir>/runsc-shim-<id>.log`;
    /// `%ID%` is replaced by the task id.
    pub(crate) fn set_file(&self, log_path: &str, id: &str) {
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
        return;
    }
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
        line.push_str(" msg=\"");
        // Always quoted, like logrus.
        let mut msg = String::new();
        push_value(&mut msg, &f.message);
        line.push_str(msg.trim_matches('"'));
        line.push('"');
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

    #[test]
    fn levels() {
        assert_eq!(parse_level("debug"), Some(4));
        assert_eq!(parse_level("Warning"), Some(2));
        assert_eq!(parse_level("loud"), None);
    }
}
