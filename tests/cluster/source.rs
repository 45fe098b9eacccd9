//! The cluster source against the mocked API server: what it lists and watches (scoping,
//! selectors, pagination), that its snapshot builds like the same objects given directly, and
//! how it rides out 410 Gone, 403, 500, broken streams and a missing CRD (ours, or the Gateway
//! API's).

use crate::support::log_capture::Captured;
use crate::support::mock_api::{
    GATEWAY_API, INGRESSES, Lists, MockApi, Reply, Seen, T, failure, fixture_lists, fixtures,
    ingress,
};
use crate::support::wait::wait_until;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use http::Method;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use portcullis::crd::IngressClassParams;
use portcullis::gateway_api::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant, TLSRoute,
};
use portcullis::model::{self, LastGood};
use portcullis::settings::BuildSettings;
use portcullis::source::kubernetes::{
    Kind, KubeSource, strip_config_map, strip_metadata, strip_secret,
};
use portcullis::source::{Objects, Snapshot};
use serde_json::{Value, json};

/// The names of the Ingresses in the source's store, sorted.
fn ingress_names(source: &KubeSource) -> Vec<String> {
    let mut names: Vec<String> = source
        .snapshot()
        .ingresses
        .iter()
        .map(|i| i.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    names
}

// === requests ===

#[tokio::test]
async fn watch_namespace_scopes_every_namespaced_kind_and_secrets_are_selected() {
    let mock = MockApi::default().start();
    let _source = mock.source(Some("apps")).await;
    // Every watcher: 10 for Ingress, 7 for the Gateway API, 1 for ConfigMaps; none for
    // Namespaces (cluster-scoped, not read when one namespace is watched).
    mock.wait_count(18, Seen::is_watch).await;

    let requests = mock.seen();
    let lists: BTreeSet<(String, Option<String>, Option<String>)> = requests
        .iter()
        .filter(|r| r.is_list())
        .map(|r| {
            assert_eq!(r.q("limit"), Some("500"), "paginated list: {r:?}");
            assert_eq!(r.q("sendInitialEvents"), None, "no streaming lists: {r:?}");
            assert_eq!(r.q("resourceVersion"), None, "quorum list: {r:?}");
            (
                r.path.clone(),
                r.q("fieldSelector").map(str::to_string),
                r.q("labelSelector").map(str::to_string),
            )
        })
        .collect();
    let s = |v: &str| Some(v.to_string());
    let expected: BTreeSet<_> = [
        (INGRESSES.to_string(), None, None),
        (
            "/apis/networking.k8s.io/v1/ingressclasses".into(),
            None,
            None,
        ),
        ("/api/v1/namespaces/apps/services".into(), None, None),
        (
            "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices".into(),
            None,
            None,
        ),
        (
            "/apis/portcullis.io/v1alpha1/ingressclassparams".into(),
            None,
            None,
        ),
        (
            "/api/v1/namespaces/apps/secrets".into(),
            s("type=kubernetes.io/tls"),
            None,
        ),
        (
            "/api/v1/namespaces/apps/secrets".into(),
            None,
            s("portcullis.io/backend-ca=true"),
        ),
        (
            "/api/v1/namespaces/apps/secrets".into(),
            None,
            s("portcullis.io/basic-auth=true"),
        ),
        (
            "/api/v1/namespaces/ingress/secrets".into(),
            s("metadata.name=default-cert"),
            None,
        ),
        (
            "/api/v1/namespaces/ingress/services".into(),
            s("metadata.name=portcullis"),
            None,
        ),
        // GatewayClass is cluster-scoped; ReferenceGrant at v1beta1, which the Gateway API
        // CRDs of both v1.4 and v1.5 serve.
        (
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses".into(),
            None,
            None,
        ),
        (
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/gateways".into(),
            None,
            None,
        ),
        (
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/httproutes".into(),
            None,
            None,
        ),
        (
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/grpcroutes".into(),
            None,
            None,
        ),
        (
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/tlsroutes".into(),
            None,
            None,
        ),
        (
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/backendtlspolicies".into(),
            None,
            None,
        ),
        (
            "/apis/gateway.networking.k8s.io/v1beta1/namespaces/apps/referencegrants".into(),
            None,
            None,
        ),
        ("/api/v1/namespaces/apps/configmaps".into(), None, None),
    ]
    .into_iter()
    .collect();
    assert_eq!(lists, expected);
    assert_eq!(
        requests.iter().filter(|r| r.is_watch()).count(),
        expected.len(),
        "one watch per watcher"
    );

    for watch in requests.iter().filter(|r| r.is_watch()) {
        assert_eq!(
            watch.q("resourceVersion"),
            Some("1"),
            "watch from the list: {watch:?}"
        );
        assert_eq!(watch.q("allowWatchBookmarks"), Some("true"));
        assert_eq!(
            watch.q("sendInitialEvents"),
            None,
            "no streaming lists: {watch:?}"
        );
        let key = (
            watch.path.clone(),
            watch.q("fieldSelector").map(str::to_string),
            watch.q("labelSelector").map(str::to_string),
        );
        assert!(expected.contains(&key), "unexpected watch {watch:?}");
    }
    assert!(
        requests.iter().all(|r| r.method == Method::GET),
        "the source only reads"
    );
}

#[tokio::test]
async fn without_watch_namespace_namespaced_kinds_are_watched_cluster_wide() {
    let mock = MockApi::default().start();
    let _source = mock.source(None).await;
    let paths: BTreeSet<(String, Option<String>)> = mock
        .seen()
        .iter()
        .filter(|r| r.is_list())
        .map(|r| (r.path.clone(), r.q("fieldSelector").map(str::to_string)))
        .collect();
    let expected: BTreeSet<(String, Option<String>)> = [
        ("/apis/networking.k8s.io/v1/ingresses", None),
        ("/apis/networking.k8s.io/v1/ingressclasses", None),
        ("/api/v1/services", None),
        ("/apis/discovery.k8s.io/v1/endpointslices", None),
        ("/apis/portcullis.io/v1alpha1/ingressclassparams", None),
        ("/api/v1/secrets", Some("type=kubernetes.io/tls")),
        ("/api/v1/secrets", None), // the label-selected one
        // The default certificate is in scope: no watcher of its own.
        (
            "/api/v1/namespaces/ingress/services",
            Some("metadata.name=portcullis"),
        ),
        ("/apis/gateway.networking.k8s.io/v1/gatewayclasses", None),
        ("/apis/gateway.networking.k8s.io/v1/gateways", None),
        ("/apis/gateway.networking.k8s.io/v1/httproutes", None),
        ("/apis/gateway.networking.k8s.io/v1/grpcroutes", None),
        ("/apis/gateway.networking.k8s.io/v1/tlsroutes", None),
        (
            "/apis/gateway.networking.k8s.io/v1/backendtlspolicies",
            None,
        ),
        (
            "/apis/gateway.networking.k8s.io/v1beta1/referencegrants",
            None,
        ),
        ("/api/v1/configmaps", None),
        // Every namespace watched: their labels, for Gateway listeners' namespace selectors.
        ("/api/v1/namespaces", None),
    ]
    .into_iter()
    .map(|(p, f)| (p.to_string(), f.map(str::to_string)))
    .collect();
    assert_eq!(paths, expected);
}

// === Namespaces ===

const NAMESPACES: &str = "/api/v1/namespaces";

/// The snapshot's Namespaces as (name, labels), sorted by name.
fn namespace_labels(source: &KubeSource) -> Vec<(String, Option<BTreeMap<String, String>>)> {
    let mut namespaces: Vec<_> = source
        .snapshot()
        .namespaces
        .iter()
        .map(|n| (n.metadata.name.clone().unwrap(), n.metadata.labels.clone()))
        .collect();
    namespaces.sort();
    namespaces
}

/// Watching every namespace, the Namespaces are listed and watched cluster-wide, and the
/// snapshot holds each with its name and labels only; a label change is picked up.
#[tokio::test]
async fn namespaces_are_watched_with_their_name_and_labels_only() {
    let mock = MockApi::new(fixture_lists()).start();
    let source = mock.source(None).await;
    let labels = |pairs: &[(&str, &str)]| {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    assert_eq!(
        namespace_labels(&source),
        [
            (
                "apps".to_string(),
                labels(&[("kubernetes.io/metadata.name", "apps"), ("team", "a")])
            ),
            (
                "shop".to_string(),
                labels(&[("kubernetes.io/metadata.name", "shop")])
            ),
        ]
    );
    // Nothing but the name and the labels: no uid, resourceVersion, annotations,
    // managedFields, spec or status.
    let snapshot = source.snapshot();
    let apps = snapshot
        .namespaces
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some("apps"))
        .unwrap();
    assert_eq!(
        serde_json::to_value(apps.as_ref()).unwrap(),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": "apps",
            "labels": {"kubernetes.io/metadata.name": "apps", "team": "a"},
        }})
    );

    // Watched: a relabelled namespace lands in the next snapshot.
    mock.wait_count(1, |r| r.is_watch() && r.path == NAMESPACES)
        .await;
    assert_eq!(mock.count(|r| r.is_list() && r.path == NAMESPACES), 1);
    mock.push(
        NAMESPACES,
        json!({"type": "MODIFIED", "object": {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop", "resourceVersion": "30",
                         "labels": {"kubernetes.io/metadata.name": "shop", "team": "b"}},
        }}),
    );
    assert!(
        wait_until(T, || async {
            namespace_labels(&source)[1].1
                == labels(&[("kubernetes.io/metadata.name", "shop"), ("team", "b")])
        })
        .await,
        "relabelled namespace picked up: {:?}",
        namespace_labels(&source)
    );
}

/// Watching one namespace, no Namespace is ever requested (a Role could not grant it): the
/// source is ready without them and its snapshot holds none.
#[tokio::test]
async fn with_watch_namespace_no_namespace_is_requested() {
    let mock = MockApi::new(fixture_lists()).start();
    let source = mock.source(Some("apps")).await;
    assert!(source.is_ready());
    // A Namespace watcher would have listed before the source was ready (it gates readiness);
    // every watch has started by now.
    mock.wait_count(18, Seen::is_watch).await;
    let namespace_requests = mock.seen_where(|r| {
        r.rbac()
            .is_ok_and(|a| a.group.is_empty() && a.resource == "namespaces")
    });
    assert!(namespace_requests.is_empty(), "{namespace_requests:#?}");
    assert!(source.snapshot().namespaces.is_empty());
    // Its Ingresses are there: the source serves without the Namespaces.
    assert_eq!(ingress_names(&source), ["a", "b"]);
}

// === one pipeline, two sources ===

#[tokio::test]
async fn snapshot_from_stores_builds_like_the_same_objects_given_directly() {
    let mock = MockApi::new(fixture_lists()).start();
    let source = mock.source(Some("apps")).await;
    // The snapshot's order carries no meaning: compared sorted by namespace and name.
    fn sorted<K: kube::Resource>(objects: &[Arc<K>]) -> Objects<K> {
        let key = |o: &K| (o.meta().namespace.clone(), o.meta().name.clone());
        let mut objects = objects.to_vec();
        objects.sort_by_key(|o| key(o));
        objects.into()
    }
    let mut from_cluster = source.snapshot();
    from_cluster.ingresses = sorted(&from_cluster.ingresses);
    from_cluster.classes = sorted(&from_cluster.classes);
    from_cluster.secrets = sorted(&from_cluster.secrets);
    from_cluster.services = sorted(&from_cluster.services);
    from_cluster.endpoint_slices = sorted(&from_cluster.endpoint_slices);
    from_cluster.class_params = sorted(&from_cluster.class_params);
    from_cluster.gateway_classes = sorted(&from_cluster.gateway_classes);
    from_cluster.gateways = sorted(&from_cluster.gateways);
    from_cluster.http_routes = sorted(&from_cluster.http_routes);
    from_cluster.grpc_routes = sorted(&from_cluster.grpc_routes);
    from_cluster.tls_routes = sorted(&from_cluster.tls_routes);
    from_cluster.backend_tls_policies = sorted(&from_cluster.backend_tls_policies);
    from_cluster.reference_grants = sorted(&from_cluster.reference_grants);
    from_cluster.config_maps = sorted(&from_cluster.config_maps);

    let f = fixtures();
    fn objects<K: serde::de::DeserializeOwned>(values: &[Value], strip: fn(&mut K)) -> Objects<K> {
        values
            .iter()
            .map(|v| {
                let mut o: K = serde_json::from_value(v.clone()).unwrap();
                strip(&mut o);
                Arc::new(o)
            })
            .collect()
    }
    let mut secrets: Vec<Arc<Secret>> = objects(&f["secrets-tls"], strip_secret).to_vec();
    secrets.extend_from_slice(&objects::<Secret>(&f["secrets-ca"][1..], strip_secret)); // `both` once
    secrets.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let direct = Snapshot {
        ingresses: objects::<Ingress>(&f["ingresses"], strip_metadata),
        classes: objects::<IngressClass>(&f["ingressclasses"], strip_metadata),
        secrets: secrets.into(),
        services: objects::<Service>(&f["services"], strip_metadata),
        endpoint_slices: objects::<EndpointSlice>(&f["endpointslices"], strip_metadata),
        class_params: objects::<IngressClassParams>(&f["ingressclassparams"], strip_metadata),
        gateway_classes: objects::<GatewayClass>(&f["gatewayclasses"], strip_metadata),
        gateways: objects::<Gateway>(&f["gateways"], strip_metadata),
        http_routes: objects::<HTTPRoute>(&f["httproutes"], strip_metadata),
        grpc_routes: objects::<GRPCRoute>(&f["grpcroutes"], strip_metadata),
        tls_routes: objects::<TLSRoute>(&f["tlsroutes"], strip_metadata),
        backend_tls_policies: objects::<BackendTLSPolicy>(&f["backendtlspolicies"], strip_metadata),
        reference_grants: objects::<ReferenceGrant>(&f["referencegrants"], strip_metadata),
        config_maps: objects::<ConfigMap>(&f["configmaps"], strip_config_map),
        ..Snapshot::default()
    };

    assert_eq!(from_cluster.ingresses, direct.ingresses);
    assert_eq!(from_cluster.classes, direct.classes);
    assert_eq!(from_cluster.secrets, direct.secrets);
    assert_eq!(from_cluster.services, direct.services);
    assert_eq!(from_cluster.endpoint_slices, direct.endpoint_slices);
    fn json<K: serde::Serialize>(v: &[Arc<K>]) -> Value {
        serde_json::to_value(v).unwrap()
    }
    assert_eq!(json(&from_cluster.class_params), json(&direct.class_params));
    // The Gateway API kinds, one of each, as given.
    for (kind, cluster, direct) in [
        (
            "GatewayClass",
            json(&from_cluster.gateway_classes),
            json(&direct.gateway_classes),
        ),
        (
            "Gateway",
            json(&from_cluster.gateways),
            json(&direct.gateways),
        ),
        (
            "HTTPRoute",
            json(&from_cluster.http_routes),
            json(&direct.http_routes),
        ),
        (
            "GRPCRoute",
            json(&from_cluster.grpc_routes),
            json(&direct.grpc_routes),
        ),
        (
            "TLSRoute",
            json(&from_cluster.tls_routes),
            json(&direct.tls_routes),
        ),
        (
            "BackendTLSPolicy",
            json(&from_cluster.backend_tls_policies),
            json(&direct.backend_tls_policies),
        ),
        (
            "ReferenceGrant",
            json(&from_cluster.reference_grants),
            json(&direct.reference_grants),
        ),
    ] {
        assert_eq!(cluster.as_array().map(Vec::len), Some(1), "{kind}");
        assert_eq!(cluster, direct, "{kind}");
    }
    assert_eq!(from_cluster.config_maps, direct.config_maps);
    // Stripped like the others; a ConfigMap keeps only its CA bundle.
    assert_eq!(
        from_cluster.gateway_classes[0].metadata.managed_fields,
        None
    );
    assert_eq!(from_cluster.gateways[0].metadata.annotations, None);
    assert_eq!(from_cluster.grpc_routes[0].metadata.managed_fields, None);
    assert_eq!(
        from_cluster.gateways[0].spec.listeners[1]
            .hostname
            .as_deref(),
        Some("*.example.com")
    );
    let ca = &from_cluster.config_maps[0];
    assert_eq!(ca.metadata.managed_fields, None);
    assert_eq!(
        ca.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["ca.crt"]
    );
    assert_eq!(ca.binary_data, None);

    // What the stores keep: no managedFields, no last-applied copy, only the Secret keys read.
    let a = &from_cluster.ingresses[0];
    assert_eq!(a.metadata.managed_fields, None);
    let annotations = a.metadata.annotations.as_ref().unwrap();
    assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    assert_eq!(annotations["portcullis.io/tls-mode"], "passthrough");
    let names: Vec<_> = from_cluster
        .secrets
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["backend-ca", "both", "tls"]);
    let ca = &from_cluster.secrets[0];
    assert_eq!(
        ca.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["ca.crt"]
    );
    let tls = &from_cluster.secrets[2];
    assert_eq!(
        tls.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["tls.crt", "tls.key"]
    );

    let settings = BuildSettings::default();
    let built = model::build(&from_cluster, &settings, &LastGood::default());
    let built2 = model::build(&direct, &settings, &LastGood::default());
    assert_eq!(built.table, built2.table);
    assert_eq!(built.diagnostics, built2.diagnostics);
}

// === errors ===

#[tokio::test]
async fn gone_410_relists_and_replaces_the_store() {
    let lists = Arc::new(AtomicUsize::new(0));
    let counter = lists.clone();
    let mock = MockApi::default().serve(move |r| {
        if r.is_list() && r.path == INGRESSES {
            return Some(match counter.fetch_add(1, Ordering::SeqCst) {
                0 => Reply::list(&[ingress("apps", "a", "5")], "5"),
                _ => Reply::list(&[ingress("apps", "b", "9")], "9"),
            });
        }
        None
    });
    let source = mock.source(Some("apps")).await;
    assert_eq!(ingress_names(&source), ["a"]);
    mock.wait_count(1, |r| r.is_watch() && r.path == INGRESSES)
        .await;
    let before = source.changes().borrow().generation;

    mock.push(
        INGRESSES,
        json!({"type": "ERROR", "object": failure(410, "Expired")}),
    );

    assert!(
        wait_until(T, || async { ingress_names(&source) == ["b"] }).await,
        "re-listed after 410"
    );
    assert_eq!(lists.load(Ordering::SeqCst), 2);
    mock.wait_count(1, |r| {
        r.is_watch() && r.path == INGRESSES && r.q("resourceVersion") == Some("9")
    })
    .await;
    assert!(
        source.changes().borrow().generation > before,
        "the re-list is a change"
    );
}

#[tokio::test]
async fn errors_and_broken_streams_keep_the_last_objects_and_retry() {
    let watches = Arc::new(AtomicUsize::new(0));
    let counter = watches.clone();
    let mock = MockApi::default().serve(move |r| {
        if r.path != INGRESSES {
            return None;
        }
        if r.is_list() {
            return Some(Reply::list(&[ingress("apps", "a", "5")], "5"));
        }
        match counter.fetch_add(1, Ordering::SeqCst) {
            0 => Some(Reply::error(500, "InternalError")),
            1 => Some(Reply::error(403, "Forbidden")),
            _ => Some(Reply::Watch),
        }
    });
    let source = mock.source(Some("apps")).await;

    // 500, then 403 on starting the watch: retried with back-off, the store keeps `a`.
    mock.wait_count(3, |r| r.is_watch() && r.path == INGRESSES)
        .await;
    assert_eq!(ingress_names(&source), ["a"]);
    assert!(wait_until(T, || async { mock.open_watches(INGRESSES) == 1 }).await);

    // A broken stream: re-watch from the same resourceVersion, no re-list.
    mock.break_watches(INGRESSES);
    mock.wait_count(4, |r| r.is_watch() && r.path == INGRESSES)
        .await;
    assert_eq!(ingress_names(&source), ["a"]);
    let watches_seen: Vec<_> = mock
        .seen_where(|r| r.is_watch() && r.path == INGRESSES)
        .into_iter()
        .map(|r| r.q("resourceVersion").map(str::to_string))
        .collect();
    assert!(
        watches_seen.iter().all(|v| v.as_deref() == Some("5")),
        "{watches_seen:?}"
    );
    assert_eq!(mock.count(|r| r.is_list() && r.path == INGRESSES), 1);

    // Still alive: a new event lands in the store.
    assert!(wait_until(T, || async { mock.open_watches(INGRESSES) == 1 }).await);
    let generation = source.changes().borrow().generation;
    mock.push(
        INGRESSES,
        json!({"type": "ADDED", "object": ingress("apps", "b", "6")}),
    );
    assert!(wait_until(T, || async { ingress_names(&source) == ["a", "b"] }).await);
    let change = *source.changes().borrow();
    assert!(change.generation > generation && change.at.is_some());
}

#[tokio::test]
async fn a_missing_crd_does_not_block_readiness_and_is_picked_up_later() {
    const SERVICES: &str = "/api/v1/namespaces/apps/services";
    const PARAMS: &str = "/apis/portcullis.io/v1alpha1/ingressclassparams";
    let installed = Arc::new(AtomicBool::new(false));
    let flag = installed.clone();
    let services_failed = Arc::new(AtomicBool::new(false));
    let lists = Lists::new().of(PARAMS, fixtures().remove("ingressclassparams").unwrap());
    let mock = MockApi::new(lists).serve(move |r| {
        if r.is_list() && r.path == SERVICES && !services_failed.swap(true, Ordering::SeqCst) {
            return Some(Reply::error(500, "InternalError"));
        }
        if r.is_list() && r.path == PARAMS && !flag.load(Ordering::SeqCst) {
            return Some(Reply::error(404, "NotFound"));
        }
        None
    });
    let source = mock.source(Some("apps")).await;
    assert!(source.is_ready());
    assert!(source.class_params_crd_missing());
    assert!(source.snapshot().class_params.is_empty());
    // The failed Service list was retried before the source became ready.
    assert_eq!(mock.count(|r| r.is_list() && r.path == SERVICES), 2);

    installed.store(true, Ordering::SeqCst);
    assert!(
        wait_until(T, || async { source.snapshot().class_params.len() == 1 }).await,
        "CRD installed later is picked up"
    );
    assert!(!source.class_params_crd_missing());
}

/// A cluster without the Gateway API CRDs: every one of its seven kinds answers 404. The source
/// is ready and serves Ingresses, says so in one log line (not one per kind, not one per
/// retry), keeps retrying, and picks the CRDs up once they are installed.
#[tokio::test]
async fn without_the_gateway_api_crds_the_source_serves_ingresses_and_picks_them_up_later() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // A current-thread runtime: the reflector tasks log to this thread's subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    const NOT_INSTALLED: &str = "the Gateway API CRDs are not installed; serving Ingress only";

    let installed = Arc::new(AtomicBool::new(false));
    let flag = installed.clone();
    let mock = MockApi::new(fixture_lists()).serve(move |r| {
        (r.is_list() && r.path.starts_with(GATEWAY_API) && !flag.load(Ordering::SeqCst))
            .then(|| Reply::error(404, "NotFound"))
    });
    let source = mock.source(Some("apps")).await;
    assert!(source.is_ready());
    assert_eq!(source.gateway_api_crds_missing(), Kind::GATEWAY_API);
    assert!(!source.class_params_crd_missing());
    let snapshot = source.snapshot();
    assert_eq!(ingress_names(&source), ["a", "b"]);
    assert!(
        snapshot.gateway_classes.is_empty()
            && snapshot.http_routes.is_empty()
            && snapshot.grpc_routes.is_empty()
    );
    assert_eq!(
        snapshot.config_maps.len(),
        1,
        "ConfigMaps are core, always read"
    );

    // Every Gateway API kind retried (listed twice): still one line.
    let gateway_lists = |mock: &crate::support::mock_api::Mock| {
        let lists = mock.seen_where(|r| r.is_list() && r.path.starts_with(GATEWAY_API));
        let paths: BTreeSet<String> = lists.iter().map(|r| r.path.clone()).collect();
        paths
            .into_iter()
            .map(|p| lists.iter().filter(|r| r.path == p).count())
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(T, || async {
            let counts = gateway_lists(&mock);
            counts.len() == 7 && counts.iter().all(|n| *n >= 2)
        })
        .await,
        "each Gateway API kind retried: {:?}",
        gateway_lists(&mock)
    );
    let text = captured.text();
    assert_eq!(text.matches(NOT_INSTALLED).count(), 1, "{text}");
    assert!(source.is_ready());

    installed.store(true, Ordering::SeqCst);
    assert!(
        wait_until(T, || async {
            let s = source.snapshot();
            s.gateway_classes.len() == 1
                && s.gateways.len() == 1
                && s.http_routes.len() == 1
                && s.grpc_routes.len() == 1
                && s.tls_routes.len() == 1
                && s.backend_tls_policies.len() == 1
                && s.reference_grants.len() == 1
        })
        .await,
        "CRDs installed later are picked up"
    );
    assert!(source.gateway_api_crds_missing().is_empty());
    let text = captured.text();
    assert_eq!(text.matches(NOT_INSTALLED).count(), 1, "{text}");
    assert!(
        text.contains("the Gateway API CRDs are installed; serving Gateway API too"),
        "{text}"
    );
}

/// Some Gateway API CRDs but not all (e.g. a release whose standard channel lacks one kind):
/// ready without the missing kind, which is named in a warning; the others are served.
#[tokio::test]
async fn a_missing_gateway_api_kind_is_named_and_the_others_are_served() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    const TLS_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/apps/tlsroutes";
    let mock = MockApi::new(fixture_lists())
        .serve(|r| (r.is_list() && r.path == TLS_ROUTES).then(|| Reply::error(404, "NotFound")));
    let source = mock.source(Some("apps")).await;
    assert_eq!(source.gateway_api_crds_missing(), [Kind::TlsRoute]);
    let snapshot = source.snapshot();
    assert!(snapshot.tls_routes.is_empty());
    assert_eq!(snapshot.gateways.len(), 1);
    assert_eq!(snapshot.http_routes.len(), 1);
    let text = captured.text();
    let warning = text
        .lines()
        .find(|l| l.contains("some Gateway API CRDs are not installed"))
        .unwrap_or_else(|| panic!("no warning naming the missing kind:\n{text}"));
    assert!(warning.contains("missing=TLSRoute"), "{warning}");
    assert!(!text.contains("serving Ingress only"), "{text}");
}
