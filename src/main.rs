//! The `portcullis` command line: parses flags into [`Settings`] and hands over to the library.
//! `anyhow` lives here and nowhere else.
//!
//! Exit codes: 0 success; 1 failure (and `check` found errors); 2 usage errors (bad flags, a
//! missing directory, a mode this build does not implement; for `check` also input that cannot
//! be read or, as a single file or stdin, does not parse).
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;
use tracing_subscriber::EnvFilter;

use portcullis::cluster::ControllerSettings;
use portcullis::crd::IngressClassParams;
use portcullis::model::annotations::{self, DurationSyntax};
use portcullis::model::{self, LastGood};
use portcullis::settings::{BuildSettings, LogFormat, PublicPorts, Settings};
use portcullis::source::directory::{WatchError, load_input};
use portcullis::table::describe;
use portcullis::telemetry::log_format::AccessFormat;
use portcullis::telemetry::log_sink;

/// mimalloc (v2 line, no transparent huge pages: with THP its arenas doubled idle RSS here):
/// fewer instructions per allocation than glibc's malloc, and far fewer than musl's (the static
/// packaging build). See docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status of usage errors (as clap uses).
const USAGE: u8 = 2;

/// Portcullis: a Kubernetes ingress controller (TLS terminate, SNI pass-through and re-encrypt
/// on one :443).
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run in a cluster: watch Ingresses, Services, EndpointSlices and Secrets.
    Controller(ControllerArgs),
    /// Run without a cluster: serve the manifests of a directory, applying changes live.
    Standalone(StandaloneArgs),
    /// Build the routing table from manifests (a directory, a file or stdin), print it, a
    /// verdict per Ingress and the diagnostics; exit 1 when there are errors.
    #[command(after_help = CHECK_EXIT_CODES)]
    Check(CheckArgs),
    /// Print the IngressClassParams CustomResourceDefinition as YAML.
    Crd,
}

#[derive(Debug, Args)]
struct ControllerArgs {
    /// IngressClass name served by this instance.
    #[arg(long, default_value = "portcullis", value_name = "NAME")]
    ingress_class: String,
    /// `spec.controller` value of the IngressClass named by --ingress-class; that pair alone
    /// is served, so installations differing in both never serve each other's Ingresses.
    #[arg(long, default_value = portcullis::settings::CONTROLLER_NAME, value_name = "VALUE")]
    controller_class: String,
    /// Only watch this namespace (default: all).
    #[arg(long, value_name = "NS")]
    watch_namespace: Option<String>,
    /// Service whose load-balancer address is published in Ingress status.
    #[arg(long, value_name = "NS/NAME", value_parser = parse_namespaced)]
    publish_service: Option<(String, String)>,
    /// Addresses published in Ingress status (instead of --publish-service), comma-separated:
    /// IPs become `ip`, names `hostname`.
    #[arg(long, value_name = "ADDR", value_delimiter = ',')]
    publish_status_address: Vec<String>,
    /// `kubernetes.io/tls` Secret served when no host certificate matches.
    #[arg(long, value_name = "NS/NAME", value_parser = parse_namespaced)]
    default_certificate: Option<(String, String)>,
    /// Directory of PEM bundles and tls.crt/tls.key pairs, chosen by SNI; watched.
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// Namespace of the leader-election Lease (default: POD_NAMESPACE, else the service
    /// account's namespace).
    #[arg(long, value_name = "NS")]
    lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = portcullis::cluster::DEFAULT_LEASE_NAME, value_name = "NAME")]
    lease_name: String,
    /// Clear the status of our Ingresses on shutdown (default: keep it, so a rolling update
    /// does not blank DNS automation).
    #[arg(long)]
    update_status_on_shutdown: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct StandaloneArgs {
    /// Directory of Kubernetes manifests (*.yaml, *.yml; recursive); watched.
    #[arg(long, value_name = "DIR")]
    manifests: PathBuf,
    /// IngressClass name served by this instance.
    #[arg(long, default_value = "portcullis", value_name = "NAME")]
    ingress_class: String,
    /// `spec.controller` value of the IngressClass named by --ingress-class; that pair alone
    /// is served, so installations differing in both never serve each other's Ingresses.
    #[arg(long, default_value = portcullis::settings::CONTROLLER_NAME, value_name = "VALUE")]
    controller_class: String,
    /// Directory of PEM bundles and tls.crt/tls.key pairs, chosen by SNI; watched.
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

/// `portcullis check --help`'s closing section.
const CHECK_EXIT_CODES: &str = "\
Exit codes:
  0  no error diagnostic: every Ingress checked serves (warnings allowed)
  1  at least one error diagnostic: a refused Ingress, a path lost to a conflict, an Ingress
     of a removed apiVersion, a file in a directory that does not parse
  2  usage or input error: bad flags, PATH missing or unreadable, a single file or stdin
     that does not parse

Migrating from ingress-nginx:
  kubectl get ingressclass,ingress,service,secret,endpointslice -A -o yaml \\
    | portcullis check --as-class nginx -";

#[derive(Debug, Args)]
struct CheckArgs {
    /// Kubernetes manifests: a directory (*.yaml, *.yml; recursive), one file, or `-` for
    /// standard input. Multi-document YAML and `kind: List` (as `kubectl get -o yaml` prints)
    /// are read.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// IngressClass name to check for.
    #[arg(long, default_value = "portcullis", value_name = "NAME")]
    ingress_class: String,
    /// `spec.controller` value of the IngressClass named by --ingress-class; that pair alone
    /// is served, so installations differing in both never serve each other's Ingresses.
    #[arg(long, default_value = portcullis::settings::CONTROLLER_NAME, value_name = "VALUE")]
    controller_class: String,
    /// Judge the Ingresses of class NAME (another controller's, e.g. `nginx`: by
    /// `spec.ingressClassName`, the `kubernetes.io/ingress.class` annotation, or being
    /// class-less while NAME is the default class) as if they were of --ingress-class.
    /// Repeatable.
    #[arg(long, value_name = "NAME")]
    as_class: Vec<String>,
    /// Certificate directory, as `standalone --cert-dir` would read it.
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Flags shared by `controller` and `standalone`.
#[derive(Debug, Args)]
struct Common {
    /// Plain HTTP listener.
    #[arg(long, default_value = "0.0.0.0:80", value_name = "ADDR")]
    http_addr: SocketAddr,
    /// TLS listener (terminate, pass-through, re-encrypt).
    #[arg(long, default_value = "0.0.0.0:443", value_name = "ADDR")]
    https_addr: SocketAddr,
    /// /healthz, /readyz, /metrics, /table.
    #[arg(long, default_value = "127.0.0.1:10254", value_name = "ADDR")]
    admin_addr: SocketAddr,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,
    /// Log filter, e.g. `info` or `portcullis=debug,access=off` (default: RUST_LOG, else info).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Port clients use for plain HTTP when a Service maps it onto --http-addr (for
    /// `X-Forwarded-Port`); default: the listener's own port.
    #[arg(long, value_name = "PORT")]
    public_http_port: Option<u16>,
    /// Port clients use for HTTPS when a Service maps it onto --https-addr (for redirect
    /// `Location`s and `X-Forwarded-Port`); default: the listener's own port.
    #[arg(long, value_name = "PORT")]
    public_https_port: Option<u16>,
    /// How long open connections may finish after SIGTERM, e.g. `30s`, `500ms`, `2m`.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// After SIGTERM, keep accepting new connections this long (with /readyz already 503)
    /// before the drain starts, e.g. `5s`; for clusters without the preStop `sleep` action
    /// (Kubernetes before 1.30). Counts toward the pod's termination grace period.
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = parse_duration)]
    shutdown_delay: Duration,
    /// Threads serving client connections, each with its own event loop; a connection stays
    /// on one thread, the least loaded when it arrives (default: one per CPU this process may
    /// run on).
    #[arg(long, value_name = "N")]
    proxy_workers: Option<NonZeroUsize>,
    /// Pass-through: move bulk transfers (a read that fills the 16 KiB buffer) with splice(2)
    /// through a kernel pipe instead of copying them through the process. Saves the proxy's
    /// CPU per byte; on loopback the machine as a whole spent the same (README, Performance).
    #[arg(long)]
    passthrough_splice: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(format: LogFormatArg) -> Self {
        match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

impl Common {
    fn settings(&self, build: BuildSettings, cert_dir: Option<PathBuf>) -> Settings {
        Settings {
            http_addr: self.http_addr,
            https_addr: self.https_addr,
            admin_addr: self.admin_addr,
            build,
            cert_dir,
            log_format: self.log_format.into(),
            shutdown_grace: self.shutdown_grace,
            shutdown_delay: self.shutdown_delay,
            proxy_workers: self.proxy_workers.unwrap_or_else(available_cpus),
            passthrough_splice: self.passthrough_splice,
            public_ports: PublicPorts {
                http: self.public_http_port,
                https: self.public_https_port,
            },
            ..Settings::default()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Controller(args) => controller(&args),
        Command::Standalone(args) => standalone(&args),
        Command::Check(args) => check(&args),
        Command::Crd => crd(),
    };
    // Log lines are written by a thread of their own (`telemetry::log_sink`): the last ones
    // out before the process ends.
    log_sink::flush();
    code
}

fn controller(args: &ControllerArgs) -> ExitCode {
    init_logging(
        args.common.log_format.into(),
        args.common.log_level.as_deref(),
        "info",
    );
    let mut cluster = ControllerSettings::from_env();
    cluster.ingress_class = args.ingress_class.clone();
    cluster.controller_class = args.controller_class.clone();
    cluster.watch_namespace = args.watch_namespace.clone();
    cluster.publish_service = args.publish_service.clone();
    cluster.publish_status_address = args.publish_status_address.clone();
    cluster.default_certificate = args.default_certificate.clone();
    cluster.lease_name = args.lease_name.clone();
    cluster.update_status_on_shutdown = args.update_status_on_shutdown;
    if let Some(ns) = &args.lease_namespace {
        cluster.lease_namespace = ns.clone();
    }
    if let Err(e) = cluster.validate() {
        eprintln!("portcullis controller: {e}");
        return ExitCode::from(USAGE);
    }
    let settings = args
        .common
        .settings(cluster.build_settings(), args.cert_dir.clone());
    match run_async(portcullis::cluster::run(settings, cluster)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("portcullis: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs a future on a runtime with one worker per CPU this process may run on:
/// `available_parallelism` honours the CPU affinity mask (taskset, cpuset cgroups) and CFS
/// quotas, so a pod limited to one CPU gets one worker instead of one per host core. With one
/// CPU, the single-threaded scheduler: the same work without work-stealing bookkeeping
/// (blocking work still goes to its pool). This runtime runs the control plane, and the proxy
/// when it has one worker; several proxy workers run on threads of their own
/// (`proxy::serve_on_workers`).
fn run_async<E>(future: impl std::future::Future<Output = Result<(), E>>) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    // Both commands run here stop on SIGINT/SIGTERM: held from before the runtime's threads
    // exist until their handlers are in place, so none is lost while they are installed.
    portcullis::runtime::hold_stop_signals().context("holding SIGINT and SIGTERM")?;
    let workers = available_cpus().get();
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = builder
        .enable_all()
        .thread_name("portcullis")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(future)?;
    Ok(())
}

/// The CPUs this process may run on: `available_parallelism` honours the CPU affinity mask
/// (taskset, cpuset cgroups) and CFS quotas.
fn available_cpus() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

fn standalone(args: &StandaloneArgs) -> ExitCode {
    init_logging(
        args.common.log_format.into(),
        args.common.log_level.as_deref(),
        "info",
    );
    let build = BuildSettings {
        ingress_class: args.ingress_class.clone(),
        controller_class: args.controller_class.clone(),
        ..BuildSettings::default()
    };
    let settings = args.common.settings(build, args.cert_dir.clone());
    match run_standalone(settings, &args.manifests) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("portcullis: {e:#}");
            // A missing or unreadable directory is a usage error, like in `check`.
            let usage = e.chain().any(|cause| {
                cause.downcast_ref::<WatchError>().is_some_and(|w| {
                    matches!(
                        w,
                        WatchError::Manifests { .. }
                            | WatchError::CertDir { .. }
                            | WatchError::NotADirectory { .. }
                    )
                })
            });
            ExitCode::from(if usage { USAGE } else { 1 })
        }
    }
}

fn run_standalone(settings: Settings, manifests: &Path) -> anyhow::Result<()> {
    run_async(portcullis::runtime::run_standalone(settings, manifests))
}

fn check(args: &CheckArgs) -> ExitCode {
    init_logging(LogFormat::Text, None, "warn");
    let mut snapshot = match load_input(&args.path, args.cert_dir.as_deref()) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            eprintln!("portcullis check: {e}");
            return ExitCode::from(USAGE);
        }
    };
    for class in &args.as_class {
        snapshot = snapshot.with_class_as(class, &args.ingress_class);
    }
    let settings = BuildSettings {
        ingress_class: args.ingress_class.clone(),
        controller_class: args.controller_class.clone(),
        ..BuildSettings::default()
    };
    let built = model::build(&snapshot, &settings, &LastGood::default());
    let input = describe::CheckInput {
        table: &built.table,
        diagnostics: &built.diagnostics,
        ingresses: &snapshot.ingresses,
        ours: &built.ours,
    };
    let rendered = match args.output {
        Output::Text => {
            let mut text = describe::render_check_text(&input);
            let gateway_api = built.gateway_api.render_text();
            if !gateway_api.is_empty() {
                text.push('\n');
                text.push_str(&gateway_api);
            }
            text
        }
        Output::Json => built
            .gateway_api
            .add_to_json(describe::render_check_json(&input)),
    };
    print!("{rendered}");
    if !rendered.is_empty() && !rendered.ends_with('\n') {
        println!();
    }
    if describe::has_errors(&built.diagnostics) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn crd() -> ExitCode {
    match crd_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis crd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn crd_yaml() -> anyhow::Result<String> {
    let yaml = serde_saphyr::to_string(&IngressClassParams::crd())
        .context("serializing the CRD as YAML")?;
    Ok(if yaml.ends_with('\n') {
        yaml
    } else {
        yaml + "\n"
    })
}

/// Logs go to stderr (stdout is `check`'s and `crd`'s output), in batches from a thread of their
/// own (`telemetry::log_sink`). The filter is `--log-level`,
/// else `RUST_LOG`, else `default`.
fn init_logging(format: LogFormat, level: Option<&str>, default: &str) {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|e| {
            eprintln!("portcullis: bad --log-level {level:?} ({e}); using {default}");
            EnvFilter::new(default)
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    let access_format = match format {
        LogFormat::Text => AccessFormat::Text,
        LogFormat::Json => AccessFormat::Json,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log_sink::install(access_format))
        .with_ansi(std::io::stderr().is_terminal());
    // Access lines do not pass through here (`telemetry::log_format`); they follow the same
    // spelling.
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.with_ansi(false).json().flatten_event(true).init(),
    }
    portcullis::telemetry::settle_access_log();
}

/// `NS/NAME` → (namespace, name).
fn parse_namespaced(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {s:?}")),
    }
}

/// `30s`, `500ms`, `2m`, `1h`, or a bare number of seconds (the flag syntax of the one
/// duration parser, which the manifests share).
fn parse_duration(s: &str) -> Result<Duration, String> {
    annotations::parse_duration(s, DurationSyntax::Flag).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn namespaced() {
        assert_eq!(
            parse_namespaced("ns/name"),
            Ok(("ns".to_string(), "name".to_string()))
        );
        assert!(parse_namespaced("name").is_err());
        assert!(parse_namespaced("a/b/c").is_err());
    }
}
