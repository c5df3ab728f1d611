//! The `bt` command line against a server on a free loopback port: what a person types,
//! and what they read back.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use bigtable::{Engine, EngineOptions};
use wal::fs::FaultyFs;

struct Server {
    address: String,
    _runtime: tokio::runtime::Runtime,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn start() -> Server {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine =
        Arc::new(Engine::open(Arc::new(FaultyFs::new()), "/db", EngineOptions::tiny()).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let address = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(bigtable::server::serve(engine, listener, async {
            let _ = stopped.await;
        }));
        address
    });
    Server {
        address,
        _runtime: runtime,
        _stop: stop,
    }
}

/// Runs `bt` with `args`; returns (success, stdout, stderr).
fn bt(server: &Server, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--server", server.address.as_str()];
    all.extend_from_slice(args);
    common::run(env!("CARGO_BIN_EXE_bt"), &all)
}

#[test]
fn a_session_of_tables_families_and_rows() {
    let server = start();
    assert!(
        bt(
            &server,
            &["create-table", "users", "cf:max-versions=2", "meta"]
        )
        .0
    );
    assert_eq!(bt(&server, &["tables"]).1, "users\n");
    let families = bt(&server, &["families", "users"]).1;
    assert!(
        families.contains("cf") && families.contains("newest 2 versions"),
        "{families}"
    );
    assert!(
        bt(
            &server,
            &["set", "users", "alice", "cf:name=Alice", "cf:city=Paris"]
        )
        .0
    );
    assert!(bt(&server, &["set", "users", "bob", "cf:name=Bob"]).0);
    let alice = bt(&server, &["get", "users", "alice"]).1;
    assert!(
        alice.contains("\"Paris\"") && alice.contains("cf:name"),
        "{alice}"
    );
    assert!(alice.contains(" UTC"), "timestamps are readable: {alice}");
    let scan = bt(&server, &["scan", "users", "--prefix", "b"]).1;
    assert!(scan.contains("bob") && !scan.contains("alice"), "{scan}");
    assert_eq!(bt(&server, &["count", "users"]).1, "2\n");
    assert!(bt(&server, &["delete-row", "users", "bob"]).0);
    assert_eq!(bt(&server, &["count", "users"]).1, "1\n");
    assert!(bt(&server, &["create-family", "users", "extra:max-age=60"]).0);
    assert!(bt(&server, &["families", "users"])
        .1
        .contains("younger than 60s"));
    assert!(bt(&server, &["tablets", "users"])
        .1
        .contains("(table edge)"));

    let (ok, _, err) = bt(&server, &["create-table", "users"]);
    assert!(!ok && err.contains("AlreadyExists"), "{err}");
    let (ok, _, err) = bt(&server, &["set", "users", "r", "no-equals-sign"]);
    assert!(!ok && err.contains("FAMILY:QUALIFIER=VALUE"), "{err}");
    let (ok, _, err) = bt(&server, &["get", "nope", "r"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
    assert!(bt(&server, &["delete-table", "users"]).0);
    assert_eq!(bt(&server, &["tables"]).1, "");
}
