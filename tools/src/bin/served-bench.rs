//! `served-bench`: write latency and throughput of a served cluster, driven over the
//! network the way its users drive it: Megastore through its client API (each write
//! a blind write of one `Photo` entity of PhotoApp, the schema `megastore serve` starts
//! with, its URL the value), etcd through its v3 KV `Put`. Both get the same load from
//! the same client threads, so the two compare like for like.
//!
//! ```text
//! served-bench --system megastore --endpoints 127.0.0.1:7401 --clients 1 --ops 5000
//! served-bench --system etcd --endpoints 127.0.0.1:2379,127.0.0.1:2479,127.0.0.1:2579 \
//!     --clients 64 --groups 64 --ops 20000
//! ```
//!
//! Client `c` writes its own entity (photo `c` of user `c % groups`; etcd: the key
//! `served-bench/<c % groups>/<c>`) through endpoint `c % endpoints`. So clients of
//! one group write different entities of it, which may share log entries.
//! Prints progress every second on standard error, then one result line.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::report::{finish, micros, percentile, report_progress, STOP};
use clap::{Parser, ValueEnum};
use megastore::api::client::{Client, ClientOptions};
use megastore::etcd::messages::PutRequest;
use megastore::etcd::KvClient;
use megastore::{Entity, GroupKey, ReadMode, Value};
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum System {
    Megastore,
    Etcd,
}

#[derive(Parser)]
#[command(about = "Write latency and throughput of a served Megastore or etcd cluster")]
struct Cli {
    #[arg(long, value_enum)]
    system: System,
    /// The servers' client addresses (`host:port`).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Client threads, each with one write in flight.
    #[arg(long, default_value_t = 1)]
    clients: u64,
    /// Entity groups (etcd: keys) the clients spread over.
    #[arg(long, default_value_t = 1)]
    groups: u64,
    /// Writes to time (after 10% as many to warm up).
    #[arg(long, default_value_t = 10_000)]
    ops: u64,
    /// Bytes in each written value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Current reads to time after the writes, through the first endpoint (Megastore).
    #[arg(long, default_value_t = 0)]
    reads: u64,
    /// The bearer token the Megastore servers require.
    #[arg(long)]
    token: Option<String>,
}

/// One write by client `client` to group `group`.
trait Writer: Sync {
    fn write(&self, client: u64, group: u64, value: &str) -> Result<(), String>;
    /// The client of the first endpoint, where current reads are timed (Megastore).
    fn reader(&self) -> Option<&Client> {
        None
    }
}

struct MegastoreWriter {
    clients: Vec<Client>,
}

impl MegastoreWriter {
    fn connect(cli: &Cli) -> Result<Self, String> {
        let options = ClientOptions {
            token: cli.token.clone(),
            ..ClientOptions::default()
        };
        let clients = cli
            .endpoints
            .iter()
            .map(|e| Client::connect(e, &options).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(MegastoreWriter { clients })
    }
}

fn group(g: u64) -> GroupKey {
    GroupKey::new("User", vec![Value::Int64(g as i64)])
}

impl Writer for MegastoreWriter {
    fn write(&self, client: u64, g: u64, value: &str) -> Result<(), String> {
        let photo = Entity::new("Photo")
            .set("user_id", Value::Int64(g as i64))
            .set("photo_id", Value::Int32(client as i32))
            .set("time", Value::Int64(0))
            .set("full_url", Value::String(value.to_string()));
        let at = &self.clients[client as usize % self.clients.len()];
        at.write(&group(g), &[photo])
            .map(drop)
            .map_err(|e| format!("write at {}: {e}", at.address()))
    }

    fn reader(&self) -> Option<&Client> {
        self.clients.first()
    }
}

struct EtcdWriter {
    runtime: tokio::runtime::Runtime,
    clients: Vec<KvClient<Channel>>,
}

impl EtcdWriter {
    fn connect(cli: &Cli) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let _inside = runtime.enter();
        let clients = cli
            .endpoints
            .iter()
            .map(|e| {
                Endpoint::from_shared(format!("http://{e}"))
                    .map(|e| KvClient::new(e.tcp_nodelay(true).connect_lazy()))
                    .map_err(|why| format!("bad endpoint {e}: {why}"))
            })
            .collect::<Result<_, _>>()?;
        drop(_inside);
        Ok(EtcdWriter { runtime, clients })
    }
}

impl Writer for EtcdWriter {
    fn write(&self, client: u64, g: u64, value: &str) -> Result<(), String> {
        let mut kv = self.clients[client as usize % self.clients.len()].clone();
        let put = PutRequest {
            key: format!("served-bench/{g}/{client}").into_bytes(),
            value: value.as_bytes().to_vec(),
            lease: 0,
        };
        self.runtime
            .block_on(kv.put(put))
            .map(drop)
            .map_err(|e| format!("etcd put: {}", e.message()))
    }
}

fn main() -> ExitCode {
    finish("served-bench", run(&Cli::parse()))
}

fn run(cli: &Cli) -> Result<String, String> {
    if cli.clients == 0 || cli.groups == 0 || cli.ops == 0 {
        return Err("--clients, --groups and --ops must be at least 1".into());
    }
    let writer: Box<dyn Writer> = match cli.system {
        System::Megastore => Box::new(MegastoreWriter::connect(cli)?),
        System::Etcd => Box::new(EtcdWriter::connect(cli)?),
    };
    let value = "v".repeat(cli.value_bytes);
    drive(writer.as_ref(), cli, (cli.ops / 10).max(1), &value, None)?;
    let done = Arc::new(AtomicU64::new(0));
    let (wall, latencies) = std::thread::scope(|s| {
        let progress = s.spawn({
            let done = done.clone();
            move || report_progress(&done, cli.ops, "writes")
        });
        let measured = drive(writer.as_ref(), cli, cli.ops, &value, Some(&done));
        done.store(STOP, Ordering::Relaxed);
        let _ = progress.join();
        measured
    })?;
    let mut line = format!(
        "{} writes by {} clients over {} groups in {:.2} s: {:.0} writes/s; latency p50 {} p99 {} max {}",
        latencies.len(),
        cli.clients,
        cli.groups,
        wall.as_secs_f64(),
        latencies.len() as f64 / wall.as_secs_f64(),
        micros(percentile(&latencies, 0.5)),
        micros(percentile(&latencies, 0.99)),
        micros(percentile(&latencies, 1.0)),
    );
    if let Some(client) = writer.reader().filter(|_| cli.reads > 0) {
        let reads = current_reads(cli, client)?;
        line += &format!(
            "; current read p50 {} p99 {}",
            micros(percentile(&reads, 0.5)),
            micros(percentile(&reads, 0.99))
        );
    }
    Ok(line)
}

/// `total` writes spread over the clients; the wall time and every write's latency,
/// sorted. `done` counts writes as they finish.
fn drive(
    writer: &dyn Writer,
    cli: &Cli,
    total: u64,
    value: &str,
    done: Option<&AtomicU64>,
) -> Result<(Duration, Vec<Duration>), String> {
    let started = Instant::now();
    let per_client = std::thread::scope(|s| {
        let threads: Vec<_> = (0..cli.clients)
            .map(|c| {
                let n = total / cli.clients + u64::from(c < total % cli.clients);
                s.spawn(move || {
                    let mut latencies = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        let began = Instant::now();
                        writer.write(c, c % cli.groups, value)?;
                        latencies.push(began.elapsed());
                        if let Some(done) = done {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok::<_, String>(latencies)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("a client panicked".into())))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let wall = started.elapsed();
    let mut latencies: Vec<Duration> = per_client.into_iter().flatten().collect();
    latencies.sort_unstable();
    Ok((wall, latencies))
}

/// The latencies, sorted, of current reads of client 0's photo at the first endpoint.
fn current_reads(cli: &Cli, client: &Client) -> Result<Vec<Duration>, String> {
    let mut latencies = Vec::with_capacity(cli.reads as usize);
    for _ in 0..cli.reads {
        let began = Instant::now();
        client
            .get(
                &group(0),
                "Photo",
                &[Value::Int64(0), Value::Int32(0)],
                ReadMode::Current,
            )
            .map_err(|e| format!("current read: {e}"))?;
        latencies.push(began.elapsed());
    }
    latencies.sort_unstable();
    Ok(latencies)
}
