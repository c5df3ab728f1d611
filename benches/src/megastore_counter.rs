//! The Megastore benchmarks' workload: counter entities in each entity group, which a
//! read-modify-write transaction reads and writes back plus one, from several threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::path::Path;
use std::sync::Arc;

use bigtable::fs::RealFs;
use megastore::cluster::{Cluster, ClusterOptions, TransportWrapper};
use megastore::replicas::ReplicaKind;
use megastore::replication::ProposeOptions;
use megastore::{Database, DatabaseOptions, Entity, GroupKey, Transaction, Value};

pub const SCHEMA: &str = "
CREATE SCHEMA Bench;
CREATE TABLE Account { required int64 id; } PRIMARY KEY(id), ENTITY GROUP ROOT;
CREATE TABLE Counter { required int64 id; required int32 n; required int64 value; }
  PRIMARY KEY(id, n), IN TABLE Account, ENTITY GROUP KEY(id) REFERENCES Account;
";

/// An embedded cluster of `kinds` on the real file system, replica `i` in
/// `root/replica-i`, proposing with `propose`, its replicas reaching each other
/// through `wrap` (in process if `None`); transactions retry without limit.
pub fn open_cluster(
    root: &Path,
    kinds: &[ReplicaKind],
    propose: ProposeOptions,
    wrap: Option<Arc<TransportWrapper>>,
) -> Result<Cluster, megastore::Error> {
    open_cluster_with_schema(root, kinds, propose, wrap, SCHEMA)
}

/// [`open_cluster`] with another schema.
pub fn open_cluster_with_schema(
    root: &Path,
    kinds: &[ReplicaKind],
    propose: ProposeOptions,
    wrap: Option<Arc<TransportWrapper>>,
    schema: &str,
) -> Result<Cluster, megastore::Error> {
    let dirs = (0..kinds.len())
        .map(|i| root.join(format!("replica-{i}")))
        .collect();
    let options = ClusterOptions {
        kinds: kinds.to_vec(),
        propose,
        database: DatabaseOptions {
            max_attempts: 1_000_000,
            ..DatabaseOptions::default()
        },
        ..ClusterOptions::default()
    };
    let fs = kinds.iter().map(|_| RealFs::shared()).collect();
    Cluster::open_wrapped(fs, dirs, schema, options, wrap)
}

pub fn group(id: i64) -> GroupKey {
    GroupKey::new("Account", vec![Value::Int64(id)])
}

/// The key of counter `n` of group `id`.
pub fn counter_key(id: i64, n: i32) -> [Value; 2] {
    [Value::Int64(id), Value::Int32(n)]
}

/// Adds one to counter `n` of group `id` (creating it at 1).
pub fn increment(tx: &mut Transaction<'_>, id: i64, n: i32) -> Result<(), megastore::Error> {
    let value = match tx.get("Counter", &counter_key(id, n))? {
        Some(c) => match c.get("value") {
            Some(Value::Int64(v)) => *v,
            _ => 0,
        },
        None => 0,
    };
    tx.put(
        Entity::new("Counter")
            .set("id", Value::Int64(id))
            .set("n", Value::Int32(n))
            .set("value", Value::Int64(value + 1)),
    )
}

/// Which counter of its group a thread increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Counter 0: threads on one group contend for one entity.
    Shared,
    /// Counter `t` for thread `t`: threads on one group touch disjoint entities, so
    /// their transactions can share log entries.
    PerThread,
}

/// How many threads increment counters of how many groups.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub threads: u64,
    pub groups: u64,
    pub counter: Counter,
    /// Each transaction increments a counter in its group and in the next one, as one
    /// two-phase transaction (`Database::transact_multi`).
    pub two_phase: bool,
}

impl Load {
    /// Runs `total` increments, thread `t` at database `at(t)` on groups
    /// `t, t + threads, ...` modulo `groups`; returns the wall time, scaled to exactly
    /// `total` when the threads' shares round it up.
    pub fn run<'a>(&self, total: u64, at: impl Fn(u64) -> &'a Database + Sync) -> Duration {
        self.run_recording(total, at, &AtomicU64::new(0)).0
    }

    /// As [`Load::run`], also counting commits in `done` as they happen and returning
    /// every transaction's latency (in no particular order).
    pub fn run_recording<'a>(
        &self,
        total: u64,
        at: impl Fn(u64) -> &'a Database + Sync,
        done: &AtomicU64,
    ) -> (Duration, Vec<Duration>) {
        let per_thread = total.div_ceil(self.threads);
        let started = Instant::now();
        let latencies = std::thread::scope(|s| {
            let threads: Vec<_> = (0..self.threads)
                .map(|t| {
                    let db = at(t);
                    let n = match self.counter {
                        Counter::Shared => 0,
                        Counter::PerThread => t as i32,
                    };
                    s.spawn(move || {
                        let mut latencies = Vec::with_capacity(per_thread as usize);
                        for i in 0..per_thread {
                            let id = ((t + i * self.threads) % self.groups) as i64;
                            let began = Instant::now();
                            if self.two_phase {
                                let next = (id + 1) % self.groups as i64;
                                db.transact_multi(&[group(id), group(next)], |tx| {
                                    increment(tx.on(&group(id))?, id, n)?;
                                    increment(tx.on(&group(next))?, next, n)
                                })
                                .map(|_| ())
                            } else {
                                db.transact(&group(id), |tx| increment(tx, id, n))
                                    .map(|_| ())
                            }
                            .expect("commit during benchmark");
                            latencies.push(began.elapsed());
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        latencies
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().expect("benchmark thread"))
                .collect()
        });
        let wall = started
            .elapsed()
            .mul_f64(total as f64 / (per_thread * self.threads) as f64);
        (wall, latencies)
    }
}
