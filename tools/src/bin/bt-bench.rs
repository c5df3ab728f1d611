//! `bt-bench`: db_bench workloads against our engine, fjall, or both side by side.
//! Takes db_bench's flags and prints db_bench's lines, e.g.
//!
//! ```text
//! bt-bench --benchmarks=fillseq,fillrandom,readrandom,readseq,seekrandom --num=1000000 \
//!          --key_size=16 --value_size=100 --sync=0 --db=/tmp/bt-bench --engine=both
//! ```
//! With `--engine=both` each workload runs on ours, then on fjall, in this one process,
//! and a ratio line follows (ours / fjall in throughput: above 1 means we are faster).

use std::path::PathBuf;
use std::process::ExitCode;

use benches::db_bench::{run, Config, Outcome, Store};
use benches::stores::{BigtableStore, FjallStore, Tuning};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Bigtable,
    Fjall,
    Both,
}

#[derive(Parser)]
#[command(about = "db_bench workloads against the bigtable engine and fjall")]
struct Cli {
    #[arg(
        long,
        default_value = "fillseq,fillrandom,readrandom,readseq,seekrandom"
    )]
    benchmarks: String,
    #[arg(long, default_value_t = 1_000_000)]
    num: u64,
    /// Operations of the read benchmarks (default: num).
    #[arg(long)]
    reads: Option<i64>,
    #[arg(long = "key_size", default_value_t = 16)]
    key_size: usize,
    #[arg(long = "value_size", default_value_t = 100)]
    value_size: usize,
    /// 1 (or true): fsync every write before acknowledging it.
    #[arg(long, default_value = "0")]
    sync: String,
    #[arg(long, default_value = "/tmp/bt-bench")]
    db: PathBuf,
    /// Block cache bytes (db_bench's --cache_size).
    #[arg(long = "cache_size", default_value_t = 128 << 20)]
    cache_size: usize,
    /// Memtable bytes before a flush, for both engines (default: each engine's own).
    #[arg(long = "write_buffer_size")]
    write_buffer_size: Option<usize>,
    #[arg(long, value_enum, default_value = "bigtable")]
    engine: Which,
    #[arg(long, default_value_t = 301)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sync = matches!(cli.sync.as_str(), "1" | "true");
    let config = Config {
        benchmarks: cli
            .benchmarks
            .split(',')
            .filter(|b| !b.is_empty())
            .map(String::from)
            .collect(),
        num: cli.num,
        reads: cli.reads.filter(|&r| r >= 0).map(|r| r as u64),
        key_size: cli.key_size,
        value_size: cli.value_size,
        sync,
        db: cli.db.clone(),
        seed: cli.seed,
    };
    println!(
        "Keys:       {} bytes each\nValues:     {} bytes each (50% compressible)\nEntries:    {}\nSync:       {sync}",
        cli.key_size, cli.value_size, cli.num
    );
    let tuning = Tuning {
        sync,
        cache_bytes: cli.cache_size,
        write_buffer_bytes: cli.write_buffer_size,
    };
    let ours = |path: &std::path::Path, fresh: bool| -> Result<Box<dyn Store>, String> {
        Ok(Box::new(BigtableStore::open(path, fresh, tuning)?))
    };
    let fjall = |path: &std::path::Path, fresh: bool| -> Result<Box<dyn Store>, String> {
        Ok(Box::new(FjallStore::open(path, fresh, tuning)?))
    };
    let result = match cli.engine {
        Which::Bigtable => run(&config, &ours).map(|o| print_all("bigtable", &o)),
        Which::Fjall => run(&config, &fjall).map(|o| print_all("fjall", &o)),
        Which::Both => side_by_side(&config, &ours, &fjall),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bt-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_all(engine: &str, outcomes: &[Outcome]) {
    println!("-- {engine}");
    for o in outcomes {
        println!("{}", o.line());
        if let Some(note) = &o.note {
            println!("               ({note})");
        }
    }
}

/// Each workload sequence on ours, then on fjall (separate directories), then ratios.
fn side_by_side(
    config: &Config,
    ours: &benches::db_bench::Opener<'_>,
    fjall: &benches::db_bench::Opener<'_>,
) -> Result<(), String> {
    let mut ours_config = config.clone();
    ours_config.db = config.db.join("bigtable");
    let mut fjall_config = config.clone();
    fjall_config.db = config.db.join("fjall");
    let a = run(&ours_config, ours)?;
    print_all("bigtable", &a);
    let b = run(&fjall_config, fjall)?;
    print_all("fjall", &b);
    println!("-- ratio (ours / fjall, throughput; >1 = ours faster)");
    for (x, y) in a.iter().zip(&b) {
        println!(
            "{:<12} : {:.2}  ({:.3} vs {:.3} micros/op)",
            x.name,
            x.ops_per_sec() / y.ops_per_sec(),
            x.micros_per_op(),
            y.micros_per_op()
        );
    }
    Ok(())
}
