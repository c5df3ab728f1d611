//! The background global-index maintainer: a queue of entity groups whose committed
//! entries are not yet reflected in the global indexes, a thread that drains it, and
//! the watermark that tells a global-index reader how stale its answer may be.
//!
//! Usually an entry's global-index cells are written as it is applied, and it leaves
//! the queue then ([`IndexQueue::indexed`]). The thread catches up the groups whose
//! indexes fell behind: found at start-up, or with an earlier entry not yet indexed.
//!
//! A committer registers its entry here *before* proposing it, when it touches a global
//! index, with the entry's timestamp chosen under the queue's lock and above every
//! watermark reported so far. So the watermark (just below the first unindexed entry of
//! every registered group, or "now" when nothing is pending) never passes an entry the
//! indexes lack.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bigtable::clock::Clock;
use parking_lot::{Condvar, Mutex};

use crate::replica::RootRow;

#[derive(Default)]
struct Pending {
    /// Timestamps of registered entries not yet known to be indexed.
    stamps: BTreeSet<i64>,
    /// The group may hold unindexed entries of unknown timestamps.
    unknown: bool,
    /// Something changed since the indexer last looked at the group.
    dirty: bool,
}

impl Pending {
    fn first(&self) -> Option<i64> {
        if self.unknown {
            Some(i64::MIN)
        } else {
            self.stamps.first().copied()
        }
    }
}

#[derive(Default)]
struct QueueState {
    groups: BTreeMap<RootRow, Pending>,
    /// The largest "now" seen, so the watermark never moves back with the clock.
    now: i64,
    /// The largest watermark reported: later entries are stamped above it.
    reported: i64,
    shutdown: bool,
}

pub(crate) struct IndexQueue {
    state: Mutex<QueueState>,
    /// A group became dirty, or the queue was paused or shut down (for the indexer).
    work: Condvar,
    /// The watermark may have moved (for [`IndexQueue::wait_for`]).
    progress: Condvar,
    /// Outside the lock: every apply asks.
    paused: AtomicBool,
    clock: Arc<dyn Clock>,
}

impl IndexQueue {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        IndexQueue {
            state: Mutex::new(QueueState::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
            paused: AtomicBool::new(false),
            clock,
        }
    }

    fn now(&self, state: &mut QueueState) -> i64 {
        state.now = state.now.max(self.clock.now_micros());
        state.now
    }

    /// Picks the timestamp of an entry about to be proposed after `floor`, and, when
    /// the entry touches a global index, registers it as pending.
    pub fn stamp(&self, root: &RootRow, floor: i64, global: bool) -> i64 {
        let mut state = self.state.lock();
        let ts = self
            .now(&mut state)
            .max(floor.saturating_add(1))
            .max(state.reported.saturating_add(1));
        if global {
            state
                .groups
                .entry(root.clone())
                .or_default()
                .stamps
                .insert(ts);
        }
        ts
    }

    /// The entry stamped `ts` lost its position: it will never be indexed.
    pub fn abandon(&self, root: &RootRow, ts: i64) {
        let mut state = self.state.lock();
        if let Some(pending) = state.groups.get_mut(root) {
            pending.stamps.remove(&ts);
            if pending.first().is_none() {
                state.groups.remove(root);
            }
        }
        self.progress.notify_all();
    }

    /// An entry stamped `ts` that touches a global index was applied: index it.
    pub fn applied(&self, root: &RootRow, ts: i64) {
        let mut state = self.state.lock();
        let pending = state.groups.entry(root.clone()).or_default();
        pending.stamps.insert(ts);
        pending.dirty = true;
        self.work.notify_all();
    }

    /// The entry stamped `ts` was indexed as it was applied.
    pub fn indexed(&self, root: &RootRow, ts: i64) {
        self.abandon(root, ts);
    }

    /// Registers a group that may hold unindexed entries of unknown timestamps (found
    /// at start-up).
    pub fn register_unknown(&self, root: &RootRow) {
        let mut state = self.state.lock();
        let pending = state.groups.entry(root.clone()).or_default();
        pending.unknown = true;
        pending.dirty = true;
        self.work.notify_all();
    }

    /// Every entry with a timestamp at or below this is in the global indexes.
    pub fn watermark(&self) -> i64 {
        let mut state = self.state.lock();
        self.watermark_of(&mut state)
    }

    fn watermark_of(&self, state: &mut QueueState) -> i64 {
        let watermark = match state.groups.values().filter_map(Pending::first).min() {
            Some(first) => first.saturating_sub(1),
            None => self.now(state),
        };
        state.reported = state.reported.max(watermark);
        watermark
    }

    /// Blocks until the watermark reaches `timestamp` (or the indexer shuts down).
    pub fn wait_for(&self, timestamp: i64) {
        let mut state = self.state.lock();
        loop {
            let watermark = self.watermark_of(&mut state);
            if state.shutdown || watermark >= timestamp {
                return;
            }
            if state.groups.is_empty() {
                // Nothing pending: the watermark is the clock, which only time moves.
                let micros = u64::try_from(timestamp - watermark).unwrap_or(1);
                self.progress
                    .wait_for(&mut state, Duration::from_micros(micros));
            } else {
                self.progress.wait(&mut state);
            }
        }
    }

    /// Paused, the maintenance waits, and so does indexing as entries are applied (a
    /// knob to observe and test the asynchronous path).
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        // Taken so that an indexer between its check and its wait gets the notice.
        let _state = self.state.lock();
        self.work.notify_all();
        self.progress.notify_all();
    }

    pub fn shut_down(&self) {
        self.state.lock().shutdown = true;
        self.work.notify_all();
        self.progress.notify_all();
    }

    /// The next group with news to index, waiting for one; `None` at shutdown.
    pub fn next(&self) -> Option<RootRow> {
        let mut state = self.state.lock();
        loop {
            if state.shutdown {
                return None;
            }
            if !self.paused() {
                if let Some((root, pending)) = state.groups.iter_mut().find(|(_, p)| p.dirty) {
                    pending.dirty = false;
                    return Some(root.clone());
                }
            }
            self.work.wait(&mut state);
        }
    }

    /// The group's entries are indexed through timestamp `indexed_through`, and a pass
    /// that started after `next` returned it found nothing more.
    pub fn done(&self, root: &RootRow, indexed_through: i64) {
        let mut state = self.state.lock();
        if let Some(pending) = state.groups.get_mut(root) {
            pending.stamps.retain(|ts| *ts > indexed_through);
            pending.unknown = false;
            if pending.first().is_none() {
                state.groups.remove(root);
            }
        }
        self.progress.notify_all();
    }

    /// Indexing the group failed: it stays pending; wait a little before the next try
    /// so a persistent failure does not spin.
    pub fn failed(&self, root: &RootRow) {
        let mut state = self.state.lock();
        if let Some(pending) = state.groups.get_mut(root) {
            pending.dirty = true;
        }
        if !state.shutdown {
            self.work.wait_for(&mut state, Duration::from_millis(100));
        }
    }
}
