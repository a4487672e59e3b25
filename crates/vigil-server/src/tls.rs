//! TLS for every listener (the API, the Cinder-compatible API, the metrics): a certificate
//! chain and a key in PEM files, read at start and again on SIGHUP. A reload swaps the key
//! that new handshakes get; open connections keep theirs and are never dropped. A reload that
//! fails (a missing file, a key that does not match) keeps the certificate in use and says
//! why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read the private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the certificate {cert} and the key {key} cannot be used together: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The certificate in use, and where to read it again.
#[derive(Debug)]
struct Reloadable {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// The TLS of this server: one acceptor shared by its listeners.
#[derive(Clone)]
pub struct Tls {
    certs: Arc<Reloadable>,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.to_path_buf(),
            reason: "no CERTIFICATE in it".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let pair = |reason: String| TlsError::Pair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    };
    let certified =
        CertifiedKey::from_der(chain, private, &provider()).map_err(|e| pair(e.to_string()))?;
    certified.keys_match().map_err(|e| pair(e.to_string()))?;
    Ok(certified)
}

impl Tls {
    /// Reads the certificate chain and key (PEM).
    pub fn new(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let certified = load(cert, key)?;
        let certs = Arc::new(Reloadable {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(certified)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        // HTTP/2 first: a reporter's many beats share one connection's syscalls.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            certs,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again; new handshakes get the new certificate. On failure the one in
    /// use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certified = load(&self.certs.cert, &self.certs.key)?;
        *self.certs.current.write() = Arc::new(certified);
        Ok(())
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }
}

/// Reloads the certificate (if there is one) on every SIGHUP until `stop`: logged either way.
/// The handler is
/// installed before this returns, so a SIGHUP that comes once the server listens never takes
/// the default action (ending the process), with TLS or without.
pub fn reload_on_hangup(
    tls: Option<Tls>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let hangups = signal(SignalKind::hangup());
    async move {
        let mut hangups = match hangups {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGHUP: the certificate will not be reloaded");
                return;
            }
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                got = hangups.recv() => if got.is_none() { return },
                _ = &mut stop => return,
            }
            let Some(tls) = &tls else {
                tracing::info!("SIGHUP: nothing to reload (no tls_cert)");
                continue;
            };
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert = %tls.certs.cert.display(),
                    "reloaded the TLS certificate (SIGHUP)"
                ),
                Err(err) => {
                    tracing::error!(%err, "kept the TLS certificate in use: the reload failed")
                }
            }
        }
    }
}
