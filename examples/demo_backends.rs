//! Demo backends for the quickstart (`examples/quickstart/`), all on 127.0.0.1:
//!
//! | port | name | what |
//! |---|---|---|
//! | 9001 | `echo-a` | plain HTTP echo |
//! | 9002 | `echo-b` | plain HTTP echo |
//! | 9443 | `secure` | HTTPS echo for pass-through, certificate for `secure.localtest.me` |
//! | 9444 | `reencrypt` | HTTPS echo for re-encrypt, certificate for `reencrypt.localtest.me` |
//!
//! Each answers with its name, the request line, the SNI it saw (TLS ones) and every request
//! header, so you can see what the proxy added (`X-Forwarded-*`, `Forwarded`). The TLS
//! certificates are self-signed, generated at start.
//!
//! ```sh
//! cargo run --example demo_backends
//! ```
//!
//! `examples/quickstart/run.sh` runs them in the background beside Portcullis, and kills them
//! when it exits.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let mut tasks = tokio::task::JoinSet::new();
    for (name, port) in [("echo-a", 9001), ("echo-b", 9002)] {
        let listener = bind(port).await?;
        println!("{name:>9}  http://127.0.0.1:{port}");
        tasks.spawn(serve(listener, name, None));
    }
    for (name, port, host) in [
        ("secure", 9443, "secure.localtest.me"),
        ("reencrypt", 9444, "reencrypt.localtest.me"),
    ] {
        let listener = bind(port).await?;
        let acceptor = self_signed_acceptor(host)?;
        println!("{name:>9}  https://127.0.0.1:{port}  (self-signed for {host})");
        tasks.spawn(serve(listener, name, Some(acceptor)));
    }
    println!("demo backends running; Ctrl-C to stop");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = tasks.join_next() => eprintln!("a backend stopped"),
    }
    Ok(())
}

async fn bind(port: u16) -> Result<TcpListener, Box<dyn std::error::Error>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("binding {addr}: {e}").into())
}

/// A TLS acceptor with a fresh self-signed certificate for `host` (HTTP/1.1 only).
fn self_signed_acceptor(host: &str) -> Result<TlsAcceptor, Box<dyn std::error::Error>> {
    let key_pair = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    let cert = params.self_signed(&key_pair)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn serve(listener: TcpListener, name: &'static str, tls: Option<TlsAcceptor>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => echo(stream, name, peer, None).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        let sni = stream.get_ref().1.server_name().map(str::to_string);
                        echo(stream, name, peer, Some(sni)).await;
                    }
                    Err(e) => eprintln!("{name}: TLS handshake from {peer} failed: {e}"),
                },
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection, echoing every request.
async fn echo<IO>(io: IO, name: &'static str, peer: SocketAddr, sni: Option<Option<String>>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let sni = sni.clone();
        async move {
            let mut body = String::new();
            let _ = writeln!(body, "backend: {name}");
            let _ = writeln!(body, "peer: {peer}");
            if let Some(sni) = &sni {
                let _ = writeln!(body, "tls-sni: {}", sni.as_deref().unwrap_or("(none)"));
            }
            let _ = writeln!(
                body,
                "request: {} {} {:?}",
                req.method(),
                req.uri(),
                req.version()
            );
            for (header, value) in req.headers() {
                let _ = writeln!(
                    body,
                    "{header}: {}",
                    String::from_utf8_lossy(value.as_bytes())
                );
            }
            let response = Response::builder()
                .header("content-type", "text/plain; charset=utf-8")
                .header("x-demo-backend", name)
                .body(Full::new(Bytes::from(body)))
                .expect("static response parts");
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}
