//! The log positions this replica's own writers are proposing right now. A current
//! read that finds one of them accepted here but not yet known chosen waits for the
//! writer to finish instead of running Paxos for it: that would compete with the
//! writer (each preparing above the other's ballot) and, with many readers, could keep
//! the position from being chosen at all. Waiting changes no outcome, only who decides.

use std::collections::HashSet;

use parking_lot::{Condvar, Mutex};

use crate::replica::RootRow;

#[derive(Default)]
pub(super) struct Proposing {
    positions: Mutex<HashSet<(RootRow, u64)>>,
    finished: Condvar,
}

/// Marks a position as being proposed until dropped.
pub(super) struct Marked<'a> {
    proposing: &'a Proposing,
    key: (RootRow, u64),
}

impl Proposing {
    pub(super) fn mark(&self, root: &RootRow, position: u64) -> Marked<'_> {
        let key = (root.clone(), position);
        self.positions.lock().insert(key.clone());
        Marked {
            proposing: self,
            key,
        }
    }

    /// Waits until no writer here proposes at `position`; whether one did.
    pub(super) fn wait_for(&self, root: &RootRow, position: u64) -> bool {
        let key = (root.clone(), position);
        let mut positions = self.positions.lock();
        let waited = positions.contains(&key);
        while positions.contains(&key) {
            self.finished.wait(&mut positions);
        }
        waited
    }
}

impl Drop for Marked<'_> {
    fn drop(&mut self) {
        self.proposing.positions.lock().remove(&self.key);
        self.proposing.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    fn root() -> RootRow {
        RootRow {
            table: "t".into(),
            row: b"g".to_vec(),
        }
    }

    #[test]
    fn a_reader_waits_for_the_position_being_proposed_and_only_for_it() {
        let proposing = Arc::new(Proposing::default());
        assert!(!proposing.wait_for(&root(), 5), "nothing proposed: no wait");
        let marked = proposing.mark(&root(), 5);
        assert!(!proposing.wait_for(&root(), 6));
        let finished = Arc::new(AtomicBool::new(false));
        let reader = {
            let (proposing, finished) = (proposing.clone(), finished.clone());
            std::thread::spawn(move || {
                let waited = proposing.wait_for(&root(), 5);
                (waited, finished.load(Ordering::SeqCst))
            })
        };
        finished.store(true, Ordering::SeqCst);
        drop(marked);
        let (waited, saw_finished) = reader.join().unwrap();
        // Whether or not it had to wait, it returned only after the proposal ended.
        assert!(saw_finished || !waited);
        assert!(!proposing.wait_for(&root(), 5));
    }
}
