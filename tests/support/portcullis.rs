//! Running Portcullis in tests: standalone mode in-process on `127.0.0.1:0`, and a minimal
//! HTTP/1.1 client for the admin endpoint.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use portcullis::runtime::{self, Running};
use portcullis::settings::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Settings for tests: every listener on `127.0.0.1:0`, a short grace period.
pub fn test_settings() -> Settings {
    Settings {
        http_addr: ([127, 0, 0, 1], 0).into(),
        https_addr: ([127, 0, 0, 1], 0).into(),
        admin_addr: ([127, 0, 0, 1], 0).into(),
        shutdown_grace: Duration::from_secs(2),
        ..Settings::default()
    }
}

/// Starts standalone mode on `manifests` with [`test_settings`].
pub async fn start(manifests: &Path) -> Running {
    start_with(test_settings(), manifests).await
}

/// Starts standalone mode with the given settings.
pub async fn start_with(settings: Settings, manifests: &Path) -> Running {
    runtime::start_standalone(settings, manifests)
        .await
        .expect("standalone mode starts")
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header lines, lower-cased names: `name: value`.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`. Does not handle chunked bodies beyond
/// returning them raw (the admin endpoint sends fixed lengths).
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {raw:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

/// The status of `GET path`, or 0 when the request failed.
pub async fn status_of(addr: SocketAddr, path: &str) -> u16 {
    get(addr, path).await.map(|r| r.status).unwrap_or(0)
}
