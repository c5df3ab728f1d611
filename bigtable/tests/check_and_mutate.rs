//! Conditional writes in one commit: one that carries other rows of the table along
//! (written whatever the predicate says, in the same commit-log record, as durable as
//! it is; in another tablet, visible no later than it), and several of distinct rows
//! judged together and written with one fsync; and read-then-write updates of several
//! rows, each decided on what its filter read, written the same way.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use bigtable::{
    Durability, Engine, EngineOptions, Error, Mutation, RowCheck, RowFilter, RowMutations, RowRead,
    TableSchema,
};
use wal::fs::{CrashMode, FaultyFs};

fn set(value: &[u8]) -> Mutation {
    Mutation::SetCell {
        family: b"cf".to_vec(),
        qualifier: b"q".to_vec(),
        timestamp: Some(0),
        value: value.to_vec(),
    }
}

fn along(rows: &[&str], value: &[u8]) -> Vec<RowMutations> {
    rows.iter()
        .map(|r| RowMutations {
            row: r.as_bytes().to_vec(),
            mutations: vec![set(value)],
        })
        .collect()
}

fn value(engine: &Engine, row: &str) -> Option<Vec<u8>> {
    let row = engine.read_row("t", row.as_bytes(), None).unwrap()?;
    Some(row.cells[0].value.clone())
}

fn open(fs: &FaultyFs) -> Engine {
    let engine = Engine::open(fs.shared(), "/db", EngineOptions::default()).unwrap();
    match engine.create_table("t", TableSchema::with_families(["cf"])) {
        Ok(()) | Err(Error::AlreadyExists(_)) => engine,
        Err(e) => panic!("{e}"),
    }
}

/// Matches iff the row's cell holds `expected`.
fn holds(expected: &[u8]) -> RowFilter {
    RowFilter::ValueRange {
        start: std::ops::Bound::Included(expected.to_vec()),
        end: std::ops::Bound::Included(expected.to_vec()),
    }
}

#[test]
fn rows_along_are_written_whatever_the_predicate_says_in_one_record() {
    let fs = FaultyFs::new();
    let engine = open(&fs);
    engine.mutate_row("t", b"meta", &[set(b"v1")]).unwrap();
    let records = |e: &Engine| e.log_bytes();

    let before = records(&engine);
    let matched = engine
        .check_and_mutate_row_along(
            "t",
            b"meta",
            Some(&holds(b"v1")),
            &[set(b"v2")],
            &[],
            &along(&["a", "b"], b"x"),
            Durability::Buffered,
        )
        .unwrap();
    assert!(matched);
    assert_eq!(value(&engine, "meta").as_deref(), Some(&b"v2"[..]));
    assert_eq!(value(&engine, "a").as_deref(), Some(&b"x"[..]));
    assert_eq!(value(&engine, "b").as_deref(), Some(&b"x"[..]));
    let one_record = records(&engine) - before;

    // The predicate fails: the conditional write does not happen, the rows along do.
    let matched = engine
        .check_and_mutate_row_along(
            "t",
            b"meta",
            Some(&holds(b"v1")),
            &[set(b"v3")],
            &[],
            &along(&["a", "c"], b"y"),
            Durability::Synced,
        )
        .unwrap();
    assert!(!matched);
    assert_eq!(value(&engine, "meta").as_deref(), Some(&b"v2"[..]));
    assert_eq!(value(&engine, "a").as_deref(), Some(&b"y"[..]));
    assert_eq!(value(&engine, "c").as_deref(), Some(&b"y"[..]));

    // One record: the same rows written as two commits take more log bytes.
    let before = records(&engine);
    engine.mutate_rows("t", &along(&["a", "b"], b"x")).unwrap();
    engine.mutate_row("t", b"meta", &[set(b"v2")]).unwrap();
    assert!(records(&engine) - before > one_record);
}

#[test]
fn an_invalid_row_along_writes_nothing() {
    let fs = FaultyFs::new();
    let engine = open(&fs);
    let mut rows = along(&["a"], b"x");
    rows.push(RowMutations {
        row: b"b".to_vec(),
        mutations: vec![Mutation::SetCell {
            family: b"no-such-family".to_vec(),
            qualifier: b"q".to_vec(),
            timestamp: Some(0),
            value: b"x".to_vec(),
        }],
    });
    let result = engine.check_and_mutate_row_along(
        "t",
        b"meta",
        None,
        &[],
        &[set(b"m")],
        &rows,
        Durability::Synced,
    );
    assert!(result.is_err(), "{result:?}");
    assert_eq!(value(&engine, "meta"), None);
    assert_eq!(value(&engine, "a"), None);
}

#[test]
fn rows_along_are_as_durable_as_the_conditional_write() {
    let fs = FaultyFs::new();
    {
        let engine = open(&fs);
        engine
            .check_and_mutate_row_along(
                "t",
                b"meta",
                None,
                &[],
                &[set(b"m")],
                &along(&["a", "b"], b"x"),
                Durability::Synced,
            )
            .unwrap();
        fs.crash(CrashMode::DropUnsynced);
    }
    let engine = open(&fs);
    assert_eq!(value(&engine, "meta").as_deref(), Some(&b"m"[..]));
    assert_eq!(value(&engine, "a").as_deref(), Some(&b"x"[..]));
    assert_eq!(value(&engine, "b").as_deref(), Some(&b"x"[..]));
}

fn check(row: &str, expected: &[u8], new: &[u8]) -> RowCheck {
    RowCheck {
        row: row.as_bytes().to_vec(),
        predicate: Some(holds(expected)),
        if_true: vec![set(new)],
        if_false: Vec::new(),
    }
}

#[test]
fn checks_of_several_rows_are_judged_each_and_written_with_one_fsync() {
    let fs = FaultyFs::new();
    let engine = open(&fs);
    for row in ["a", "b", "c"] {
        engine
            .mutate_row("t", row.as_bytes(), &[set(b"old")])
            .unwrap();
    }
    let syncs = engine.log_syncs();
    let matched = engine
        .check_and_mutate_rows(
            "t",
            &[
                check("a", b"old", b"new"),
                check("b", b"other", b"new"),
                check("c", b"old", b"new"),
                RowCheck {
                    row: b"d".to_vec(),
                    predicate: None,
                    if_true: Vec::new(),
                    if_false: vec![set(b"fresh")],
                },
            ],
            Durability::Synced,
        )
        .unwrap();
    assert_eq!(matched, [true, false, true, false]);
    assert_eq!(engine.log_syncs() - syncs, 1, "one fsync for the batch");
    let values: Vec<_> = ["a", "b", "c", "d"]
        .map(|r| value(&engine, r).unwrap())
        .into();
    assert_eq!(values, [&b"new"[..], b"old", b"new", b"fresh"]);

    fs.crash(CrashMode::DropUnsynced);
    drop(engine);
    let engine = open(&fs);
    assert_eq!(value(&engine, "c").as_deref(), Some(&b"new"[..]));
    assert_eq!(value(&engine, "d").as_deref(), Some(&b"fresh"[..]));
}

#[test]
fn a_batch_naming_one_row_twice_writes_nothing() {
    let fs = FaultyFs::new();
    let engine = open(&fs);
    engine.mutate_row("t", b"a", &[set(b"old")]).unwrap();
    let result = engine.check_and_mutate_rows(
        "t",
        &[
            check("a", b"old", b"one"),
            check("b", b"", b"x"),
            check("a", b"old", b"two"),
        ],
        Durability::Synced,
    );
    assert!(
        matches!(result, Err(Error::InvalidArgument(_))),
        "{result:?}"
    );
    assert_eq!(value(&engine, "a").as_deref(), Some(&b"old"[..]));
    assert_eq!(value(&engine, "b"), None);
}

/// Appends "+" to each row's value (starting from "" where there is none), unless it is
/// "stop"; answers with what the filter selected.
fn grow(cells: Vec<bigtable::Cell>) -> (Vec<Vec<u8>>, Vec<Mutation>) {
    let seen: Vec<Vec<u8>> = cells.into_iter().map(|c| c.value).collect();
    let old = seen.first().cloned().unwrap_or_default();
    let write = if old == b"stop" {
        Vec::new()
    } else {
        vec![set(&[old.as_slice(), b"+"].concat())]
    };
    (seen, write)
}

#[test]
fn updates_of_several_rows_decide_on_what_they_read_and_share_one_fsync() {
    let fs = FaultyFs::new();
    let engine = open(&fs);
    engine.mutate_row("t", b"a", &[set(b"x")]).unwrap();
    engine.mutate_row("t", b"b", &[set(b"stop")]).unwrap();
    let only_q = RowFilter::QualifierRegex(b"q".to_vec());
    let blocks = RowFilter::BlockAll;
    let reads = [
        RowRead {
            row: b"a",
            filter: Some(&only_q),
        },
        RowRead {
            row: b"b",
            filter: None,
        },
        RowRead {
            row: b"c",
            filter: Some(&blocks),
        },
    ];
    let syncs = engine.log_syncs();
    let mut order = Vec::new();
    let seen = engine
        .update_rows("t", &reads, Durability::Synced, |i, cells| {
            order.push(i);
            grow(cells)
        })
        .unwrap();
    assert_eq!(order, [0, 1, 2]);
    assert_eq!(
        seen,
        [vec![b"x".to_vec()], vec![b"stop".to_vec()], Vec::new()]
    );
    assert_eq!(engine.log_syncs() - syncs, 1, "one fsync for the batch");

    fs.crash(CrashMode::DropUnsynced);
    drop(engine);
    let engine = open(&fs);
    assert_eq!(value(&engine, "a").as_deref(), Some(&b"x+"[..]));
    assert_eq!(value(&engine, "b").as_deref(), Some(&b"stop"[..]));
    assert_eq!(value(&engine, "c").as_deref(), Some(&b"+"[..]));
}

#[test]
fn an_update_batch_with_a_repeated_row_or_an_invalid_write_writes_nothing() {
    let fs = FaultyFs::new();
    let engine = open(&fs);
    let read = |row: &'static [u8]| RowRead { row, filter: None };
    let repeated = engine.update_rows(
        "t",
        &[read(b"a"), read(b"b"), read(b"a")],
        Durability::Synced,
        |_, cells| grow(cells),
    );
    assert!(
        matches!(repeated, Err(Error::InvalidArgument(_))),
        "{repeated:?}"
    );
    let unknown_family = Mutation::SetCell {
        family: b"nope".to_vec(),
        qualifier: b"q".to_vec(),
        timestamp: Some(0),
        value: b"v".to_vec(),
    };
    let invalid = engine.update_rows(
        "t",
        &[read(b"a"), read(b"b")],
        Durability::Synced,
        |i, _| {
            (
                (),
                if i == 0 {
                    vec![set(b"v")]
                } else {
                    vec![unknown_family.clone()]
                },
            )
        },
    );
    assert!(invalid.is_err(), "{invalid:?}");
    assert_eq!(value(&engine, "a"), None);
    assert_eq!(value(&engine, "b"), None);
}

/// The counter in row `row` of the table (0 if absent), read in one snapshot with
/// the other rows.
fn counters(engine: &Engine, rows: [&str; 2]) -> [u64; 2] {
    let found = engine
        .read_rows("t", &bigtable::ReadRequest::default())
        .unwrap();
    rows.map(|row| {
        found
            .iter()
            .find(|r| r.key == row.as_bytes())
            .and_then(|r| r.cells.first())
            .map_or(0, |c| {
                u64::from_be_bytes(c.value.clone().try_into().unwrap())
            })
    })
}

#[test]
fn rows_along_in_another_tablet_are_visible_no_later_than_the_conditional_write() {
    // Either row first: the tablets' order must not matter.
    for rows in [["a-state", "z-data"], ["z-state", "a-data"]] {
        let fs = FaultyFs::new();
        let options = EngineOptions {
            background_maintenance: false,
            ..EngineOptions::tiny()
        };
        let engine = Engine::open(fs.shared(), "/db", options).unwrap();
        engine
            .create_table_with_splits("t", TableSchema::with_families(["cf"]), &[b"m".to_vec()])
            .unwrap();
        let arrived = fs.stats().syncs as usize;
        fs.hold_syncs();
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let along = [RowMutations {
                    row: rows[1].as_bytes().to_vec(),
                    mutations: vec![set(&1u64.to_be_bytes())],
                }];
                engine.check_and_mutate_row_along(
                    "t",
                    rows[0].as_bytes(),
                    None,
                    &[],
                    &[set(&1u64.to_be_bytes())],
                    &along,
                    Durability::Synced,
                )
            });
            // The rows are in two tablets: two commits, each synced before it shows.
            fs.wait_for_sync_arrivals(arrived + 1);
            let before = counters(&engine, rows);
            fs.release_one_sync();
            fs.wait_for_sync_arrivals(arrived + 2);
            let between = counters(&engine, rows);
            fs.release_syncs();
            writer.join().unwrap().unwrap();
            assert_eq!(before, [0, 0]);
            assert_eq!(between, [0, 1], "the row along goes first ({rows:?})");
        });
        assert_eq!(counters(&engine, rows), [1, 1]);
    }
}
