//! `bigtable-server`: the storage engine served as the Cloud Bigtable v2 API.
//!
//! ```text
//! bigtable-server --data-dir ./bigtable-data --listen 127.0.0.1:8086
//! BIGTABLE_EMULATOR_HOST=127.0.0.1:8086 cbt -project p -instance i ls
//! ```
//! Ctrl-C (SIGINT) or SIGTERM stops accepting calls, finishes those in flight, flushes
//! memtables to SSTables and closes the engine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bigtable::{Engine, EngineOptions};
use clap::{Parser, ValueEnum};
use tracing::{error, info};
use wal::fs::RealFs;
use wal::SyncPolicy;

#[derive(Clone, Copy, ValueEnum)]
enum Sync {
    /// Acknowledge a write once its log record is fsynced (group commit).
    Always,
    /// Acknowledge once written to the OS; fsync every 100 ms.
    Interval,
    /// Never fsync the log (benchmarks only: a machine crash loses acknowledged writes).
    Never,
}

#[derive(Parser)]
#[command(about = "The bigtable engine served as the Cloud Bigtable v2 gRPC API")]
struct Cli {
    /// Where the data lives (created if missing).
    #[arg(long, default_value = "./bigtable-data")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8086")]
    listen: SocketAddr,
    #[arg(long, value_enum, default_value = "always")]
    sync: Sync,
    /// Block cache size in MiB.
    #[arg(long, default_value_t = 128)]
    cache_mib: usize,
    /// A tablet's memtable is flushed at this many KiB (default 16 MiB).
    #[arg(long, default_value_t = 16 << 10)]
    memtable_kib: usize,
    /// A tablet splits when its SSTables pass this many KiB (default 128 MiB).
    #[arg(long, default_value_t = 128 << 10)]
    tablet_split_kib: u64,
    /// Once listening, write the bound address here (useful with port 0).
    #[arg(long)]
    address_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let options = EngineOptions {
        sync: match cli.sync {
            Sync::Always => SyncPolicy::EveryCommit,
            Sync::Interval => SyncPolicy::Interval(Duration::from_millis(100)),
            Sync::Never => SyncPolicy::Never,
        },
        block_cache_bytes: cli.cache_mib << 20,
        tablet_split_bytes: cli.tablet_split_kib << 10,
        memtable_bytes: cli.memtable_kib << 10,
        ..EngineOptions::default()
    };
    let engine = Engine::open(Arc::new(RealFs), &cli.data_dir, options)
        .map_err(|e| format!("opening {}: {e}", cli.data_dir.display()))?;
    let engine = Arc::new(engine);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("starting tokio: {e}"))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .map_err(|e| format!("listening on {}: {e}", cli.listen))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        if let Some(file) = &cli.address_file {
            // Written whole, then renamed, so a reader never sees half an address.
            let partial = file.with_extension("partial");
            std::fs::write(&partial, address.to_string())
                .and_then(|()| std::fs::rename(&partial, file))
                .map_err(|e| format!("writing {}: {e}", file.display()))?;
        }
        info!(
            "serving the Cloud Bigtable API on {address} (data in {}); try BIGTABLE_EMULATOR_HOST={address} cbt -project p -instance i ls",
            cli.data_dir.display()
        );
        bigtable::server::serve(engine.clone(), listener, shutdown_signal())
            .await
            .map_err(|e| format!("serving: {e}"))
    })?;
    info!("shutting down: flushing memtables");
    drop(runtime);
    let engine =
        Arc::try_unwrap(engine).map_err(|_| "engine still in use at shutdown".to_string())?;
    engine.flush().map_err(|e| format!("flushing: {e}"))?;
    engine.close().map_err(|e| format!("closing: {e}"))?;
    info!("stopped cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
