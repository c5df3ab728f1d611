//! `bt-tool`: maintenance commands for the bigtable engine. Today: run many seeded crash
//! schedules (the suite runs a few hundred).

use std::process::ExitCode;
use std::time::Instant;

use bigtable::crash_check::{run_schedule, ScheduleConfig, ScheduleReport};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "The bigtable engine: crash checking")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run seeded crash schedules: power loss during writes, flushes, compactions and
    /// manifest switches, then reopen and check every acknowledged write.
    CrashCheck {
        #[arg(long, default_value_t = 5000)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        first_seed: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 400)]
        max_ops_before_crash: u64,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CrashCheck {
            seeds,
            first_seed,
            rounds,
            max_ops_before_crash,
        } => {
            let config = ScheduleConfig {
                rounds,
                max_ops_before_crash,
            };
            let started = Instant::now();
            let mut total = ScheduleReport::default();
            for (i, seed) in (first_seed..first_seed + seeds).enumerate() {
                match run_schedule(seed, &config) {
                    Ok(report) => total += report,
                    Err(e) => {
                        eprintln!("FAILED: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                if (i + 1) % 500 == 0 {
                    eprintln!("{} schedules passed ({:.0?})", i + 1, started.elapsed());
                }
            }
            println!(
                "{seeds} schedules passed in {:.1?}: {} acknowledged operations, {} flushes, {} compactions, {} tablet splits, in-doubt writes kept {} / lost {}",
                started.elapsed(),
                total.acknowledged,
                total.flushes,
                total.compactions,
                total.splits,
                total.in_doubt_kept,
                total.in_doubt_lost
            );
            ExitCode::SUCCESS
        }
    }
}
