//! Damaged bytes: the reader returns a Corruption error or a shorter prefix, never a
//! wrong record and never a panic.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;

use proptest::prelude::*;
use wal::format::BLOCK_SIZE;
use wal::fs::{FaultyFs, FileSystem};
use wal::segment::SEGMENT_HEADER_SIZE;
use wal::{Error, LogEnd, LogReader, Wal, WalOptions};

const DIR: &str = "/log";

/// A log of `n` records (some spanning blocks) in segments of about `segment_size` bytes.
fn build_log(n: usize, segment_size: u64) -> (FaultyFs, Vec<Vec<u8>>) {
    let fs = FaultyFs::new();
    let options = WalOptions::default().with_segment_size(segment_size);
    let (wal, _) = Wal::open(fs.shared(), DIR, options).unwrap();
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let len = if i % 7 == 3 {
                BLOCK_SIZE + 1000
            } else {
                10 + (i * 37) % 300
            };
            (0..len).map(|j| (i * 13 + j) as u8).collect()
        })
        .collect();
    for r in &records {
        wal.append(r).unwrap();
    }
    (fs, records)
}

fn segments(fs: &FaultyFs) -> Vec<String> {
    fs.list(Path::new(DIR)).unwrap()
}

/// The end of the last record in the last segment (space after it is reserved zeros).
fn data_end(fs: &FaultyFs) -> u64 {
    let mut reader = LogReader::open(fs.shared(), Path::new(DIR), 0).unwrap();
    while reader.next_record().unwrap().is_some() {}
    reader.append_position().unwrap().1
}

/// Reads the log; checks every record returned is the original at its LSN.
fn read_and_check(fs: &FaultyFs, records: &[Vec<u8>]) -> Result<(usize, LogEnd), Error> {
    let mut reader = LogReader::open(fs.shared(), Path::new(DIR), 0)?;
    let mut count = 0;
    while let Some((lsn, payload)) = reader.next_record()? {
        assert_eq!(lsn, count as u64 + 1, "LSNs must be consecutive");
        assert_eq!(payload, records[count], "LSN {lsn} returned wrong contents");
        count += 1;
    }
    Ok((count, reader.end().cloned().unwrap()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_flipped_bit_anywhere_gives_an_error_or_a_prefix(
        file_pick in any::<prop::sample::Index>(),
        offset_pick in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (fs, records) = build_log(40, 32 << 10);
        let names = segments(&fs);
        let name = file_pick.get(&names);
        let path = Path::new(DIR).join(name);
        let len = fs.contents(&path).unwrap().len();
        let offset = offset_pick.index(len);
        fs.flip_bit(&path, offset, bit).unwrap();
        match read_and_check(&fs, &records) {
            Ok((count, end)) => {
                // Damage shows as a torn tail only in the last segment: either records
                // are missing, or the flip hit reserved space after the last record.
                prop_assert!(matches!(end, LogEnd::TornTail(_)), "flip at {name}:{offset} went unnoticed");
                prop_assert_eq!(name, names.last().unwrap());
                prop_assert!(count < records.len() || offset as u64 >= data_end(&fs));
            }
            Err(Error::Corruption { path: bad, .. }) => prop_assert_eq!(bad, path),
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn a_truncated_last_segment_reads_back_a_prefix(cut_pick in any::<prop::sample::Index>()) {
        let (fs, records) = build_log(40, 1 << 20);
        let path = Path::new(DIR).join(segments(&fs).last().unwrap());
        let cut = cut_pick.index(data_end(&fs) as usize);
        fs.truncate_file(&path, cut).unwrap();
        // A cut at a record boundary reads as a clean end, anywhere else as a torn tail.
        let (count, _end) = read_and_check(&fs, &records).expect("a cut tail is not corruption");
        prop_assert!(count < records.len());
    }

    #[test]
    fn random_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..(3 * BLOCK_SIZE))) {
        let fs = FaultyFs::new();
        fs.create_dir_all(Path::new(DIR)).unwrap();
        let path = Path::new(DIR).join("00000000000000000001.wal");
        let mut content = wal::segment::encode_header(1).to_vec();
        content.extend_from_slice(&bytes);
        fs.write_file_durably(&path, &content).unwrap();
        if let Ok(reader) = LogReader::open(fs.shared(), Path::new(DIR), 0) {
            for record in reader {
                if record.is_err() { break; }
            }
        }
    }
}

#[test]
fn damage_in_the_middle_is_corruption_naming_file_and_offset() {
    let (fs, records) = build_log(20, 1 << 20);
    let path = Path::new(DIR).join(&segments(&fs)[0]);
    let offset = SEGMENT_HEADER_SIZE + 10;
    fs.flip_bit(&path, offset, 0).unwrap();
    match read_and_check(&fs, &records) {
        Err(Error::Corruption {
            path: bad,
            offset: at,
            reason,
        }) => {
            assert_eq!(bad, path);
            assert_eq!(at, SEGMENT_HEADER_SIZE as u64);
            assert!(reason.contains("followed by a valid fragment"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Opening for append refuses too: it never silently drops acknowledged records.
    assert!(matches!(
        Wal::open(fs.shared(), DIR, WalOptions::default()),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn damage_in_an_earlier_segment_is_corruption_even_at_its_end() {
    let (fs, records) = build_log(30, 2048);
    let names = segments(&fs);
    assert!(names.len() > 3);
    let path = Path::new(DIR).join(&names[1]);
    let len = fs.contents(&path).unwrap().len();
    fs.truncate_file(&path, len - 3).unwrap();
    assert!(
        matches!(read_and_check(&fs, &records), Err(Error::Corruption { path: bad, .. }) if bad == path)
    );
}

#[test]
fn a_missing_segment_in_the_middle_is_a_gap() {
    let (fs, records) = build_log(30, 2048);
    let names = segments(&fs);
    fs.remove(&Path::new(DIR).join(&names[2])).unwrap();
    let err = read_and_check(&fs, &records).unwrap_err();
    assert!(err.to_string().contains("expected"), "{err}");
}

#[test]
fn a_renamed_segment_whose_header_disagrees_is_corruption() {
    let (fs, _) = build_log(5, 1 << 20);
    let from = Path::new(DIR).join(&segments(&fs)[0]);
    fs.rename(&from, &Path::new(DIR).join("00000000000000000009.wal"))
        .unwrap();
    let err = LogReader::open(fs.shared(), Path::new(DIR), 0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("file name says 9"), "{err}");
}

#[test]
fn a_torn_header_of_the_last_segment_is_a_torn_tail_and_is_replaced() {
    let (fs, records) = build_log(30, 2048);
    let names = segments(&fs);
    let last = Path::new(DIR).join(names.last().unwrap());
    fs.truncate_file(&last, 5).unwrap();
    let (count, end) = read_and_check(&fs, &records).unwrap();
    assert!(
        matches!(end, LogEnd::TornTail(ref t) if t.offset == 0),
        "{end:?}"
    );
    let (wal, report) = Wal::open(fs.shared(), DIR, WalOptions::default()).unwrap();
    assert_eq!(report.next_lsn, count as u64 + 1);
    assert_eq!(wal.append(b"x").unwrap(), count as u64 + 1);
}

#[test]
fn a_flipped_bit_in_block_padding_is_noticed() {
    let fs = FaultyFs::new();
    let (wal, _) = Wal::open(fs.shared(), DIR, WalOptions::default()).unwrap();
    // Fill block 0 up to 3 bytes short of its end, so the next record pads 3 zero bytes.
    let first = BLOCK_SIZE - SEGMENT_HEADER_SIZE - 7 - 3;
    let records = vec![vec![1u8; first], vec![2u8; 10], vec![3u8; 10]];
    for r in &records {
        wal.append(r).unwrap();
    }
    drop(wal);
    let path = Path::new(DIR).join(&segments(&fs)[0]);
    assert_eq!(
        &fs.contents(&path).unwrap()[BLOCK_SIZE - 3..BLOCK_SIZE],
        &[0, 0, 0]
    );
    fs.flip_bit(&path, BLOCK_SIZE - 2, 5).unwrap();
    let err = read_and_check(&fs, &records).unwrap_err();
    assert!(err.to_string().contains("non-zero block padding"), "{err}");
}
