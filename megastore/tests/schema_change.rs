//! Changing a live schema: a new property, a new root table, and new local and global
//! indexes on existing data, back-filled while a writer keeps committing. Afterwards the
//! new indexes hold every entity, old and new, and the stored schema refuses removals.
//! Replicated, a change made through one replica reaches every replica, also one that
//! was down, and two concurrent changes are ordered, the second checked against the
//! first.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bigtable::clock::{Clock, SystemClock};
use bigtable::fs::FaultyFs;
use common::*;
use megastore::catalog::CatalogError;
use megastore::cluster::Cluster;
use megastore::replicas::ReplicaKind;
use megastore::{Database, DatabaseOptions, Entity, Error, GroupKey, ReadMode, Value, ValueRange};

const GROUPS: i64 = 12;

fn v2() -> String {
    PHOTO_APP.replace(
        "repeated string tag;\n}",
        "repeated string tag;\n  optional string caption;\n}",
    ) + "
CREATE TABLE Album { required int64 album_id; required string title; }
  PRIMARY KEY(album_id), ENTITY GROUP ROOT;
CREATE LOCAL INDEX PhotosByUrl ON Photo(user_id, full_url);
CREATE GLOBAL INDEX PhotosByMoment ON Photo(time) STORING (full_url);"
}

#[test]
fn indexes_added_to_a_live_schema_cover_old_and_concurrent_writes() {
    let fs = FaultyFs::new();
    let db = Arc::new(photo_app(&fs));
    let written = Arc::new(Mutex::new(BTreeSet::new()));
    for u in 0..GROUPS {
        db.transact(&user_group(u), |tx| {
            tx.put(user(u, "someone"))?;
            for p in 0..3 {
                tx.put(photo(u, p, u * 100 + i64::from(p), &["old"]))?;
            }
            Ok(())
        })
        .unwrap();
        written.lock().unwrap().extend((0..3).map(|p| (u, p)));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop, written) = (db.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            let mut p = 100;
            while !stop.load(Ordering::SeqCst) {
                let u = i64::from(p) % GROUPS;
                db.transact(&user_group(u), |tx| {
                    tx.put(photo(u, p, 10_000 + i64::from(p), &["new"]))
                })
                .unwrap();
                written.lock().unwrap().insert((u, p));
                p += 1;
            }
            p - 100
        })
    };
    let version = db.update_schema(&v2()).unwrap();
    stop.store(true, Ordering::SeqCst);
    let concurrent = writer.join().unwrap();
    assert_eq!(version, 2);
    assert_eq!(db.schema_version(), 2);
    eprintln!("{concurrent} photos committed while the schema changed");

    let written = written.lock().unwrap().clone();
    // The new local index: every photo of each group, by URL.
    for u in 0..GROUPS {
        let snap = db.read(&user_group(u), ReadMode::Current).unwrap();
        let hits = snap
            .query_local("PhotosByUrl", &ValueRange::prefix(vec![Value::Int64(u)]))
            .unwrap();
        let got: BTreeSet<(i64, i32)> = hits.iter().map(|h| (u, int(&h.key[1]) as i32)).collect();
        let want: BTreeSet<(i64, i32)> = written.iter().filter(|(g, _)| *g == u).copied().collect();
        assert_eq!(got, want, "group {u}");
    }
    // The new global index: every photo, with its stored URL.
    let (_, last) = db
        .transact(&user_group(0), |tx| tx.put(photo(0, 1, 5, &[])))
        .unwrap();
    db.wait_for_global_indexes(last.timestamp);
    let all = db
        .query_global("PhotosByMoment", &ValueRange::all())
        .unwrap()
        .value;
    let got: BTreeSet<(i64, i32)> = all
        .iter()
        .map(|h| (int(&h.key[0]), int(&h.key[1]) as i32))
        .collect();
    assert_eq!(got, written);
    assert!(all.iter().all(|h| h.storing.contains_key("full_url")));
    let moved = all.iter().filter(|h| h.key == photo_key(0, 1)).count();
    assert_eq!(moved, 1, "the updated photo's old entry was removed");

    // The new property and the new table work.
    db.transact(&user_group(1), |tx| {
        tx.put(photo(1, 0, 1, &[]).set("caption", Value::String("hello".into())))
    })
    .unwrap();
    let p = db
        .read(&user_group(1), ReadMode::Current)
        .unwrap()
        .get("Photo", &photo_key(1, 0))
        .unwrap()
        .unwrap();
    assert_eq!(p.get("caption"), Some(&Value::String("hello".into())));
    let album = GroupKey::new("Album", vec![Value::Int64(7)]);
    db.transact(&album, |tx| {
        tx.put(
            Entity::new("Album")
                .set("album_id", Value::Int64(7))
                .set("title", Value::String("trip".into())),
        )
    })
    .unwrap();

    // The stored schema is now v2: opening with the old text would remove things.
    drop(db);
    let old = Database::open_with_schema(engine(&fs), PHOTO_APP, DatabaseOptions::default());
    assert!(
        matches!(
            old,
            Err(Error::Catalog(
                megastore::catalog::CatalogError::Incompatible(_)
            ))
        ),
        "{:?}",
        old.err()
    );
    let db = Database::open_with_schema(engine(&fs), &v2(), DatabaseOptions::default()).unwrap();
    assert_eq!(db.schema_version(), 2, "the same text is no new version");
    assert!(db
        .read(&album, ReadMode::Current)
        .unwrap()
        .get("Album", &[Value::Int64(7)])
        .unwrap()
        .is_some());
}

/// Three full replicas of PhotoApp, each on its own file system.
fn cluster(fs: &[FaultyFs]) -> Cluster {
    open_cluster(fs, PHOTO_APP, cluster_options(&[ReplicaKind::Full; 3]))
}

fn file_systems() -> Vec<FaultyFs> {
    (0..3).map(|_| FaultyFs::new()).collect()
}

fn captioned(user: i64, id: i32, caption: &str) -> Entity {
    photo(user, id, 1000 + i64::from(id), &[]).set("caption", Value::String(caption.into()))
}

fn album(id: i64) -> (GroupKey, Entity) {
    let entity = Entity::new("Album")
        .set("album_id", Value::Int64(id))
        .set("title", Value::String("trip".into()));
    (GroupKey::new("Album", vec![Value::Int64(id)]), entity)
}

/// The (user, photo) keys in global index `PhotosByMoment` at `db`, once it has applied
/// and indexed every commit of users `0..users`.
fn photos_by_moment(db: &Database, users: i64) -> BTreeSet<(i64, i32)> {
    for u in 0..users {
        db.read(&user_group(u), ReadMode::Current).unwrap();
    }
    db.wait_for_global_indexes(SystemClock.now_micros());
    db.query_global("PhotosByMoment", &ValueRange::all())
        .unwrap()
        .value
        .iter()
        .map(|h| (int(&h.key[0]), int(&h.key[1]) as i32))
        .collect()
}

#[test]
fn a_change_through_one_replica_reaches_every_replica_with_its_indexes_built() {
    let fs = file_systems();
    let cluster = cluster(&fs);
    let first = cluster.replica(0).unwrap();
    for u in 0..4 {
        first
            .transact(&user_group(u), |tx| {
                tx.put(user(u, "someone"))?;
                tx.put(photo(u, 1, u * 10, &["old"]))
            })
            .unwrap();
    }
    assert_eq!(cluster.replica(1).unwrap().update_schema(&v2()).unwrap(), 2);
    // A request naming a root table it does not know makes a replica look for it.
    let (group, entity) = album(1);
    first.transact(&group, |tx| tx.put(entity.clone())).unwrap();

    // A current read at the third replica applies the back-fill entry, written under
    // version 2: the replica has that version from then on.
    let third = cluster.replica(2).unwrap();
    third.read(&user_group(3), ReadMode::Current).unwrap();
    assert_eq!(third.schema_version(), 2);
    assert_eq!(third.refresh_schema().unwrap(), 2);
    let snap = third.read(&user_group(3), ReadMode::Current).unwrap();
    let by_url = snap
        .query_local("PhotosByUrl", &ValueRange::prefix(vec![Value::Int64(3)]))
        .unwrap();
    assert_eq!(by_url.len(), 1, "the old photo is in the new local index");
    // What only version 2 declares works there: a new property, a new root table.
    third
        .transact(&user_group(3), |tx| tx.put(captioned(3, 2, "new")))
        .unwrap();
    let (group, entity) = album(2);
    third.transact(&group, |tx| tx.put(entity.clone())).unwrap();

    let want: BTreeSet<(i64, i32)> = (0..4).map(|u| (u, 1)).chain([(3, 2)]).collect();
    for i in 0..3 {
        let db = cluster.replica(i).unwrap();
        assert_eq!(db.refresh_schema().unwrap(), 2, "replica {i}");
        assert_eq!(db.schema_text().unwrap(), (2, v2()), "replica {i}");
        assert_eq!(photos_by_moment(db, 4), want, "replica {i}");
        let read = db.read(&group, ReadMode::Current).unwrap();
        assert_eq!(
            read.get("Album", &[Value::Int64(2)]).unwrap(),
            Some(entity.clone())
        );
    }
}

#[test]
fn a_replica_down_during_a_change_fetches_it_when_it_meets_an_entry_written_under_it() {
    let fs = file_systems();
    let mut cluster = cluster(&fs);
    cluster
        .replica(0)
        .unwrap()
        .transact(&user_group(1), |tx| tx.put(user(1, "someone")))
        .unwrap();
    cluster.stop(2);
    let first = cluster.replica(0).unwrap();
    assert_eq!(first.update_schema(&v2()).unwrap(), 2);
    first
        .transact(&user_group(1), |tx| tx.put(captioned(1, 7, "while away")))
        .unwrap();

    cluster.start(2).unwrap();
    let third = cluster.replica(2).unwrap();
    let photo = third
        .read(&user_group(1), ReadMode::Current)
        .unwrap()
        .get("Photo", &photo_key(1, 7))
        .unwrap()
        .unwrap();
    assert_eq!(
        photo.get("caption"),
        Some(&Value::String("while away".into()))
    );
    assert_eq!(third.schema_version(), 2);

    // The version it fetched is on its disk.
    cluster.stop(2);
    cluster.start(2).unwrap();
    assert_eq!(cluster.replica(2).unwrap().schema_version(), 2);
}

#[test]
fn concurrent_changes_at_two_replicas_are_ordered_and_the_second_checked_against_the_first() {
    let fs = file_systems();
    let cluster = Arc::new(cluster(&fs));
    let with_caption = v2();
    let with_rating = PHOTO_APP.replace(
        "repeated string tag;\n}",
        "repeated string tag;\n  optional int64 rating;\n}",
    );
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let changes: Vec<_> = [(0, with_caption.clone()), (1, with_rating.clone())]
        .into_iter()
        .map(|(i, text)| {
            let (cluster, barrier) = (cluster.clone(), barrier.clone());
            std::thread::spawn(move || {
                let db = cluster.replica(i).unwrap();
                barrier.wait();
                db.update_schema(&text)
            })
        })
        .collect();
    let results: Vec<Result<u64, Error>> = changes.into_iter().map(|t| t.join().unwrap()).collect();
    let won: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(won.len(), 1, "exactly one change wins: {results:?}");
    let lost = 1 - won[0];
    assert_eq!(results[won[0]].as_ref().ok(), Some(&2));
    assert!(
        matches!(
            &results[lost],
            Err(Error::Catalog(CatalogError::Incompatible(m))) if m.contains("removed")
        ),
        "the other is checked against the winner, which it would undo: {:?}",
        results[lost]
    );
    let winner = [with_caption, with_rating][won[0]].clone();
    for i in 0..3 {
        let db = cluster.replica(i).unwrap();
        db.refresh_schema().unwrap();
        assert_eq!(
            db.schema_text().unwrap(),
            (2, winner.clone()),
            "replica {i}"
        );
    }
}

#[test]
fn a_back_fill_interrupted_at_a_replica_is_finished_by_its_upkeep_after_a_restart() {
    let clock = Arc::new(bigtable::clock::ManualClock::new(1_800_000_000_000_000));
    let mut options = cluster_options(&[ReplicaKind::Full; 3]);
    options.clock = clock.clone();
    options.maintenance_every = Some(std::time::Duration::from_millis(20));
    options.database.prepared_timeout = std::time::Duration::from_secs(5);
    let fs = file_systems();
    let mut cluster = open_cluster(&fs, PHOTO_APP, options);
    let first = cluster.replica(0).unwrap();
    for u in 1..=2 {
        first
            .transact(&user_group(u), |tx| {
                tx.put(user(u, "someone"))?;
                tx.put(photo(u, 1, u, &[]))
            })
            .unwrap();
    }
    // A two-phase transaction whose coordinator stopped after preparing: its parts
    // lock both groups, and the back-fill cannot pass them.
    let prepared = first
        .prepare_multi(&[user_group(1), user_group(2)], |tx| {
            tx.on(&user_group(1))?.put(photo(1, 2, 5, &[]))?;
            tx.on(&user_group(2))?.put(photo(2, 2, 6, &[]))
        })
        .unwrap();
    drop(prepared);
    let refused = first.update_schema(&v2());
    assert!(matches!(refused, Err(Error::Locked { .. })), "{refused:?}");

    // The replica restarts. Once the prepared transaction is old enough for the
    // finisher to abort it, the upkeep finishes the back-fill.
    cluster.stop(0);
    cluster.start(0).unwrap();
    clock.advance(10_000_000);
    let first = cluster.replica(0).unwrap();
    let patience = std::time::Duration::from_secs(20);
    assert!(first.wait_for_index("PhotosByUrl", patience));
    assert!(first.wait_for_index("PhotosByMoment", patience));
    let by_url = first
        .read(&user_group(1), ReadMode::Current)
        .unwrap()
        .query_local("PhotosByUrl", &ValueRange::prefix(vec![Value::Int64(1)]))
        .unwrap();
    assert_eq!(
        by_url.len(),
        1,
        "the photo written before, not the aborted one"
    );
}
