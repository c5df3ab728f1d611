//! Two-phase commit across entity groups (Megastore §3.3.2), for the updates that must
//! be atomic across groups (a unique name, a transfer between accounts).
//!
//! A two-phase transaction runs a transaction on each of its groups (its parts), each
//! on the group's latest position. Then:
//!
//! 1. **Prepare.** Each part, in row-key order, commits an entry holding a `prepare`
//!    write: what the part read and the puts and deletes it wants. Committing checks
//!    the part's reads as any commit does (`commit.rs`), and applying records the part,
//!    which locks the entities it read or writes (`prepared.rs`).
//! 2. **Decide.** The first group (the coordinator) commits a `resolve` entry that
//!    records the decision (commit iff every part prepared) and resolves its own part.
//!    The first decision recorded stands: a later `resolve` at the coordinator follows
//!    it, whatever it proposed. So the outcome is what the coordinator's log says.
//! 3. **Finish.** Every other part commits a `resolve` entry with the outcome, which
//!    applies its writes (if committed) and unlocks.
//!
//! A coordinator that stops between the steps leaves parts prepared. Their records say
//! who decides, so anyone can finish them: [`Core::finish_prepared`] (run by the upkeep
//! thread, and by a writer that finds an entity locked for longer than
//! `DatabaseOptions::prepared_timeout`) records an abort at the coordinator unless a
//! decision is there, and resolves the part with whichever decision stands.
//!
//! Nothing waits for a lock: a transaction that meets one gets `Error::Locked`, and a
//! two-phase transaction that cannot prepare a part aborts the parts it prepared. So
//! there are no deadlocks, only aborts (which `transact_multi` retries).

use std::sync::atomic::Ordering;

use super::commit::{Prepared, Verdict};
use super::group::{backoff, GateGuard};
use super::{Core, Database, GroupKey, GroupName};
use crate::footprint::Footprint;
use crate::log::Write;
use crate::prepared::{self, PreparedRecord};
use crate::replica::RootRow;
use crate::txn::Transaction;
use crate::{Entity, Error};

/// A transaction on several entity groups: one [`Transaction`] per group.
pub struct MultiTransaction<'d> {
    parts: Vec<(GroupKey, RootRow, Transaction<'d>)>,
}

impl<'d> MultiTransaction<'d> {
    /// The transaction on `group`, one of the groups this one was opened on.
    pub fn on(&mut self, group: &GroupKey) -> Result<&mut Transaction<'d>, Error> {
        self.parts
            .iter_mut()
            .find(|(g, _, _)| g == group)
            .map(|(_, _, tx)| tx)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "group {group:?} is not one this transaction opened"
                ))
            })
    }
}

/// What a successful two-phase transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiCommitted {
    pub txid: u64,
    /// How many times the closure ran.
    pub attempts: u32,
}

/// A two-phase transaction with every part prepared, waiting for its decision. Dropping
/// it without deciding leaves the parts locked until a finisher aborts them (as when a
/// coordinator crashes).
#[derive(Debug)]
pub struct PreparedMulti {
    pub txid: u64,
    coordinator: Part,
    others: Vec<Part>,
}

/// A prepared part: its group, root row and writes.
#[derive(Debug, Clone)]
struct Part {
    group: GroupKey,
    root: RootRow,
    writes: Vec<Write>,
}

impl PreparedMulti {
    /// Records the decision at the coordinator and resolves every part. Whether the
    /// transaction committed: `false` if a finisher had recorded an abort first.
    pub fn commit(self, db: &Database) -> Result<bool, Error> {
        let committed = self.decide(db, true)?;
        db.core.resolve_parts(self.txid, &self.others, committed)?;
        Ok(committed)
    }

    /// Records an abort (unless a decision stands) and unlocks every part.
    pub fn abort(self, db: &Database) -> Result<(), Error> {
        let committed = self.decide(db, false)?;
        db.core.resolve_parts(self.txid, &self.others, committed)
    }

    /// Only records the decision at the coordinator (and resolves its part), leaving
    /// the other parts prepared, as a coordinator that stops right after deciding
    /// would. The outcome that stands.
    pub fn decide(&self, db: &Database, commit: bool) -> Result<bool, Error> {
        db.core.decide(self.txid, &self.coordinator, commit)
    }
}

impl Database {
    /// Runs `f` as one transaction over `groups` and commits it atomically by two-phase
    /// commit, running `f` again (up to `max_attempts` times) when a part cannot
    /// prepare because of a conflict or a lock. An error from `f` aborts it.
    pub fn transact_multi<R>(
        &self,
        groups: &[GroupKey],
        mut f: impl FnMut(&mut MultiTransaction<'_>) -> Result<R, Error>,
    ) -> Result<(R, MultiCommitted), Error> {
        let attempts = self.core.options.max_attempts.max(1);
        for attempt in 1..=attempts {
            match self.prepare_multi(groups, &mut f) {
                Ok((result, prepared)) => {
                    let txid = prepared.txid;
                    if prepared.commit(self)? {
                        return Ok((
                            result,
                            MultiCommitted {
                                txid,
                                attempts: attempt,
                            },
                        ));
                    }
                }
                Err(Error::Conflict(_) | Error::Locked { .. }) => {}
                Err(e) => return Err(e),
            }
            self.core.counters.conflicts.fetch_add(1, Ordering::Relaxed);
            backoff(attempt);
        }
        Err(Error::TooManyConflicts { attempts })
    }

    /// Runs `f` once over `groups` and prepares every part. On any failure it aborts
    /// what it prepared and returns the error (`Error::Conflict` when a part's reads
    /// changed, `Error::Locked` when another two-phase transaction holds an entity).
    pub fn prepare_multi<R>(
        &self,
        groups: &[GroupKey],
        f: impl FnOnce(&mut MultiTransaction<'_>) -> Result<R, Error>,
    ) -> Result<(R, PreparedMulti), Error> {
        self.core.serves_reads()?;
        let mut sorted: Vec<(GroupKey, RootRow)> = Vec::new();
        for group in groups {
            let root = self.core.root_row(group)?;
            if !sorted.iter().any(|(_, r)| *r == root) {
                sorted.push((group.clone(), root));
            }
        }
        sorted.sort_by(|a, b| a.1.cmp(&b.1));
        if sorted.is_empty() {
            return Err(Error::Invalid(
                "a two-phase transaction needs a group".into(),
            ));
        }
        let _gate = GateGuard::enter(&self.core.schema_gate);
        let mut multi = MultiTransaction { parts: Vec::new() };
        for (group, root) in sorted {
            let tx = self.core.begin(GroupName::from(&group), &root)?;
            multi.parts.push((group, root, tx));
        }
        let result = f(&mut multi)?;
        let prepared = self.core.prepare_parts(multi)?;
        Ok((result, prepared))
    }

    /// Claims a unique value across entity groups (the paper's blog name): `claim` is
    /// an entity of a root table keyed by the value. If no entity has that key yet,
    /// writes `claim` and runs `f` on `owner`'s group, in one two-phase transaction.
    /// Whether this claim won (`false`: the value is taken).
    pub fn claim_unique(
        &self,
        claim: &Entity,
        owner: &GroupKey,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<(), Error>,
    ) -> Result<bool, Error> {
        let schema = self.schema();
        let table = schema
            .table(&claim.table)
            .ok_or_else(|| Error::Invalid(format!("table {} is not in the schema", claim.table)))?;
        let key = claim.key(table)?;
        let claimed = GroupKey::new(claim.table.clone(), key.clone());
        let (won, _) = self.transact_multi(&[claimed.clone(), owner.clone()], |tx| {
            if tx.on(&claimed)?.get(&claim.table, &key)?.is_some() {
                return Ok(false);
            }
            tx.on(&claimed)?.put(claim.clone())?;
            f(tx.on(owner)?)?;
            Ok(true)
        })?;
        Ok(won)
    }

    /// Finishes two-phase transactions prepared at least `older_than` ago and still
    /// undecided or unresolved here (their coordinator stopped): aborts them unless a
    /// decision is recorded, and resolves their parts. How many parts it resolved.
    pub fn finish_prepared(&self, older_than: std::time::Duration) -> Result<usize, Error> {
        self.core.serves_reads()?;
        self.core.finish_prepared(older_than)
    }

    /// Every prepared part of a two-phase transaction on this replica (the newest
    /// cells): what is locked, and since when.
    pub fn prepared_transactions(&self) -> Result<Vec<PreparedRecord>, Error> {
        self.core.serves_reads()?;
        let mut records = Vec::new();
        for table in self.core.root_tables() {
            records.extend(prepared::all_records(self.core.engine(), &table)?);
        }
        Ok(records)
    }
}

impl Core {
    /// Commits a prepare entry in each part, in order; on a failure, aborts.
    fn prepare_parts(&self, multi: MultiTransaction<'_>) -> Result<PreparedMulti, Error> {
        let coordinator = multi.parts[0].0.clone();
        let coordinator_root = multi.parts[0].1.clone();
        let txid = self.new_txid(&coordinator_root, &multi.parts[0].2)?;
        let mut parts = Vec::new();
        let mut failure = None;
        for (group, root, tx) in multi.parts {
            let (read_at, version) = (
                tx.snapshot.position.unwrap_or(0),
                tx.snapshot.schema_version,
            );
            // A part that only read prepares too: its reads are checked and locked.
            let (changes, reads, writes) = tx.into_parts();
            if changes
                .iter()
                .any(|w| !matches!(w, Write::Put(_) | Write::Delete { .. }))
            {
                failure = Some(Error::Invalid(
                    "a two-phase transaction only puts and deletes entities".into(),
                ));
                break;
            }
            let entry = Prepared {
                read_at,
                schema_version: version,
                reads: reads.clone(),
                writes,
                changes: vec![Write::Prepare {
                    txid,
                    coordinator: coordinator.clone(),
                    participant: group.clone(),
                    reads,
                    writes: changes.clone(),
                }],
            };
            let part = Part {
                group,
                root,
                writes: changes,
            };
            match self.commit_queues.commit(self, &part.root, entry) {
                Ok(Verdict::Committed { .. }) => parts.push(part),
                Ok(Verdict::Rerun) => failure = Some(Error::Conflict(read_at + 1)),
                Err(e) => {
                    parts.push(part); // it may have been chosen: abort it too
                    failure = Some(e);
                }
            }
            if failure.is_some() {
                break;
            }
        }
        let mut others = parts;
        // The coordinator resolves its own part with the decision (if it prepared).
        let coordinator_part = match others.first() {
            Some(first) if first.root == coordinator_root => others.remove(0),
            _ => Part {
                group: coordinator,
                root: coordinator_root,
                writes: Vec::new(),
            },
        };
        let prepared = PreparedMulti {
            txid,
            coordinator: coordinator_part,
            others,
        };
        match failure {
            None => Ok(prepared),
            Some(e) => {
                if let Err(abort) = self
                    .decide(txid, &prepared.coordinator, false)
                    .and_then(|committed| self.resolve_parts(txid, &prepared.others, committed))
                {
                    tracing::debug!("aborting two-phase transaction {txid:x}: {abort}");
                }
                Err(e)
            }
        }
    }

    /// An id for a new transaction coordinated by the group at `root` (read by `tx`):
    /// this replica, its proposal counter, the clock and the coordinator's position,
    /// mixed; one the coordinator has a decision for already is never reused.
    fn new_txid(&self, root: &RootRow, tx: &Transaction<'_>) -> Result<u64, Error> {
        let position = tx.snapshot.position.unwrap_or(0);
        let at = tx.snapshot.timestamp;
        for _ in 0..16 {
            let mut h = crate::sim::Rng::new(
                self.proposals.fetch_add(1, Ordering::Relaxed)
                    ^ u64::from(self.options.replica_id).rotate_left(48)
                    ^ (self.options.clock.now_micros() as u64).rotate_left(16)
                    ^ position.rotate_left(32),
            );
            let txid = h.next_u64();
            let used = prepared::read_decision(self.engine(), &root.table, &root.row, txid, at)?;
            if used.is_none() {
                return Ok(txid);
            }
        }
        Err(Error::Unavailable(
            "no unused two-phase transaction id".into(),
        ))
    }

    /// Commits the coordinator's resolve entry proposing `commit`; returns the decision
    /// that stands.
    fn decide(&self, txid: u64, coordinator: &Part, commit: bool) -> Result<bool, Error> {
        let resolve = Write::Resolve {
            txid,
            commit,
            decide: true,
            writes: coordinator.writes.clone(),
        };
        let proposed = self.commit_bookkeeping(&coordinator.root, resolve);
        match self.decision(txid, &coordinator.root)? {
            Some(decided) => Ok(decided),
            None => Err(proposed.err().unwrap_or_else(|| {
                Error::Damaged(format!("two-phase transaction {txid:x} has no decision"))
            })),
        }
    }

    /// The decision on `txid` in the coordinator group at `root`, as of its latest
    /// position.
    fn decision(&self, txid: u64, root: &RootRow) -> Result<Option<bool>, Error> {
        let state = self.make_current(root)?;
        let at = Some(state.meta.applied_timestamp);
        prepared::read_decision(self.engine(), &root.table, &root.row, txid, at)
    }

    /// Resolves each part with the outcome. An error leaves the remaining parts to
    /// the finisher.
    fn resolve_parts(&self, txid: u64, parts: &[Part], committed: bool) -> Result<(), Error> {
        let mut failed = None;
        for part in parts {
            let resolve = Write::Resolve {
                txid,
                commit: committed,
                decide: false,
                writes: part.writes.clone(),
            };
            if let Err(e) = self.commit_bookkeeping(&part.root, resolve) {
                failed = Some(Error::Unavailable(format!(
                    "two-phase transaction {txid:x} is decided ({}), but resolving group \
                     {:?} failed ({e}); the finisher resolves it",
                    if committed { "committed" } else { "aborted" },
                    part.group
                )));
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Commits an entry holding `write` alone (a resolve: it reads only its
    /// transaction's state, so it conflicts with nothing but another resolve of it).
    fn commit_bookkeeping(&self, root: &RootRow, write: Write) -> Result<(), Error> {
        let schema = self.current.read().clone();
        let writes = Footprint::of_writes(&schema.1, std::slice::from_ref(&write))?;
        let mut reads = Footprint::default();
        if let Write::Resolve { txid, .. } = &write {
            reads.add_two_phase(*txid);
        }
        for _ in 0..self.options.max_attempts.max(1) {
            let state = self.roll_forward(root)?;
            let entry = Prepared {
                read_at: state.meta.applied,
                schema_version: schema.0.max(state.meta.schema_version),
                reads: reads.clone(),
                writes: writes.clone(),
                changes: vec![write.clone()],
            };
            if let Verdict::Committed { .. } = self.commit_queues.commit(self, root, entry)? {
                return Ok(());
            }
        }
        Err(Error::TooManyConflicts {
            attempts: self.options.max_attempts,
        })
    }

    /// See [`Database::finish_prepared`].
    pub(super) fn finish_prepared(&self, older_than: std::time::Duration) -> Result<usize, Error> {
        if self
            .replication()
            .is_some_and(|r| r.local_member().kind != crate::replicas::ReplicaKind::Full)
        {
            return Ok(0); // only full replicas write on behalf of others
        }
        // Zero means every one, even if the wall clock stepped back since it prepared.
        let cutoff = match older_than.is_zero() {
            true => i64::MAX,
            false => self
                .options
                .clock
                .now_micros()
                .saturating_sub(i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX)),
        };
        let mut finished = 0;
        for table in self.root_tables() {
            for record in prepared::all_records(self.engine(), &table)? {
                if record.prepared_at <= cutoff {
                    self.finish_record(&record)?;
                    finished += 1;
                }
            }
        }
        Ok(finished)
    }

    /// Resolves one abandoned part: by the decision at its coordinator, recording an
    /// abort there first if there is none.
    pub(super) fn finish_record(&self, record: &PreparedRecord) -> Result<(), Error> {
        let root = self.root_row(&record.participant)?;
        let part = Part {
            group: record.participant.clone(),
            root,
            writes: record.writes.clone(),
        };
        if record.participant == record.coordinator {
            self.decide(record.txid, &part, false)?;
            return Ok(());
        }
        let coordinator = Part {
            group: record.coordinator.clone(),
            root: self.root_row(&record.coordinator)?,
            writes: Vec::new(),
        };
        let committed = match self.decision(record.txid, &coordinator.root)? {
            Some(decided) => decided,
            None => self.decide(record.txid, &coordinator, false)?,
        };
        self.resolve_parts(record.txid, std::slice::from_ref(&part), committed)
    }

    /// Finishes two-phase transaction `txid` if its part in the group at `root` was
    /// prepared longer than `prepared_timeout` ago; whether it did.
    pub(super) fn finish_if_abandoned(&self, root: &RootRow, txid: u64) -> Result<bool, Error> {
        let timeout = i64::try_from(self.options.prepared_timeout.as_micros()).unwrap_or(i64::MAX);
        let now = self.options.clock.now_micros();
        let records = prepared::group_records(self.engine(), &root.table, &root.row, None)?;
        match records.iter().find(|r| r.txid == txid) {
            Some(record) if now.saturating_sub(record.prepared_at) >= timeout => {
                self.finish_record(record)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The Bigtable tables of the schema's root tables.
    pub(super) fn root_tables(&self) -> Vec<String> {
        let schema = self.current.read().1.clone();
        let mut tables: Vec<String> = schema
            .tables
            .iter()
            .filter(|t| t.role == crate::schema::GroupRole::Root)
            .map(|t| {
                crate::layout::data_table(&schema, crate::keys::storage_table(&schema, &t.name))
            })
            .collect();
        tables.dedup();
        tables
    }
}
