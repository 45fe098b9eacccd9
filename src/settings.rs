//! Settings from the command line, split into what the pure model needs ([`BuildSettings`])
//! and what the runtime needs ([`Settings`]).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// The default `--controller-class`: the `spec.controller` value of the IngressClasses
/// Portcullis serves. Also the `reportingController` of our Events.
pub const CONTROLLER_NAME: &str = "portcullis.io/ingress-controller";

/// The inputs of `model::build` that are not objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSettings {
    /// `--ingress-class`: the IngressClass name this instance serves (one, as ingress-nginx).
    pub ingress_class: String,
    /// `--controller-class`: the `spec.controller` that IngressClass must name. Two
    /// installations in one cluster differ in both, so neither serves the other's Ingresses.
    pub controller_class: String,
    /// `--default-certificate NS/NAME`: a `kubernetes.io/tls` Secret.
    pub default_certificate: Option<(String, String)>,
    /// `--watch-namespace`: when set, objects elsewhere are ignored.
    pub watch_namespace: Option<String>,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            ingress_class: "portcullis".to_string(),
            controller_class: CONTROLLER_NAME.to_string(),
            default_certificate: None,
            watch_namespace: None,
        }
    }
}

/// Log output format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Runtime settings shared by `standalone` and `controller`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub build: BuildSettings,
    pub cert_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Rest after a build: a change within it waits for one trailing build at its end (so a
    /// burst costs at most two builds); a change after it is built at once.
    pub hold_off: Duration,
    /// Longest a change waits for its (trailing) rebuild.
    pub max_delay: Duration,
    /// How long open connections may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// How long to keep accepting new connections after SIGTERM, with `/readyz` already 503,
    /// before the drain starts: for clusters whose kubelet has no preStop `sleep` action
    /// (Kubernetes before 1.30), so load balancers and kube-proxy stop sending first.
    pub shutdown_delay: Duration,
    /// The ports clients connect to when a Service or NAT maps them onto our listeners (chart:
    /// 80 → 8080, 443 → 8443). Used for redirect `Location`s and `X-Forwarded-Port`; `None`
    /// means the bound listener's port.
    pub public_ports: PublicPorts,
    /// Threads that accept and serve client connections, each with its own single-threaded
    /// runtime (`proxy::serve_on_workers`); 1 serves on the caller's runtime.
    pub proxy_workers: NonZeroUsize,
    /// Pass-through bulk transfers move with `splice(2)` (`proxy::tcp_tunnel`) instead of
    /// being copied through the process.
    pub passthrough_splice: bool,
}

/// Client-facing ports, when they differ from the ports we listen on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublicPorts {
    pub http: Option<u16>,
    pub https: Option<u16>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http_addr: ([0, 0, 0, 0], 80).into(),
            https_addr: ([0, 0, 0, 0], 443).into(),
            admin_addr: ([127, 0, 0, 1], 10254).into(),
            build: BuildSettings::default(),
            cert_dir: None,
            log_format: LogFormat::Text,
            hold_off: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            public_ports: PublicPorts::default(),
            proxy_workers: NonZeroUsize::MIN,
            passthrough_splice: false,
        }
    }
}
