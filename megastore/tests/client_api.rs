//! The client API over gRPC on loopback, against one replica on an in-memory file
//! system: detached transactions commit or conflict as the group-commit rule says,
//! reads in each mode and index queries answer, and a server that requires a token
//! refuses requests without it. Over TLS, a client needs the server's CA (and the token);
//! one without TLS, or trusting another CA, or checking another name, fails and says why.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::sync::Arc;

use megastore::api::client::{Client, ClientOptions};
use megastore::node::{spawn, Services};
use megastore::tls::{ClientTls, ServerTls, TlsFiles};
use megastore::{Error, ReadMode, Value, ValueRange};

use common::{certs, photo, photo_app, user, user_group};

/// A served PhotoApp database and its runtime (the server lives as long as it does).
fn serve(token: Option<&str>) -> (String, tokio::runtime::Runtime) {
    serve_tls(token, None)
}

/// The same, its listener over TLS when `tls` is given.
fn serve_tls(token: Option<&str>, tls: Option<ServerTls>) -> (String, tokio::runtime::Runtime) {
    let fs = bigtable::fs::FaultyFs::new();
    let db = Arc::new(photo_app(&fs));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let services = Services::replica(db, token.map(str::to_string)).with_tls(tls);
    spawn(runtime.handle(), services, listener, std::future::pending()).unwrap();
    (address, runtime)
}

fn connect(address: &str, token: Option<&str>) -> Client {
    connect_tls(address, token, None)
}

fn connect_tls(address: &str, token: Option<&str>, tls: Option<ClientTls>) -> Client {
    let options = ClientOptions {
        token: token.map(str::to_string),
        tls,
        ..ClientOptions::default()
    };
    Client::connect(address, &options).unwrap()
}

fn photo_key(user: i64, id: i32) -> [Value; 2] {
    [Value::Int64(user), Value::Int32(id)]
}

#[test]
fn a_transaction_whose_read_was_overwritten_conflicts_and_disjoint_ones_commit() {
    let (address, _server) = serve(None);
    let client = connect(&address, None);
    let g = user_group(1);
    let mut setup = client.begin(&g).unwrap();
    setup.put(&user(1, "ann"));
    setup.put(&photo(1, 1, 10, &["a"]));
    setup.commit().unwrap();

    // Both read photo 1; the first to commit wins, the second conflicts.
    let mut first = client.begin(&g).unwrap();
    let mut second = client.begin(&g).unwrap();
    assert!(first.get("Photo", &photo_key(1, 1)).unwrap().is_some());
    assert!(second.get("Photo", &photo_key(1, 1)).unwrap().is_some());
    first.put(&photo(1, 1, 11, &["b"]));
    second.put(&photo(1, 1, 12, &["c"]));
    let won = first.commit().unwrap();
    assert!(won.wrote);
    assert!(matches!(second.commit(), Err(Error::Conflict(_))));

    // One that began before that commit but read something else still commits.
    let mut stale_but_disjoint = client.begin(&g).unwrap();
    let mut writer = client.begin(&g).unwrap();
    writer.put(&photo(1, 1, 13, &["d"]));
    writer.commit().unwrap();
    assert!(stale_but_disjoint
        .get("Photo", &photo_key(1, 2))
        .unwrap()
        .is_none());
    stale_but_disjoint.put(&photo(1, 2, 20, &["e"]));
    let later = stale_but_disjoint.commit().unwrap();
    assert!(later.position > won.position);

    // A transaction's reads see its begin position, not later commits.
    let mut old = client.begin(&g).unwrap();
    client
        .transact(&g, 4, |tx| {
            tx.put(&photo(1, 3, 30, &[]));
            Ok(())
        })
        .unwrap();
    assert!(old.get("Photo", &photo_key(1, 3)).unwrap().is_none());
    // A scan reads the whole group, so the commit since its begin conflicts.
    assert_eq!(old.scan("Photo", &[Value::Int64(1)]).unwrap().len(), 2);
    old.put(&photo(1, 4, 40, &[]));
    assert!(matches!(old.commit(), Err(Error::Conflict(_))));

    let current = client
        .get(&g, "Photo", &photo_key(1, 1), ReadMode::Current)
        .unwrap()
        .unwrap();
    assert_eq!(current, photo(1, 1, 13, &["d"]));
}

#[test]
fn reads_queries_and_schema_answer_over_the_wire() {
    let (address, _server) = serve(None);
    let client = connect(&address, None);
    let g = user_group(7);
    client
        .transact(&g, 4, |tx| {
            tx.put(&user(7, "bo"));
            for (id, time) in [(1, 300), (2, 100), (3, 200)] {
                tx.put(&photo(7, id, time, &["sea"]));
            }
            Ok(())
        })
        .unwrap();
    for mode in [
        ReadMode::Current,
        ReadMode::Snapshot,
        ReadMode::Inconsistent,
    ] {
        let found = client.get(&g, "User", &[Value::Int64(7)], mode).unwrap();
        assert_eq!(found, Some(user(7, "bo")), "{mode:?}");
    }
    let by_time = client
        .query_local(
            &g,
            "PhotosByTime",
            &ValueRange::prefix(vec![Value::Int64(7)]),
            ReadMode::Current,
        )
        .unwrap();
    let ids: Vec<&Value> = by_time.iter().map(|h| &h.key[1]).collect();
    assert_eq!(ids, [&Value::Int32(2), &Value::Int32(3), &Value::Int32(1)]);
    assert_eq!(client.status().unwrap().commits, 1);
    let schema = client.schema().unwrap();
    assert_eq!(schema.name, "PhotoApp");
    assert!(schema.text.contains("PhotosByTag"));
    let refused = client.update_schema("CREATE SCHEMA PhotoApp;");
    assert!(
        matches!(&refused, Err(Error::Invalid(m)) if m.contains("was removed")),
        "{refused:?}"
    );
    let added =
        schema.text.clone() + "\nCREATE LOCAL INDEX PhotosByUrl ON Photo(user_id, full_url);";
    assert_eq!(client.update_schema(&added).unwrap().version, 2);
    assert_eq!(client.schema().unwrap().text, added);
    let by_url = client
        .query_local(
            &g,
            "PhotosByUrl",
            &ValueRange::prefix(vec![Value::Int64(7)]),
            ReadMode::Current,
        )
        .unwrap();
    assert_eq!(
        by_url.len(),
        3,
        "the new index holds the photos written before"
    );
}

#[test]
fn a_server_that_requires_a_token_refuses_requests_without_it() {
    let (address, _server) = serve(Some("s3cret"));
    for token in [None, Some("wrong")] {
        match connect(&address, token).status() {
            Err(Error::Invalid(m)) => assert!(m.contains("Unauthenticated"), "{m}"),
            other => panic!("expected UNAUTHENTICATED, got {other:?}"),
        }
    }
    assert_eq!(
        connect(&address, Some("s3cret")).status().unwrap().replica,
        0
    );
}

#[test]
fn a_blind_write_commits_at_the_current_position_and_conflicts_with_earlier_readers() {
    let (address, _server) = serve(None);
    let client = connect(&address, None);
    let g = user_group(2);
    let first = client.write(&g, &[user(2, "bo")]).unwrap();
    let second = client.write(&g, &[photo(2, 1, 10, &["x"])]).unwrap();
    assert!(first.wrote && second.wrote);
    assert!(second.position > first.position);
    let read = client
        .get(&g, "Photo", &photo_key(2, 1), ReadMode::Current)
        .unwrap();
    assert_eq!(read, Some(photo(2, 1, 10, &["x"])));

    // A transaction that began before a blind write and read what it wrote conflicts.
    let mut reader = client.begin(&g).unwrap();
    reader.get("Photo", &photo_key(2, 1)).unwrap();
    client.write(&g, &[photo(2, 1, 11, &[])]).unwrap();
    reader.put(&photo(2, 1, 12, &[]));
    assert!(matches!(reader.commit(), Err(Error::Conflict(_))));
}

/// A listener over TLS (a self-signed certificate for localhost and 127.0.0.1, made in
/// `dir`) that requires the token "s3cret"; the files name the certificate as the CA.
fn serve_tls_with_token(dir: &Path) -> (String, TlsFiles, tokio::runtime::Runtime) {
    let files = certs::self_signed(dir, "server");
    let (address, runtime) = serve_tls(Some("s3cret"), files.server().unwrap());
    (address, files, runtime)
}

/// Asserts that `result` failed to reach the server, for a reason that says `says`.
fn unreachable_because<T: std::fmt::Debug>(result: Result<T, Error>, says: &str) {
    match result {
        Err(Error::Unavailable(m)) => assert!(m.contains(says), "{m:?} lacks {says:?}"),
        other => panic!("expected a failure to connect ({says}), got {other:?}"),
    }
}

#[test]
fn a_tls_listener_serves_a_client_that_has_its_ca_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (address, files, _server) = serve_tls_with_token(dir.path());
    let client = connect_tls(&address, Some("s3cret"), files.client().unwrap());
    let g = user_group(3);
    client
        .transact(&g, 4, |tx| {
            tx.put(&user(3, "cy"));
            Ok(())
        })
        .unwrap();
    let found = client.get(&g, "User", &[Value::Int64(3)], ReadMode::Current);
    assert_eq!(found.unwrap(), Some(user(3, "cy")));
}

#[test]
fn a_plaintext_client_of_a_tls_listener_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (address, files, _server) = serve_tls_with_token(dir.path());
    unreachable_because(
        connect(&address, Some("s3cret")).status(),
        "a server that serves TLS closes plaintext connections",
    );
    // The listener goes on serving TLS.
    let client = connect_tls(&address, Some("s3cret"), files.client().unwrap());
    assert_eq!(client.status().unwrap().replica, 0);
}

#[test]
fn a_tls_client_without_the_token_is_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let (address, files, _server) = serve_tls_with_token(dir.path());
    match connect_tls(&address, None, files.client().unwrap()).status() {
        Err(Error::Invalid(m)) => assert!(m.contains("Unauthenticated"), "{m}"),
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}

#[test]
fn a_client_that_trusts_another_ca_refuses_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (address, _files, _server) = serve_tls_with_token(dir.path());
    let other = certs::self_signed(dir.path(), "other");
    let client = connect_tls(&address, Some("s3cret"), other.client().unwrap());
    unreachable_because(client.status(), "invalid peer certificate");
}

#[test]
fn the_name_checked_is_the_address_host_unless_another_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let (address, files, _server) = serve_tls_with_token(dir.path());
    let port = address.rsplit(':').next().unwrap();
    let ca = || files.client().unwrap().unwrap();
    // The certificate names localhost and 127.0.0.1: either is checked as dialled.
    let by_name = connect_tls(&format!("localhost:{port}"), Some("s3cret"), Some(ca()));
    assert_eq!(by_name.status().unwrap().replica, 0);
    let renamed = Some(ca().with_domain("localhost"));
    assert_eq!(
        connect_tls(&address, Some("s3cret"), renamed)
            .status()
            .unwrap()
            .replica,
        0
    );
    let elsewhere = Some(ca().with_domain("elsewhere.example"));
    unreachable_because(
        connect_tls(&address, Some("s3cret"), elsewhere).status(),
        "not valid for name \"elsewhere.example\"",
    );
}

/// The client TLS of a process that trusts `server`'s CA and presents `own`'s
/// certificate (none: `None`).
fn presenting(server: &TlsFiles, own: Option<&TlsFiles>) -> Option<ClientTls> {
    TlsFiles {
        ca: server.ca.clone(),
        cert: own.and_then(|o| o.cert.clone()),
        key: own.and_then(|o| o.key.clone()),
        ..TlsFiles::default()
    }
    .client()
    .unwrap()
}

#[test]
fn a_listener_that_requires_client_certificates_serves_only_clients_with_one_it_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let server = certs::self_signed(dir.path(), "server");
    // Self-signed, the client's certificate is its own CA: the one the listener trusts.
    let alice = certs::self_signed(dir.path(), "alice");
    let mallory = certs::self_signed(dir.path(), "mallory");
    let listener = TlsFiles {
        client_ca: alice.cert.clone(),
        ..server.clone()
    };
    let (address, _server) = serve_tls(Some("s3cret"), listener.server().unwrap());

    let trusted = connect_tls(&address, Some("s3cret"), presenting(&server, Some(&alice)));
    assert_eq!(trusted.status().unwrap().replica, 0);
    unreachable_because(
        connect_tls(&address, Some("s3cret"), presenting(&server, None)).status(),
        "a server that requires client certificates closes connections without one",
    );
    // The handshake fails (how it reads depends on when the refusal arrives).
    unreachable_because(
        connect_tls(
            &address,
            Some("s3cret"),
            presenting(&server, Some(&mallory)),
        )
        .status(),
        "127.0.0.1",
    );
    // The certificate does not stand in for the token.
    match connect_tls(&address, None, presenting(&server, Some(&alice))).status() {
        Err(Error::Invalid(m)) => assert!(m.contains("Unauthenticated"), "{m}"),
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    // The listener goes on serving.
    assert_eq!(trusted.status().unwrap().replica, 0);
}
