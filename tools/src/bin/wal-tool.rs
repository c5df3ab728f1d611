//! `wal-tool`: run a demo of the commit log, inspect a log directory, or run many seeded
//! crash schedules against it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use wal::crash_check::{run_schedule, ScheduleConfig, ScheduleReport};
use wal::fs::RealFs;
use wal::{LogEnd, LogReader, SyncPolicy, Wal, WalOptions};

#[derive(Parser)]
#[command(about = "The commit log: demo, inspection and crash checking")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append records from several threads with group commit, then reopen the log and
    /// check that every acknowledged record is there. Run it twice: the second run
    /// recovers the first run's records and continues after them.
    Demo {
        #[arg(long, default_value = "./wal-demo-data")]
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        threads: usize,
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        #[arg(long, default_value_t = 100)]
        value_size: usize,
    },
    /// Read every record of a log directory and report its segments, LSN range and end.
    Verify { dir: PathBuf },
    /// Print records (LSN, length, first bytes in hex).
    Dump {
        dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Run seeded crash schedules on the fault-injecting file system.
    CrashCheck {
        #[arg(long, default_value_t = 10_000)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        start: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Demo {
            dir,
            threads,
            records,
            value_size,
        } => demo(dir, threads, records, value_size),
        Command::Verify { dir } => verify(dir),
        Command::Dump { dir, from, limit } => dump(dir, from, limit),
        Command::CrashCheck {
            seeds,
            start,
            rounds,
        } => crash_check(seeds, start, rounds),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn demo(dir: PathBuf, threads: usize, records: usize, value_size: usize) -> CliResult {
    let threads = threads.max(1);
    let options = WalOptions::default().with_sync(SyncPolicy::EveryCommit);
    let mut recovery = Wal::recover(RealFs::shared(), &dir, options.clone(), 0)?;
    let mut previous = 0u64;
    while recovery.next_record()?.is_some() {
        previous += 1;
    }
    let (wal, report) = recovery.finish()?;
    println!(
        "log at {}: recovered {previous} records from earlier runs, next LSN {}",
        dir.display(),
        report.next_lsn
    );
    if let Some(tail) = &report.torn_tail {
        println!(
            "  dropped a torn tail in {} at offset {}: {}",
            tail.segment.display(),
            tail.offset,
            tail.reason
        );
    }

    let wal = Arc::new(wal);
    let started = Instant::now();
    let per_thread = records / threads;
    let progress_every = (per_thread / 4).max(1);
    let first_lsn = wal.next_lsn();
    std::thread::scope(|s| {
        for t in 0..threads {
            let wal = wal.clone();
            s.spawn(move || -> wal::Result<()> {
                let payload = vec![b'a' + (t % 26) as u8; value_size];
                for i in 0..per_thread {
                    wal.append(&payload)?;
                    if t == 0 && (i + 1).is_multiple_of(progress_every) {
                        println!("  thread 0: {} of {per_thread} records durable", i + 1);
                    }
                }
                Ok(())
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let appended = wal.next_lsn() - first_lsn;
    let stats = wal.stats();
    println!(
        "appended {appended} records of {value_size} bytes from {threads} threads in {elapsed:.2} s: \
         {:.0} appends/s, {} fsyncs ({:.1} records per fsync)",
        appended as f64 / elapsed,
        stats.syncs,
        stats.records as f64 / stats.syncs.max(1) as f64
    );
    let expected = previous + appended;
    drop(wal);

    let reader = LogReader::open(RealFs::shared(), &dir, 0)?;
    let mut count = 0u64;
    for record in reader {
        record?;
        count += 1;
    }
    println!("reopened: {count} records read back, {expected} expected");
    Ok(if count == expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn verify(dir: PathBuf) -> CliResult {
    let mut reader = LogReader::open(RealFs::shared(), &dir, 0)?;
    println!("{} segments", reader.segments().len());
    let mut first = None;
    let mut count = 0u64;
    let mut bytes = 0u64;
    while let Some((lsn, payload)) = reader.next_record()? {
        first.get_or_insert(lsn);
        count += 1;
        bytes += payload.len() as u64;
    }
    match first {
        Some(first) => println!(
            "{count} records, LSN {first}..={}, {bytes} payload bytes",
            reader.next_lsn() - 1
        ),
        None => println!("no records"),
    }
    match reader.end() {
        Some(LogEnd::TornTail(t)) => {
            println!(
                "ends in a torn tail: {} at offset {}: {}",
                t.segment.display(),
                t.offset,
                t.reason
            )
        }
        _ => println!("ends cleanly"),
    }
    Ok(ExitCode::SUCCESS)
}

fn dump(dir: PathBuf, from: u64, limit: usize) -> CliResult {
    let reader = LogReader::open(RealFs::shared(), &dir, from)?;
    for record in reader.take(limit) {
        let (lsn, payload) = record?;
        let preview: String = payload
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        println!("{lsn:>12}  {:>8} bytes  {preview}", payload.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn crash_check(seeds: u64, start: u64, rounds: usize) -> CliResult {
    let config = ScheduleConfig {
        rounds,
        ..ScheduleConfig::default()
    };
    let mut violations = 0u64;
    let mut total = ScheduleReport::default();
    let progress_every = (seeds / 10).max(1);
    for (done, seed) in (start..start + seeds).enumerate() {
        match run_schedule(seed, &config) {
            Ok(report) => total += report,
            Err(violation) => {
                violations += 1;
                println!("VIOLATION {violation}");
                println!(
                    "  replay: wal-tool crash-check --start {seed} --seeds 1 --rounds {rounds}"
                );
            }
        }
        if (done as u64 + 1).is_multiple_of(progress_every) {
            eprintln!("  {} of {seeds} seeds", done + 1);
        }
    }
    println!(
        "{} appends, {} acknowledged, {} recovered, {} torn tails",
        total.appended, total.acknowledged, total.recovered, total.torn_tails
    );
    println!("crash-checked {seeds} seeds: {violations} violations");
    Ok(if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
