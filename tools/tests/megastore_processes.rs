//! Megastore served as one process per replica (`megastore serve --replica ID --config
//! FILE`) on loopback, with etcd as the coordinators' lock service, driven through the
//! gRPC client: a killed replica stops no writes and catches up when restarted; a
//! stopped leader sends writers to the slow path; bad requests get clear errors.

mod common;

use std::time::Duration;

use common::processes::{Etcd, Processes};
use megastore::api::client::{Client, ClientOptions};
use megastore::{Entity, Error, GroupKey, ReadMode, Value};

fn client(address: &str) -> Client {
    let options = ClientOptions {
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
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
    cluster.restart(2);
    assert_has_photos(&clients[2], 1, 0..20);
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
    let locks = EtcdLocks::new(&etcd.endpoint, "/t", clock.clone(), second, second).expect("locks");
    let other = EtcdLocks::new(&etcd.endpoint, "/t", clock, second, second).expect("locks");

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
}
