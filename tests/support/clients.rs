//! Real clients as subprocesses: `curl` and `openssl s_client`, for black-box checks of what a
//! user's tools see. Run through `tokio::process`, so the test's backends keep serving. The
//! in-process client is `http`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// Upper bound on any one client run.
const CLIENT_DEADLINE: Duration = Duration::from_secs(15);

/// What curl printed: the last response's status and headers (`-D -`), its body, stderr.
#[derive(Debug)]
pub struct Curl {
    /// 0 when curl got no response.
    pub status: u16,
    /// `HTTP/1.1`, `HTTP/2`.
    pub version: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub exit_code: i32,
    pub stderr: String,
}

impl Curl {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `curl -s -S -D - --resolve HOST:PORT:127.0.0.1 URL` plus `args`, where URL is
/// `SCHEME://HOST:PORT PATH`.
pub async fn curl(scheme: &str, host: &str, at: SocketAddr, path: &str, args: &[&str]) -> Curl {
    let url = format!("{scheme}://{host}:{}{path}", at.port());
    let resolve = format!("{host}:{}:{}", at.port(), at.ip());
    let mut command = Command::new("curl");
    command
        .args(["-s", "-S", "-D", "-", "--max-time", "10", "--resolve"])
        .arg(&resolve)
        .args(args)
        .arg(&url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(CLIENT_DEADLINE, command.output())
        .await
        .expect("curl finishes")
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // With -L (or a 100 Continue) there is one header block per response: keep the last.
    let (mut head, mut body) = stdout
        .split_once("\r\n\r\n")
        .unwrap_or((stdout.as_str(), ""));
    while body.starts_with("HTTP/")
        && let Some((h, b)) = body.split_once("\r\n\r\n")
    {
        (head, body) = (h, b);
    }
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default().to_string();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Curl {
        status,
        version,
        headers,
        body: body.to_string(),
        exit_code: output.status.code().unwrap_or(-1),
        stderr,
    }
}

/// `curl https://HOST:PORT/PATH --cacert CA` (plus `args`).
pub async fn curl_https(host: &str, at: SocketAddr, path: &str, ca: &Path, args: &[&str]) -> Curl {
    let ca = ca.to_str().expect("utf-8 path");
    let mut all = vec!["--cacert", ca];
    all.extend_from_slice(args);
    curl("https", host, at, path, &all).await
}

/// What `openssl s_client` printed.
#[derive(Debug)]
pub struct SClient {
    pub stdout: String,
    pub stderr: String,
}

impl SClient {
    /// `Verify return code: N (...)`, N.
    pub fn verify_code(&self) -> Option<i32> {
        self.stdout.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Verify return code: ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    }

    /// The first `subject=` line (the peer's leaf), without the prefix.
    pub fn subject(&self) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("subject="))
            .map(str::trim)
    }

    /// Every PEM certificate in the output (with `-showcerts`: the chain, leaf first).
    pub fn certificates_pem(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = self.stdout.as_str();
        while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
            let end_marker = "-----END CERTIFICATE-----";
            let Some(end) = rest[start..].find(end_marker) else {
                break;
            };
            let end = start + end + end_marker.len();
            out.push(rest[start..end].to_string());
            rest = &rest[end..];
        }
        out
    }
}

/// `openssl s_client -connect ADDR -servername SNI [-CAfile CA] -showcerts </dev/null`.
pub async fn s_client(at: SocketAddr, sni: &str, ca: Option<&Path>) -> SClient {
    let mut command = Command::new("openssl");
    command
        .arg("s_client")
        .arg("-connect")
        .arg(at.to_string())
        .args(["-servername", sni, "-showcerts"]);
    if let Some(ca) = ca {
        command.arg("-CAfile").arg(ca);
    }
    command
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(CLIENT_DEADLINE, command.output())
        .await
        .expect("openssl s_client finishes")
        .expect("run openssl");
    SClient {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The DER of a PEM certificate.
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}
