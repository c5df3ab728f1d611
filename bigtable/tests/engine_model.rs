//! Model-based test of the engine: random mutations, check-and-mutate, read-modify-write,
//! reads with random row sets, filters, limits and directions, snapshots, flushes,
//! compactions and reopens, compared against a plain in-memory model of the Bigtable
//! data model (a BTreeMap), version GC included.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use bigtable::clock::{Clock, ManualClock};
use bigtable::gc_rule::CellVersion;
use bigtable::model::{apply, Model};
use bigtable::{
    Cell, Engine, EngineOptions, GcRule, Mutation, ReadModifyWrite, ReadRequest, Row, RowFilter,
    RowMutations, RowRange, RowSet, TableSchema, TimestampRange,
};
use proptest::prelude::*;
use wal::fs::FaultyFs;

const ROWS: &[&[u8]] = &[b"r0", b"r1", b"r1\0", b"r2", b"r3", b"s"];
const START: i64 = 1_000_000_000;

fn schema() -> TableSchema {
    let mut s = TableSchema::default();
    s.families.insert("a".into(), GcRule::KeepAll);
    s.families.insert("b".into(), GcRule::MaxVersions(2));
    s.families
        .insert("c".into(), GcRule::MaxAge(Duration::from_micros(50)));
    s.families
        .insert("d".into(), GcRule::KeepFor(Duration::from_micros(50)));
    s
}

fn row() -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::select(ROWS).prop_map(|r| r.to_vec())
}

fn family() -> impl Strategy<Value = Vec<u8>> {
    const FAMILIES: &[&[u8]] = &[b"a", b"b", b"c", b"d"];
    proptest::sample::select(FAMILIES).prop_map(|f| f.to_vec())
}

fn qualifier() -> impl Strategy<Value = Vec<u8>> {
    const QUALIFIERS: &[&[u8]] = &[b"x", b"y", b""];
    proptest::sample::select(QUALIFIERS).prop_map(|q| q.to_vec())
}

fn qualifier_bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        Just(Bound::Unbounded),
        qualifier().prop_map(Bound::Included),
        qualifier().prop_map(Bound::Excluded),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0u8..3, 0..12)
}

/// Timestamps near the clock, so max-age GC matters; `None`: server time.
fn timestamp() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        1 => Just(None),
        4 => (0i64..120).prop_map(|d| Some(START + d)),
    ]
}

/// Mutations. Partial column deletes are not applied to the max-versions family: there a
/// deletion can uncover versions that GC already collected, which Bigtable (and this
/// engine) leave to the timing of compactions (see docs).
fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (family(), qualifier(), timestamp(), value()).prop_map(|(family, qualifier, timestamp, value)| {
            Mutation::SetCell { family, qualifier, timestamp, value }
        }),
        2 => (prop_oneof![Just(b"a".to_vec()), Just(b"c".to_vec())], qualifier(), 0i64..120, proptest::option::of(0i64..40))
            .prop_map(|(family, qualifier, start, end)| Mutation::DeleteFromColumn {
                family,
                qualifier,
                range: TimestampRange { start: START + start, end: end.map(|len| START + start + len) },
            }),
        1 => family().prop_map(|family| Mutation::DeleteFromFamily { family }),
        1 => Just(Mutation::DeleteFromRow),
    ]
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        1 => Just(Bound::Unbounded),
        2 => row().prop_map(Bound::Included),
        2 => row().prop_map(Bound::Excluded),
    ]
}

fn column_range() -> impl Strategy<Value = RowFilter> {
    (family(), qualifier_bound(), qualifier_bound()).prop_map(|(family, start, end)| {
        RowFilter::ColumnRange {
            family: String::from_utf8(family).unwrap(),
            start,
            end,
        }
    })
}

/// Filters shaped like a point read of some columns' newest versions (what Megastore
/// reads): a chain of columns, maybe a timestamp range, then a per-column limit. The
/// engine reads only the listed columns and stops after the last.
fn columns_filter() -> impl Strategy<Value = Option<RowFilter>> {
    (
        proptest::collection::vec(column_range(), 1..4),
        proptest::option::of((0i64..120, proptest::option::of(1i64..60))),
        1usize..3,
    )
        .prop_map(|(columns, range, limit)| {
            let mut chain = vec![RowFilter::Interleave(columns)];
            if let Some((t, len)) = range {
                chain.push(RowFilter::TimestampRange {
                    start: START + t,
                    end: len.map(|l| START + t + l),
                });
            }
            chain.push(RowFilter::CellsPerColumnLimit(limit));
            Some(RowFilter::Chain(chain))
        })
}

fn filter() -> impl Strategy<Value = Option<RowFilter>> {
    let leaf = prop_oneof![
        Just(RowFilter::PassAll),
        Just(RowFilter::StripValue),
        (1usize..3).prop_map(RowFilter::CellsPerColumnLimit),
        (1usize..4).prop_map(RowFilter::CellsPerRowLimit),
        (0usize..3).prop_map(RowFilter::CellsPerRowOffset),
        Just(RowFilter::FamilyNameRegex("a|b".into())),
        Just(RowFilter::QualifierRegex(b"x".to_vec())),
        column_range(),
        Just(RowFilter::ValueRegex(b"\\x00.*".to_vec())),
        Just(RowFilter::RowKeyRegex(b"r1.*".to_vec())),
        (0i64..120, proptest::option::of(1i64..60)).prop_map(|(t, len)| {
            RowFilter::TimestampRange {
                start: START + t,
                end: len.map(|l| START + t + l),
            }
        }),
    ];
    let composed = leaf.prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..3).prop_map(RowFilter::Chain),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(RowFilter::Interleave),
            (inner.clone(), inner.clone()).prop_map(|(p, t)| RowFilter::Condition {
                predicate: Box::new(p),
                true_filter: Some(Box::new(t)),
                false_filter: None,
            }),
        ]
    });
    proptest::option::of(composed)
}

fn read_request() -> impl Strategy<Value = ReadRequest> {
    let rows = prop_oneof![
        1 => Just(RowSet::all()),
        2 => (proptest::collection::vec(row(), 0..3), proptest::collection::vec((bound(), bound()), 0..3)).prop_map(|(keys, ranges)| RowSet {
            keys,
            ranges: ranges.into_iter().map(|(start, end)| RowRange { start, end }).collect(),
        }),
    ];
    (rows, filter(), proptest::option::of(1u64..4), any::<bool>()).prop_map(
        |(rows, filter, limit, reverse)| ReadRequest {
            rows,
            filter,
            limit,
            reverse,
        },
    )
}

fn rmw_rule() -> impl Strategy<Value = ReadModifyWrite> {
    prop_oneof![
        (family(), qualifier(), value()).prop_map(|(family, qualifier, value)| {
            ReadModifyWrite::Append {
                family,
                qualifier,
                value,
            }
        }),
        (family(), -3i64..4).prop_map(|(family, delta)| ReadModifyWrite::Increment {
            family,
            qualifier: b"n".to_vec(),
            delta
        }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Mutate(Vec<u8>, Vec<Mutation>),
    MutateRows(Vec<(Vec<u8>, Vec<Mutation>)>),
    CheckAndMutate(Vec<u8>, Option<RowFilter>, Vec<Mutation>, Vec<Mutation>),
    ReadModifyWrite(Vec<u8>, Vec<ReadModifyWrite>),
    Read(ReadRequest),
    /// A point read (`Engine::read_row`), which may stop before the row's end.
    ReadRow(Vec<u8>, Option<RowFilter>),
    TakeSnapshot,
    ReadSnapshot(ReadRequest),
    AdvanceClock(i64),
    Flush,
    CompactAll,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let mutations = || proptest::collection::vec(mutation(), 1..4);
    prop_oneof![
        12 => (row(), mutations()).prop_map(|(r, m)| Op::Mutate(r, m)),
        2 => proptest::collection::vec((row(), mutations()), 1..4).prop_map(Op::MutateRows),
        2 => (row(), filter(), proptest::collection::vec(mutation(), 0..3), proptest::collection::vec(mutation(), 0..3))
            .prop_map(|(r, p, t, f)| Op::CheckAndMutate(r, p, t, f)),
        2 => (row(), proptest::collection::vec(rmw_rule(), 1..3)).prop_map(|(r, rules)| Op::ReadModifyWrite(r, rules)),
        6 => read_request().prop_map(Op::Read),
        3 => (row(), prop_oneof![filter(), columns_filter()]).prop_map(|(r, f)| Op::ReadRow(r, f)),
        1 => Just(Op::TakeSnapshot),
        2 => read_request().prop_map(Op::ReadSnapshot),
        2 => (1i64..40).prop_map(Op::AdvanceClock),
        2 => Just(Op::Flush),
        1 => Just(Op::CompactAll),
        1 => Just(Op::Reopen),
    ]
}

/// The model's rows, GC rules applied at time `now`, before filtering.
fn model_rows(model: &Model, now: i64) -> BTreeMap<Vec<u8>, Vec<Cell>> {
    let schema = schema();
    let mut rows: BTreeMap<Vec<u8>, Vec<Cell>> = BTreeMap::new();
    for ((row, family, qualifier), versions) in model {
        let rule = schema.gc_rule(family).unwrap();
        let newest_first: Vec<(&i64, &Vec<u8>)> = versions.iter().rev().collect();
        for (i, &(ts, value)) in newest_first.iter().enumerate() {
            let cell = CellVersion {
                version: i,
                timestamp: *ts,
                newer: i.checked_sub(1).map(|n| *newest_first[n].0),
            };
            if rule.keeps(cell, now) {
                rows.entry(row.clone()).or_default().push(Cell {
                    family: family.clone(),
                    qualifier: qualifier.clone(),
                    timestamp: *ts,
                    value: value.clone(),
                    labels: Vec::new(),
                });
            }
        }
    }
    rows
}

fn in_bounds(row: &[u8], r: &RowRange) -> bool {
    let after = match &r.start {
        Bound::Included(s) => row >= s.as_slice(),
        Bound::Excluded(s) => row > s.as_slice(),
        Bound::Unbounded => true,
    };
    let before = match &r.end {
        Bound::Included(e) => row <= e.as_slice(),
        Bound::Excluded(e) => row < e.as_slice(),
        Bound::Unbounded => true,
    };
    after && before
}

fn model_read(model: &Model, now: i64, req: &ReadRequest) -> Vec<Row> {
    let filter = req.filter.as_ref().map(|f| f.compile().unwrap());
    let everything = req.rows.keys.is_empty() && req.rows.ranges.is_empty();
    let mut rows: Vec<Row> = model_rows(model, now)
        .into_iter()
        .filter(|(key, _)| {
            everything
                || req.rows.keys.contains(key)
                || req.rows.ranges.iter().any(|r| in_bounds(key, r))
        })
        .filter_map(|(key, cells)| {
            let cells = match &filter {
                Some(f) => f.apply(&key, cells),
                None => cells,
            };
            (!cells.is_empty()).then_some(Row { key, cells })
        })
        .collect();
    if req.reverse {
        rows.reverse();
    }
    rows.truncate(req.limit.unwrap_or(u64::MAX) as usize);
    rows
}

fn model_cells(model: &Model, row: &[u8], now: i64) -> Vec<Cell> {
    model_rows(model, now).remove(row).unwrap_or_default()
}

/// `(family, qualifier, timestamp, value)`.
type CellTuple = (Vec<u8>, Vec<u8>, i64, Vec<u8>);

/// The cells a read-modify-write writes, in column order; `None` if it must fail.
fn model_read_modify_write(
    model: &Model,
    row: &[u8],
    rules: &[ReadModifyWrite],
    now: i64,
) -> Option<Vec<CellTuple>> {
    let mut newest = BTreeMap::new();
    for c in model_cells(model, row, now) {
        newest
            .entry((c.family, c.qualifier))
            .or_insert((c.timestamp, c.value));
    }
    let mut written = BTreeMap::new();
    for rule in rules {
        let (column, new) = match rule {
            ReadModifyWrite::Append {
                family,
                qualifier,
                value,
            } => ((family.clone(), qualifier.clone()), Err(value)),
            ReadModifyWrite::Increment {
                family,
                qualifier,
                delta,
            } => ((family.clone(), qualifier.clone()), Ok(*delta)),
        };
        let (ts, old) = newest.get(&column).cloned().unwrap_or((now, Vec::new()));
        let value = match new {
            Err(suffix) => [old, suffix.clone()].concat(),
            Ok(delta) => {
                let current = match old.len() {
                    0 => 0,
                    8 => i64::from_be_bytes(old.try_into().unwrap()),
                    _ => return None,
                };
                current.wrapping_add(delta).to_be_bytes().to_vec()
            }
        };
        newest.insert(column.clone(), (ts.max(now), value.clone()));
        written.insert(column, (ts.max(now), value));
    }
    Some(
        written
            .into_iter()
            .map(|((f, q), (ts, v))| (f, q, ts, v))
            .collect(),
    )
}

struct Harness {
    fs: FaultyFs,
    clock: Arc<ManualClock>,
    engine: Option<Engine>,
}

impl Harness {
    fn open(&mut self) {
        self.engine = None;
        // Sizes small enough that a few hundred bytes of writes spread over levels.
        let options = EngineOptions {
            background_maintenance: false,
            clock: self.clock.clone(),
            memtable_bytes: 700,
            target_file_bytes: 300,
            level1_bytes: 600,
            level_multiplier: 2,
            l0_compaction_trigger: 2,
            ..EngineOptions::tiny()
        };
        self.engine = Some(Engine::open(self.fs.shared(), "/db", options).unwrap());
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new(START + 60));
    let mut h = Harness {
        fs: FaultyFs::new(),
        clock: clock.clone(),
        engine: None,
    };
    h.open();
    h.engine().create_table("t", schema()).unwrap();
    let mut model = Model::new();
    let mut snapshot: Option<(bigtable::TableSnapshot, Model, i64)> = None;
    for op in ops {
        let now = clock.now_micros();
        match op {
            Op::Mutate(row, muts) => {
                h.engine().mutate_row("t", &row, &muts).unwrap();
                for m in &muts {
                    apply(&mut model, &row, m, now);
                }
            }
            Op::MutateRows(batch) => {
                let entries: Vec<RowMutations> = batch
                    .iter()
                    .map(|(row, mutations)| RowMutations {
                        row: row.clone(),
                        mutations: mutations.clone(),
                    })
                    .collect();
                let results = h.engine().mutate_rows("t", &entries).unwrap();
                prop_assert!(results.iter().all(Result::is_ok));
                for (row, muts) in &batch {
                    for m in muts {
                        apply(&mut model, row, m, now);
                    }
                }
            }
            Op::CheckAndMutate(row, predicate, if_true, if_false) => {
                let cells = model_cells(&model, &row, now);
                let expected = match &predicate {
                    Some(p) => !p.compile().unwrap().apply(&row, cells).is_empty(),
                    None => !cells.is_empty(),
                };
                let matched = h
                    .engine()
                    .check_and_mutate_row("t", &row, predicate.as_ref(), &if_true, &if_false)
                    .unwrap();
                prop_assert_eq!(matched, expected);
                for m in if matched { &if_true } else { &if_false } {
                    apply(&mut model, &row, m, now);
                }
            }
            Op::ReadModifyWrite(row, rules) => {
                let expected = model_read_modify_write(&model, &row, &rules, now);
                let result = h.engine().read_modify_write_row("t", &row, &rules);
                prop_assert_eq!(result.is_err(), expected.is_none(), "{:?}", result);
                if let Ok(written) = result {
                    let cells: Vec<_> = written
                        .cells
                        .iter()
                        .map(|c| {
                            (
                                c.family.clone(),
                                c.qualifier.clone(),
                                c.timestamp,
                                c.value.clone(),
                            )
                        })
                        .collect();
                    prop_assert_eq!(Some(cells), expected);
                    for c in written.cells {
                        let m = Mutation::SetCell {
                            family: c.family,
                            qualifier: c.qualifier,
                            timestamp: Some(c.timestamp),
                            value: c.value,
                        };
                        apply(&mut model, &row, &m, now);
                    }
                }
            }
            Op::Read(req) => {
                let got = h.engine().read_rows("t", &req).unwrap();
                prop_assert_eq!(got, model_read(&model, now, &req), "{:?}", req);
            }
            Op::ReadRow(row, filter) => {
                let got = h.engine().read_row("t", &row, filter.as_ref()).unwrap();
                let one = ReadRequest {
                    rows: RowSet {
                        keys: vec![row.clone()],
                        ranges: Vec::new(),
                    },
                    filter: filter.clone(),
                    ..ReadRequest::default()
                };
                let expected = model_read(&model, now, &one).into_iter().next();
                prop_assert_eq!(got, expected, "{:?} {:?}", row, filter);
            }
            Op::TakeSnapshot => {
                snapshot = Some((h.engine().snapshot("t").unwrap(), model.clone(), now));
            }
            Op::ReadSnapshot(req) => {
                if let Some((snap, snap_model, snap_now)) = &snapshot {
                    let got: Vec<Row> = snap
                        .read_rows(&req)
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap();
                    prop_assert_eq!(
                        got,
                        model_read(snap_model, *snap_now, &req),
                        "snapshot {:?}",
                        req
                    );
                }
            }
            Op::AdvanceClock(d) => clock.advance(d),
            Op::Flush => h.engine().flush().unwrap(),
            Op::CompactAll => h.engine().compact_all().unwrap(),
            Op::Reopen => {
                snapshot = None;
                h.open();
            }
        }
    }
    let everything = ReadRequest::default();
    let now = clock.now_micros();
    prop_assert_eq!(
        h.engine().read_rows("t", &everything).unwrap(),
        model_read(&model, now, &everything)
    );
    h.open();
    prop_assert_eq!(
        h.engine().read_rows("t", &everything).unwrap(),
        model_read(&model, now, &everything)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn engine_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
