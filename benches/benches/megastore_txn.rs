//! Megastore on one replica, on the real file system with every commit synced:
//! - commit latency and throughput of read-modify-write transactions (read a counter,
//!   write it back plus one) on one entity group, from 1 and 4 threads: the 4 on one
//!   counter (contending: a transaction whose counter changed runs again), or each on
//!   its own counter (group commit puts several in one log entry);
//! - the same on 1000 groups, 4 threads spread over them (no contention);
//! - current-read latency: roll forward (nothing to apply), then get one entity.
//!
//! Criterion reports time per committed transaction (or read); after each commit case
//! a line gives the conflicts per commit, commits per log entry and fsyncs per commit.
//!
//! `cargo bench -p benches --bench megastore_txn`

use std::sync::Arc;
use std::time::Duration;

use benches::megastore_counter::{counter_key, group, increment, Counter, Load, SCHEMA};
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

fn commit_case(c: &mut Criterion, name: &str, load: Load) {
    let setup = open();
    let before = (setup.db.stats(), setup.engine.log_syncs());
    let mut commits = 0u64;
    let mut bench = c.benchmark_group(name);
    bench.throughput(Throughput::Elements(1));
    bench
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    bench.bench_function(BenchmarkId::new("threads", load.threads), |b| {
        b.iter_custom(|iters| {
            commits += iters;
            load.run(iters, |_| &setup.db)
        })
    });
    bench.finish();
    let after = (setup.db.stats(), setup.engine.log_syncs());
    let done = (after.0.commits - before.0.commits).max(1) as f64;
    let entries = (after.0.entries - before.0.entries).max(1) as f64;
    println!(
        "{name}/threads/{}: {:.2} conflicts per commit, {:.2} commits per log entry, {:.2} fsyncs per commit ({commits} commits asked)",
        load.threads,
        (after.0.conflicts - before.0.conflicts) as f64 / done,
        done / entries,
        (after.1 - before.1) as f64 / done,
    );
}

fn commits(c: &mut Criterion) {
    let load = |threads, groups, counter| Load {
        threads,
        groups,
        counter,
        two_phase: false,
    };
    commit_case(c, "commit_one_group", load(1, 1, Counter::Shared));
    commit_case(c, "commit_one_group", load(4, 1, Counter::Shared));
    commit_case(
        c,
        "commit_one_group_own_counters",
        load(4, 1, Counter::PerThread),
    );
    commit_case(c, "commit_1000_groups", load(4, 1000, Counter::Shared));
}

fn current_read(c: &mut Criterion) {
    let setup = open();
    for id in 0..100 {
        setup
            .db
            .transact(&group(id), |tx| increment(tx, id, 0))
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
                snap.get("Counter", &counter_key(id, 0)).expect("get")
            })
        });
    }
    bench.finish();
}

criterion_group!(benches, commits, current_read);
criterion_main!(benches);
