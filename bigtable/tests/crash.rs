//! Crash schedules through the fault-injecting file system (see `bigtable::crash_check`);
//! `bt-tool crash-check --seeds N` runs more.

use bigtable::crash_check::{run_schedule, ScheduleConfig, ScheduleReport};

#[test]
fn acknowledged_writes_survive_crashes_during_writes_flushes_compactions_and_splits() {
    let config = ScheduleConfig::default();
    let mut total = ScheduleReport::default();
    for seed in 0..300 {
        match run_schedule(seed, &config) {
            Ok(report) => total += report,
            Err(e) => panic!("{e}"),
        }
    }
    // The schedules must have exercised what they claim to.
    assert!(total.acknowledged > 10_000, "{total:?}");
    assert!(total.flushes > 300 && total.compactions > 100, "{total:?}");
    assert!(total.splits > 100, "tablets split: {total:?}");
    assert!(
        total.in_doubt_kept > 0 && total.in_doubt_lost > 0,
        "{total:?}"
    );
}
