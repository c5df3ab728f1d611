//! Paxos at one log position under the seeded fault simulator: dueling proposers, the
//! fast path through a leader, message loss, duplication, delay, reordering and
//! partitions. No run may choose two values, and every proposer finishes once the
//! network heals. A failing seed replays exactly with `megastore::sim::run_position`.

use megastore::sim::run_position;

#[test]
fn no_seed_chooses_two_values_and_every_proposer_finishes() {
    let mut slow = 0;
    let mut contended = 0;
    for seed in 0..600 {
        let report = run_position(seed);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?} (replay: megastore::sim::run_position({seed}))",
            report.violations
        );
        slow += report.slow_paths;
        contended += usize::from(report.proposers > 1);
    }
    // The seeds must exercise what they claim to.
    assert!(slow > 100, "only {slow} slow paths");
    assert!(contended > 300, "only {contended} contended positions");
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 77, 4096] {
        let (a, b) = (run_position(seed), run_position(seed));
        assert_eq!(
            (a.ticks, a.messages, a.chosen),
            (b.ticks, b.messages, b.chosen)
        );
    }
}
