//! Compaction choices visible from outside: level-0 tables whose rows do not overlap move
//! down without being rewritten; overlapping ones are merged. Either way every row reads
//! back.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use bigtable::{Engine, EngineOptions, Mutation, ReadRequest, TableSchema};
use wal::fs::FaultyFs;

const ROWS: u64 = 2000;

fn open() -> Engine {
    let options = EngineOptions {
        background_maintenance: false,
        ..EngineOptions::tiny()
    };
    let engine = Engine::open(Arc::new(FaultyFs::new()), "/db", options).unwrap();
    engine
        .create_table("t", TableSchema::with_families(["cf"]))
        .unwrap();
    engine
}

fn write(engine: &Engine, row: u64) {
    let m = Mutation::SetCell {
        family: b"cf".to_vec(),
        qualifier: Vec::new(),
        timestamp: Some(1),
        value: row.to_be_bytes().repeat(8),
    };
    engine
        .mutate_row("t", format!("row{row:06}").as_bytes(), &[m])
        .unwrap();
}

fn assert_all_rows_read_back(engine: &Engine) {
    let rows = engine.read_rows("t", &ReadRequest::default()).unwrap();
    let keys: Vec<Vec<u8>> = rows.iter().map(|r| r.key.clone()).collect();
    let expected: Vec<Vec<u8>> = (0..ROWS)
        .map(|r| format!("row{r:06}").into_bytes())
        .collect();
    assert_eq!(keys, expected);
    for row in &rows {
        let n: u64 = std::str::from_utf8(&row.key[3..]).unwrap().parse().unwrap();
        assert_eq!(row.cells[0].value, n.to_be_bytes().repeat(8));
    }
}

#[test]
fn a_sequential_load_moves_tables_down_without_rewriting_them() {
    let engine = open();
    (0..ROWS).for_each(|r| write(&engine, r));
    engine.flush().unwrap();
    let deeper: usize = engine.levels("t").unwrap()[1..]
        .iter()
        .map(|l| l.files)
        .sum();
    assert!(
        deeper > 0,
        "level 0 was compacted: {:?}",
        engine.levels("t")
    );
    assert_eq!(engine.stats().compaction_bytes, 0, "{:?}", engine.stats());
    assert_all_rows_read_back(&engine);
}

#[test]
fn overlapping_tables_are_merged() {
    let engine = open();
    // Every memtable holds rows from the whole key range.
    (0..ROWS).for_each(|i| write(&engine, (i * 7919) % ROWS));
    engine.flush().unwrap();
    assert!(engine.stats().compaction_bytes > 0, "{:?}", engine.stats());
    assert_all_rows_read_back(&engine);
}
