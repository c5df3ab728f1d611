//! Megastore served as one process per replica (`megastore serve --replica ID --config
//! FILE`) on loopback, with etcd as the coordinators' lock service, driven through the
//! gRPC client: a killed replica stops no writes and catches up when restarted, on the
//! data and on a schema change made while it was down (`megastore update-schema`); a
//! stopped leader sends writers to the slow path; bad requests get clear errors; with
//! TLS and a token in the config, replicas and clients (the Rust client and the command
//! line) talk over TLS.

mod common;

use std::time::Duration;

use common::processes::{Embedded, Etcd, Processes};
use common::{certs, run};
use megastore::api::client::{Client, ClientOptions};
use megastore::{Entity, Error, GroupKey, ReadMode, Value};

fn client(address: &str) -> Client {
    client_with(address, ClientOptions::default())
}

fn client_with(address: &str, options: ClientOptions) -> Client {
    let options = ClientOptions {
        timeout: Duration::from_secs(10),
        ..options
    };
    Client::connect(address, &options).expect("client")
}

fn group(user: i64) -> GroupKey {
    GroupKey::new("User", vec![Value::Int64(user)])
}

fn photo(user: i64, id: i32) -> Entity {
    Entity::new("Photo")
        .set("user_id", Value::Int64(user))
        .set("photo_id", Value::Int32(id))
        .set("time", Value::Int64(i64::from(id)))
        .set("full_url", Value::String(format!("https://p/{user}/{id}")))
}

/// Writes photo `id` of `user` through `client`; panics unless it commits.
fn put_photo(client: &Client, user: i64, id: i32) {
    let entity = photo(user, id);
    client
        .transact(&group(user), 32, |tx| {
            tx.put(&entity);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("photo {user}/{id}: {e}"));
}

/// Asserts that a current read at `client` finds every photo of `user` in `ids`.
fn assert_has_photos(client: &Client, user: i64, ids: impl IntoIterator<Item = i32>) {
    for id in ids {
        let key = [Value::Int64(user), Value::Int32(id)];
        let found = client
            .get(&group(user), "Photo", &key, ReadMode::Current)
            .unwrap_or_else(|e| panic!("reading photo {user}/{id}: {e}"));
        assert_eq!(found, Some(photo(user, id)), "photo {user}/{id}");
    }
}

#[test]
fn a_killed_replica_stops_nothing_and_catches_up_when_restarted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = Etcd::start(dir.path());
    let mut cluster = Processes::start(dir.path(), &etcd, &["full", "full", "full"], 1000, 500);
    let clients: Vec<Client> = cluster.addresses.iter().map(|a| client(a)).collect();
    for id in 0..10 {
        put_photo(&clients[id as usize % 2], 1, id);
    }
    cluster.kill(2);
    for id in 10..20 {
        put_photo(&clients[id as usize % 2], 1, id);
    }
    assert_has_photos(&clients[1], 1, 0..20);
    // The schema changes meanwhile, through the command line: a new table and a new
    // index on the photos already written.
    let schema = dir.path().join("v2.schema");
    let text = clients[0].schema().expect("schema").text
        + "\nCREATE TABLE Album { required int64 album_id; required string title; }\n\
           PRIMARY KEY(album_id), ENTITY GROUP ROOT;\n\
           CREATE LOCAL INDEX PhotosByUrl ON Photo(user_id, full_url);\n";
    std::fs::write(&schema, &text).expect("schema file");
    let args = ["--address", &cluster.addresses[0], "update-schema"];
    let (ok, out, err) = run(
        env!("CARGO_BIN_EXE_megastore"),
        &[&args[..], &[schema.to_str().expect("path")]].concat(),
    );
    assert!(
        ok && out.contains(r#""version":2"#),
        "update-schema: {out} {err}"
    );
    cluster.restart(2);
    assert_has_photos(&clients[2], 1, 0..20);
    // The restarted replica learned the new version: its index holds the old photos,
    // and the new table takes writes there.
    let by_url = clients[2]
        .query_local(
            &group(1),
            "PhotosByUrl",
            &megastore::ValueRange::prefix(vec![Value::Int64(1)]),
            ReadMode::Current,
        )
        .expect("the new index at the restarted replica");
    assert_eq!(by_url.len(), 20);
    let album = Entity::new("Album")
        .set("album_id", Value::Int64(1))
        .set("title", Value::String("trip".into()));
    clients[2]
        .transact(&GroupKey::new("Album", vec![Value::Int64(1)]), 8, |tx| {
            tx.put(&album);
            Ok(())
        })
        .expect("a write to the new table");
    // Once caught up, replica 2 serves a snapshot read of the latest write locally.
    let key = [Value::Int64(1), Value::Int32(19)];
    let local = clients[2]
        .get(&group(1), "Photo", &key, ReadMode::Snapshot)
        .expect("snapshot read");
    assert_eq!(local, Some(photo(1, 19)));
    // And it takes writes again.
    put_photo(&clients[2], 1, 20);
    assert_has_photos(&clients[0], 1, 0..21);
}

#[test]
fn a_stopped_leader_sends_writers_to_the_slow_path_and_catches_up_when_continued() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = Etcd::start(dir.path());
    let cluster = Processes::start(dir.path(), &etcd, &["full", "full", "full"], 1000, 300);
    let clients: Vec<Client> = cluster.addresses.iter().map(|a| client(a)).collect();
    // Replica 1 writes the last entry, so it leads the next position's fast path.
    put_photo(&clients[1], 2, 0);
    cluster.signal(1, "STOP");
    for id in 1..6 {
        put_photo(&clients[id as usize % 2 * 2], 2, id);
    }
    assert_has_photos(&clients[2], 2, 0..6);
    cluster.signal(1, "CONT");
    assert_has_photos(&clients[1], 2, 0..6);
}

#[test]
fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = Etcd::start(dir.path());
    let cluster = Processes::start(dir.path(), &etcd, &["full", "witness", "full"], 1000, 500);
    let c = client(&cluster.addresses[0]);
    let invalid = |r: Result<_, Error>, says: &str| match r {
        Err(Error::Invalid(m)) => assert!(m.contains(says), "{m:?} lacks {says:?}"),
        other => panic!("expected an invalid-argument error, got {other:?}"),
    };
    invalid(
        c.get(
            &GroupKey::new("Nope", vec![]),
            "Nope",
            &[],
            ReadMode::Current,
        )
        .map(drop),
        "not in the schema",
    );
    invalid(
        c.get(&group(1), "Photo", &[Value::Int64(1)], ReadMode::Current)
            .map(drop),
        "key",
    );
    let wrong_type = Entity::new("Photo").set("user_id", Value::String("x".into()));
    invalid(
        c.transact(&group(1), 1, |tx| {
            tx.put(&wrong_type);
            Ok(())
        })
        .map(drop),
        "",
    );
    let oversized = photo(1, 1).set("full_url", Value::String("x".repeat(20 << 20)));
    invalid(
        c.transact(&group(1), 1, |tx| {
            tx.put(&oversized);
            Ok(())
        })
        .map(drop),
        "too large",
    );
    // A witness keeps no data: it refuses reads, plainly.
    let witness = client(&cluster.addresses[1]);
    invalid(
        witness
            .get(&group(1), "User", &[Value::Int64(1)], ReadMode::Current)
            .map(drop),
        "witness",
    );
    // Still serving.
    put_photo(&c, 1, 1);
    assert_has_photos(&c, 1, [1]);
}

#[test]
fn etcd_leases_renew_in_one_epoch_and_a_revocation_ends_it() {
    use std::sync::Arc;

    use bigtable::clock::ManualClock;
    use megastore::etcd::EtcdLocks;
    use megastore::replicas::LockService;

    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = Etcd::start(dir.path());
    let clock = Arc::new(ManualClock::new(0));
    let second = Duration::from_secs(1);
    let locks =
        EtcdLocks::new(&etcd.endpoint, None, "/t", clock.clone(), second, second).expect("locks");
    let other = EtcdLocks::new(&etcd.endpoint, None, "/t", clock, second, second).expect("locks");

    assert_eq!(other.revoke(3), None, "no lease held: nothing to wait for");
    let first = locks.acquire(3, 0).expect("granted");
    assert_eq!(first.until, 1_000_000);
    let renewed = locks.acquire(3, 500_000).expect("renewed");
    assert_eq!(renewed.epoch, first.epoch);
    assert_eq!(renewed.until, 1_500_000);

    // A writer in another process revokes: no renewal, no new lease, while it stands.
    assert!(other.revoke(3).is_some());
    assert_eq!(locks.acquire(3, 600_000), None);
    assert_eq!(locks.acquire(3, 2_000_000), None);

    // Another replica's lease is its own.
    let four = locks.acquire(4, 0).expect("granted");
    assert_ne!(four.epoch, first.epoch);
    locks.release(4);
    assert_eq!(other.revoke(4), None, "released: nothing to wait for");

    // A job's lease is one holder's at a time; its holder renews it.
    assert!(locks.hold_job("deliver", 1, 0));
    assert!(!other.hold_job("deliver", 2, 0));
    assert!(locks.hold_job("deliver", 1, 100));
    assert!(other.hold_job("another job", 2, 0));
}

#[test]
fn etcd_leases_outlive_the_etcd_member_they_were_taken_at() {
    use std::sync::Arc;

    use bigtable::clock::ManualClock;
    use megastore::etcd::EtcdLocks;
    use megastore::replicas::LockService;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut members = Etcd::start_cluster(dir.path(), 3);
    // The member to lose is a follower, listed first, so every call starts there.
    let lost = members
        .iter()
        .position(|m| !m.is_leader())
        .expect("two of three members follow");
    members.swap(0, lost);
    let endpoints: Vec<&str> = members.iter().map(|m| m.endpoint.as_str()).collect();
    let endpoints = endpoints.join(",");
    let clock = Arc::new(ManualClock::new(0));
    let (lease, timeout) = (Duration::from_secs(30), Duration::from_secs(5));
    let locks =
        EtcdLocks::new(&endpoints, None, "/t", clock.clone(), lease, timeout).expect("locks");
    let other = EtcdLocks::new(&endpoints, None, "/t", clock, lease, timeout).expect("locks");
    let first = locks.acquire(3, 0).expect("granted");
    assert!(locks.hold_job("deliver", 1, 0));

    drop(members.remove(0));
    let renewed = locks
        .acquire(3, 1_000_000)
        .expect("renewed at another member");
    assert_eq!(renewed.epoch, first.epoch, "the same lease, renewed");
    assert!(
        locks.hold_job("deliver", 1, 100),
        "its holder renews the job"
    );
    assert!(!other.hold_job("deliver", 2, 100), "nobody else takes it");
    assert!(other.revoke(3).is_some(), "a revocation goes through");
    assert_eq!(locks.acquire(3, 2_000_000), None, "and stands");

    // With no member left that answers, nothing is granted.
    drop(members);
    assert_eq!(locks.acquire(5, 3_000_000), None);
}

#[test]
fn etcd_over_tls_grants_leases_only_to_clients_with_a_certificate_it_trusts() {
    use std::sync::Arc;

    use bigtable::clock::ManualClock;
    use megastore::etcd::EtcdLocks;
    use megastore::replicas::LockService;
    use megastore::tls::TlsFiles;

    let dir = tempfile::tempdir().expect("temp dir");
    let alice = certs::self_signed(dir.path(), "alice");
    let etcd = Etcd::start_tls(dir.path(), alice.cert.as_ref().expect("made"));
    let clock = Arc::new(ManualClock::new(0));
    let second = Duration::from_secs(1);
    let locks = |tls: Option<TlsFiles>| {
        let tls = tls.map(|t| t.client().expect("the files load").expect("TLS"));
        EtcdLocks::new(
            &etcd.endpoint,
            tls.as_ref(),
            "/t",
            clock.clone(),
            second,
            second,
        )
        .expect("locks")
    };
    let trusting = |own: Option<&TlsFiles>| TlsFiles {
        ca: etcd.ca.clone(),
        cert: own.and_then(|o| o.cert.clone()),
        key: own.and_then(|o| o.key.clone()),
        ..TlsFiles::default()
    };

    let granted = locks(Some(trusting(Some(&alice)))).acquire(1, 0);
    assert!(granted.is_some(), "a client with a trusted certificate");
    assert_eq!(
        locks(Some(trusting(None))).acquire(2, 0),
        None,
        "no certificate"
    );
    assert_eq!(locks(None).acquire(3, 0), None, "plaintext");
    let mallory = certs::self_signed(dir.path(), "mallory");
    assert_eq!(
        locks(Some(trusting(Some(&mallory)))).acquire(4, 0),
        None,
        "an untrusted certificate"
    );
}

#[test]
fn replicas_with_mutual_tls_in_their_config_replicate_and_serve_clients_with_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = certs::self_signed(dir.path(), "cluster");
    // etcd, over TLS, takes the replicas' certificate.
    let etcd = Etcd::start_tls(dir.path(), files.cert.as_ref().expect("made"));
    // Relative paths: the config file is in `dir` too. Every listener requires a client
    // certificate chaining to the cluster's (self-signed) one: the replicas present
    // theirs to each other and to etcd, and the test's clients the same one.
    let settings = "token = \"s3cret\"\ntls_cert = \"cluster.crt\"\ntls_key = \"cluster.key\"\n\
                    tls_ca = \"cluster.crt\"\ntls_client_ca = \"cluster.crt\"\n\
                    etcd_tls_ca = \"etcd.crt\"\netcd_tls_cert = \"cluster.crt\"\n\
                    etcd_tls_key = \"cluster.key\"\n";
    let kinds = ["full", "full", "full"];
    let cluster = Processes::start_with(dir.path(), &etcd, &kinds, 1000, 500, settings);
    let tls_client = |i: usize| {
        let options = ClientOptions {
            token: Some("s3cret".into()),
            tls: files.client().expect("the CA loads"),
            ..ClientOptions::default()
        };
        client_with(&cluster.addresses[i], options)
    };
    put_photo(&tls_client(0), 5, 1);
    assert_has_photos(&tls_client(2), 5, [1]);
    // That current read took replica 2 a coordinator lease, from etcd over TLS: a
    // revocation finds it held.
    let locks = megastore::etcd::EtcdLocks::new(
        &etcd.endpoint,
        megastore::tls::TlsFiles {
            ca: etcd.ca.clone(),
            ..files.clone()
        }
        .client()
        .expect("the files load")
        .as_ref(),
        "/megastore",
        std::sync::Arc::new(bigtable::clock::ManualClock::new(0)),
        Duration::from_secs(1),
        Duration::from_secs(5),
    )
    .expect("locks");
    assert!(
        megastore::replicas::LockService::revoke(&locks, 2).is_some(),
        "replica 2 holds a lease"
    );

    let megastore = env!("CARGO_BIN_EXE_megastore");
    let ca = dir.path().join("cluster.crt").display().to_string();
    let key = dir.path().join("cluster.key").display().to_string();
    let get = ["get", "Photo", "user_id=5", "photo_id=1"];
    let with = |flags: &[&str]| {
        let mut args = vec!["--address", &cluster.addresses[1], "--token", "s3cret"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&get);
        run(megastore, &args)
    };
    let presenting = ["--tls-client-cert", &ca, "--tls-client-key", &key];
    let (ok, out, err) = with(&[&["--tls-ca", &ca][..], &presenting].concat());
    assert!(ok, "get over TLS failed: {err}");
    assert!(out.contains("https://p/5/1"), "{out}");
    let (ok, _, err) = with(&["--tls-ca", &ca]);
    assert!(
        !ok && err.contains("requires client certificates"),
        "get without a client certificate: {err}"
    );
    let (ok, _, err) = with(&[]);
    assert!(!ok && err.contains("serves TLS"), "plaintext get: {err}");
    let renamed = ["--tls-ca", &ca, "--tls-domain", "elsewhere.example"];
    let (ok, _, err) = with(&[&renamed[..], &presenting].concat());
    assert!(
        !ok && err.contains("not valid for name"),
        "renamed get: {err}"
    );
}

#[test]
fn embedded_serve_takes_a_certificate_and_a_client_ca_and_refuses_tls_flags_that_do_not_belong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = certs::self_signed(dir.path(), "server");
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().expect("named").display().to_string();
    let (cert, key) = (path(&files.cert), path(&files.key));
    let megastore = env!("CARGO_BIN_EXE_megastore");
    let data = dir.path().join("data");
    // Self-signed: the certificate is also the CA of the clients' (the same one).
    let tls = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &cert,
    ];
    let server = Embedded::start(&data, &tls);
    for address in &server.addresses {
        let status = |own: &[&str]| {
            let args = [
                &["--address", address, "--tls-ca", &cert][..],
                own,
                &["status"],
            ]
            .concat();
            run(megastore, &args)
        };
        let (ok, out, err) = status(&["--tls-client-cert", &cert, "--tls-client-key", &key]);
        assert!(
            ok && out.contains("\"replica\""),
            "status of {address}: {err}"
        );
        let (ok, _, err) = status(&[]);
        assert!(
            !ok && err.contains("requires client certificates"),
            "status of {address} without a client certificate: {err}"
        );
    }
    assert_eq!(server.addresses.len(), 3);

    // Each would fail on its bogus replica kind if it got past TLS, never serve.
    let refused = |args: &[&str], says: &str| {
        let args = [args, &["--replicas", "bogus"]].concat();
        let (ok, _, err) = run(megastore, &args);
        assert!(
            !ok && err.contains(says),
            "{args:?}: {err:?} lacks {says:?}"
        );
    };
    refused(&["serve", "--tls-ca", &cert], "are for client commands");
    refused(
        &[
            "serve",
            "--tls-client-cert",
            &cert,
            "--tls-client-key",
            &key,
        ],
        "are for client commands",
    );
    refused(
        &["serve", "--tls-client-ca", &cert],
        "client certificates are checked over TLS only",
    );
    refused(&["serve", "--tls-cert", &cert], "go together");
    refused(
        &["serve", "--tls-cert", &key, "--tls-key", &key],
        "CERTIFICATE",
    );
    let config = [
        "serve",
        "--replica",
        "0",
        "--config",
        "c.toml",
        "--tls-cert",
        &cert,
    ];
    refused(&config, "the config file sets tls_cert");
}
