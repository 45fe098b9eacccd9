//! How log lines are written: tracing-subscriber's own text and JSON formats, except for the
//! access log (target `access`), whose lines carry every field they declare, present or not.
//!
//! tracing leaves a field without a value out of the line, so an access line would lose keys
//! from one request to the next (no `upstream` for a 404, no `tls_version` on :80) and a
//! reader could not tell "absent" from "not logged by this version". Here every declared
//! field is written in declaration order: a missing value is `null` in JSON and `-` in text
//! (HAProxy's and nginx's convention). The line is formatted straight into the writer
//! tracing-subscriber hands us (its per-thread buffer): no allocation per line.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::access_log::TARGET;

/// An event formatter: access lines written here, every other event by `inner`.
pub struct Lines<F> {
    inner: F,
    json: bool,
}

impl Lines<Format<Full, SystemTime>> {
    /// tracing-subscriber's default text format, with `-` for a missing access-log value.
    pub fn text() -> Self {
        Lines {
            inner: default_format(),
            json: false,
        }
    }
}

impl Lines<Format<Json, SystemTime>> {
    /// tracing-subscriber's JSON format with the event's fields at the top level, with `null`
    /// for a missing access-log value. Use with `JsonFields`.
    pub fn json() -> Self {
        Lines {
            inner: default_format().json().flatten_event(true),
            json: true,
        }
    }
}

/// tracing-subscriber's default format (what `fmt()` uses when given none).
fn default_format() -> Format<Full, SystemTime> {
    Format::default()
}

impl<S, N, F> FormatEvent<S, N> for Lines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != TARGET {
            return self.inner.format_event(ctx, writer, event);
        }
        let level = event.metadata().level();
        if self.json {
            writer.write_str("{\"timestamp\":\"")?;
            SystemTime.format_time(&mut writer)?;
            write!(writer, "\",\"level\":\"{level}\",\"target\":\"{TARGET}\"")?;
        } else {
            SystemTime.format_time(&mut writer)?;
            write!(writer, " {level:>5} {TARGET}:")?;
        }
        let mut line = AccessLine {
            out: &mut writer,
            json: self.json,
            pending: event.metadata().fields().iter(),
            result: Ok(()),
        };
        event.record(&mut line);
        line.finish();
        line.result?;
        writer.write_str(if self.json { "}\n" } else { "\n" })
    }
}

/// Writes an access event's fields as they are visited (declaration order), filling the gaps
/// left by fields without a value.
struct AccessLine<'w, 'a> {
    out: &'w mut Writer<'a>,
    json: bool,
    /// Declared fields not written yet.
    pending: tracing::field::Iter,
    result: fmt::Result,
}

impl AccessLine<'_, '_> {
    /// Writes `field`'s key, after a `null`/`-` for every declared field skipped before it.
    fn key(&mut self, field: &Field) -> fmt::Result {
        while let Some(next) = self.pending.next() {
            if next == *field {
                return self.write_key(field.name());
            }
            self.write_key(next.name())?;
            self.missing()?;
        }
        // Not declared (cannot happen for a macro-built event): written anyway.
        self.write_key(field.name())
    }

    fn write_key(&mut self, name: &str) -> fmt::Result {
        if self.json {
            // Field names are Rust identifiers: nothing to escape.
            write!(self.out, ",\"{name}\":")
        } else {
            write!(self.out, " {name}=")
        }
    }

    fn missing(&mut self) -> fmt::Result {
        self.out.write_str(if self.json { "null" } else { "-" })
    }

    /// `null`/`-` for the declared fields after the last one with a value.
    fn finish(&mut self) {
        while self.result.is_ok()
            && let Some(next) = self.pending.next()
        {
            self.result = self.write_key(next.name()).and_then(|()| self.missing());
        }
    }

    /// Runs `write` after the key, once no earlier write failed.
    fn field(&mut self, field: &Field, write: impl FnOnce(&mut Self) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| write(self));
        }
    }
}

impl Visit for AccessLine<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |l| {
            if l.json {
                l.out.write_char('"')?;
                JsonEscaped(&mut *l.out).write_str(value)?;
                l.out.write_char('"')
            } else {
                write!(l.out, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |l| write!(l.out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |l| write!(l.out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |l| write!(l.out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |l| {
            if value.is_finite() {
                write!(l.out, "{value:?}")
            } else {
                l.missing()
            }
        });
    }

    /// `%value` fields (addresses, names) arrive here: a string in JSON, bare in text.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |l| {
            if l.json {
                l.out.write_char('"')?;
                write!(JsonEscaped(&mut *l.out), "{value:?}")?;
                l.out.write_char('"')
            } else {
                write!(l.out, "{value:?}")
            }
        });
    }
}

/// Writes through to `0`, escaped for the inside of a JSON string.
struct JsonEscaped<W>(W);

impl<W: fmt::Write> fmt::Write for JsonEscaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or(' ');
            match c {
                '"' => self.0.write_str("\\\"")?,
                '\\' => self.0.write_str("\\\\")?,
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{:04x}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        JsonEscaped(&mut out).write_str(s).unwrap();
        out
    }

    #[test]
    fn json_escaping_covers_quotes_backslashes_and_controls() {
        assert_eq!(escaped("plain/é"), "plain/é");
        assert_eq!(escaped("a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(escaped("x\ny\u{1}"), "x\\ny\\u0001");
        let json = format!("\"{}\"", escaped("Mozilla \"5\"\t\\ ok\u{7f}"));
        let back: String = serde_json::from_str(&json).unwrap();
        assert_eq!(back, "Mozilla \"5\"\t\\ ok\u{7f}");
    }
}
