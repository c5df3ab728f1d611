//! Rows read through the merge of a memtable and SSTables equal a plain model of the
//! Bigtable data model, at the latest state and at an earlier snapshot.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::Path;

use bigtable::cache::BlockCache;
use bigtable::memtable::Memtable;
use bigtable::merge::{EntryCursor, MergingCursor};
use bigtable::model::{apply, Model};
use bigtable::mutation::{to_entries, Mutation, TimestampRange};
use bigtable::row_reader::{next_visible_row, Row};
use bigtable::sstable::{Table, TableBuilder, TableOptions};
use proptest::prelude::*;
use wal::fs::{FaultyFs, FileSystem};

/// `(family, qualifier, timestamp, value)`.
type CellTuple = (Vec<u8>, Vec<u8>, i64, Vec<u8>);
type Rows = Vec<(Vec<u8>, Vec<CellTuple>)>;

fn name(options: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::select(options).prop_map(|b| b.to_vec())
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let family = || name(&[b"a", b"b", b""]);
    let qualifier = || name(&[b"x", b"y", b"", b"\0"]);
    prop_oneof![
        6 => (family(), qualifier(), 0i64..5, proptest::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(family, qualifier, ts, value)| Mutation::SetCell { family, qualifier, timestamp: Some(ts), value }),
        2 => (family(), qualifier(), 0i64..5, proptest::option::of(0i64..6)).prop_map(|(family, qualifier, start, end)| {
            Mutation::DeleteFromColumn { family, qualifier, range: TimestampRange { start, end } }
        }),
        1 => family().prop_map(|family| Mutation::DeleteFromFamily { family }),
        1 => Just(Mutation::DeleteFromRow),
    ]
}

/// The model's rows in the engine's output shape.
fn model_rows(model: &Model) -> Rows {
    let mut rows: BTreeMap<Vec<u8>, Vec<_>> = BTreeMap::new();
    for ((row, family, qualifier), versions) in model {
        let cells = rows.entry(row.clone()).or_default();
        for (ts, value) in versions.iter().rev() {
            cells.push((family.clone(), qualifier.clone(), *ts, value.clone()));
        }
    }
    rows.into_iter().collect()
}

fn engine_rows(cursor: &mut dyn EntryCursor, snapshot: u64) -> Rows {
    cursor.seek_to_first().unwrap();
    let mut rows = Vec::new();
    while let Some(Row { key, cells }) = next_visible_row(cursor, snapshot).unwrap() {
        rows.push((
            key,
            cells
                .into_iter()
                .map(|c| (c.family, c.qualifier, c.timestamp, c.value))
                .collect(),
        ));
    }
    rows
}

fn build_table(
    fs: &FaultyFs,
    path: &Path,
    entries: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> std::sync::Arc<Table> {
    let mut builder = TableBuilder::create(
        fs,
        path,
        TableOptions {
            block_size: 128,
            ..TableOptions::default()
        },
    )
    .unwrap();
    for (k, v) in entries {
        builder.add(k, v).unwrap();
    }
    builder.finish().unwrap();
    Table::open(
        fs,
        path,
        path.to_string_lossy().len() as u64,
        BlockCache::new(1 << 20),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn merged_rows_equal_the_model_now_and_at_a_snapshot(
        writes in proptest::collection::vec((name(&[b"r1", b"r2", b"r\0"]), proptest::collection::vec(mutation(), 1..4), 0usize..3), 1..40),
        snapshot_after in any::<prop::sample::Index>(),
    ) {
        let snapshot_after = snapshot_after.index(writes.len());
        let mut model = Model::new();
        let mut snapshot_model = Model::new();
        let mut snapshot_seq = 0;
        let mut seq = 1;
        let memtable = Memtable::new(1000);
        let mut table_entries = [BTreeMap::new(), BTreeMap::new()];
        for (i, (row, mutations, source)) in writes.iter().enumerate() {
            for (key, value) in to_entries(row, mutations, seq, 0) {
                match source {
                    0 => memtable.insert(key, value, seq),
                    s => { table_entries[s - 1].insert(key, value); }
                }
            }
            for m in mutations {
                apply(&mut model, row, m, 0);
            }
            seq += mutations.len() as u64;
            if i == snapshot_after {
                snapshot_model = model.clone();
                snapshot_seq = seq - 1;
            }
        }
        let fs = FaultyFs::new();
        fs.create_dir_all(Path::new("/t")).unwrap();
        let newer = build_table(&fs, Path::new("/t/1.sst"), &table_entries[0]);
        let older = build_table(&fs, Path::new("/t/22.sst"), &table_entries[1]);
        let mut cursor = MergingCursor::new(vec![Box::new(memtable.iter()), Box::new(newer.iter()), Box::new(older.iter())]);
        prop_assert_eq!(engine_rows(&mut cursor, u64::MAX), model_rows(&model));
        prop_assert_eq!(engine_rows(&mut cursor, snapshot_seq), model_rows(&snapshot_model));
    }
}
