//! TLS on a replica's listener and on the clients that call it (`docs/megastore-serve.md`):
//! the PEM files a config file or command line names ([`TlsFiles`]), read once and
//! checked, with errors that name the file, into what a listener presents
//! ([`ServerTls`]) and what a client trusts ([`ClientTls`]). rustls does the TLS, with
//! ring's cryptography.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::remote::client::with_causes;
use crate::Error;

/// The TLS files named for one process: `cert` and `key` make its listener TLS, `ca` its
/// clients; `domain` is the name a server's certificate must carry (default: the host
/// of the address dialled).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub domain: Option<String>,
}

impl TlsFiles {
    /// The listener's TLS (`None`: plaintext). A certificate needs its key.
    pub fn server(&self) -> Result<Option<ServerTls>, Error> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => ServerTls::load(cert, key).map(Some),
            (None, None) => Ok(None),
            _ => Err(Error::Invalid(
                "a TLS certificate and its private key go together".into(),
            )),
        }
    }

    /// The clients' TLS (`None`: plaintext).
    pub fn client(&self) -> Result<Option<ClientTls>, Error> {
        let Some(ca) = &self.ca else {
            if self.domain.is_some() {
                return Err(Error::Invalid(
                    "a TLS domain name needs the CA certificate to check it with".into(),
                ));
            }
            return Ok(None);
        };
        let tls = ClientTls::load(ca)?;
        Ok(Some(match &self.domain {
            Some(domain) => tls.with_domain(domain),
            None => tls,
        }))
    }
}

/// How long a listener waits for a client's TLS handshake: a connection that never
/// completes one is dropped rather than kept.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a listener presents: its certificate chain and private key.
#[derive(Clone)]
pub struct ServerTls {
    config: ServerTlsConfig,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls { .. }") // never the key
    }
}

impl ServerTls {
    /// Reads the PEM certificate chain at `cert` (the server's own first) and the PEM
    /// private key at `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, Error> {
        let chain = read(cert)?;
        certificates(cert, &chain)?;
        let key_pem = read(key)?;
        PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| bad_pem(key, "a PRIVATE KEY section", &e))?;
        let tls = ServerTls {
            config: ServerTlsConfig::new()
                .identity(Identity::from_pem(chain, key_pem))
                .timeout(HANDSHAKE_TIMEOUT),
        };
        // rustls checks here that the key is the certificate's and that it can sign.
        tls.apply(tonic::transport::Server::builder())
            .map_err(|e| {
                Error::Invalid(format!(
                    "{} and {} do not make a TLS identity: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
        Ok(tls)
    }

    /// `server` with TLS on every connection it accepts.
    pub(crate) fn apply(
        &self,
        server: tonic::transport::Server,
    ) -> Result<tonic::transport::Server, String> {
        server
            .tls_config(self.config.clone())
            .map_err(|e| with_causes(&e))
    }
}

/// What a client trusts: the CA certificates a server's must chain to, and the name it
/// must carry.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: ClientTlsConfig,
}

impl ClientTls {
    /// Reads the PEM CA certificates at `ca`. The name checked is the host of the
    /// address dialled, unless [`ClientTls::with_domain`] sets another.
    pub fn load(ca: &Path) -> Result<Self, Error> {
        let pem = read(ca)?;
        let mut roots = RootCertStore::empty();
        for der in certificates(ca, &pem)? {
            roots.add(der).map_err(|e| {
                Error::Invalid(format!(
                    "{}: not a usable CA certificate: {e}",
                    ca.display()
                ))
            })?;
        }
        Ok(ClientTls {
            config: ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
        })
    }

    /// Checks that a server's certificate names `domain`, whatever the address dialled.
    pub fn with_domain(self, domain: &str) -> Self {
        ClientTls {
            config: self.config.domain_name(domain),
        }
    }

    /// `endpoint` (an `https://` one) over TLS.
    pub(crate) fn apply(&self, endpoint: Endpoint) -> Result<Endpoint, Error> {
        endpoint
            .tls_config(self.config.clone())
            .map_err(|e| Error::Invalid(format!("cannot set up TLS: {}", with_causes(&e))))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))
}

/// The certificates in `pem` (read from `path`): at least one, all well-formed PEM.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, "CERTIFICATE sections", &e))?;
    if certs.is_empty() {
        return Err(bad_pem(
            path,
            "CERTIFICATE sections",
            &pem::Error::NoItemsFound,
        ));
    }
    Ok(certs)
}

fn bad_pem(path: &Path, wanted: &str, e: &pem::Error) -> Error {
    let why = match e {
        pem::Error::NoItemsFound => "found none".to_string(),
        pem::Error::MissingSectionEnd { end_marker } => {
            format!(
                "no -----END {}----- line",
                String::from_utf8_lossy(end_marker)
            )
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("bad line {:?}", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    };
    Error::Invalid(format!(
        "{}: expected PEM with {wanted}: {why}",
        path.display()
    ))
}
