//! The fault-injecting file system models what a real disk may do after power loss.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;

use wal::fs::{read_file, CrashMode, FaultyFs, FileSystem};

fn setup() -> FaultyFs {
    let fs = FaultyFs::new();
    fs.create_dir_all(Path::new("/d")).unwrap();
    fs
}

#[test]
fn crash_drops_unsynced_bytes_and_keeps_synced_ones() {
    let fs = setup();
    let path = Path::new("/d/f");
    let mut f = fs.create(path).unwrap();
    f.append(b"synced").unwrap();
    f.sync().unwrap();
    fs.sync_dir(Path::new("/d")).unwrap();
    f.append(b"-lost").unwrap();
    assert_eq!(read_file(&fs, path).unwrap(), b"synced-lost");
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(read_file(&fs, path).unwrap(), b"synced");
}

#[test]
fn files_created_or_renamed_since_the_last_directory_sync_vanish() {
    let fs = setup();
    let dir = Path::new("/d");
    let mut kept = fs.create(Path::new("/d/kept")).unwrap();
    kept.sync().unwrap();
    fs.sync_dir(dir).unwrap();
    let mut lost = fs.create(Path::new("/d/lost")).unwrap();
    lost.append(b"data").unwrap();
    lost.sync().unwrap();
    fs.rename(Path::new("/d/kept"), Path::new("/d/renamed"))
        .unwrap();
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(fs.list(dir).unwrap(), vec!["kept".to_string()]);
}

#[test]
fn a_synced_rename_survives_and_removal_needs_a_directory_sync() {
    let fs = setup();
    let dir = Path::new("/d");
    fs.write_file_durably(Path::new("/d/tmp"), b"v2").unwrap();
    fs.write_file_durably(Path::new("/d/old"), b"x").unwrap();
    fs.rename(Path::new("/d/tmp"), Path::new("/d/current"))
        .unwrap();
    fs.sync_dir(dir).unwrap();
    fs.remove(Path::new("/d/old")).unwrap();
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(
        fs.list(dir).unwrap(),
        vec!["current".to_string(), "old".to_string()]
    );
    assert_eq!(read_file(&fs, Path::new("/d/current")).unwrap(), b"v2");
}

#[test]
fn torn_crash_keeps_at_most_the_unsynced_bytes_and_never_touches_synced_ones() {
    for seed in 0..200 {
        let fs = setup();
        let path = Path::new("/d/f");
        fs.write_file_durably(path, b"0123456789").unwrap();
        let mut f = fs.open_append(path).unwrap();
        f.append(&[0xAB; 100]).unwrap();
        fs.crash(CrashMode::TornWrites { seed });
        let after = read_file(&fs, path).unwrap();
        assert!(
            after.len() >= 10 && after.len() <= 110,
            "seed {seed}: length {}",
            after.len()
        );
        assert_eq!(
            &after[..10],
            b"0123456789",
            "seed {seed}: synced bytes changed"
        );
    }
}

#[test]
fn injected_sync_failure_makes_nothing_durable() {
    let fs = setup();
    let path = Path::new("/d/f");
    fs.write_file_durably(path, b"").unwrap();
    let mut f = fs.open_append(path).unwrap();
    f.append(b"abc").unwrap();
    fs.fail_next_syncs(1);
    assert!(f.sync().is_err());
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(read_file(&fs, path).unwrap(), b"");
}

#[test]
fn injected_append_failure_writes_nothing() {
    let fs = setup();
    let mut f = fs.create(Path::new("/d/f")).unwrap();
    fs.fail_next_appends(1);
    assert!(f.append(b"abc").is_err());
    f.append(b"def").unwrap();
    assert_eq!(fs.contents(Path::new("/d/f")).unwrap(), b"def");
}

#[test]
fn power_loss_fails_every_later_call_until_the_crash() {
    let fs = setup();
    let mut f = fs.create(Path::new("/d/f")).unwrap();
    fs.power_loss_after(1);
    f.append(b"a").unwrap();
    assert!(f.append(b"b").is_err());
    assert!(fs.is_powered_off());
    assert!(f.sync().is_err());
    assert!(fs.create(Path::new("/d/g")).is_err());
    assert!(fs.list(Path::new("/d")).is_err());
    fs.crash(CrashMode::DropUnsynced);
    assert!(!fs.is_powered_off());
    assert!(
        f.append(b"c").is_err(),
        "handles from before the crash are stale"
    );
    assert!(fs.create(Path::new("/d/g")).is_ok());
}

#[test]
fn bit_flips_and_truncation_reach_synced_data() {
    let fs = setup();
    let path = Path::new("/d/f");
    fs.write_file_durably(path, &[0u8; 8]).unwrap();
    fs.flip_bit(path, 3, 2).unwrap();
    assert_eq!(read_file(&fs, path).unwrap(), [0, 0, 0, 4, 0, 0, 0, 0]);
    fs.truncate_file(path, 5).unwrap();
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(read_file(&fs, path).unwrap(), [0, 0, 0, 4, 0]);
    assert!(fs.flip_bit(path, 99, 0).is_err());
}

#[test]
fn truncation_is_undone_by_a_crash_unless_synced() {
    let fs = setup();
    let path = Path::new("/d/f");
    fs.write_file_durably(path, b"abcdef").unwrap();
    fs.truncate(path, 2).unwrap();
    assert_eq!(read_file(&fs, path).unwrap(), b"ab");
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(read_file(&fs, path).unwrap(), b"abcdef");
    fs.truncate(path, 2).unwrap();
    fs.open_append(path).unwrap().sync().unwrap();
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(read_file(&fs, path).unwrap(), b"ab");
}

#[test]
fn creating_a_file_needs_its_directory() {
    let fs = FaultyFs::new();
    assert!(fs.create(Path::new("/nope/f")).is_err());
    fs.create_dir_all(Path::new("/a/b")).unwrap();
    assert!(fs.create(Path::new("/a/b/f")).is_ok());
    assert_eq!(fs.list(Path::new("/a")).unwrap(), vec!["b".to_string()]);
}

#[test]
fn mapped_bytes_are_the_file_contents() {
    let fs = setup();
    let path = Path::new("/d/f");
    fs.write_file_durably(path, b"mapped").unwrap();
    assert_eq!(&*fs.map(path).unwrap(), b"mapped");
}

#[test]
fn stats_count_appends_and_syncs() {
    let fs = setup();
    let mut f = fs.create(Path::new("/d/f")).unwrap();
    f.append(b"ab").unwrap();
    f.append(b"c").unwrap();
    f.sync().unwrap();
    fs.sync_dir(Path::new("/d")).unwrap();
    let stats = fs.stats();
    assert_eq!(
        (
            stats.appends,
            stats.bytes_appended,
            stats.syncs,
            stats.dir_syncs
        ),
        (2, 3, 1, 1)
    );
}

#[test]
fn preallocated_space_reads_as_zeros_and_is_durable_only_after_a_sync() {
    let fs = setup();
    let path = Path::new("/d/f");
    let mut f = fs.create(path).unwrap();
    f.append(b"abc").unwrap();
    f.preallocate(8).unwrap();
    assert_eq!(f.len(), 3, "preallocation does not move the logical end");
    assert_eq!(read_file(&fs, path).unwrap(), b"abc\0\0\0\0\0");
    fs.sync_dir(Path::new("/d")).unwrap();
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(
        read_file(&fs, path).unwrap(),
        b"",
        "neither bytes nor space were synced"
    );

    let mut f = fs.open_at(path, 0).unwrap();
    f.append(b"xy").unwrap();
    f.preallocate(6).unwrap();
    f.sync().unwrap();
    let mut f = fs.open_at(path, 2).unwrap();
    f.append(b"z").unwrap();
    assert_eq!(read_file(&fs, path).unwrap(), b"xyz\0\0\0");
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(
        read_file(&fs, path).unwrap(),
        b"xy\0\0\0\0",
        "the unsynced overwrite is lost"
    );
}
