//! Replicas that recently failed to answer this one. A writer does not wait for a
//! suspect's answer; instead it revokes the suspect's coordinator lease through the
//! lock service (which is what keeps reads correct when a full replica misses a
//! write). So a replica that hangs costs each write one lock-service call rather than
//! two call timeouts. A write still sends a suspect its accept requests as a *probe*
//! when no earlier probe is out (so a hung replica holds at most one caller's thread);
//! an answer clears the suspicion, and so does its lapse, so a replica that recovered
//! is waited for again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::paxos::proposer::Reply;
use crate::replica::RootRow;
use crate::replicas::Peer;
use crate::replication::Acceptor;
use crate::Error;

/// How long a failure keeps a replica suspect, in microseconds of the lease clock.
const LAPSE_MICROS: i64 = 2_000_000;

#[derive(Default)]
pub(super) struct Suspects {
    /// Member index → until when (lease clock, µs) it is suspect.
    until: Mutex<HashMap<usize, i64>>,
    /// Suspects with a probe out.
    probing: Mutex<HashSet<usize>>,
}

impl Suspects {
    /// `peer` (member `member`, a suspect) as a probe, unless one is out already.
    pub(super) fn probe(self: &Arc<Self>, member: usize, peer: Arc<dyn Peer>) -> Option<Probe> {
        if !self.probing.lock().insert(member) {
            return None;
        }
        Some(Probe {
            peer,
            member,
            suspects: self.clone(),
        })
    }

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

/// A suspect's acceptor for one proposal: any answer clears the suspicion; dropped
/// (every call made with it over), the probe is no longer out.
pub(super) struct Probe {
    peer: Arc<dyn Peer>,
    member: usize,
    suspects: Arc<Suspects>,
}

impl Probe {
    fn heard<T>(&self, answer: Result<T, Error>) -> Result<T, Error> {
        if answer.is_ok() {
            self.suspects.clear(self.member);
        }
        answer
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.suspects.probing.lock().remove(&self.member);
    }
}

impl Acceptor for Probe {
    fn prepare(&self, root: &RootRow, position: u64, ballot: u64) -> Result<Reply, Error> {
        self.heard(self.peer.prepare(root, position, ballot))
    }
    fn accept(&self, root: &RootRow, p: u64, b: u64, value: &[u8]) -> Result<Reply, Error> {
        self.heard(self.peer.accept(root, p, b, value))
    }
    fn highest_position(&self, root: &RootRow) -> Result<u64, Error> {
        self.heard(self.peer.highest_position(root))
    }
    fn chosen_value(&self, root: &RootRow, position: u64) -> Result<Option<Vec<u8>>, Error> {
        self.heard(self.peer.chosen_value(root, position))
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
