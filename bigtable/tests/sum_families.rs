//! Sum families (Cloud Bigtable's Int64 `Sum` aggregates): AddToCell adds to the cell
//! at its timestamp; the sum survives flushes, compactions, deletions and reopening.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use bigtable::{
    Engine, EngineOptions, Error, Mutation, ReadModifyWrite, TableSchema, TimestampRange,
};
use wal::fs::FaultyFs;

fn add(ts: i64, input: i64) -> Mutation {
    Mutation::AddToCell {
        family: b"sum".to_vec(),
        qualifier: b"n".to_vec(),
        timestamp: Some(ts),
        input,
    }
}

/// `(timestamp, sum)` of the row's cells, newest first.
fn sums(engine: &Engine, row: &[u8]) -> Vec<(i64, i64)> {
    let Some(row) = engine.read_row("t", row, None).unwrap() else {
        return Vec::new();
    };
    row.cells
        .iter()
        .map(|c| {
            (
                c.timestamp,
                i64::from_be_bytes(c.value.as_slice().try_into().unwrap()),
            )
        })
        .collect()
}

fn schema() -> TableSchema {
    let mut schema = TableSchema::with_families(["sum", "plain"]);
    schema.sum_families.insert("sum".into());
    schema
}

#[test]
fn adds_accumulate_per_timestamp_through_flushes_compactions_and_reopen() {
    let fs = FaultyFs::new();
    let options = || EngineOptions {
        background_maintenance: false,
        ..EngineOptions::tiny()
    };
    let engine = Engine::open(Arc::new(fs.clone()), "/db", options()).unwrap();
    engine.create_table("t", schema()).unwrap();
    for i in 0..50 {
        engine
            .mutate_row("t", b"r", &[add(1000, i), add(2000, 1)])
            .unwrap();
        if i % 10 == 9 {
            engine.flush().unwrap();
        }
    }
    assert_eq!(sums(&engine, b"r"), vec![(2000, 50), (1000, 1225)]);
    // A version limit (which the reader applies while reading) keeps whole sums, and a
    // timestamp range picks the older one.
    let newest = |filter: bigtable::RowFilter| {
        let row = engine.read_row("t", b"r", Some(&filter)).unwrap().unwrap();
        let c = &row.cells[0];
        (
            c.timestamp,
            i64::from_be_bytes(c.value.as_slice().try_into().unwrap()),
        )
    };
    use bigtable::RowFilter::{CellsPerColumnLimit, Chain, TimestampRange as Range};
    assert_eq!(newest(CellsPerColumnLimit(1)), (2000, 50));
    let before_2000 = Chain(vec![
        Range {
            start: 0,
            end: Some(2000),
        },
        CellsPerColumnLimit(1),
    ]);
    assert_eq!(newest(before_2000), (1000, 1225));
    engine.compact_all().unwrap();
    assert_eq!(sums(&engine, b"r"), vec![(2000, 50), (1000, 1225)]);

    // A deletion clears the sum up to it; later adds start again from zero.
    let delete = Mutation::DeleteFromColumn {
        family: b"sum".to_vec(),
        qualifier: b"n".to_vec(),
        range: TimestampRange {
            start: 1000,
            end: Some(1001),
        },
    };
    engine.mutate_row("t", b"r", &[delete]).unwrap();
    engine.mutate_row("t", b"r", &[add(1000, -7)]).unwrap();
    assert_eq!(sums(&engine, b"r"), vec![(2000, 50), (1000, -7)]);

    drop(engine);
    let engine = Engine::open(Arc::new(fs), "/db", options()).unwrap();
    assert_eq!(sums(&engine, b"r"), vec![(2000, 50), (1000, -7)]);
    assert!(engine.schema("t").unwrap().sum_families.contains("sum"));
}

#[test]
fn sum_and_plain_families_do_not_mix() {
    let engine = Engine::open(Arc::new(FaultyFs::new()), "/db", EngineOptions::tiny()).unwrap();
    engine.create_table("t", schema()).unwrap();
    let set_on_sum = Mutation::SetCell {
        family: b"sum".to_vec(),
        qualifier: b"n".to_vec(),
        timestamp: Some(1),
        value: vec![0; 8],
    };
    let add_on_plain = Mutation::AddToCell {
        family: b"plain".to_vec(),
        qualifier: b"n".to_vec(),
        timestamp: Some(1),
        input: 1,
    };
    for m in [set_on_sum, add_on_plain] {
        let err = engine.mutate_row("t", b"r", &[m]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    let increment = ReadModifyWrite::Increment {
        family: b"sum".to_vec(),
        qualifier: b"n".to_vec(),
        delta: 1,
    };
    assert!(matches!(
        engine.read_modify_write_row("t", b"r", &[increment]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(
        engine.read_row("t", b"r", None).unwrap().is_none(),
        "nothing was written"
    );
}
