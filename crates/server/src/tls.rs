//! HTTPS served directly: rustls (ring provider) in front of the same
//! router, with the certificate reloadable while the server runs.
//!
//! The certificate and key are read from PEM files at start and again on
//! SIGHUP ([`Certificates::reload`]), which builds a whole new rustls
//! configuration; each handshake takes the current one, so new
//! connections get a renewed certificate at once and open ones keep
//! theirs. The new configuration comes with an empty session cache: a
//! client cannot resume a session the old certificate authenticated. A
//! file that does not load on reload is logged and the old configuration
//! kept: a botched renewal never takes HTTPS down.
//!
//! Handshakes run on tasks of their own (with a time limit), never in the
//! accept loop, so a slow or silent client cannot hold up others; finished
//! connections reach axum through [`TlsListener`], so graceful shutdown
//! works as it does over plain TCP.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate and key new connections are served with.
pub struct Certificates {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads the pair; an error names the file at fault.
    pub fn load(files: &TlsConfig) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Certificates {
            files: files.clone(),
            current: RwLock::new(server_config(files)?),
        }))
    }

    /// Reads the files again and serves the new pair from the next
    /// handshake on; on error the current one stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// The configuration a handshake starting now uses.
    fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A rustls configuration serving the files' pair over HTTP/1.1.
fn server_config(files: &TlsConfig) -> anyhow::Result<Arc<ServerConfig>> {
    let pair = Arc::new(read_pair(files)?);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(pair)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its key, and checks they belong together.
fn read_pair(files: &TlsConfig) -> anyhow::Result<CertifiedKey> {
    let chain = read_chain(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        anyhow::anyhow!(
            "reading the TLS key {}: {e} (expected a PEM private key)",
            files.key.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, &provider()).with_context(|| {
        format!(
            "the TLS key {} does not fit the certificate {}",
            files.key.display(),
            files.cert.display()
        )
    })
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("reading the TLS certificate {}: {e}", path.display()))?;
    if chain.is_empty() {
        bail!(
            "the TLS certificate file {} holds no PEM certificate",
            path.display()
        );
    }
    Ok(chain)
}

/// Connections that finished their handshake, for `axum::serve`.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and shakes hands with the current configuration
    /// of `certificates`, each connection on its own task. The accept loop
    /// ends when this listener is dropped.
    pub fn new(tcp: TcpListener, certificates: Arc<Certificates>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (done, accepted) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, certificates, done));
        Ok(TlsListener { accepted, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    certificates: Arc<Certificates>,
    done: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, addr) = tokio::select! {
            _ = done.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: as axum does
                    // for plain TCP, wait a little rather than spin.
                    tracing::error!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let acceptor = TlsAcceptor::from(certificates.current());
        let done = done.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = done.send((tls, addr)).await;
                }
                Ok(Err(err)) => tracing::debug!(%addr, error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop lives as long as this listener: not reached.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
