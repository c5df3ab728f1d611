//! Replicas that recently failed to answer this one. A writer still sends a suspect
//! its accept requests but does not wait for the answer; instead it revokes the
//! suspect's coordinator lease through the lock service (which is what keeps reads
//! correct when a full replica misses a write). So a replica that hangs costs each
//! write one lock-service call rather than two call timeouts. Suspicion lapses after
//! a while, and whenever the replica is heard accepting, so a replica that recovered
//! is waited for again.

use std::collections::HashMap;

use parking_lot::Mutex;

/// How long a failure keeps a replica suspect, in microseconds of the lease clock.
const LAPSE_MICROS: i64 = 2_000_000;

#[derive(Default)]
pub(super) struct Suspects {
    /// Member index → until when (lease clock, µs) it is suspect.
    until: Mutex<HashMap<usize, i64>>,
}

impl Suspects {
    /// `member` failed to answer at `now`.
    pub(super) fn suspect(&self, member: usize, now: i64) {
        self.until
            .lock()
            .insert(member, now.saturating_add(LAPSE_MICROS));
    }

    /// `member` answered.
    pub(super) fn clear(&self, member: usize) {
        self.until.lock().remove(&member);
    }

    pub(super) fn is_suspect(&self, member: usize, now: i64) -> bool {
        self.until
            .lock()
            .get(&member)
            .is_some_and(|&until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_lapses_and_an_answer_clears_it() {
        let suspects = Suspects::default();
        assert!(!suspects.is_suspect(1, 0));
        suspects.suspect(1, 10);
        assert!(suspects.is_suspect(1, 10 + LAPSE_MICROS - 1));
        assert!(!suspects.is_suspect(1, 10 + LAPSE_MICROS));
        assert!(!suspects.is_suspect(2, 10));
        suspects.suspect(1, 20);
        suspects.clear(1);
        assert!(!suspects.is_suspect(1, 21));
    }
}
