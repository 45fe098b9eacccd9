//! Cluster mode against a scripted Kubernetes API server: kube's `Client` over a `tower-test`
//! mock service. Every request the controller makes is recorded and asserted: watch scoping and
//! selectors, status patches, Events, Lease create/renew; and the behaviour on 410 Gone, 403,
//! 500 and broken streams. Every request is also checked against the RBAC that src/cluster/rbac.rs
//! declares (`RbacCheck`: an undeclared call fails the test that made it), and the
//! `watching_*_the_controller_calls_exactly_what_src_rbac_declares` tests fail on a declared
//! grant the controller never uses.

use crate::support::{backends, keep_alive, pki, wait};

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use keep_alive::{Conn, Via};
use kube::Client;
use kube::client::Body;
use portcullis::cluster::rbac;
use portcullis::cluster::status::{
    ClusterView, LeaderElector, LeaseSettings, Publisher, PublisherSettings, StatusAddresses,
    parse_status_addresses,
};
use portcullis::cluster::{self, Cluster, Controller, ControllerSettings};
use portcullis::crd::IngressClassParams;
use portcullis::model::{self, Built, LastGood};
use portcullis::runtime::Addresses;
use portcullis::settings::{BuildSettings, Settings};
use portcullis::source::Snapshot;
use portcullis::source::kubernetes::{KubeSource, SourceSettings, strip_metadata, strip_secret};
use portcullis::table::RouteTable;
use portcullis::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use wait::wait_until;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ResBody = UnsyncBoxBody<Bytes, BoxError>;

const T: Duration = Duration::from_secs(20);

// === the scripted API server ===

/// One request as the API server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    body: Value,
}

impl Seen {
    fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn is_watch(&self) -> bool {
        self.method == Method::GET && self.q("watch") == Some("true")
    }
    fn is_list(&self) -> bool {
        self.method == Method::GET && !self.is_watch()
    }
    fn is(&self, method: Method, path: &str) -> bool {
        self.method == method && self.path == path
    }

    /// The request's RBAC attributes, derived as the API server's authorizer does (its
    /// RequestInfo): the API group from `/api/v1` (core) or `/apis/GROUP/VERSION`; the namespace
    /// from `namespaces/NS/…`; then `RESOURCE[/NAME[/SUBRESOURCE]]`; the verb from the method:
    /// GET is `get` with a name, else `list`, or `watch` with `watch=true`; POST `create`, PUT
    /// `update`, PATCH `patch`, DELETE `delete` (`deletecollection` without a name). Anything
    /// else (a non-resource URL such as `/version`, or discovery) is an error: no entry of
    /// `src/cluster/rbac.rs` can grant it.
    fn rbac(&self) -> Result<rbac::Request, String> {
        let parts: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["api", "v1", rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return Err("a non-resource URL".into()),
        };
        let (namespace, rest) = match rest {
            // `/api/v1/namespaces/NS` alone is the Namespace itself.
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            rest => (None, rest),
        };
        let (resource, name) = match rest {
            [resource] => (resource.to_string(), None),
            [resource, name] => (resource.to_string(), Some(name)),
            [resource, name, subresource] => (format!("{resource}/{subresource}"), Some(name)),
            _ => return Err("not a resource path".into()),
        };
        let watch = matches!(self.q("watch"), Some("true" | "1"));
        let verb = match (&self.method, name) {
            (&Method::GET, _) if watch => "watch",
            (&Method::GET, None) => "list",
            (&Method::GET, Some(_)) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, None) => "deletecollection",
            (&Method::DELETE, Some(_)) => "delete",
            (method, _) => return Err(format!("method {method}")),
        };
        Ok(rbac::Request {
            verb: verb.into(),
            group: group.into(),
            resource,
            namespace,
        })
    }

    /// Why `grants` refuse this request, if they do.
    fn refused_by(&self, grants: &BTreeSet<rbac::Grant>) -> Option<String> {
        match self.rbac() {
            Ok(request) if rbac::permitted(grants, &request) => None,
            Ok(request) => Some(format!(
                "{} {}: {request:?} is not in src/cluster/rbac.rs API_ACCESS",
                self.method, self.path
            )),
            Err(why) => Some(format!(
                "{} {}: {why}, which no RBAC rule of src/cluster/rbac.rs grants",
                self.method, self.path
            )),
        }
    }
}

/// The tests' release namespace: where the controller keeps its Lease and finds its
/// `--publish-service` Service and `--default-certificate` Secret (the chart's release
/// namespace).
const OWN_NAMESPACE: &str = "ingress";

/// What the chart grants with default values (every namespace watched): every request of every
/// test is checked against it as it arrives.
fn default_grants() -> BTreeSet<rbac::Grant> {
    rbac::grants(OWN_NAMESPACE, None)
}

/// Fails the test that owns the mock when its end comes and the controller made a request
/// that [`default_grants`] refuse, that is a call `src/cluster/rbac.rs` does not declare.
struct RbacCheck {
    refused: Arc<Mutex<Vec<String>>>,
}

impl Drop for RbacCheck {
    fn drop(&mut self) {
        let refused = std::mem::take(&mut *self.refused.lock().unwrap());
        if refused.is_empty() {
            return;
        }
        let message = format!(
            "the controller made API requests that src/cluster/rbac.rs does not grant (declare them in \
             API_ACCESS, and the chart will have to grant them too):\n{}",
            refused.join("\n")
        );
        if std::thread::panicking() {
            eprintln!("{message}");
        } else {
            panic!("{message}");
        }
    }
}

enum Reply {
    Json(StatusCode, Value),
    /// A watch stream the test feeds with `Mock::push` and ends with `Mock::break_watches`.
    Watch,
}

type Handler = Box<dyn FnMut(&Seen) -> Option<Reply> + Send>;

#[derive(Clone)]
struct Mock {
    client: Client,
    seen: Arc<Mutex<Vec<Seen>>>,
    watches: Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Bytes>>>>>,
    /// Every request [`default_grants`] refuse, as it arrived; checked when the last clone of
    /// the mock is dropped.
    rbac: Arc<RbacCheck>,
}

impl Mock {
    /// Starts the server; `handler` answers what it wants, the rest gets [`default_reply`].
    fn start(handler: impl FnMut(&Seen) -> Option<Reply> + Send + 'static) -> Mock {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<ResBody>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let watches: Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Bytes>>>>> =
            Arc::default();
        let mut handler: Handler = Box::new(handler);
        let (seen2, watches2) = (seen.clone(), watches.clone());
        let refused: Arc<Mutex<Vec<String>>> = Arc::default();
        let (refused2, grants) = (refused.clone(), default_grants());
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let query = parts.uri.query().map(url_pairs).unwrap_or_default();
                let request = Seen {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_string(),
                    query,
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .map(|v| v.to_str().unwrap().to_string()),
                    body: if bytes.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&bytes).unwrap()
                    },
                };
                if let Some(why) = request.refused_by(&grants) {
                    refused2.lock().unwrap().push(why);
                }
                let reply = handler(&request).unwrap_or_else(|| default_reply(&request));
                seen2.lock().unwrap().push(request.clone());
                let response = match reply {
                    Reply::Json(status, value) => Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(
                            Full::new(Bytes::from(value.to_string()))
                                .map_err(|e| -> BoxError { match e {} })
                                .boxed_unsync(),
                        )
                        .unwrap(),
                    Reply::Watch => {
                        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
                        watches2
                            .lock()
                            .unwrap()
                            .entry(request.path.clone())
                            .or_default()
                            .push(tx);
                        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                            let line = rx.recv().await?;
                            Some((Ok::<_, BoxError>(Frame::data(line)), rx))
                        });
                        Response::builder()
                            .status(StatusCode::OK)
                            .header("content-type", "application/json")
                            .body(StreamBody::new(stream).boxed_unsync())
                            .unwrap()
                    }
                };
                send.send_response(response);
            }
        });
        Mock {
            client: Client::new(service, "default"),
            seen,
            watches,
            rbac: Arc::new(RbacCheck { refused }),
        }
    }

    /// The requests refused so far by the RBAC check, which forgets them: for a test that
    /// makes them on purpose.
    fn take_refused(&self) -> Vec<String> {
        std::mem::take(&mut *self.rbac.refused.lock().unwrap())
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.requests().iter().filter(|s| f(s)).count()
    }

    async fn wait_count(&self, n: usize, f: impl Fn(&Seen) -> bool) {
        let f = &f;
        assert!(
            wait_until(T, || async move { self.count(f) >= n }).await,
            "expected {n} matching requests; saw {:#?}",
            self.requests()
        );
    }

    /// Sends one watch event on every open watch of `path`.
    fn push(&self, path: &str, event: Value) {
        let watches = self.watches.lock().unwrap();
        let open = watches.get(path).expect("no watch open on this path");
        let mut line = event.to_string().into_bytes();
        line.push(b'\n');
        for tx in open {
            let _ = tx.send(Bytes::from(line.clone()));
        }
    }

    /// Ends every open watch stream of `path`, as a dropped connection would.
    fn break_watches(&self, path: &str) {
        self.watches.lock().unwrap().remove(path);
    }

    fn open_watches(&self, path: &str) -> usize {
        self.watches
            .lock()
            .unwrap()
            .get(path)
            .map_or(0, |v| v.iter().filter(|tx| !tx.is_closed()).count())
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// Lists: empty at resourceVersion 1; watches: held open; writes: echoed.
fn default_reply(request: &Seen) -> Reply {
    if request.is_watch() {
        return Reply::Watch;
    }
    match request.method {
        Method::GET => Reply::Json(StatusCode::OK, list(&[], "1")),
        Method::POST => {
            let mut body = request.body.clone();
            body["metadata"]["resourceVersion"] = json!("1");
            Reply::Json(StatusCode::CREATED, body)
        }
        _ => Reply::Json(StatusCode::OK, request.body.clone()),
    }
}

fn list(items: &[Value], resource_version: &str) -> Value {
    json!({ "metadata": { "resourceVersion": resource_version }, "items": items })
}

fn status(code: u16, reason: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": format!("scripted {code}"), "reason": reason, "code": code,
    })
}

fn error_reply(code: u16, reason: &str) -> Reply {
    Reply::Json(StatusCode::from_u16(code).unwrap(), status(code, reason))
}

// === fixtures ===

fn ingress(ns: &str, name: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {
            "name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": rv,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"huge\":\"copy\"}",
                "portcullis.io/tls-mode": "passthrough",
            },
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "networking.k8s.io/v1"}],
        },
        "spec": {
            "ingressClassName": "portcullis",
            "rules": [{"host": format!("{name}.example.com"), "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 443}}},
            }]}}],
        },
    })
}

fn fixtures() -> HashMap<&'static str, Vec<Value>> {
    let tls_secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "tls", "namespace": "apps", "resourceVersion": "3"},
        "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5", "other": "ZHJvcA=="},
    });
    let both = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "both", "namespace": "apps", "resourceVersion": "4",
                     "labels": {"portcullis.io/backend-ca": "true"}},
        "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5", "ca.crt": "Y2E="},
    });
    let ca = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "backend-ca", "namespace": "apps", "resourceVersion": "5",
                     "labels": {"portcullis.io/backend-ca": "true"},
                     "managedFields": [{"manager": "helm"}]},
        "data": {"ca.crt": "Y2E=", "password": "c2VjcmV0"},
    });
    HashMap::from([
        (
            "ingresses",
            vec![ingress("apps", "a", "10"), ingress("apps", "b", "11")],
        ),
        (
            "ingressclasses",
            vec![json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "portcullis", "resourceVersion": "2",
                             "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
                "spec": {"controller": "portcullis.io/ingress-controller",
                         "parameters": {"apiGroup": "portcullis.io", "kind": "IngressClassParams", "name": "default"}},
            })],
        ),
        (
            "services",
            vec![json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "apps", "resourceVersion": "6"},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]},
            })],
        ),
        (
            "endpointslices",
            vec![json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-abc", "namespace": "apps", "resourceVersion": "7",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": true}}],
                "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}],
            })],
        ),
        (
            "ingressclassparams",
            vec![json!({
                "apiVersion": "portcullis.io/v1alpha1", "kind": "IngressClassParams",
                "metadata": {"name": "default", "resourceVersion": "8"},
                "spec": {"passthrough": {"allowed": true, "namespaces": ["apps"]}},
            })],
        ),
        ("secrets-tls", vec![tls_secret, both.clone()]),
        ("secrets-ca", vec![both, ca]),
    ])
}

/// Serves [`fixtures`] for the list of each kind (by the last path segment and selector).
fn fixture_lists(request: &Seen) -> Option<Reply> {
    if !request.is_list() {
        return None;
    }
    let fixtures = fixtures();
    let last = request.path.rsplit('/').next().unwrap();
    let key = match (last, request.q("fieldSelector"), request.q("labelSelector")) {
        ("secrets", Some("type=kubernetes.io/tls"), None) => "secrets-tls",
        ("secrets", None, Some("portcullis.io/backend-ca=true")) => "secrets-ca",
        ("secrets", _, _) => return Some(Reply::Json(StatusCode::OK, list(&[], "1"))),
        (other, _, _) => fixtures.keys().find(|k| **k == other).copied()?,
    };
    Some(Reply::Json(StatusCode::OK, list(&fixtures[key], "20")))
}

fn source_settings(ns: Option<&str>) -> SourceSettings {
    SourceSettings {
        watch_namespace: ns.map(str::to_string),
        publish_service: Some(("ingress".into(), "portcullis".into())),
        default_certificate: Some(("ingress".into(), "default-cert".into())),
    }
}

async fn ready(source: &KubeSource) {
    tokio::time::timeout(T, source.wait_ready())
        .await
        .expect("source not ready in time")
        .unwrap();
}

const INGRESSES: &str = "/apis/networking.k8s.io/v1/namespaces/apps/ingresses";

// === source: requests ===

#[tokio::test]
async fn watch_namespace_scopes_every_namespaced_kind_and_secrets_are_selected() {
    let mock = Mock::start(|_| None);
    let source = KubeSource::start(mock.client.clone(), &source_settings(Some("apps")));
    ready(&source).await;
    mock.wait_count(9, Seen::is_watch).await;

    let requests = mock.requests();
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
            "/api/v1/namespaces/ingress/secrets".into(),
            s("metadata.name=default-cert"),
            None,
        ),
        (
            "/api/v1/namespaces/ingress/services".into(),
            s("metadata.name=portcullis"),
            None,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(lists, expected);

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
    let mock = Mock::start(|_| None);
    let source = KubeSource::start(mock.client.clone(), &source_settings(None));
    ready(&source).await;
    let paths: BTreeSet<(String, Option<String>)> = mock
        .requests()
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
    ]
    .into_iter()
    .map(|(p, f)| (p.to_string(), f.map(str::to_string)))
    .collect();
    assert_eq!(paths, expected);
}

// === source: one pipeline, two sources ===

#[tokio::test]
async fn snapshot_from_stores_builds_like_the_same_objects_given_directly() {
    let mock = Mock::start(fixture_lists);
    let source = KubeSource::start(mock.client.clone(), &source_settings(Some("apps")));
    ready(&source).await;
    // The snapshot's order carries no meaning: compared sorted by namespace and name.
    fn sorted<K: kube::Resource>(mut objects: Vec<Arc<K>>) -> Vec<Arc<K>> {
        let key = |o: &K| (o.meta().namespace.clone(), o.meta().name.clone());
        objects.sort_by_key(|o| key(o));
        objects
    }
    let mut from_cluster = source.snapshot();
    from_cluster.ingresses = sorted(from_cluster.ingresses);
    from_cluster.classes = sorted(from_cluster.classes);
    from_cluster.secrets = sorted(from_cluster.secrets);
    from_cluster.services = sorted(from_cluster.services);
    from_cluster.endpoint_slices = sorted(from_cluster.endpoint_slices);
    from_cluster.class_params = sorted(from_cluster.class_params);

    let f = fixtures();
    fn objects<K: serde::de::DeserializeOwned>(values: &[Value], strip: fn(&mut K)) -> Vec<Arc<K>> {
        values
            .iter()
            .map(|v| {
                let mut o: K = serde_json::from_value(v.clone()).unwrap();
                strip(&mut o);
                Arc::new(o)
            })
            .collect()
    }
    let mut secrets: Vec<Arc<Secret>> = objects(&f["secrets-tls"], strip_secret);
    secrets.extend(objects::<Secret>(&f["secrets-ca"][1..], strip_secret)); // `both` once
    secrets.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let direct = Snapshot {
        ingresses: objects::<Ingress>(&f["ingresses"], strip_metadata),
        classes: objects::<IngressClass>(&f["ingressclasses"], strip_metadata),
        secrets,
        services: objects::<Service>(&f["services"], strip_metadata),
        endpoint_slices: objects::<EndpointSlice>(&f["endpointslices"], strip_metadata),
        class_params: objects::<IngressClassParams>(&f["ingressclassparams"], strip_metadata),
        ..Snapshot::default()
    };

    assert_eq!(from_cluster.ingresses, direct.ingresses);
    assert_eq!(from_cluster.classes, direct.classes);
    assert_eq!(from_cluster.secrets, direct.secrets);
    assert_eq!(from_cluster.services, direct.services);
    assert_eq!(from_cluster.endpoint_slices, direct.endpoint_slices);
    let json = |v: &[Arc<IngressClassParams>]| serde_json::to_value(v).unwrap();
    assert_eq!(json(&from_cluster.class_params), json(&direct.class_params));

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

// === source: errors ===

#[tokio::test]
async fn gone_410_relists_and_replaces_the_store() {
    let lists = Arc::new(AtomicUsize::new(0));
    let counter = lists.clone();
    let mock = Mock::start(move |r| {
        if r.is_list() && r.path == INGRESSES {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let items = if n == 0 {
                vec![ingress("apps", "a", "5")]
            } else {
                vec![ingress("apps", "b", "9")]
            };
            return Some(Reply::Json(
                StatusCode::OK,
                list(&items, if n == 0 { "5" } else { "9" }),
            ));
        }
        None
    });
    let source = KubeSource::start(mock.client.clone(), &source_settings(Some("apps")));
    ready(&source).await;
    let names = |s: &KubeSource| -> Vec<String> {
        let mut names: Vec<String> = s
            .snapshot()
            .ingresses
            .iter()
            .map(|i| i.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&source), ["a"]);
    mock.wait_count(1, |r| r.is_watch() && r.path == INGRESSES)
        .await;
    let before = source.changes().borrow().generation;

    mock.push(
        INGRESSES,
        json!({"type": "ERROR", "object": status(410, "Expired")}),
    );

    assert!(
        wait_until(T, || async { names(&source) == ["b"] }).await,
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
    let mock = Mock::start(move |r| {
        if r.path != INGRESSES {
            return None;
        }
        if r.is_list() {
            return Some(Reply::Json(
                StatusCode::OK,
                list(&[ingress("apps", "a", "5")], "5"),
            ));
        }
        match counter.fetch_add(1, Ordering::SeqCst) {
            0 => Some(error_reply(500, "InternalError")),
            1 => Some(error_reply(403, "Forbidden")),
            _ => Some(Reply::Watch),
        }
    });
    let source = KubeSource::start(mock.client.clone(), &source_settings(Some("apps")));
    ready(&source).await;
    let names = |s: &KubeSource| -> Vec<String> {
        let mut names: Vec<String> = s
            .snapshot()
            .ingresses
            .iter()
            .map(|i| i.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        names
    };

    // 500, then 403 on starting the watch: retried with back-off, the store keeps `a`.
    mock.wait_count(3, |r| r.is_watch() && r.path == INGRESSES)
        .await;
    assert_eq!(names(&source), ["a"]);
    assert!(wait_until(T, || async { mock.open_watches(INGRESSES) == 1 }).await);

    // A broken stream: re-watch from the same resourceVersion, no re-list.
    mock.break_watches(INGRESSES);
    mock.wait_count(4, |r| r.is_watch() && r.path == INGRESSES)
        .await;
    assert_eq!(names(&source), ["a"]);
    let watches_seen: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.is_watch() && r.path == INGRESSES)
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
    assert!(wait_until(T, || async { names(&source) == ["a", "b"] }).await);
    let change = *source.changes().borrow();
    assert!(change.generation > generation && change.at.is_some());
}

#[tokio::test]
async fn a_missing_crd_does_not_block_readiness_and_is_picked_up_later() {
    let installed = Arc::new(AtomicBool::new(false));
    let flag = installed.clone();
    let services_failed = Arc::new(AtomicBool::new(false));
    let mock = Mock::start(move |r| {
        if r.is_list()
            && r.path == "/api/v1/namespaces/apps/services"
            && !services_failed.swap(true, Ordering::SeqCst)
        {
            return Some(error_reply(500, "InternalError"));
        }
        if r.is_list() && r.path == "/apis/portcullis.io/v1alpha1/ingressclassparams" {
            if !flag.load(Ordering::SeqCst) {
                return Some(error_reply(404, "NotFound"));
            }
            return fixture_lists(r);
        }
        None
    });
    let source = KubeSource::start(mock.client.clone(), &source_settings(Some("apps")));
    ready(&source).await;
    assert!(source.is_ready());
    assert!(source.class_params_crd_missing());
    assert!(source.snapshot().class_params.is_empty());
    // The failed Service list was retried before the source became ready.
    assert_eq!(
        mock.count(|r| r.is_list() && r.path == "/api/v1/namespaces/apps/services"),
        2
    );

    installed.store(true, Ordering::SeqCst);
    assert!(
        wait_until(T, || async { source.snapshot().class_params.len() == 1 }).await,
        "CRD installed later is picked up"
    );
    assert!(!source.class_params_crd_missing());
}

// === leader election ===

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ingress/leases/portcullis-leader";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ingress/leases";

fn lease_settings() -> LeaseSettings {
    LeaseSettings::new("ingress", "portcullis-leader", "pod-a")
}

/// Lease server: GET 404 until created; POST creates (rv 1); PUT bumps rv, 409 on a stale rv.
fn lease_server() -> impl FnMut(&Seen) -> Option<Reply> + Send + 'static {
    let mut stored: Option<Value> = None;
    move |r| {
        if r.is(Method::GET, LEASE) {
            return Some(match &stored {
                Some(l) => Reply::Json(StatusCode::OK, l.clone()),
                None => error_reply(404, "NotFound"),
            });
        }
        if r.is(Method::POST, LEASES) {
            let mut l = r.body.clone();
            l["metadata"]["resourceVersion"] = json!("1");
            stored = Some(l.clone());
            return Some(Reply::Json(StatusCode::CREATED, l));
        }
        if r.is(Method::PUT, LEASE) {
            let current = stored.as_ref()?["metadata"]["resourceVersion"]
                .as_str()?
                .to_string();
            if r.body["metadata"]["resourceVersion"] != json!(current) {
                return Some(error_reply(409, "Conflict"));
            }
            let mut l = r.body.clone();
            let next = current.parse::<u64>().unwrap() + 1;
            l["metadata"]["resourceVersion"] = json!(next.to_string());
            stored = Some(l.clone());
            return Some(Reply::Json(StatusCode::OK, l));
        }
        None
    }
}

#[tokio::test]
async fn lease_is_created_then_renewed_with_its_resource_version() {
    let mock = Mock::start(lease_server());
    let mut elector = LeaderElector::new(mock.client.clone(), lease_settings());
    let leadership = elector.leadership();
    assert!(!leadership.is_leader());
    assert!(elector.step().await.unwrap());
    assert!(leadership.is_leader());
    assert!(elector.step().await.unwrap());

    let r = mock.requests();
    assert_eq!(r.len(), 3, "{r:#?}");
    assert!(r[0].is(Method::GET, LEASE));
    assert!(r[1].is(Method::POST, LEASES));
    let spec = &r[1].body["spec"];
    assert_eq!(r[1].body["metadata"]["name"], "portcullis-leader");
    assert_eq!(spec["holderIdentity"], "pod-a");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);
    assert!(spec["acquireTime"].is_string() && spec["renewTime"].is_string());
    // Renewal: a PUT straight away, guarded by the resourceVersion the create returned.
    assert!(r[2].is(Method::PUT, LEASE));
    assert_eq!(r[2].body["metadata"]["resourceVersion"], "1");
    assert_eq!(r[2].body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(r[2].body["spec"]["acquireTime"], spec["acquireTime"]);
    assert_eq!(r[2].body["spec"]["leaseTransitions"], 0);
}

fn foreign_lease(renew_time: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "portcullis-leader", "namespace": "ingress", "resourceVersion": "7"},
        "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 1, "leaseTransitions": 3,
                 "acquireTime": renew_time, "renewTime": renew_time},
    })
}

#[tokio::test]
async fn a_held_lease_is_respected_until_it_expires_then_taken_over() {
    let mock = Mock::start(|r| {
        if r.is(Method::GET, LEASE) {
            return Some(Reply::Json(
                StatusCode::OK,
                foreign_lease("2026-01-01T00:00:00.000000Z"),
            ));
        }
        if r.is(Method::PUT, LEASE) {
            return Some(Reply::Json(StatusCode::OK, r.body.clone()));
        }
        None
    });
    let mut elector = LeaderElector::new(mock.client.clone(), lease_settings());
    assert!(!elector.step().await.unwrap(), "pod-b holds it");
    assert!(!elector.leadership().is_leader());
    assert_eq!(mock.count(|r| r.method == Method::PUT), 0);

    // Unchanged for longer than its leaseDurationSeconds (1 s) on our clock: expired.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(elector.step().await.unwrap());
    let put = mock
        .requests()
        .into_iter()
        .find(|r| r.method == Method::PUT)
        .unwrap();
    assert_eq!(put.path, LEASE);
    assert_eq!(put.body["metadata"]["resourceVersion"], "7");
    assert_eq!(put.body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(put.body["spec"]["leaseTransitions"], 4);
    assert_eq!(put.body["spec"]["leaseDurationSeconds"], 15);
}

// === publisher ===

#[derive(Default)]
struct FakeView {
    ingresses: Mutex<HashMap<(String, String), Arc<Ingress>>>,
    publish_service: Mutex<Option<Arc<Service>>>,
}

impl FakeView {
    fn put(&self, value: Value) {
        let i: Ingress = serde_json::from_value(value).unwrap();
        let key = (
            i.metadata.namespace.clone().unwrap(),
            i.metadata.name.clone().unwrap(),
        );
        self.ingresses.lock().unwrap().insert(key, Arc::new(i));
    }
}

impl ClusterView for FakeView {
    fn ingress(&self, namespace: &str, name: &str) -> Option<Arc<Ingress>> {
        self.ingresses
            .lock()
            .unwrap()
            .get(&(namespace.into(), name.into()))
            .cloned()
    }
    fn publish_service(&self) -> Option<Arc<Service>> {
        self.publish_service.lock().unwrap().clone()
    }
    fn uid(&self, object: &ObjectRef) -> Option<String> {
        Some(format!("uid-{}", object.name))
    }
}

fn with_status(mut ingress: Value, lb: Value) -> Value {
    ingress["status"] = json!({"loadBalancer": {"ingress": lb}});
    ingress
}

fn ingress_ref(ns: &str, name: &str) -> ObjectRef {
    ObjectRef::namespaced("Ingress", ns, name)
}

fn built(diagnostics: Vec<Diagnostic>) -> Built {
    Built {
        table: Arc::new(RouteTable::default()),
        diagnostics,
        last_good: LastGood::default(),
        ours: Vec::new(),
    }
}

fn publisher_settings(addresses: StatusAddresses) -> PublisherSettings {
    PublisherSettings {
        addresses,
        watch_namespace: Some("apps".into()),
        update_status_on_shutdown: false,
        identity: "pod-a".into(),
    }
}

/// A leader (the lease created through the mock) and a publisher over `view`.
async fn leader_publisher(
    mock: &Mock,
    view: &Arc<FakeView>,
    settings: PublisherSettings,
) -> (LeaderElector, Publisher) {
    let mut elector = LeaderElector::new(mock.client.clone(), lease_settings());
    assert!(elector.step().await.unwrap());
    let view: Arc<dyn ClusterView> = view.clone();
    let publisher = Publisher::new(mock.client.clone(), settings, elector.leadership(), view);
    (elector, publisher)
}

fn is_status_patch(r: &Seen) -> bool {
    r.method == Method::PATCH && r.path.ends_with("/status")
}

#[tokio::test]
async fn status_is_patched_only_on_our_ingresses_and_only_when_it_differs() {
    let mock = Mock::start(lease_server());
    let view = Arc::new(FakeView::default());
    view.put(ingress("apps", "a", "10"));
    view.put(with_status(
        ingress("apps", "b", "11"),
        json!([{"hostname": "lb.example.com"}, {"ip": "10.0.0.1"}]),
    ));
    view.put(ingress("apps", "other-class", "12"));
    view.put(ingress("elsewhere", "d", "13"));
    let addresses = StatusAddresses::Static(parse_status_addresses("10.0.0.1,lb.example.com"));
    let (_elector, publisher) = leader_publisher(&mock, &view, publisher_settings(addresses)).await;
    let ours = [
        ingress_ref("apps", "a"),
        ingress_ref("apps", "b"),
        ingress_ref("elsewhere", "d"),
    ];

    let outcome = publisher.publish(&built(vec![]), &ours).await;
    assert_eq!(outcome.status_patched, 1, "{outcome:?}");
    let patches: Vec<Seen> = mock
        .requests()
        .into_iter()
        .filter(is_status_patch)
        .collect();
    assert_eq!(patches.len(), 1);
    let p = &patches[0];
    assert_eq!(
        p.path,
        "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/a/status"
    );
    assert_eq!(p.q("fieldManager"), Some("portcullis"));
    assert_eq!(
        p.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        p.body,
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}, {"hostname": "lb.example.com"}]}}})
    );

    // Not yet in the store (same resourceVersion): not patched again.
    publisher.publish(&built(vec![]), &ours).await;
    // In the store: nothing to do.
    view.put(with_status(
        ingress("apps", "a", "14"),
        json!([{"ip": "10.0.0.1"}, {"hostname": "lb.example.com"}]),
    ));
    publisher.publish(&built(vec![]), &ours).await;
    assert_eq!(mock.count(is_status_patch), 1);

    // Someone else overwrote it: written again.
    view.put(with_status(
        ingress("apps", "a", "15"),
        json!([{"ip": "192.0.2.1"}]),
    ));
    publisher.publish(&built(vec![]), &ours).await;
    assert_eq!(mock.count(is_status_patch), 2);
}

#[tokio::test]
async fn status_follows_the_publish_service_and_is_cleared_on_shutdown_when_asked() {
    let mock = Mock::start(lease_server());
    let view = Arc::new(FakeView::default());
    view.put(ingress("apps", "a", "10"));
    let mut settings = publisher_settings(StatusAddresses::Service);
    settings.update_status_on_shutdown = true;
    let (_elector, publisher) = leader_publisher(&mock, &view, settings).await;
    let ours = [ingress_ref("apps", "a")];

    // No publish Service (yet): existing status is left alone.
    publisher.publish(&built(vec![]), &ours).await;
    assert_eq!(mock.count(is_status_patch), 0);

    *view.publish_service.lock().unwrap() = Some(Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": "portcullis", "namespace": "ingress"},
            "spec": {"clusterIP": "10.96.0.10", "type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}},
        }))
        .unwrap(),
    ));
    publisher.publish(&built(vec![]), &ours).await;
    let patch = mock.requests().into_iter().find(is_status_patch).unwrap();
    assert_eq!(
        patch.body,
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}})
    );

    view.put(with_status(
        ingress("apps", "a", "11"),
        json!([{"ip": "203.0.113.9"}]),
    ));
    publisher.shutdown(&ours).await;
    let patches: Vec<Seen> = mock
        .requests()
        .into_iter()
        .filter(is_status_patch)
        .collect();
    assert_eq!(patches.len(), 2);
    assert_eq!(
        patches[1].body,
        json!({"status": {"loadBalancer": {"ingress": null}}})
    );
}

#[tokio::test]
async fn events_are_posted_once_per_diagnostic_and_again_when_it_returns() {
    let mock = Mock::start(lease_server());
    let view = Arc::new(FakeView::default());
    let (_elector, publisher) =
        leader_publisher(&mock, &view, publisher_settings(StatusAddresses::None)).await;
    let ours = [ingress_ref("apps", "a")];
    let annotation = Diagnostic::error(
        ingress_ref("apps", "a"),
        "metadata.annotations[\"portcullis.io/tls-mode\"]",
        Reason::InvalidAnnotation,
        "\"sideways\" is not one of terminate, passthrough, reencrypt",
    );
    let secret = Diagnostic::warning(
        ObjectRef::namespaced("Secret", "apps", "tls"),
        "data[\"tls.key\"]",
        Reason::InvalidSecret,
        "the key does not match the certificate",
    );
    let class = Diagnostic::error(
        ObjectRef::cluster("IngressClass", "portcullis"),
        "spec.parameters",
        Reason::InvalidParams,
        "IngressClassParams default does not exist",
    );
    let never = vec![
        // An Ingress of another class, one outside the watched namespace, a file.
        Diagnostic::error(
            ingress_ref("apps", "theirs"),
            "spec",
            Reason::InvalidSpec,
            "x",
        ),
        Diagnostic::error(
            ingress_ref("elsewhere", "a"),
            "spec",
            Reason::InvalidSpec,
            "x",
        ),
        Diagnostic::error(
            ObjectRef::cluster("File", "/m/a.yaml"),
            "line 1",
            Reason::InvalidManifest,
            "x",
        ),
    ];
    let all: Vec<Diagnostic> = [annotation.clone(), secret.clone(), class.clone()]
        .into_iter()
        .chain(never)
        .collect();
    let is_event =
        |r: &Seen| r.method == Method::POST && r.path.starts_with("/apis/events.k8s.io/");

    let outcome = publisher.publish(&built(all.clone()), &ours).await;
    assert_eq!(outcome.events_posted, 3, "{outcome:?}");
    publisher.publish(&built(all.clone()), &ours).await;
    assert_eq!(
        mock.count(is_event),
        3,
        "the same diagnostics are not posted again"
    );

    let events: Vec<Seen> = mock
        .requests()
        .into_iter()
        .filter(|r| is_event(r))
        .collect();
    let e = events
        .iter()
        .find(|e| e.body["reason"] == "InvalidAnnotation")
        .unwrap();
    assert_eq!(e.path, "/apis/events.k8s.io/v1/namespaces/apps/events");
    let b = &e.body;
    assert_eq!(b["apiVersion"], "events.k8s.io/v1");
    assert_eq!(b["type"], "Warning");
    assert_eq!(
        b["note"],
        "metadata.annotations[\"portcullis.io/tls-mode\"]: \"sideways\" is not one of terminate, passthrough, reencrypt"
    );
    assert_eq!(
        b["regarding"],
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "a", "namespace": "apps", "uid": "uid-a"})
    );
    assert_eq!(b["reportingController"], "portcullis.io/ingress-controller");
    assert_eq!(b["reportingInstance"], "pod-a");
    assert_eq!(b["action"], "BuildRoutingTable");
    assert_eq!(b["metadata"]["namespace"], "apps");
    assert!(b["metadata"]["name"].as_str().unwrap().starts_with("a."));
    assert!(b["eventTime"].is_string());
    let warning = events
        .iter()
        .find(|e| e.body["reason"] == "InvalidSecret")
        .unwrap();
    assert_eq!(
        warning.body["type"], "Warning",
        "warnings are Warning events too"
    );
    assert_eq!(warning.body["regarding"]["apiVersion"], "v1");
    let cluster_scoped = events
        .iter()
        .find(|e| e.body["reason"] == "InvalidParams")
        .unwrap();
    assert_eq!(
        cluster_scoped.path,
        "/apis/events.k8s.io/v1/namespaces/default/events"
    );
    assert_eq!(cluster_scoped.body["regarding"].get("namespace"), None);

    // Gone, then back: posted again.
    publisher
        .publish(&built(vec![secret.clone(), class.clone()]), &ours)
        .await;
    assert_eq!(mock.count(is_event), 3);
    publisher.publish(&built(all), &ours).await;
    assert_eq!(mock.count(is_event), 4);
}

#[tokio::test]
async fn losing_the_lease_stops_writes_at_once() {
    let conflict = Arc::new(AtomicBool::new(false));
    let flag = conflict.clone();
    let mut leases = lease_server();
    let mock = Mock::start(move |r| {
        if r.is(Method::PUT, LEASE) && flag.load(Ordering::SeqCst) {
            return Some(error_reply(409, "Conflict"));
        }
        leases(r)
    });
    let view = Arc::new(FakeView::default());
    view.put(ingress("apps", "a", "10"));
    let addresses = StatusAddresses::Static(parse_status_addresses("10.0.0.1"));
    let (mut elector, publisher) =
        leader_publisher(&mock, &view, publisher_settings(addresses)).await;
    let ours = [ingress_ref("apps", "a")];
    let diagnostics = vec![Diagnostic::error(
        ingress_ref("apps", "a"),
        "spec",
        Reason::InvalidSpec,
        "bad",
    )];

    // Someone else wrote the lease: the renewal conflicts, and we stop at once.
    conflict.store(true, Ordering::SeqCst);
    assert!(!elector.step().await.unwrap());
    assert!(!elector.leadership().is_leader());
    let outcome = publisher.publish(&built(diagnostics), &ours).await;
    assert!(outcome.not_leader);
    assert_eq!(mock.count(is_status_patch), 0);
    assert_eq!(
        mock.count(|r| r.path.starts_with("/apis/events.k8s.io/")),
        0
    );
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_writing_at_the_renew_deadline() {
    let failing = Arc::new(AtomicBool::new(false));
    let flag = failing.clone();
    let mut leases = lease_server();
    let mock = Mock::start(move |r| {
        if r.path.starts_with(LEASES) && flag.load(Ordering::SeqCst) {
            return Some(error_reply(500, "InternalError"));
        }
        leases(r)
    });
    let mut settings = lease_settings();
    settings.renew_deadline = Duration::from_millis(300);
    let mut elector = LeaderElector::new(mock.client.clone(), settings);
    assert!(elector.step().await.unwrap());
    let view = Arc::new(FakeView::default());
    view.put(ingress("apps", "a", "10"));
    let view_dyn: Arc<dyn ClusterView> = view.clone();
    let publisher = Publisher::new(
        mock.client.clone(),
        publisher_settings(StatusAddresses::Static(parse_status_addresses("10.0.0.1"))),
        elector.leadership(),
        view_dyn,
    );
    let ours = [ingress_ref("apps", "a")];

    failing.store(true, Ordering::SeqCst);
    assert!(elector.step().await.is_err());
    assert!(
        elector.leadership().is_leader(),
        "one failed renewal is within the deadline"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(!elector.leadership().is_leader(), "past the renew deadline");
    let outcome = publisher.publish(&built(vec![]), &ours).await;
    assert!(outcome.not_leader);
    assert_eq!(mock.count(is_status_patch), 0);
}

// === assembly ===

fn controller_settings() -> ControllerSettings {
    ControllerSettings {
        ingress_class: "portcullis".into(),
        watch_namespace: Some("apps".into()),
        publish_service: None,
        publish_status_address: vec!["10.0.0.1".into()],
        default_certificate: None,
        lease_namespace: "ingress".into(),
        lease_name: "portcullis-leader".into(),
        identity: "pod-a".into(),
        update_status_on_shutdown: false,
    }
}

#[tokio::test]
async fn cluster_becomes_leader_pokes_a_rebuild_and_releases_the_lease_on_shutdown() {
    let mock = Mock::start(lease_server());
    let cluster = Cluster::start(mock.client.clone(), &controller_settings()).unwrap();
    tokio::time::timeout(T, cluster.wait_ready())
        .await
        .unwrap()
        .unwrap();
    assert!(cluster.is_ready());
    assert!(wait_until(T, || async { cluster.leadership().is_leader() }).await);
    // Seven stores listed once each (7 changes); becoming leader bumps the signal once more,
    // so the rebuild loop publishes at once.
    let changes = cluster.changes();
    assert!(wait_until(T, || async { changes.borrow().generation == 8 }).await);

    cluster.shutdown(&[]).await;
    let release = mock
        .requests()
        .into_iter()
        .rfind(|r| r.is(Method::PUT, LEASE))
        .expect("the lease is released");
    assert_eq!(release.body["spec"].get("holderIdentity"), None);
    assert_eq!(release.body["spec"]["leaseDurationSeconds"], 1);
}

/// Cluster mode end to end: what the API server lists is served by the proxy, our Ingress's
/// status gets the published address, and the lease is released on the way out.
#[tokio::test]
async fn controller_serves_what_the_api_lists_and_publishes_status() {
    let backend = backends::http("web").await;
    let objects: HashMap<&'static str, Vec<Value>> = HashMap::from([
        (
            "ingressclasses",
            vec![json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "portcullis", "resourceVersion": "2"},
                "spec": {"controller": "portcullis.io/ingress-controller"},
            })],
        ),
        (
            "ingresses",
            vec![json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "web", "namespace": "apps", "uid": "uid-web",
                             "resourceVersion": "10", "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {
                    "ingressClassName": "portcullis",
                    "rules": [{"host": "web.example.com", "http": {"paths": [{
                        "path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"name": "http"}}},
                    }]}}],
                },
            })],
        ),
        (
            "services",
            vec![json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "apps", "resourceVersion": "6"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": backend.addr.port()}]},
            })],
        ),
        (
            "endpointslices",
            vec![json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-1", "namespace": "apps", "resourceVersion": "7",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                "ports": [{"name": "http", "port": backend.addr.port(), "protocol": "TCP"}],
            })],
        ),
    ]);
    let mut leases = lease_server();
    let mock = Mock::start(move |r| {
        if let Some(reply) = leases(r) {
            return Some(reply);
        }
        if !r.is_list() || r.path.ends_with("/secrets") {
            return None;
        }
        let kind = r.path.rsplit('/').next()?;
        objects
            .get(kind)
            .map(|items| Reply::Json(StatusCode::OK, list(items, "20")))
    });
    let local = "127.0.0.1:0".parse().unwrap();
    let settings = Settings {
        http_addr: local,
        https_addr: local,
        admin_addr: local,
        ..Settings::default()
    };
    let controller = cluster::start(mock.client.clone(), settings, controller_settings())
        .await
        .unwrap();
    assert!(wait_until(T, || async { controller.status().is_live() }).await);

    let mut stream = TcpStream::connect(controller.addresses().http)
        .await
        .unwrap();
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("backend=web path=/hello"), "{answer}");

    const STATUS: &str = "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/web/status";
    assert!(
        wait_until(T, || async {
            mock.count(|r| r.is(Method::PATCH, STATUS)) >= 1
        })
        .await,
        "status patched"
    );
    let patch = mock
        .requests()
        .into_iter()
        .find(|r| r.is(Method::PATCH, STATUS))
        .unwrap();
    assert_eq!(
        patch.body["status"]["loadBalancer"]["ingress"][0]["ip"],
        "10.0.0.1"
    );

    controller.until_stopped(async {}).await.unwrap();
    assert!(
        mock.count(|r| r.is(Method::PUT, LEASE)) >= 1,
        "released on the way out"
    );
}

// === a rolling update through the API ===

/// The EndpointSlices of namespace `apps`, where the rollout's watch events are pushed.
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices";
const ROLL_HOST: &str = "roll.cluster.test";

/// What one client saw during the rollout.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failures: Vec<String>,
    /// Connections the proxy closed between two requests, reopened (not failures).
    reopened: usize,
    last_backend: Option<String>,
}

/// A keep-alive client running [`roll_client`], and how many requests it has completed.
struct RollClient {
    name: &'static str,
    done: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Tally>,
}

/// Sends GETs back to back on one connection until `stop`; a connection the proxy closes is
/// reopened (as every real client does), but a failed request is a failure. `done` counts the
/// requests answered or failed; failures name the rollout step they happened in.
async fn roll_client(
    name: &'static str,
    proxy: Addresses,
    ca: Arc<pki::Ca>,
    via: Via,
    done: Arc<AtomicUsize>,
    step: Arc<Mutex<&'static str>>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn = Conn::open(proxy.http, proxy.https, &ca, via, ROLL_HOST).await;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_closed() {
            tally.reopened += 1;
            conn = Conn::open(proxy.http, proxy.https, &ca, via, ROLL_HOST).await;
        }
        n += 1;
        let result = conn.get(ROLL_HOST, &format!("/{name}/{n}")).await;
        let at = *step.lock().unwrap();
        match result {
            Ok(answer) if answer.status == 200 => {
                tally.ok += 1;
                tally.last_backend = answer.backend;
                if answer.closes {
                    tally.reopened += 1;
                    conn = Conn::open(proxy.http, proxy.https, &ca, via, ROLL_HOST).await;
                }
            }
            Ok(answer) => tally
                .failures
                .push(format!("{name} #{n} ({at}): {answer:?}")),
            Err(error) => {
                tally.failures.push(format!("{name} #{n} ({at}): {error}"));
                conn = Conn::open(proxy.http, proxy.https, &ca, via, ROLL_HOST).await;
            }
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    tally
}

/// Waits until every client has completed a request since now, so that no request routed on
/// an earlier table is still on its way (each client has one request in flight at a time).
async fn settle(clients: &[RollClient]) {
    let before: Vec<usize> = clients
        .iter()
        .map(|c| c.done.load(Ordering::SeqCst))
        .collect();
    let names: Vec<&str> = clients.iter().map(|c| c.name).collect();
    assert!(
        wait_until(T, || async {
            clients
                .iter()
                .zip(&before)
                .all(|(c, b)| c.done.load(Ordering::SeqCst) > *b)
        })
        .await,
        "a client of {names:?} completed no request in {T:?}"
    );
}

/// Three HTTP pods on one port number and three loopback addresses, so that one EndpointSlice
/// (one port list for all its endpoints, as in a cluster) can name any of them.
async fn three_pods() -> (backends::Backend, backends::Backend, backends::Backend) {
    for _ in 0..20 {
        let a = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind A");
        let port = a.local_addr().expect("A's address").port();
        // The same port may be taken on another address; another draw then.
        let b = tokio::net::TcpListener::bind(("127.0.0.3", port)).await;
        let c = tokio::net::TcpListener::bind(("127.0.0.4", port)).await;
        if let (Ok(b), Ok(c)) = (b, c) {
            return (
                backends::http_on("A", a),
                backends::http_on("B", b),
                backends::http_on("C", c),
            );
        }
    }
    panic!("no port free on 127.0.0.2, 127.0.0.3 and 127.0.0.4");
}

/// GETs a pod has seen (health checks are off, so all of them are the clients').
fn gets(pod: &backends::Backend) -> usize {
    pod.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "GET")
        .count()
}

/// discovery.k8s.io/v1 conditions of a ready pod, and of one draining after SIGTERM.
fn ready_pod() -> Value {
    json!({"ready": true, "serving": true, "terminating": false})
}

fn terminating_pod() -> Value {
    json!({"ready": false, "serving": true, "terminating": true})
}

/// The one EndpointSlice of Service `roll`, listing `endpoints` with their conditions.
fn roll_slice(resource_version: u64, endpoints: &[(&backends::Backend, Value)]) -> Value {
    let port = endpoints[0].0.addr.port();
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(pod, conditions)| {
            assert_eq!(pod.addr.port(), port, "one slice, one port");
            json!({"addresses": [pod.addr.ip().to_string()], "conditions": conditions})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "roll-x7k2p", "namespace": "apps",
                     "resourceVersion": resource_version.to_string(),
                     "labels": {"kubernetes.io/service-name": "roll"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    })
}

/// The ready and terminating endpoints of Service `roll` in the live table, if every upstream
/// of it agrees.
fn live_roll_endpoints(controller: &Controller) -> Option<(Vec<SocketAddr>, Vec<SocketAddr>)> {
    let built = controller.status().current()?;
    let all: Vec<(Vec<SocketAddr>, Vec<SocketAddr>)> = built
        .table
        .upstreams()
        .into_iter()
        .filter(|u| u.service.namespace == "apps" && u.service.name == "roll")
        .map(|u| (u.endpoints.clone(), u.terminating.clone()))
        .collect();
    let first = all.first()?.clone();
    all.iter().all(|u| *u == first).then_some(first)
}

/// The API server's watch pushes this EndpointSlice as MODIFIED.
fn modify_slice(mock: &Mock, slice: Value) {
    mock.push(SLICES, json!({"type": "MODIFIED", "object": slice}));
}

/// Waits until the live table lists exactly these ready and terminating pods for `roll`.
async fn wait_live(
    controller: &Controller,
    ready: &[&backends::Backend],
    terminating: &[&backends::Backend],
) {
    let sorted = |pods: &[&backends::Backend]| {
        let mut addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
        addrs.sort();
        addrs
    };
    let want = (sorted(ready), sorted(terminating));
    let before = controller.status().generation();
    assert!(
        wait_until(T, || async {
            live_roll_endpoints(controller).as_ref() == Some(&want)
        })
        .await,
        "the live table never had ready {:?}, terminating {:?} (generation {} → {}): {:?}",
        want.0,
        want.1,
        before,
        controller.status().generation(),
        live_roll_endpoints(controller)
    );
}

/// Cluster mode, the data plane under a rollout as the API server tells it: Service `roll`'s
/// EndpointSlice goes A → B → C through MODIFIED watch events, each step the way the
/// EndpointSlice controller writes it (the new pod ready next to the old one; the old one
/// terminating but still serving; the old one gone, and killed at once without waiting for
/// the table). Keep-alive clients on plain HTTP, TLS terminate and HTTP/2, all connected
/// before the first change, send GETs back to back: no request fails, a terminating pod gets
/// no new request while a ready one is listed but answers when it is the only one left, and
/// every client's last answer comes from C.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_update_through_the_api_fails_no_request() {
    // The proxy's own account of requests it answered itself (debug), shown on failure.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,portcullis::proxy=debug",
        ))
        .with_test_writer()
        .try_init();

    let (a, b, c) = three_pods().await;
    let ca = Arc::new(pki::Ca::new("cluster rollout ca"));
    let leaf = ca.leaf(&[ROLL_HOST]);
    let secret = {
        use k8s_openapi::ByteString;
        let secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("roll-tls".into()),
                namespace: Some("apps".into()),
                resource_version: Some("5".into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(
                [
                    (
                        "tls.crt".to_string(),
                        ByteString(leaf.cert_pem.into_bytes()),
                    ),
                    ("tls.key".to_string(), ByteString(leaf.key_pem.into_bytes())),
                ]
                .into(),
            ),
            ..Default::default()
        };
        serde_json::to_value(secret).unwrap()
    };
    let objects: HashMap<&'static str, Vec<Value>> = HashMap::from([
        (
            "ingressclasses",
            vec![json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "portcullis", "resourceVersion": "2"},
                "spec": {"controller": "portcullis.io/ingress-controller"},
            })],
        ),
        (
            "ingresses",
            vec![json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "roll", "namespace": "apps", "uid": "uid-roll",
                             "resourceVersion": "10", "creationTimestamp": "2026-01-01T00:00:00Z",
                             // The rollout must hold on routing alone, not on probes.
                             "annotations": {"portcullis.io/health-check": "none"}},
                "spec": {
                    "ingressClassName": "portcullis",
                    "tls": [{"hosts": [ROLL_HOST], "secretName": "roll-tls"}],
                    "rules": [{"host": ROLL_HOST, "http": {"paths": [{
                        "path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "roll", "port": {"number": 80}}},
                    }]}}],
                },
            })],
        ),
        (
            "services",
            vec![json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "roll", "namespace": "apps", "resourceVersion": "6"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            })],
        ),
        ("endpointslices", vec![roll_slice(7, &[(&a, ready_pod())])]),
    ]);
    let mut leases = lease_server();
    let mock = Mock::start(move |r| {
        if let Some(reply) = leases(r) {
            return Some(reply);
        }
        if !r.is_list() {
            return None;
        }
        if r.path.ends_with("/secrets") {
            return (r.q("fieldSelector") == Some("type=kubernetes.io/tls"))
                .then(|| Reply::Json(StatusCode::OK, list(std::slice::from_ref(&secret), "20")));
        }
        let kind = r.path.rsplit('/').next()?;
        objects
            .get(kind)
            .map(|items| Reply::Json(StatusCode::OK, list(items, "20")))
    });
    let local = "127.0.0.1:0".parse().unwrap();
    let settings = Settings {
        http_addr: local,
        https_addr: local,
        admin_addr: local,
        shutdown_grace: Duration::from_secs(2),
        ..Settings::default()
    };
    let controller = cluster::start(mock.client.clone(), settings, controller_settings())
        .await
        .unwrap();
    wait_live(&controller, &[&a], &[]).await;
    assert!(
        wait_until(T, || async { mock.open_watches(SLICES) >= 1 }).await,
        "no EndpointSlice watch"
    );
    let proxy = controller.addresses();

    // Four keep-alive clients, all connected before the first change.
    let stop = Arc::new(AtomicBool::new(false));
    let step = Arc::new(Mutex::new("A ready"));
    let clients: Vec<RollClient> = [
        ("plain-1", Via::Plain),
        ("plain-2", Via::Plain),
        ("terminate", Via::Tls),
        ("h2", Via::H2),
    ]
    .into_iter()
    .map(|(name, via)| {
        let done = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(roll_client(
            name,
            proxy,
            ca.clone(),
            via,
            done.clone(),
            step.clone(),
            stop.clone(),
        ));
        RollClient { name, done, task }
    })
    .collect();
    let started = std::time::Instant::now();
    let traffic = || tokio::time::sleep(Duration::from_millis(700));
    settle(&clients).await;
    traffic().await;
    assert!(gets(&a) > 0, "A served nothing before the rollout");

    let mut rv = 20;
    let mut next_rv = || {
        rv += 1;
        rv
    };
    let set_step = |name: &'static str| *step.lock().unwrap() = name;
    let mut old = a;
    for (new, steps) in [
        (
            b,
            ["A+B ready", "A terminating, B ready", "B only, A killed"],
        ),
        (
            c,
            ["B+C ready", "B terminating, C ready", "C only, B killed"],
        ),
    ] {
        // (1) The new pod is ready next to the old one.
        set_step(steps[0]);
        modify_slice(
            &mock,
            roll_slice(next_rv(), &[(&old, ready_pod()), (&new, ready_pod())]),
        );
        wait_live(&controller, &[&old, &new], &[]).await;
        settle(&clients).await;
        let (old_gets, new_gets) = (gets(&old), gets(&new));
        traffic().await;
        // Both serve, also on the connections opened before the change.
        assert!(gets(&old) > old_gets, "{} (ready) served nothing", old.name);
        assert!(gets(&new) > new_gets, "{} (ready) served nothing", new.name);

        // (2) The old pod got SIGTERM: not ready, still serving, terminating. From the moment
        // that table is live, it gets no new request while the new pod is ready.
        set_step(steps[1]);
        modify_slice(
            &mock,
            roll_slice(next_rv(), &[(&old, terminating_pod()), (&new, ready_pod())]),
        );
        wait_live(&controller, &[&new], &[&old]).await;
        settle(&clients).await;
        let (old_gets, new_gets) = (gets(&old), gets(&new));
        traffic().await;
        settle(&clients).await;
        assert_eq!(
            gets(&old),
            old_gets,
            "{}, terminating, got new GETs while {} was ready",
            old.name,
            new.name
        );
        assert!(gets(&new) > new_gets, "{} served nothing", new.name);

        // (3) The old pod is gone from the slice and killed at once, without waiting for the
        // table: requests that still meet it must end on the live pod.
        set_step(steps[2]);
        modify_slice(&mock, roll_slice(next_rv(), &[(&new, ready_pod())]));
        drop(old);
        wait_live(&controller, &[&new], &[]).await;
        traffic().await;
        old = new;
    }
    let c = old;

    // The fallback: C, the only pod, is terminating but still serving. It answers.
    set_step("C only, terminating");
    modify_slice(&mock, roll_slice(next_rv(), &[(&c, terminating_pod())]));
    wait_live(&controller, &[], &[&c]).await;
    settle(&clients).await;
    let c_gets = gets(&c);
    traffic().await;
    settle(&clients).await;
    assert!(
        gets(&c) > c_gets,
        "C, terminating and the only pod, served nothing"
    );

    // And back to ready (the pod's SIGTERM was a false alarm: say, a readiness flap).
    set_step("C ready");
    modify_slice(&mock, roll_slice(next_rv(), &[(&c, ready_pod())]));
    wait_live(&controller, &[&c], &[]).await;
    traffic().await;
    // At least 6 s of traffic in all.
    while started.elapsed() < Duration::from_secs(6) {
        traffic().await;
    }
    settle(&clients).await;
    stop.store(true, Ordering::SeqCst);

    let mut report = String::new();
    let mut failures = Vec::new();
    let mut last = Vec::new();
    for client in clients {
        let tally = client.task.await.expect("client task");
        report.push_str(&format!(
            "{}: {} ok, {} failed, {} reopened, last from {:?}\n",
            client.name,
            tally.ok,
            tally.failures.len(),
            tally.reopened,
            tally.last_backend
        ));
        failures.extend(tally.failures);
        assert!(tally.ok > 10, "{report}");
        last.push((client.name, tally.last_backend));
    }
    assert!(
        failures.is_empty(),
        "failed requests during the rollout:\n{report}{failures:#?}"
    );
    for (name, backend) in last {
        assert_eq!(
            backend.as_deref(),
            Some("C"),
            "{name}'s last answer is not from C\n{report}"
        );
    }
    println!("{report}");

    controller.until_stopped(async {}).await.unwrap();
}

// === RBAC: the calls the code makes are the calls src/cluster/rbac.rs declares ===

/// A `kubernetes.io/tls` Secret holding a fresh leaf for `host`, as the API server lists it.
fn tls_secret(namespace: &str, name: &str, host: &str) -> Value {
    use k8s_openapi::ByteString;
    let leaf = pki::Ca::new("rbac test ca").leaf(&[host]);
    let secret = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            resource_version: Some("5".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("tls.crt".into(), ByteString(leaf.cert_pem.into_bytes())),
                ("tls.key".into(), ByteString(leaf.key_pem.into_bytes())),
            ]
            .into(),
        ),
        ..Default::default()
    };
    serde_json::to_value(secret).unwrap()
}

/// Runs the controller through its whole life against the mock, deployed in [`OWN_NAMESPACE`]
/// and watching `watch_namespace`, with every flag that makes API calls of its own
/// (`--publish-service`, `--default-certificate`): every kind listed and watched (the CRD
/// too), our Ingress's status patched from the publish Service, an Event posted for an
/// Ingress with a bad annotation, the Lease created, renewed and released. Returns every
/// request the API server saw.
async fn whole_life(watch_namespace: Option<&str>) -> Vec<Seen> {
    let backend = backends::http("web").await;
    let own = OWN_NAMESPACE;
    let ingress = |name: &str, annotations: Value| {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "apps", "uid": format!("uid-{name}"),
                         "resourceVersion": "10", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": annotations},
            "spec": {
                "ingressClassName": "portcullis",
                "rules": [{"host": format!("{name}.example.com"), "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web", "port": {"name": "http"}}},
                }]}}],
            },
        })
    };
    let objects: HashMap<&'static str, Vec<Value>> = HashMap::from([
        (
            "ingressclasses",
            vec![json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "portcullis", "resourceVersion": "2"},
                "spec": {"controller": "portcullis.io/ingress-controller"},
            })],
        ),
        (
            "ingresses",
            vec![
                ingress("web", json!({})),
                ingress("bad", json!({"portcullis.io/tls-mode": "sideways"})),
            ],
        ),
        (
            "services",
            vec![json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "apps", "resourceVersion": "6"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": backend.addr.port()}]},
            })],
        ),
        (
            "endpointslices",
            vec![json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-1", "namespace": "apps", "resourceVersion": "7",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                "ports": [{"name": "http", "port": backend.addr.port(), "protocol": "TCP"}],
            })],
        ),
    ]);
    let publish_service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "portcullis", "namespace": own, "resourceVersion": "8"},
        "spec": {"clusterIP": "10.96.0.10", "type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}},
    });
    let default_certificate = tls_secret(own, "default-cert", "default.example.com");
    let own_services = format!("/api/v1/namespaces/{own}/services");
    let mut leases = lease_server();
    let mock = Mock::start(move |r| {
        if let Some(reply) = leases(r) {
            return Some(reply);
        }
        if !r.is_list() {
            return None;
        }
        let one = |item: &Value| {
            Some(Reply::Json(
                StatusCode::OK,
                list(std::slice::from_ref(item), "20"),
            ))
        };
        if r.path.ends_with("/secrets") {
            // By name in our namespace, or among every namespace's TLS Secrets.
            let by_name = r.q("fieldSelector") == Some("metadata.name=default-cert");
            let all_tls = r.path == "/api/v1/secrets"
                && r.q("fieldSelector") == Some("type=kubernetes.io/tls");
            return (by_name || all_tls)
                .then(|| one(&default_certificate))
                .flatten();
        }
        if r.path == own_services {
            return one(&publish_service);
        }
        let kind = r.path.rsplit('/').next()?;
        objects
            .get(kind)
            .map(|items| Reply::Json(StatusCode::OK, list(items, "20")))
    });
    let local = "127.0.0.1:0".parse().unwrap();
    let settings = Settings {
        http_addr: local,
        https_addr: local,
        admin_addr: local,
        ..Settings::default()
    };
    let controller_settings = ControllerSettings {
        watch_namespace: watch_namespace.map(str::to_string),
        publish_service: Some((own.into(), "portcullis".into())),
        publish_status_address: Vec::new(),
        default_certificate: Some((own.into(), "default-cert".into())),
        lease_namespace: own.into(),
        ..controller_settings()
    };
    let controller = cluster::start(mock.client.clone(), settings, controller_settings)
        .await
        .unwrap();
    assert!(wait_until(T, || async { controller.status().is_live() }).await);

    const STATUS: &str = "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/web/status";
    mock.wait_count(1, |r| r.is(Method::PATCH, STATUS)).await;
    mock.wait_count(1, |r| {
        r.is(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/apps/events",
        ) && r.body["reason"] == "InvalidAnnotation"
            && r.body["regarding"]["name"] == "bad"
    })
    .await;
    // Acquired (GET, then create), renewed once (one renew period, 5 s), then released.
    mock.wait_count(1, |r| r.is(Method::POST, LEASES)).await;
    mock.wait_count(1, |r| r.is(Method::PUT, LEASE)).await;
    controller.until_stopped(async {}).await.unwrap();
    let requests = mock.requests();
    let puts: Vec<&Seen> = requests
        .iter()
        .filter(|r| r.is(Method::PUT, LEASE))
        .collect();
    assert!(puts.len() >= 2, "renewed, then released: {requests:#?}");
    assert_eq!(
        puts[puts.len() - 1].body["spec"].get("holderIdentity"),
        None,
        "released on the way out: {requests:#?}"
    );
    requests
}

/// Every request refused by `grants`, and every one of `grants` no request used.
fn rbac_report(
    requests: &[Seen],
    grants: &BTreeSet<rbac::Grant>,
) -> (Vec<String>, Vec<rbac::Grant>) {
    let refused = requests
        .iter()
        .filter_map(|r| r.refused_by(grants))
        .collect();
    let attributes: Vec<rbac::Request> = requests.iter().filter_map(|r| r.rbac().ok()).collect();
    let unused = grants
        .iter()
        .filter(|g| !attributes.iter().any(|a| g.permits(a)))
        .cloned()
        .collect();
    (refused, unused)
}

/// Every request the controller makes in its whole life is one the chart grants, and every
/// grant is used: watching one namespace, so Roles there and in our own namespace.
#[tokio::test]
async fn watching_one_namespace_the_controller_calls_exactly_what_src_rbac_declares() {
    let requests = whole_life(Some("apps")).await;
    let (refused, unused) = rbac_report(&requests, &rbac::grants(OWN_NAMESPACE, Some("apps")));
    assert!(refused.is_empty(), "refused: {refused:#?}");
    assert!(unused.is_empty(), "declared, but never called: {unused:#?}");
}

/// The same in every namespace: a ClusterRole, and the Lease's Role in our own namespace.
#[tokio::test]
async fn watching_every_namespace_the_controller_calls_exactly_what_src_rbac_declares() {
    let requests = whole_life(None).await;
    let (refused, unused) = rbac_report(&requests, &rbac::grants(OWN_NAMESPACE, None));
    assert!(refused.is_empty(), "refused: {refused:#?}");
    assert!(unused.is_empty(), "declared, but never called: {unused:#?}");
    // Cluster-wide, nothing is read by namespace except what lives in ours.
    for r in &requests {
        let namespace = r.rbac().unwrap().namespace;
        assert!(
            namespace.is_none()
                || namespace.as_deref() == Some(OWN_NAMESPACE)
                || r.method != Method::GET,
            "a namespaced read while watching every namespace: {r:?}"
        );
    }
}

fn synthetic(method: Method, path_and_query: &str) -> Seen {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    Seen {
        method,
        path: path.into(),
        query: url_pairs(query),
        content_type: None,
        body: Value::Null,
    }
}

/// The check can fail: requests outside src/cluster/rbac.rs, by verb, resource, subresource, group,
/// namespace or URL, are each refused with the reason, while the declared ones pass.
#[test]
fn the_rbac_check_refuses_what_src_rbac_does_not_declare() {
    let everywhere = default_grants();
    let lease = "/apis/coordination.k8s.io/v1/namespaces/ingress/leases/portcullis-leader";
    let declared = [
        synthetic(
            Method::GET,
            &format!("{INGRESSES}?watch=true&resourceVersion=1"),
        ),
        synthetic(
            Method::GET,
            "/apis/networking.k8s.io/v1/ingressclasses?limit=500",
        ),
        synthetic(Method::PATCH, &format!("{INGRESSES}/a/status")),
        synthetic(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/apps/events",
        ),
        synthetic(Method::GET, lease),
        synthetic(Method::PUT, lease),
        synthetic(Method::POST, LEASES),
    ];
    for r in &declared {
        assert_eq!(r.refused_by(&everywhere), None, "{r:?}");
    }
    let undeclared = [
        (Method::DELETE, lease, "delete"),
        (
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/apps/leases/x",
            "\"apps\"",
        ),
        (Method::GET, "/api/v1/namespaces/apps/pods", "\"pods\""),
        (
            Method::GET,
            "/api/v1/namespaces/apps/secrets/tls",
            "\"get\"",
        ),
        (
            Method::PATCH,
            "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/a",
            "\"patch\"",
        ),
        (
            Method::PUT,
            "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/a/status",
            "\"update\"",
        ),
        (
            Method::POST,
            "/api/v1/namespaces/apps/events",
            "group: \"\"",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/apps/secrets",
            "deletecollection",
        ),
        (Method::GET, "/api/v1/namespaces/apps", "\"namespaces\""),
        (Method::GET, "/version", "non-resource"),
        (Method::GET, "/apis", "non-resource"),
    ];
    for (method, path, why) in undeclared {
        let r = synthetic(method, path);
        let refused = r.refused_by(&everywhere);
        assert!(
            refused
                .as_deref()
                .is_some_and(|m| m.contains(why) && m.contains(path)),
            "{r:?} should be refused for {why}: {refused:?}"
        );
    }
    // Watching one namespace, Roles: no list of every namespace, and no Events about
    // cluster-scoped objects (they go to `default`; the chart says those are log-only).
    let one = rbac::grants(OWN_NAMESPACE, Some("apps"));
    for path in [
        "/apis/networking.k8s.io/v1/ingresses",
        "/apis/events.k8s.io/v1/namespaces/default/events",
    ] {
        let method = if path.ends_with("/events") {
            Method::POST
        } else {
            Method::GET
        };
        assert!(synthetic(method, path).refused_by(&one).is_some(), "{path}");
    }
}

/// The mock's own check sees what the client sends: an undeclared call is recorded, and the
/// check fails the test that owns the mock when it ends.
#[tokio::test]
async fn the_mock_records_an_undeclared_call_and_fails_the_test() {
    use k8s_openapi::api::core::v1::Pod;
    let mock = Mock::start(|_| None);
    let pods: kube::Api<Pod> = kube::Api::namespaced(mock.client.clone(), "apps");
    pods.list(&Default::default()).await.unwrap();
    let secrets: kube::Api<Secret> = kube::Api::namespaced(mock.client.clone(), "apps");
    let _ = secrets.get_opt("tls").await;
    let refused = mock.take_refused();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(refused[0].contains("/api/v1/namespaces/apps/pods") && refused[0].contains("\"list\""));
    assert!(refused[1].contains("/secrets/tls") && refused[1].contains("\"get\""));

    let check = RbacCheck {
        refused: Arc::new(Mutex::new(refused)),
    };
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(check)));
    assert!(
        dropped.is_err(),
        "a refused request fails the test at the end"
    );
}
