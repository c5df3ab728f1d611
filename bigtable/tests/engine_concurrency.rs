//! The engine with its background maintenance thread: concurrent writers and snapshot
//! readers while flushes and compactions run, and writers stalled (then failing
//! cleanly) while a flush cannot finish.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bigtable::{Engine, EngineOptions, Error, Mutation, ReadRequest, RowSet, TableSchema};
use wal::fs::FaultyFs;
use wal::SyncPolicy;

fn set(value: &[u8]) -> Mutation {
    Mutation::SetCell {
        family: b"cf".to_vec(),
        qualifier: b"q".to_vec(),
        timestamp: Some(1),
        value: value.to_vec(),
    }
}

const WRITERS: usize = 4;
const ROWS_PER_WRITER: usize = 400;

/// Each writer writes its rows in order, so any consistent snapshot holds, per writer,
/// exactly rows `0..k` for some `k`.
fn assert_prefixes(rows: &[bigtable::Row]) -> Vec<usize> {
    let mut seen = vec![Vec::new(); WRITERS];
    for row in rows {
        let name = String::from_utf8(row.key.clone()).unwrap();
        let (w, i) = name.split_once('-').unwrap();
        seen[w[1..].parse::<usize>().unwrap()].push(i.parse::<usize>().unwrap());
    }
    seen.iter()
        .map(|ids| {
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            assert_eq!(
                sorted,
                (0..ids.len()).collect::<Vec<_>>(),
                "a snapshot saw a later write without an earlier one"
            );
            ids.len()
        })
        .collect()
}

#[test]
fn concurrent_writers_and_snapshot_readers_with_background_compaction() {
    let fs = FaultyFs::new();
    let options = EngineOptions {
        sync: SyncPolicy::EveryCommit,
        ..EngineOptions::tiny()
    };
    let engine = Engine::open(fs.shared(), "/db", options.clone()).unwrap();
    engine
        .create_table("t", TableSchema::with_families(["cf"]))
        .unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let engine = &engine;
                s.spawn(move || {
                    for i in 0..ROWS_PER_WRITER {
                        let row = format!("w{w}-{i:04}");
                        engine
                            .mutate_row("t", row.as_bytes(), &[set(&[w as u8; 40])])
                            .unwrap();
                    }
                })
            })
            .collect();
        let reader = s.spawn(|| {
            let mut snapshots = 0;
            while !done.load(Ordering::Acquire) {
                let snapshot = engine.snapshot("t").unwrap();
                let rows: Vec<_> = snapshot
                    .read_rows(&ReadRequest::default())
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_prefixes(&rows);
                snapshots += 1;
            }
            snapshots
        });
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
        assert!(reader.join().unwrap() > 0);
    });
    engine.wait_for_maintenance().unwrap();
    let stats = engine.stats();
    assert!(stats.flushes > 3 && stats.compactions > 0, "{stats:?}");
    let all = engine.read_rows("t", &ReadRequest::default()).unwrap();
    assert_eq!(assert_prefixes(&all), vec![ROWS_PER_WRITER; WRITERS]);
    engine.close().unwrap();
    let engine = Engine::open(fs.shared(), "/db", options).unwrap();
    let reopened = engine.read_rows("t", &ReadRequest::default()).unwrap();
    assert_eq!(reopened, all);
    let one = ReadRequest {
        rows: RowSet::keys([b"w2-0123".to_vec()]),
        ..ReadRequest::default()
    };
    assert_eq!(engine.read_rows("t", &one).unwrap().len(), 1);
}

#[test]
fn writers_stall_while_a_flush_cannot_finish_then_fail_cleanly_and_recover() {
    let fs = FaultyFs::new();
    let options = EngineOptions {
        sync: SyncPolicy::Never,
        max_frozen_memtables: 1,
        max_write_stall: Duration::from_millis(100),
        ..EngineOptions::tiny()
    };
    let engine = Engine::open(fs.shared(), "/db", options).unwrap();
    engine
        .create_table("t", TableSchema::with_families(["cf"]))
        .unwrap();
    // The flush's table sync blocks, so the frozen memtable stays and writers stall.
    fs.hold_syncs();
    let mut stalled = None;
    for i in 0..10_000 {
        match engine.mutate_row("t", format!("r{i:05}").as_bytes(), &[set(&[7; 64])]) {
            Ok(()) => {}
            Err(e) => {
                stalled = Some((i, e));
                break;
            }
        }
    }
    let (written, error) = stalled.expect("writes never stalled");
    assert!(matches!(error, Error::Stalled(_)), "{error}");
    assert!(engine.stats().throttled_writes > 0);
    fs.release_syncs();
    engine.wait_for_maintenance().unwrap();
    engine.mutate_row("t", b"after", &[set(b"x")]).unwrap();
    let rows = engine.read_rows("t", &ReadRequest::default()).unwrap();
    assert_eq!(rows.len(), written + 1, "every acknowledged write is there");
}

/// Read-your-writes: once a write returns, a read in the same thread sees it, even
/// while other writers hold earlier sequence numbers that have not finished yet.
#[test]
fn an_acknowledged_write_is_visible_to_the_next_read() {
    let engine = std::sync::Arc::new(
        Engine::open(
            std::sync::Arc::new(FaultyFs::new()),
            "/db",
            EngineOptions::tiny(),
        )
        .unwrap(),
    );
    engine
        .create_table("t", TableSchema::with_families(["cf"]))
        .unwrap();
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut unseen = Vec::new();
                for i in 0..ROWS_PER_WRITER {
                    let row = format!("w{w}-{i}").into_bytes();
                    engine.mutate_row("t", &row, &[set(b"v")]).unwrap();
                    if engine.read_row("t", &row, None).unwrap().is_none() {
                        unseen.push(i);
                    }
                }
                unseen
            })
        })
        .collect();
    for t in threads {
        assert_eq!(
            t.join().unwrap(),
            Vec::<usize>::new(),
            "writes a read missed"
        );
    }
}
