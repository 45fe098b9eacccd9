//! The manifest directory watcher: per-file last good objects, deletions, hidden entries and
//! Kubernetes `..data` symlink farms, `--cert-dir` pairs and bundles, rotation by symlink swap.
//!
//! The per-file bookkeeping is proven with a tiny fake parser (one `service: NAME` line per
//! object, `BROKEN` on line N fails with "line N"), so it does not depend on the real manifest
//! parser; the last test runs the real one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use portcullis::source::directory::{DirectoryLoader, load_once, watch};
use portcullis::source::yaml::Object;
use portcullis::source::{Snapshot, SnapshotSource, Source};
use portcullis::table::diagnostic::{Diagnostic, ObjectRef, Reason};

/// The watcher must apply a change within this.
const WITHIN: Duration = Duration::from_secs(1);

fn fake_parse(path: &str, text: &str) -> Result<Vec<Object>, Box<Diagnostic>> {
    let mut objects = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.contains("BROKEN") {
            return Err(Box::new(Diagnostic::error(
                ObjectRef::cluster("File", path),
                format!("line {}", i + 1),
                Reason::InvalidManifest,
                "fake parse error",
            )));
        }
        if let Some(name) = line.strip_prefix("service: ") {
            objects.push(Object::Service(Arc::new(Service {
                metadata: ObjectMeta {
                    name: Some(name.trim().to_string()),
                    namespace: Some("default".to_string()),
                    ..ObjectMeta::default()
                },
                ..Service::default()
            })));
        }
    }
    Ok(objects)
}

fn service_names(snapshot: &Snapshot) -> Vec<String> {
    let mut names: Vec<String> = snapshot
        .services
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    names.sort();
    names
}

fn loader(dir: &Path, cert_dir: Option<&Path>) -> DirectoryLoader {
    DirectoryLoader::with_parser(dir, cert_dir, fake_parse).expect("loader")
}

/// The snapshot a watched source has as soon as `watch` returns: it is ready at once.
fn first(source: &SnapshotSource) -> Arc<Snapshot> {
    assert!(
        *source.changes().borrow() > 0,
        "the first snapshot is there at once"
    );
    source.snapshot()
}

/// Waits (up to [`WITHIN`]) for the source's change signal to bring a snapshot satisfying
/// `pred`, as the rebuild loop would see it; panics with the last one if none.
async fn expect_snapshot(
    source: &SnapshotSource,
    what: &str,
    pred: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let mut changes = source.changes();
    let found = tokio::time::timeout(WITHIN, async {
        loop {
            changes.mark_unchanged();
            let snapshot = source.snapshot();
            if pred(&snapshot) {
                return Some(snapshot);
            }
            if changes.changed().await.is_err() {
                return None;
            }
        }
    })
    .await;
    match found {
        Ok(Some(s)) => s,
        Ok(None) => panic!("watcher stopped while waiting for: {what}"),
        Err(_) => panic!(
            "no snapshot within {WITHIN:?} with: {what}; last: {:?}",
            service_names(&source.snapshot())
        ),
    }
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Writes like `kubectl cp` or an editor's safe save: a hidden temporary file renamed into place,
/// so no reader ever sees it half-written.
fn write_atomic(path: &Path, text: &str) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn changed_file_is_delivered_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.yaml"), "service: a\n");
    write(&dir.path().join("nested/deeper/b.yml"), "service: b\n");
    write(&dir.path().join("notes.txt"), "service: ignored\n");

    let (source, _handle) = watch(loader(dir.path(), None)).unwrap();
    let before = first(&source);
    assert_eq!(service_names(&before), ["a", "b"]);

    write(&dir.path().join("a.yaml"), "service: a\nservice: a2\n");
    let after = expect_snapshot(&source, "a, a2, b", |s| {
        service_names(s) == ["a", "a2", "b"]
    })
    .await;
    // b.yml did not change: its object is the one parsed before, shared, not re-read or copied.
    let b = |s: &Snapshot| {
        s.services
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some("b"))
            .cloned()
            .expect("service b")
    };
    assert!(Arc::ptr_eq(&b(&before), &b(&after)));

    write(&dir.path().join("nested/c.yaml"), "service: c\n");
    expect_snapshot(&source, "new file c", |s| {
        service_names(s) == ["a", "a2", "b", "c"]
    })
    .await;
}

#[tokio::test]
async fn broken_file_keeps_its_last_objects_and_reports_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    write(&a, "service: a\n");
    write(&dir.path().join("b.yaml"), "service: b\n");

    let (source, _handle) = watch(loader(dir.path(), None)).unwrap();
    // Atomic, so that "last good" is the previous version, not a half-written one.
    write_atomic(&a, "service: a-new\nBROKEN\n");
    let s = expect_snapshot(&source, "a diagnostic", |s| !s.diagnostics.is_empty()).await;
    assert_eq!(
        service_names(&s),
        ["a", "b"],
        "a.yaml keeps its last good objects"
    );
    assert_eq!(s.diagnostics.len(), 1);
    let d = &s.diagnostics[0];
    assert_eq!(d.object.kind, "File");
    assert_eq!(d.object.name, a.display().to_string());
    assert_eq!(d.field, "line 2");

    // Fixed: the new objects replace the old ones and the diagnostic goes away.
    write_atomic(&a, "service: a-fixed\n");
    expect_snapshot(&source, "a-fixed, no diagnostic", |s| {
        service_names(s) == ["a-fixed", "b"] && s.diagnostics.is_empty()
    })
    .await;
}

#[tokio::test]
async fn new_broken_file_contributes_only_its_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.yaml"), "service: a\n");
    write(&dir.path().join("b.yaml"), "BROKEN\n");
    let snapshot = DirectoryLoader::with_parser(dir.path(), None, fake_parse)
        .map(|mut l| {
            l.refresh(true);
            l.snapshot()
        })
        .unwrap();
    assert_eq!(service_names(&snapshot), ["a"]);
    assert_eq!(snapshot.diagnostics.len(), 1);
    assert_eq!(snapshot.diagnostics[0].field, "line 1");
}

#[tokio::test]
async fn deleted_file_drops_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.yaml"), "service: a\n");
    write(&dir.path().join("b.yaml"), "service: b\nBROKEN\n");
    let (source, _handle) = watch(loader(dir.path(), None)).unwrap();
    assert_eq!(first(&source).diagnostics.len(), 1);

    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    expect_snapshot(&source, "nothing left", |s| {
        s.services.is_empty() && s.diagnostics.is_empty()
    })
    .await;
}

#[tokio::test]
async fn hidden_entries_are_skipped_and_symlinked_files_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join(".git/config.yaml"), "service: git\n");
    write(&root.join(".swap.yaml"), "service: swap\n");
    // A ConfigMap mount: the real files live in a hidden timestamped directory.
    write(&root.join("..2024_01_01/app.yaml"), "service: app\n");
    std::os::unix::fs::symlink("..2024_01_01", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/app.yaml", root.join("app.yaml")).unwrap();
    // The same file reachable twice more, by a file link and a directory link.
    std::os::unix::fs::symlink("app.yaml", root.join("again.yaml")).unwrap();
    std::os::unix::fs::symlink("..data", root.join("linked-dir")).unwrap();
    // A symlink loop must not hang the walk.
    std::fs::create_dir(root.join("loop")).unwrap();
    std::os::unix::fs::symlink("..", root.join("loop/up")).unwrap();
    // A dangling link (a swap in progress) is skipped.
    std::os::unix::fs::symlink("..data/gone.yaml", root.join("gone.yaml")).unwrap();

    let mut l = loader(root, None);
    l.refresh(true);
    let snapshot = l.snapshot();
    assert_eq!(service_names(&snapshot), ["app"]);
    assert!(
        snapshot.diagnostics.is_empty(),
        "{:?}",
        snapshot.diagnostics
    );
}

/// A ConfigMap update the way the kubelet does it: new timestamped directory, `..data` swapped
/// with a rename, old directory removed. The file's own path never changes.
#[tokio::test]
async fn configmap_symlink_swap_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("..v1/app.yaml"), "service: v1\n");
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/app.yaml", root.join("app.yaml")).unwrap();

    let (source, _handle) = watch(loader(root, None)).unwrap();
    assert_eq!(service_names(&first(&source)), ["v1"]);

    swap_data_dir(root, "..v1", "..v2", &[("app.yaml", "service: v2\n")]);
    expect_snapshot(&source, "v2", |s| service_names(s) == ["v2"]).await;
}

/// Writes `files` into `root/new`, points `..data` at it atomically, removes `root/old`.
fn swap_data_dir(root: &Path, old: &str, new: &str, files: &[(&str, &str)]) {
    for (name, text) in files {
        write(&root.join(new).join(name), text);
    }
    std::os::unix::fs::symlink(new, root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join(old)).unwrap();
}

fn cert_paths_and_pems(snapshot: &Snapshot) -> Vec<(String, String)> {
    snapshot
        .cert_files
        .iter()
        .map(|c| (c.path.clone(), String::from_utf8_lossy(&c.pem).into_owned()))
        .collect()
}

#[tokio::test]
async fn cert_dir_reads_bundles_and_secret_pairs() {
    let manifests = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let c = certs.path();
    write(&c.join("bundle.pem"), "CHAIN-A\nKEY-A\n");
    write(&c.join("split.crt"), "CHAIN-B");
    write(&c.join("split.key"), "KEY-B\n");
    write(&c.join("mounted/tls.crt"), "CHAIN-C\n");
    write(&c.join("mounted/tls.key"), "KEY-C\n");
    write(&c.join("mounted/ca.crt"), "CA\n");
    write(&c.join("readme.txt"), "not a certificate\n");
    write(&c.join(".hidden.pem"), "HIDDEN\n");

    let snapshot = load_once(manifests.path(), Some(c)).unwrap();
    let shown = |p: &str| c.join(p).display().to_string();
    assert_eq!(
        cert_paths_and_pems(&snapshot),
        [
            (shown("bundle.pem"), "CHAIN-A\nKEY-A\n".to_string()),
            (shown("mounted/tls.crt"), "CHAIN-C\nKEY-C\n".to_string()),
            (shown("split.crt"), "CHAIN-B\nKEY-B\n".to_string()),
        ]
    );
}

/// A mounted Secret rotated by the kubelet (`..data` swap) is re-read, both by the watcher and
/// by the metadata rescan alone (in case inotify misses the swap).
#[tokio::test]
async fn rotated_secret_mount_is_re_read() {
    let manifests = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let c = certs.path();
    write(&c.join("..v1/tls.crt"), "CERT-1\n");
    write(&c.join("..v1/tls.key"), "KEY-1\n");
    std::os::unix::fs::symlink("..v1", c.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tls.crt", c.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", c.join("tls.key")).unwrap();

    // The rescan alone (no notify events): refresh(false) compares metadata only.
    let mut rescan_only = loader(manifests.path(), Some(c));
    rescan_only.refresh(false);
    assert_eq!(
        cert_paths_and_pems(&rescan_only.snapshot()),
        [(
            c.join("tls.crt").display().to_string(),
            "CERT-1\nKEY-1\n".to_string()
        )]
    );

    let (source, _handle) = watch(loader(manifests.path(), Some(c))).unwrap();
    assert_eq!(first(&source).cert_files.len(), 1);

    swap_data_dir(
        c,
        "..v1",
        "..v2",
        &[("tls.crt", "CERT-2\n"), ("tls.key", "KEY-2\n")],
    );
    expect_snapshot(&source, "rotated certificate", |s| {
        cert_paths_and_pems(s)
            .first()
            .is_some_and(|(_, pem)| pem == "CERT-2\nKEY-2\n")
    })
    .await;

    assert!(rescan_only.refresh(false), "the rescan sees the swap");
    assert_eq!(
        cert_paths_and_pems(&rescan_only.snapshot())[0].1,
        "CERT-2\nKEY-2\n"
    );
    assert!(!rescan_only.refresh(false), "nothing changed since");
}

#[tokio::test]
async fn missing_directories_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert!(DirectoryLoader::new(&missing, None).is_err());
    let file = dir.path().join("file.yaml");
    write(&file, "");
    assert!(DirectoryLoader::new(&file, None).is_err());
    assert!(DirectoryLoader::new(dir.path(), Some(&missing)).is_err());
}

/// The same bookkeeping with the real manifest parser.
#[tokio::test]
async fn real_parser_broken_yaml_keeps_last_objects() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.yaml");
    write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n  ports:\n  - port: 80\n",
    );
    let (source, _handle) = watch(DirectoryLoader::new(dir.path(), None).unwrap()).unwrap();
    assert_eq!(service_names(&first(&source)), ["web"]);

    write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n",
    );
    let s = expect_snapshot(&source, "a diagnostic", |s| !s.diagnostics.is_empty()).await;
    assert_eq!(service_names(&s), ["web"]);
    assert_eq!(s.diagnostics[0].object.name, file.display().to_string());
    assert!(
        s.diagnostics[0].field.starts_with("line "),
        "{:?}",
        s.diagnostics[0]
    );
}
