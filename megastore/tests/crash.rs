//! Power loss at every point of a workload: transactions (commit, then apply, then
//! global-index maintenance) and a schema change that adds two indexes (catalog write,
//! then back-fill). After each crash the database reopens, repairs itself (roll-forward
//! by the next reader, back-fill resumed at open), and must show every acknowledged
//! step, the unacknowledged one entirely or not at all, and indexes that agree with
//! the data. The sweep must also land in each window it is about: a committed but
//! unapplied entry, unindexed global-index work, an unfinished back-fill.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bigtable::clock::{Clock, SystemClock};
use bigtable::fs::{CrashMode, FaultyFs};
use bigtable::{Engine, EngineOptions};
use common::*;
use megastore::catalog::Catalog;
use megastore::replica::{Replica, RootRow};
use megastore::{Database, DatabaseOptions, Entity, ReadMode, Value, ValueRange};

fn v2() -> String {
    PHOTO_APP.replace(
        "repeated string tag;\n}",
        "repeated string tag;\n  optional string caption;\n}",
    ) + "CREATE LOCAL INDEX PhotosByCaption ON Photo(user_id, caption);
CREATE GLOBAL INDEX PhotosByUrl ON Photo(full_url);"
}

fn options() -> EngineOptions {
    EngineOptions {
        background_maintenance: false,
        memtable_bytes: 2048,
        ..EngineOptions::tiny()
    }
}

fn open_engine(fs: &FaultyFs) -> Result<Arc<Engine>, bigtable::Error> {
    Engine::open(Arc::new(fs.clone()), "/db", options()).map(Arc::new)
}

/// A photo as the model knows it: time, tags, caption.
type Photos = BTreeMap<i32, (i64, Vec<&'static str>, Option<&'static str>)>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    MovePhoto,
    AddPhoto,
    AddIndexes,
    AddCaptioned,
}

const STEPS: [Step; 4] = [
    Step::MovePhoto,
    Step::AddPhoto,
    Step::AddIndexes,
    Step::AddCaptioned,
];

fn model(steps_done: &[Step]) -> Photos {
    let mut photos = Photos::from([(1, (10, vec!["a"], None))]);
    for step in steps_done {
        match step {
            Step::MovePhoto => {
                photos.insert(1, (20, vec!["b"], None));
            }
            Step::AddPhoto => {
                photos.insert(2, (30, vec!["b", "c"], None));
            }
            Step::AddIndexes => {}
            Step::AddCaptioned => {
                photos.insert(3, (40, vec!["c"], Some("x")));
            }
        }
    }
    photos
}

fn entity(id: i32, (time, tags, caption): &(i64, Vec<&str>, Option<&str>)) -> Entity {
    let mut e = photo(1, id, *time, tags);
    if let Some(c) = caption {
        e = e.set("caption", Value::String((*c).into()));
    }
    e
}

/// Runs the steps until one fails; how many were acknowledged.
fn run(db: &Database) -> usize {
    let all = model(&STEPS);
    for (i, step) in STEPS.iter().enumerate() {
        let ok = match step {
            Step::MovePhoto => db
                .transact(&user_group(1), |tx| {
                    tx.put(entity(1, &(20, vec!["b"], None)))
                })
                .is_ok(),
            Step::AddPhoto => db
                .transact(&user_group(1), |tx| tx.put(entity(2, &all[&2])))
                .is_ok(),
            Step::AddIndexes => db.update_schema(&v2()).is_ok(),
            Step::AddCaptioned => db
                .transact(&user_group(1), |tx| tx.put(entity(3, &all[&3])))
                .is_ok(),
        };
        if !ok {
            return i;
        }
    }
    STEPS.len()
}

/// What the windows the sweep landed in looked like on disk right after the crash.
#[derive(Default, Debug)]
struct Windows {
    unapplied: usize,
    unindexed: usize,
    unfinished_backfill: usize,
}

fn inspect_raw(engine: &Arc<Engine>, windows: &mut Windows) {
    let root = RootRow {
        table: "PhotoApp.User".into(),
        row: megastore::keys::row_key(
            &megastore::schema::parse(PHOTO_APP).unwrap(),
            "User",
            &[Value::Int64(1)],
        )
        .unwrap(),
    };
    let state = Replica::new(engine.clone()).group_state(&root).unwrap();
    if state.last_accepted() > state.meta.applied {
        windows.unapplied += 1;
    }
    if state.meta.indexed < state.meta.applied {
        windows.unindexed += 1;
    }
    let catalog = Catalog::open(engine).unwrap();
    if let Some((version, _)) = catalog.get("PhotoApp").unwrap() {
        if version == 2 && catalog.built("PhotoApp").unwrap().len() < 4 {
            windows.unfinished_backfill += 1;
        }
    }
}

fn keys_of(hits: &[megastore::IndexHit]) -> Vec<i32> {
    hits.iter().map(|h| int(&h.key[1]) as i32).collect()
}

/// Checks the reopened database against the model; returns how many steps it shows.
fn verify(db: &Database, acked: usize) -> usize {
    let snap = db.read(&user_group(1), ReadMode::Current).unwrap();
    let found = snap.scan("Photo", &[Value::Int64(1)]).unwrap();
    let expected = |k: usize| -> Vec<Entity> {
        model(&STEPS[..k])
            .iter()
            .map(|(id, p)| entity(*id, p))
            .collect()
    };
    let shown = (acked..=(acked + 1).min(STEPS.len()))
        .find(|k| expected(*k) == found)
        .unwrap_or_else(|| {
            panic!(
                "{found:?} is not the state after {acked} or {} steps",
                acked + 1
            )
        });
    let seen = model(&STEPS[..shown]);
    if acked > STEPS.iter().position(|s| *s == Step::AddIndexes).unwrap() {
        assert_eq!(
            db.schema_version(),
            2,
            "the acknowledged schema change survived"
        );
    }

    // The local index agrees with the data, in time order.
    let by_time = snap
        .query_local("PhotosByTime", &ValueRange::prefix(vec![Value::Int64(1)]))
        .unwrap();
    let mut want: Vec<(i64, i32)> = seen.iter().map(|(id, p)| (p.0, *id)).collect();
    want.sort();
    assert_eq!(
        keys_of(&by_time),
        want.iter().map(|w| w.1).collect::<Vec<_>>()
    );

    // The global index catches up with the data.
    db.wait_for_global_indexes(SystemClock.now_micros());
    for t in ["a", "b", "c"] {
        let hits = db
            .query_global(
                "PhotosByTag",
                &ValueRange::prefix(vec![Value::String(t.into())]),
            )
            .unwrap();
        let want: Vec<i32> = seen
            .iter()
            .filter(|(_, p)| p.1.contains(&t))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(keys_of(&hits.value), want, "tag {t}");
    }

    // The indexes added by the schema change are complete once the database is open.
    if db.schema_version() == 2 {
        let captions = snap_now(db)
            .query_local(
                "PhotosByCaption",
                &ValueRange::prefix(vec![Value::Int64(1)]),
            )
            .unwrap();
        let want: Vec<i32> = seen
            .iter()
            .filter(|(_, p)| p.2.is_some())
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(keys_of(&captions), want);
        let urls = db
            .query_global("PhotosByUrl", &ValueRange::all())
            .unwrap()
            .value;
        assert_eq!(keys_of(&urls), seen.keys().copied().collect::<Vec<_>>());
    }
    shown
}

fn snap_now(db: &Database) -> megastore::Snapshot<'_> {
    db.read(&user_group(1), ReadMode::Current).unwrap()
}

/// Global-index cells are written with the data while a group's indexes are caught
/// up; with maintenance paused they are left to the background indexer after reopening.
/// Both ways, a crash anywhere loses no acknowledged step, and the indexes heal.
#[test]
fn power_loss_anywhere_loses_no_acknowledged_step_and_indexes_heal() {
    for pause_indexing in [false, true] {
        let windows = crash_at_every_point(pause_indexing);
        assert!(
            windows.unapplied > 0,
            "no crash between commit and apply: {windows:?}"
        );
        assert!(
            windows.unfinished_backfill > 0,
            "no crash during the schema change: {windows:?}"
        );
        assert_eq!(
            windows.unindexed > 0,
            pause_indexing,
            "applied entries wait for the indexer only while it is paused: {windows:?}"
        );
    }
}

fn crash_at_every_point(pause_indexing: bool) -> Windows {
    let mut windows = Windows::default();
    let mut outcomes = BTreeMap::new();
    let mut resumed_schema_changes = 0;
    let mut n = 0u64;
    loop {
        let fs = FaultyFs::new();
        {
            let db = Database::open_with_schema(
                open_engine(&fs).unwrap(),
                PHOTO_APP,
                DatabaseOptions::default(),
            )
            .unwrap();
            let (_, c) = db
                .transact(&user_group(1), |tx| {
                    tx.put(user(1, "ann"))?;
                    tx.put(entity(1, &model(&[])[&1]))
                })
                .unwrap();
            db.wait_for_global_indexes(c.timestamp);
            db.pause_global_indexing(pause_indexing);
            fs.power_loss_after(n);
            let acked = run(&db);
            let finished = !fs.is_powered_off();
            drop(db);
            if finished {
                assert_eq!(acked, STEPS.len());
                break;
            }
            // Alternate between dropping unsynced bytes and keeping a torn prefix.
            fs.crash(if n.is_multiple_of(2) {
                CrashMode::DropUnsynced
            } else {
                CrashMode::TornWrites { seed: n }
            });
            let engine = open_engine(&fs).expect("the engine reopens after a crash");
            inspect_raw(&engine, &mut windows);
            let db = Database::open(engine, "PhotoApp", DatabaseOptions::default())
                .expect("the database reopens after a crash");
            let shown = verify(&db, acked);
            if acked <= 2 && db.schema_version() == 2 {
                resumed_schema_changes += 1;
            }
            *outcomes.entry((acked, shown)).or_insert(0) += 1;
            // And it keeps working.
            db.transact(&user_group(1), |tx| {
                tx.put(entity(9, &(90, vec!["z"], None)))
            })
            .unwrap();
            assert!(snap_now(&db)
                .get("Photo", &photo_key(1, 9))
                .unwrap()
                .is_some());
        }
        n += 1;
    }
    assert!(n > 50, "the workload took only {n} file operations");
    eprintln!(
        "indexing paused: {pause_indexing}: {n} crash points; (acknowledged, shown) steps: \
         {outcomes:?}; {windows:?}; {resumed_schema_changes} schema changes finished at reopen"
    );
    assert!(
        resumed_schema_changes > 0,
        "no unacknowledged schema change was finished at reopen: {outcomes:?}"
    );
    windows
}
