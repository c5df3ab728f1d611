//! `megastore-sim`: runs the whole-system simulator of a replicated Megastore database
//! over many seeds. Each seed is one run (replica crashes, a faulty network, lease loss,
//! clock jumps, clients reading, writing and compare-and-setting) whose invariants and
//! history are checked; a failing seed prints how to replay it. The last line is
//! exactly `simulated N seeds: V violations`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use megastore::sim::system::{run_system, SystemReport};

#[derive(Parser)]
#[command(about = "Seeded simulation of a replicated Megastore database under faults")]
struct Cli {
    /// How many seeds to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Client operations per seed.
    #[arg(long, default_value_t = 60)]
    ops: usize,
    /// Write each seed's history here as `seed-<n>.jsonl` (one operation per line).
    #[arg(long)]
    history_out: Option<PathBuf>,
}

/// What the seeds did, summed.
#[derive(Default)]
struct Totals {
    acknowledged: usize,
    unknown: usize,
    crashes: usize,
    transactions: usize,
    batched: usize,
    shared_entry: usize,
    past_read: usize,
    log_cleanups: usize,
    mail_sent: usize,
    mail_delivered: usize,
    mail_deliveries: usize,
    transfers: usize,
    transfers_committed: usize,
    transfers_abandoned: usize,
}

impl Totals {
    fn add(&mut self, report: &SystemReport) {
        self.acknowledged += report.acknowledged;
        self.unknown += report.unknown;
        self.crashes += report.crashes;
        self.transactions += report.transactions.len();
        self.batched += report.batched;
        self.shared_entry += report.shared_entry;
        self.past_read += report.past_read;
        self.log_cleanups += report.log_cleanups;
        self.mail_sent += report.mail_sent;
        self.mail_delivered += report.mail_delivered;
        self.mail_deliveries += report.mail_deliveries;
        self.transfers += report.transfers;
        self.transfers_committed += report.transfers_committed;
        self.transfers_abandoned += report.transfers_abandoned;
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acknowledged operations ({} transactions replayed against the log), {} unknown outcomes, {} replica crashes; group commit: {} transactions submitted together, {} sharing an entry, {} past the position after their read; {} log cleanups; queues: {} messages sent, {} delivered, {} delivery passes; two-phase transfers: {} attempted, {} committed, {} abandoned midway",
            self.acknowledged,
            self.transactions,
            self.unknown,
            self.crashes,
            self.batched,
            self.shared_entry,
            self.past_read,
            self.log_cleanups,
            self.mail_sent,
            self.mail_delivered,
            self.mail_deliveries,
            self.transfers,
            self.transfers_committed,
            self.transfers_abandoned
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.history_out {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    let started = Instant::now();
    let mut violations = 0usize;
    let mut totals = Totals::default();
    for (i, seed) in (cli.start..cli.start.saturating_add(cli.seeds)).enumerate() {
        let report = run_system(seed, cli.ops);
        totals.add(&report);
        if let Some(dir) = &cli.history_out {
            let text: String = report
                .history
                .iter()
                .map(|op| op.to_json_line() + "\n")
                .collect();
            let path = dir.join(format!("seed-{seed}.jsonl"));
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        if !report.violations.is_empty() {
            violations += report.violations.len();
            println!("seed {seed} ({:?}):", report.replicas);
            for v in &report.violations {
                println!("  {v}");
            }
            println!(
                "  replay: megastore-sim --seeds 1 --start {seed} --ops {} --history-out DIR",
                cli.ops
            );
        }
        if (i + 1) % 1000 == 0 {
            eprintln!("{} seeds in {:.1?}: {totals}", i + 1, started.elapsed());
        }
    }
    eprintln!("{} seeds in {:.1?}: {totals}", cli.seeds, started.elapsed());
    println!("simulated {} seeds: {violations} violations", cli.seeds);
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
