//! A scripted Kubernetes API server for cluster mode: kube's `Client` over a `tower-test` mock
//! service, recording every request it answers.
//!
//! ```ignore
//! let mock = MockApi::new(Lists::new().of("ingresses", vec![ingress("apps", "a", "10")]))
//!     .with_leases()
//!     .serve(|r| (r.is_watch() && r.path == INGRESSES).then(|| Reply::error(500, "InternalError")));
//! let source = mock.source(Some("apps")).await;
//! mock.wait_count(1, Seen::is_watch).await;
//! mock.push(INGRESSES, json!({"type": "ADDED", "object": ingress("apps", "b", "11")}));
//! assert!(mock.seen().iter().all(|r| r.method == Method::GET));
//! ```
//!
//! A request is answered by the first of: the test's handler ([`MockApi::serve`]), the Lease
//! server ([`MockApi::with_leases`]), the objects served by name with their `status`
//! subresource ([`MockApi::with_objects`]), the [`Lists`], and the defaults (an empty list at
//! resourceVersion 1, a watch held open, a write echoed).
//!
//! Every request is also checked against the RBAC that src/cluster/rbac.rs declares: the
//! attributes are derived as the API server's authorizer does ([`Seen::rbac`]), and a request
//! the chart's default grants refuse fails the test that owns the mock when its last clone is
//! dropped ([`RbacCheck`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::client::Body;
use portcullis::cluster::rbac;
use portcullis::cluster::status::{ClusterView, LeaseSettings};
use portcullis::cluster::{self, Controller, ControllerSettings};
use portcullis::model::{Built, LastGood};
use portcullis::settings::Settings;
use portcullis::source::kubernetes::{KubeSource, SourceSettings};
use portcullis::table::RouteTable;
use portcullis::table::diagnostic::{Diagnostic, ObjectRef};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::backends::Backend;
use super::pki::Leaf;
use super::wait::wait_until;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ResBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long a test waits for anything the controller should do.
pub const T: Duration = Duration::from_secs(20);

/// The tests' release namespace: where the controller keeps its Lease and finds its
/// `--publish-service` Service and `--default-certificate` Secret (the chart's release
/// namespace).
pub const OWN_NAMESPACE: &str = "ingress";

pub const INGRESSES: &str = "/apis/networking.k8s.io/v1/namespaces/apps/ingresses";
pub const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ingress/leases/portcullis-leader";
pub const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ingress/leases";

// === requests ===

/// One request as the API server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub body: Value,
}

impl Seen {
    /// A request that was never sent, to try the RBAC check on: `path_and_query` as in a URL.
    pub fn new(method: Method, path_and_query: &str) -> Seen {
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

    /// The value of query parameter `key`.
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn is_watch(&self) -> bool {
        self.method == Method::GET && self.q("watch") == Some("true")
    }
    /// A GET that is not a watch (a list, or a get by name).
    pub fn is_list(&self) -> bool {
        self.method == Method::GET && !self.is_watch()
    }
    pub fn is(&self, method: Method, path: &str) -> bool {
        self.method == method && self.path == path
    }
    pub fn is_status_patch(&self) -> bool {
        self.method == Method::PATCH && self.path.ends_with("/status")
    }

    /// The request's RBAC attributes, derived as the API server's authorizer does (its
    /// RequestInfo): the API group from `/api/v1` (core) or `/apis/GROUP/VERSION`; the namespace
    /// from `namespaces/NS/…`; then `RESOURCE[/NAME[/SUBRESOURCE]]`; the verb from the method:
    /// GET is `get` with a name, else `list`, or `watch` with `watch=true`; POST `create`, PUT
    /// `update`, PATCH `patch`, DELETE `delete` (`deletecollection` without a name). Anything
    /// else (a non-resource URL such as `/version`, or discovery) is an error: no entry of
    /// `src/cluster/rbac.rs` can grant it.
    pub fn rbac(&self) -> Result<rbac::Request, String> {
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
    pub fn refused_by(&self, grants: &BTreeSet<rbac::Grant>) -> Option<String> {
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

// === the RBAC check ===

/// What the chart grants with default values (every namespace watched): every request of every
/// test is checked against it as it arrives.
pub fn default_grants() -> BTreeSet<rbac::Grant> {
    rbac::grants(OWN_NAMESPACE, None)
}

/// Fails the test that owns the mock when its end comes and the controller made a request
/// that [`default_grants`] refuse, that is a call `src/cluster/rbac.rs` does not declare.
pub struct RbacCheck {
    refused: Arc<Mutex<Vec<String>>>,
}

impl RbacCheck {
    /// A check that has already seen the `refused` requests.
    pub fn new(refused: Vec<String>) -> RbacCheck {
        RbacCheck {
            refused: Arc::new(Mutex::new(refused)),
        }
    }
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

// === replies ===

/// What the server answers one request with.
pub enum Reply {
    Json(StatusCode, Value),
    /// A watch stream the test feeds with [`Mock::push`] and ends with [`Mock::break_watches`].
    Watch,
}

impl Reply {
    /// 200 with `value`.
    pub fn ok(value: Value) -> Reply {
        Reply::Json(StatusCode::OK, value)
    }

    /// 200 with a list of `items` at `resource_version`.
    pub fn list(items: &[Value], resource_version: &str) -> Reply {
        Reply::ok(json!({ "metadata": { "resourceVersion": resource_version }, "items": items }))
    }

    /// The failure `code` with a `Status` object giving `reason`.
    pub fn error(code: u16, reason: &str) -> Reply {
        Reply::Json(StatusCode::from_u16(code).unwrap(), failure(code, reason))
    }

    /// Lists: empty at resourceVersion 1; watches: held open; writes: echoed.
    fn default_for(request: &Seen) -> Reply {
        if request.is_watch() {
            return Reply::Watch;
        }
        match request.method {
            Method::GET => Reply::list(&[], "1"),
            Method::POST => {
                let mut body = request.body.clone();
                body["metadata"]["resourceVersion"] = json!("1");
                Reply::Json(StatusCode::CREATED, body)
            }
            _ => Reply::ok(request.body.clone()),
        }
    }
}

/// A failure `Status` object, as the API server sends for an error reply or a watch ERROR event.
pub fn failure(code: u16, reason: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": format!("scripted {code}"), "reason": reason, "code": code,
    })
}

/// What the server lists, as rules: a rule for one path (`at` starting with `/`) answers before
/// a rule for a resource (`at` is the last path segment, in any namespace); among those, the
/// first added. A matching list has resourceVersion 20; a list no rule matches is empty.
#[derive(Clone, Default)]
pub struct Lists {
    rules: Vec<ListRule>,
}

#[derive(Clone)]
struct ListRule {
    at: String,
    selector: Option<String>,
    items: Vec<Value>,
}

impl ListRule {
    fn matches(&self, r: &Seen) -> bool {
        let at = if self.at.starts_with('/') {
            r.path == self.at
        } else {
            r.path.rsplit('/').next() == Some(self.at.as_str())
        };
        let selected = self
            .selector
            .as_deref()
            .is_none_or(|s| r.q("fieldSelector") == Some(s) || r.q("labelSelector") == Some(s));
        at && selected
    }
}

impl Lists {
    pub fn new() -> Lists {
        Lists::default()
    }

    /// Every list of `at` (a resource such as `"ingresses"`, or one path) lists `items`.
    pub fn of(mut self, at: &str, items: Vec<Value>) -> Lists {
        self.rules.push(ListRule {
            at: at.into(),
            selector: None,
            items,
        });
        self
    }

    /// The lists of `at` whose field or label selector is `selector` list `items`.
    pub fn selected(mut self, at: &str, selector: &str, items: Vec<Value>) -> Lists {
        self.rules.push(ListRule {
            at: at.into(),
            selector: Some(selector.into()),
            items,
        });
        self
    }

    fn reply(&self, r: &Seen) -> Option<Reply> {
        if !r.is_list() {
            return None;
        }
        let by_path = self.rules.iter().filter(|rule| rule.at.starts_with('/'));
        let by_resource = self.rules.iter().filter(|rule| !rule.at.starts_with('/'));
        let rule = by_path.chain(by_resource).find(|rule| rule.matches(r))?;
        Some(Reply::list(&rule.items, "20"))
    }
}

/// The Lease [`LEASE`]: GET 404 until created; POST creates (rv 1); PUT bumps rv, 409 on a
/// stale rv.
#[derive(Default)]
struct LeaseServer {
    stored: Option<Value>,
}

impl LeaseServer {
    fn reply(&mut self, r: &Seen) -> Option<Reply> {
        if r.is(Method::GET, LEASE) {
            return Some(match &self.stored {
                Some(l) => Reply::ok(l.clone()),
                None => Reply::error(404, "NotFound"),
            });
        }
        if r.is(Method::POST, LEASES) {
            let mut l = r.body.clone();
            l["metadata"]["resourceVersion"] = json!("1");
            self.stored = Some(l.clone());
            return Some(Reply::Json(StatusCode::CREATED, l));
        }
        if r.is(Method::PUT, LEASE) {
            let current = self.stored.as_ref()?["metadata"]["resourceVersion"]
                .as_str()?
                .to_string();
            if r.body["metadata"]["resourceVersion"] != json!(current) {
                return Some(Reply::error(409, "Conflict"));
            }
            let mut l = r.body.clone();
            let next = current.parse::<u64>().unwrap() + 1;
            l["metadata"]["resourceVersion"] = json!(next.to_string());
            self.stored = Some(l.clone());
            return Some(Reply::ok(l));
        }
        None
    }
}

/// The path of `object` (with `apiVersion`, `kind`, `metadata.name` and, if namespaced,
/// `metadata.namespace`) on the API server: `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL/NAME`
/// (`/api/v1/...` for core). The plural is the kind in lower case plus `s` (`es` after an `s`),
/// which is right for every kind the controller reads.
pub fn object_path(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind").to_lowercase();
    let plural = if kind.ends_with('s') {
        format!("{kind}es")
    } else {
        format!("{kind}s")
    };
    let root = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    let name = object["metadata"]["name"].as_str().expect("metadata.name");
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{root}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{root}/{plural}/{name}"),
    }
}

/// `patch` applied to `target` as a JSON merge patch (RFC 7386): objects merged key by key,
/// `null` removes, anything else (arrays included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().unwrap();
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Objects served by name, as the API server does with a `status` subresource: GET of
/// `PATH` or `PATH/status` returns the object; a PATCH of `PATH/status` (JSON merge patch) is
/// refused with 409 when it carries a `metadata.resourceVersion` other than the object's (the
/// optimistic concurrency of a write), else merges its `status` into the object and bumps the
/// resourceVersion. Anything else about other paths is not answered here.
#[derive(Default)]
struct ObjectServer {
    objects: HashMap<String, Value>,
}

impl ObjectServer {
    fn reply(&mut self, r: &Seen) -> Option<Reply> {
        let path = r.path.strip_suffix("/status").unwrap_or(&r.path);
        let object = self.objects.get_mut(path)?;
        match r.method {
            Method::GET => Some(Reply::ok(object.clone())),
            Method::PATCH if r.path.ends_with("/status") => {
                let current = object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("0")
                    .to_string();
                let asked = &r.body["metadata"]["resourceVersion"];
                if !asked.is_null() && *asked != json!(current) {
                    return Some(Reply::error(409, "Conflict"));
                }
                if let Some(status) = r.body.get("status") {
                    merge_patch(&mut object["status"], status);
                }
                let next = current.parse::<u64>().unwrap_or(0) + 1;
                object["metadata"]["resourceVersion"] = json!(next.to_string());
                Some(Reply::ok(object.clone()))
            }
            _ => None,
        }
    }
}

// === the server ===

/// What the mock API server answers, before it runs ([`MockApi::serve`]).
#[derive(Default)]
pub struct MockApi {
    lists: Lists,
    leases: Option<LeaseServer>,
    objects: ObjectServer,
}

impl MockApi {
    pub fn new(lists: Lists) -> MockApi {
        MockApi {
            lists,
            leases: None,
            objects: ObjectServer::default(),
        }
    }

    /// Also serves `objects` by name, with their `status` subresource (see [`ObjectServer`]),
    /// each at its [`object_path`]; [`Mock::object`] reads them back.
    pub fn with_objects(mut self, objects: impl IntoIterator<Item = Value>) -> MockApi {
        for object in objects {
            self.objects.objects.insert(object_path(&object), object);
        }
        self
    }

    /// Also serves the Lease [`LEASE`] (see [`LeaseServer`]).
    pub fn with_leases(mut self) -> MockApi {
        self.leases = Some(LeaseServer::default());
        self
    }

    /// Starts the server with the defaults alone.
    pub fn start(self) -> Mock {
        self.serve(|_| None)
    }

    /// Starts the server; `handler` answers what it wants first, then the Lease server, the
    /// lists and the defaults answer the rest.
    pub fn serve(self, mut handler: impl FnMut(&Seen) -> Option<Reply> + Send + 'static) -> Mock {
        let MockApi {
            lists,
            mut leases,
            objects,
        } = self;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<ResBody>>();
        let mock = Mock {
            client: Client::new(service, "default"),
            seen: Arc::default(),
            watches: Arc::default(),
            rbac: Arc::new(RbacCheck::new(Vec::new())),
            objects: Arc::new(Mutex::new(objects)),
        };
        let (seen, watches) = (mock.seen.clone(), mock.watches.clone());
        let objects = mock.objects.clone();
        let (refused, grants) = (mock.rbac.refused.clone(), default_grants());
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let request = seen_of(request).await;
                if let Some(why) = request.refused_by(&grants) {
                    refused.lock().unwrap().push(why);
                }
                let reply = handler(&request)
                    .or_else(|| leases.as_mut().and_then(|l| l.reply(&request)))
                    .or_else(|| objects.lock().unwrap().reply(&request))
                    .or_else(|| lists.reply(&request))
                    .unwrap_or_else(|| Reply::default_for(&request));
                seen.lock().unwrap().push(request.clone());
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
                        watches
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
        mock
    }
}

async fn seen_of(request: Request<Body>) -> Seen {
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    Seen {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(url_pairs).unwrap_or_default(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string()),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        },
    }
}

type Watches = Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Bytes>>>>>;

/// The running server: a client to it, what it saw, and its open watches.
#[derive(Clone)]
pub struct Mock {
    client: Client,
    seen: Arc<Mutex<Vec<Seen>>>,
    watches: Watches,
    /// Every request [`default_grants`] refuse, as it arrived; checked when the last clone of
    /// the mock is dropped.
    rbac: Arc<RbacCheck>,
    /// The objects served by name ([`MockApi::with_objects`]), as written so far.
    objects: Arc<Mutex<ObjectServer>>,
}

impl Mock {
    /// A kube client of this server.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The object served at `path` ([`MockApi::with_objects`]) as it is now, status writes
    /// included.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().objects.get(path).cloned()
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests so far that match `f`, in order.
    pub fn seen_where(&self, f: impl Fn(&Seen) -> bool) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| f(s)).collect()
    }

    pub fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.seen_where(f).len()
    }

    /// Waits (up to [`T`]) until `n` requests match `f`.
    pub async fn wait_count(&self, n: usize, f: impl Fn(&Seen) -> bool) {
        let f = &f;
        assert!(
            wait_until(T, || async move { self.count(f) >= n }).await,
            "expected {n} matching requests; saw {:#?}",
            self.seen()
        );
    }

    /// Sends one watch event on every open watch of `path`.
    pub fn push(&self, path: &str, event: Value) {
        let watches = self.watches.lock().unwrap();
        let open = watches.get(path).expect("no watch open on this path");
        let mut line = event.to_string().into_bytes();
        line.push(b'\n');
        for tx in open {
            let _ = tx.send(Bytes::from(line.clone()));
        }
    }

    /// Ends every open watch stream of `path`, as a dropped connection would.
    pub fn break_watches(&self, path: &str) {
        self.watches.lock().unwrap().remove(path);
    }

    pub fn open_watches(&self, path: &str) -> usize {
        self.watches
            .lock()
            .unwrap()
            .get(path)
            .map_or(0, |v| v.iter().filter(|tx| !tx.is_closed()).count())
    }

    /// The requests refused so far by the RBAC check, which forgets them: for a test that
    /// makes them on purpose.
    pub fn take_refused(&self) -> Vec<String> {
        std::mem::take(&mut *self.rbac.refused.lock().unwrap())
    }

    // --- the code under test, started against this server ---

    /// The cluster source watching `watch_namespace` (every namespace with `None`), with a
    /// publish Service and a default certificate in [`OWN_NAMESPACE`]; ready.
    pub async fn source(&self, watch_namespace: Option<&str>) -> KubeSource {
        let settings = SourceSettings {
            watch_namespace: watch_namespace.map(str::to_string),
            publish_service: Some((OWN_NAMESPACE.into(), "portcullis".into())),
            default_certificate: Some((OWN_NAMESPACE.into(), "default-cert".into())),
        };
        let source = KubeSource::start(self.client(), &settings);
        tokio::time::timeout(T, source.wait_ready())
            .await
            .expect("source not ready in time")
            .unwrap();
        source
    }

    /// The whole controller (data plane included) with `settings` and `controller`.
    pub async fn controller(
        &self,
        settings: Settings,
        controller: ControllerSettings,
    ) -> Controller {
        cluster::start(self.client(), settings, controller)
            .await
            .unwrap()
    }
}

/// Proxy settings with every listener on 127.0.0.1, on a port of its own.
pub fn loopback() -> Settings {
    let local = "127.0.0.1:0".parse().unwrap();
    Settings {
        http_addr: local,
        https_addr: local,
        admin_addr: local,
        ..Settings::default()
    }
}

/// Class `portcullis`, watching `apps`, publishing 10.0.0.1, the Lease [`LEASE`], as `pod-a`.
pub fn controller_settings() -> ControllerSettings {
    ControllerSettings {
        ingress_class: "portcullis".into(),
        controller_class: "portcullis.io/ingress-controller".into(),
        watch_namespace: Some("apps".into()),
        publish_service: None,
        publish_status_address: vec!["10.0.0.1".into()],
        default_certificate: None,
        lease_namespace: OWN_NAMESPACE.into(),
        lease_name: "portcullis-leader".into(),
        identity: "pod-a".into(),
        update_status_on_shutdown: false,
    }
}

/// The Lease [`LEASE`], held as `pod-a`.
pub fn lease_settings() -> LeaseSettings {
    LeaseSettings::new(OWN_NAMESPACE, "portcullis-leader", "pod-a")
}

// === objects as the API server lists them ===

/// An Ingress of class `portcullis` for `NAME.example.com` to Service `web` port 443, with
/// what the source strips (`managedFields`, the last-applied copy) and a TLS mode annotation.
pub fn ingress(ns: &str, name: &str, rv: &str) -> Value {
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

/// IngressClass `portcullis`, ours, without parameters.
pub fn ingress_class() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "portcullis", "resourceVersion": "2"},
        "spec": {"controller": "portcullis.io/ingress-controller"},
    })
}

/// An Ingress `name` in `apps` for `NAME.example.com` to Service `web`'s port `http`.
pub fn web_ingress(name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "apps", "uid": format!("uid-{name}"),
                     "resourceVersion": "10", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "ingressClassName": "portcullis",
            "rules": [{"host": format!("{name}.example.com"), "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"name": "http"}}},
            }]}}],
        },
    })
}

/// Service `name` in `apps` with one port, `(name, number)`, to `target_port`.
pub fn service(name: &str, (port_name, port): (&str, u16), target_port: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "apps", "resourceVersion": "6"},
        "spec": {"ports": [{"name": port_name, "port": port, "targetPort": target_port}]},
    })
}

/// EndpointSlice `name` of Service `service` in `apps`: one ready `address`, one port.
pub fn endpoint_slice(
    name: &str,
    service: &str,
    address: &str,
    (port_name, port): (&str, u16),
) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "apps", "resourceVersion": "7",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    })
}

/// Class `portcullis`, `ingresses`, and Service `web` in `apps` with one ready endpoint:
/// `backend`.
pub fn web_lists(backend: &Backend, ingresses: Vec<Value>) -> Lists {
    let port = backend.addr.port();
    Lists::new()
        .of("ingressclasses", vec![ingress_class()])
        .of("ingresses", ingresses)
        .of("services", vec![service("web", ("http", 80), json!(port))])
        .of(
            "endpointslices",
            vec![endpoint_slice("web-1", "web", "127.0.0.1", ("http", port))],
        )
}

/// A `kubernetes.io/tls` Secret holding `leaf`.
pub fn tls_secret(namespace: &str, name: &str, leaf: &Leaf) -> Value {
    use k8s_openapi::ByteString;
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
                (
                    "tls.crt".into(),
                    ByteString(leaf.cert_pem.clone().into_bytes()),
                ),
                (
                    "tls.key".into(),
                    ByteString(leaf.key_pem.clone().into_bytes()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    serde_json::to_value(secret).unwrap()
}

/// The Gateway API's path prefix on the API server.
pub const GATEWAY_API: &str = "/apis/gateway.networking.k8s.io/";

/// One object of every kind the source watches, in `apps`, by kind; the Secrets as the two
/// selected lists give them (`secrets-tls`, `secrets-ca`: `both` is in each). The Gateway API
/// kinds and the ConfigMap carry what the source strips (`managedFields`, the last-applied
/// copy, ConfigMap keys other than `ca.crt`). Two Namespaces (cluster-scoped): `apps`, labelled
/// `team: a` and carrying everything but its name and labels that the source drops, and
/// `shop`, with only the label the API server sets.
pub fn fixtures() -> HashMap<&'static str, Vec<Value>> {
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
            vec![service("web", ("https", 443), json!(8443))],
        ),
        (
            "endpointslices",
            vec![endpoint_slice(
                "web-abc",
                "web",
                "10.1.0.5",
                ("https", 8443),
            )],
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
        (
            "gatewayclasses",
            vec![json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": {"name": "portcullis", "resourceVersion": "12", "uid": "uid-gc",
                             "managedFields": [{"manager": "helm"}]},
                "spec": {"controllerName": "portcullis.io/gateway-controller"},
            })],
        ),
        (
            "gateways",
            vec![json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "edge", "namespace": "apps", "resourceVersion": "13",
                             "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                "spec": {"gatewayClassName": "portcullis", "listeners": [
                    {"name": "http", "port": 80, "protocol": "HTTP"},
                    {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "*.example.com",
                     "tls": {"mode": "Terminate", "certificateRefs": [{"name": "tls"}]}},
                ]},
            })],
        ),
        (
            "httproutes",
            vec![json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "web", "namespace": "apps", "resourceVersion": "14",
                             "managedFields": [{"manager": "kubectl"}]},
                "spec": {"parentRefs": [{"name": "edge"}], "hostnames": ["web.example.com"],
                         "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                    "backendRefs": [{"name": "web", "port": 443}]}]},
            })],
        ),
        (
            "grpcroutes",
            vec![json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
                "metadata": {"name": "rpc", "namespace": "apps", "resourceVersion": "19",
                             "managedFields": [{"manager": "kubectl"}]},
                "spec": {"parentRefs": [{"name": "edge", "sectionName": "https"}],
                         "hostnames": ["rpc.example.com"],
                         "rules": [{"matches": [{"method": {"service": "shop.Cart", "method": "Get"}}],
                                    "backendRefs": [{"name": "web", "port": 443}]}]},
            })],
        ),
        (
            "tlsroutes",
            vec![json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "TLSRoute",
                "metadata": {"name": "db", "namespace": "apps", "resourceVersion": "15"},
                "spec": {"parentRefs": [{"name": "edge", "sectionName": "tls"}],
                         "hostnames": ["db.example.com"],
                         "rules": [{"backendRefs": [{"name": "db", "port": 5432}]}]},
            })],
        ),
        (
            "backendtlspolicies",
            vec![json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
                "metadata": {"name": "web-tls", "namespace": "apps", "resourceVersion": "16"},
                "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
                         "validation": {"caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "web-ca"}],
                                        "hostname": "web.apps.svc"}},
            })],
        ),
        (
            "referencegrants",
            vec![json!({
                "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                "metadata": {"name": "from-edge", "namespace": "apps", "resourceVersion": "17"},
                "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "shop"}],
                         "to": [{"group": "", "kind": "Service"}]},
            })],
        ),
        (
            "namespaces",
            vec![
                json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "apps", "uid": "uid-ns-apps", "resourceVersion": "22",
                                 "creationTimestamp": "2026-01-01T00:00:00Z",
                                 "labels": {"kubernetes.io/metadata.name": "apps", "team": "a"},
                                 "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                                 "owner": "team-a@example.com"},
                                 "managedFields": [{"manager": "kubectl"}]},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                }),
                json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "shop", "uid": "uid-ns-shop", "resourceVersion": "23",
                                 "labels": {"kubernetes.io/metadata.name": "shop"}},
                    "status": {"phase": "Active"},
                }),
            ],
        ),
        (
            "configmaps",
            vec![json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "web-ca", "namespace": "apps", "resourceVersion": "18",
                             "managedFields": [{"manager": "kubectl"}]},
                "data": {"ca.crt": "-----BEGIN CERTIFICATE-----", "app.properties": "unrelated"},
                "binaryData": {"blob": "AAEC"},
            })],
        ),
    ])
}

/// [`fixtures`] as the lists of their kinds (the Secrets by selector).
pub fn fixture_lists() -> Lists {
    let mut f = fixtures();
    let mut take = |kind: &str| f.remove(kind).unwrap();
    Lists::new()
        .of("ingresses", take("ingresses"))
        .of("ingressclasses", take("ingressclasses"))
        .of("services", take("services"))
        .of("endpointslices", take("endpointslices"))
        .of("ingressclassparams", take("ingressclassparams"))
        .selected("secrets", "type=kubernetes.io/tls", take("secrets-tls"))
        .selected(
            "secrets",
            "portcullis.io/backend-ca=true",
            take("secrets-ca"),
        )
        .of("gatewayclasses", take("gatewayclasses"))
        .of("gateways", take("gateways"))
        .of("httproutes", take("httproutes"))
        .of("grpcroutes", take("grpcroutes"))
        .of("tlsroutes", take("tlsroutes"))
        .of("backendtlspolicies", take("backendtlspolicies"))
        .of("referencegrants", take("referencegrants"))
        .of("configmaps", take("configmaps"))
        .of("namespaces", take("namespaces"))
}

// === the publisher's inputs, for tests that drive `Publisher` directly ===

/// The controller's view of the cluster ([`ClusterView`]), set by hand: Ingresses by
/// namespace/name, the publish Service, uids made up from the names.
#[derive(Default)]
pub struct FakeView {
    pub ingresses: Mutex<HashMap<(String, String), Arc<Ingress>>>,
    pub publish_service: Mutex<Option<Arc<Service>>>,
}

impl FakeView {
    /// A view holding `ingresses`.
    pub fn of(ingresses: impl IntoIterator<Item = Value>) -> Arc<FakeView> {
        let view = Arc::new(FakeView::default());
        for ingress in ingresses {
            view.put(ingress);
        }
        view
    }

    /// Adds or replaces an Ingress.
    pub fn put(&self, value: Value) {
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

/// `ingress` showing `lb` as its `status.loadBalancer.ingress`.
pub fn with_status(mut ingress: Value, lb: Value) -> Value {
    ingress["status"] = json!({"loadBalancer": {"ingress": lb}});
    ingress
}

/// A build with an empty table and these diagnostics.
pub fn built(diagnostics: Vec<Diagnostic>) -> Built {
    Built {
        table: Arc::new(RouteTable::default()),
        diagnostics,
        last_good: LastGood::default(),
        ours: Vec::new(),
        gateway_api: Default::default(),
    }
}
