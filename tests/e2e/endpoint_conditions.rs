//! End to end, the built binary in standalone mode: EndpointSlice conditions decide which pods
//! get traffic. One slice lists a ready backend R and a backend T that is not ready but serving
//! and terminating (a pod draining after SIGTERM). Every request goes to R while it is listed;
//! with only T left, T answers (kube-proxy's terminating fallback) instead of a 503; once T
//! stops serving too, the route answers 503. Asserted on the backends' own request counts.
//! Active health checks are off (`health-check: none`), so the only traffic is the test's.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::support::backends::{self, Backend};
use crate::support::binary::Binary;
use crate::support::http::{HttpClient, get_backend, http_client};
use crate::support::manifests::{self, NS, ingress, ingress_class};

const HOST: &str = "conditions.e2e.test";
const SERVICE: &str = "drain";
const REQUESTS: usize = 20;
/// How long a manifest change may take to become the live table.
const SWAP_DEADLINE: Duration = Duration::from_secs(5);

/// Two HTTP backends on one port number and two loopback addresses, so that one EndpointSlice
/// (one port list for all its endpoints, as in a cluster) can name both.
async fn backend_pair() -> (Backend, Backend) {
    for _ in 0..20 {
        let r = TcpListener::bind("127.0.0.2:0").await.expect("bind R");
        let port = r.local_addr().expect("R's address").port();
        // The same port may be taken on the other address; another draw then.
        if let Ok(t) = TcpListener::bind(("127.0.0.3", port)).await {
            return (backends::http_on("r", r), backends::http_on("t", t));
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// The Service `drain` (port 80, named `web`) and its one EndpointSlice listing `endpoints`:
/// each an address and its `conditions` as flow-style YAML.
fn service_with(port: u16, endpoints: &[(SocketAddr, &str)]) -> String {
    let mut out = format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {SERVICE}
  namespace: {NS}
spec:
  ports:
  - name: web
    port: 80
    targetPort: web
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {SERVICE}-1
  namespace: {NS}
  labels:
    kubernetes.io/service-name: {SERVICE}
addressType: IPv4
ports:
- name: web
  port: {port}
  protocol: TCP
endpoints:
"
    );
    for (addr, conditions) in endpoints {
        assert_eq!(addr.port(), port, "one slice, one port");
        out.push_str(&format!(
            "- addresses: [\"{}\"]\n  conditions: {conditions}\n",
            addr.ip()
        ));
    }
    out
}

/// Rewrites the Service's manifest and waits until the table built from it is live.
async fn swap(proxy: &Binary, dir: &Path, text: &str) {
    let before = proxy.generation().await;
    manifests::write(dir, "svc.yaml", text);
    proxy.wait_generation_above(before, SWAP_DEADLINE).await;
}

fn addresses(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What one step of the drain shows: the live upstream of the only route (from `/table`), and
/// `REQUESTS` GETs answered as (status, `x-backend`) or the error.
struct Step {
    upstream: serde_json::Value,
    answers: Vec<Result<(u16, String), String>>,
}

impl Step {
    async fn run(client: &HttpClient, proxy: &Binary, phase: &str) -> Step {
        let table = proxy.table().await;
        let upstream = table["table"]["hosts"][0]["routes"][0]["upstream"].clone();
        let mut answers = Vec::with_capacity(REQUESTS);
        for i in 0..REQUESTS {
            let path = format!("/{phase}/{i}");
            answers.push(get_backend(client, proxy.http, HOST, &path).await);
        }
        Step { upstream, answers }
    }

    /// The listed `endpoints` and `terminating` addresses.
    fn lists(&self) -> (Vec<String>, Vec<String>) {
        let u = &self.upstream;
        (addresses(&u["endpoints"]), addresses(&u["terminating"]))
    }

    /// Asserts that every answer is `expected` (the proxy's log on failure).
    fn all_answered(
        &self,
        proxy: &Binary,
        expected: impl Fn(&Result<(u16, String), String>) -> bool,
    ) {
        let answers = &self.answers;
        assert!(
            answers.iter().all(expected),
            "{answers:#?}\n{}",
            proxy.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_endpoints_serve_only_when_no_ready_one_is_left() {
    let (r, t) = backend_pair().await;
    let port = r.addr.port();
    const READY: &str = "{ready: true, serving: true, terminating: false}";
    const DRAINING: &str = "{ready: false, serving: true, terminating: true}";
    const STOPPED: &str = "{ready: false, serving: false, terminating: true}";

    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(
        m,
        "ingress.yaml",
        &ingress(
            SERVICE,
            HOST,
            SERVICE,
            &[("portcullis.io/health-check", "none")],
            None,
        ),
    );
    let both = service_with(port, &[(r.addr, READY), (t.addr, DRAINING)]);
    manifests::write(m, "svc.yaml", &both);
    let proxy = Binary::start(m).await;
    let client = http_client();
    let (r_addr, t_addr) = (vec![r.addr.to_string()], vec![t.addr.to_string()]);

    // R ready, T draining: T is listed as the fallback, and gets nothing.
    let step = Step::run(&client, &proxy, "both").await;
    let u = &step.upstream;
    assert_eq!(step.lists(), (r_addr, t_addr.clone()), "{u:#}");
    step.all_answered(&proxy, |a| a == &Ok((200, "r".to_string())));
    assert_eq!(r.count(), REQUESTS);
    assert_eq!(
        t.count(),
        0,
        "a terminating endpoint served while a ready one was listed"
    );
    assert_eq!(t.connections(), 0, "the proxy even connected to T");

    // R gone (scaled down), T still draining: T is all there is, and serves.
    swap(&proxy, m, &service_with(port, &[(t.addr, DRAINING)])).await;
    let step = Step::run(&client, &proxy, "draining").await;
    let u = &step.upstream;
    assert_eq!(step.lists(), (Vec::new(), t_addr), "{u:#}");
    step.all_answered(&proxy, |a| a == &Ok((200, "t".to_string())));
    assert_eq!(t.count(), REQUESTS);
    assert_eq!(r.count(), REQUESTS, "R is no longer listed");

    // T no longer serving: nothing is eligible, 503 without reaching T.
    swap(&proxy, m, &service_with(port, &[(t.addr, STOPPED)])).await;
    let step = Step::run(&client, &proxy, "stopped").await;
    let u = &step.upstream;
    assert_eq!(addresses(&u["endpoints"]), Vec::<String>::new(), "{u:#}");
    assert!(u.get("terminating").is_none(), "{u:#}");
    step.all_answered(&proxy, |a| matches!(a, Ok((503, _))));
    assert_eq!(t.count(), REQUESTS, "a non-serving endpoint got a request");
    assert_eq!(r.count(), REQUESTS);
}
