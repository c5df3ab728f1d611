//! Appends of 100-byte records to the commit log on the real file system:
//! 1, 4 and 16 threads under sync-every-commit (group commit), and one thread without
//! syncing. Criterion reports appends/s; after each case a line gives the fsyncs/s and
//! records per fsync measured over the same appends.
//!
//! `cargo bench -p benches --bench wal_append`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wal::fs::RealFs;
use wal::{SyncPolicy, Wal, WalOptions};

const RECORD: [u8; 100] = [0x5a; 100];

/// Appends `total` records split over `threads` threads; returns the wall time.
fn append_concurrently(wal: &Arc<Wal>, threads: u64, total: u64) -> Duration {
    let per_thread = total.div_ceil(threads);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let wal = wal.clone();
            s.spawn(move || {
                for _ in 0..per_thread {
                    wal.append(&RECORD).expect("append failed during benchmark");
                }
            });
        }
    });
    // Report the time per requested iteration, not per record actually appended.
    started
        .elapsed()
        .mul_f64(total as f64 / (per_thread * threads) as f64)
}

fn bench_case(c: &mut Criterion, group_name: &str, sync: SyncPolicy, threads: u64) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = WalOptions::default().with_sync(sync);
    let (wal, _) = Wal::open(RealFs::shared(), dir.path(), options).expect("open log");
    let wal = Arc::new(wal);
    let mut measured = Duration::ZERO;
    let before = wal.stats();
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(1));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function(BenchmarkId::new("threads", threads), |b| {
        b.iter_custom(|iters| {
            let elapsed = append_concurrently(&wal, threads, iters);
            measured += elapsed;
            elapsed
        })
    });
    group.finish();
    let after = wal.stats();
    let records = after.records - before.records;
    let syncs = after.syncs - before.syncs;
    let secs = measured.as_secs_f64();
    println!(
        "{group_name}/threads/{threads}: {:.0} appends/s, {:.0} fsyncs/s, {:.1} records per fsync \
         (over {records} appends incl. warm-up)",
        records as f64 / secs,
        syncs as f64 / secs,
        records as f64 / syncs.max(1) as f64,
    );
}

fn wal_append(c: &mut Criterion) {
    for threads in [1, 4, 16] {
        bench_case(
            c,
            "wal_append_sync_every_commit",
            SyncPolicy::EveryCommit,
            threads,
        );
    }
    bench_case(c, "wal_append_no_sync", SyncPolicy::Never, 1);
}

criterion_group!(benches, wal_append);
criterion_main!(benches);
