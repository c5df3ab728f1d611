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

/// The TLS files named for one process. `cert` and `key` are its own certificate: its
/// listener presents it (TLS), and so do its clients to a server that asks for one.
/// `ca` is what its clients trust a server's certificate to chain to; `domain` the name
/// a server's certificate must carry (default: the host of the address dialled).
/// `client_ca`, on a listener, makes it ask every client for a certificate chaining to
/// it, and refuse a client without one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub domain: Option<String>,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The listener's TLS (`None`: plaintext). A certificate needs its key, and
    /// client certificates need TLS.
    pub fn server(&self) -> Result<Option<ServerTls>, Error> {
        let Some((cert, key)) = self.identity()? else {
            if self.client_ca.is_some() {
                return Err(Error::Invalid(
                    "client certificates are checked over TLS only: the CA of client \
                     certificates needs the listener's own certificate and key"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let tls = ServerTls::load(cert, key)?;
        match &self.client_ca {
            Some(client_ca) => tls.with_client_ca(client_ca).map(Some),
            None => Ok(Some(tls)),
        }
    }

    /// The clients' TLS (`None`: plaintext): with this process's certificate, when it
    /// has one, for servers that ask for it.
    pub fn client(&self) -> Result<Option<ClientTls>, Error> {
        let identity = self.identity()?;
        let Some(ca) = &self.ca else {
            if self.domain.is_some() {
                return Err(Error::Invalid(
                    "a TLS domain name needs the CA certificate to check it with".into(),
                ));
            }
            if identity.is_some() {
                return Err(Error::Invalid(
                    "a client certificate is sent over TLS only: it needs the CA \
                     certificate that the server's chains to"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let mut tls = ClientTls::load(ca)?;
        if let Some(domain) = &self.domain {
            tls = tls.with_domain(domain);
        }
        if let Some((cert, key)) = identity {
            tls = tls.with_certificate(cert, key)?;
        }
        Ok(Some(tls))
    }

    /// The certificate and its key, if set (both or neither).
    fn identity(&self) -> Result<Option<(&Path, &Path)>, Error> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            _ => Err(Error::Invalid(
                "a TLS certificate and its private key go together".into(),
            )),
        }
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
        let tls = ServerTls {
            config: ServerTlsConfig::new()
                .identity(identity(cert, key)?)
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

    /// Asks every client for a certificate chaining to one of the PEM CA certificates
    /// at `client_ca`, and refuses the connection of a client without one.
    pub fn with_client_ca(self, client_ca: &Path) -> Result<Self, Error> {
        let pem = ca_certificates(client_ca)?;
        Ok(ServerTls {
            config: self.config.client_ca_root(Certificate::from_pem(pem)),
        })
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
/// must carry; and the certificate it presents, if any.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: ClientTlsConfig,
    presents_certificate: bool,
}

impl ClientTls {
    /// Reads the PEM CA certificates at `ca`. The name checked is the host of the
    /// address dialled, unless [`ClientTls::with_domain`] sets another.
    pub fn load(ca: &Path) -> Result<Self, Error> {
        let pem = ca_certificates(ca)?;
        Ok(ClientTls {
            config: ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            presents_certificate: false,
        })
    }

    /// Presents the PEM certificate chain at `cert` (with the PEM private key at `key`)
    /// to a server that asks for a client certificate.
    pub fn with_certificate(self, cert: &Path, key: &Path) -> Result<Self, Error> {
        let identity = identity(cert, key)?;
        // rustls checks the pair only when connecting; a listener's check finds a key
        // that is not the certificate's now, with the files named.
        ServerTls::load(cert, key)?;
        Ok(ClientTls {
            config: self.config.identity(identity),
            presents_certificate: true,
        })
    }

    /// Whether it presents a certificate of its own.
    pub fn presents_certificate(&self) -> bool {
        self.presents_certificate
    }

    /// Checks that a server's certificate names `domain`, whatever the address dialled.
    pub fn with_domain(self, domain: &str) -> Self {
        ClientTls {
            config: self.config.domain_name(domain),
            ..self
        }
    }

    /// `endpoint` (an `https://` one) over TLS.
    pub(crate) fn apply(&self, endpoint: Endpoint) -> Result<Endpoint, Error> {
        endpoint
            .tls_config(self.config.clone())
            .map_err(|e| Error::Invalid(format!("cannot set up TLS: {}", with_causes(&e))))
    }
}

/// The certificate chain at `cert` and the private key at `key`, both PEM.
fn identity(cert: &Path, key: &Path) -> Result<Identity, Error> {
    let chain = read(cert)?;
    certificates(cert, &chain)?;
    let key_pem = read(key)?;
    PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad_pem(key, "a PRIVATE KEY section", &e))?;
    Ok(Identity::from_pem(chain, key_pem))
}

/// The PEM file at `ca`, checked to hold CA certificates rustls can use.
fn ca_certificates(ca: &Path) -> Result<Vec<u8>, Error> {
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
    Ok(pem)
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
