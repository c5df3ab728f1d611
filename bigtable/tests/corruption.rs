//! Damaged files are reported, never read as data: a flipped bit anywhere in an SSTable
//! (data block, index, filter, properties, footer) or in the manifest makes opening or
//! reading fail with a corruption error naming the file, without a panic.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use bigtable::{Engine, EngineOptions, Error, Mutation, ReadRequest, Row, TableSchema};
use proptest::prelude::*;
use wal::fs::{FaultyFs, FileSystem};

fn options() -> EngineOptions {
    EngineOptions {
        background_maintenance: false,
        ..EngineOptions::tiny()
    }
}

/// An engine holding one table whose data is all in SSTables; returns the rows.
fn populated(fs: &FaultyFs) -> Vec<Row> {
    let engine = Engine::open(fs.shared(), "/db", options()).unwrap();
    engine
        .create_table("t", TableSchema::with_families(["cf"]))
        .unwrap();
    for i in 0..300u32 {
        let m = Mutation::SetCell {
            family: b"cf".to_vec(),
            qualifier: format!("q{}", i % 3).into_bytes(),
            timestamp: Some(i64::from(i)),
            value: format!("value-{i}").repeat(1 + i as usize % 4).into_bytes(),
        };
        engine
            .mutate_row("t", format!("row{:04}", i % 97).as_bytes(), &[m])
            .unwrap();
    }
    engine.flush().unwrap();
    let rows = engine.read_rows("t", &ReadRequest::default()).unwrap();
    engine.close().unwrap();
    rows
}

fn sst_files(fs: &FaultyFs) -> Vec<PathBuf> {
    let dir = Path::new("/db/sst");
    fs.list(dir)
        .unwrap()
        .into_iter()
        .map(|n| dir.join(n))
        .collect()
}

/// Opens and reads everything; the rows, or the error.
fn open_and_read(fs: &FaultyFs) -> Result<Vec<Row>, Error> {
    let engine = Engine::open(fs.shared(), "/db", options())?;
    engine.read_rows("t", &ReadRequest::default())
}

fn assert_corruption_naming(result: Result<Vec<Row>, Error>, file: &Path) {
    match result {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, file),
        Err(Error::Log(e)) if e.to_string().contains(&*file.to_string_lossy()) => {}
        other => panic!(
            "expected a corruption error naming {}, got {other:?}",
            file.display()
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_flipped_bit_anywhere_in_an_sstable_is_reported(position in 0.0f64..1.0, bit in 0u8..8, pick in any::<prop::sample::Index>()) {
        let fs = FaultyFs::new();
        populated(&fs);
        let files = sst_files(&fs);
        prop_assert!(!files.is_empty());
        let file = pick.get(&files).clone();
        let len = fs.contents(&file).unwrap().len();
        let offset = ((len as f64 * position) as usize).min(len - 1);
        fs.flip_bit(&file, offset, bit).unwrap();
        assert_corruption_naming(open_and_read(&fs), &file);
    }
}

#[test]
fn each_part_of_an_sstable_is_checked() {
    let fs = FaultyFs::new();
    populated(&fs);
    let file = sst_files(&fs).remove(0);
    let len = fs.contents(&file).unwrap().len();
    // Footer magic, footer checksum, index (just before the footer), first data block.
    for offset in [len - 1, len - 10, len - 70, 3] {
        let pristine = fs.contents(&file).unwrap();
        fs.flip_bit(&file, offset, 0).unwrap();
        assert_corruption_naming(open_and_read(&fs), &file);
        fs.write_file_durably(&file, &pristine).unwrap();
    }
}

#[test]
fn a_flipped_bit_in_an_earlier_manifest_record_is_reported() {
    let fs = FaultyFs::new();
    let rows = populated(&fs);
    assert_eq!(open_and_read(&fs).unwrap(), rows);
    let manifest_dir = fs
        .list(Path::new("/db"))
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with("manifest-"))
        .map(|n| Path::new("/db").join(n))
        .unwrap();
    let segment = manifest_dir.join(fs.list(&manifest_dir).unwrap().remove(0));
    // Inside the first record (after the 32-byte segment header and a fragment header):
    // later records follow, so this is corruption, not a torn tail.
    fs.flip_bit(&segment, 45, 2).unwrap();
    assert_corruption_naming(open_and_read(&fs), &segment);
}

#[test]
fn undamaged_files_read_back_the_same() {
    let fs = FaultyFs::new();
    let rows = populated(&fs);
    assert_eq!(rows.len(), 97);
    assert_eq!(open_and_read(&fs).unwrap(), rows);
}
