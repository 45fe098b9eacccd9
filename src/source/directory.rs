//! Standalone source, the watching half: a manifest directory (and an optional `--cert-dir`) →
//! a [`Snapshot`], re-read whenever something under them changes.
//!
//! - Every `*.yaml`/`*.yml` under the manifest directory, recursively, is parsed with
//!   [`parse_manifest`]. State is kept **per file**: a file that fails to read or parse keeps its
//!   last good objects and its diagnostic goes into [`Snapshot::diagnostics`]; a deleted file
//!   drops its objects.
//! - Hidden entries (`.git`, editor swap files, and Kubernetes' `..data` / `..2024_…` symlink
//!   farm of a mounted ConfigMap or Secret) are skipped; symlinks are followed, and a file reached
//!   by two paths is read once (by its first path in sorted order).
//! - `--cert-dir` yields [`CertFile`]s: PEM bundles (`*.pem`, `*.crt`, chain and key in one
//!   file, or with a sibling `<name>.key`), and `tls.crt` + `tls.key` pairs as a mounted Secret
//!   lays them out. `ca.crt` is a CA bundle, not a serving certificate, and is skipped.
//! - [`watch`] re-reads on `notify` events and, because inotify can miss a symlink swap or
//!   events on some filesystems, also compares path, inode, size and mtime every
//!   [`RESCAN_INTERVAL`]. Bursts coalesce: one re-read covers every event queued before it.
//! - [`load_input`] is `portcullis check`'s one-shot read: a directory, one file, or stdin.
//! - Objects are parsed once per version of a file and kept as `Arc`s: the [`Snapshot`] the
//!   watcher publishes after a change shares every unchanged file's objects with the previous
//!   one, so a change costs the changed file's parse, not a copy of the directory.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use super::yaml::{Object, parse_manifest};
use super::{CertFile, Snapshot, SnapshotSender, SnapshotSource, snapshot_channel};
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};

/// How often the fallback rescan compares file metadata, in case `notify` missed an event.
const RESCAN_INTERVAL: Duration = Duration::from_millis(500);

/// Quiet time after a file event before reading: a burst of events costs one read.
const SETTLE: Duration = Duration::from_millis(30);

/// Longest the settling may last under a constant stream of events.
const SETTLE_MAX: Duration = Duration::from_millis(300);

/// The parser of one manifest file; [`parse_manifest`] unless a test injects another.
type ParseFn = fn(&str, &str) -> Result<Vec<Object>, Box<Diagnostic>>;

/// Why a directory could not be loaded or watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("manifest directory {path}: {source}")]
    Manifests {
        path: String,
        source: std::io::Error,
    },
    #[error("certificate directory {path}: {source}")]
    CertDir {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: String },
    #[error("watching {path}: {source}")]
    Notify { path: String, source: notify::Error },
    #[error("starting the watcher thread: {0}")]
    Thread(std::io::Error),
    #[error("manifest file {path}: {source}")]
    ManifestFile {
        path: String,
        source: std::io::Error,
    },
    #[error("reading manifests from standard input: {0}")]
    Stdin(std::io::Error),
    /// A single manifest file (or standard input) that does not parse: nothing to check.
    #[error("{0}")]
    Unparsable(Box<Diagnostic>),
}

// === impl DirectoryLoader ===

/// What identifies one version of a file without reading it: the path it resolves to, its
/// inode, size and modification time. A Kubernetes `..data` swap changes the resolved path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    resolved: PathBuf,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

/// One manifest file as last read.
struct ManifestFile {
    stamp: Stamp,
    /// The bytes last read (parsed or not), to skip re-parsing identical content; `None` after
    /// a read error.
    text: Option<Vec<u8>>,
    /// The objects of the last version that parsed, shared with every snapshot taken since.
    objects: Vec<Object>,
    /// Why the current version is not the one whose objects are kept.
    diagnostic: Option<Diagnostic>,
}

/// A file found by a directory walk.
struct Found {
    path: PathBuf,
    stamp: Stamp,
}

/// Loads a manifest directory (and optionally a certificate directory) and keeps, per file,
/// the last good objects. Synchronous and blocking; [`watch`] drives it from a thread.
pub struct DirectoryLoader {
    /// `None` in cluster mode, where only `--cert-dir` is read from disk.
    manifests: Option<PathBuf>,
    cert_dir: Option<PathBuf>,
    parse: ParseFn,
    files: BTreeMap<PathBuf, ManifestFile>,
    certs: Vec<Arc<CertFile>>,
    cert_diagnostics: Vec<Diagnostic>,
    /// Problems with the directories themselves (e.g. the manifest directory vanished).
    dir_diagnostics: Vec<Diagnostic>,
}

impl DirectoryLoader {
    /// A loader for `manifests` (and `cert_dir`), with the real manifest parser. Fails when a
    /// directory does not exist or is not a directory; nothing is read yet.
    pub fn new(manifests: &Path, cert_dir: Option<&Path>) -> Result<Self, WatchError> {
        Self::with_parser(manifests, cert_dir, parse_manifest)
    }

    /// The same, with another parser (for tests of the per-file bookkeeping).
    pub fn with_parser(
        manifests: &Path,
        cert_dir: Option<&Path>,
        parse: ParseFn,
    ) -> Result<Self, WatchError> {
        check_dir(manifests).map_err(|e| match e {
            DirProblem::Io(source) => WatchError::Manifests {
                path: manifests.display().to_string(),
                source,
            },
            DirProblem::NotADirectory => WatchError::NotADirectory {
                path: manifests.display().to_string(),
            },
        })?;
        if let Some(dir) = cert_dir {
            check_dir(dir).map_err(|e| match e {
                DirProblem::Io(source) => WatchError::CertDir {
                    path: dir.display().to_string(),
                    source,
                },
                DirProblem::NotADirectory => WatchError::NotADirectory {
                    path: dir.display().to_string(),
                },
            })?;
        }
        Ok(DirectoryLoader {
            manifests: Some(manifests.to_path_buf()),
            cert_dir: cert_dir.map(Path::to_path_buf),
            parse,
            files: BTreeMap::new(),
            certs: Vec::new(),
            cert_diagnostics: Vec::new(),
            dir_diagnostics: Vec::new(),
        })
    }

    /// Re-reads the directories. With `force`, every file's content is read and compared (after
    /// a `notify` event: a rewrite within the mtime granularity keeps the stamp); otherwise only
    /// files whose stamp changed are read. Returns whether the snapshot changed.
    pub fn refresh(&mut self, force: bool) -> bool {
        let mut changed = self.refresh_manifests(force);
        changed |= self.refresh_certs();
        changed
    }

    /// The objects of every file's last good version, the certificate files, and the
    /// diagnostics of files that currently fail. Files in path order. The objects are shared
    /// with the loader (and with every other snapshot of the same file versions), not copied.
    pub fn snapshot(&self) -> Snapshot {
        // A file's own diagnostic right after its objects', as a diagnostic of its objects.
        let mut snapshot: Snapshot = self
            .files
            .values()
            .flat_map(|file| {
                let own = file.diagnostic.iter().cloned().map(Arc::new);
                file.objects
                    .iter()
                    .cloned()
                    .chain(own.map(Object::Unreadable))
            })
            .collect();
        snapshot.cert_files = self.certs.as_slice().into();
        snapshot
            .diagnostics
            .extend(self.cert_diagnostics.iter().cloned());
        snapshot
            .diagnostics
            .extend(self.dir_diagnostics.iter().cloned());
        snapshot
    }

    /// A loader for a certificate directory alone (cluster mode: objects come from the API).
    pub(crate) fn certificates_only(cert_dir: &Path) -> Result<Self, WatchError> {
        let mut loader = Self::new(cert_dir, Some(cert_dir))?;
        loader.manifests = None;
        Ok(loader)
    }

    fn refresh_manifests(&mut self, force: bool) -> bool {
        let Some(manifests) = self.manifests.clone() else {
            return false;
        };
        let found = match walk(&manifests, is_manifest_name) {
            Ok(found) => found,
            Err(e) => {
                // The directory itself is gone or unreadable (a remount in progress?): keep
                // serving what we have and say so, rather than dropping every object.
                let diagnostic = Diagnostic::error(
                    file_ref(&manifests),
                    "",
                    Reason::InvalidManifest,
                    format!("cannot read the manifest directory, keeping its last objects: {e}"),
                );
                let changed = self.dir_diagnostics != [diagnostic.clone()];
                self.dir_diagnostics = vec![diagnostic];
                return changed;
            }
        };
        let mut changed = !self.dir_diagnostics.is_empty();
        self.dir_diagnostics.clear();

        let present: BTreeSet<&PathBuf> = found.iter().map(|f| &f.path).collect();
        let before = self.files.len();
        self.files.retain(|path, _| present.contains(path));
        changed |= self.files.len() != before;

        for Found { path, stamp } in found {
            if let Some(file) = self.files.get_mut(&path)
                && !force
                && file.stamp == stamp
            {
                continue;
            }
            let name = path.display().to_string();
            match std::fs::read(&path) {
                Ok(text) => {
                    if let Some(file) = self.files.get_mut(&path)
                        && file.text.as_deref() == Some(text.as_slice())
                    {
                        file.stamp = stamp;
                        continue;
                    }
                    changed = true;
                    let parsed = (self.parse)(&name, &String::from_utf8_lossy(&text));
                    let file = self.files.entry(path).or_insert_with(|| ManifestFile {
                        stamp: stamp.clone(),
                        text: None,
                        objects: Vec::new(),
                        diagnostic: None,
                    });
                    file.stamp = stamp;
                    file.text = Some(text);
                    match parsed {
                        Ok(objects) => {
                            file.objects = objects;
                            file.diagnostic = None;
                        }
                        Err(diagnostic) => file.diagnostic = Some(*diagnostic),
                    }
                }
                Err(e) => {
                    let diagnostic = Diagnostic::error(
                        ObjectRef::cluster("File", &name),
                        "",
                        Reason::InvalidManifest,
                        format!("cannot read the file: {e}"),
                    );
                    let file = self.files.entry(path).or_insert_with(|| ManifestFile {
                        stamp: stamp.clone(),
                        text: None,
                        objects: Vec::new(),
                        diagnostic: None,
                    });
                    // Forget the stamp so the next scan tries again.
                    file.stamp = Stamp {
                        resolved: PathBuf::new(),
                        ..stamp
                    };
                    file.text = None;
                    if file.diagnostic.as_ref() != Some(&diagnostic) {
                        file.diagnostic = Some(diagnostic);
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    /// Certificate directories are small: read every candidate file each time and compare.
    fn refresh_certs(&mut self) -> bool {
        let Some(dir) = &self.cert_dir else {
            return false;
        };
        let (certs, diagnostics) = match walk(dir, |_| true) {
            Ok(found) => read_cert_files(found, &self.certs),
            Err(e) => (
                self.certs.clone(),
                vec![Diagnostic::error(
                    file_ref(dir),
                    "",
                    Reason::InvalidSecret,
                    format!("cannot read the certificate directory, keeping its last files: {e}"),
                )],
            ),
        };
        let changed = certs != self.certs || diagnostics != self.cert_diagnostics;
        if changed {
            // Unchanged files keep the `Arc`s earlier snapshots share.
            self.certs = certs;
            self.cert_diagnostics = diagnostics;
        }
        changed
    }
}

/// Loads `manifests` (and `cert_dir`) once, without watching: what `portcullis check` reads.
pub fn load_once(manifests: &Path, cert_dir: Option<&Path>) -> Result<Snapshot, WatchError> {
    let mut loader = DirectoryLoader::new(manifests, cert_dir)?;
    loader.refresh(true);
    Ok(loader.snapshot())
}

/// What `portcullis check` reads: `-` for standard input, a directory (as [`load_once`]), or
/// one manifest file (several documents and `kind: List` allowed). A single input that does not
/// parse is an error ([`WatchError::Unparsable`]): there would be nothing to check; in a
/// directory, such a file is a diagnostic and the other files are still read.
pub fn load_input(input: &Path, cert_dir: Option<&Path>) -> Result<Snapshot, WatchError> {
    let (name, text) = if input == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(WatchError::Stdin)?;
        ("<stdin>".to_string(), text)
    } else {
        let path = input.display().to_string();
        let meta = std::fs::metadata(input).map_err(|source| WatchError::Manifests {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            return load_once(input, cert_dir);
        }
        let bytes = std::fs::read(input).map_err(|source| WatchError::ManifestFile {
            path: path.clone(),
            source,
        })?;
        (path, String::from_utf8_lossy(&bytes).into_owned())
    };
    let certs = match cert_dir {
        Some(dir) => {
            check_dir(dir).map_err(|e| match e {
                DirProblem::Io(source) => WatchError::CertDir {
                    path: dir.display().to_string(),
                    source,
                },
                DirProblem::NotADirectory => WatchError::NotADirectory {
                    path: dir.display().to_string(),
                },
            })?;
            let mut loader = DirectoryLoader::certificates_only(dir)?;
            loader.refresh(true);
            loader.snapshot()
        }
        None => Snapshot::default(),
    };
    let objects = parse_manifest(&name, &text).map_err(WatchError::Unparsable)?;
    let mut snapshot: Snapshot = objects.into_iter().collect();
    snapshot.cert_files = certs.cert_files;
    let mut diagnostics = certs.diagnostics;
    diagnostics.append(&mut snapshot.diagnostics);
    snapshot.diagnostics = diagnostics;
    Ok(snapshot)
}

fn file_ref(path: &Path) -> ObjectRef {
    ObjectRef::cluster("File", &path.display().to_string())
}

fn is_manifest_name(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

enum DirProblem {
    Io(std::io::Error),
    NotADirectory,
}

fn check_dir(path: &Path) -> Result<(), DirProblem> {
    let meta = std::fs::metadata(path).map_err(DirProblem::Io)?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(DirProblem::NotADirectory)
    }
}

/// Every non-hidden file under `root` whose name passes `wanted`, following symlinks, each
/// target file once, in sorted path order. Broken symlinks (a swap in progress) are skipped.
fn walk(root: &Path, wanted: impl Fn(&str) -> bool) -> std::io::Result<Vec<Found>> {
    let mut found = Vec::new();
    let mut seen_files = HashSet::new();
    let mut seen_dirs = HashSet::new();
    seen_dirs.insert(std::fs::canonicalize(root)?);
    let mut stack = vec![root.to_path_buf()];
    let mut first = true;
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // The root must be readable; a subdirectory that vanished mid-walk is just gone.
            Err(e) if first => return Err(e),
            Err(_) => continue,
        };
        first = false;
        let mut names: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| !n.to_string_lossy().starts_with('.'))
            .collect();
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let path = dir.join(&name);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let Ok(resolved) = std::fs::canonicalize(&path) else {
                continue;
            };
            if meta.is_dir() {
                if seen_dirs.insert(resolved) {
                    subdirs.push(path);
                }
            } else if meta.is_file()
                && wanted(&name.to_string_lossy())
                && seen_files.insert(resolved.clone())
            {
                found.push(Found {
                    path,
                    stamp: Stamp {
                        resolved,
                        inode: inode(&meta),
                        len: meta.len(),
                        modified: meta.modified().ok(),
                    },
                });
            }
        }
        // Depth-first in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// Groups a certificate directory's files into [`CertFile`]s. A file that cannot be read keeps
/// its previous content (from `previous`) and adds a diagnostic.
fn read_cert_files(
    found: Vec<Found>,
    previous: &[Arc<CertFile>],
) -> (Vec<Arc<CertFile>>, Vec<Diagnostic>) {
    let paths: BTreeSet<PathBuf> = found.into_iter().map(|f| f.path).collect();
    let mut certs = Vec::new();
    let mut diagnostics = Vec::new();
    let mut read = |parts: &[&Path], shown: &Path| {
        let shown_name = shown.display().to_string();
        let mut pem = Vec::new();
        for part in parts {
            match std::fs::read(part) {
                Ok(bytes) => {
                    pem.extend_from_slice(&bytes);
                    if !pem.ends_with(b"\n") {
                        pem.push(b'\n');
                    }
                }
                Err(e) => {
                    diagnostics.push(Diagnostic::error(
                        ObjectRef::cluster("File", &part.display().to_string()),
                        "",
                        Reason::InvalidSecret,
                        format!("cannot read the certificate file: {e}"),
                    ));
                    if let Some(old) = previous.iter().find(|c| c.path == shown_name) {
                        certs.push(old.clone());
                    }
                    return;
                }
            }
        }
        certs.push(Arc::new(CertFile {
            path: shown_name,
            pem,
        }));
    };

    for path in &paths {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let sibling = |n: &str| path.with_file_name(n);
        match name.as_str() {
            // A mounted Secret: tls.crt + tls.key in one directory.
            "tls.crt" => {
                let key = sibling("tls.key");
                if paths.contains(&key) {
                    read(&[path, &key], path);
                } else {
                    read(&[path], path);
                }
            }
            "tls.key" | "ca.crt" => {}
            _ if name.ends_with(".pem") || name.ends_with(".crt") => {
                let stem = name.rsplit_once('.').map_or(name.as_str(), |(s, _)| s);
                let key = [
                    sibling(&format!("{name}.key")),
                    sibling(&format!("{stem}.key")),
                ]
                .into_iter()
                .find(|k| paths.contains(k));
                match key {
                    Some(key) => read(&[path, &key], path),
                    None => read(&[path], path),
                }
            }
            _ => {}
        }
    }
    (certs, diagnostics)
}

// === impl watch ===

/// Keeps the watcher alive; dropping it stops the watcher thread.
pub struct WatchHandle {
    _watcher: Option<RecommendedWatcher>,
    stop: mpsc::Sender<Signal>,
    thread: Option<thread::JoinHandle<()>>,
}

enum Signal {
    Event,
    Stop,
}

impl WatchHandle {
    /// Stops the watcher thread and waits for it.
    pub(crate) fn stop(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let _ = self.stop.send(Signal::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Loads the directories now (the source is ready at once with that first snapshot), then
/// watches them and publishes a new snapshot, and signals a change, whenever the content
/// changed. Runs on its own thread (file I/O is blocking); stops when the handle is dropped or
/// the source and every change receiver are gone.
pub fn watch(mut loader: DirectoryLoader) -> Result<(SnapshotSource, WatchHandle), WatchError> {
    let (events_tx, events_rx) = mpsc::channel();
    let dirs: Vec<PathBuf> = loader
        .manifests
        .clone()
        .into_iter()
        .chain(loader.cert_dir.clone())
        .collect();
    // Without notify (inotify instances or watches exhausted) the rescan still applies changes
    // within a second: warn and carry on rather than refuse to start.
    let watcher = match start_notify(&dirs, events_tx.clone()) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(
                error = %e,
                rescan_ms = RESCAN_INTERVAL.as_millis() as u64,
                "file notifications unavailable; relying on periodic rescans"
            );
            None
        }
    };

    loader.refresh(true);
    let (tx, rx) = snapshot_channel(Some(Arc::new(loader.snapshot())));
    let thread = thread::Builder::new()
        .name("manifest-watch".to_string())
        .spawn(move || watch_loop(loader, events_rx, tx))
        .map_err(WatchError::Thread)?;
    Ok((
        rx,
        WatchHandle {
            _watcher: watcher,
            stop: events_tx,
            thread: Some(thread),
        },
    ))
}

/// A recursive `notify` watcher on `dirs` that turns every event into a [`Signal::Event`].
fn start_notify(
    dirs: &[PathBuf],
    events: mpsc::Sender<Signal>,
) -> Result<RecommendedWatcher, WatchError> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // A possible change (or a watcher error) is a reason to look; the read decides what
        // changed.
        if may_be_a_change(&event) {
            let _ = events.send(Signal::Event);
        }
    })
    .map_err(|source| WatchError::Notify {
        path: dirs
            .first()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        source,
    })?;
    for dir in dirs {
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .map_err(|source| WatchError::Notify {
                path: dir.display().to_string(),
                source,
            })?;
    }
    Ok(watcher)
}

/// Whether a `notify` event can mean that something under the directories changed. notify 8
/// also reports opens and read-only closes (inotify's `IN_OPEN`, `IN_CLOSE_NOWRITE`), and the
/// loader's own reads cause exactly those: taken as changes, every read caused the next one, a
/// re-read of the whole directory each [`SETTLE`] period for as long as the process ran. An
/// event of any other kind, or an error, is a reason to look.
fn may_be_a_change(event: &notify::Result<notify::Event>) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match event {
        Ok(event) => !matches!(
            event.kind,
            EventKind::Access(
                AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
            )
        ),
        Err(_) => true,
    }
}

fn watch_loop(mut loader: DirectoryLoader, events: mpsc::Receiver<Signal>, tx: SnapshotSender) {
    loop {
        let force = match events.recv_timeout(RESCAN_INTERVAL) {
            Ok(Signal::Event) => {
                // Coalesce: wait until the events settle, so that one read covers a whole
                // burst, and a file written in place (truncate, write, close) is read
                // complete rather than empty or half-written.
                let give_up = Instant::now() + SETTLE_MAX;
                loop {
                    let wait = SETTLE.min(give_up.saturating_duration_since(Instant::now()));
                    match events.recv_timeout(wait) {
                        Ok(Signal::Event) if Instant::now() < give_up => continue,
                        Ok(Signal::Event) => break,
                        Ok(Signal::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                    }
                }
                true
            }
            Ok(Signal::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => false,
        };
        if tx.is_closed() {
            return;
        }
        if loader.refresh(force) {
            tracing::debug!(
                dir = ?loader.manifests,
                files = loader.files.len(),
                certs = loader.certs.len(),
                "manifests changed"
            );
            tx.send(Arc::new(loader.snapshot()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events a real inotify watcher reports for the loader's own read of a directory are
    /// none of them a change (else the watcher re-reads forever), and a write is one.
    #[test]
    fn own_reads_are_not_changes_and_writes_are() {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("a.yaml"), "{}\n").expect("write a.yaml");
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .expect("inotify watcher");
        watcher
            .watch(dir.path(), RecursiveMode::Recursive)
            .expect("watch the directory");

        let mut loader = DirectoryLoader::new(dir.path(), None).expect("loader");
        loader.refresh(true);
        let marker = dir.path().join("marker.yaml");
        std::fs::write(&marker, "{}\n").expect("write marker.yaml");

        // inotify reports in order: everything before the marker's first event is the read's.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut own_read = Vec::new();
        let write = loop {
            let event = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("an event for marker.yaml within 10 s");
            match &event {
                Ok(e) if e.paths.contains(&marker) => break event,
                _ => own_read.push(event),
            }
        };
        assert!(
            !own_read.is_empty(),
            "the loader's read made no event at all: nothing was proven"
        );
        for event in &own_read {
            assert!(!may_be_a_change(event), "the loader's own read: {event:?}");
        }
        assert!(may_be_a_change(&write), "writing a file: {write:?}");
    }
}
