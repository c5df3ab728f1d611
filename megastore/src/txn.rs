//! Reading one entity group as of a log position ([`Snapshot`]), and a transaction:
//! a snapshot plus writes buffered until commit ([`Transaction`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::Arc;

use crate::database::Core;
use crate::entity::Entity;
use crate::footprint::Footprint;
use crate::index::IndexHit;
use crate::keys::{group_columns, key_prefix, row_key, storage_table, Value};
use crate::layout::{prefix_end, ValueRange};
use crate::log::Write;
use crate::queue::{Message, MessageId};
use crate::read;
use crate::schema::{Index, IndexScope, Schema, Table};
use crate::{Error, GroupKey};

/// A consistent view of one entity group: every read sees the group as of one log
/// position (or, for an inconsistent read, the newest cells).
pub struct Snapshot<'d> {
    pub(crate) core: &'d Core,
    pub(crate) schema: Arc<Schema>,
    /// The version of `schema`.
    pub(crate) schema_version: u64,
    pub(crate) root_table: String,
    /// The root entity's key (`None` inside a back-fill, which sends nothing).
    pub(crate) root_key: Option<Vec<Value>>,
    pub(crate) group_row: Vec<u8>,
    /// `None` for an inconsistent read.
    pub(crate) position: Option<u64>,
    pub(crate) timestamp: Option<i64>,
    /// What a transaction read through this snapshot (`None`: not recorded).
    pub(crate) reads: Option<RefCell<Footprint>>,
    /// When it was taken (this replica's clock, microseconds; 0: unknown).
    pub(crate) taken_at: i64,
}

impl Snapshot<'_> {
    /// The log position this snapshot reads at (`None`: an inconsistent read).
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// The timestamp reads are as of, while the versions they need are still kept
    /// (for the version retention after the snapshot was taken).
    fn as_of(&self) -> Result<Option<i64>, Error> {
        let Some(timestamp) = self.timestamp else {
            return Ok(None);
        };
        self.core.check_snapshot_age(self.taken_at)?;
        Ok(Some(timestamp))
    }

    /// The entity of `table` with primary key `key`, if it exists.
    pub fn get(&self, table: &str, key: &[Value]) -> Result<Option<Entity>, Error> {
        let row = self.own_row(table, key)?;
        self.record(|reads| reads.add_row(table, &row));
        read::get(self.core.engine(), &self.schema, table, &row, self.as_of()?)
    }

    /// The entities of `table` in this group whose primary key starts with `prefix`
    /// (which holds at least the group's key columns), in key order.
    pub fn scan(&self, table: &str, prefix: &[Value]) -> Result<Vec<Entity>, Error> {
        let t = self.own_table(table)?;
        let gc = group_columns(t);
        if prefix.len() < gc {
            return Err(Error::Invalid(format!(
                "a scan of {table} needs its {gc} entity-group key columns"
            )));
        }
        self.check_group(t, &prefix[..gc])?;
        self.record(Footprint::add_whole_group);
        let start = key_prefix(&self.schema, table, prefix)?;
        let rows = bigtable::RowRange {
            end: prefix_end(&start).map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
            start: std::ops::Bound::Included(start),
        };
        read::scan(self.core.engine(), &self.schema, table, rows, self.as_of()?)
    }

    /// The entries of local index `index` in this group whose values lie in `range`,
    /// in (values, key) order. Each hit carries the entity's key and its `STORING`
    /// properties; fetch the entity with [`Snapshot::get`] when more is needed.
    pub fn query_local(&self, index: &str, range: &ValueRange) -> Result<Vec<IndexHit>, Error> {
        let def = self.local_index(index)?;
        self.record(Footprint::add_whole_group);
        read::local_index(
            self.core.engine(),
            &self.schema,
            &self.group_row,
            def,
            range,
            self.as_of()?,
        )
    }

    /// The entities a local-index query finds, in index order, as of this snapshot.
    pub fn query_local_entities(
        &self,
        index: &str,
        range: &ValueRange,
    ) -> Result<Vec<Entity>, Error> {
        let hits = self.query_local(index, range)?;
        let table = &self.local_index(index)?.table;
        let mut out = Vec::with_capacity(hits.len());
        for hit in &hits {
            let entity = self.get(table, &hit.key)?.ok_or_else(|| {
                Error::Damaged(format!(
                    "index {index} names a missing entity {:?}",
                    hit.key
                ))
            })?;
            out.push(entity);
        }
        Ok(out)
    }

    /// Up to `max` messages waiting in this group's inbox of `queue`, oldest arrival
    /// first, without consuming them ([`Transaction::receive`] consumes).
    pub fn inbox(&self, queue: &str, max: usize) -> Result<Vec<Message>, Error> {
        self.check_queue(queue)?;
        self.record(|reads| reads.add_inbox(queue));
        crate::queue::read_mailbox::<Message>(
            self.core.engine(),
            &self.root_data_table(),
            &self.group_row,
            queue,
            self.as_of()?,
            max,
        )
    }

    fn check_queue(&self, queue: &str) -> Result<(), Error> {
        if self.schema.has_queue(queue) {
            Ok(())
        } else {
            Err(Error::Invalid(format!("no queue {queue} in the schema")))
        }
    }

    /// The group this snapshot reads, when its key is known.
    pub(crate) fn group_key(&self) -> Option<GroupKey> {
        Some(GroupKey::new(
            self.root_table.clone(),
            self.root_key.clone()?,
        ))
    }

    /// The Bigtable table of the group's root row (where its mailboxes are).
    fn root_data_table(&self) -> String {
        crate::layout::data_table(&self.schema, storage_table(&self.schema, &self.root_table))
    }

    pub(crate) fn record(&self, f: impl FnOnce(&mut Footprint)) {
        if let Some(reads) = &self.reads {
            f(&mut reads.borrow_mut());
        }
    }

    /// Local index `index` of one of this group's tables, once its back-fill is done.
    fn local_index(&self, index: &str) -> Result<&Index, Error> {
        let def = self
            .schema
            .indexes
            .iter()
            .find(|i| i.name == index && i.scope == IndexScope::Local)
            .ok_or_else(|| Error::Invalid(format!("no local index {index}")))?;
        self.own_table(&def.table)?;
        self.core.check_built(index)?;
        Ok(def)
    }

    fn own_table(&self, table: &str) -> Result<&Table, Error> {
        let t = self
            .schema
            .table(table)
            .ok_or_else(|| Error::Invalid(format!("table {table} is not in the schema")))?;
        if t.root_name() != self.root_table {
            return Err(Error::Invalid(format!(
                "table {table} is not in {}'s entity groups",
                self.root_table
            )));
        }
        Ok(t)
    }

    fn check_group(&self, table: &Table, group_values: &[Value]) -> Result<(), Error> {
        if key_prefix(&self.schema, &table.name, group_values)? != self.group_row {
            return Err(Error::Invalid(format!(
                "{} {:?} is not in this transaction's entity group",
                table.name, group_values
            )));
        }
        Ok(())
    }

    /// The row of `table`'s entity `key`, which must belong to this group.
    pub(crate) fn own_row(&self, table: &str, key: &[Value]) -> Result<Vec<u8>, Error> {
        let t = self.own_table(table)?;
        let row = row_key(&self.schema, table, key)?;
        self.check_group(t, &key[..group_columns(t)])?;
        Ok(row)
    }
}

/// A transaction on one entity group: reads see the snapshot it started from; writes
/// are buffered and become one log entry at commit. The last write to an entity wins.
pub struct Transaction<'d> {
    pub(crate) snapshot: Snapshot<'d>,
    pub(crate) writes: BTreeMap<(String, Vec<u8>), Write>,
    /// Writes that cover the whole group: index back-fills, catalog records.
    group_writes: Vec<Write>,
    /// Queue writes (sends, receives, deliveries, forgets), in order.
    mail: Vec<Write>,
    /// What this transaction wrote to queue state, as entities.
    mail_written: Footprint,
}

impl<'d> Deref for Transaction<'d> {
    type Target = Snapshot<'d>;

    fn deref(&self) -> &Snapshot<'d> {
        &self.snapshot
    }
}

impl<'d> Transaction<'d> {
    pub(crate) fn on(snapshot: Snapshot<'d>) -> Self {
        Transaction {
            snapshot,
            writes: BTreeMap::new(),
            group_writes: Vec::new(),
            mail: Vec::new(),
            mail_written: Footprint::default(),
        }
    }

    /// Sends `payload` on `queue` to the group `to` (of any root table): the message
    /// is sent if and only if this transaction commits, and reaches `to`'s inbox
    /// later, in order with this group's other messages to `to`.
    pub fn send(
        &mut self,
        queue: &str,
        to: &GroupKey,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), Error> {
        self.snapshot.check_queue(queue)?;
        let from = self.snapshot.group_key().ok_or_else(|| {
            Error::Invalid("this transaction does not know its group's key".into())
        })?;
        let root = self
            .schema
            .table(&to.root)
            .ok_or_else(|| Error::Invalid(format!("table {} is not in the schema", to.root)))?;
        if root.role != crate::schema::GroupRole::Root {
            return Err(Error::Invalid(format!(
                "{} is not an entity group root",
                to.root
            )));
        }
        row_key(&self.schema, &to.root, &to.key)?;
        self.mail.push(Write::Send {
            queue: queue.to_string(),
            from,
            to: to.clone(),
            payload: payload.into(),
        });
        Ok(())
    }

    /// Takes up to `max` messages (oldest arrival first) from this group's inbox of
    /// `queue`: they are consumed if and only if this transaction commits. Taking many
    /// at once is the cheap way to process a queue: one entry consumes them all.
    pub fn receive(&mut self, queue: &str, max: usize) -> Result<Vec<Message>, Error> {
        let taken: BTreeSet<MessageId> = self
            .mail
            .iter()
            .filter_map(|w| match w {
                Write::Receive { queue: q, slots } if q == queue => Some(slots.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        let mut messages = self
            .snapshot
            .inbox(queue, max.saturating_add(taken.len()))?;
        messages.retain(|m| !taken.contains(&m.slot));
        messages.truncate(max);
        if !messages.is_empty() {
            self.mail_written.add_inbox(queue);
            self.mail.push(Write::Receive {
                queue: queue.to_string(),
                slots: messages.iter().map(|m| m.slot).collect(),
            });
        }
        Ok(messages)
    }

    /// Puts the messages `from` sent on `queue` into this group's inbox, skipping
    /// those delivered before (at or below the watermark). How many it put.
    pub(crate) fn deliver(
        &mut self,
        queue: &str,
        from: &GroupKey,
        messages: &[(MessageId, Vec<u8>)],
    ) -> Result<usize, Error> {
        self.snapshot.check_queue(queue)?;
        self.snapshot
            .record(|reads| reads.add_watermark(queue, from));
        let watermark = crate::queue::read_watermark(
            self.core.engine(),
            &self.snapshot.root_data_table(),
            &self.group_row,
            queue,
            from,
            self.as_of()?,
        )?;
        let fresh: Vec<(MessageId, Vec<u8>)> = messages
            .iter()
            .filter(|(id, _)| watermark.is_none_or(|w| *id > w))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return Ok(0);
        }
        self.mail_written.add_inbox(queue);
        self.mail_written.add_watermark(queue, from);
        let count = fresh.len();
        self.mail.push(Write::Deliver {
            queue: queue.to_string(),
            from: from.clone(),
            messages: fresh,
        });
        Ok(count)
    }

    /// Deletes delivered messages from this group's outbox of `queue`.
    pub(crate) fn forget(&mut self, queue: &str, ids: Vec<MessageId>) {
        if !ids.is_empty() {
            self.mail.push(Write::Forget {
                queue: queue.to_string(),
                ids,
            });
        }
    }

    /// Writes `entity` (all of it: properties it lacks become absent).
    pub fn put(&mut self, entity: Entity) -> Result<(), Error> {
        entity.check(&self.schema)?;
        let table = self.snapshot.own_table(&entity.table)?;
        let row = self.snapshot.own_row(&entity.table, &entity.key(table)?)?;
        self.writes
            .insert((entity.table.clone(), row), Write::Put(entity));
        Ok(())
    }

    /// Deletes the entity of `table` with primary key `key` (nothing if there is none).
    pub fn delete(&mut self, table: &str, key: &[Value]) -> Result<(), Error> {
        let row = self.snapshot.own_row(table, key)?;
        self.writes.insert(
            (table.to_string(), row),
            Write::Delete {
                table: table.to_string(),
                key: key.to_vec(),
            },
        );
        Ok(())
    }

    /// Back-fills index `index` in this group when the transaction commits.
    pub(crate) fn reindex(&mut self, index: &str) {
        self.group_writes.push(Write::Reindex {
            index: index.to_string(),
        });
    }

    /// Records `write` (a schema version or a built index) in the catalog group when
    /// the transaction commits. It reads and writes the whole group, so it commits only
    /// on the catalog it read.
    pub(crate) fn record_in_catalog(&mut self, write: Write) {
        self.snapshot.record(Footprint::add_whole_group);
        self.group_writes.push(write);
    }

    /// The log entry's writes, and the entities read and written.
    pub(crate) fn into_parts(self) -> (Vec<Write>, Footprint, Footprint) {
        let reads = self
            .snapshot
            .reads
            .map(RefCell::into_inner)
            .unwrap_or_default();
        let mut written = Footprint::default();
        for (table, row) in self.writes.keys() {
            written.add_row(table, row);
        }
        if !self.group_writes.is_empty() {
            written.add_whole_group();
        }
        written.extend(&self.mail_written);
        let mut writes: Vec<Write> = self.writes.into_values().collect();
        writes.extend(self.group_writes);
        writes.extend(self.mail);
        (writes, reads, written)
    }
}
