//! Megastore replicated over in-process replicas (each its own engine and data
//! directory on the real file system, every acceptance synced):
//! - commit latency of read-modify-write transactions on one entity group from one
//!   thread, with 3 full replicas on the fast path (ballot 0 at the leader, then the
//!   others) and on the forced slow path (prepare, then accept), and with 2 full
//!   replicas and a witness;
//! - throughput on one group from 4 threads at 3 replicas (which contend for positions),
//!   and across 1000 groups from 4 threads;
//! - current-read latency at a replica whose coordinator knows the group is up to date.
//!
//! After each commit case a line gives conflicts per commit.
//!
//! `cargo bench -p benches --bench megastore_replicated`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::megastore_counter::{counter_key, group, increment, SCHEMA};
use bigtable::fs::RealFs;
use bigtable::EngineOptions;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use megastore::cluster::{Cluster, ClusterOptions};
use megastore::replicas::ReplicaKind;
use megastore::replication::ProposeOptions;
use megastore::{DatabaseOptions, ReadMode};

const FULL: ReplicaKind = ReplicaKind::Full;

struct Setup {
    cluster: Arc<Cluster>,
    _dir: tempfile::TempDir,
}

fn open(kinds: &[ReplicaKind], fast_path: bool) -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let dirs: Vec<PathBuf> = (0..kinds.len())
        .map(|i| dir.path().join(format!("replica-{i}")))
        .collect();
    let options = ClusterOptions {
        kinds: kinds.to_vec(),
        engine: EngineOptions::default(),
        propose: ProposeOptions {
            fast_path,
            ..ProposeOptions::default()
        },
        database: DatabaseOptions {
            max_attempts: 1_000_000,
            ..DatabaseOptions::default()
        },
        ..ClusterOptions::default()
    };
    let fs = kinds.iter().map(|_| RealFs::shared()).collect();
    let cluster = Cluster::open(fs, dirs, SCHEMA, options).expect("cluster");
    Setup {
        cluster: Arc::new(cluster),
        _dir: dir,
    }
}

/// Runs `total` increments from `threads` threads, each writing at replica
/// `t % full replicas`, thread `t` on groups `t, t + threads, ...` modulo `groups`.
fn increments(cluster: &Arc<Cluster>, threads: u64, groups: u64, total: u64) -> Duration {
    let per_thread = total.div_ceil(threads);
    let writers: Vec<usize> = (0..cluster.len())
        .filter(|&i| cluster.members()[i].kind == FULL)
        .collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let cluster = cluster.clone();
            let at = writers[t as usize % writers.len()];
            s.spawn(move || {
                let db = cluster.replica(at).expect("replica runs");
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

fn commit_case(
    c: &mut Criterion,
    name: &str,
    kinds: &[ReplicaKind],
    fast_path: bool,
    threads: u64,
    groups: u64,
) {
    let setup = open(kinds, fast_path);
    let stats = |s: &Setup| {
        (0..s.cluster.len())
            .filter_map(|i| s.cluster.replica(i).ok())
            .map(|db| db.stats())
            .fold((0, 0), |(c, x), st| (c + st.commits, x + st.conflicts))
    };
    let before = stats(&setup);
    let mut bench = c.benchmark_group(name);
    bench.throughput(Throughput::Elements(1));
    bench
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    bench.bench_function(BenchmarkId::new("threads", threads), |b| {
        b.iter_custom(|iters| increments(&setup.cluster, threads, groups, iters))
    });
    bench.finish();
    let after = stats(&setup);
    let commits = (after.0 - before.0).max(1) as f64;
    println!(
        "{name}/threads/{threads}: {:.2} conflicts per commit",
        (after.1 - before.1) as f64 / commits
    );
}

fn commits(c: &mut Criterion) {
    commit_case(c, "replicated_3full_fast_one_group", &[FULL; 3], true, 1, 1);
    commit_case(
        c,
        "replicated_3full_slow_one_group",
        &[FULL; 3],
        false,
        1,
        1,
    );
    let witness = [FULL, FULL, ReplicaKind::Witness];
    commit_case(
        c,
        "replicated_2full_witness_one_group",
        &witness,
        true,
        1,
        1,
    );
    commit_case(c, "replicated_3full_fast_one_group", &[FULL; 3], true, 4, 1);
    commit_case(
        c,
        "replicated_3full_fast_1000_groups",
        &[FULL; 3],
        true,
        4,
        1000,
    );
}

fn current_read(c: &mut Criterion) {
    let setup = open(&[FULL; 3], true);
    let db = setup.cluster.replica(1).expect("replica runs");
    for id in 0..100 {
        setup
            .cluster
            .replica(0)
            .expect("replica runs")
            .transact(&group(id), |tx| increment(tx, id))
            .expect("setup commit");
        db.read(&group(id), ReadMode::Current).expect("validate");
    }
    let mut bench = c.benchmark_group("replicated_read");
    bench.throughput(Throughput::Elements(1));
    let mut id = 0;
    bench.bench_function("current_at_up_to_date_replica", |b| {
        b.iter(|| {
            id = (id + 1) % 100;
            let snap = db.read(&group(id), ReadMode::Current).expect("read");
            snap.get("Counter", &counter_key(id)).expect("get")
        })
    });
    bench.finish();
}

criterion_group!(benches, commits, current_read);
criterion_main!(benches);
