//! The PEM files of TLS: a missing file, a file that is not PEM or holds the wrong
//! sections, a certificate that does not parse, or a key that is not the
//! certificate's are refused with the file and the reason, before anything listens or
//! connects.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};

use megastore::tls::{ClientTls, ServerTls, TlsFiles};
use megastore::Error;

use common::certs;

/// Not DER, but well-formed PEM.
const JUNK_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn refused<T: std::fmt::Debug>(result: Result<T, Error>, says: &[&str]) {
    match result {
        Err(Error::Invalid(m)) => {
            for s in says {
                assert!(m.contains(s), "{m:?} lacks {s:?}");
            }
        }
        other => panic!("expected a refusal saying {says:?}, got {other:?}"),
    }
}

#[test]
fn missing_and_malformed_pem_files_are_refused_with_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = certs::self_signed(dir.path(), "good");
    let (cert, key) = (good.cert.unwrap(), good.key.unwrap());
    let missing = dir.path().join("missing.pem");
    let not_pem = write(dir.path(), "not.pem", "hello\n");
    let pem = std::fs::read_to_string(&cert).unwrap();
    let cut = write(dir.path(), "cut.pem", &pem[..pem.len() / 2]);
    let junk = write(dir.path(), "junk.pem", JUNK_CERTIFICATE);

    // (certificate, key, the file named, the reason)
    let server_cases = [
        (&missing, &key, "missing.pem", "cannot read"),
        (&cert, &missing, "missing.pem", "cannot read"),
        (
            &not_pem,
            &key,
            "not.pem",
            "CERTIFICATE sections: found none",
        ),
        (&cut, &key, "cut.pem", "no -----END CERTIFICATE----- line"),
        (
            &cert,
            &cert,
            "good.crt",
            "a PRIVATE KEY section: found none",
        ),
        (&junk, &key, "junk.pem", "do not make a TLS identity"),
    ];
    for (c, k, file, says) in server_cases {
        refused(ServerTls::load(c, k), &[file, says]);
    }
    let client_cases = [
        (&missing, "missing.pem", "cannot read"),
        (&not_pem, "not.pem", "found none"),
        (&cut, "cut.pem", "no -----END CERTIFICATE----- line"),
        (&junk, "junk.pem", "not a usable CA certificate"),
    ];
    for (ca, file, says) in client_cases {
        refused(ClientTls::load(ca), &[file, says]);
    }
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let one = certs::self_signed(dir.path(), "one");
    let two = certs::self_signed(dir.path(), "two");
    refused(
        ServerTls::load(one.cert.as_ref().unwrap(), two.key.as_ref().unwrap()),
        &["one.crt and", "two.key do not make a TLS identity"],
    );
}

#[test]
fn a_certificate_needs_its_key_and_a_domain_name_needs_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let files = certs::self_signed(dir.path(), "server");
    let cert_only = TlsFiles {
        key: None,
        ..files.clone()
    };
    refused(
        cert_only.server(),
        &["certificate and its private key go together"],
    );
    let domain_only = TlsFiles {
        domain: Some("localhost".into()),
        ..TlsFiles::default()
    };
    refused(domain_only.client(), &["needs the CA certificate"]);
    assert!(TlsFiles::default().server().unwrap().is_none());
    assert!(TlsFiles::default().client().unwrap().is_none());
    assert!(files.server().unwrap().is_some());
    assert!(files.client().unwrap().is_some());
}

#[test]
fn client_certificates_need_tls_and_their_files_are_checked_like_the_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let server = certs::self_signed(dir.path(), "server");
    let client = certs::self_signed(dir.path(), "client");
    let missing = dir.path().join("missing.pem");
    let not_pem = write(dir.path(), "not.pem", "hello\n");

    // A listener asks for client certificates over TLS only, from a readable CA file.
    let no_listener_certificate = TlsFiles {
        client_ca: client.cert.clone(),
        ..TlsFiles::default()
    };
    refused(
        no_listener_certificate.server(),
        &["client certificates are checked over TLS only"],
    );
    for (client_ca, file, says) in [
        (&missing, "missing.pem", "cannot read"),
        (&not_pem, "not.pem", "found none"),
    ] {
        let files = TlsFiles {
            client_ca: Some(client_ca.clone()),
            ..server.clone()
        };
        refused(files.server(), &[file, says]);
    }

    // A client presents a certificate over TLS only, with its own key.
    let without_ca = TlsFiles {
        ca: None,
        ..client.clone()
    };
    refused(
        without_ca.client(),
        &["a client certificate is sent over TLS only"],
    );
    let ca = ClientTls::load(server.ca.as_ref().unwrap()).unwrap();
    refused(
        ca.clone()
            .with_certificate(client.cert.as_ref().unwrap(), server.key.as_ref().unwrap()),
        &["client.crt and", "server.key do not make a TLS identity"],
    );
    refused(
        ca.clone()
            .with_certificate(&missing, client.key.as_ref().unwrap()),
        &["missing.pem", "cannot read"],
    );
    assert!(!ca.presents_certificate());
    let presenting = ca
        .with_certificate(client.cert.as_ref().unwrap(), client.key.as_ref().unwrap())
        .unwrap();
    assert!(presenting.presents_certificate());
}
