//! Two installations against one (mocked) API server: an internal and an external controller,
//! each with its own `--ingress-class`, `--controller-class`, published address and Lease, as
//! ingress-nginx's "Multiple Ingress controllers" guide pairs `--ingress-class`,
//! `--controller-class` and a distinct `--election-id`
//! (https://kubernetes.github.io/ingress-nginx/user-guide/multiple-ingress/). Each writes
//! status to its own Ingresses only, and each holds its own Lease, so both lead at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{Method, StatusCode};
use portcullis::cluster::ControllerSettings;
use portcullis::settings::Settings;
use serde_json::{Value, json};

use crate::support::backends;
use crate::support::mock_api::{
    INGRESSES, LEASES, Lists, MockApi, Reply, Seen, T, controller_settings, endpoint_slice,
    loopback, service, web_ingress,
};
use crate::support::wait::wait_until;

/// IngressClass `name` naming `controller`.
fn class(name: &str, controller: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": name, "resourceVersion": "2"},
        "spec": {"controller": controller},
    })
}

/// [`web_ingress`] `name` of class `class`.
fn ingress_of(class: &str, name: &str) -> Value {
    let mut ingress = web_ingress(name);
    ingress["spec"]["ingressClassName"] = json!(class);
    ingress
}

/// The controller of one installation: class `class` with controller value `controller`,
/// publishing `address`, holding the Lease `lease`, as `identity`.
fn installation(class: &str, controller: &str, address: &str, lease: &str) -> ControllerSettings {
    ControllerSettings {
        ingress_class: class.into(),
        controller_class: controller.into(),
        publish_status_address: vec![address.into()],
        lease_name: lease.into(),
        identity: format!("{class}-0"),
        ..controller_settings()
    }
}

/// Leases of any name in our namespace: GET 404 until created, POST creates, PUT replaces
/// when the resourceVersion is current (409 otherwise). The mock's own Lease server knows one
/// name only.
fn leases() -> impl FnMut(&Seen) -> Option<Reply> + Send + 'static {
    let stored: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    move |r: &Seen| {
        let mut stored = stored.lock().unwrap();
        if r.is(Method::POST, LEASES) {
            let name = r.body["metadata"]["name"].as_str()?.to_string();
            let mut lease = r.body.clone();
            lease["metadata"]["resourceVersion"] = json!("1");
            stored.insert(name, lease.clone());
            return Some(Reply::Json(StatusCode::CREATED, lease));
        }
        let name = r.path.strip_prefix(LEASES)?.strip_prefix('/')?.to_string();
        match r.method {
            Method::GET => Some(match stored.get(&name) {
                Some(lease) => Reply::ok(lease.clone()),
                None => Reply::error(404, "NotFound"),
            }),
            Method::PUT => {
                let current = stored.get(&name)?["metadata"]["resourceVersion"]
                    .as_str()?
                    .to_string();
                if r.body["metadata"]["resourceVersion"] != json!(current) {
                    return Some(Reply::error(409, "Conflict"));
                }
                let next: u64 = current.parse().ok()?;
                let mut lease = r.body.clone();
                lease["metadata"]["resourceVersion"] = json!((next + 1).to_string());
                stored.insert(name, lease.clone());
                Some(Reply::ok(lease))
            }
            _ => None,
        }
    }
}

/// A status patch writing `ip` to Ingress `name`.
fn writes(r: &Seen, name: &str, ip: &str) -> bool {
    r.is(Method::PATCH, &format!("{INGRESSES}/{name}/status"))
        && r.body["status"]["loadBalancer"]["ingress"] == json!([{"ip": ip}])
}

#[tokio::test]
async fn each_installation_writes_status_to_its_own_ingresses_only() {
    let backend = backends::http("web").await;
    let port = backend.addr.port();
    let mut legacy = ingress_of("external", "legacy-api");
    if let Some(spec) = legacy["spec"].as_object_mut() {
        spec.remove("ingressClassName");
    }
    legacy["metadata"]["annotations"] = json!({"kubernetes.io/ingress.class": "external"});
    let lists = Lists::new()
        .of(
            "ingressclasses",
            vec![
                class("internal", "portcullis.io/internal"),
                class("external", "portcullis.io/external"),
                // The external name's twin under the internal controller value: nobody's.
                class("stray", "portcullis.io/internal"),
            ],
        )
        .of(
            "ingresses",
            vec![
                ingress_of("internal", "admin"),
                ingress_of("external", "www"),
                legacy,
                ingress_of("stray", "stray"),
            ],
        )
        .of("services", vec![service("web", ("http", 80), json!(port))])
        .of(
            "endpointslices",
            vec![endpoint_slice("web-1", "web", "127.0.0.1", ("http", port))],
        );
    let mock = MockApi::new(lists).serve(leases());
    let mut controllers = Vec::new();
    for (class, ip) in [("internal", "10.0.0.1"), ("external", "10.0.0.2")] {
        let controller = installation(
            class,
            &format!("portcullis.io/{class}"),
            ip,
            &format!("portcullis-{class}"),
        );
        // As `portcullis controller` does: the model is told the class flags.
        let settings = Settings {
            build: controller.build_settings(),
            ..loopback()
        };
        controllers.push(mock.controller(settings, controller).await);
    }

    mock.wait_count(1, |r| writes(r, "admin", "10.0.0.1")).await;
    mock.wait_count(1, |r| writes(r, "www", "10.0.0.2")).await;
    mock.wait_count(1, |r| writes(r, "legacy-api", "10.0.0.2"))
        .await;

    assert!(
        wait_until(T, || async { mock.open_watches(INGRESSES) >= 2 }).await,
        "not both Ingress watches open"
    );
    // A barrier instead of a sleep: publishes run one after another, each on the newest
    // build, so once a probe added after the initial lists has its status, the publish of
    // those lists (the one that would have written a foreign Ingress) is over.
    for (class, probe, ip) in [
        ("internal", "probe-i", "10.0.0.1"),
        ("external", "probe-e", "10.0.0.2"),
    ] {
        let mut ingress = ingress_of(class, probe);
        ingress["metadata"]["resourceVersion"] = json!("30");
        mock.push(INGRESSES, json!({"type": "ADDED", "object": ingress}));
        mock.wait_count(1, |r| writes(r, probe, ip)).await;
    }

    let mut patches: Vec<(String, Value)> = mock
        .seen_where(Seen::is_status_patch)
        .into_iter()
        .map(|r| {
            let name = r
                .path
                .trim_start_matches(INGRESSES)
                .trim_end_matches("/status");
            (
                name.trim_matches('/').to_string(),
                r.body["status"]["loadBalancer"]["ingress"].clone(),
            )
        })
        .collect();
    patches.sort_by(|a, b| a.0.cmp(&b.0));
    patches.dedup();
    assert_eq!(
        patches,
        [
            ("admin".to_string(), json!([{"ip": "10.0.0.1"}])),
            ("legacy-api".to_string(), json!([{"ip": "10.0.0.2"}])),
            ("probe-e".to_string(), json!([{"ip": "10.0.0.2"}])),
            ("probe-i".to_string(), json!([{"ip": "10.0.0.1"}])),
            ("www".to_string(), json!([{"ip": "10.0.0.2"}])),
        ],
        "each Ingress written once, by its own installation; the stray class by none"
    );
    // Two Leases, one each: neither installation waits on the other's.
    for lease in ["portcullis-internal", "portcullis-external"] {
        assert!(
            mock.count(|r| r.is(Method::POST, LEASES) && r.body["metadata"]["name"] == lease) >= 1,
            "{lease} never created"
        );
    }
    for controller in controllers {
        controller.until_stopped(async {}).await.unwrap();
    }
}
