//! End to end, the built binary: bad input never takes good routes down. A broken YAML file
//! keeps its last good objects and is reported with its file and line; an Ingress with a bad
//! annotation value is reported (naming the Ingress and the annotation), keeps its last good
//! configuration, and leaves the other Ingresses alone; `portcullis check` says the same and
//! exits 1, and exits 0 on a good directory. Deleting a file removes exactly its objects.

use std::time::Duration;

use crate::support::backends;
use crate::support::binary::{Binary, check, diagnostics, hosts};
use crate::support::clients::curl;
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::wait::wait_until;

const GOOD: &str = "good.e2e.test";
const FRAGILE: &str = "fragile.e2e.test";
const TWEAKED: &str = "tweaked.e2e.test";

/// Valid YAML up to line 7, an unclosed flow sequence there.
const BROKEN: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: fragile
  namespace: default
spec:
  rules: [ {host: fragile.e2e.test
";

#[tokio::test]
async fn bad_input_is_reported_and_removes_nothing() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("web", &[backend.addr.port()]));
    manifests::write(m, "good.yaml", &ingress("good", GOOD, "web", &[], None));
    manifests::write(
        m,
        "fragile.yaml",
        &ingress("fragile", FRAGILE, "web", &[], None),
    );
    manifests::write(
        m,
        "tweaked.yaml",
        &ingress("tweaked", TWEAKED, "web", &[], None),
    );
    let proxy = Binary::start(m).await;
    for host in [GOOD, FRAGILE, TWEAKED] {
        assert_eq!(status(&proxy, host).await, 200, "{host} before");
    }

    // Break a file that was good: reported with file and line, its objects keep serving.
    let fragile = manifests::write(m, "fragile.yaml", BROKEN);
    let fragile = fragile.display().to_string();
    let table = proxy
        .wait_for_table(
            Duration::from_secs(5),
            "the broken file's diagnostic",
            |t| diagnostics(t).iter().any(|d| d.contains(&fragile)),
        )
        .await;
    let diag = diagnostics(&table)
        .into_iter()
        .find(|d| d.contains(&fragile))
        .unwrap();
    assert!(diag.contains("line 7"), "{diag}");
    assert!(diag.contains("error"), "{diag}");
    assert!(
        proxy
            .wait_for_log(Duration::from_secs(2), |l| l.contains(&fragile)
                && l.contains("line 7"))
            .await,
        "stderr does not name the file and line:\n{}",
        proxy.log_text()
    );
    assert!(hosts(&table).contains(&FRAGILE.to_string()), "{table:#}");
    assert_eq!(
        status(&proxy, FRAGILE).await,
        200,
        "the broken file's last good objects"
    );
    assert_eq!(status(&proxy, GOOD).await, 200);

    // A bad annotation value on an Ingress that was good: reported, last good kept, others alone.
    manifests::write(
        m,
        "tweaked.yaml",
        &ingress(
            "tweaked",
            TWEAKED,
            "web",
            &[("portcullis.io/tls-mode", "bogus")],
            None,
        ),
    );
    // And a new Ingress that is bad from the start: reported, not served.
    manifests::write(
        m,
        "fresh.yaml",
        &ingress(
            "fresh",
            "fresh.e2e.test",
            "web",
            &[("portcullis.io/tls-mode", "bogus")],
            None,
        ),
    );
    let table = proxy
        .wait_for_table(Duration::from_secs(5), "both annotation diagnostics", |t| {
            let d = diagnostics(t);
            ["Ingress default/tweaked", "Ingress default/fresh"]
                .iter()
                .all(|o| d.iter().any(|d| d.contains(o)))
        })
        .await;
    let annotation_errors: Vec<String> = diagnostics(&table)
        .into_iter()
        .filter(|d| d.starts_with("error Ingress default/"))
        .collect();
    assert_eq!(annotation_errors.len(), 2, "{annotation_errors:#?}");
    for d in &annotation_errors {
        assert!(d.contains("portcullis.io/tls-mode"), "{d}");
        assert!(d.contains("bogus"), "{d}");
        assert!(d.contains("terminate, passthrough, reencrypt"), "{d}");
    }
    assert_eq!(
        status(&proxy, TWEAKED).await,
        200,
        "last good configuration kept"
    );
    assert_eq!(status(&proxy, "fresh.e2e.test").await, 404);
    assert_eq!(status(&proxy, GOOD).await, 200);
    assert_eq!(status(&proxy, FRAGILE).await, 200);

    // `portcullis check` on the same directory: the same diagnostics, exit 1.
    let out = check(m);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&fragile) && text.contains("line 7"), "{text}");
    for ingress in ["Ingress default/tweaked", "Ingress default/fresh"] {
        // The Ingress's verdict line comes first; its error diagnostic follows it.
        let line = text
            .lines()
            .find(|l| l.contains(ingress) && l.contains("error"))
            .unwrap_or_else(|| panic!("no error diagnostic for {ingress}:\n{text}"));
        assert!(line.contains("portcullis.io/tls-mode"), "{line}");
        assert!(line.contains("\"bogus\""), "{line}");
    }
    // The good Ingress is still listed.
    assert!(
        text.contains(&format!("{GOOD}  (terminate, owner default/good)")),
        "{text}"
    );

    // Fix everything: the good directory checks clean, exit 0, and the listing names the
    // host, mode and backend.
    manifests::write(
        m,
        "fragile.yaml",
        &ingress("fragile", FRAGILE, "web", &[], None),
    );
    std::fs::remove_file(m.join("tweaked.yaml")).unwrap();
    std::fs::remove_file(m.join("fresh.yaml")).unwrap();
    let out = check(m);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("{FRAGILE}  (terminate, owner default/fragile)")),
        "{text}"
    );
    let backend_line = format!("default/web:80 → 127.0.0.1:{}", backend.addr.port());
    assert!(
        text.contains(&backend_line),
        "{backend_line} missing:\n{text}"
    );
    // Warnings only (these plain-HTTP hosts have no certificate of their own).
    assert!(!text.contains("error:"), "{text}");
    // The running binary agrees: no errors left.
    proxy
        .wait_for_table(Duration::from_secs(5), "no error diagnostics", |t| {
            diagnostics(t).iter().all(|d| d.starts_with("warning "))
        })
        .await;

    // Deleting a file removes its objects (and nothing else).
    std::fs::remove_file(m.join("good.yaml")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            status(&proxy, GOOD).await == 404
        })
        .await,
        "{GOOD} still served after its file was deleted"
    );
    assert_eq!(status(&proxy, FRAGILE).await, 200);
}

async fn status(proxy: &Binary, host: &str) -> u16 {
    curl("http", host, proxy.http, "/", &[]).await.status
}
