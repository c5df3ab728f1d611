//! Megastore on one replica, on the real file system with every commit synced:
//! - commit latency and throughput of read-modify-write transactions (read a counter,
//!   write it back plus one) on one entity group, from 1 and 4 threads (the 4 contend
//!   for the group's log positions, so most attempts conflict and retry);
//! - the same on 1000 groups, 4 threads spread over them (no contention);
//! - current-read latency: roll forward (nothing to apply), then get one entity.
//!
//! Criterion reports time per committed transaction (or read); after each commit case
//! a line gives the conflicts per commit and fsyncs per commit.
//!
//! `cargo bench -p benches --bench megastore_txn`

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::megastore_counter::{counter_key, group, increment, SCHEMA};
use bigtable::fs::RealFs;
use bigtable::{Engine, EngineOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use megastore::{Database, DatabaseOptions, ReadMode};

struct Setup {
    db: Arc<Database>,
    engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

fn open() -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let engine =
        Engine::open(RealFs::shared(), dir.path(), EngineOptions::default()).expect("engine");
    let engine = Arc::new(engine);
    let options = DatabaseOptions {
        max_attempts: 1_000_000,
        ..DatabaseOptions::default()
    };
    let db = Database::open_with_schema(engine.clone(), SCHEMA, options).expect("database");
    Setup {
        db: Arc::new(db),
        engine,
        _dir: dir,
    }
}

/// Runs `total` increments from `threads` threads, thread `t` on groups
/// `t, t + threads, ...` modulo `groups`; returns the wall time.
fn increments(db: &Arc<Database>, threads: u64, groups: u64, total: u64) -> Duration {
    let per_thread = total.div_ceil(threads);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let db = db.clone();
            s.spawn(move || {
                for i in 0..per_thread {
                    let id = ((t + i * threads) % groups) as i64;
                    db.transact(&group(id), |tx| increment(tx, id))
                        .expect("commit during benchmark");
                }
            });
        }
    });
    started
        .elapsed()
        .mul_f64(total as f64 / (per_thread * threads) as f64)
}

fn commit_case(c: &mut Criterion, name: &str, threads: u64, groups: u64) {
    let setup = open();
    let before = (setup.db.stats(), setup.engine.log_syncs());
    let mut commits = 0u64;
    let mut bench = c.benchmark_group(name);
    bench.throughput(Throughput::Elements(1));
    bench
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    bench.bench_function(BenchmarkId::new("threads", threads), |b| {
        b.iter_custom(|iters| {
            commits += iters;
            increments(&setup.db, threads, groups, iters)
        })
    });
    bench.finish();
    let after = (setup.db.stats(), setup.engine.log_syncs());
    let done = (after.0.commits - before.0.commits).max(1) as f64;
    println!(
        "{name}/threads/{threads}: {:.2} conflicts per commit, {:.2} fsyncs per commit ({commits} commits asked)",
        (after.0.conflicts - before.0.conflicts) as f64 / done,
        (after.1 - before.1) as f64 / done,
    );
}

fn commits(c: &mut Criterion) {
    commit_case(c, "commit_one_group", 1, 1);
    commit_case(c, "commit_one_group", 4, 1);
    commit_case(c, "commit_1000_groups", 4, 1000);
}

fn current_read(c: &mut Criterion) {
    let setup = open();
    for id in 0..100 {
        setup
            .db
            .transact(&group(id), |tx| increment(tx, id))
            .expect("setup commit");
    }
    let mut bench = c.benchmark_group("read");
    bench.throughput(Throughput::Elements(1));
    for mode in [ReadMode::Current, ReadMode::Snapshot] {
        let mut id = 0;
        bench.bench_function(format!("{mode:?}").to_lowercase(), |b| {
            b.iter(|| {
                id = (id + 1) % 100;
                let snap = setup.db.read(&group(id), mode).expect("read");
                snap.get("Counter", &counter_key(id)).expect("get")
            })
        });
    }
    bench.finish();
}

criterion_group!(benches, commits, current_read);
criterion_main!(benches);
