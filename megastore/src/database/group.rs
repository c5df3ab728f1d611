//! An entity group's log on this replica: a transaction runs on the latest position,
//! commits its writes in an entry at a later one (`commit.rs`), then everyone who
//! touches the group rolls it forward (applies committed entries in order), and old
//! positions are cleaned up.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::RwLock;

use super::commit::{Prepared, Verdict};
use super::{Committed, Core, GroupName};
use crate::apply::{catalog_cells, entry_cells, touches_global_index, EntryCells, Indexes};
use crate::layout::GroupMeta;
use crate::log::{LogEntry, Write};
use crate::replica::{GroupState, RootRow};
use crate::replicas::ReplicaKind;
use crate::txn::{Snapshot, Transaction};
use crate::Error;
use crate::Value;

/// What running a transaction's closure once produced.
pub(crate) enum Ran<R> {
    /// It wrote nothing: done, at the position it read.
    ReadOnly(R, Committed),
    /// It wrote: its entry still has to be committed.
    Wrote(R, Prepared),
}

/// A log position and the value chosen there.
pub(crate) type Learned<'a> = (u64, &'a [u8]);

impl Core {
    /// Runs `f` as a transaction on the group at `root` until it commits (or fails, or
    /// has to run again `max_attempts` times).
    pub(super) fn transact<R>(
        &self,
        group: GroupName<'_>,
        root: &RootRow,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<R, Error>,
    ) -> Result<(R, Committed), Error> {
        let attempts = self.options.max_attempts.max(1);
        for attempt in 1..=attempts {
            {
                // Held from the read to the verdict: no schema change in between.
                let _gate = GateGuard::enter(&self.schema_gate);
                let (result, prepared) = match self.prepare(group, root, &mut f)? {
                    Ran::ReadOnly(result, committed) => {
                        return Ok((
                            result,
                            Committed {
                                attempts: attempt,
                                ..committed
                            },
                        ))
                    }
                    Ran::Wrote(result, prepared) => (result, prepared),
                };
                let verdict = match self.commit_queues.commit(self, root, prepared) {
                    // An abandoned two-phase transaction holds the lock: finish it, and
                    // run again.
                    Err(Error::Locked { txid }) if self.finish_if_abandoned(root, txid)? => {
                        Verdict::Rerun
                    }
                    verdict => verdict?,
                };
                if let Verdict::Committed {
                    position,
                    timestamp,
                } = verdict
                {
                    let committed = Committed {
                        position,
                        timestamp,
                        wrote: true,
                        attempts: attempt,
                    };
                    return Ok((result, committed));
                }
                self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            backoff(attempt);
        }
        Err(Error::TooManyConflicts { attempts })
    }

    /// Runs `f` once on the group's latest position (made current first) and collects
    /// what it read and wrote.
    pub(crate) fn prepare<R>(
        &self,
        group: GroupName<'_>,
        root: &RootRow,
        f: &mut impl FnMut(&mut Transaction<'_>) -> Result<R, Error>,
    ) -> Result<Ran<R>, Error> {
        let mut tx = self.begin(group, root)?;
        let result = f(&mut tx)?;
        Ok(match finish_transaction(tx) {
            Ok(prepared) => Ran::Wrote(result, prepared),
            Err(read_only) => Ran::ReadOnly(result, read_only),
        })
    }

    /// A transaction on the group's latest position (made current first).
    pub(crate) fn begin(
        &self,
        group: GroupName<'_>,
        root: &RootRow,
    ) -> Result<Transaction<'_>, Error> {
        let state = self.make_current(root)?;
        let (version, schema) = self.schema_for(state.meta.schema_version)?;
        Ok(Transaction::on(Snapshot {
            core: self,
            schema,
            schema_version: version,
            root_table: group.root.to_string(),
            root_key: group.key.map(<[Value]>::to_vec),
            group_row: root.row.clone(),
            position: Some(state.meta.applied),
            timestamp: Some(state.meta.applied_timestamp),
            reads: Some(RefCell::default()),
            taken_at: self.options.clock.now_micros(),
        }))
    }

    /// Applies, in order, every unapplied entry of the group this replica knows to be
    /// chosen; returns the group's state once the next position's value is unknown. A
    /// witness only advances its state (it keeps no data).
    pub(crate) fn roll_forward(&self, root: &RootRow) -> Result<GroupState, Error> {
        self.learn_and_roll_forward(root, &[])
    }

    /// As [`Core::roll_forward`], having learned that each `(position, value)` of
    /// `learned` is chosen. A learned value this replica accepted itself and applies in
    /// this pass needs no record: an applied position's accepted value is its chosen
    /// one. Any other is marked chosen first (it may wait for an earlier position).
    pub(crate) fn learn_and_roll_forward(
        &self,
        root: &RootRow,
        learned: &[Learned<'_>],
    ) -> Result<GroupState, Error> {
        self.roll_forward_from(root, learned, None)
    }

    /// As [`Core::learn_and_roll_forward`], starting from `hint` (the group's state as
    /// this replica knew it a moment ago) instead of reading it. Every step it takes
    /// from there is a compare-and-set of the state cell, so a stale hint costs one
    /// failed compare-and-set and then a fresh read, never a wrong apply.
    pub(crate) fn roll_forward_from(
        &self,
        root: &RootRow,
        learned: &[Learned<'_>],
        mut hint: Option<GroupState>,
    ) -> Result<GroupState, Error> {
        let sole_voter = self.sole_voter();
        let witness = self
            .replication()
            .is_some_and(|r| r.local_member().kind == ReplicaKind::Witness);
        let mut learned = learned.to_vec();
        'fresh: loop {
            let state = match hint.take() {
                Some(state) => state,
                None => self.replica.group_state(root)?,
            };
            let known = |position: u64| {
                state.chosen_at(position, sole_voter).or_else(|| {
                    learned
                        .iter()
                        .find(|(p, v)| *p == position && state.value_at(position) == Some(v))
                        .map(|(_, v)| *v)
                })
            };
            let mut last = state.meta.applied;
            while known(last + 1).is_some() {
                last += 1;
            }
            if learned.iter().any(|(p, _)| *p > last) {
                for &(position, value) in learned.iter().filter(|(p, _)| *p > last) {
                    self.replica.mark_chosen(root, position, value)?;
                }
                learned.retain(|(p, _)| *p <= last);
                continue 'fresh;
            }
            let mut meta = state.meta;
            let mut expected = state.meta_cell.clone();
            for position in meta.applied + 1..=last {
                let bytes = known(position).ok_or_else(|| {
                    Error::Damaged(format!("log position {position} has no value"))
                })?;
                let state = (meta, expected.as_deref());
                let Some(next) = self.apply_position(root, state, position, bytes, witness)? else {
                    continue 'fresh; // someone else advanced the group meanwhile
                };
                expected = Some(next.encode());
                meta = next;
            }
            // Positions chosen meanwhile are applied by whoever learned of them.
            let state = GroupState {
                meta,
                meta_cell: expected,
                log: state.log,
            };
            self.clean_log(root, &state)?;
            return Ok(state);
        }
    }

    /// Applies the entry `bytes` at `position`, the group's state being `meta` (held in
    /// its state cell as `expected`): writes the entry's cells and advances the state.
    /// The new state, or `None` if someone else advanced the group meanwhile. A witness
    /// only advances the state.
    fn apply_position(
        &self,
        root: &RootRow,
        (meta, expected): (GroupMeta, Option<&[u8]>),
        position: u64,
        bytes: &[u8],
        witness: bool,
    ) -> Result<Option<GroupMeta>, Error> {
        let entry = LogEntry::decode(bytes)?;
        // With the group's global indexes caught up, this entry's go in with its data;
        // else the indexer writes them later, after the earlier ones.
        let caught_up = meta.indexed == meta.applied;
        let indexed_here = caught_up && !self.queue.paused();
        let mut cells = EntryCells::default();
        let mut global = false;
        if !witness {
            let schema = self.schema_at(entry.schema_version)?;
            global = touches_global_index(&schema, &entry);
            let indexes = if indexed_here {
                Indexes::All
            } else {
                Indexes::Local
            };
            let group = (root.table.as_str(), root.row.as_slice());
            cells = entry_cells(self.engine(), &schema, group.0, group.1, &entry, indexes)?;
        }
        let catalog = Self::is_catalog(root);
        if catalog {
            catalog_cells(&self.name, &entry, &mut cells);
        }
        // The root table's cells go in one commit with the state cell, the others
        // (global indexes, say) before it.
        let with_state = cells.take_table(&root.table);
        cells.write(self.engine())?;
        let next = GroupMeta {
            applied: position,
            // A no-op chosen by catch-up carries no timestamp of its own.
            applied_timestamp: meta.applied_timestamp.max(entry.timestamp),
            indexed: if caught_up && (indexed_here || !global) {
                position
            } else {
                meta.indexed
            },
            schema_version: meta.schema_version.max(entry.schema_version),
            cleaned: meta.cleaned,
        };
        if !self
            .replica
            .set_meta_along(root, expected, next, &with_state)?
        {
            return Ok(None);
        }
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        if catalog {
            self.recorded_in_catalog(&entry)?;
        }
        match (global, indexed_here) {
            (true, true) => self.queue.indexed(root, entry.timestamp),
            (true, false) => self.queue.applied(root, entry.timestamp),
            (false, _) => {}
        }
        if !witness && entry.writes.iter().any(|w| matches!(w, Write::Send { .. })) {
            self.outboxes.add(root);
        }
        Ok(Some(next))
    }

    /// With a single voter, cleans the group's log as it rolls forward (a replicated
    /// log is cleaned by [`Core::clean_logs`], which asks the other replicas first).
    pub(super) fn clean_log(&self, root: &RootRow, state: &GroupState) -> Result<(), Error> {
        if self.sole_voter() {
            self.clean_log_below(root, state, u64::MAX)?;
        }
        Ok(())
    }

    /// The last position a cleanup of `state` would delete, below `bound` as well as
    /// the applied and globally indexed positions, keeping `log_retention`; `None`
    /// until that many more have accumulated since the last cleanup.
    pub(super) fn cleanup_through(&self, state: &GroupState, bound: u64) -> Option<u64> {
        let keep = self.options.log_retention.max(1);
        let meta = state.meta;
        let upto = meta
            .applied
            .min(meta.indexed)
            .min(bound)
            .saturating_sub(keep);
        (upto >= meta.cleaned + keep).then_some(upto)
    }

    /// Deletes the log positions [`Core::cleanup_through`] allows, and records how far
    /// it deleted in the group's state. Whether it deleted.
    pub(super) fn clean_log_below(
        &self,
        root: &RootRow,
        state: &GroupState,
        bound: u64,
    ) -> Result<bool, Error> {
        let Some(upto) = self.cleanup_through(state, bound) else {
            return Ok(false);
        };
        let old: Vec<u64> = (state.meta.cleaned + 1..=upto).collect();
        let cleaned = GroupMeta {
            cleaned: upto,
            ..state.meta
        };
        // Losing the race to another state change only leaves the cleanup for later.
        self.replica
            .clean_log(root, state.meta_cell.as_deref(), cleaned, &old)
    }
}

thread_local! {
    /// How many transactions this thread is inside (a closure may open another).
    static GATE_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A transaction's shared hold on the schema gate. Only the outermost transaction of a
/// thread takes the lock: a nested one is covered by it, and taking it again could
/// deadlock behind a waiting schema change (which, in turn, is not starved by
/// overlapping transactions as it would be with recursive read locks).
pub(super) struct GateGuard<'a> {
    _lock: Option<parking_lot::RwLockReadGuard<'a, ()>>,
}

impl<'a> GateGuard<'a> {
    pub(super) fn enter(gate: &'a RwLock<()>) -> Self {
        let depth = GATE_DEPTH.with(|d| {
            d.set(d.get() + 1);
            d.get()
        });
        GateGuard {
            _lock: (depth == 1).then(|| gate.read()),
        }
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        GATE_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// What a transaction that ran needs to commit, or, if it wrote nothing, where it
/// read (it is done).
fn finish_transaction(tx: Transaction<'_>) -> Result<Prepared, Committed> {
    let (read_at, timestamp, version) = (
        tx.snapshot.position.unwrap_or(0),
        tx.snapshot.timestamp.unwrap_or(0),
        tx.snapshot.schema_version,
    );
    let (changes, reads, writes) = tx.into_parts();
    if changes.is_empty() {
        return Err(Committed {
            position: read_at,
            timestamp,
            wrote: false,
            attempts: 1,
        });
    }
    Ok(Prepared {
        read_at,
        schema_version: version,
        reads,
        writes,
        changes,
    })
}

/// Waits a random time that grows with the attempt, so that contending writers
/// spread out instead of colliding again.
pub(super) fn backoff(attempt: u32) {
    let ceiling_micros = 50u64 << attempt.min(8);
    std::thread::sleep(Duration::from_micros(random_u64() % ceiling_micros));
}

/// 64 random bits (from the standard library's randomly keyed hasher).
pub(super) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into()),
    );
    hasher.finish()
}
