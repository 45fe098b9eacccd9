//! Where log lines go on their way to stderr: each thread appends its lines to a buffer of its
//! own, and one writer thread hands the buffers to stderr in batches. Access lines are formatted
//! straight into that buffer ([`access_line`]); other lines come from tracing-subscriber
//! ([`BufferedStderr`]).
//!
//! A request therefore makes no system call for its access line (but the first line of a
//! batch, which wakes the writer), and never waits for a slow reader of stderr (a terminal, a log shipper falling behind, a pipe nobody drains):
//! when a thread's buffer is full, the line is dropped and counted in
//! `portcullis_log_lines_dropped_total`, the way HAProxy drops the lines a full syslog socket
//! will not take. Access lines are dropped first: a thread's buffer takes other lines (errors,
//! diagnostics) up to a larger bound.
//!
//! Lines of one thread keep their order. Lines of different threads are ordered to within a
//! batch, which is at most [`BATCH_DELAY`] old when it is written: a line reaches stderr that
//! long after it was logged, at most (longer only while stderr itself is slow). The process
//! calls [`flush`] before it exits, so the last lines are not lost (unless stderr takes
//! nothing for two seconds: a stopping process does not wait on it longer).
//!
//! Each thread's buffer has a lock of its own, taken by that thread for each line and by the
//! writer only to swap the buffer out (a pointer swap): the lock is uncontended but for that
//! instant, so a line costs an atomic exchange besides its formatting, and no copy.

use std::cell::OnceCell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing_subscriber::fmt::MakeWriter;

use super::log_format::AccessFormat;

/// How long a batch collects lines before it is written: long enough that a busy proxy makes
/// one `write(2)` per many lines, short enough that a reader tailing the log sees a line
/// at once.
const BATCH_DELAY: Duration = Duration::from_millis(10);

/// The most access-line bytes a thread holds for the writer. At ~400 bytes a line this is
/// ~1 300 lines: 130 000 lines a second per thread before a batch overflows, with stderr
/// keeping up.
const ACCESS_LIMIT: usize = 512 * 1024;

/// The most bytes of any line a thread holds: other lines still get in when access lines no
/// longer do.
const OTHER_LIMIT: usize = 2 * 1024 * 1024;

/// Buffer capacity above which a drained buffer is released rather than reused (a burst does
/// not pin its peak on every thread).
const KEPT_CAPACITY: usize = 256 * 1024;

/// The `portcullis_log_lines_dropped_total` label set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DroppedLabels {
    /// `access` or `other`.
    kind: &'static str,
}

/// Lines dropped because stderr did not keep up, by kind. One family for the process (the sink
/// is process-wide); each [`super::metrics::Metrics`] registry exposes it.
/// Both series exist from the start, at 0: an alert on their rate needs no "absent" case.
static DROPPED: LazyLock<Family<DroppedLabels, Counter>> = LazyLock::new(|| {
    let family = Family::default();
    for kind in ["access", "other"] {
        drop(family.get_or_create(&DroppedLabels { kind }));
    }
    family
});

/// The dropped-lines family, to register in a metrics registry.
pub(crate) fn dropped_lines() -> Family<DroppedLabels, Counter> {
    DROPPED.clone()
}

/// The process's sink, once [`install`]ed.
static SINK: OnceLock<Sink> = OnceLock::new();

thread_local! {
    /// This thread's buffer, registered with the sink on its first line.
    static BUFFER: OnceCell<Arc<ThreadBuffer>> = const { OnceCell::new() };
}

/// Lines one thread logged and the writer has not taken yet.
#[derive(Default)]
struct ThreadBuffer {
    lines: Mutex<String>,
}

struct Sink {
    /// Every thread's buffer; a buffer whose thread ended is forgotten once drained.
    threads: Mutex<Vec<Arc<ThreadBuffer>>>,
    /// Set by the first line after a drain; the line that sets it wakes the writer.
    pending: AtomicBool,
    writer: Thread,
    /// How access lines are spelled.
    format: AccessFormat,
    /// Held while draining, so batches are written whole and in order.
    output: Mutex<Output>,
    /// Flushes asked for ([`flush`]), and the last of them a drain has answered.
    drains: Mutex<u64>,
    drains_done: Mutex<u64>,
    drained: Condvar,
}

struct Output {
    out: Box<dyn Write + Send>,
    /// The empty buffer swapped in for a full one.
    spare: String,
}

/// `MakeWriter` for tracing-subscriber: every formatted line goes to the sink (or straight to
/// stderr if [`install`] was not called).
#[derive(Debug, Clone, Copy)]
pub struct BufferedStderr;

/// Starts the writer thread, writing to stderr, with access lines spelled `format`. Call once,
/// before the first line; later calls change nothing.
pub fn install(format: AccessFormat) -> BufferedStderr {
    install_to(Box::new(io::stderr()), format);
    BufferedStderr
}

/// Like [`install`], writing to `out` instead of stderr (a test's capture).
pub fn install_to(out: Box<dyn Write + Send>, format: AccessFormat) {
    if SINK.get().is_some() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("portcullis-log".into())
        .spawn(write_batches);
    let Ok(handle) = spawned else {
        // No thread: lines go straight to stderr (`access_line`, `other_line`).
        return;
    };
    let _ = SINK.set(Sink {
        threads: Mutex::default(),
        pending: AtomicBool::new(false),
        writer: handle.thread().clone(),
        format,
        output: Mutex::new(Output {
            out,
            spare: String::new(),
        }),
        drains: Mutex::new(0),
        drains_done: Mutex::new(0),
        drained: Condvar::new(),
    });
    handle.thread().unpark();
}

/// Writes everything logged so far; the process calls it before it exits. Waits at most
/// [`FLUSH_DEADLINE`]: a stderr that takes nothing (a pipe nobody reads) must not
/// keep a stopping process alive; the lines still held are then lost.
pub fn flush() {
    let Some(sink) = SINK.get() else {
        return;
    };
    let asked = {
        let mut drains = lock(&sink.drains);
        *drains += 1;
        *drains
    };
    sink.writer.unpark();
    let drains = lock(&sink.drains_done);
    let _ = sink
        .drained
        .wait_timeout_while(drains, FLUSH_DEADLINE, |done| *done < asked);
}

/// How long [`flush`] waits for the writer.
const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

/// The writer thread: sleeps until a line arrives, lets the batch collect, writes it.
fn write_batches() {
    let sink = loop {
        if let Some(sink) = SINK.get() {
            break sink;
        }
        std::thread::park();
    };
    loop {
        // Looked at before parking, never only after: wake-ups collapse into one token, so
        // the one that set `pending` may already have been spent (on the wait for the sink
        // above, when the first line came right after `install`), and a line that finds
        // `pending` set wakes nobody. Parking first lost every line after such a start.
        let flush_asked = *lock(&sink.drains) > *lock(&sink.drains_done);
        if !flush_asked && !sink.pending.load(Ordering::Acquire) {
            // A line or flush that comes after this check leaves a token: park returns.
            std::thread::park();
            continue;
        }
        std::thread::sleep(BATCH_DELAY);
        // Every flush asked before this drain starts is answered by it.
        let asked = *lock(&sink.drains);
        sink.drain();
        *lock(&sink.drains_done) = asked;
        sink.drained.notify_all();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves only bytes behind: still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sink {
    fn register(&self) -> Arc<ThreadBuffer> {
        let buffer = Arc::new(ThreadBuffer::default());
        lock(&self.threads).push(buffer.clone());
        buffer
    }

    /// Takes every thread's lines and writes them.
    fn drain(&self) {
        let mut output = lock(&self.output);
        // Cleared before the buffers are read: a line appended after a buffer was swapped out
        // sees `false` (the buffer's lock orders the two) and wakes the writer again.
        self.pending.store(false, Ordering::SeqCst);
        let threads = lock(&self.threads).clone();
        let Output { out, spare } = &mut *output;
        for thread in &threads {
            std::mem::swap(&mut *lock(&thread.lines), spare);
            if !spare.is_empty() {
                // Nothing to tell if stderr is gone: there is nowhere to say it.
                let _ = out.write_all(spare.as_bytes());
            }
            spare.clear();
            if spare.capacity() > KEPT_CAPACITY {
                *spare = String::new();
            }
        }
        let _ = out.flush();
        drop(output);
        // Buffers of threads that ended: only this list still holds them.
        lock(&self.threads)
            .retain(|buffer| Arc::strong_count(buffer) > 1 || !lock(&buffer.lines).is_empty());
    }

    /// Runs `add` on this thread's buffer (registering it on the thread's first line). `None`
    /// while the thread is being torn down (its buffer is gone).
    fn with_buffer(&self, add: impl FnOnce(&mut String) -> bool) -> Option<bool> {
        BUFFER
            .try_with(|cell| {
                let buffer = cell.get_or_init(|| self.register());
                add(&mut lock(&buffer.lines))
            })
            .ok()
    }

    /// Counts a dropped line, or wakes the writer for a kept one.
    fn added(&self, kept: bool, kind: &'static str) {
        if !kept {
            DROPPED.get_or_create(&DroppedLabels { kind }).inc();
            return;
        }
        // While a batch collects, `pending` stays set and lines skip the read-modify-write. A
        // stale `true` here is safe: the drain that cleared it locked this thread's buffer
        // after this line was added (else this thread would see the cleared flag), so it
        // writes the line.
        if !self.pending.load(Ordering::Relaxed) && !self.pending.swap(true, Ordering::AcqRel) {
            self.writer.unpark();
        }
    }
}

/// Writes one access line: `write` formats it (in the sink's spelling) straight into this
/// thread's buffer. The line is dropped, and counted, when the buffer is full. Without a sink
/// (a program that did not [`install`] one), the line goes to stderr in text.
pub(crate) fn access_line(write: impl FnOnce(&mut String, AccessFormat)) {
    let Some(sink) = SINK.get() else {
        let mut line = String::new();
        write(&mut line, AccessFormat::Text);
        let _ = io::stderr().write_all(line.as_bytes());
        return;
    };
    let mut write = Some(write);
    let kept = sink.with_buffer(|lines| {
        // A full buffer takes no line: not formatted at all (a stall costs no CPU per line).
        if lines.len() >= ACCESS_LIMIT {
            return false;
        }
        let Some(write) = write.take() else {
            return false;
        };
        let before = lines.len();
        write(lines, sink.format);
        if lines.len() > ACCESS_LIMIT {
            lines.truncate(before);
            return false;
        }
        true
    });
    match (kept, write) {
        (Some(kept), _) => sink.added(kept, "access"),
        (None, Some(write)) => {
            let mut line = String::new();
            write(&mut line, sink.format);
            let _ = io::stderr().write_all(line.as_bytes());
        }
        (None, None) => {}
    }
}

/// Adds one line tracing-subscriber formatted (or drops it, counted, when this thread's
/// buffer is full).
fn other_line(line: &[u8]) {
    let Some(sink) = SINK.get() else {
        let _ = io::stderr().write_all(line);
        return;
    };
    let kept = sink.with_buffer(|lines| {
        if lines.len() + line.len() > OTHER_LIMIT {
            return false;
        }
        // tracing-subscriber formats into a `String`: valid UTF-8, converted without a copy.
        lines.push_str(&String::from_utf8_lossy(line));
        true
    });
    match kept {
        Some(kept) => sink.added(kept, "other"),
        None => {
            let _ = io::stderr().write_all(line);
        }
    }
}

/// One event's writer: tracing-subscriber formats the whole line and writes it in one call.
#[derive(Debug)]
pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        other_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter
    }
}
