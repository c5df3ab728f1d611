//! The paper's PhotoApp end to end on one replica: users and photos in entity groups,
//! the local PhotosByTime index and the global PhotosByTag index (STORING
//! thumbnail_url), through inserts, updates that move index entries, deletes, the three
//! read modes, and a restart.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::ops::Bound;

use bigtable::fs::FaultyFs;
use common::*;
use megastore::{merge_join, Error, Prop, ReadMode, Value, ValueRange};

fn tag(t: &str) -> ValueRange {
    ValueRange::prefix(vec![Value::String(t.into())])
}

/// The photo ids of a global-index answer, once the indexes have caught up with `ts`.
fn tagged(db: &megastore::Database, t: &str, ts: i64) -> Vec<(i64, i64)> {
    db.wait_for_global_indexes(ts);
    let answer = db.query_global("PhotosByTag", &tag(t)).unwrap();
    assert!(answer.watermark >= ts);
    answer
        .value
        .iter()
        .map(|h| (int(&h.key[0]), int(&h.key[1])))
        .collect()
}

#[test]
fn photo_app_end_to_end() {
    let fs = FaultyFs::new();
    let db = photo_app(&fs);
    let (_, first) = db
        .transact(&user_group(101), |tx| {
            tx.put(user(101, "ann"))?;
            tx.put(photo(101, 500, 1000, &["dinner", "paris"]))?;
            tx.put(photo(101, 501, 2000, &["paris"]))?;
            Ok(())
        })
        .unwrap();
    assert_eq!((first.position, first.wrote), (1, true));
    let (_, other) = db
        .transact(&user_group(102), |tx| {
            tx.put(user(102, "bob"))?;
            tx.put(photo(102, 7, 1500, &["paris", "beach"]))
        })
        .unwrap();
    assert_eq!(other.position, 1, "each group has its own log");

    // Reads by key and by prefix.
    let snap = db.read(&user_group(101), ReadMode::Current).unwrap();
    assert_eq!(snap.position(), Some(1));
    let p = snap.get("Photo", &photo_key(101, 500)).unwrap().unwrap();
    assert_eq!(p, photo(101, 500, 1000, &["dinner", "paris"]));
    assert_eq!(
        snap.get("User", &[Value::Int64(101)]).unwrap(),
        Some(user(101, "ann"))
    );
    let photos = snap.scan("Photo", &[Value::Int64(101)]).unwrap();
    assert_eq!(photos.len(), 2);
    assert_eq!(photos[1].get("photo_id"), Some(&Value::Int32(501)));

    // The local index, by time within the group.
    let recent = snap
        .query_local(
            "PhotosByTime",
            &ValueRange {
                start: Bound::Included(vec![Value::Int64(101), Value::Int64(1500)]),
                end: Bound::Included(vec![Value::Int64(101)]),
            },
        )
        .unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].key, photo_key(101, 501));
    let by_time = snap
        .query_local("PhotosByTime", &ValueRange::prefix(vec![Value::Int64(101)]))
        .unwrap();
    let times: Vec<i64> = by_time.iter().map(|h| int(&h.values[1])).collect();
    assert_eq!(times, vec![1000, 2000]);

    // The global index: one entry per tag, across groups, with the stored thumbnail.
    assert_eq!(
        tagged(&db, "paris", other.timestamp),
        vec![(101, 500), (101, 501), (102, 7)]
    );
    let dinner = db
        .query_global("PhotosByTag", &tag("dinner"))
        .unwrap()
        .value;
    assert_eq!(
        dinner[0].storing.get("thumbnail_url"),
        Some(&Prop::One(Value::String("https://t/101/500".into())))
    );

    // An update moves index entries: photo 500 now later, tagged beach instead.
    let (_, moved) = db
        .transact(&user_group(101), |tx| {
            let mut p = tx.get("Photo", &photo_key(101, 500))?.unwrap();
            p.props.insert("time".into(), Prop::One(Value::Int64(3000)));
            p.props.insert(
                "tag".into(),
                Prop::Many(vec![Value::String("beach".into())]),
            );
            tx.put(p)
        })
        .unwrap();
    assert_eq!(moved.position, 2);
    let snap = db.read(&user_group(101), ReadMode::Current).unwrap();
    let order: Vec<i64> = snap
        .query_local("PhotosByTime", &ValueRange::prefix(vec![Value::Int64(101)]))
        .unwrap()
        .iter()
        .map(|h| int(&h.key[1]))
        .collect();
    assert_eq!(order, vec![501, 500], "500 moved after 501");
    let entities = snap
        .query_local_entities("PhotosByTime", &ValueRange::prefix(vec![Value::Int64(101)]))
        .unwrap();
    assert_eq!(entities[1].get("time"), Some(&Value::Int64(3000)));
    assert_eq!(entities[0], photo(101, 501, 2000, &["paris"]));
    assert_eq!(tagged(&db, "dinner", moved.timestamp), vec![]);
    assert_eq!(
        tagged(&db, "beach", moved.timestamp),
        vec![(101, 500), (102, 7)]
    );
    assert_eq!(
        tagged(&db, "paris", moved.timestamp),
        vec![(101, 501), (102, 7)]
    );

    // Merge-join: photos tagged both paris and beach.
    let keys = |t: &str| -> Vec<Vec<u8>> {
        let mut k: Vec<Vec<u8>> = db
            .query_global("PhotosByTag", &tag(t))
            .unwrap()
            .value
            .iter()
            .map(|h| format!("{:?}", h.key).into_bytes())
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        merge_join(&[keys("paris"), keys("beach")]),
        vec![b"[Int64(102), Int32(7)]".to_vec()]
    );

    // A delete removes the entity and its entries in both indexes.
    let (_, deleted) = db
        .transact(&user_group(101), |tx| {
            tx.delete("Photo", &photo_key(101, 501))
        })
        .unwrap();
    let now = db.read(&user_group(101), ReadMode::Current).unwrap();
    assert_eq!(now.get("Photo", &photo_key(101, 501)).unwrap(), None);
    assert_eq!(now.scan("Photo", &[Value::Int64(101)]).unwrap().len(), 1);
    assert_eq!(
        now.query_local("PhotosByTime", &ValueRange::prefix(vec![Value::Int64(101)]))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(tagged(&db, "paris", deleted.timestamp), vec![(102, 7)]);

    // The snapshot taken before the update and delete still reads the old state.
    assert_eq!(snap.position(), Some(2));
    assert!(snap.get("Photo", &photo_key(101, 501)).unwrap().is_some());

    // Restart: everything is still there.
    drop((snap, now));
    drop(db);
    let db = photo_app(&fs);
    let snap = db.read(&user_group(101), ReadMode::Current).unwrap();
    assert_eq!(snap.position(), Some(3));
    let p = snap.get("Photo", &photo_key(101, 500)).unwrap().unwrap();
    assert_eq!(p.get("time"), Some(&Value::Int64(3000)));
    assert_eq!(
        tagged(&db, "beach", deleted.timestamp),
        vec![(101, 500), (102, 7)]
    );
}

#[test]
fn read_modes_differ_on_a_committed_unapplied_entry() {
    let fs = FaultyFs::new();
    let engine = engine(&fs);
    let db = megastore::Database::open_with_schema(engine.clone(), PHOTO_APP, Default::default())
        .unwrap();
    let group = user_group(5);
    let (_, first) = db.transact(&group, |tx| tx.put(user(5, "eve"))).unwrap();
    // A writer that committed position 2 and crashed before applying it.
    let entry = megastore::log::LogEntry {
        timestamp: first.timestamp + 10,
        schema_version: db.schema_version(),
        next_leader: 0,
        proposal: 1,
        writes: vec![megastore::log::Write::Put(user(5, "eve2"))],
    };
    let root = user_root(&db, 5);
    let replica = megastore::replica::Replica::new(engine);
    assert_eq!(
        replica.accept(&root, 2, 0, &entry.encode()).unwrap(),
        Ok(())
    );

    let name = |mode| {
        let snap = db.read(&group, mode).unwrap();
        let user = snap.get("User", &[Value::Int64(5)]).unwrap().unwrap();
        (snap.position(), user.get("name").cloned())
    };
    let old = Some(Value::String("eve".into()));
    let new = Some(Value::String("eve2".into()));
    assert_eq!(
        name(ReadMode::Snapshot),
        (Some(1), old.clone()),
        "snapshot: last applied"
    );
    assert_eq!(
        name(ReadMode::Inconsistent),
        (None, old),
        "inconsistent: cells as they are"
    );
    assert_eq!(
        name(ReadMode::Current),
        (Some(2), new.clone()),
        "current: rolls forward"
    );
    assert_eq!(name(ReadMode::Snapshot), (Some(2), new.clone()));
    assert_eq!(name(ReadMode::Inconsistent), (None, new));
    let (meta, log) = db.group_meta(&group).unwrap();
    assert_eq!(
        (meta.applied, meta.applied_timestamp, log),
        (2, first.timestamp + 10, vec![1, 2])
    );
    // A writer that lost position 2 would be refused: the fast path takes one value.
    assert!(replica.accept(&root, 2, 0, b"another").unwrap().is_err());
}

#[test]
fn a_commit_is_in_the_global_indexes_once_it_is_applied() {
    let fs = FaultyFs::new();
    let db = photo_app(&fs);
    let (_, c) = db
        .transact(&user_group(1), |tx| tx.put(photo(1, 1, 10, &["now"])))
        .unwrap();
    // No waiting: the commit applied the entry here, and its index cells with it.
    let answer = db.query_global("PhotosByTag", &tag("now")).unwrap();
    assert!(
        answer.watermark >= c.timestamp,
        "{} < {}",
        answer.watermark,
        c.timestamp
    );
    assert_eq!(answer.value.len(), 1);
    let (meta, _) = db.group_meta(&user_group(1)).unwrap();
    assert_eq!(meta.indexed, meta.applied);
}

#[test]
fn a_global_query_can_miss_a_commit_until_the_watermark_passes_it() {
    let fs = FaultyFs::new();
    let db = photo_app(&fs);
    db.pause_global_indexing(true);
    let (_, c) = db
        .transact(&user_group(1), |tx| tx.put(photo(1, 1, 10, &["late"])))
        .unwrap();
    let stale = db.query_global("PhotosByTag", &tag("late")).unwrap();
    assert!(stale.value.is_empty(), "the indexer is paused");
    assert!(stale.watermark < c.timestamp, "and the watermark says so");
    // The local index is maintained with the commit itself.
    let snap = db.read(&user_group(1), ReadMode::Current).unwrap();
    assert_eq!(
        snap.query_local("PhotosByTime", &ValueRange::prefix(vec![Value::Int64(1)]))
            .unwrap()
            .len(),
        1
    );
    db.pause_global_indexing(false);
    assert_eq!(tagged(&db, "late", c.timestamp), vec![(1, 1)]);
}

#[test]
fn bad_writes_are_refused_and_write_nothing() {
    let fs = FaultyFs::new();
    let db = photo_app(&fs);
    let group = user_group(1);
    let wrong_group = db.transact(&group, |tx| tx.put(photo(2, 1, 10, &[])));
    assert!(
        matches!(wrong_group, Err(Error::Invalid(_))),
        "{wrong_group:?}"
    );
    let missing = db.transact(&group, |tx| {
        tx.put(megastore::Entity::new("Photo").set("user_id", Value::Int64(1)))
    });
    assert!(matches!(missing, Err(Error::Invalid(_))), "{missing:?}");
    let bad_type = db.transact(&group, |tx| {
        tx.put(user(1, "x").set("name", Value::Int64(3)))
    });
    assert!(matches!(bad_type, Err(Error::Invalid(_))), "{bad_type:?}");
    let not_root = db.transact(&megastore::GroupKey::new("Photo", photo_key(1, 1)), |_| {
        Ok(())
    });
    assert!(matches!(not_root, Err(Error::Invalid(_))), "{not_root:?}");
    let unknown_index = db
        .read(&group, ReadMode::Current)
        .unwrap()
        .query_local("PhotosByTag", &ValueRange::all())
        .map(|_| ());
    assert!(
        matches!(unknown_index, Err(Error::Invalid(_))),
        "{unknown_index:?}"
    );
    // A closure's own error aborts the transaction.
    let aborted = db.transact(&group, |tx| {
        tx.put(user(1, "ann"))?;
        Err::<(), _>(Error::Invalid("changed my mind".into()))
    });
    assert!(aborted.is_err());
    let (meta, _) = db.group_meta(&group).unwrap();
    assert_eq!(meta.applied, 0, "nothing was committed");
    assert_eq!(
        db.read(&group, ReadMode::Current)
            .unwrap()
            .get("User", &[Value::Int64(1)])
            .unwrap(),
        None
    );
}

#[test]
fn the_log_keeps_only_the_last_positions() {
    let fs = FaultyFs::new();
    let options = megastore::DatabaseOptions {
        log_retention: 3,
        ..megastore::DatabaseOptions::default()
    };
    let engine = engine(&fs);
    let db = megastore::Database::open_with_schema(engine.clone(), PHOTO_APP, options).unwrap();
    let group = user_group(9);
    let mut last = 0;
    for i in 0..20 {
        let (_, c) = db
            .transact(&group, |tx| tx.put(user(9, &format!("v{i}"))))
            .unwrap();
        last = c.timestamp;
    }
    db.wait_for_global_indexes(last);
    db.read(&group, ReadMode::Current).unwrap();
    let (meta, log) = db.group_meta(&group).unwrap();
    assert_eq!(meta.applied, 20);
    assert!(log.len() <= 7, "at most 2K+1 positions kept, got {log:?}");
    assert!(
        log.contains(&20) && log.contains(&18),
        "the last K stay: {log:?}"
    );
    // A slow proposer that read the group long ago cannot reuse a cleaned-up position.
    assert!(!log.contains(&2));
    let replica = megastore::replica::Replica::new(engine);
    let root = user_root(&db, 9);
    assert_eq!(
        replica.accept(&root, 2, 0, b"stale").unwrap(),
        Err(megastore::paxos::acceptor::Refusal::Applied)
    );
    assert_eq!(
        replica.prepare(&root, 2, 1 << 16).unwrap(),
        Err(megastore::paxos::acceptor::Refusal::Applied)
    );
    // An applied position's value is the chosen one (while its cell is kept).
    let chosen = replica.chosen_value(&root, 20).unwrap().unwrap();
    let last_entry = megastore::log::LogEntry::decode(&chosen).unwrap();
    assert_eq!(
        last_entry.writes,
        vec![megastore::log::Write::Put(user(9, "v19"))]
    );
    assert_eq!(replica.chosen_value(&root, 2).unwrap(), None, "cleaned up");
    assert_eq!(
        replica.chosen_value(&root, 21).unwrap(),
        None,
        "not applied"
    );
    assert_eq!(replica.highest_position(&root).unwrap(), 20);
    let name = db
        .read(&group, ReadMode::Current)
        .unwrap()
        .get("User", &[Value::Int64(9)])
        .unwrap()
        .unwrap();
    assert_eq!(name.get("name"), Some(&Value::String("v19".into())));
}
