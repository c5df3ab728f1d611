//! `megastore-queue-bench`: queue messages end to end between entity groups on an
//! embedded cluster (every replica in this process, each with its own engine and data
//! directory on the real file system, every acceptance synced). Sender threads each
//! commit transactions that send `--per-commit` messages from their own group to the
//! receiving groups in turn; the background deliverer moves them; receiver threads, one
//! per receiving group, take up to `--receive-batch` messages per transaction until
//! every message has arrived.
//!
//! ```text
//! megastore-queue-bench --senders 8 --receivers 4 --messages 20000
//! megastore-queue-bench --replicas full --per-commit 10
//! ```
//!
//! Prints progress every second on standard error, then one result line: messages per
//! second from the first send to the last receive, and the send-to-receive latency.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::megastore_counter::open_cluster_with_schema;
use benches::report::{finish, micros, percentile, report_progress, DataDir, STOP};
use clap::{Parser, ValueEnum};
use megastore::cluster::Cluster;
use megastore::replicas::ReplicaKind;
use megastore::replication::ProposeOptions;
use megastore::{GroupKey, Value};

const SCHEMA: &str = "
CREATE SCHEMA QueueBench;
CREATE TABLE Mailbox { required int64 id; } PRIMARY KEY(id), ENTITY GROUP ROOT;
CREATE QUEUE Work;
";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Full,
    Witness,
}

#[derive(Parser)]
#[command(about = "Queue messages end to end between Megastore entity groups")]
struct Cli {
    /// The replicas, in order (a single `full` is not replicated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "full,full,full"
    )]
    replicas: Vec<Kind>,
    /// Sending threads, each with its own entity group.
    #[arg(long, default_value_t = 4)]
    senders: u64,
    /// Receiving groups, each drained by its own thread.
    #[arg(long, default_value_t = 2)]
    receivers: u64,
    /// Messages in all.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Messages each sending transaction sends.
    #[arg(long, default_value_t = 1)]
    per_commit: u64,
    /// Most messages a receiving transaction takes.
    #[arg(long, default_value_t = 100)]
    receive_batch: usize,
    /// Payload bytes per message (at least 16: the send time rides in it).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Where the replicas' data directories go (default: a new directory under /tmp,
    /// removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    finish("megastore-queue-bench", run(&Cli::parse()))
}

fn run(cli: &Cli) -> Result<String, String> {
    if cli.senders == 0 || cli.receivers == 0 || cli.messages == 0 || cli.per_commit == 0 {
        return Err(
            "--senders, --receivers, --messages and --per-commit must be at least 1".into(),
        );
    }
    if cli.payload < 16 {
        return Err("--payload must be at least 16 bytes".into());
    }
    let kinds: Vec<ReplicaKind> = cli
        .replicas
        .iter()
        .map(|k| match k {
            Kind::Full => ReplicaKind::Full,
            Kind::Witness => ReplicaKind::Witness,
        })
        .collect();
    if kinds.first() != Some(&ReplicaKind::Full) {
        return Err("the first replica must be full (everyone works there)".into());
    }
    let data = DataDir::new(cli.dir.as_deref(), "megastore-queue-bench")?;
    let cluster =
        open_cluster_with_schema(&data.path, &kinds, ProposeOptions::default(), None, SCHEMA)
            .map_err(|e| e.to_string())?;
    let result = measure(cli, &cluster);
    drop(cluster);
    result
}

fn mailbox(id: u64) -> GroupKey {
    GroupKey::new("Mailbox", vec![Value::Int64(id as i64)])
}

fn measure(cli: &Cli, cluster: &Cluster) -> Result<String, String> {
    let db = cluster.replica(0).map_err(|e| e.to_string())?;
    let commits_per_sender = cli.messages.div_ceil(cli.senders * cli.per_commit);
    let total = commits_per_sender * cli.senders * cli.per_commit;
    let received = AtomicU64::new(0);
    let started = Instant::now();
    // Receivers are groups 0..receivers; senders are the groups after them.
    let latencies = std::thread::scope(|s| -> Result<Vec<Duration>, String> {
        let progress = s.spawn(|| report_progress(&received, total, "messages received"));
        let senders: Vec<_> = (0..cli.senders)
            .map(|t| {
                s.spawn(move || -> Result<(), String> {
                    let from = mailbox(cli.receivers + t);
                    for c in 0..commits_per_sender {
                        db.transact(&from, |tx| {
                            for m in 0..cli.per_commit {
                                let to = mailbox((c * cli.per_commit + m + t) % cli.receivers);
                                tx.send("Work", &to, payload(started, cli.payload))?;
                            }
                            Ok(())
                        })
                        .map_err(|e| format!("send: {e}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        let receivers: Vec<_> = (0..cli.receivers)
            .map(|r| {
                let received = &received;
                s.spawn(move || -> Result<Vec<Duration>, String> {
                    let group = mailbox(r);
                    let mut latencies = Vec::new();
                    while received.load(Ordering::Relaxed) < total {
                        let (got, _) = db
                            .transact(&group, |tx| tx.receive("Work", cli.receive_batch))
                            .map_err(|e| format!("receive: {e}"))?;
                        let now = started.elapsed();
                        if got.is_empty() {
                            std::thread::sleep(Duration::from_micros(500));
                            continue;
                        }
                        for m in &got {
                            latencies.push(now.saturating_sub(sent_at(&m.payload)));
                        }
                        received.fetch_add(got.len() as u64, Ordering::Relaxed);
                    }
                    Ok(latencies)
                })
            })
            .collect();
        for sender in senders {
            sender
                .join()
                .map_err(|_| "a sender panicked".to_string())??;
        }
        let mut latencies = Vec::new();
        for receiver in receivers {
            latencies.extend(
                receiver
                    .join()
                    .map_err(|_| "a receiver panicked".to_string())??,
            );
        }
        received.store(STOP, Ordering::Relaxed);
        let _ = progress.join();
        Ok(latencies)
    });
    let wall = started.elapsed();
    let mut latencies = latencies?;
    latencies.sort_unstable();
    Ok(format!(
        "{} messages in {:.2} s: {:.0} messages/s end to end ({} senders sending {} per commit, {} receivers taking up to {}); send-to-receive latency p50 {} p99 {} max {}",
        latencies.len(),
        wall.as_secs_f64(),
        latencies.len() as f64 / wall.as_secs_f64(),
        cli.senders,
        cli.per_commit,
        cli.receivers,
        cli.receive_batch,
        micros(percentile(&latencies, 0.5)),
        micros(percentile(&latencies, 0.99)),
        micros(percentile(&latencies, 1.0)),
    ))
}

/// A payload of `size` bytes starting with the time since `started` (nanoseconds).
fn payload(started: Instant, size: usize) -> Vec<u8> {
    let mut p = (started.elapsed().as_nanos() as u64).to_be_bytes().to_vec();
    p.resize(size, b'.');
    p
}

fn sent_at(payload: &[u8]) -> Duration {
    let nanos = payload
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    Duration::from_nanos(nanos)
}
