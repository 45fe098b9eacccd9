//! How access lines are spelled, in text and JSON: every declared field in a fixed order, a
//! missing value `null` in JSON and `-` in text (HAProxy's and nginx's convention), so a
//! reader can tell "absent" from "not logged by this version".
//!
//! The two spellings follow tracing-subscriber's own formats, so access lines sit beside the
//! other log lines in one stream: text is `TIMESTAMP  INFO access: key=value ...` with strings
//! quoted as `{:?}` quotes them and addresses and names bare; JSON is one flat object,
//! `{"timestamp":…,"level":"INFO","target":"access","key":value,…}`.
//!
//! An access line is written per request, so its formatting is on the request path. It does
//! not go through tracing's event machinery (a dynamic visitor call and a field-set walk per
//! field cost more than the line itself): [`AccessLine`] appends straight to the buffer the
//! line will be written from ([`super::log_sink`]), and keys, integers, plain strings,
//! addresses and millisecond timers are written with `push_str` rather than through
//! `core::fmt`'s argument machinery (several times more instructions per field, measured with
//! `bench/callgrind.py`); anything unusual (a string to escape, an IPv6 address) takes the
//! general `fmt` path, so the output is the same either way.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

/// How log lines are spelled (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessFormat {
    #[default]
    Text,
    Json,
}

/// A field's name as each spelling writes it before the value (`,"name":` and ` name=`),
/// before a quoted value (with the opening quote), and with a missing value (`,"name":null`
/// and ` name=-`), made at compile time by [`key!`](crate::telemetry::log_format::key) so
/// a field's key costs one append, and a missing field one in all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub(crate) json: &'static str,
    pub(crate) text: &'static str,
    pub(crate) json_quoted: &'static str,
    pub(crate) text_quoted: &'static str,
    pub(crate) json_missing: &'static str,
    pub(crate) text_missing: &'static str,
}

/// The [`Key`] of a field name (a Rust identifier: nothing to escape).
macro_rules! key {
    ($name:literal) => {
        $crate::telemetry::log_format::Key {
            json: concat!(",\"", $name, "\":"),
            text: concat!(" ", $name, "="),
            json_quoted: concat!(",\"", $name, "\":\""),
            text_quoted: concat!(" ", $name, "=\""),
            json_missing: concat!(",\"", $name, "\":null"),
            text_missing: concat!(" ", $name, "=-"),
        }
    };
}
pub(crate) use key;

/// What follows a line's timestamp up to its first field, in each spelling: the level, the
/// target and the line's `kind` field, made at compile time by
/// [`prefix!`](crate::telemetry::log_format::prefix) so they cost one append.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prefix {
    pub(crate) json: &'static str,
    pub(crate) text: &'static str,
}

/// The [`Prefix`] of an INFO line of `target` whose `kind` field is `kind`.
macro_rules! prefix {
    ($target:literal, $kind:literal) => {
        $crate::telemetry::log_format::Prefix {
            json: concat!(
                "\",\"level\":\"INFO\",\"target\":\"",
                $target,
                "\",\"kind\":\"",
                $kind,
                "\""
            ),
            text: concat!("  INFO ", $target, ": kind=\"", $kind, "\""),
        }
    };
}
pub(crate) use prefix;

/// One access line being written: [`AccessLine::start`], a call per field in declaration
/// order, [`AccessLine::end`]. `JSON` picks the spelling ([`AccessFormat::Json`], else text)
/// at compile time: a line's writer is compiled once per spelling ([`AccessFormat::pick`]),
/// so each key is one constant string, and the small appends are inlined into it as stores of
/// a known length instead of a `memcpy` call each (and no [`Key`] is built at run time).
pub(crate) struct AccessLine<'a, const JSON: bool> {
    out: &'a mut String,
}

impl AccessFormat {
    /// `json(out)` for JSON, else `text(out)`: the two compilations of one line's writer (see
    /// [`AccessLine`]).
    pub(crate) fn pick<T>(
        self,
        out: &mut String,
        json: impl FnOnce(&mut String) -> T,
        text: impl FnOnce(&mut String) -> T,
    ) -> T {
        match self {
            AccessFormat::Json => json(out),
            AccessFormat::Text => text(out),
        }
    }
}

impl<'a, const JSON: bool> AccessLine<'a, JSON> {
    /// The prefix tracing-subscriber's format would write for an INFO event (`prefix`'s
    /// target), and the line's `kind` field.
    pub(crate) fn start(out: &'a mut String, prefix: Prefix) -> Self {
        // A line is ~300-600 bytes: grown once here rather than by the appends.
        out.reserve(LINE_RESERVE);
        if JSON {
            out.push_str("{\"timestamp\":\"");
            write_timestamp(out);
            out.push_str(prefix.json);
        } else {
            write_timestamp(out);
            out.push_str(prefix.text);
        }
        AccessLine { out }
    }

    /// Ends the line (with its newline).
    #[inline(always)]
    pub(crate) fn end(self) {
        self.out.push_str(if JSON { "}\n" } else { "\n" });
    }

    #[inline(always)]
    fn key(&mut self, key: Key) {
        self.out.push_str(if JSON { key.json } else { key.text });
    }

    /// The key and the value's opening quote.
    #[inline(always)]
    fn key_quoted(&mut self, key: Key) {
        self.out.push_str(if JSON {
            key.json_quoted
        } else {
            key.text_quoted
        });
    }

    /// The key with a missing value: `null` in JSON, `-` in text.
    #[inline(always)]
    fn missing(&mut self, key: Key) {
        self.out.push_str(if JSON {
            key.json_missing
        } else {
            key.text_missing
        });
    }

    /// A label of ours (`http`, `TLSv1.3`, an error's name): quoted in both formats, and
    /// known to need no escaping in either, so not scanned for it.
    #[inline(always)]
    pub(crate) fn label(&mut self, key: Key, value: Option<&'static str>) {
        let Some(value) = value else {
            return self.missing(key);
        };
        debug_assert!(debug_verbatim(value), "{value:?} needs escaping");
        self.key_quoted(key);
        self.out.push_str(value);
        self.out.push('"');
    }

    /// An HTTP token (RFC 9110 §5.6.2: a method, a request ID made here): quoted in both
    /// formats; its characters (letters, digits and ``!#$%&'*+-.^_`|~``) need no escaping in
    /// either, so it is not scanned for it.
    #[inline(always)]
    pub(crate) fn token(&mut self, key: Key, value: &str) {
        debug_assert!(debug_verbatim(value), "{value:?} needs escaping");
        self.key_quoted(key);
        self.out.push_str(value);
        self.out.push('"');
    }

    /// A string: quoted (and escaped) in both formats.
    #[inline(always)]
    pub(crate) fn str(&mut self, key: Key, value: Option<&str>) {
        let Some(value) = value else {
            return self.missing(key);
        };
        if JSON {
            self.key_quoted(key);
            // Writing to a `String` cannot fail.
            let _ = JsonEscaped(&mut *self.out).write_str(value);
            self.out.push('"');
        } else if debug_verbatim(value) {
            // What `{value:?}` writes, without its per-character escaping.
            self.key_quoted(key);
            self.out.push_str(value);
            self.out.push('"');
        } else {
            self.key(key);
            let _ = write!(self.out, "{value:?}");
        }
    }

    /// A name made of `parts` (`namespace`, `/`, `name`...): a string in JSON, bare in text.
    #[inline(always)]
    pub(crate) fn name(&mut self, key: Key, parts: Option<&[&str]>) {
        let Some(parts) = parts else {
            return self.missing(key);
        };
        self.key(key);
        if JSON {
            self.out.push('"');
            for part in parts {
                let _ = JsonEscaped(&mut *self.out).write_str(part);
            }
            self.out.push('"');
        } else {
            for part in parts {
                self.out.push_str(part);
            }
        }
    }

    /// A socket address, as `Display` writes it: a string in JSON, bare in text. IPv4 without
    /// `core::fmt`.
    #[inline(always)]
    pub(crate) fn addr(&mut self, key: Key, value: Option<SocketAddr>) {
        let Some(addr) = value else {
            return self.missing(key);
        };
        self.addr_key(key);
        write_addr_remembered(self.out, addr);
        if JSON {
            self.out.push('"');
        }
    }

    /// A socket address already spelled by [`write_addr`] (a client connection's, spelled once
    /// for all its requests): written as [`AccessLine::addr`] writes it.
    #[inline(always)]
    pub(crate) fn addr_spelled(&mut self, key: Key, spelled: &str) {
        debug_assert!(debug_verbatim(spelled), "{spelled:?} needs escaping");
        self.addr_key(key);
        self.out.push_str(spelled);
        if JSON {
            self.out.push('"');
        }
    }

    /// An address's key: with the opening quote of a JSON string.
    #[inline(always)]
    fn addr_key(&mut self, key: Key) {
        if JSON {
            self.key_quoted(key);
        } else {
            self.key(key);
        }
    }

    #[inline(always)]
    pub(crate) fn u64(&mut self, key: Key, value: Option<u64>) {
        match value {
            Some(value) => {
                self.key(key);
                write_u64(&mut *self.out, value);
            }
            None => self.missing(key),
        }
    }

    /// A duration in milliseconds, to the microsecond (`12.5`, `0.042`, `3.0`).
    #[inline(always)]
    pub(crate) fn millis(&mut self, key: Key, value: Option<Duration>) {
        let Some(value) = value else {
            return self.missing(key);
        };
        self.key(key);
        // Rounded to the nearest microsecond (in u64: `as_nanos` is a u128, whose division
        // is a library call).
        write_thousandths(
            &mut *self.out,
            value
                .as_secs()
                .saturating_mul(1_000_000)
                .saturating_add(u64::from((value.subsec_nanos() + 500) / 1000)),
        );
    }
}

/// Appends `addr` as `Display` writes it (IPv4 without `core::fmt`). Nothing in it needs
/// escaping, in JSON or in `Debug`.
pub(crate) fn write_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            let mut digits = Digits::default();
            out.push_str(digits.of(a));
            out.push('.');
            out.push_str(digits.of(b));
            out.push('.');
            out.push_str(digits.of(c));
            out.push('.');
            out.push_str(digits.of(d));
            out.push(':');
            out.push_str(digits.of(v4.port()));
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `addr` as [`write_addr`] spells it, from this thread's memo of the addresses it
/// spelled last when it is there. An upstream address is one of a few pods', the same for many
/// lines in a row; spelling it took ~290 instructions, copying the memo's spelling is a
/// fraction of that. The memo is a small table indexed by a hash of the address: a miss (a
/// new pod, two pods in one slot) spells the address into the slot, as before plus a copy.
fn write_addr_remembered(out: &mut String, addr: SocketAddr) {
    SPELLED_ADDRS.with_borrow_mut(|memo| {
        let (remembered, spelled) = &mut memo[memo_slot(addr)];
        if *remembered != Some(addr) {
            spelled.clear();
            write_addr(spelled, addr);
            *remembered = Some(addr);
        }
        out.push_str(spelled);
    });
}

/// Addresses each thread remembers the spelling of.
const MEMO_SLOTS: usize = 16;

/// The memo slot of `addr`: a multiplicative hash of the address's last four bytes and its
/// port, so pods numbered in a row (10.0.0.7, 10.0.0.8…) and ports spread over the slots.
fn memo_slot(addr: SocketAddr) -> usize {
    let low = match addr.ip() {
        std::net::IpAddr::V4(v4) => u32::from(v4),
        std::net::IpAddr::V6(v6) => {
            let [.., a, b, c, d] = v6.octets();
            u32::from_be_bytes([a, b, c, d])
        }
    };
    let mixed = (low ^ u32::from(addr.port()).rotate_left(16)).wrapping_mul(0x9e37_79b9);
    // The top bits of the product depend on every bit of the key.
    (mixed >> (u32::BITS - MEMO_SLOTS.trailing_zeros())) as usize
}

thread_local! {
    /// [`write_addr_remembered`]'s memo: per slot, the address last spelled there and its
    /// spelling.
    static SPELLED_ADDRS: std::cell::RefCell<[(Option<SocketAddr>, String); MEMO_SLOTS]> =
        const { std::cell::RefCell::new([const { (None, String::new()) }; MEMO_SLOTS]) };
}

/// Bytes reserved for a line before it is written.
const LINE_RESERVE: usize = 640;

/// Room for the decimal digits of an integer, written without `core::fmt` (`itoa`: two
/// digits per step, no UTF-8 check of the result).
#[derive(Default)]
pub(crate) struct Digits(itoa::Buffer);

impl Digits {
    /// `{n}`.
    pub(crate) fn of(&mut self, n: impl itoa::Integer) -> &str {
        self.0.format(n)
    }
}

/// The time as tracing-subscriber's `SystemTime` writes it (RFC 3339, UTC, microseconds:
/// `2026-12-05T04:31:10.123456Z`), in one `write_str`.
fn write_timestamp(out: &mut String) {
    let now = std::time::SystemTime::now();
    match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) if since.as_secs() < YEAR_10000 => {
            // The date and time of day change once a second: this thread's last spelling up
            // to the seconds' dot is reused within the same second, only the microseconds
            // written anew.
            LAST_SECOND.with_borrow_mut(|(second, prefix)| {
                if *second != since.as_secs() || prefix.is_empty() {
                    let mut text = [0u8; 27];
                    rfc3339_micros(since, &mut text);
                    prefix.clear();
                    // Only ASCII was written.
                    prefix.push_str(std::str::from_utf8(&text[..20]).unwrap_or_default());
                    *second = since.as_secs();
                }
                out.push_str(prefix);
            });
            let micros = since.subsec_micros();
            for place in [100_000, 10_000, 1_000, 100, 10, 1] {
                out.push(char::from(b'0' + (micros / place % 10) as u8));
            }
            out.push('Z');
        }
        // A clock before 1970 or after 9999: tracing-subscriber's own spelling.
        _ => {
            let _ = SystemTime.format_time(&mut Writer::new(out));
        }
    }
}

thread_local! {
    /// The second [`write_timestamp`] last spelled on this thread, and its spelling up to and
    /// with the dot before the microseconds (empty before the first).
    static LAST_SECOND: std::cell::RefCell<(u64, String)> =
        const { std::cell::RefCell::new((0, String::new())) };
}

/// Writes `value`'s last `width` decimal digits at `out[at..at + width]`.
fn put_digits(out: &mut [u8; 27], at: usize, width: usize, mut value: u64) {
    for i in (at..at + width).rev() {
        out[i] = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// 10000-01-01T00:00:00Z in seconds since the epoch.
const YEAR_10000: u64 = 253_402_300_800;

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for a time since the epoch before the year 10000.
fn rfc3339_micros(since_epoch: std::time::Duration, out: &mut [u8; 27]) {
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_date(secs / 86_400);
    let of_day = secs % 86_400;
    let mut put = |at, width, value| put_digits(out, at, width, value);
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
    let bytes = s.as_bytes();
    let mut words = bytes.chunks_exact(8);
    // Eight bytes per step: the host, the path and the request ID are checked on every line.
    let words_ok = words.by_ref().all(|word| {
        let x = word_of(word);
        x & HIGHS == 0
            && !any_below(x, b' ')
            && !any_equal(x, 0x7f)
            && !any_equal(x, b'"')
            && !any_equal(x, b'\\')
    });
    words_ok
        && words
            .remainder()
            .iter()
            .all(|&b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

/// Where the first byte JSON must escape (`"`, `\\`, a control character) is in `bytes`.
fn first_json_escape(bytes: &[u8]) -> Option<usize> {
    let needs = |b: u8| b == b'"' || b == b'\\' || b < b' ';
    let mut words = bytes.chunks_exact(8);
    for (i, word) in words.by_ref().enumerate() {
        let x = word_of(word);
        if any_below(x, b' ') || any_equal(x, b'"') || any_equal(x, b'\\') {
            return word.iter().position(|&b| needs(b)).map(|at| i * 8 + at);
        }
    }
    let done = bytes.len() - words.remainder().len();
    words
        .remainder()
        .iter()
        .position(|&b| needs(b))
        .map(|at| done + at)
}

// Byte tests on eight bytes at once (the "has less" and "has zero" word tricks): exact
// answers to "is there any such byte", not where.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

fn word_of(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    u64::from_le_bytes(word)
}

/// Whether any byte of `x` is below `n` (`n` at most 128).
fn any_below(x: u64, n: u8) -> bool {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0
}

/// Whether any byte of `x` is `b`.
fn any_equal(x: u64, b: u8) -> bool {
    any_below(x ^ (ONES * u64::from(b)), 1)
}

/// `{value}` for a `u64`.
fn write_u64(out: &mut String, value: u64) {
    out.push_str(Digits::default().of(value));
}

/// The three digits of `n`, zero-padded (`n` < 1000).
fn three_digits(n: u64) -> [u8; 3] {
    [
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]
}

/// What `{:?}` writes for `n as f64 / 1000.0` (below 10^12, where `{:?}` still writes a plain
/// decimal): the shortest decimal that reads back as that float is `n / 1000` itself,
/// trailing zeros dropped but at least one digit after the point (`1.0`, `0.25`, `12.345`).
/// Larger values (a timer of 31 years) are written the same way.
fn write_thousandths(out: &mut String, n: u64) {
    write_u64(out, n / 1000);
    out.push('.');
    let digits = three_digits(n % 1000);
    // Trailing zeros dropped, one digit kept.
    let width = digits
        .iter()
        .rposition(|&d| d != b'0')
        .map_or(1, |last| last + 1);
    for &digit in &digits[..width] {
        out.push(char::from(digit));
    }
}

/// Writes through to `0`, escaped for the inside of a JSON string.
struct JsonEscaped<W>(W);

impl<W: fmt::Write> fmt::Write for JsonEscaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        // The characters to escape are ASCII, and no byte of a multi-byte UTF-8 character is
        // ASCII: a byte search finds the same places as a `char` search, faster.
        while let Some(at) = first_json_escape(rest.as_bytes()) {
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
    fn timestamps_within_one_second_reuse_the_date_and_advance() {
        let mut stamps = Vec::new();
        for _ in 0..1000 {
            let mut one = String::new();
            write_timestamp(&mut one);
            stamps.push(one);
        }
        let mut at = [0u8; 27];
        rfc3339_micros(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap(),
            &mut at,
        );
        for pair in stamps.windows(2) {
            assert!(pair[0] <= pair[1], "{pair:?}");
        }
        let last = stamps.last().unwrap();
        assert_eq!(last.len(), 27);
        assert!(
            last.as_bytes()[..26]
                .iter()
                .enumerate()
                .all(|(i, b)| match i {
                    4 | 7 => *b == b'-',
                    10 => *b == b'T',
                    13 | 16 => *b == b':',
                    19 => *b == b'.',
                    _ => b.is_ascii_digit(),
                })
        );
        // Taken after the last stamp: the same second or a later one.
        assert!(last.as_bytes()[..19] <= at[..19], "{last}");
    }

    #[test]
    fn timestamps_match_tracing_subscribers_spelling() {
        // Two clock reads: equal up to the second unless a second boundary fell between them,
        // which three tries in a row cannot all hit.
        let agree = (0..3).any(|_| {
            let (mut ours, mut theirs) = (String::new(), String::new());
            write_timestamp(&mut ours);
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
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn millisecond_timers_are_written_as_debug_writes_them() {
        let whole = (0..20_000u64).chain(numbers().map(|n| n % 1_000_000_000_000));
        for n in whole {
            let value = n as f64 / 1000.0;
            let mut out = String::new();
            write_thousandths(&mut out, n);
            assert_eq!(out, format!("{value:?}"), "n = {n}");
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let addrs = [
            "0.0.0.0:0",
            "127.0.0.1:80",
            "10.0.0.7:8080",
            "9.99.100.255:65535",
            "255.255.255.255:1",
            "[2001:db8::1]:40000",
        ];
        for addr in addrs {
            let addr: SocketAddr = addr.parse().unwrap();
            addr_spelled_both_ways::<false>(addr, "");
            addr_spelled_both_ways::<true>(addr, "\"");
        }
    }

    /// `addr` written by [`AccessLine::addr`] is `Display`'s spelling (quoted as `quote`),
    /// and the same as spelled once and written by [`AccessLine::addr_spelled`].
    fn addr_spelled_both_ways<const JSON: bool>(addr: SocketAddr, quote: &str) {
        let mut out = String::new();
        let mut line = AccessLine::<JSON>::start(&mut out, prefix!("t", "k"));
        line.addr(key!("a"), Some(addr));
        let key = if JSON { ",\"a\":" } else { " a=" };
        assert!(
            out.ends_with(&format!("{key}{quote}{addr}{quote}")),
            "{out:?}"
        );
        // Spelled once, written as often as needed: the same field.
        let mut spelled = String::new();
        write_addr(&mut spelled, addr);
        let mut again = String::new();
        let mut line = AccessLine::<JSON>::start(&mut again, prefix!("t", "k"));
        line.addr_spelled(key!("a"), &spelled);
        assert_eq!(
            again[again.find(key).unwrap()..],
            out[out.find(key).unwrap()..]
        );
    }

    #[test]
    fn remembered_addresses_are_spelled_as_display_spells_them() {
        // More addresses than the memo has slots, each written several times in turns, so
        // slots are shared, overwritten and hit: every spelling is still the address's own.
        let addrs: Vec<SocketAddr> = (0..40u16)
            .map(|i| SocketAddr::from(([10, 0, (i / 7) as u8, (i * 37) as u8], 8000 + i % 3)))
            .chain([
                "[2001:db8::7]:443".parse().unwrap(),
                "0.0.0.0:0".parse().unwrap(),
            ])
            .collect();
        for round in 0..3 {
            for addr in &addrs {
                let mut out = String::from("x");
                write_addr_remembered(&mut out, *addr);
                assert_eq!(out, format!("x{addr}"), "round {round}");
            }
        }
        assert!(MEMO_SLOTS.is_power_of_two());
        let slots: std::collections::HashSet<usize> = addrs.iter().map(|a| memo_slot(*a)).collect();
        assert!(slots.iter().all(|s| *s < MEMO_SLOTS));
        assert!(slots.len() > MEMO_SLOTS / 2, "{slots:?}");
    }

    #[test]
    fn word_scans_agree_with_byte_by_byte_scans() {
        // Every ASCII character and a two-byte one, at every place of strings that span one,
        // two and three words, among characters that need nothing.
        let odd: Vec<String> = (0u8..=0x7f)
            .map(|b| char::from(b).to_string())
            .chain(["é".to_string()])
            .collect();
        for len in [1, 7, 8, 9, 15, 16, 17, 23] {
            for at in 0..len {
                for c in &odd {
                    let mut s = "a".repeat(at);
                    s.push_str(c);
                    s.push_str(&"Z".repeat(len - at - 1));
                    let verbatim = s
                        .bytes()
                        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
                    assert_eq!(debug_verbatim(&s), verbatim, "{s:?}");
                    let first = s.bytes().position(|b| b == b'"' || b == b'\\' || b < b' ');
                    assert_eq!(first_json_escape(s.as_bytes()), first, "{s:?}");
                }
            }
        }
        // Two at once in one word: the first is found.
        assert_eq!(first_json_escape(b"abc\"d\ne\\fgh"), Some(3));
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
