//! `megastore serve`: the embedded default (every replica in this process, each with
//! its own listener and data directory), or one replica of a configured cluster.

use std::path::PathBuf;
use std::sync::Arc;

use megastore::cluster::{Cluster, ClusterOptions};
use megastore::deployment::{parse_kind, ClusterConfig};
use megastore::node::{spawn, Services};
use megastore::remote::latency::{cluster_wrapper, Latencies};
use megastore::replicas::ReplicaKind;
use megastore::tls::TlsFiles;
use wal::fs::RealFs;

use crate::ServeArgs;

fn kind_name(kind: ReplicaKind) -> &'static str {
    megastore::api::server::kind_name(kind)
}

fn bind(address: &str) -> Result<std::net::TcpListener, String> {
    std::net::TcpListener::bind(address).map_err(|e| format!("cannot listen on {address}: {e}"))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    // The replication server answers on these threads, and an answer may wait for an
    // fsync: more threads than cores let several share one (the log's group commit).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("megastore-server")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the server runtime: {e}"))
}

/// Completes on Ctrl-C or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Says the replicas serve, then runs until a stop signal; `close` closes them.
fn run_until_stopped(
    runtime: tokio::runtime::Runtime,
    schema: &str,
    close: impl FnOnce(),
) -> Result<(), String> {
    println!("ready: schema {schema}; Ctrl-C stops");
    runtime.block_on(stop_signal());
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    close();
    println!("stopped");
    Ok(())
}

pub fn run(args: &ServeArgs, token: Option<String>) -> Result<(), String> {
    match (&args.replica, &args.config) {
        (Some(_), Some(_))
            if args.tls_cert.is_some()
                || args.tls_key.is_some()
                || args.tls_client_ca.is_some() =>
        {
            Err("with --config, the config file sets tls_cert, tls_key and tls_client_ca".into())
        }
        (Some(id), Some(config)) => one_replica(*id, config),
        (None, None) => embedded(args, token),
        _ => Err("--replica and --config go together".into()),
    }
}

fn embedded(args: &ServeArgs, token: Option<String>) -> Result<(), String> {
    let tls = TlsFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
        client_ca: args.tls_client_ca.clone(),
        ..TlsFiles::default()
    }
    .server()
    .map_err(|e| e.to_string())?;
    let kinds = args
        .replicas
        .split(',')
        .map(|k| parse_kind(k.trim()).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let schema = match &args.schema {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => megastore::examples::PHOTO_APP.to_string(),
    };
    let listeners = (0..kinds.len())
        .map(|i| {
            let port = if args.port == 0 {
                0
            } else {
                args.port + i as u16
            };
            bind(&format!("{}:{port}", args.host))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dirs: Vec<PathBuf> = (0..kinds.len())
        .map(|i| args.dir.join(format!("replica-{i}")))
        .collect();
    let wrap = match &args.inject_latency {
        None => None,
        Some(spec) => {
            let regions: Vec<String> = args.regions.split(',').map(str::to_string).collect();
            if regions.len() != kinds.len() {
                return Err(format!(
                    "--inject-latency needs --regions naming each of the {} replicas",
                    kinds.len()
                ));
            }
            let latencies = Latencies::parse(spec).map_err(|e| e.to_string())?;
            Some(cluster_wrapper(None, regions, Arc::new(latencies)))
        }
    };
    let options = ClusterOptions {
        kinds: kinds.clone(),
        ..ClusterOptions::default()
    };
    let fs = kinds.iter().map(|_| RealFs::shared()).collect();
    let cluster = Cluster::open_wrapped(fs, dirs.clone(), &schema, options, wrap)
        .map_err(|e| e.to_string())?;
    let runtime = runtime()?;
    for (i, listener) in listeners.into_iter().enumerate() {
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let db = cluster.handle(i).map_err(|e| e.to_string())?;
        let services = Services::replica(db, token.clone()).with_tls(tls.clone());
        spawn(runtime.handle(), services, listener, stop_signal()).map_err(|e| e.to_string())?;
        println!(
            "replica {i} ({}) listening on {address}, data in {}",
            kind_name(kinds[i]),
            dirs[i].display()
        );
    }
    let schema = cluster
        .replica(0)
        .map_err(|e| e.to_string())?
        .schema()
        .name
        .clone();
    run_until_stopped(runtime, &schema, || drop(cluster))
}

fn one_replica(id: u32, config: &std::path::Path) -> Result<(), String> {
    let config = ClusterConfig::load(config).map_err(|e| e.to_string())?;
    let replica = config
        .replicas
        .get(id as usize)
        .ok_or_else(|| format!("the config has no replica {id}"))?
        .clone();
    let tls = replica.tls.server().map_err(|e| e.to_string())?;
    let listener = bind(&replica.address)?;
    let db = Arc::new(config.open_replica(id).map_err(|e| e.to_string())?);
    let runtime = runtime()?;
    let services = Services::replica(db.clone(), config.token.clone()).with_tls(tls);
    spawn(runtime.handle(), services, listener, stop_signal()).map_err(|e| e.to_string())?;
    println!(
        "replica {id} ({}) listening on {}, data in {}",
        kind_name(replica.member.kind),
        replica.address,
        replica.dir.display()
    );
    let schema = db.schema().name.clone();
    run_until_stopped(runtime, &schema, || drop(db))
}
