//! SSTables round-trip any sorted set of entries, seek like a sorted map, and turn any
//! damaged byte into a Corruption error naming the file.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bigtable::bloom::row_hash;
use bigtable::cache::BlockCache;
use bigtable::key::{CellKind, InternalKey, Target};
use bigtable::sstable::{Table, TableBuilder, TableOptions};
use bigtable::Error;
use proptest::prelude::*;
use wal::fs::{FaultyFs, FileSystem, RealFs};

type Entries = BTreeMap<Vec<u8>, Vec<u8>>;
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn cell_key(row: &[u8], qualifier: &[u8], ts: i64, seq: u64) -> Vec<u8> {
    InternalKey {
        row: Cow::Borrowed(row),
        target: Target::Column {
            family: Cow::Borrowed(b"cf"),
            qualifier: Cow::Borrowed(qualifier),
            timestamp: ts,
            kind: CellKind::Put,
        },
        seq,
    }
    .encode()
}

fn entries() -> impl Strategy<Value = Entries> {
    let key = (
        proptest::collection::vec(0u8..6, 0..5),
        proptest::collection::vec(0u8..3, 0..3),
        -3i64..3,
        0u64..1000,
    )
        .prop_map(|(row, q, ts, seq)| cell_key(&row, &q, ts, seq));
    proptest::collection::btree_map(key, proptest::collection::vec(any::<u8>(), 0..300), 1..300)
}

fn write_table(fs: &dyn FileSystem, path: &Path, entries: &Entries, options: TableOptions) {
    let mut builder = TableBuilder::create(fs, path, options).unwrap();
    for (k, v) in entries {
        builder.add(k, v).unwrap();
    }
    let props = builder.finish().unwrap();
    assert_eq!(props.entries, entries.len() as u64);
}

fn scan(table: &Arc<Table>) -> Result<Pairs, Error> {
    let mut it = table.iter();
    it.seek_to_first()?;
    let mut out = Vec::new();
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.advance()?;
    }
    Ok(out)
}

fn small_blocks() -> TableOptions {
    TableOptions {
        block_size: 256,
        ..TableOptions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_table_reads_back_and_seeks_like_a_sorted_map(entries in entries(), seeks in proptest::collection::vec((proptest::collection::vec(0u8..6, 0..5), -3i64..3), 0..20)) {
        let fs = FaultyFs::new();
        fs.create_dir_all(Path::new("/t")).unwrap();
        let path = Path::new("/t/1.sst");
        write_table(&fs, path, &entries, small_blocks());
        let table = Table::open(&fs, path, 1, BlockCache::new(1 << 20)).unwrap();
        prop_assert_eq!(scan(&table).unwrap(), entries.clone().into_iter().collect::<Vec<_>>());
        let props = table.properties();
        prop_assert_eq!(&props.smallest_key, entries.keys().next().unwrap());
        prop_assert_eq!(&props.largest_key, entries.keys().last().unwrap());
        let max_seq = entries.keys().map(|k| InternalKey::decode(k).unwrap().seq).max().unwrap();
        prop_assert_eq!(props.max_seq, max_seq);
        for key in entries.keys() {
            let row = InternalKey::decode(key).unwrap().row.into_owned();
            prop_assert!(table.may_contain_row(row_hash(&row)));
        }
        let mut it = table.iter();
        for (row, ts) in seeks {
            let target = cell_key(&row, b"\x01", ts, 500);
            it.seek(&target).unwrap();
            let expected = entries.range(target..).next();
            prop_assert_eq!(it.valid().then(|| (it.key().to_vec(), it.value().to_vec())), expected.map(|(k, v)| (k.clone(), v.clone())));
        }
    }
}

fn sample_entries(n: u32, mut value: impl FnMut(u32) -> Vec<u8>) -> Entries {
    (0..n)
        .map(|i| {
            (
                cell_key(format!("row{i:06}").as_bytes(), b"q", 1, u64::from(i)),
                value(i),
            )
        })
        .collect()
}

#[test]
fn compressible_blocks_are_compressed_and_random_ones_are_stored_raw() {
    let fs = FaultyFs::new();
    fs.create_dir_all(Path::new("/t")).unwrap();
    let text = sample_entries(2000, |i| {
        format!("value {i} of a very repetitive text text text").into_bytes()
    });
    write_table(
        &fs,
        Path::new("/t/text.sst"),
        &text,
        TableOptions::default(),
    );
    let raw: usize = text.iter().map(|(k, v)| k.len() + v.len()).sum();
    let size = fs.contents(Path::new("/t/text.sst")).unwrap().len();
    assert!(size < raw / 2, "compressed table {size} bytes vs {raw} raw");

    let mut rng = wal::rng::SplitMix64::new(1);
    let random = sample_entries(500, |_| {
        let mut v = vec![0u8; 100];
        rng.fill(&mut v);
        v
    });
    write_table(
        &fs,
        Path::new("/t/random.sst"),
        &random,
        TableOptions::default(),
    );
    let table = Table::open(&fs, Path::new("/t/random.sst"), 2, BlockCache::new(1 << 20)).unwrap();
    assert_eq!(scan(&table).unwrap().len(), 500);
}

#[test]
fn reading_through_mmap_on_the_real_file_system_and_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("1.sst");
    let entries = sample_entries(5000, |i| i.to_le_bytes().to_vec());
    write_table(&RealFs, &path, &entries, TableOptions::default());
    let cache = BlockCache::new(1 << 20);
    let table = Table::open(&RealFs, &path, 7, cache.clone()).unwrap();
    assert_eq!(scan(&table).unwrap().len(), 5000);
    let cached = cache.stats();
    assert!(cached.entries > 10, "{cached:?}");
    assert_eq!(scan(&table).unwrap().len(), 5000);
    assert_eq!(
        cache.stats(),
        cached,
        "a second scan is served from the cache"
    );
    assert!(
        !table.may_contain_row(row_hash(b"no such row"))
            || !table.may_contain_row(row_hash(b"nor this one"))
    );
}

#[test]
fn every_flipped_bit_is_a_corruption_error_naming_the_file() {
    let fs = FaultyFs::new();
    fs.create_dir_all(Path::new("/t")).unwrap();
    let path = Path::new("/t/9.sst");
    let entries = sample_entries(300, |i| format!("value {i} value value").into_bytes());
    write_table(
        &fs,
        path,
        &entries,
        TableOptions {
            block_size: 512,
            ..TableOptions::default()
        },
    );
    let pristine = fs.contents(path).unwrap();
    let mut rng = wal::rng::SplitMix64::new(42);
    // Every byte of the footer and trailers, and random bytes everywhere else.
    let offsets: Vec<usize> = (pristine.len() - 64..pristine.len())
        .chain((0..600).map(|_| rng.below(pristine.len() as u64) as usize))
        .collect();
    for offset in offsets {
        let bit = rng.below(8) as u8;
        fs.write_file_durably(path, &pristine).unwrap();
        fs.flip_bit(path, offset, bit).unwrap();
        let result = Table::open(&fs, path, 1, BlockCache::new(1 << 20)).and_then(|t| scan(&t));
        match result {
            Err(Error::Corruption { path: bad, .. }) => assert_eq!(bad, path),
            Err(other) => panic!("flip at {offset}: unexpected error {other}"),
            Ok(_) => panic!("flip of bit {bit} at offset {offset} went unnoticed"),
        }
    }
}

#[test]
fn truncated_or_foreign_files_are_corruption() {
    let fs = FaultyFs::new();
    fs.create_dir_all(Path::new("/t")).unwrap();
    let path = Path::new("/t/1.sst");
    write_table(
        &fs,
        path,
        &sample_entries(100, |_| vec![1]),
        TableOptions::default(),
    );
    let len = fs.contents(path).unwrap().len();
    for cut in [0, 10, len / 2, len - 1] {
        fs.truncate_file(path, cut).unwrap();
        let err = Table::open(&fs, path, 1, BlockCache::new(1 << 20))
            .err()
            .unwrap();
        assert!(
            matches!(err, Error::Corruption { .. }),
            "cut at {cut}: {err}"
        );
    }
    fs.write_file_durably(path, &[7u8; 500]).unwrap();
    let err = Table::open(&fs, path, 1, BlockCache::new(1 << 20))
        .err()
        .unwrap();
    assert!(err.to_string().contains("magic"), "{err}");
}
