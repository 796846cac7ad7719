//! TLS for the REST API and the agent gateway, with rustls on ring (the one
//! crypto provider, installed at start by [`install_provider`]).
//!
//! - [`TlsFiles`]: the host's certificate and key (`--tls-cert`,
//!   `--tls-key`) and, for mutual TLS, the CA agents' client certificates
//!   must chain to (`--client-ca`).
//! - [`serve_https`]: the REST accept loop: each connection's handshake
//!   runs in its own task (a slow client holds up no other), then hyper
//!   serves the axum router on it. A client speaking plain HTTP to this
//!   port gets a `400` saying to use `https://`, not a hang or a reset.
//! - [`certs`]: `hodei certs init` and `hodei certs agent`, a CA and
//!   certificates for operators without a PKI.

pub mod certs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service;

/// Installs rustls' ring provider as the process default; idempotent.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The host's TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain of the host.
    pub cert: PathBuf,
    /// PEM private key of the host.
    pub key: PathBuf,
    /// PEM CA agents' client certificates must chain to (mutual TLS on the
    /// agent gateway), if any.
    pub client_ca: Option<PathBuf>,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

impl TlsFiles {
    /// The REST server's rustls configuration (HTTP/2 and HTTP/1.1).
    pub fn rest_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let certs = CertificateDer::pem_slice_iter(&read(&self.cert)?)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("no PEM certificate in {}", self.cert.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "no certificate in {}",
            self.cert.display()
        );
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?)
            .with_context(|| format!("no PEM private key in {}", self.key.display()))?;
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the TLS certificate and key do not fit together")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The agent gateway's tonic TLS configuration; with a client CA,
    /// agents must present a certificate from it.
    pub fn grpc_config(&self) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
        let identity = tonic::transport::Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            // Parse it here so a bad file is an error at start, not at the
            // first handshake.
            let pem = read(ca)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.with_context(|| format!("bad PEM in {}", ca.display()))?)
                    .with_context(|| format!("bad CA certificate in {}", ca.display()))?;
            }
            WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .with_context(|| format!("unusable client CA {}", ca.display()))?;
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(pem));
        }
        Ok(config)
    }
}

/// What a plain-HTTP client to the TLS port is told.
fn plain_http_answer() -> Vec<u8> {
    let body = r#"{"error":"TLS_REQUIRED","message":"this port speaks HTTPS: use https:// (with --ca-cert for a private CA)"}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` over TLS on `listener` until `stop` turns true.
pub async fn serve_https(
    listener: TcpListener,
    app: Router,
    config: Arc<ServerConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "REST accept failed");
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, mut stop) = (acceptor.clone(), app.clone(), stop.clone());
        tokio::spawn(async move {
            // A TLS record starts with 0x16 (handshake); a letter is plain
            // HTTP ("GET ...", "POST ...").
            let mut first = [0u8; 1];
            if let Ok(1) = tcp.peek(&mut first).await
                && first[0].is_ascii_alphabetic()
            {
                let mut tcp = tcp;
                let _ = tcp.write_all(&plain_http_answer()).await;
                let _ = tcp.shutdown().await;
                return;
            }
            let stream = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, %err, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |request| {
                let mut app = app.clone();
                async move { app.call(request).await }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.wait_for(|s| *s) => connection.as_mut().graceful_shutdown(),
            }
        });
    }
}
