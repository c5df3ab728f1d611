//! Overwritten versions of entities are kept for the version retention, so that reads
//! at past positions see them; then they are collected (each column keeps its newest
//! version older than the retention). A snapshot or a detached transaction read after
//! the retention is refused with `SnapshotTooOld` rather than answered from collected
//! data.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use bigtable::clock::ManualClock;
use bigtable::fs::FaultyFs;
use bigtable::{Engine, EngineOptions, GcRule};
use common::{user, user_group, PHOTO_APP};
use megastore::{Database, DatabaseOptions, Error, ReadMode, Value};

const MINUTE: i64 = 60_000_000;
const RETENTION: Duration = Duration::from_secs(3600);

fn open(clock: &Arc<ManualClock>) -> (Arc<Engine>, Database) {
    let options = EngineOptions {
        clock: clock.clone(),
        ..EngineOptions::tiny()
    };
    let engine = Arc::new(Engine::open(FaultyFs::new().shared(), "/db", options).unwrap());
    let options = DatabaseOptions {
        clock: clock.clone(),
        version_retention: RETENTION,
        ..DatabaseOptions::default()
    };
    let db = Database::open_with_schema(engine.clone(), PHOTO_APP, options).unwrap();
    (engine, db)
}

fn name(snapshot: &megastore::Snapshot<'_>) -> Result<Option<Value>, Error> {
    let found = snapshot.get("User", &[Value::Int64(1)])?;
    Ok(found.and_then(|u| u.get("name").cloned()))
}

fn rename(db: &Database, to: &str) {
    db.transact(&user_group(1), |tx| tx.put(user(1, to)))
        .unwrap();
}

#[test]
fn versions_are_kept_for_the_retention_then_collected_and_old_snapshots_refused() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000_000));
    let (engine, db) = open(&clock);
    let families = engine.schema("PhotoApp.User").unwrap().families;
    assert_eq!(families.get("p"), Some(&GcRule::KeepFor(RETENTION)));

    rename(&db, "ann");
    let old = db.read(&user_group(1), ReadMode::Snapshot).unwrap();
    let token = db.begin(&user_group(1)).unwrap();
    clock.advance(10 * MINUTE);
    rename(&db, "bo");
    clock.advance(10 * MINUTE);
    rename(&db, "cy");

    // Within the retention the past position still reads its own version.
    let ann = Some(Value::String("ann".into()));
    assert_eq!(name(&old).unwrap(), ann);
    assert_eq!(
        name(&db.read_at(&user_group(1), token).unwrap()).unwrap(),
        ann
    );

    // Past it, both are refused.
    clock.advance(2 * 60 * MINUTE);
    assert!(matches!(name(&old), Err(Error::SnapshotTooOld(_))));
    let late = db.read_at(&user_group(1), token).unwrap();
    assert!(matches!(name(&late), Err(Error::SnapshotTooOld(_))));

    // The overwritten versions are collected, through a compaction too; the newest stays.
    engine.flush().unwrap();
    engine.compact_all().unwrap();
    let row = megastore::keys::row_key(&db.schema(), "User", &[Value::Int64(1)]).unwrap();
    let versions = engine
        .read_row("PhotoApp.User", &row, None)
        .unwrap()
        .unwrap()
        .cells
        .iter()
        .filter(|c| c.family == b"p" && c.qualifier == b"User.name")
        .count();
    assert_eq!(versions, 1);
    let fresh = db.read(&user_group(1), ReadMode::Current).unwrap();
    assert_eq!(name(&fresh).unwrap(), Some(Value::String("cy".into())));
}
