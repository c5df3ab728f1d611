//! Self-signed TLS certificates made at test time (rcgen, ring), as PEM files.

use std::path::Path;

use megastore::tls::TlsFiles;

/// A new self-signed certificate for `localhost` and `127.0.0.1` with its key, written
/// to `dir/NAME.crt` and `dir/NAME.key`. Self-signed, it is its own CA: the files
/// returned name it as the listener's certificate and as the clients' CA.
pub fn self_signed(dir: &Path, name: &str) -> TlsFiles {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("a certificate is made");
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).expect("certificate written");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("key written");
    TlsFiles {
        cert: Some(cert.clone()),
        key: Some(key),
        ca: Some(cert),
        domain: None,
        client_ca: None,
    }
}
