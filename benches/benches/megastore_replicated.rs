//! Megastore replicated over in-process replicas (each its own engine and data
//! directory on the real file system, every acceptance synced):
//! - commit latency of read-modify-write transactions on one entity group from one
//!   thread, with 3 full replicas on the fast path (ballot 0 at the leader, then the
//!   others) and on the forced slow path (prepare, then accept), and with 2 full
//!   replicas and a witness;
//! - throughput on one group from 4 threads: on one counter, spread over the 3
//!   replicas (contending); each on its own counter at one replica (group commit shares
//!   log entries among them) and spread over the replicas (a transaction that lost its
//!   position commits at the next without running again); and across 1000 groups;
//! - current-read latency at a replica whose coordinator knows the group is up to date.
//!
//! After each commit case a line gives conflicts per commit and commits per log entry.
//!
//! `cargo bench -p benches --bench megastore_replicated`

use std::sync::Arc;
use std::time::Duration;

use benches::megastore_counter::{counter_key, group, increment, open_cluster, Counter, Load};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use megastore::cluster::{Cluster, ClusterOptions};
use megastore::replicas::ReplicaKind;
use megastore::replication::ProposeOptions;
use megastore::ReadMode;

const FULL: ReplicaKind = ReplicaKind::Full;

struct Setup {
    cluster: Arc<Cluster>,
    _dir: tempfile::TempDir,
}

fn open(kinds: &[ReplicaKind], fast_path: bool) -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let propose = ProposeOptions {
        fast_path,
        ..ClusterOptions::default().propose
    };
    let cluster = open_cluster(dir.path(), kinds, propose, None).expect("cluster");
    Setup {
        cluster: Arc::new(cluster),
        _dir: dir,
    }
}

/// Where a case's threads write: all at the first replica, or thread `t` at full
/// replica `t % full replicas`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writers {
    OneReplica,
    Spread,
}

fn commit_case(
    c: &mut Criterion,
    name: &str,
    kinds: &[ReplicaKind],
    fast_path: bool,
    load: Load,
    writers: Writers,
) {
    let setup = open(kinds, fast_path);
    let stats = |s: &Setup| {
        (0..s.cluster.len())
            .filter_map(|i| s.cluster.replica(i).ok())
            .map(|db| db.stats())
            .fold((0, 0, 0), |(c, x, e), st| {
                (c + st.commits, x + st.conflicts, e + st.entries)
            })
    };
    let full: Vec<usize> = (0..setup.cluster.len())
        .filter(|&i| setup.cluster.members()[i].kind == FULL)
        .collect();
    let at = |t: u64| {
        let replica = match writers {
            Writers::OneReplica => full[0],
            Writers::Spread => full[t as usize % full.len()],
        };
        setup.cluster.replica(replica).expect("replica runs")
    };
    let before = stats(&setup);
    let mut bench = c.benchmark_group(name);
    bench.throughput(Throughput::Elements(1));
    bench
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    bench.bench_function(BenchmarkId::new("threads", load.threads), |b| {
        b.iter_custom(|iters| load.run(iters, at))
    });
    bench.finish();
    let after = stats(&setup);
    let commits = (after.0 - before.0).max(1) as f64;
    println!(
        "{name}/threads/{}: {:.2} conflicts per commit, {:.2} commits per log entry",
        load.threads,
        (after.1 - before.1) as f64 / commits,
        commits / (after.2 - before.2).max(1) as f64,
    );
}

fn commits(c: &mut Criterion) {
    let load = |threads, groups, counter| Load {
        threads,
        groups,
        counter,
        two_phase: false,
    };
    let one = load(1, 1, Counter::Shared);
    let (only, spread) = (Writers::OneReplica, Writers::Spread);
    commit_case(
        c,
        "replicated_3full_fast_one_group",
        &[FULL; 3],
        true,
        one,
        only,
    );
    commit_case(
        c,
        "replicated_3full_slow_one_group",
        &[FULL; 3],
        false,
        one,
        only,
    );
    let witness = [FULL, FULL, ReplicaKind::Witness];
    commit_case(
        c,
        "replicated_2full_witness_one_group",
        &witness,
        true,
        one,
        only,
    );
    let contending = load(4, 1, Counter::Shared);
    commit_case(
        c,
        "replicated_3full_fast_one_group",
        &[FULL; 3],
        true,
        contending,
        spread,
    );
    let own = load(4, 1, Counter::PerThread);
    commit_case(
        c,
        "replicated_3full_one_group_own_counters",
        &[FULL; 3],
        true,
        own,
        only,
    );
    commit_case(
        c,
        "replicated_3full_one_group_own_counters_spread",
        &[FULL; 3],
        true,
        own,
        spread,
    );
    let many = load(4, 1000, Counter::Shared);
    commit_case(
        c,
        "replicated_3full_fast_1000_groups",
        &[FULL; 3],
        true,
        many,
        spread,
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
            .transact(&group(id), |tx| increment(tx, id, 0))
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
            snap.get("Counter", &counter_key(id, 0)).expect("get")
        })
    });
    bench.finish();
}

criterion_group!(benches, commits, current_read);
criterion_main!(benches);
