//! Micro-benchmarks of the storage engine's parts: memtable insert, block encode and
//! decode, SSTable point lookup (cached blocks, on the real file system).
//!
//! `cargo bench -p benches --bench engine_parts`

use std::sync::Arc;

use bigtable::cache::BlockCache;
use bigtable::key::{encode_column_key, CellKind};
use bigtable::memtable::Memtable;
use bigtable::sstable::block::{Block, BlockBuilder, BlockIter};
use bigtable::sstable::{Table, TableBuilder, TableOptions};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wal::fs::RealFs;

fn key(i: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    let row = format!(
        "{:016}",
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 1_000_000_000
    );
    encode_column_key(&mut out, row.as_bytes(), b"cf", b"q", 1, i, CellKind::Put);
    out
}

fn sorted_keys(n: u64) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..n).map(key).collect();
    keys.sort();
    keys.dedup();
    keys
}

fn memtable_insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("memtable");
    group.throughput(Throughput::Elements(1));
    group.bench_function("insert_16B_row_100B_value", |b| {
        let mem = Memtable::new(1000);
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            mem.insert(key(i), vec![0u8; 100], i);
        })
    });
    group.finish();
}

fn block_codec(c: &mut Criterion) {
    let keys = sorted_keys(40);
    let value = [7u8; 100];
    let mut group = c.benchmark_group("block");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("encode_40_entries", |b| {
        let mut builder = BlockBuilder::new(16);
        b.iter(|| {
            for k in &keys {
                builder.add(k, &value);
            }
            black_box(builder.finish())
        })
    });
    let mut builder = BlockBuilder::new(16);
    for k in &keys {
        builder.add(k, &value);
    }
    let bytes = builder.finish();
    group.bench_function("decode_and_scan_40_entries", |b| {
        b.iter_batched(
            || bytes.clone(),
            |bytes| {
                let mut it = BlockIter::new(Arc::new(Block::new(bytes).expect("valid block")));
                it.seek_to_first().expect("valid block");
                let mut n = 0;
                while it.valid() {
                    n += it.value().len();
                    it.advance().expect("valid block");
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn sstable_point_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("1.sst");
    let keys = sorted_keys(100_000);
    let mut builder =
        TableBuilder::create(&RealFs, &path, TableOptions::default()).expect("create table");
    for k in &keys {
        builder.add(k, &[1u8; 100]).expect("add");
    }
    builder.finish().expect("finish");
    let table = Table::open(&RealFs, &path, 1, BlockCache::new(64 << 20)).expect("open table");
    let mut group = c.benchmark_group("sstable");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("point_lookup_100k_entries_cached", |b| {
        let mut it = table.iter();
        b.iter(|| {
            i = (i + 7919) % keys.len();
            it.seek(&keys[i]).expect("seek");
            assert!(it.valid() && it.key() == keys[i].as_slice());
        })
    });
    group.finish();
}

criterion_group!(benches, memtable_insert, block_codec, sstable_point_lookup);
criterion_main!(benches);
