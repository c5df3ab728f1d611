//! `megastore-bench`: commit latency and throughput of Megastore transactions on an
//! embedded cluster (every replica in this process, each with its own engine and data
//! directory on the real file system, every acceptance synced). Each transaction reads
//! a counter entity of its group and writes it back plus one (with `--two-phase`, one in
//! its group and one in the next, by two-phase commit).
//!
//! ```text
//! megastore-bench --replicas full,full,full --threads 4 --groups 1 --counter per-thread
//! megastore-bench --replicas full,full,witness --slow-path --commits 5000
//! megastore-bench --two-phase --groups 2 --commits 2000
//! ```
//!
//! Prints progress every second on standard error, then one result line: commits per
//! second, latency percentiles per transaction, conflicts per commit and commits per
//! log entry.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::megastore_counter::{counter_key, group, open_cluster, Counter, Load};
use benches::report::{finish, micros, percentile, report_progress, DataDir, STOP};
use clap::{Parser, ValueEnum};
use megastore::cluster::{Cluster, TransportWrapper};
use megastore::node::{spawn, Services};
use megastore::remote::client::cluster_wrapper;
use megastore::remote::latency::{self, Latencies};
use megastore::replicas::ReplicaKind;
use megastore::replication::ProposeOptions;
use megastore::{Database, ReadMode};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Full,
    Witness,
    ReadOnly,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sends {
    Auto,
    Parallel,
    Sequential,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Via {
    /// Replicas call each other directly.
    InProcess,
    /// Replicas reach each other only through their replication servers over gRPC on
    /// loopback.
    Grpc,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Writers {
    /// Every thread writes at the first full replica.
    One,
    /// Thread `t` writes at full replica `t % full replicas`.
    Spread,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CounterArg {
    /// All threads on a group increment one counter (they contend).
    Shared,
    /// Each thread increments its own counter of the group (group commit batches them).
    PerThread,
}

#[derive(Parser)]
#[command(about = "Commit latency and throughput of Megastore on an embedded cluster")]
struct Cli {
    /// The replicas, in order (a single `full` is not replicated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "full,full,full"
    )]
    replicas: Vec<Kind>,
    /// Always prepare before accepting (no fast path at the position's leader).
    #[arg(long)]
    slow_path: bool,
    /// How a round's requests go to the replicas (auto: in parallel over gRPC, one
    /// after another in process, where a call costs less than a thread).
    #[arg(long, value_enum, default_value = "auto")]
    sends: Sends,
    /// How the replicas reach each other.
    #[arg(long, value_enum, default_value = "in-process")]
    transport: Via,
    /// Each replica's region, in order (for `--inject-latency`).
    #[arg(long, value_delimiter = ',')]
    regions: Vec<String>,
    /// Round-trip times between regions, `a:b=ms,...`: every call between replicas
    /// of those regions is delayed by it.
    #[arg(long)]
    inject_latency: Option<String>,
    /// Current reads to time after the commits, at the first writer's replica.
    #[arg(long, default_value_t = 1000)]
    reads: u64,
    #[arg(long, default_value_t = 1)]
    threads: u64,
    /// Entity groups the threads spread over.
    #[arg(long, default_value_t = 1)]
    groups: u64,
    #[arg(long, value_enum, default_value = "shared")]
    counter: CounterArg,
    #[arg(long, value_enum, default_value = "spread")]
    writers: Writers,
    /// Each transaction increments a counter in two groups (its own and the next) by
    /// two-phase commit, instead of one in its own group.
    #[arg(long)]
    two_phase: bool,
    /// Transactions to commit (after 10% as many to warm up).
    #[arg(long, default_value_t = 10_000)]
    commits: u64,
    /// Where the replicas' data directories go (default: a new directory under /tmp,
    /// removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    finish("megastore-bench", run(&Cli::parse()))
}

fn run(cli: &Cli) -> Result<String, String> {
    if cli.threads == 0 || cli.groups == 0 || cli.commits == 0 {
        return Err("--threads, --groups and --commits must be at least 1".into());
    }
    if cli.two_phase && cli.groups < 2 {
        return Err("--two-phase needs --groups of at least 2".into());
    }
    let kinds: Vec<ReplicaKind> = cli
        .replicas
        .iter()
        .map(|k| match k {
            Kind::Full => ReplicaKind::Full,
            Kind::Witness => ReplicaKind::Witness,
            Kind::ReadOnly => ReplicaKind::ReadOnly,
        })
        .collect();
    let full: Vec<usize> = (0..kinds.len())
        .filter(|&i| kinds[i] == ReplicaKind::Full)
        .collect();
    if full.is_empty() {
        return Err("at least one replica must be full (writers write there)".into());
    }
    let data = DataDir::new(cli.dir.as_deref(), "megastore-bench")?;
    let root = &data.path;
    let propose = ProposeOptions {
        fast_path: !cli.slow_path,
        parallel: match cli.sends {
            Sends::Parallel => true,
            Sends::Sequential => false,
            Sends::Auto => cli.transport == Via::Grpc,
        },
        ..ProposeOptions::default()
    };
    let (cluster, servers) = match cli.transport {
        Via::InProcess => {
            let wrap = with_latency(None, cli)?;
            let cluster = open_cluster(root, &kinds, propose, wrap).map_err(|e| e.to_string())?;
            (cluster, None)
        }
        Via::Grpc => {
            let (cluster, servers) = over_grpc(root, &kinds, propose, cli)?;
            (cluster, Some(servers))
        }
    };
    let result = measure(cli, &cluster, &full);
    if let Some(servers) = servers {
        servers.shutdown_background();
    }
    drop(cluster);
    result
}

/// The cluster with each replica's replication server listening on a loopback port
/// (served from the returned runtime), the replicas reaching each other only there.
fn over_grpc(
    root: &std::path::Path,
    kinds: &[ReplicaKind],
    propose: ProposeOptions,
    cli: &Cli,
) -> Result<(Cluster, tokio::runtime::Runtime), String> {
    let listeners = kinds
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot listen on loopback: {e}"))?;
    let addresses = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let wrap =
        cluster_wrapper(&addresses, Duration::from_secs(2), None).map_err(|e| e.to_string())?;
    let cluster = open_cluster(root, kinds, propose, with_latency(Some(wrap), cli)?)
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the server runtime: {e}"))?;
    for (i, listener) in listeners.into_iter().enumerate() {
        let peer = cluster.replica(i).map_err(|e| e.to_string())?.peer();
        spawn(
            runtime.handle(),
            Services::replication_only(peer),
            listener,
            std::future::pending(),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok((cluster, runtime))
}

/// `base` (in process if `None`), with `--inject-latency` added when asked for.
fn with_latency(
    base: Option<Arc<TransportWrapper>>,
    cli: &Cli,
) -> Result<Option<Arc<TransportWrapper>>, String> {
    let Some(spec) = &cli.inject_latency else {
        return Ok(base);
    };
    if cli.regions.len() != cli.replicas.len() {
        return Err(format!(
            "--inject-latency needs --regions naming each of the {} replicas",
            cli.replicas.len()
        ));
    }
    let latencies = Arc::new(Latencies::parse(spec).map_err(|e| e.to_string())?);
    Ok(Some(latency::cluster_wrapper(
        base,
        cli.regions.clone(),
        latencies,
    )))
}

fn measure(cli: &Cli, cluster: &Cluster, full: &[usize]) -> Result<String, String> {
    let load = Load {
        threads: cli.threads,
        groups: cli.groups,
        counter: match cli.counter {
            CounterArg::Shared => Counter::Shared,
            CounterArg::PerThread => Counter::PerThread,
        },
        two_phase: cli.two_phase,
    };
    let mut databases = Vec::new();
    for t in 0..cli.threads {
        let replica = match cli.writers {
            Writers::One => full[0],
            Writers::Spread => full[t as usize % full.len()],
        };
        databases.push(cluster.replica(replica).map_err(|e| e.to_string())?);
    }
    let at = |t: u64| databases[t as usize];
    let warm_up = (cli.commits / 10).max(1);
    load.run(warm_up, at);
    let stats = || {
        (0..cluster.len())
            .filter_map(|i| cluster.replica(i).ok())
            .map(|db| db.stats())
            .fold((0, 0, 0), |(c, x, e), s| {
                (c + s.commits, x + s.conflicts, e + s.entries)
            })
    };
    let before = stats();
    let done = Arc::new(AtomicU64::new(0));
    let (wall, mut latencies) = std::thread::scope(|s| {
        let progress = s.spawn({
            let done = done.clone();
            let total = cli.commits;
            move || report_progress(&done, total, "commits")
        });
        let measured = load.run_recording(cli.commits, at, &done);
        done.store(STOP, Ordering::Relaxed);
        let _ = progress.join();
        measured
    });
    let after = stats();
    latencies.sort_unstable();
    let commits = (after.0 - before.0).max(1) as f64;
    let mut line = format!(
        "{} commits in {:.2} s: {:.0} commits/s; latency p50 {} p99 {} max {}; {:.2} conflicts per commit, {:.2} commits per log entry",
        latencies.len(),
        wall.as_secs_f64(),
        cli.commits as f64 / wall.as_secs_f64(),
        micros(percentile(&latencies, 0.5)),
        micros(percentile(&latencies, 0.99)),
        micros(percentile(&latencies, 1.0)),
        (after.1 - before.1) as f64 / commits,
        commits / (after.2 - before.2).max(1) as f64,
    );
    if cli.reads > 0 {
        let reads = current_reads(databases[0], cli.reads)?;
        line += &format!(
            "; current read p50 {} p99 {}",
            micros(percentile(&reads, 0.5)),
            micros(percentile(&reads, 0.99))
        );
    }
    Ok(line)
}

/// The latencies, sorted, of `n` current reads of group 0's first counter at `db`.
fn current_reads(db: &Database, n: u64) -> Result<Vec<Duration>, String> {
    let mut latencies = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let began = Instant::now();
        let snapshot = db
            .read(&group(0), ReadMode::Current)
            .map_err(|e| format!("current read: {e}"))?;
        snapshot
            .get("Counter", &counter_key(0, 0))
            .map_err(|e| format!("current read: {e}"))?;
        latencies.push(began.elapsed());
    }
    latencies.sort_unstable();
    Ok(latencies)
}
