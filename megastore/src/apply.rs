//! Redo: turning a committed log entry into cells. Every cell an entry produces is
//! written at the entry's timestamp, and everything it depends on (the entities as they
//! were) is read as of just before that timestamp, so applying an entry twice, or
//! finishing an apply a crash interrupted, writes the same cells.
//!
//! Applying maintains the data and the local indexes, and, when the group's global
//! indexes are caught up, those too ([`Indexes::All`]). Otherwise the background
//! indexer maintains them later from the same entries, in order, through
//! [`apply_global_indexes`].

use std::collections::BTreeMap;

use bigtable::{Durability, Engine, Mutation, RowMutations, RowRange};

use crate::entity::{encode_prop, Entity, Prop};
use crate::index::{diff, encode_hit, entries, IndexHit};
use crate::keys::{group_columns, row_key, storage_table, Value};
use crate::layout::{self, data_table, global_index_table, prefix_end};
use crate::log::{LogEntry, Write};
use crate::read;
use crate::schema::{Index, IndexScope, Schema, Table};
use crate::Error;

/// One entity's change in an entry: from `old` to `new`, in the given indexes.
struct Change<'s> {
    table: &'s Table,
    row: Vec<u8>,
    /// Of the entity replaced, what the index update needs ([`replaced`]).
    old: Option<Entity>,
    new: Option<Entity>,
    /// `Some`: only this index (a back-fill); `None`: the data and every index.
    only_index: Option<&'s str>,
}

/// Mutations grouped by Bigtable table and row.
type Batch = BTreeMap<String, BTreeMap<Vec<u8>, Vec<Mutation>>>;

/// Which index cells [`entry_cells`] holds with the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexes {
    Local,
    /// Local and global: the group's earlier entries are all in the global indexes.
    All,
}

impl Indexes {
    fn scopes(self) -> &'static [IndexScope] {
        match self {
            Indexes::Local => &[IndexScope::Local],
            Indexes::All => &[IndexScope::Local, IndexScope::Global],
        }
    }
}

/// An entry's cells, by Bigtable table and row, to be written.
#[derive(Default)]
pub struct EntryCells(Batch);

impl EntryCells {
    /// Takes out the rows of `table` (to commit them with the group's state cell).
    pub fn take_table(&mut self, table: &str) -> Vec<RowMutations> {
        self.0
            .remove(table)
            .unwrap_or_default()
            .into_iter()
            .map(|(row, mutations)| RowMutations { row, mutations })
            .collect()
    }

    pub fn write(mut self, engine: &Engine) -> Result<(), Error> {
        while let Some(table) = self.0.keys().next().cloned() {
            let rows = self.take_table(&table);
            // Buffered: the entry is durable in the log, so a lost apply is redone.
            for result in engine.mutate_rows_with(&table, &rows, Durability::Buffered)? {
                result?;
            }
        }
        Ok(())
    }
}

/// An entry's data, mailbox and index cells. The group's root row is `group_row` in
/// Bigtable table `root_table`.
pub fn entry_cells(
    engine: &Engine,
    schema: &Schema,
    root_table: &str,
    group_row: &[u8],
    entry: &LogEntry,
    indexes: Indexes,
) -> Result<EntryCells, Error> {
    let resolved = resolutions(engine, (root_table, group_row), entry)?;
    let changes = changes(
        engine,
        schema,
        group_row,
        entry,
        &resolved,
        indexes.scopes(),
    )?;
    let mut batch = Batch::new();
    let rows = batch.entry(root_table.to_string()).or_default();
    mailbox_mutations(engine, root_table, entry, group_row, rows)?;
    two_phase_mutations(engine, root_table, entry, group_row, &resolved, rows)?;
    for change in &changes {
        if change.only_index.is_none() {
            data_mutations(schema, change, entry.timestamp, &mut batch);
        }
        index_mutations(
            schema,
            group_row,
            change,
            indexes.scopes(),
            entry.timestamp,
            &mut batch,
        )?;
    }
    Ok(EntryCells(batch))
}

/// The catalog cells of an entry of a catalog group (of schema `name`): the schema
/// versions and built indexes it records. Every replica keeps them, a witness too.
pub fn catalog_cells(name: &str, entry: &LogEntry, cells: &mut EntryCells) {
    for write in &entry.writes {
        let mutations = match write {
            Write::Schema { version, text } => crate::catalog::version_mutations(*version, text),
            Write::IndexBuilt { index, version } => {
                vec![crate::catalog::built_mutation(index, *version)]
            }
            _ => continue,
        };
        cells
            .0
            .entry(crate::catalog::TABLE.to_string())
            .or_default()
            .entry(name.as_bytes().to_vec())
            .or_default()
            .extend(mutations);
    }
}

/// Writes an (already applied) entry's global-index cells.
pub fn apply_global_indexes(
    engine: &Engine,
    schema: &Schema,
    root_table: &str,
    group_row: &[u8],
    entry: &LogEntry,
) -> Result<(), Error> {
    if !touches_global_index(schema, entry) {
        return Ok(());
    }
    let mut batch = Batch::new();
    let resolved = resolutions(engine, (root_table, group_row), entry)?;
    let scopes = [IndexScope::Global];
    for change in &changes(engine, schema, group_row, entry, &resolved, &scopes)? {
        index_mutations(
            schema,
            group_row,
            change,
            &[IndexScope::Global],
            entry.timestamp,
            &mut batch,
        )?;
    }
    EntryCells(batch).write(engine)
}

/// Whether the entry changes any global index (the indexer has work to do for it).
pub fn touches_global_index(schema: &Schema, entry: &LogEntry) -> bool {
    entry.writes.iter().any(|w| touches_global(schema, w))
}

fn touches_global(schema: &Schema, write: &Write) -> bool {
    let mut global = schema
        .indexes
        .iter()
        .filter(|i| i.scope == IndexScope::Global);
    match write {
        Write::Put(e) => global.any(|i| i.table == e.table),
        Write::Delete { table, .. } => global.any(|i| &i.table == table),
        Write::Reindex { index } => global.any(|i| &i.name == index),
        Write::Resolve { writes, .. } => writes.iter().any(|w| touches_global(schema, w)),
        Write::Send { .. }
        | Write::Deliver { .. }
        | Write::Receive { .. }
        | Write::Forget { .. }
        | Write::Prepare { .. }
        | Write::Schema { .. }
        | Write::IndexBuilt { .. } => false,
    }
}

/// The entry's queue cells: the messages it sends go to the outbox, the ones it
/// delivers to the inbox (with the sender's new watermark); the ones it receives or
/// forgets are emptied, and the mailbox's head moves past them (never back: it is
/// read as of before the entry). Sends and deliveries are numbered in entry order.
fn mailbox_mutations(
    engine: &Engine,
    root_table: &str,
    entry: &LogEntry,
    group_row: &[u8],
    rows: &mut BTreeMap<Vec<u8>, Vec<Mutation>>,
) -> Result<(), Error> {
    use crate::queue::{self, MessageId, INBOX, OUTBOX, WATERMARK};
    let mut cell = |row: Vec<u8>, kind: u8, queue: &str, value: Vec<u8>| {
        rows.entry(row).or_default().push(Mutation::SetCell {
            family: queue::FAMILY.as_bytes().to_vec(),
            qualifier: queue::qualifier(kind, queue),
            timestamp: Some(entry.timestamp),
            value,
        });
    };
    let (mut sent, mut delivered) = (0u32, 0u32);
    // Each mailbox's head as this entry moves it (several writes may move one).
    let mut heads: BTreeMap<(&str, u8), Option<MessageId>> = BTreeMap::new();
    let next = |counter: &mut u32| {
        let id = MessageId {
            timestamp: entry.timestamp,
            seq: *counter,
        };
        *counter += 1;
        id
    };
    for write in &entry.writes {
        match write {
            Write::Send {
                queue,
                from,
                to,
                payload,
            } => {
                let row = queue::mailbox_row(group_row, queue, OUTBOX, next(&mut sent));
                cell(row, OUTBOX, queue, queue::outbox_cell(from, to, payload));
            }
            Write::Deliver {
                queue,
                from,
                messages,
            } => {
                for (id, payload) in messages {
                    let row = queue::mailbox_row(group_row, queue, INBOX, next(&mut delivered));
                    cell(row, INBOX, queue, queue::inbox_cell(from, *id, payload));
                }
                if let Some((last, _)) = messages.last() {
                    let row = queue::watermark_row(group_row, queue, from);
                    cell(row, WATERMARK, queue, queue::id_cell(*last));
                }
            }
            Write::Receive { queue, slots: ids } | Write::Forget { queue, ids } => {
                let kind = if matches!(write, Write::Receive { .. }) {
                    INBOX
                } else {
                    OUTBOX
                };
                for id in ids {
                    cell(
                        queue::mailbox_row(group_row, queue, kind, *id),
                        kind,
                        queue,
                        Vec::new(),
                    );
                }
                let Some(&last) = ids.iter().max() else {
                    continue;
                };
                let head = match heads.get(&(queue.as_str(), kind)) {
                    Some(&h) => h,
                    None => {
                        let before = Some(entry.timestamp - 1);
                        queue::read_head(engine, root_table, group_row, queue, kind, before)?
                    }
                };
                let head = head.map_or(last, |h| h.max(last));
                heads.insert((queue.as_str(), kind), Some(head));
                let row = queue::head_row(group_row, queue, kind);
                cell(row, queue::head_of(kind), queue, queue::id_cell(head));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The entity changes of `entry`, each with what an update of its table's indexes in
/// `scopes` needs of the entity it replaces; `resolved` holds the outcome of each of
/// its resolve writes ([`resolutions`]).
fn changes<'s>(
    engine: &Engine,
    schema: &'s Schema,
    group_row: &[u8],
    entry: &LogEntry,
    resolved: &[Option<Resolution>],
    scopes: &[IndexScope],
) -> Result<Vec<Change<'s>>, Error> {
    let mut out = Vec::new();
    let at = (entry.timestamp, scopes);
    for (write, resolution) in entry.writes.iter().zip(resolved) {
        match (write, resolution) {
            (Write::Resolve { writes, .. }, Some(r)) => {
                if r.prepared && r.commit {
                    for write in writes {
                        data_changes(engine, schema, group_row, at, write, &mut out)?;
                    }
                }
            }
            (write, _) => data_changes(engine, schema, group_row, at, write, &mut out)?,
        }
    }
    Ok(out)
}

/// What an update of `table`'s indexes in `scopes` needs of the entity with primary key
/// `key` (in `row`) that a write replaces (read as of `before`): its key and its indexed
/// properties, since an entry is removed by its values and key (what it stores does
/// not matter). `None` when the table has no index there: nothing can need removing.
/// The key comes from the write, not from the entity's cells: one column read fewer
/// per key property, and each column read costs a seek in every file of the tablet.
fn replaced(
    engine: &Engine,
    schema: &Schema,
    (table, key, row): (&Table, &[Value], &[u8]),
    before: i64,
    scopes: &[IndexScope],
) -> Result<Option<Entity>, Error> {
    let is_key = |name: &str| table.primary_key.iter().any(|c| c.name == name);
    let mut indexed = schema
        .indexes
        .iter()
        .filter(|i| i.table == table.name && scopes.contains(&i.scope))
        .flat_map(|i| i.columns.iter().map(String::as_str))
        .peekable();
    if indexed.peek().is_none() {
        return Ok(None);
    }
    let mut properties: Vec<&str> = indexed.filter(|p| !is_key(p)).collect();
    properties.sort_unstable();
    properties.dedup();
    let old = read::get_properties(engine, schema, &table.name, row, Some(before), &properties)?;
    Ok(old.map(|mut entity| {
        for (column, value) in table.primary_key.iter().zip(key) {
            entity
                .props
                .insert(column.name.clone(), Prop::One(value.clone()));
        }
        entity
    }))
}

/// The entity changes of one write at timestamp `ts` (none for queue and two-phase
/// bookkeeping).
fn data_changes<'s>(
    engine: &Engine,
    schema: &'s Schema,
    group_row: &[u8],
    (ts, scopes): (i64, &[IndexScope]),
    write: &Write,
    out: &mut Vec<Change<'s>>,
) -> Result<(), Error> {
    let before = Some(ts - 1);
    let table_of = |name: &str| {
        schema
            .table(name)
            .ok_or_else(|| Error::Damaged(format!("log entry names unknown table {name}")))
    };
    match write {
        Write::Put(entity) => {
            let table = table_of(&entity.table)?;
            let key = entity.key(table)?;
            let row = row_key(schema, &table.name, &key)?;
            let old = replaced(engine, schema, (table, &key, &row), ts - 1, scopes)?;
            out.push(Change {
                table,
                row,
                old,
                new: Some(entity.clone()),
                only_index: None,
            });
        }
        Write::Delete { table, key } => {
            let table = table_of(table)?;
            let row = row_key(schema, &table.name, key)?;
            let old = replaced(
                engine,
                schema,
                (table, key.as_slice(), &row),
                ts - 1,
                scopes,
            )?;
            out.push(Change {
                table,
                row,
                old,
                new: None,
                only_index: None,
            });
        }
        Write::Reindex { index } => {
            let def = schema
                .indexes
                .iter()
                .find(|i| &i.name == index)
                .ok_or_else(|| Error::Damaged(format!("log entry names unknown index {index}")))?;
            let table = table_of(&def.table)?;
            let rows = RowRange {
                start: std::ops::Bound::Included(group_row.to_vec()),
                end: prefix_end(group_row)
                    .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
            };
            for entity in read::scan(engine, schema, &table.name, rows, before)? {
                let row = row_key(schema, &table.name, &entity.key(table)?)?;
                out.push(Change {
                    table,
                    row,
                    old: None,
                    new: Some(entity),
                    only_index: Some(&def.name),
                });
            }
        }
        Write::Send { .. }
        | Write::Deliver { .. }
        | Write::Receive { .. }
        | Write::Forget { .. }
        | Write::Prepare { .. }
        | Write::Resolve { .. }
        | Write::Schema { .. }
        | Write::IndexBuilt { .. } => {}
    }
    Ok(())
}

/// What a resolve write at timestamp `ts` does in this group, from the state just
/// before it.
struct Resolution {
    /// The part is still prepared here (else the write does nothing: resolved before).
    prepared: bool,
    /// The transaction commits: the decision recorded before, at the coordinator; the
    /// write's own otherwise.
    commit: bool,
    /// This write records the decision (at the coordinator, when none is recorded).
    records_decision: bool,
}

/// Per write of `entry`, what it resolves (`None` for every write but a resolve): read
/// once per entry, since both the data and the two-phase cells depend on it.
fn resolutions(
    engine: &Engine,
    (root_table, group_row): (&str, &[u8]),
    entry: &LogEntry,
) -> Result<Vec<Option<Resolution>>, Error> {
    let before = Some(entry.timestamp - 1);
    let resolve = |txid: u64, commit: bool, decide: bool| -> Result<Resolution, Error> {
        let prepared = crate::prepared::is_prepared(engine, root_table, group_row, txid, before)?;
        let recorded = match decide {
            true => crate::prepared::read_decision(engine, root_table, group_row, txid, before)?,
            false => None,
        };
        Ok(Resolution {
            prepared,
            commit: recorded.unwrap_or(commit),
            records_decision: decide && recorded.is_none(),
        })
    };
    entry
        .writes
        .iter()
        .map(|write| match write {
            Write::Resolve {
                txid,
                commit,
                decide,
                ..
            } => resolve(*txid, *commit, *decide).map(Some),
            _ => Ok(None),
        })
        .collect()
}

/// The entry's two-phase cells: a prepare records its part; a resolve empties the
/// record and, at the coordinator, records the decision if none is.
fn two_phase_mutations(
    engine: &Engine,
    root_table: &str,
    entry: &LogEntry,
    group_row: &[u8],
    resolved: &[Option<Resolution>],
    rows: &mut BTreeMap<Vec<u8>, Vec<Mutation>>,
) -> Result<(), Error> {
    use crate::prepared::{self, FAMILY};
    let mut cell = |row: Vec<u8>, qualifier: Vec<u8>, value: Vec<u8>| {
        rows.entry(row).or_default().push(Mutation::SetCell {
            family: FAMILY.as_bytes().to_vec(),
            qualifier,
            timestamp: Some(entry.timestamp),
            value,
        });
    };
    // The live list as this entry changes it (read once, written once).
    let mut live: Option<Vec<u64>> = None;
    let mut live_now = |f: &mut dyn FnMut(&mut Vec<u64>)| -> Result<(), Error> {
        let list = match live.as_mut() {
            Some(list) => list,
            None => live.insert(prepared::read_live(
                engine,
                root_table,
                group_row,
                Some(entry.timestamp - 1),
            )?),
        };
        f(list);
        Ok(())
    };
    for (write, resolution) in entry.writes.iter().zip(resolved) {
        match (write, resolution) {
            (
                Write::Prepare {
                    txid,
                    coordinator,
                    participant,
                    reads,
                    writes,
                },
                _,
            ) => {
                live_now(&mut |list| {
                    if !list.contains(txid) {
                        list.push(*txid);
                    }
                })?;
                cell(
                    prepared::record_row(group_row, *txid),
                    prepared::record_qualifier(),
                    prepared::record_cell(coordinator, participant, reads, writes),
                );
            }
            (Write::Resolve { txid, .. }, Some(r)) => {
                if r.records_decision {
                    cell(
                        prepared::decision_row(group_row, *txid),
                        prepared::decision_qualifier(),
                        prepared::decision_cell(r.commit),
                    );
                }
                if r.prepared {
                    live_now(&mut |list| list.retain(|t| t != txid))?;
                    cell(
                        prepared::record_row(group_row, *txid),
                        prepared::record_qualifier(),
                        Vec::new(),
                    );
                }
            }
            _ => {}
        }
    }
    if let Some(list) = live {
        cell(
            prepared::live_row(group_row),
            prepared::live_qualifier(),
            prepared::live_cell(&list),
        );
    }
    Ok(())
}

/// The entity's cells: its existence marker, and every declared property (empty when
/// absent, hiding older values).
fn data_mutations(schema: &Schema, change: &Change<'_>, ts: i64, batch: &mut Batch) {
    let table = change.table;
    let bt = data_table(schema, storage_table(schema, &table.name));
    let cells = batch
        .entry(bt)
        .or_default()
        .entry(change.row.clone())
        .or_default();
    let set = |family: &str, qualifier: Vec<u8>, value: Vec<u8>| Mutation::SetCell {
        family: family.as_bytes().to_vec(),
        qualifier,
        timestamp: Some(ts),
        value,
    };
    let present = change.new.is_some();
    cells.push(set(
        layout::EXISTS,
        table.name.as_bytes().to_vec(),
        if present { vec![1] } else { Vec::new() },
    ));
    if let Some(entity) = &change.new {
        for p in &table.properties {
            let mut value = Vec::new();
            if let Some(prop) = entity.props.get(&p.name) {
                encode_prop(&mut value, prop);
            }
            cells.push(set(
                layout::PROPS,
                crate::keys::column_name(&table.name, &p.name),
                value,
            ));
        }
    }
}

fn index_mutations(
    schema: &Schema,
    group_row: &[u8],
    change: &Change<'_>,
    scopes: &[IndexScope],
    ts: i64,
    batch: &mut Batch,
) -> Result<(), Error> {
    let indexes = schema.indexes.iter().filter(|i| {
        scopes.contains(&i.scope)
            && i.table == change.table.name
            && !matches!(change.only_index, Some(only) if only != i.name)
    });
    for index in indexes {
        let of = |e: &Option<Entity>| {
            e.as_ref()
                .map_or(Ok(Vec::new()), |e| entries(index, schema, e))
        };
        let (removed, written) = diff(of(&change.old)?, of(&change.new)?);
        for (hit, value) in
            removed
                .into_iter()
                .map(|h| (h, Vec::new()))
                .chain(written.into_iter().map(|h| {
                    let v = encode_hit(&h);
                    (h, v)
                }))
        {
            let (bt, row, family, qualifier) = index_cell(schema, group_row, change, index, &hit);
            batch
                .entry(bt)
                .or_default()
                .entry(row)
                .or_default()
                .push(Mutation::SetCell {
                    family: family.as_bytes().to_vec(),
                    qualifier,
                    timestamp: Some(ts),
                    value,
                });
        }
    }
    Ok(())
}

/// Where an index entry's cell lives: (Bigtable table, row, family, qualifier).
fn index_cell(
    schema: &Schema,
    group_row: &[u8],
    change: &Change<'_>,
    index: &Index,
    hit: &IndexHit,
) -> (String, Vec<u8>, &'static str, Vec<u8>) {
    match index.scope {
        IndexScope::Local => {
            let rest = &hit.key[group_columns(change.table).min(hit.key.len())..];
            (
                data_table(schema, storage_table(schema, &index.table)),
                layout::local_index_row(group_row, &index.name, &hit.values, rest),
                layout::LOCAL_INDEX,
                index.name.as_bytes().to_vec(),
            )
        }
        IndexScope::Global => (
            global_index_table(schema, &index.name),
            layout::global_index_row(&hit.values, &change.row),
            layout::GLOBAL_INDEX,
            layout::GLOBAL_ENTRY.to_vec(),
        ),
    }
}
