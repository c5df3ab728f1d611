//! Crash safety: whatever the crash point, the log reads back a prefix of what was
//! appended that includes everything acknowledged.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use wal::crash_check::{run_schedule, ScheduleConfig, ScheduleReport};
use wal::fs::{CrashMode, FaultyFs};
use wal::{LogReader, SyncPolicy, Wal, WalOptions};

#[test]
fn a_thousand_seeded_crash_schedules_hold_every_invariant() {
    let config = ScheduleConfig::default();
    let mut total = ScheduleReport::default();
    for seed in 0..1000 {
        match run_schedule(seed, &config) {
            Ok(report) => total += report,
            Err(violation) => panic!("{violation}\nreplay: cargo run -p tools --bin wal-tool -- crash-check --start {seed} --seeds 1"),
        }
    }
    eprintln!("crash schedules: {total:?}");
    // The schedules must actually exercise crashes that tear tails and lose records.
    assert!(total.acknowledged > 1000, "{total:?}");
    assert!(total.torn_tails > 50, "{total:?}");
    assert!(
        total.appended > total.recovered,
        "some unacknowledged records should be lost: {total:?}"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..300).prop_map(Op::Append),
        1 => (30_000usize..70_000).prop_map(Op::Append),
        2 => Just(Op::Sync),
    ]
}

fn payload(index: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (index * 31 + i * 7) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random appends and sync points, power loss after a random number of file
    /// operations, a crash that drops or tears unsynced bytes, reopen.
    #[test]
    fn recovered_records_are_a_prefix_including_every_acknowledged_one(
        ops in proptest::collection::vec(op(), 1..60),
        every_commit in any::<bool>(),
        power_loss_after in 0u64..150,
        torn_seed in proptest::option::of(any::<u64>()),
    ) {
        let fs = FaultyFs::new();
        let sync = if every_commit { SyncPolicy::EveryCommit } else { SyncPolicy::Never };
        let options = WalOptions::default().with_sync(sync).with_segment_size(8192);
        let (wal, _) = Wal::open(fs.shared(), "/log", options).unwrap();
        fs.power_loss_after(power_loss_after);
        let mut attempted = Vec::new();
        let mut acknowledged = 0;
        for op in &ops {
            match *op {
                Op::Append(len) => {
                    attempted.push(payload(attempted.len(), len));
                    match wal.append(attempted.last().unwrap()) {
                        Ok(lsn) => {
                            prop_assert_eq!(lsn, attempted.len() as u64);
                            if every_commit { acknowledged = attempted.len(); }
                        }
                        Err(_) => break,
                    }
                }
                Op::Sync => match wal.sync() {
                    Ok(()) => acknowledged = attempted.len(),
                    Err(_) => break,
                },
            }
        }
        drop(wal);
        fs.crash(torn_seed.map_or(CrashMode::DropUnsynced, |seed| CrashMode::TornWrites { seed }));

        let mut recovery = Wal::recover(fs.shared(), "/log", WalOptions::default(), 0).unwrap();
        let mut read = Vec::new();
        while let Some((lsn, record)) = recovery.next_record().unwrap() {
            prop_assert_eq!(lsn, read.len() as u64 + 1);
            read.push(record);
        }
        let (wal, report) = recovery.finish().unwrap();
        prop_assert!(read.len() >= acknowledged, "lost acknowledged records: read {} of {}", read.len(), acknowledged);
        prop_assert!(read.len() <= attempted.len());
        prop_assert_eq!(&read[..], &attempted[..read.len()]);
        prop_assert_eq!(report.next_lsn, read.len() as u64 + 1);
        // The reopened log continues exactly after what survived.
        prop_assert_eq!(wal.append(b"after").unwrap(), read.len() as u64 + 1);
    }
}

/// Many threads append until the power goes out; after the crash every acknowledged
/// record is present exactly once, and each thread's surviving records are a prefix of
/// what it attempted.
#[test]
fn concurrent_appenders_lose_nothing_acknowledged_at_a_power_loss() {
    const THREADS: usize = 8;
    for seed in 0..20u64 {
        let fs = FaultyFs::new();
        let options = WalOptions::default().with_segment_size(16 << 10);
        let (wal, _) = Wal::open(fs.shared(), "/log", options).unwrap();
        let wal = Arc::new(wal);
        fs.power_loss_after(50 + seed * 37);
        let acked: Vec<Vec<u32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let wal = wal.clone();
                    s.spawn(move || {
                        let mut acked = Vec::new();
                        for seq in 0u32.. {
                            match wal.append(&tagged(t, seq)) {
                                Ok(_) => acked.push(seq),
                                Err(_) => break,
                            }
                        }
                        acked
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        drop(wal);
        fs.crash(CrashMode::TornWrites { seed });

        let recovery = Wal::recover(fs.shared(), "/log", WalOptions::default(), 0).unwrap();
        let mut next_seq = [0u32; THREADS];
        let mut seen = HashSet::new();
        for record in recovery {
            let (_, payload) = record.unwrap();
            let (t, seq) = untag(&payload).expect("a record that was never appended");
            assert_eq!(
                seq, next_seq[t],
                "seed {seed}: thread {t} records out of order or with a hole"
            );
            next_seq[t] += 1;
            assert!(seen.insert((t, seq)));
        }
        for (t, acked) in acked.iter().enumerate() {
            for seq in acked {
                assert!(
                    seen.contains(&(t, *seq)),
                    "seed {seed}: acknowledged ({t}, {seq}) lost"
                );
            }
        }
    }
}

fn tagged(thread: usize, seq: u32) -> Vec<u8> {
    let mut v = vec![thread as u8];
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend(std::iter::repeat_n(
        thread as u8 ^ seq as u8,
        20 + (seq as usize % 50),
    ));
    v
}

fn untag(bytes: &[u8]) -> Option<(usize, u32)> {
    let t = *bytes.first()? as usize;
    let seq = u32::from_le_bytes(bytes.get(1..5)?.try_into().ok()?);
    (bytes == tagged(t, seq).as_slice()).then_some((t, seq))
}

#[test]
fn reopening_after_a_torn_tail_cuts_it_and_appends_after_the_last_good_record() {
    let fs = FaultyFs::new();
    let (wal, _) = Wal::open(fs.shared(), "/log", WalOptions::default()).unwrap();
    for i in 0..10u8 {
        wal.append(&[i; 50]).unwrap();
    }
    drop(wal);
    let segment = Path::new("/log/00000000000000000001.wal");
    let mut reader = LogReader::open(fs.shared(), Path::new("/log"), 0).unwrap();
    while reader.next_record().unwrap().is_some() {}
    let len = reader.append_position().unwrap().1 as usize;
    fs.truncate_file(segment, len - 20).unwrap();

    let (wal, report) = Wal::open(fs.shared(), "/log", WalOptions::default()).unwrap();
    let tail = report.torn_tail.expect("the cut record is a torn tail");
    assert_eq!(
        tail.offset,
        (len - 57) as u64,
        "the tail starts at the damaged record"
    );
    assert_eq!(report.next_lsn, 10);
    assert_eq!(wal.append(b"new").unwrap(), 10);
    drop(wal);
    fs.crash(CrashMode::DropUnsynced);
    let records: Vec<_> = Wal::recover(fs.shared(), "/log", WalOptions::default(), 0)
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect();
    assert_eq!(records.len(), 10);
    assert_eq!(records[8], vec![8u8; 50]);
    assert_eq!(records[9], b"new");
}
