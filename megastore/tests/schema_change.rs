//! Changing a live schema: a new property, a new root table, and new local and global
//! indexes on existing data, back-filled while a writer keeps committing. Afterwards the
//! new indexes hold every entity, old and new, and the stored schema refuses removals.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bigtable::fs::FaultyFs;
use common::*;
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
