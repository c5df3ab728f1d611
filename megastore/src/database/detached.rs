//! Detached transactions: a transaction whose reads and commit arrive as separate
//! requests (the client API over gRPC), with no closure to run again. It begins at a
//! [`ReadToken`] (the group's position, made current), reads at that token, and
//! commits its buffered writes together with what it says it read. The group-commit
//! rule decides: if no entry since the token wrote what it read, it commits (perhaps
//! at a later position); otherwise it is refused as a conflict and the client starts
//! over. Nothing is kept on the server between the requests.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use super::commit::{Prepared, Verdict};
use super::group::GateGuard;
use super::{Committed, Database, GroupKey};
use crate::entity::Entity;
use crate::footprint::Footprint;
use crate::keys::Value;
use crate::txn::{Snapshot, Transaction};
use crate::Error;

/// Where a detached transaction reads: a log position of its group, the timestamp of
/// that position's entry, the schema version it runs under, and when it began (the
/// clock of the replica it began at, microseconds; 0: unknown, not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadToken {
    pub position: u64,
    pub timestamp: i64,
    pub schema_version: u64,
    pub began_at: i64,
}

/// A write of a detached transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    Put(Entity),
    Delete { table: String, key: Vec<Value> },
}

/// What a detached transaction read: entities by table and primary key, or the whole
/// group (it scanned or queried).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadSet {
    pub entities: Vec<(String, Vec<Value>)>,
    pub whole_group: bool,
}

impl Database {
    /// Begins a detached transaction on `group`: applies everything committed (as a
    /// current read does) and returns where it reads.
    pub fn begin(&self, group: &GroupKey) -> Result<ReadToken, Error> {
        self.begin_with(group, true)
    }

    /// Begins a transaction that will read nothing (a blind write): at the position
    /// this replica last applied, without making the group current first, since
    /// nothing is read (and committing rolls the group forward anyway). Making it
    /// current would run Paxos for positions whose writes are still in flight here.
    pub fn begin_blind(&self, group: &GroupKey) -> Result<ReadToken, Error> {
        self.begin_with(group, false)
    }

    fn begin_with(&self, group: &GroupKey, current: bool) -> Result<ReadToken, Error> {
        let root = self.core.root_row(group)?;
        self.core.serves_reads()?;
        let meta = if current {
            self.core.make_current(&root)?.meta
        } else {
            self.core.replica.group_meta(&root)?.0
        };
        let (schema_version, _) = self.core.schema_for(meta.schema_version)?;
        Ok(ReadToken {
            position: meta.applied,
            timestamp: meta.applied_timestamp,
            schema_version,
            began_at: self.core.options.clock.now_micros(),
        })
    }

    /// A snapshot of `group` as of `token`, for a detached transaction's reads.
    pub fn read_at(&self, group: &GroupKey, token: ReadToken) -> Result<Snapshot<'_>, Error> {
        let root = self.core.root_row(group)?;
        self.core.serves_reads()?;
        let state = self.core.replica.group_state(&root)?;
        if state.meta.applied < token.position {
            // Asked of a replica that has not applied the token's position yet.
            self.core.make_current(&root)?;
        }
        self.snapshot_at(group, root.row, token)
    }

    fn snapshot_at(
        &self,
        group: &GroupKey,
        group_row: Vec<u8>,
        token: ReadToken,
    ) -> Result<Snapshot<'_>, Error> {
        Ok(Snapshot {
            core: &self.core,
            schema: self.core.schema_for(token.schema_version)?.1,
            schema_version: token.schema_version,
            root_table: group.root.clone(),
            root_key: Some(group.key.clone()),
            group_row,
            position: Some(token.position),
            timestamp: Some(token.timestamp),
            reads: None,
            taken_at: token.began_at,
        })
    }

    /// Commits a detached transaction that began at `token`, read `reads` and writes
    /// `writes`. `Ok(None)`: an entry since the token wrote something it read (or its
    /// turn did not come); nothing was written, and it may begin again.
    pub fn commit_detached(
        &self,
        group: &GroupKey,
        token: ReadToken,
        reads: &ReadSet,
        writes: Vec<Mutation>,
    ) -> Result<Option<Committed>, Error> {
        let root = self.core.root_row(group)?;
        self.core.serves_reads()?;
        let _gate = GateGuard::enter(&self.core.schema_gate);
        // No read happens here: committing rolls the group forward before the rule.
        let mut tx = Transaction::on(self.snapshot_at(group, root.row.clone(), token)?);
        let read_footprint = footprint_of(&tx.snapshot, reads)?;
        for write in writes {
            match write {
                Mutation::Put(entity) => tx.put(entity)?,
                Mutation::Delete { table, key } => tx.delete(&table, &key)?,
            }
        }
        tx.snapshot.reads = Some(RefCell::new(read_footprint));
        let (changes, reads, writes) = tx.into_parts();
        if changes.is_empty() {
            return Ok(Some(Committed {
                position: token.position,
                timestamp: token.timestamp,
                wrote: false,
                attempts: 1,
            }));
        }
        let prepared = Prepared {
            read_at: token.position,
            schema_version: token.schema_version,
            reads,
            writes,
            changes,
        };
        match self
            .core
            .commit_queues
            .commit(&self.core, &root, prepared)?
        {
            Verdict::Committed {
                position,
                timestamp,
            } => Ok(Some(Committed {
                position,
                timestamp,
                wrote: true,
                attempts: 1,
            })),
            Verdict::Rerun => {
                self.core.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }
}

/// The entities `reads` names, as the rule compares them.
fn footprint_of(snapshot: &Snapshot<'_>, reads: &ReadSet) -> Result<Footprint, Error> {
    let mut footprint = Footprint::default();
    if reads.whole_group {
        footprint.add_whole_group();
        return Ok(footprint);
    }
    for (table, key) in &reads.entities {
        footprint.add_row(table, &snapshot.own_row(table, key)?);
    }
    Ok(footprint)
}
