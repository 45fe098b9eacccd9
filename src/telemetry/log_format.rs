//! How log lines are written: tracing-subscriber's own text and JSON formats, except for the
//! access log (target `access`), whose lines carry every field they declare, present or not.
//!
//! tracing leaves a field without a value out of the line, so an access line would lose keys
//! from one request to the next (no `upstream` for a 404, no `tls_version` on :80) and a
//! reader could not tell "absent" from "not logged by this version". Here every declared
//! field is written in declaration order: a missing value is `null` in JSON and `-` in text
//! (HAProxy's and nginx's convention). The line is formatted straight into the writer
//! tracing-subscriber hands us (its per-thread buffer): no allocation per line.
//!
//! An access line is written per request, so its formatting is on the request path: keys,
//! integers, plain strings and millisecond timers are written with `write_str` rather than
//! through `core::fmt`'s argument machinery (which costs several times more instructions per
//! field, measured with `bench/callgrind.py`); anything unusual (a string to escape, a float
//! that is not a whole number of microseconds) takes the general `fmt` path, so the output is
//! the same either way.

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
        // The line is put together in a per-thread `String` (inlined appends) and handed to
        // `writer` in one piece: through `writer`, each of a line's ~100 small writes is a
        // dynamic call.
        LINE.with(|buf| match buf.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.access_line(&mut line, event)?;
                let written = writer.write_str(&line);
                // A line with a huge header value does not pin its size on the thread.
                if line.capacity() > MAX_KEPT_LINE {
                    *line = String::new();
                }
                written
            }
            // Only if formatting a line logged another (it does not): a buffer of its own.
            Err(_) => {
                let mut line = String::new();
                self.access_line(&mut line, event)?;
                writer.write_str(&line)
            }
        })
    }
}

thread_local! {
    /// The buffer access lines are formatted in, one per thread.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The largest line buffer kept for the next line.
const MAX_KEPT_LINE: usize = 16 * 1024;

impl<F> Lines<F> {
    /// Formats an access event into `out`: the prefix tracing-subscriber's format would
    /// write, then every declared field.
    fn access_line(&self, out: &mut String, event: &Event<'_>) -> fmt::Result {
        let level = event.metadata().level().as_str();
        if self.json {
            out.push_str("{\"timestamp\":\"");
            write_timestamp(out)?;
            out.push_str("\",\"level\":\"");
            out.push_str(level);
            out.push_str("\",\"target\":\"");
            out.push_str(TARGET);
            out.push('"');
        } else {
            write_timestamp(out)?;
            // ` {level:>5} {TARGET}:`
            out.push(' ');
            for _ in level.len()..5 {
                out.push(' ');
            }
            out.push_str(level);
            out.push(' ');
            out.push_str(TARGET);
            out.push(':');
        }
        let mut line = AccessLine {
            out,
            json: self.json,
            pending: event.metadata().fields().iter(),
            result: Ok(()),
        };
        event.record(&mut line);
        line.finish();
        line.result?;
        out.push_str(if self.json { "}\n" } else { "\n" });
        Ok(())
    }
}

/// Writes an access event's fields as they are visited (declaration order), filling the gaps
/// left by fields without a value.
struct AccessLine<'w> {
    out: &'w mut String,
    json: bool,
    /// Declared fields not written yet.
    pending: tracing::field::Iter,
    result: fmt::Result,
}

impl AccessLine<'_> {
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
        // Field names are Rust identifiers: nothing to escape.
        let (before, after) = if self.json {
            (",\"", "\":")
        } else {
            (" ", "=")
        };
        self.out.push_str(before);
        self.out.push_str(name);
        self.out.push_str(after);
        Ok(())
    }

    fn missing(&mut self) -> fmt::Result {
        self.out.push_str(if self.json { "null" } else { "-" });
        Ok(())
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

impl Visit for AccessLine<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |l| {
            if l.json {
                l.out.write_char('"')?;
                JsonEscaped(&mut *l.out).write_str(value)?;
                l.out.write_char('"')
            } else if debug_verbatim(value) {
                // What `{value:?}` writes, without its per-character escaping.
                l.out.push('"');
                l.out.push_str(value);
                l.out.push('"');
                Ok(())
            } else {
                write!(l.out, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |l| write_u64(&mut *l.out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |l| {
            if value < 0 {
                l.out.write_char('-')?;
            }
            write_u64(&mut *l.out, value.unsigned_abs())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |l| write!(l.out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |l| {
            if let Some(micros) = whole_thousandths(value) {
                write_thousandths(&mut *l.out, micros)
            } else if value.is_finite() {
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

/// The time as tracing-subscriber's `SystemTime` writes it (RFC 3339, UTC, microseconds:
/// `2026-12-05T04:31:10.123456Z`), in one `write_str`.
fn write_timestamp(out: &mut String) -> fmt::Result {
    let now = std::time::SystemTime::now();
    match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) if since.as_secs() < YEAR_10000 => {
            let mut text = [0u8; 27];
            rfc3339_micros(since, &mut text);
            // Only ASCII was written.
            out.push_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?);
            Ok(())
        }
        // A clock before 1970 or after 9999: tracing-subscriber's own spelling.
        _ => SystemTime.format_time(&mut Writer::new(out)),
    }
}

/// 10000-01-01T00:00:00Z in seconds since the epoch.
const YEAR_10000: u64 = 253_402_300_800;

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for a time since the epoch before the year 10000.
fn rfc3339_micros(since_epoch: std::time::Duration, out: &mut [u8; 27]) {
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_date(secs / 86_400);
    let of_day = secs % 86_400;
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    put(20, 6, u64::from(since_epoch.subsec_micros()));
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        out[at] = sep;
    }
    out[26] = b'Z';
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01 (the
/// era-based conversion of Howard Hinnant's `civil_from_days`, for days after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Shifted to start on 0000-03-01, so the leap day is the last of its 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Whether `{s:?}` is `s` between quotes: printable ASCII without `"` or `\\`.
fn debug_verbatim(s: &str) -> bool {
    s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

/// `{value}` for a `u64`.
fn write_u64(out: &mut impl fmt::Write, mut value: u64) -> fmt::Result {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.write_str(std::str::from_utf8(&digits[at..]).map_err(|_| fmt::Error)?)
}

/// `Some(n)` when `value` is exactly `n as f64 / 1000.0` for a whole `n` small enough that
/// `{value:?}` spells it as a plain decimal (how [`super::access_log`] rounds its timers to
/// the microsecond).
fn whole_thousandths(value: f64) -> Option<u64> {
    // `-0.0` is in the range but `{:?}` writes its sign.
    if !(0.0..1e9).contains(&value) || value.is_sign_negative() {
        return None;
    }
    let n = (value * 1000.0).round();
    (n / 1000.0 == value).then_some(n as u64)
}

/// What `{:?}` writes for `n as f64 / 1000.0` (for the `n` [`whole_thousandths`] returns):
/// the shortest decimal that reads back as that float is `n / 1000` itself, trailing zeros
/// dropped but at least one digit after the point (`1.0`, `0.25`, `12.345`).
fn write_thousandths(out: &mut impl fmt::Write, n: u64) -> fmt::Result {
    write_u64(out, n / 1000)?;
    out.write_char('.')?;
    let mut frac = n % 1000;
    let mut width = 3;
    while width > 1 && frac.is_multiple_of(10) {
        frac /= 10;
        width -= 1;
    }
    for place in (0..width).rev() {
        let digit = (frac / 10u64.pow(place)) % 10;
        out.write_char(char::from(b'0' + digit as u8))?;
    }
    Ok(())
}

/// Writes through to `0`, escaped for the inside of a JSON string.
struct JsonEscaped<W>(W);

impl<W: fmt::Write> fmt::Write for JsonEscaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        // The characters to escape are ASCII, and no byte of a multi-byte UTF-8 character is
        // ASCII: a byte search finds the same places as a `char` search, faster.
        while let Some(at) = rest
            .bytes()
            .position(|b| b == b'"' || b == b'\\' || b < b' ')
        {
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

    /// A small deterministic generator (the test must not depend on a seed it cannot show).
    fn numbers() -> impl Iterator<Item = u64> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..20_000).map(move |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        // Checked against Python's `datetime.fromtimestamp(t, timezone.utc)`.
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 7, "2000-02-29T00:00:00.000007Z"),
            (1_234_567_890, 123_456, "2009-02-13T23:31:30.123456Z"),
            (1_709_164_800, 500_000, "2024-02-29T00:00:00.500000Z"),
            (1_767_225_599, 999_999, "2025-12-31T23:59:59.999999Z"),
            (4_102_444_800, 1, "2100-01-01T00:00:00.000001Z"),
            (YEAR_10000 - 1, 0, "9999-12-31T23:59:59.000000Z"),
        ];
        for (secs, micros, expected) in cases {
            let mut out = [0u8; 27];
            rfc3339_micros(
                std::time::Duration::new(secs, micros * 1000 + 999),
                &mut out,
            );
            assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
        }
        // Every day of four centuries: the date advances by one day, months and leap years
        // as the Gregorian calendar has them.
        let (mut y, mut m, mut d) = (1970, 1, 1);
        for days in 0..146_097 {
            assert_eq!(civil_date(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_days = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_days {
                (m, d) = (m + 1, 1);
                if m > 12 {
                    (y, m) = (y + 1, 1);
                }
            }
        }
    }

    #[test]
    fn timestamps_match_tracing_subscribers_spelling() {
        // Two clock reads: equal up to the second unless a second boundary fell between them,
        // which three tries in a row cannot all hit.
        let agree = (0..3).any(|_| {
            let (mut ours, mut theirs) = (String::new(), String::new());
            write_timestamp(&mut ours).unwrap();
            SystemTime
                .format_time(&mut Writer::new(&mut theirs))
                .unwrap();
            ours.len() == theirs.len() && ours[..19] == theirs[..19] && ours.ends_with('Z')
        });
        assert!(agree);
    }

    #[test]
    fn integers_are_written_as_display_writes_them() {
        let edge = [0, 1, 9, 10, 99, 100, 1_000_000, u64::MAX - 1, u64::MAX];
        for n in edge
            .into_iter()
            .chain(numbers())
            .chain(numbers().map(|n| n % 100_000))
        {
            let mut out = String::new();
            write_u64(&mut out, n).unwrap();
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn millisecond_timers_are_written_as_debug_writes_them() {
        let whole = (0..20_000u64).chain(numbers().map(|n| n % 1_000_000_000_000));
        for n in whole {
            let value = n as f64 / 1000.0;
            let Some(m) = whole_thousandths(value) else {
                panic!("{value:?} is a whole number of thousandths");
            };
            let mut out = String::new();
            write_thousandths(&mut out, m).unwrap();
            assert_eq!(out, format!("{value:?}"), "n = {n}");
        }
        // What the fast path must leave to `{:?}`.
        for value in [
            -0.0,
            -1.0,
            0.0001,
            1.0 / 3.0,
            1e9,
            1e17,
            f64::NAN,
            f64::INFINITY,
        ] {
            assert_eq!(whole_thousandths(value), None, "{value:?}");
        }
    }

    #[test]
    fn verbatim_strings_are_exactly_those_debug_leaves_alone() {
        let samples = [
            "",
            "GET",
            "/a/b?c=d",
            "curl/8.5.0",
            "Mozilla/5.0 (X11; Linux)",
            "it's",
            "a\"b",
            "a\\b",
            "tab\there",
            "new\nline",
            "\u{7f}",
            "é",
            "\u{1}",
            "~ !",
        ];
        for s in samples {
            // The fast path may leave a string to `{:?}` (`é`), never take one it would change.
            if debug_verbatim(s) {
                assert_eq!(format!("\"{s}\""), format!("{s:?}"));
            }
        }
        // The usual fields take it.
        for s in &samples[..6] {
            assert!(debug_verbatim(s), "{s:?}");
        }
        for s in ["a\"b", "a\\b", "tab\there", "\u{7f}", "\u{1}"] {
            assert!(!debug_verbatim(s), "{s:?}");
        }
    }
}
