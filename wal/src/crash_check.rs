//! Seeded crash schedules for the log, run by the test suite (a few hundred seeds) and by
//! `wal-tool crash-check` (as many as you like). A schedule appends random records (some
//! spanning several blocks) to a log on a [`FaultyFs`], with random sync points,
//! checkpoints and segment rotations, loses power at a random operation, crashes (dropping
//! or tearing unsynced bytes), reopens, and checks:
//!
//! - the records read back are exactly a prefix of the records appended, in LSN order;
//! - that prefix includes every record whose append (or a later `sync`) returned `Ok`;
//! - records lost in a crash never reappear later;
//! - a reader started at any LSN returns exactly the matching suffix.
//!
//! Some schedules also lose power during recovery itself. The same seed always produces
//! the same schedule, so a failing seed is a reproducible bug report.

use std::path::Path;

use crate::format::BLOCK_SIZE;
use crate::fs::{CrashMode, FaultyFs, SharedFs};
use crate::rng::SplitMix64;
use crate::{LogReader, Lsn, SyncPolicy, Wal, WalOptions};

/// The shape of the schedules.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Crash-and-reopen cycles per schedule.
    pub rounds: usize,
    /// Upper bound of appends in one round.
    pub max_appends_per_round: u64,
    /// Small segments force frequent rotation.
    pub segment_size: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            rounds: 3,
            max_appends_per_round: 60,
            segment_size: 4096,
        }
    }
}

/// Totals over one schedule, to show the schedule exercised something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleReport {
    pub appended: u64,
    pub acknowledged: u64,
    pub recovered: u64,
    pub torn_tails: u64,
}

impl std::ops::AddAssign for ScheduleReport {
    fn add_assign(&mut self, o: Self) {
        self.appended += o.appended;
        self.acknowledged += o.acknowledged;
        self.recovered += o.recovered;
        self.torn_tails += o.torn_tails;
    }
}

/// What the schedule knows about the log's contents.
struct Model {
    /// First LSN that must still be readable (records below were checkpointed away).
    checkpoint: Lsn,
    /// Records appended with `Ok`, by LSN - 1.
    records: Vec<Vec<u8>>,
    /// A record whose append failed: it may or may not have reached the disk.
    in_doubt: Option<Vec<u8>>,
    /// Records below this LSN must survive any crash.
    durable_end: Lsn,
}

const DIR: &str = "/db/wal";

/// Runs one schedule; `Err` describes the violated invariant.
pub fn run_schedule(seed: u64, config: &ScheduleConfig) -> Result<ScheduleReport, String> {
    let fs = FaultyFs::new();
    let mut rng = SplitMix64::new(seed);
    let mut model = Model {
        checkpoint: 1,
        records: Vec::new(),
        in_doubt: None,
        durable_end: 1,
    };
    let mut report = ScheduleReport::default();
    for round in 0..=config.rounds {
        let fail = |what: String| format!("seed {seed}, round {round}: {what}");
        if rng.one_in(4) {
            lose_power_during_recovery(&fs, &mut rng, config);
        }
        let recovered =
            check_recovery(&fs, config, &mut model, &mut rng, &mut report).map_err(fail)?;
        report.recovered += recovered;
        if round == config.rounds {
            break;
        }
        run_round(&fs, &mut model, &mut rng, config, &mut report).map_err(fail)?;
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

fn options(config: &ScheduleConfig, sync: SyncPolicy) -> WalOptions {
    WalOptions::default()
        .with_segment_size(config.segment_size)
        .with_sync(sync)
}

fn lose_power_during_recovery(fs: &FaultyFs, rng: &mut SplitMix64, config: &ScheduleConfig) {
    fs.power_loss_after(rng.below(4));
    if let Ok(recovery) = Wal::recover(
        fs.shared(),
        DIR,
        options(config, SyncPolicy::EveryCommit),
        0,
    ) {
        let _ = recovery.finish();
    }
    let seed = rng.next_u64();
    fs.crash(CrashMode::TornWrites { seed });
}

/// Replays the whole log and checks it against the model; the model becomes what was read.
fn check_recovery(
    fs: &FaultyFs,
    config: &ScheduleConfig,
    model: &mut Model,
    rng: &mut SplitMix64,
    report: &mut ScheduleReport,
) -> Result<u64, String> {
    let shared: SharedFs = fs.shared();
    let sync = SyncPolicy::EveryCommit;
    let mut recovery = Wal::recover(shared.clone(), DIR, options(config, sync), 0)
        .map_err(|e| format!("recover failed: {e}"))?;
    let mut read: Vec<(Lsn, Vec<u8>)> = Vec::new();
    while let Some(record) = recovery
        .next_record()
        .map_err(|e| format!("replay failed: {e}"))?
    {
        read.push(record);
    }
    let (wal, recovery_report) = recovery
        .finish()
        .map_err(|e| format!("finish failed: {e}"))?;
    report.torn_tails += u64::from(recovery_report.torn_tail.is_some());
    drop(wal);

    let first = read.first().map_or(recovery_report.next_lsn, |r| r.0);
    if first > model.checkpoint {
        return Err(format!(
            "log starts at LSN {first}, but LSN {} was never checkpointed",
            model.checkpoint
        ));
    }
    let end = recovery_report.next_lsn;
    if end < model.durable_end {
        return Err(format!(
            "log ends before LSN {end}, but every LSN below {} was acknowledged",
            model.durable_end
        ));
    }
    for (i, (lsn, payload)) in read.iter().enumerate() {
        if *lsn != first + i as Lsn {
            return Err(format!(
                "LSN {lsn} out of sequence (expected {})",
                first + i as Lsn
            ));
        }
        let expected = expected_record(model, *lsn)
            .ok_or_else(|| format!("LSN {lsn} read back but never appended (or lost earlier)"))?;
        if expected != payload.as_slice() {
            return Err(format!("LSN {lsn} read back with different contents"));
        }
    }
    if let Some(doubt) = model.in_doubt.take() {
        if end > model.records.len() as Lsn + 1 {
            model.records.push(doubt);
        }
    }
    model.records.truncate((end - 1) as usize);
    model.durable_end = end;
    check_reader_from(shared, model, first, end, rng.between(first, end))?;
    Ok(read.len() as u64)
}

fn expected_record(model: &Model, lsn: Lsn) -> Option<&[u8]> {
    let index = usize::try_from(lsn.checked_sub(1)?).ok()?;
    match model.records.get(index) {
        Some(r) => Some(r),
        None if index == model.records.len() => model.in_doubt.as_deref(),
        None => None,
    }
}

fn check_reader_from(
    fs: SharedFs,
    model: &Model,
    first: Lsn,
    end: Lsn,
    start: Lsn,
) -> Result<(), String> {
    let reader = LogReader::open(fs, Path::new(DIR), start).map_err(|e| e.to_string())?;
    let mut expect = start.max(first);
    for record in reader {
        let (lsn, payload) = record.map_err(|e| format!("reader from {start}: {e}"))?;
        if lsn != expect || Some(payload.as_slice()) != expected_record(model, lsn) {
            return Err(format!(
                "reader from LSN {start} returned LSN {lsn}, expected {expect}"
            ));
        }
        expect += 1;
    }
    if expect != end {
        return Err(format!(
            "reader from LSN {start} stopped at {expect}, log ends at {end}"
        ));
    }
    Ok(())
}

fn run_round(
    fs: &FaultyFs,
    model: &mut Model,
    rng: &mut SplitMix64,
    config: &ScheduleConfig,
    report: &mut ScheduleReport,
) -> Result<(), String> {
    let sync = if rng.one_in(2) {
        SyncPolicy::EveryCommit
    } else {
        SyncPolicy::Never
    };
    let (wal, _) = Wal::open(fs.shared(), DIR, options(config, sync))
        .map_err(|e| format!("open failed: {e}"))?;
    fs.power_loss_after(rng.between(1, 3 * config.max_appends_per_round));
    for _ in 0..rng.between(1, config.max_appends_per_round) {
        let payload = random_record(rng);
        report.appended += 1;
        match wal.append(&payload) {
            Ok(lsn) => {
                let expected = model.records.len() as Lsn + 1;
                if lsn != expected {
                    return Err(format!("append returned LSN {lsn}, expected {expected}"));
                }
                model.records.push(payload);
                if sync == SyncPolicy::EveryCommit {
                    model.durable_end = lsn + 1;
                    report.acknowledged += 1;
                }
            }
            Err(_) => {
                model.in_doubt = Some(payload);
                break;
            }
        }
        if rng.one_in(6) && wal.sync().is_ok() {
            model.durable_end = model.records.len() as Lsn + 1;
        }
        if rng.one_in(10) {
            let upto = rng.between(model.checkpoint, model.durable_end);
            if wal.truncate_before(upto).is_ok() {
                model.checkpoint = upto;
            }
        }
    }
    Ok(())
}

/// Mostly small records, some spanning blocks, a few empty.
fn random_record(rng: &mut SplitMix64) -> Vec<u8> {
    let len = match rng.below(20) {
        0 => 0,
        1 => rng.between(BLOCK_SIZE as u64 / 2, 3 * BLOCK_SIZE as u64),
        2..=5 => rng.between(200, 4000),
        _ => rng.between(1, 200),
    };
    let mut payload = vec![0u8; len as usize];
    rng.fill(&mut payload);
    payload
}
