//! `megastore`: serve a Megastore cluster (`serve`), and talk to one through the client
//! API (every other command). See `docs/megastore-serve.md`.

mod commands;
mod serve;
mod values;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use megastore::tls::TlsFiles;

/// jemalloc, not the system's malloc: a replica's threads allocate and free across
/// one another all the time, and glibc's malloc took 18% of its CPU under load
/// (`docs/benchmarks.md`, "Served Megastore next to etcd").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "megastore", about = "Serve Megastore, or talk to a served one")]
struct Cli {
    /// The replica to talk to (its client API).
    #[arg(long, global = true, default_value = "127.0.0.1:7401")]
    address: String,
    /// The bearer token: what a client sends, what `serve` requires (embedded mode;
    /// a config file sets its own).
    #[arg(long, global = true)]
    token: Option<String>,
    /// Connect over TLS, trusting this CA certificate (PEM) to have signed the
    /// server's. Client commands only.
    #[arg(long, global = true)]
    tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry (default: --address's host).
    #[arg(long, global = true)]
    tls_domain: Option<String>,
    /// The client's certificate chain (PEM; with --tls-client-key), for a server that
    /// requires client certificates. Client commands only.
    #[arg(long, global = true)]
    tls_client_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-client-cert.
    #[arg(long, global = true)]
    tls_client_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Run only this replica of the cluster in --config (one process per replica).
    #[arg(long)]
    replica: Option<u32>,
    /// The cluster's config file (TOML; docs/megastore-serve.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Embedded mode: the replicas' kinds (full, witness, read-only), one per replica.
    #[arg(long, default_value = "full,full,full")]
    replicas: String,
    /// Embedded mode: where the replicas keep their data (replica-N under it).
    #[arg(long, default_value = "megastore-data")]
    dir: PathBuf,
    /// Embedded mode: the schema file (default: the paper's PhotoApp).
    #[arg(long)]
    schema: Option<PathBuf>,
    /// Embedded mode: the address replicas listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Embedded mode: replica i listens on this port + i (0: any free port).
    #[arg(long, default_value_t = 7401)]
    port: u16,
    /// Embedded mode: each replica's region, for --inject-latency.
    #[arg(long, default_value = "")]
    regions: String,
    /// Embedded mode: round trips between regions, `a:b=ms,...`.
    #[arg(long)]
    inject_latency: Option<String>,
    /// Embedded mode: serve TLS with this certificate chain (PEM; with --tls-key).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Embedded mode: the private key (PEM) of --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Embedded mode: require a client certificate that chains to this CA
    /// certificate (PEM); needs --tls-cert.
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Start replicas: the embedded default (three in this process), or `--replica ID
    /// --config FILE` for one of a cluster.
    Serve(ServeArgs),
    /// The replica's id, its cluster's members and its counters.
    Status,
    /// Print the schema.
    Schema,
    /// Change the schema to the one in FILE (additions only: tables, properties,
    /// indexes), at every replica; new indexes are back-filled before it returns.
    /// Sending the current schema again finishes an interrupted back-fill.
    UpdateSchema {
        /// The whole new schema, in the schema language.
        file: PathBuf,
    },
    /// Write an entity: `put TABLE name=value ...` (repeated: name=a,b,c).
    Put { table: String, values: Vec<String> },
    /// Read an entity by its key: `get TABLE key=value ...`.
    Get {
        table: String,
        key: Vec<String>,
        /// current, snapshot or inconsistent.
        #[arg(long, default_value = "current")]
        mode: String,
    },
    /// Delete an entity by its key.
    Delete { table: String, key: Vec<String> },
    /// The entities of TABLE whose key starts with the given columns (at least the
    /// entity group's).
    Scan {
        table: String,
        prefix: Vec<String>,
        #[arg(long, default_value = "current")]
        mode: String,
    },
    /// Index entries starting with the given values. A local index needs --group.
    Query {
        index: String,
        values: Vec<String>,
        /// The entity group (for a local index): its root's key, `--group col=value`
        /// once per key column.
        #[arg(long)]
        group: Vec<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let client_tls = TlsFiles {
        ca: cli.tls_ca.clone(),
        domain: cli.tls_domain.clone(),
        cert: cli.tls_client_cert.clone(),
        key: cli.tls_client_key.clone(),
        ..TlsFiles::default()
    };
    let result = match &cli.command {
        Command::Serve(_) if client_tls != TlsFiles::default() => Err(
            "--tls-ca, --tls-domain, --tls-client-cert and --tls-client-key are for client \
             commands (a config file sets tls_ca)"
                .into(),
        ),
        Command::Serve(args) => serve::run(args, cli.token.clone()),
        command => commands::run(&cli.address, cli.token.clone(), &client_tls, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("megastore: {e}");
            ExitCode::FAILURE
        }
    }
}
