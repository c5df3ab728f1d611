//! Group commit: the transactions of one entity group that finish while an entry is
//! being proposed share the group's next entry, and a transaction whose position was
//! taken commits at a later one without running again when nothing it read changed.
//!
//! The rule that keeps transactions serializable. A transaction `T` that read the group
//! at position `r` may commit in the entry at position `q > r` when:
//!
//! 1. no entry at positions `r+1 .. q-1` wrote an entity `T` read (any entity, if `T`
//!    scanned or queried), and each was written under `T`'s schema version; and
//! 2. no other transaction in the entry at `q` writes an entity `T` reads or writes.
//!
//! Then every value `T` read is the value the group holds after position `q - 1`, and
//! the transactions of one entry touch disjoint entities for writing. So running the
//! log's entries in order, and each entry's transactions in any order, is a serial
//! execution that produces exactly what every transaction read and wrote. Each writing
//! transaction takes effect when its entry is chosen, between its call and its return,
//! so the order also respects real time. The simulator (`sim/system.rs`) checks both:
//! the reads against a replay of the chosen log, and linearizability per key.
//!
//! Threads: the first transaction of a group to finish leads. It proposes an entry
//! holding every waiting transaction the rule admits, answers them, and hands the lead
//! to a waiting one (if any) instead of serving later arrivals itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::replicated::Proposal;
use super::Core;
use crate::apply::touches_global_index;
use crate::footprint::Footprint;
use crate::log::{LogEntry, Write};
use crate::replica::{GroupState, RootRow};
use crate::Error;

/// A transaction that ran and wrote: what it needs to commit.
pub(crate) struct Prepared {
    /// The position it read at.
    pub read_at: u64,
    pub schema_version: u64,
    pub reads: Footprint,
    pub writes: Footprint,
    pub changes: Vec<Write>,
}

/// What became of a prepared transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its writes are in the entry chosen at `position`.
    Committed { position: u64, timestamp: i64 },
    /// Something it read changed (or its turn did not come): it did not commit, and
    /// runs again from a fresh read.
    Rerun,
}

/// The writes of one chosen entry, as the rule needs them.
struct EntryWrites {
    schema_version: u64,
    written: Footprint,
}

impl Core {
    /// Commits `txs` (transactions of the group at `root`) in as few entries as the
    /// rule allows, in their order. One verdict (or error) per transaction: an error
    /// leaves its outcome unknown.
    pub(crate) fn commit_batch(
        &self,
        root: &RootRow,
        txs: &[Prepared],
    ) -> Vec<Result<Verdict, Error>> {
        let mut verdicts: Vec<Option<Result<Verdict, Error>>> = txs.iter().map(|_| None).collect();
        let mut waiting: Vec<usize> = (0..txs.len()).collect();
        let mut chosen_entries = BTreeMap::new();
        let mut lost = 0;
        while !waiting.is_empty() {
            // A lost position was published here by its winner; otherwise the local
            // state is where the transactions read, or later.
            let state = match if lost > 0 {
                self.make_current(root)
            } else {
                self.roll_forward(root)
            } {
                Ok(state) => state,
                Err(e) => {
                    // Nothing of theirs is pending: they are known not committed.
                    tracing::debug!("group commit stopped before proposing: {e}");
                    for &i in &waiting {
                        verdicts[i] = Some(Ok(Verdict::Rerun));
                    }
                    break;
                }
            };
            let locks = match self.prepared_locks(root, &state) {
                Ok(locks) => locks,
                Err(e) => {
                    for &i in &waiting {
                        verdicts[i] = Some(Err(duplicate(&e)));
                    }
                    break;
                }
            };
            for &i in &waiting {
                if let Some(txid) = locked_out(&txs[i], &locks) {
                    verdicts[i] = Some(Err(Error::Locked { txid }));
                    continue;
                }
                match self.still_valid(root, &state, &txs[i], &mut chosen_entries) {
                    Ok(true) => {}
                    Ok(false) => verdicts[i] = Some(Ok(Verdict::Rerun)),
                    Err(e) => verdicts[i] = Some(Err(e)),
                }
            }
            waiting.retain(|&i| verdicts[i].is_none());
            let batch = admit(txs, &waiting);
            if batch.is_empty() {
                break;
            }
            match self.propose_batch(root, &state, txs, &batch) {
                Ok(Some(verdict)) => {
                    for &i in &batch {
                        verdicts[i] = Some(Ok(verdict));
                    }
                }
                Ok(None) => {
                    lost += 1;
                    if lost >= self.options.max_attempts.max(1) {
                        break;
                    }
                }
                Err(e) => {
                    for &i in &batch {
                        verdicts[i] = Some(Err(duplicate(&e)));
                    }
                }
            }
            waiting.retain(|&i| verdicts[i].is_none());
        }
        verdicts
            .into_iter()
            .map(|v| v.unwrap_or(Ok(Verdict::Rerun)))
            .collect()
    }

    /// Rule 1: whether `tx` may still commit after the entries chosen since its read.
    fn still_valid(
        &self,
        root: &RootRow,
        state: &GroupState,
        tx: &Prepared,
        chosen_entries: &mut BTreeMap<u64, Option<EntryWrites>>,
    ) -> Result<bool, Error> {
        let (from, to) = (tx.read_at + 1, state.meta.applied);
        if from > to {
            return Ok(true);
        }
        if chosen_entries.range(from..=to).count() as u64 != to - from + 1 {
            let log = self.replica.log_range(root, from, to)?;
            for position in from..=to {
                let writes = match log.get(&position).and_then(|s| s.accepted.as_ref()) {
                    Some((_, value)) => Some(self.entry_writes(value)?),
                    None => None, // cleaned up: what it wrote is no longer known
                };
                chosen_entries.insert(position, writes);
            }
        }
        Ok(chosen_entries.range(from..=to).all(|(_, e)| {
            e.as_ref().is_some_and(|e| {
                e.schema_version == tx.schema_version && !e.written.overlaps(&tx.reads)
            })
        }))
    }

    /// What the group's prepared two-phase transactions lock as of `state`: per
    /// transaction, the entities it read and the ones it writes.
    fn prepared_locks(&self, root: &RootRow, state: &GroupState) -> Result<Vec<Lock>, Error> {
        let records = crate::prepared::group_records(
            self.engine(),
            &root.table,
            &root.row,
            Some(state.meta.applied_timestamp),
        )?;
        let schema = self.current.read().1.clone();
        records
            .iter()
            .map(|r| {
                let (reads, writes) = r.locks(&schema)?;
                Ok(Lock {
                    txid: r.txid,
                    reads,
                    writes,
                })
            })
            .collect()
    }

    fn entry_writes(&self, value: &[u8]) -> Result<EntryWrites, Error> {
        let entry = LogEntry::decode(value)?;
        let schema = self.schema_at(entry.schema_version)?;
        Ok(EntryWrites {
            schema_version: entry.schema_version,
            written: Footprint::written_by(&schema, &entry)?,
        })
    }

    /// Proposes one entry holding the writes of `batch` at the position after
    /// `state`'s. `None`: another entry took the position.
    fn propose_batch(
        &self,
        root: &RootRow,
        state: &GroupState,
        txs: &[Prepared],
        batch: &[usize],
    ) -> Result<Option<Verdict>, Error> {
        let schema_version = txs[batch[0]].schema_version;
        let schema = self.schema_at(schema_version)?;
        let next_leader = match self.replication() {
            Some(config) => self.next_leader(config),
            None => self.options.replica_id,
        };
        let mut entry = LogEntry {
            timestamp: 0,
            schema_version,
            next_leader,
            proposal: self.proposals.fetch_add(1, Ordering::Relaxed),
            writes: batch
                .iter()
                .flat_map(|&i| txs[i].changes.iter().cloned())
                .collect(),
        };
        let global = touches_global_index(&schema, &entry);
        entry.timestamp = self.queue.stamp(root, state.meta.applied_timestamp, global);
        let position = state.meta.applied + 1;
        // An error proposing leaves the outcome unknown: the entry may still be chosen
        // later, so its index stamp stays registered.
        let sole_voter = self.sole_voter();
        let committed = if sole_voter {
            self.replica
                .accept(root, position, 0, &entry.encode())?
                .is_ok()
        } else {
            // Published (applied here and at the peers) before it returns.
            matches!(
                self.propose_entry(root, state, position, entry.encode())?,
                Proposal::Committed
            )
        };
        if !committed {
            if global {
                self.queue.abandon(root, entry.timestamp);
            }
            return Ok(None);
        }
        self.counters.entries.fetch_add(1, Ordering::Relaxed);
        self.counters
            .commits
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        // Committed: applying is best effort, and the next reader finishes it.
        if sole_voter {
            if let Err(e) = self.roll_forward(root) {
                tracing::warn!("entry {position} committed, apply deferred: {e}");
            }
        }
        Ok(Some(Verdict::Committed {
            position,
            timestamp: entry.timestamp,
        }))
    }
}

/// A prepared two-phase transaction's locks in a group.
struct Lock {
    txid: u64,
    reads: Footprint,
    writes: Footprint,
}

/// The prepared transaction that keeps `tx` from committing, if any. Nothing may write
/// what a prepared transaction read or writes (it would change what that transaction
/// saw, or be overwritten by a commit decided before); and a two-phase transaction
/// preparing may not read what another one writes (each would then have read before
/// the other: across groups, write skew). Resolving a transaction is never locked out.
fn locked_out(tx: &Prepared, locks: &[Lock]) -> Option<u64> {
    if tx
        .changes
        .iter()
        .any(|w| matches!(w, Write::Resolve { .. }))
    {
        return None;
    }
    let preparing = tx.changes.iter().find_map(|w| match w {
        Write::Prepare { txid, .. } => Some(*txid),
        _ => None,
    });
    locks
        .iter()
        .filter(|lock| Some(lock.txid) != preparing)
        .find(|lock| {
            tx.writes.overlaps(&lock.reads)
                || tx.writes.overlaps(&lock.writes)
                || (preparing.is_some() && tx.reads.overlaps(&lock.writes))
        })
        .map(|lock| lock.txid)
}

/// Rule 2: the waiting transactions that go into the next entry, in order: each one
/// that shares the first one's schema version and touches no entity another admitted
/// one writes, nor writes one another admitted one reads.
fn admit(txs: &[Prepared], waiting: &[usize]) -> Vec<usize> {
    let Some(&first) = waiting.first() else {
        return Vec::new();
    };
    let version = txs[first].schema_version;
    let (mut read, mut written) = (Footprint::default(), Footprint::default());
    let mut batch = Vec::new();
    for &i in waiting {
        let tx = &txs[i];
        if tx.schema_version != version
            || tx.reads.overlaps(&written)
            || tx.writes.overlaps(&written)
            || tx.writes.overlaps(&read)
        {
            continue;
        }
        read.extend(&tx.reads);
        written.extend(&tx.writes);
        batch.push(i);
    }
    batch
}

/// A copy of `e` for each transaction of a batch that failed with it.
fn duplicate(e: &Error) -> Error {
    match e {
        Error::Conflict(p) => Error::Conflict(*p),
        Error::TooManyConflicts { attempts } => Error::TooManyConflicts {
            attempts: *attempts,
        },
        Error::Invalid(m) => Error::Invalid(m.clone()),
        Error::IndexNotReady(m) => Error::IndexNotReady(m.clone()),
        Error::Damaged(m) => Error::Damaged(m.clone()),
        Error::Locked { txid } => Error::Locked { txid: *txid },
        other => Error::Unavailable(other.to_string()),
    }
}

/// The transactions of each group waiting for an entry, and whether one leads.
#[derive(Default)]
pub(super) struct CommitQueues {
    groups: Mutex<HashMap<RootRow, GroupQueue>>,
}

#[derive(Default)]
struct GroupQueue {
    waiting: Vec<(Prepared, Arc<Slot>)>,
}

/// Where a waiting transaction's thread learns its verdict, or that it leads.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Waiting,
    Lead,
    Done(Result<Verdict, Error>),
}

impl Slot {
    fn set(&self, state: SlotState) {
        *self.state.lock() = state;
        self.changed.notify_one();
    }

    /// Blocks until the slot leaves `Waiting`; `None` means this thread now leads.
    fn wait(&self) -> Option<Result<Verdict, Error>> {
        let mut state = self.state.lock();
        loop {
            match std::mem::take(&mut *state) {
                SlotState::Waiting => self.changed.wait(&mut state),
                SlotState::Lead => return None,
                SlotState::Done(verdict) => return Some(verdict),
            }
        }
    }
}

impl CommitQueues {
    /// Commits `tx` on `core`'s group at `root` together with whatever other
    /// transactions of the group are waiting; blocks until its verdict.
    pub(super) fn commit(
        &self,
        core: &Core,
        root: &RootRow,
        tx: Prepared,
    ) -> Result<Verdict, Error> {
        let slot = Arc::new(Slot::default());
        let leads = {
            let mut groups = self.groups.lock();
            match groups.get_mut(root) {
                Some(queue) => {
                    queue.waiting.push((tx, slot.clone()));
                    false
                }
                None => {
                    groups.insert(
                        root.clone(),
                        GroupQueue {
                            waiting: vec![(tx, slot.clone())],
                        },
                    );
                    true
                }
            }
        };
        if !leads {
            if let Some(verdict) = slot.wait() {
                return verdict;
            }
        }
        self.lead(core, root);
        slot.wait()
            .unwrap_or_else(|| Err(Error::Unavailable("group commit lost a verdict".into())))
    }

    /// Commits everything waiting for the group now, then passes the lead on (or
    /// closes the queue when nobody is waiting).
    fn lead(&self, core: &Core, root: &RootRow) {
        let taken = match self.groups.lock().get_mut(root) {
            Some(queue) => std::mem::take(&mut queue.waiting),
            None => Vec::new(),
        };
        let (txs, slots): (Vec<Prepared>, Vec<Arc<Slot>>) = taken.into_iter().unzip();
        let mut handoff = Handoff {
            queues: self,
            root,
            slots,
        };
        let verdicts = core.commit_batch(root, &txs);
        for (slot, verdict) in std::mem::take(&mut handoff.slots).iter().zip(verdicts) {
            slot.set(SlotState::Done(verdict));
        }
    }
}

/// Passes the lead on when a leader is done, and (should it panic while committing)
/// answers the transactions it took, so that no thread waits forever.
struct Handoff<'a> {
    queues: &'a CommitQueues,
    root: &'a RootRow,
    slots: Vec<Arc<Slot>>,
}

impl Drop for Handoff<'_> {
    fn drop(&mut self) {
        for slot in &self.slots {
            slot.set(SlotState::Done(Err(Error::Unavailable(
                "the transaction committing this group's entry failed".into(),
            ))));
        }
        let mut groups = self.queues.groups.lock();
        match groups.get(self.root).and_then(|q| q.waiting.first()) {
            Some((_, next)) => next.set(SlotState::Lead),
            None => {
                groups.remove(self.root);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use std::sync::Arc;

    use bigtable::fs::FaultyFs;
    use bigtable::{Engine, EngineOptions};

    use super::{Prepared, Verdict};
    use crate::database::Ran;
    use crate::sim::registers::{group_key, Op, Reg, SCHEMA};
    use crate::{Database, DatabaseOptions, Value};

    const R: [Reg; 3] = [
        Reg { group: 0, id: 0 },
        Reg { group: 0, id: 1 },
        Reg { group: 0, id: 2 },
    ];

    fn open() -> Database {
        let engine = Engine::open(Arc::new(FaultyFs::new()), "/db", EngineOptions::tiny()).unwrap();
        Database::open_with_schema(Arc::new(engine), SCHEMA, DatabaseOptions::default()).unwrap()
    }

    fn prepare(db: &Database, op: Op) -> Prepared {
        match db.prepare(&op.group_key(), |tx| op.run(tx)).unwrap() {
            Ran::Wrote(_, prepared) => prepared,
            Ran::ReadOnly(..) => panic!("{op:?} wrote nothing"),
        }
    }

    /// Sets a register that holds nothing yet: reads it, writes it.
    fn set_empty(db: &Database, reg: Reg, value: i64) -> Prepared {
        prepare(db, Op::Cas(reg, None, value))
    }

    fn commit(db: &Database, txs: &[Prepared]) -> Vec<Verdict> {
        let verdicts = db.commit_prepared(&group_key(0), txs).unwrap();
        verdicts.into_iter().map(Result::unwrap).collect()
    }

    fn run(db: &Database, op: Op) {
        db.transact(&op.group_key(), |tx| op.run(tx)).unwrap();
    }

    fn values(db: &Database) -> Vec<Option<i64>> {
        R.iter()
            .map(|&reg| {
                let (seen, _) = db
                    .transact(&group_key(0), |tx| Op::Read(reg).run(tx))
                    .unwrap();
                seen.reads[0].1
            })
            .collect()
    }

    fn at(position: u64) -> impl Fn(&Verdict) -> bool {
        move |v| matches!(v, Verdict::Committed { position: p, .. } if *p == position)
    }

    #[test]
    fn transactions_on_different_entities_share_one_entry() {
        let db = open();
        let txs: Vec<Prepared> = R.iter().map(|&reg| set_empty(&db, reg, 1)).collect();
        let verdicts = commit(&db, &txs);
        assert!(verdicts.iter().all(at(1)), "{verdicts:?}");
        assert_eq!(values(&db), vec![Some(1); 3]);
        let stats = db.stats();
        assert_eq!((stats.commits, stats.entries), (3, 1));
    }

    #[test]
    fn a_transaction_whose_read_changed_runs_again() {
        let db = open();
        let txs = [set_empty(&db, R[0], 1), set_empty(&db, R[0], 2)];
        let verdicts = commit(&db, &txs);
        assert!(at(1)(&verdicts[0]), "{verdicts:?}");
        assert_eq!(verdicts[1], Verdict::Rerun);
        assert_eq!(values(&db)[0], Some(1));
    }

    #[test]
    fn blind_writes_to_one_entity_take_an_entry_each_in_order() {
        let db = open();
        let txs = [
            prepare(&db, Op::Write(R[0], 10)),
            prepare(&db, Op::Write(R[0], 20)),
        ];
        let verdicts = commit(&db, &txs);
        assert!(at(1)(&verdicts[0]) && at(2)(&verdicts[1]), "{verdicts:?}");
        assert_eq!(values(&db)[0], Some(20));
    }

    #[test]
    fn a_transaction_commits_after_an_entry_that_wrote_what_it_did_not_read() {
        let db = open();
        let stale = set_empty(&db, R[0], 1);
        run(&db, Op::Write(R[1], 5)); // another transaction commits first, elsewhere
        let verdicts = commit(&db, &[stale]);
        assert!(at(2)(&verdicts[0]), "{verdicts:?}");
        assert_eq!(values(&db), vec![Some(1), Some(5), None]);
        assert_eq!(db.stats().conflicts, 0);
    }

    #[test]
    fn a_transaction_commits_not_after_an_entry_that_wrote_what_it_read() {
        let db = open();
        let stale = set_empty(&db, R[0], 1);
        run(&db, Op::Write(R[0], 5));
        assert_eq!(commit(&db, &[stale]), vec![Verdict::Rerun]);
        assert_eq!(values(&db)[0], Some(5));
    }

    #[test]
    fn a_scan_reads_the_whole_group() {
        let db = open();
        let scanner = |db: &Database| match db
            .prepare(&group_key(0), |tx| {
                let n = tx.scan("Register", &[Value::Int64(0)])?.len();
                Op::Write(R[2], n as i64).run(tx)
            })
            .unwrap()
        {
            Ran::Wrote(_, prepared) => prepared,
            Ran::ReadOnly(..) => panic!("the scanner wrote nothing"),
        };
        let stale = scanner(&db);
        run(&db, Op::Write(R[1], 5));
        assert_eq!(commit(&db, &[stale]), vec![Verdict::Rerun]);
        // Nor does a scanner share an entry with a writer.
        let txs = [set_empty(&db, R[0], 1), scanner(&db)];
        let verdicts = commit(&db, &txs);
        assert!(at(2)(&verdicts[0]), "{verdicts:?}");
        assert_eq!(verdicts[1], Verdict::Rerun);
    }
}
