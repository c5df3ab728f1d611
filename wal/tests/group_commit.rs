//! Group commit: concurrent appends share fsyncs; every acknowledged record is read back
//! once, in LSN order; failures poison the log instead of losing writes silently.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wal::fs::{CrashMode, FaultyFs, RealFs, SharedFs};
use wal::{Error, LogReader, SyncPolicy, Wal, WalOptions};

fn read_all(fs: SharedFs, dir: &Path) -> Vec<(u64, Vec<u8>)> {
    LogReader::open(fs, dir, 0)
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn spin_until(mut condition: impl FnMut() -> bool) {
    while !condition() {
        std::thread::yield_now();
    }
}

#[test]
fn records_queued_behind_a_slow_fsync_share_the_next_one() {
    const FOLLOWERS: u64 = 31;
    let fs = FaultyFs::new();
    let (wal, _) = Wal::open(fs.shared(), "/log", WalOptions::default()).unwrap();
    fs.hold_syncs();
    std::thread::scope(|s| {
        s.spawn(|| wal.append(b"leader").unwrap());
        fs.wait_for_held_syncs(1);
        for i in 0..FOLLOWERS {
            let wal = &wal;
            s.spawn(move || wal.append(format!("follower {i}").as_bytes()).unwrap());
        }
        spin_until(|| wal.next_lsn() == FOLLOWERS + 2);
        fs.release_syncs();
    });
    let stats = wal.stats();
    assert_eq!(stats.records, FOLLOWERS + 1);
    assert_eq!(
        (stats.batches, stats.syncs),
        (2, 2),
        "one fsync for the leader, one for all followers"
    );
    assert_eq!(wal.durable_lsn(), FOLLOWERS + 2);
}

fn concurrent_appends(fs: SharedFs, dir: &Path, threads: usize, per_thread: usize) {
    let options = WalOptions::default().with_segment_size(256 << 10);
    let (wal, _) = Wal::open(fs.clone(), dir, options).unwrap();
    let wal = Arc::new(wal);
    let acked: BTreeMap<u64, Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let wal = wal.clone();
                s.spawn(move || {
                    (0..per_thread)
                        .map(|i| {
                            let payload = format!("thread {t} record {i} {}", "x".repeat(i % 90))
                                .into_bytes();
                            (wal.append(&payload).unwrap(), payload)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let total = (threads * per_thread) as u64;
    assert_eq!(acked.len() as u64, total, "every append got a distinct LSN");
    assert_eq!(*acked.keys().next().unwrap(), 1);
    assert_eq!(*acked.keys().last().unwrap(), total);
    let stats = wal.stats();
    assert!(stats.syncs <= total, "{stats:?}");
    drop(wal);
    let read = read_all(fs, dir);
    assert_eq!(read.len() as u64, total);
    for (lsn, payload) in read {
        assert_eq!(acked.get(&lsn), Some(&payload), "LSN {lsn}");
    }
}

#[test]
fn sixteen_threads_every_acknowledged_lsn_read_back_once_in_order() {
    let fs = FaultyFs::new();
    concurrent_appends(fs.shared(), Path::new("/log"), 16, 300);
}

#[test]
fn concurrent_appends_on_the_real_file_system() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_appends(RealFs::shared(), &dir.path().join("log"), 8, 150);
}

#[test]
fn a_failed_fsync_fails_the_append_and_poisons_the_log() {
    let fs = FaultyFs::new();
    let (wal, _) = Wal::open(fs.shared(), "/log", WalOptions::default()).unwrap();
    wal.append(b"durable").unwrap();
    fs.fail_next_syncs(1);
    let err = wal.append(b"in doubt").unwrap_err();
    assert!(err.to_string().contains("injected fsync failure"), "{err}");
    assert!(matches!(wal.append(b"refused"), Err(Error::Poisoned(_))));
    assert!(wal.sync().is_err());
    drop(wal);
    fs.crash(CrashMode::DropUnsynced);
    let (wal, report) = Wal::open(fs.shared(), "/log", WalOptions::default()).unwrap();
    assert_eq!(
        report.next_lsn, 2,
        "the unsynced record is gone after the crash"
    );
    assert_eq!(wal.append(b"again").unwrap(), 2);
}

#[test]
fn a_failed_write_fails_the_append() {
    let fs = FaultyFs::new();
    let (wal, _) = Wal::open(fs.shared(), "/log", WalOptions::default()).unwrap();
    fs.fail_next_appends(1);
    assert!(wal.append(b"x").is_err());
    assert!(matches!(wal.append(b"y"), Err(Error::Poisoned(_))));
}

#[test]
fn never_policy_does_not_sync_until_asked() {
    let fs = FaultyFs::new();
    let options = WalOptions::default().with_sync(SyncPolicy::Never);
    let (wal, _) = Wal::open(fs.shared(), "/log", options).unwrap();
    for i in 0..10u8 {
        wal.append(&[i]).unwrap();
    }
    assert_eq!(wal.stats().syncs, 0);
    assert_eq!(wal.durable_lsn(), 1);
    wal.sync().unwrap();
    assert_eq!(wal.durable_lsn(), 11);
    wal.append(b"lost").unwrap();
    drop(wal);
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(read_all(fs.shared(), Path::new("/log")).len(), 10);
}

#[test]
fn interval_policy_syncs_in_the_background() {
    let fs = FaultyFs::new();
    let options = WalOptions::default().with_sync(SyncPolicy::Interval(Duration::from_millis(1)));
    let (wal, _) = Wal::open(fs.shared(), "/log", options).unwrap();
    wal.append(b"a").unwrap();
    wal.append(b"b").unwrap();
    spin_until(|| wal.durable_lsn() == 3);
    drop(wal);
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(read_all(fs.shared(), Path::new("/log")).len(), 2);
}

#[test]
fn close_makes_everything_durable() {
    let fs = FaultyFs::new();
    let options = WalOptions::default().with_sync(SyncPolicy::Never);
    let (wal, _) = Wal::open(fs.shared(), "/log", options).unwrap();
    wal.append(b"a").unwrap();
    wal.close().unwrap();
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(read_all(fs.shared(), Path::new("/log")).len(), 1);
}

#[test]
fn an_oversized_record_is_refused_and_the_log_stays_usable() {
    let fs = FaultyFs::new();
    let options = WalOptions {
        max_record_size: 100,
        ..Default::default()
    };
    let (wal, _) = Wal::open(fs.shared(), "/log", options).unwrap();
    assert!(matches!(
        wal.append(&[0; 101]),
        Err(Error::RecordTooLarge {
            size: 101,
            limit: 100
        })
    ));
    assert_eq!(wal.append(&[0; 100]).unwrap(), 1);
}

#[test]
fn invalid_options_are_refused() {
    let fs = FaultyFs::new();
    let tiny = WalOptions::default().with_segment_size(10);
    assert!(matches!(
        Wal::open(fs.shared(), "/log", tiny),
        Err(Error::InvalidOptions(_))
    ));
    let zero = WalOptions::default().with_sync(SyncPolicy::Interval(Duration::ZERO));
    assert!(matches!(
        Wal::open(fs.shared(), "/log", zero),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn segments_rotate_and_truncate_before_removes_only_whole_old_segments() {
    let fs = FaultyFs::new();
    let options = WalOptions::default().with_segment_size(1024);
    let (wal, _) = Wal::open(fs.shared(), "/log", options.clone()).unwrap();
    for i in 0..100u32 {
        wal.append(&[i as u8; 100]).unwrap();
    }
    let segments = wal.segment_count();
    assert!(segments >= 10, "{segments} segments");
    assert_eq!(wal.truncate_before(1).unwrap(), 0);
    let removed = wal.truncate_before(50).unwrap();
    assert!(removed > 0 && removed < segments);
    let read = read_all(fs.shared(), Path::new("/log"));
    let first = read[0].0;
    assert!(first > 1 && first <= 50, "first remaining LSN {first}");
    assert_eq!(read.last().unwrap().0, 100);
    // Removing everything old still keeps the active segment and the LSN sequence.
    wal.truncate_before(u64::MAX).unwrap();
    assert_eq!(wal.segment_count(), 1);
    drop(wal);
    let (wal, report) = Wal::open(fs.shared(), "/log", options).unwrap();
    assert_eq!(report.next_lsn, 101);
    assert_eq!(wal.append(b"next").unwrap(), 101);
}

#[test]
fn replay_from_an_lsn_returns_exactly_the_suffix() {
    let fs = FaultyFs::new();
    let options = WalOptions::default().with_segment_size(1024);
    let (wal, _) = Wal::open(fs.shared(), "/log", options.clone()).unwrap();
    for i in 0..60u32 {
        wal.append(&i.to_le_bytes()).unwrap();
    }
    drop(wal);
    let mut recovery = Wal::recover(fs.shared(), "/log", options, 42).unwrap();
    let mut lsns = Vec::new();
    while let Some((lsn, payload)) = recovery.next_record().unwrap() {
        assert_eq!(payload, ((lsn - 1) as u32).to_le_bytes());
        lsns.push(lsn);
    }
    assert_eq!(lsns, (42..=60).collect::<Vec<_>>());
    let (_, report) = recovery.finish().unwrap();
    assert_eq!((report.records_replayed, report.next_lsn), (19, 61));
}

fn clean_reopen_continues_in_place(fs: SharedFs, dir: &Path) {
    let options = WalOptions::default().with_segment_size(1 << 20);
    let (wal, _) = Wal::open(fs.clone(), dir, options.clone()).unwrap();
    for i in 0..100u32 {
        wal.append(&i.to_le_bytes()).unwrap();
    }
    drop(wal);
    let (wal, report) = Wal::open(fs.clone(), dir, options.clone()).unwrap();
    assert_eq!(
        report.torn_tail, None,
        "reserved zeros after the last record are a clean end"
    );
    assert_eq!(report.next_lsn, 101);
    wal.append(b"after reopen").unwrap();
    drop(wal);
    let (_, report) = Wal::open(fs.clone(), dir, options).unwrap();
    assert_eq!((report.next_lsn, report.torn_tail), (102, None));
    let read = read_all(fs, dir);
    assert_eq!(read.len(), 101);
    assert_eq!(read[99].1, 99u32.to_le_bytes());
    assert_eq!(read[100].1, b"after reopen");
}

#[test]
fn a_clean_reopen_reports_no_torn_tail_and_continues_in_place() {
    clean_reopen_continues_in_place(FaultyFs::new().shared(), Path::new("/log"));
}

#[test]
fn segments_are_preallocated_on_the_real_file_system() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    clean_reopen_continues_in_place(RealFs::shared(), &dir);
    let segment = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
    assert_eq!(
        segment.metadata().unwrap().len(),
        1 << 20,
        "the segment's space is reserved"
    );
}

/// An unsynced append is written but not durable: a crash drops it, unless a later
/// synced append made it durable along with itself (the log keeps a prefix).
#[test]
fn unsynced_appends_become_durable_with_the_next_synced_one() {
    let fs = FaultyFs::new();
    let survivors = || -> Vec<Vec<u8>> {
        fs.crash(CrashMode::DropUnsynced);
        read_all(fs.shared(), Path::new("/log"))
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    };
    let (wal, _) = Wal::open(fs.shared(), "/log", WalOptions::default()).unwrap();
    wal.append(b"synced").unwrap();
    wal.append_unsynced(b"buffered").unwrap();
    let syncs = wal.stats().syncs;
    drop(wal);
    let records = survivors();
    assert_eq!(
        records,
        vec![b"synced".to_vec()],
        "the unsynced record was lost"
    );
    assert_eq!(syncs, 1, "the unsynced append did not fsync");

    let (wal, _) = Wal::open(fs.shared(), "/log", WalOptions::default()).unwrap();
    wal.append_unsynced(b"buffered").unwrap();
    wal.append(b"then synced").unwrap();
    drop(wal);
    let records = survivors();
    assert_eq!(
        records,
        vec![
            b"synced".to_vec(),
            b"buffered".to_vec(),
            b"then synced".to_vec()
        ]
    );
}
