//! The whole-system simulator in the suite: a few hundred seeds, each a replicated
//! database under faults, every history checked for linearizability and every
//! acknowledged transaction against a replay of the chosen log (serializability, with
//! group commit), every queue message delivered exactly once iff its send was chosen
//! (`sim/mail.rs`), two-phase transfers conserving money and leaving nothing prepared
//! (`sim/transfers.rs`); and a seed replays byte for byte.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use megastore::sim::history::{check_history, Operation};
use megastore::sim::system::run_system;

#[test]
fn seeds_keep_every_invariant() {
    let mut totals = (0, 0, 0, 0);
    let (mut shared_entry, mut past_read, mut log_cleanups) = (0, 0, 0);
    let (mut mail_sent, mut mail_delivered) = (0, 0);
    let (mut transfers, mut abandoned) = (0, 0);
    for seed in 0..SEEDS {
        let report = run_system(seed, 60);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?} (replay: megastore-sim --seeds 1 --start {seed})",
            report.violations
        );
        totals.0 += report.acknowledged;
        totals.1 += report.unknown;
        totals.2 += report.crashes;
        totals.3 += report.scavenged;
        shared_entry += report.shared_entry;
        past_read += report.past_read;
        log_cleanups += report.log_cleanups;
        mail_sent += report.mail_sent;
        mail_delivered += report.mail_delivered;
        transfers += report.transfers_committed;
        abandoned += report.transfers_abandoned;
    }
    eprintln!(
        "{SEEDS} seeds: {} acknowledged, {} unknown, {} crashes, {} scavenged; \
         {shared_entry} transactions shared an entry, {past_read} committed past the \
         position after their read; {log_cleanups} log cleanups",
        totals.0, totals.1, totals.2, totals.3
    );
    assert!(
        totals.0 > 0 && totals.1 > 0 && totals.2 > 0,
        "the faults happened"
    );
    assert!(
        shared_entry > 0 && past_read > 0,
        "group commit's rule was exercised both ways"
    );
    assert!(log_cleanups > 0, "replicas cleaned their logs");
    eprintln!("queues: {mail_sent} messages sent, {mail_delivered} delivered exactly once");
    assert!(mail_delivered > 0, "queue messages were delivered");
    eprintln!("two-phase: {transfers} transfers committed, {abandoned} abandoned midway");
    assert!(
        transfers > 0 && abandoned > 0,
        "two-phase transfers committed, and coordinators stopped midway"
    );
}

const SEEDS: u64 = 300;

#[test]
fn a_seed_replays_byte_for_byte() {
    let lines = |seed| -> Vec<String> {
        run_system(seed, 80)
            .history
            .iter()
            .map(Operation::to_json_line)
            .collect()
    };
    assert_eq!(lines(12345), lines(12345));
    assert_ne!(lines(12345), lines(12346));
}

#[test]
fn the_written_history_parses_and_checks() {
    let report = run_system(77, 80);
    let text: String = report
        .history
        .iter()
        .map(|op| op.to_json_line() + "\n")
        .collect();
    let parsed: Vec<Operation> = text
        .lines()
        .map(|l| Operation::from_json_line(l).unwrap())
        .collect();
    assert_eq!(parsed, report.history);
    assert!(check_history(&parsed).is_empty());
}
