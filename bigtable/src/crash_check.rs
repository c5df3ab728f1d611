//! Seeded crash schedules for the engine, run by the test suite (a few hundred seeds)
//! and by `bt-tool crash-check` (as many as you like). A schedule writes random
//! mutations (also batches and check-and-mutate), flushes and compacts on a
//! [`FaultyFs`] with tiny sizes, so flushes, compactions and manifest switches happen
//! all the time; loses power at a random file operation; crashes (dropping or tearing
//! unsynced bytes); reopens; and checks that the table holds exactly the acknowledged
//! writes, plus possibly the one write in flight at the crash. Values are unique, so an
//! overwritten or deleted value that came back would be caught. Some schedules also lose
//! power during recovery. The same seed always gives the same schedule.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::clock::ManualClock;
use crate::engine::{Engine, EngineOptions, ReadRequest, RowMutations};
use crate::mutation::{Mutation, TimestampRange};
use crate::row_reader::Row;
use crate::schema::TableSchema;
use wal::fs::{CrashMode, FaultyFs};
use wal::rng::SplitMix64;

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Crash-and-reopen cycles per schedule.
    pub rounds: usize,
    /// Upper bound of file operations before the power goes out in a round.
    pub max_ops_before_crash: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            rounds: 3,
            max_ops_before_crash: 400,
        }
    }
}

/// Totals over schedules, to show they exercised something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleReport {
    pub acknowledged: u64,
    pub in_doubt_kept: u64,
    pub in_doubt_lost: u64,
    pub flushes: u64,
    pub compactions: u64,
    pub splits: u64,
}

impl std::ops::AddAssign for ScheduleReport {
    fn add_assign(&mut self, o: Self) {
        self.acknowledged += o.acknowledged;
        self.in_doubt_kept += o.in_doubt_kept;
        self.in_doubt_lost += o.in_doubt_lost;
        self.flushes += o.flushes;
        self.compactions += o.compactions;
        self.splits += o.splits;
    }
}

use crate::model::{apply, Model as TableModel};

/// `(family, qualifier, timestamp, value)`.
type CellTuple = (Vec<u8>, Vec<u8>, i64, Vec<u8>);
/// A table's rows as compared here.
type Rows = Vec<(Vec<u8>, Vec<CellTuple>)>;
/// Table -> its model.
type Model = BTreeMap<&'static str, TableModel>;

const DIR: &str = "/db";
/// Two tables share the commit log: the log may only be trimmed below what neither
/// still needs.
const TABLES: [&str; 2] = ["t", "u"];

enum Op {
    Mutate(&'static str, Vec<RowMutations>),
    CheckAndMutate(&'static str, Vec<u8>, Vec<Mutation>, Vec<Mutation>),
    Flush,
    CompactAll,
}

fn options() -> EngineOptions {
    EngineOptions {
        background_maintenance: false,
        clock: Arc::new(ManualClock::new(1_000_000)),
        memtable_bytes: 1500,
        target_file_bytes: 800,
        level1_bytes: 2000,
        level_multiplier: 2,
        l0_compaction_trigger: 2,
        log_segment_bytes: 1024,
        tablet_split_bytes: 1000,
        ..EngineOptions::tiny()
    }
}

/// Runs one schedule; `Err` describes the violated invariant.
pub fn run_schedule(seed: u64, config: &ScheduleConfig) -> Result<ScheduleReport, String> {
    let fs = FaultyFs::new();
    let mut rng = SplitMix64::new(seed);
    let mut report = ScheduleReport::default();
    let engine = Engine::open(fs.shared(), DIR, options()).map_err(|e| e.to_string())?;
    let mut model = Model::new();
    for table in TABLES {
        engine
            .create_table(table, TableSchema::with_families(["a", "b"]))
            .map_err(|e| e.to_string())?;
        model.insert(table, TableModel::new());
    }
    drop(engine);
    let mut in_doubt: Option<Op> = None;
    let mut next_value = 0u64;
    for round in 0..=config.rounds {
        let fail = |what: String| format!("seed {seed}, round {round}: {what}");
        if rng.one_in(4) {
            fs.power_loss_after(rng.below(8));
            drop(Engine::open(fs.shared(), DIR, options()));
            fs.crash(CrashMode::TornWrites {
                seed: rng.next_u64(),
            });
        }
        let engine = Engine::open(fs.shared(), DIR, options())
            .map_err(|e| fail(format!("reopen failed: {e}")))?;
        check(&engine, &mut model, in_doubt.take(), &mut report).map_err(fail)?;
        if round == config.rounds {
            break;
        }
        fs.power_loss_after(rng.between(1, config.max_ops_before_crash));
        loop {
            let op = random_op(&mut rng, &mut next_value);
            match run_op(&engine, &op) {
                Ok(matched) => {
                    apply_op(&mut model, &op, matched);
                    report.acknowledged += 1;
                }
                Err(_) => {
                    in_doubt = Some(op);
                    break;
                }
            }
        }
        let stats = engine.stats();
        report.flushes += stats.flushes;
        report.compactions += stats.compactions;
        report.splits += stats.splits;
        drop(engine);
        let mode = if rng.one_in(2) {
            CrashMode::DropUnsynced
        } else {
            CrashMode::TornWrites {
                seed: rng.next_u64(),
            }
        };
        fs.crash(mode);
    }
    Ok(report)
}

fn random_mutations(rng: &mut SplitMix64, next_value: &mut u64) -> Vec<Mutation> {
    let families: [&[u8]; 2] = [b"a", b"b"];
    (0..rng.between(1, 4))
        .map(|_| {
            let family = families[rng.below(2) as usize].to_vec();
            let qualifier = vec![b'q', b'0' + rng.below(3) as u8];
            match rng.below(10) {
                0 => Mutation::DeleteFromRow,
                1 => Mutation::DeleteFromFamily { family },
                2 => {
                    let start = rng.below(4) as i64;
                    Mutation::DeleteFromColumn {
                        family,
                        qualifier,
                        range: TimestampRange {
                            start,
                            end: Some(start + 2),
                        },
                    }
                }
                _ => {
                    *next_value += 1;
                    let mut value = next_value.to_be_bytes().to_vec();
                    value.resize(8 + rng.below(64) as usize, b'v');
                    Mutation::SetCell {
                        family,
                        qualifier,
                        timestamp: Some(rng.below(4) as i64),
                        value,
                    }
                }
            }
        })
        .collect()
}

fn random_op(rng: &mut SplitMix64, next_value: &mut u64) -> Op {
    let row = |rng: &mut SplitMix64| format!("row{:02}", rng.below(12)).into_bytes();
    // Mostly the first table, so the tables fill (and flush) at different times.
    let table = TABLES[usize::from(rng.one_in(4))];
    match rng.below(50) {
        0..=2 => Op::Flush,
        3 => Op::CompactAll,
        4..=7 => {
            let r = row(rng);
            Op::CheckAndMutate(
                table,
                r,
                random_mutations(rng, next_value),
                random_mutations(rng, next_value),
            )
        }
        n => {
            let rows = if n < 12 { 1 + rng.below(3) } else { 1 };
            let batch = (0..rows)
                .map(|_| RowMutations {
                    row: row(rng),
                    mutations: random_mutations(rng, next_value),
                })
                .collect();
            Op::Mutate(table, batch)
        }
    }
}

/// Runs an operation; for check-and-mutate returns whether the predicate matched.
fn run_op(engine: &Engine, op: &Op) -> crate::Result<bool> {
    match op {
        Op::Mutate(table, batch) if batch.len() == 1 => {
            engine.mutate_row(table, &batch[0].row, &batch[0].mutations)?;
        }
        Op::Mutate(table, batch) => {
            for result in engine.mutate_rows(table, batch)? {
                result?;
            }
        }
        Op::CheckAndMutate(table, row, if_true, if_false) => {
            return engine.check_and_mutate_row(table, row, None, if_true, if_false);
        }
        Op::Flush => engine.flush()?,
        Op::CompactAll => engine.compact_all()?,
    }
    Ok(false)
}

fn apply_op(model: &mut Model, op: &Op, matched: bool) {
    match op {
        Op::Mutate(table, batch) => {
            let model = model.entry(table).or_default();
            for entry in batch {
                for m in &entry.mutations {
                    apply(model, &entry.row, m, 0);
                }
            }
        }
        Op::CheckAndMutate(table, row, if_true, if_false) => {
            let model = model.entry(table).or_default();
            for m in if matched { if_true } else { if_false } {
                apply(model, row, m, 0);
            }
        }
        Op::Flush | Op::CompactAll => {}
    }
}

/// The model as `(row, [(family, qualifier, timestamp, value)])`, newest first.
fn expected_rows(model: &TableModel) -> Rows {
    let mut rows: BTreeMap<Vec<u8>, Vec<_>> = BTreeMap::new();
    for ((row, family, qualifier), versions) in model {
        for (ts, value) in versions.iter().rev() {
            rows.entry(row.clone()).or_default().push((
                family.clone(),
                qualifier.clone(),
                *ts,
                value.clone(),
            ));
        }
    }
    rows.into_iter().collect()
}

fn actual_rows(rows: Vec<Row>) -> Rows {
    rows.into_iter()
        .map(|r| {
            let cells = r
                .cells
                .into_iter()
                .map(|c| (c.family, c.qualifier, c.timestamp, c.value))
                .collect();
            (r.key, cells)
        })
        .collect()
}

/// Every table's rows, as `expected_rows` shapes them.
type Contents = Vec<Rows>;

fn expected_contents(model: &Model) -> Contents {
    TABLES
        .iter()
        .map(|t| model.get(t).map(expected_rows).unwrap_or_default())
        .collect()
}

/// The engine must hold the acknowledged state, or that state plus the in-doubt
/// operation; the model becomes whichever it holds.
fn check(
    engine: &Engine,
    model: &mut Model,
    in_doubt: Option<Op>,
    report: &mut ScheduleReport,
) -> Result<(), String> {
    let mut actual = Contents::new();
    for table in TABLES {
        let rows = engine
            .read_rows(table, &ReadRequest::default())
            .map_err(|e| format!("reading {table} after reopen failed: {e}"))?;
        actual.push(actual_rows(rows));
    }
    if actual == expected_contents(model) {
        report.in_doubt_lost += u64::from(in_doubt.is_some());
        return Ok(());
    }
    if let Some(op) = in_doubt {
        let matched = match &op {
            Op::CheckAndMutate(table, row, ..) => model
                .get(table)
                .is_some_and(|m| m.keys().any(|(r, _, _)| r == row)),
            _ => false,
        };
        for candidate_op in outcomes(&op) {
            let mut candidate = model.clone();
            apply_op(&mut candidate, &candidate_op, matched);
            if actual == expected_contents(&candidate) {
                report.in_doubt_kept += 1;
                *model = candidate;
                return Ok(());
            }
        }
    }
    Err(format!(
        "after reopen the tables differ from every acceptable state: {}",
        first_difference(&actual, &expected_contents(model))
    ))
}

/// What an interrupted operation may have left applied: all of a single-row operation;
/// for a batch, any subset of its rows (each row is atomic, the batch is not: rows in
/// different tablets are separate log records).
fn outcomes(op: &Op) -> Vec<Op> {
    match op {
        Op::Mutate(table, batch) if batch.len() > 1 && batch.len() <= 10 => (1..1u32
            << batch.len())
            .map(|mask| {
                let subset = batch
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, e)| e.clone())
                    .collect();
                Op::Mutate(table, subset)
            })
            .collect(),
        Op::Mutate(table, batch) => vec![Op::Mutate(table, batch.clone())],
        Op::CheckAndMutate(table, row, if_true, if_false) => vec![Op::CheckAndMutate(
            table,
            row.clone(),
            if_true.clone(),
            if_false.clone(),
        )],
        Op::Flush => vec![Op::Flush],
        Op::CompactAll => vec![Op::CompactAll],
    }
}

/// The first row where two contents differ, with values shown by their unique number.
fn first_difference(actual: &Contents, expected: &Contents) -> String {
    let show = |row: Option<&(Vec<u8>, Vec<CellTuple>)>| match row {
        None => "nothing".to_string(),
        Some((key, cells)) => {
            let cells: Vec<String> = cells
                .iter()
                .map(|(f, q, ts, v)| {
                    let id = v
                        .get(..8)
                        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
                    format!(
                        "{}:{}@{ts}=#{id}",
                        String::from_utf8_lossy(f),
                        String::from_utf8_lossy(q)
                    )
                })
                .collect();
            format!("{} {cells:?}", String::from_utf8_lossy(key))
        }
    };
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        if a != e {
            let at = a.iter().zip(e).take_while(|(x, y)| x == y).count();
            return format!(
                "table {}: read {}, expected {}",
                TABLES[i],
                show(a.get(at)),
                show(e.get(at))
            );
        }
    }
    "table count differs".into()
}
