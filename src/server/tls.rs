//! `server.tls`: the certificate and key, re-read when their files change (cert-manager rotates
//! them in place; a mounted Secret changes through a symlink swap). Each handshake takes the pair
//! in use; a watcher task looks at the files' times and sizes every few seconds and swaps in the new
//! pair once it reads and goes together. A half-written rotation (a new certificate with the old key)
//! keeps the old pair and is tried again at the next look.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the files are looked at.
pub const LOOK_EVERY: Duration = Duration::from_secs(5);

/// The files' modification times and sizes, as last read.
type Stamp = [(Option<SystemTime>, u64); 2];

#[derive(Debug)]
pub struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    read: Mutex<Stamp>,
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").clone())
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    };
    [one(cert), one(key)]
}

fn read(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    crate::adapters::install_crypto_provider();
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("server.tls.cert_file: reading certificates from {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "server.tls.cert_file: no certificate in {}", cert.display());
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("server.tls.key_file: reading a private key from {}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key_der, &provider)
        .context("server.tls: the certificate and key do not go together")
}

impl Certificate {
    /// Reads and checks the pair; an error names the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Certificate>> {
        let before = stamp(cert, key);
        let pair = read(cert, key)?;
        Ok(Arc::new(Certificate {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
            read: Mutex::new(before),
        }))
    }

    /// The acceptor serving whatever pair is current (HTTP/2 and HTTP/1.1 offered).
    pub fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        crate::adapters::install_crypto_provider();
        let mut c = rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(self.clone());
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(c))
    }

    /// Re-reads the pair when a file changed since it was last read: `Ok(true)` when a new pair is
    /// in use, `Ok(false)` when nothing changed, an error (the old pair stays) when the new files do
    /// not read or do not go together.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let now = stamp(&self.cert, &self.key);
        if *self.read.lock().expect("stamp lock") == now {
            return Ok(false);
        }
        let pair = read(&self.cert, &self.key)?;
        *self.current.write().expect("certificate lock") = Arc::new(pair);
        *self.read.lock().expect("stamp lock") = now;
        Ok(true)
    }

    /// Looks at the files every `every` until the process ends, logging each swap and each
    /// failure (once per change of the files).
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed: Option<Stamp> = None;
        loop {
            tick.tick().await;
            let me = self.clone();
            let r =
                tokio::task::spawn_blocking(move || (me.reload_if_changed(), stamp(&me.cert, &me.key))).await;
            match r {
                Ok((Ok(true), _)) => {
                    failed = None;
                    tracing::info!(cert_file = %self.cert.display(), "server.tls: the certificate changed on disk; new connections use the new one");
                }
                Ok((Ok(false), _)) => {}
                Ok((Err(e), s)) => {
                    if failed != Some(s) {
                        tracing::warn!(error = %format!("{e:#}"), "server.tls: the changed files cannot be used yet; the previous certificate stays in use");
                        failed = Some(s);
                    }
                }
                Err(_) => {}
            }
        }
    }
}
