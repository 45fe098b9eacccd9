//! Kubernetes YAML for the end-to-end tests: the IngressClass, a Service with its
//! EndpointSlices pointing at local test backends, Ingresses with annotations, CA Secrets.
//! Everything lives in namespace `default`.

use std::path::{Path, PathBuf};

/// The namespace of every object written here.
pub const NS: &str = "default";

/// Our IngressClass (`portcullis`, the binary's default `--ingress-class`).
pub fn ingress_class() -> String {
    "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portcullis
spec:
  controller: portcullis.io/ingress-controller
"
    .to_string()
}

/// Our IngressClass with parameters: the IngressClassParams `params`, whose `spec` holds the
/// one YAML line `spec_line` (e.g. `timeouts: {idle: 1s}`).
pub fn ingress_class_with_params(params: &str, spec_line: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portcullis
spec:
  controller: portcullis.io/ingress-controller
  parameters:
    apiGroup: portcullis.io
    kind: IngressClassParams
    name: {params}
    scope: Cluster
---
apiVersion: portcullis.io/v1alpha1
kind: IngressClassParams
metadata:
  name: {params}
spec:
  {spec_line}
"
    )
}

/// A Service `name` (port 80, named `web`) whose endpoints are `127.0.0.1:PORT` for each of
/// `ports`: one EndpointSlice per port, as a cluster would publish pods listening on different
/// ports.
pub fn service(name: &str, ports: &[u16]) -> String {
    let mut out = format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {NS}
spec:
  ports:
  - name: web
    port: 80
    targetPort: web
"
    );
    for (i, port) in ports.iter().enumerate() {
        out.push_str(&format!(
            "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{i}
  namespace: {NS}
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: web
  port: {port}
  protocol: TCP
endpoints:
- addresses: [\"127.0.0.1\"]
  conditions:
    ready: true
"
        ));
    }
    out
}

/// An Ingress `name` of class `portcullis`: `host`, path `/` (Prefix) → Service `service`
/// port 80, with `annotations`, and `spec.tls` naming `tls_secret` for the host when given.
pub fn ingress(
    name: &str,
    host: &str,
    service: &str,
    annotations: &[(&str, &str)],
    tls_secret: Option<&str>,
) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: {NS}
  creationTimestamp: \"2025-01-01T00:00:00Z\"
"
    );
    if !annotations.is_empty() {
        out.push_str("  annotations:\n");
        for (key, value) in annotations {
            out.push_str(&format!("    {key}: \"{value}\"\n"));
        }
    }
    out.push_str("spec:\n  ingressClassName: portcullis\n");
    if let Some(secret) = tls_secret {
        out.push_str(&format!(
            "  tls:\n  - hosts: [{host}]\n    secretName: {secret}\n"
        ));
    }
    out.push_str(&format!(
        "  rules:
  - host: {host}
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: {service}
            port:
              number: 80
"
    ));
    out
}

/// Our GatewayClass (`portcullis`, controller `portcullis.io/gateway-controller`) and a
/// Gateway `gw` of it in `default` with `listeners`: YAML list items indented by two spaces,
/// e.g. `  - {name: http, port: 80, protocol: HTTP}\n`.
pub fn gateway_with(listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: portcullis}}
spec: {{controllerName: portcullis.io/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: {NS}}}
spec:
  gatewayClassName: portcullis
  listeners:
{listeners}"
    )
}

/// An Opaque Secret `name` holding `ca.crt` (for `portcullis.io/backend-ca`), labelled as a
/// cluster install needs.
pub fn ca_secret(name: &str, ca_pem: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: {NS}
  labels:
    portcullis.io/backend-ca: \"true\"
type: Opaque
stringData:
  ca.crt: |
{}
",
        super::pki::indent(ca_pem, 4)
    )
}

/// The usual setup of a one-backend end-to-end test: `dir/manifests` holding our IngressClass,
/// Service `web` → `backend`, and `files` (file stem, YAML).
pub fn web_dir(
    dir: &Path,
    backend: &super::backends::Backend,
    files: &[(&str, String)],
) -> PathBuf {
    let m = dir.join("manifests");
    std::fs::create_dir(&m).expect("create the manifest directory");
    write(&m, "class.yaml", &ingress_class());
    write(&m, "svc.yaml", &service("web", &[backend.addr.port()]));
    for (name, yaml) in files {
        write(&m, &format!("{name}.yaml"), yaml);
    }
    m
}

/// Writes `text` to `dir/name` atomically (a hidden temporary file renamed into place, as an
/// editor's safe save or `kubectl cp` does), so the watcher never reads half a file.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write manifest");
    std::fs::rename(&tmp, &path).expect("rename manifest");
    path
}

/// Writes a PEM file (a CA for curl/openssl) and returns its path.
pub fn write_pem(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write pem");
    path
}
