//! Ordering concurrent commits: sequence numbers are handed out in order, but writers
//! finish (log record durable, memtable updated) in any order. A read may only use a
//! sequence number below which every write has finished: the visible sequence number.
//! Also the per-row locks that make each single-row operation atomic and isolated.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};

use parking_lot::{Mutex, MutexGuard};
use wal::wakeup::{self, Waiters};

use crate::key::SeqNo;

#[derive(Default)]
pub struct CommitTracker {
    state: Mutex<Commits>,
}

#[derive(Default)]
struct Commits {
    last_allocated: SeqNo,
    /// First sequence numbers of commits in progress.
    in_flight: BTreeSet<SeqNo>,
    visible: SeqNo,
    /// Threads in [`CommitTracker::wait_visible`], each woken once its number is visible.
    waiters: Waiters,
}

impl CommitTracker {
    /// A tracker whose sequence numbers up to `last` are used and visible.
    pub fn new(last: SeqNo) -> Self {
        CommitTracker {
            state: Mutex::new(Commits {
                last_allocated: last,
                in_flight: BTreeSet::new(),
                visible: last,
                waiters: Waiters::default(),
            }),
        }
    }

    /// Allocates `n >= 1` consecutive sequence numbers; returns the first. The caller
    /// must call [`CommitTracker::finish`] with it, whether the commit succeeds or not.
    pub fn begin(&self, n: u64) -> SeqNo {
        let mut s = self.state.lock();
        let first = s.last_allocated + 1;
        s.last_allocated += n.max(1);
        s.in_flight.insert(first);
        first
    }

    pub fn finish(&self, first: SeqNo) {
        let mut s = self.state.lock();
        s.in_flight.remove(&first);
        let visible = match s.in_flight.first() {
            Some(&oldest) => oldest - 1,
            None => s.last_allocated,
        };
        if visible > s.visible {
            s.visible = visible;
            let woken = s.waiters.take_reached(|seq, _| seq <= visible);
            drop(s);
            wakeup::wake(woken);
        }
    }

    pub fn last_allocated(&self) -> SeqNo {
        self.state.lock().last_allocated
    }

    /// Every write with a sequence number up to this has finished.
    pub fn visible(&self) -> SeqNo {
        self.state.lock().visible
    }

    /// Waits until every write up to `seq` has finished.
    pub fn wait_visible(&self, seq: SeqNo) {
        let mut s = self.state.lock();
        while s.visible < seq {
            wakeup::sleep(&mut s, |c| &mut c.waiters, seq, false);
        }
    }
}

/// Striped row locks: two rows may share a stripe, which only costs concurrency.
pub struct RowLocks {
    stripes: Vec<Mutex<()>>,
    hasher: RandomState,
}

const STRIPES: usize = 1024;

impl Default for RowLocks {
    fn default() -> Self {
        RowLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl RowLocks {
    fn stripe(&self, table: u64, row: &[u8]) -> usize {
        (self.hasher.hash_one((table, row)) as usize) % STRIPES
    }

    /// Locks the rows of one table (in a fixed order, so batches cannot deadlock).
    pub fn lock<'a>(&'a self, table: u64, rows: &[&[u8]]) -> Vec<MutexGuard<'a, ()>> {
        let mut stripes: Vec<usize> = rows.iter().map(|r| self.stripe(table, r)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|i| self.stripes[i].lock())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_waits_for_the_oldest_unfinished_commit() {
        let t = CommitTracker::new(10);
        let a = t.begin(2);
        let b = t.begin(1);
        assert_eq!((a, b), (11, 13));
        t.finish(b);
        assert_eq!(t.visible(), 10, "11 and 12 are still in flight");
        t.finish(a);
        assert_eq!(t.visible(), 13);
        t.wait_visible(13);
    }

    #[test]
    fn batches_lock_each_stripe_once() {
        let locks = RowLocks::default();
        let guards = locks.lock(1, &[b"a", b"a", b"b"]);
        assert!(!guards.is_empty() && guards.len() <= 2);
    }
}
