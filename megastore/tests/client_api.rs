//! The client API over gRPC on loopback, against one replica on an in-memory file
//! system: detached transactions commit or conflict as the group-commit rule says,
//! reads in each mode and index queries answer, and a server that requires a token
//! refuses requests without it.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use megastore::api::client::{Client, ClientOptions};
use megastore::node::{spawn, Services};
use megastore::{Error, ReadMode, Value, ValueRange};

use common::{photo, photo_app, user, user_group};

/// A served PhotoApp database and its runtime (the server lives as long as it does).
fn serve(token: Option<&str>) -> (String, tokio::runtime::Runtime) {
    let fs = bigtable::fs::FaultyFs::new();
    let db = Arc::new(photo_app(&fs));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let services = Services::replica(db, token.map(str::to_string));
    spawn(runtime.handle(), services, listener, std::future::pending()).unwrap();
    (address, runtime)
}

fn connect(address: &str, token: Option<&str>) -> Client {
    let options = ClientOptions {
        token: token.map(str::to_string),
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
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
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
