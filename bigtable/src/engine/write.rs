//! The write path: validation, row locks, the commit (sequence numbers, commit-log
//! record, memtable), write throttling, and the read-then-write row operations.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{log_record, Core, Engine, State, MAX_ROW_BYTES};
use crate::commit::CommitTracker;
use crate::error::{corruption, Error, Result};
use crate::filter::RowFilter;
use crate::gc_rule::collect_garbage;
use crate::key::{SeqNo, Timestamp};
use crate::manifest::TreeId;
use crate::memtable::Memtable;
use crate::mutation::{to_entries, Mutation, COLUMN_DELETE_TIMESTAMP};
use crate::row_reader::{Cell, ReadWindow, Row, RowReader};
use crate::schema::TableSchema;

/// The mutations of one row in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowMutations {
    pub row: Vec<u8>,
    pub mutations: Vec<Mutation>,
}

/// One row's check-and-mutate in [`Engine::check_and_mutate_rows`].
#[derive(Debug, Clone)]
pub struct RowCheck {
    pub row: Vec<u8>,
    /// `None`: matches if the row has any cell.
    pub predicate: Option<RowFilter>,
    pub if_true: Vec<Mutation>,
    pub if_false: Vec<Mutation>,
}

/// One row's read in [`Engine::update_rows`].
#[derive(Debug, Clone, Copy)]
pub struct RowRead<'a> {
    pub row: &'a [u8],
    /// `None`: each column's newest cell.
    pub filter: Option<&'a RowFilter>,
}

/// One step of a read-modify-write: applied to the column's newest cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadModifyWrite {
    /// Appends bytes to the value (an absent cell counts as empty).
    Append {
        family: Vec<u8>,
        qualifier: Vec<u8>,
        value: Vec<u8>,
    },
    /// Adds to a 64-bit big-endian signed integer (an absent cell counts as 0).
    Increment {
        family: Vec<u8>,
        qualifier: Vec<u8>,
        delta: i64,
    },
}

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Under the engine's sync policy (after an fsync with `SyncPolicy::EveryCommit`).
    Synced,
    /// Once its commit-log record is written, before any fsync. A crash can lose it,
    /// but only together with every write after it: the log keeps a prefix, and a
    /// flush syncs the log first. For writes that can be redone from elsewhere.
    Buffered,
}

impl Engine {
    /// Applies `mutations` to `row` atomically.
    pub fn mutate_row(&self, table: &str, row: &[u8], mutations: &[Mutation]) -> Result<()> {
        let schema = self.core.table_schema(table)?;
        validate(&schema, row, mutations)?;
        let _locks = self.core.row_locks.lock(table_key(table), &[row]);
        self.core
            .commit(table, &[(row, mutations)], Durability::Synced)
    }

    /// Applies each entry atomically (the batch as a whole is not atomic). The outer
    /// error fails every valid entry; the inner results report invalid entries.
    pub fn mutate_rows(&self, table: &str, batch: &[RowMutations]) -> Result<Vec<Result<()>>> {
        self.mutate_rows_with(table, batch, Durability::Synced)
    }

    /// [`Engine::mutate_rows`], acknowledged as `durability` says.
    pub fn mutate_rows_with(
        &self,
        table: &str,
        batch: &[RowMutations],
        durability: Durability,
    ) -> Result<Vec<Result<()>>> {
        let schema = self.core.table_schema(table)?;
        let results: Vec<Result<()>> = batch
            .iter()
            .map(|e| validate(&schema, &e.row, &e.mutations))
            .collect();
        let valid: Vec<(&[u8], &[Mutation])> = batch
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(e, _)| (e.row.as_slice(), e.mutations.as_slice()))
            .collect();
        if !valid.is_empty() {
            let rows: Vec<&[u8]> = valid.iter().map(|(r, _)| *r).collect();
            let _locks = self.core.row_locks.lock(table_key(table), &rows);
            self.core.commit(table, &valid, durability)?;
        }
        Ok(results)
    }

    /// Atomically: reads `row`; if `predicate` outputs any cell of it (or, with no
    /// predicate, if the row has any cell), applies `if_true`, else `if_false`. Returns
    /// whether the predicate matched.
    pub fn check_and_mutate_row(
        &self,
        table: &str,
        row: &[u8],
        predicate: Option<&RowFilter>,
        if_true: &[Mutation],
        if_false: &[Mutation],
    ) -> Result<bool> {
        self.check_and_mutate_row_with(table, row, predicate, if_true, if_false, Durability::Synced)
    }

    /// [`Engine::check_and_mutate_row`], acknowledged as `durability` says.
    pub fn check_and_mutate_row_with(
        &self,
        table: &str,
        row: &[u8],
        predicate: Option<&RowFilter>,
        if_true: &[Mutation],
        if_false: &[Mutation],
        durability: Durability,
    ) -> Result<bool> {
        self.check_and_mutate_row_along(table, row, predicate, if_true, if_false, &[], durability)
    }

    /// [`Engine::check_and_mutate_row_with`], writing `also` (other rows of the table,
    /// whatever the predicate says) in the same commit as the chosen mutations: one
    /// log record instead of two, atomic with them while every row is in one tablet.
    /// Across tablets, `row` becomes visible only after the rows of `also`, so a reader
    /// that sees the conditional write sees them too. If any entry of `also` is
    /// invalid, nothing is written.
    #[allow(clippy::too_many_arguments)]
    pub fn check_and_mutate_row_along(
        &self,
        table: &str,
        row: &[u8],
        predicate: Option<&RowFilter>,
        if_true: &[Mutation],
        if_false: &[Mutation],
        also: &[RowMutations],
        durability: Durability,
    ) -> Result<bool> {
        let schema = self.core.table_schema(table)?;
        let predicate = predicate.map(RowFilter::compile).transpose()?;
        validate_branches(&schema, row, if_true, if_false)?;
        for other in also {
            validate(&schema, &other.row, &other.mutations)?;
        }
        let mut rows: Vec<(&[u8], &[Mutation])> = also
            .iter()
            .map(|r| (r.row.as_slice(), r.mutations.as_slice()))
            .collect();
        let locked: Vec<&[u8]> = rows.iter().map(|(r, _)| *r).chain([row]).collect();
        let _locks = self.core.row_locks.lock(table_key(table), &locked);
        let (matched, chosen) =
            self.core
                .judge(table, row, predicate.as_ref(), (if_true, if_false))?;
        if !chosen.is_empty() {
            rows.push((row, chosen));
        }
        if !rows.is_empty() {
            self.core.commit(table, &rows, durability)?;
        }
        Ok(matched)
    }

    /// Check-and-mutates of distinct rows of `table`, in one commit: every predicate is
    /// judged (under all the rows' locks) before any row is written, and the chosen
    /// mutations go in one commit-log record, so under `Synced` one fsync covers them
    /// all. Whether each predicate matched. Nothing is written if any check is invalid
    /// or two name the same row.
    pub fn check_and_mutate_rows(
        &self,
        table: &str,
        checks: &[RowCheck],
        durability: Durability,
    ) -> Result<Vec<bool>> {
        let schema = self.core.table_schema(table)?;
        for check in checks {
            validate_branches(&schema, &check.row, &check.if_true, &check.if_false)?;
        }
        let reads: Vec<RowRead<'_>> = checks
            .iter()
            .map(|c| RowRead {
                row: &c.row,
                filter: c.predicate.as_ref(),
            })
            .collect();
        self.update_rows(table, &reads, durability, |i, cells| {
            let check = &checks[i];
            let matched = !cells.is_empty();
            let chosen = if matched {
                check.if_true.as_slice()
            } else {
                check.if_false.as_slice()
            };
            (matched, chosen)
        })
    }

    /// Read-then-write of distinct rows of `table`, atomic per row and in one commit:
    /// under all the rows' locks, each row's cells that its filter outputs (as a read
    /// now would return them; without a filter, each column's newest cell) go to
    /// `decide`, which returns an answer and the mutations to write to that row. Every
    /// row's mutations then go in one commit-log record (one fsync under `Synced`). The
    /// answers, in the order of `reads`. Nothing is written if any filter or chosen
    /// mutation is invalid, or two reads name the same row.
    pub fn update_rows<T, M: AsRef<[Mutation]>>(
        &self,
        table: &str,
        reads: &[RowRead<'_>],
        durability: Durability,
        mut decide: impl FnMut(usize, Vec<Cell>) -> (T, M),
    ) -> Result<Vec<T>> {
        let schema = self.core.table_schema(table)?;
        let mut filters = Vec::with_capacity(reads.len());
        for read in reads {
            check_row_key(read.row)?;
            filters.push(read.filter.map(RowFilter::compile).transpose()?);
        }
        let mut rows: Vec<&[u8]> = reads.iter().map(|r| r.row).collect();
        rows.sort_unstable();
        if rows.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::InvalidArgument(
                "two updates of one batch name the same row".into(),
            ));
        }
        let _locks = self.core.row_locks.lock(table_key(table), &rows);
        let mut answers = Vec::with_capacity(reads.len());
        let mut chosen: Vec<(usize, M)> = Vec::new();
        for (i, (read, filter)) in reads.iter().zip(&filters).enumerate() {
            let cells = self.core.selected_cells(table, read.row, filter.as_ref())?;
            let (answer, mutations) = decide(i, cells);
            if !mutations.as_ref().is_empty() {
                validate(&schema, read.row, mutations.as_ref())?;
                chosen.push((i, mutations));
            }
            answers.push(answer);
        }
        let writes: Vec<(&[u8], &[Mutation])> = chosen
            .iter()
            .map(|(i, mutations)| (reads[*i].row, mutations.as_ref()))
            .collect();
        if !writes.is_empty() {
            self.core.commit(table, &writes, durability)?;
        }
        Ok(answers)
    }

    /// Atomically applies `rules` in order to the newest cells of their columns and
    /// writes the results; returns the new cells.
    pub fn read_modify_write_row(
        &self,
        table: &str,
        row: &[u8],
        rules: &[ReadModifyWrite],
    ) -> Result<Row> {
        let schema = self.core.table_schema(table)?;
        if rules.is_empty() {
            return Err(Error::InvalidArgument("no read-modify-write rules".into()));
        }
        check_row_key(row)?;
        let _locks = self.core.row_locks.lock(table_key(table), &[row]);
        let mut newest: Columns = BTreeMap::new();
        for cell in self.core.latest_cells(table, row, Some(NEWEST_ONLY))? {
            newest
                .entry((cell.family, cell.qualifier))
                .or_insert((cell.timestamp, cell.value));
        }
        let now = self.core.options.clock.now_micros();
        let mut written: Columns = BTreeMap::new();
        for rule in rules {
            let (family, qualifier) = match rule {
                ReadModifyWrite::Append {
                    family, qualifier, ..
                }
                | ReadModifyWrite::Increment {
                    family, qualifier, ..
                } => (family, qualifier),
            };
            check_family(&schema, family)?;
            if schema.is_sum_family(family) {
                return Err(Error::InvalidArgument(format!(
                    "{:?} is a sum family: write it with AddToCell",
                    String::from_utf8_lossy(family)
                )));
            }
            let column = (family.clone(), qualifier.clone());
            let (old_ts, old) = written
                .get(&column)
                .or_else(|| newest.get(&column))
                .cloned()
                .unwrap_or((now, Vec::new()));
            let value = apply_rule(rule, old)?;
            written.insert(column, (now.max(old_ts), value));
        }
        let mutations: Vec<Mutation> = written
            .iter()
            .map(|((family, qualifier), (ts, value))| Mutation::SetCell {
                family: family.clone(),
                qualifier: qualifier.clone(),
                timestamp: Some(*ts),
                value: value.clone(),
            })
            .collect();
        self.core
            .commit(table, &[(row, &mutations)], Durability::Synced)?;
        let cells = written
            .into_iter()
            .map(|((family, qualifier), (timestamp, value))| Cell {
                family,
                qualifier,
                timestamp,
                value,
                labels: Vec::new(),
            })
            .collect();
        Ok(Row {
            key: row.to_vec(),
            cells,
        })
    }
}

/// The row-lock namespace of a table: stable across its tablets' splits.
fn table_key(table: &str) -> u64 {
    crate::bloom::hash64(table.as_bytes())
}

/// One row's mutations, as a commit takes them.
type RowChange<'a> = (&'a [u8], &'a [Mutation]);

/// How a commit to one tablet ended.
enum Committed {
    Done,
    /// The tablet was split (or dropped) first: route the rows again.
    Moved,
}

/// `(family, qualifier) -> (timestamp, value)` of one cell per column.
type Columns = BTreeMap<(Vec<u8>, Vec<u8>), (Timestamp, Vec<u8>)>;

fn apply_rule(rule: &ReadModifyWrite, mut old: Vec<u8>) -> Result<Vec<u8>> {
    match rule {
        ReadModifyWrite::Append { value, .. } => {
            old.extend_from_slice(value);
            Ok(old)
        }
        ReadModifyWrite::Increment { delta, .. } => {
            let current = match old.len() {
                0 => 0,
                8 => i64::from_be_bytes(old.as_slice().try_into().unwrap_or_default()),
                n => {
                    return Err(Error::InvalidArgument(format!(
                        "cannot increment a {n}-byte value (expected 8 bytes, big-endian)"
                    )))
                }
            };
            Ok(current.wrapping_add(*delta).to_be_bytes().to_vec())
        }
    }
}

fn check_row_key(row: &[u8]) -> Result<()> {
    if row.is_empty() {
        return Err(Error::InvalidArgument("row key is empty".into()));
    }
    if row.len() > MAX_ROW_BYTES {
        return Err(Error::InvalidArgument(format!(
            "row key of {} bytes is longer than {MAX_ROW_BYTES}",
            row.len()
        )));
    }
    Ok(())
}

fn check_family(schema: &TableSchema, family: &[u8]) -> Result<()> {
    if schema.gc_rule(family).is_none() {
        return Err(Error::NotFound(format!(
            "column family {:?}",
            String::from_utf8_lossy(family)
        )));
    }
    Ok(())
}

/// Checks a cell write (`adding`: an AddToCell) against its family's kind.
fn check_cell_write(
    schema: &TableSchema,
    family: &[u8],
    timestamp: Option<Timestamp>,
    adding: bool,
) -> Result<()> {
    check_family(schema, family)?;
    let name = String::from_utf8_lossy(family);
    match (schema.is_sum_family(family), adding) {
        (true, false) => Err(Error::InvalidArgument(format!(
            "{name:?} is a sum family: write it with AddToCell"
        ))),
        (false, true) => Err(Error::InvalidArgument(format!(
            "AddToCell needs a sum family; {name:?} holds plain cells"
        ))),
        _ if timestamp == Some(COLUMN_DELETE_TIMESTAMP) => Err(Error::InvalidArgument(format!(
            "timestamp {COLUMN_DELETE_TIMESTAMP} is reserved"
        ))),
        _ => Ok(()),
    }
}

/// Checks a row's mutations against the table's schema and limits.
/// A check-and-mutate's row key and its two branches (either may be empty).
fn validate_branches(
    schema: &TableSchema,
    row: &[u8],
    if_true: &[Mutation],
    if_false: &[Mutation],
) -> Result<()> {
    check_row_key(row)?;
    for mutations in [if_true, if_false] {
        if !mutations.is_empty() {
            validate(schema, row, mutations)?;
        }
    }
    Ok(())
}

fn validate(schema: &TableSchema, row: &[u8], mutations: &[Mutation]) -> Result<()> {
    check_row_key(row)?;
    if mutations.is_empty() {
        return Err(Error::InvalidArgument("no mutations".into()));
    }
    for m in mutations {
        match m {
            Mutation::SetCell {
                family, timestamp, ..
            } => check_cell_write(schema, family, *timestamp, false)?,
            Mutation::AddToCell {
                family, timestamp, ..
            } => check_cell_write(schema, family, *timestamp, true)?,
            Mutation::DeleteFromColumn { family, range, .. } => {
                check_family(schema, family)?;
                if range.end.is_some_and(|end| end < range.start) {
                    return Err(Error::InvalidArgument(format!(
                        "timestamp range {range:?} ends before it starts"
                    )));
                }
            }
            Mutation::DeleteFromFamily { family } => check_family(schema, family)?,
            Mutation::DeleteFromRow => {}
        }
    }
    Ok(())
}

/// Bytes of names and values a client sent in `mutations` (for write amplification).
fn payload_bytes(mutations: &[Mutation]) -> usize {
    mutations
        .iter()
        .map(|m| match m {
            Mutation::SetCell {
                family,
                qualifier,
                value,
                ..
            } => family.len() + qualifier.len() + value.len(),
            Mutation::DeleteFromColumn {
                family, qualifier, ..
            } => family.len() + qualifier.len(),
            Mutation::AddToCell {
                family, qualifier, ..
            } => family.len() + qualifier.len() + 8,
            Mutation::DeleteFromFamily { family } => family.len(),
            Mutation::DeleteFromRow => 0,
        })
        .sum()
}

/// Each column's newest cell only (what a read-modify-write or a predicate-less check
/// looks at).
const NEWEST_ONLY: ReadWindow = ReadWindow {
    versions: Some(1),
    ..ReadWindow::ALL
};

/// Marks a commit's sequence numbers finished however the commit ends.
struct Finish<'a>(&'a CommitTracker, SeqNo);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.0.finish(self.1);
    }
}

impl Core {
    /// A table's schema.
    pub(super) fn table_schema(&self, table: &str) -> Result<Arc<TableSchema>> {
        let state = self.state.lock();
        Ok(state.route(table, &[])?.1.schema.clone())
    }

    /// Commits validated mutations of rows whose locks the caller holds: one log record
    /// per tablet the rows fall in, then the memtables; across tablets, the last row
    /// after the others are visible. Returns once the records are durable under the
    /// sync policy.
    pub(super) fn commit<'r>(
        &self,
        table: &str,
        rows: &[(&'r [u8], &'r [Mutation])],
        durability: Durability,
    ) -> Result<()> {
        // Usually every row is in one tablet: commit them as one record, no grouping.
        let single = {
            let state = self.state.lock();
            let mut tablets = rows
                .iter()
                .map(|(row, _)| state.route(table, row).map(|r| r.0));
            match tablets.next().transpose()? {
                Some(first) if tablets.all(|t| t.ok() == Some(first)) => Some(first),
                _ => None,
            }
        };
        if let Some(tree) = single {
            if let Committed::Done = self.commit_tablet(tree, rows, durability)? {
                return Ok(());
            }
        }
        // Across tablets there is no single commit. The last row goes in once every
        // other row is visible, so a caller that writes last the row publishing the
        // others (a group's state cell after the entry's cells) never shows it first.
        let Some((last, others)) = rows.split_last() else {
            return Ok(());
        };
        self.commit_spread(table, others, durability)?;
        self.commit_spread(table, std::slice::from_ref(last), durability)
    }

    /// Commits rows tablet by tablet (each tablet's part at once, in no given order).
    fn commit_spread<'r>(
        &self,
        table: &str,
        rows: &[(&'r [u8], &'r [Mutation])],
        durability: Durability,
    ) -> Result<()> {
        let mut pending = rows.to_vec();
        while !pending.is_empty() {
            let mut groups: BTreeMap<TreeId, Vec<RowChange<'_>>> = BTreeMap::new();
            {
                let state = self.state.lock();
                for &(row, mutations) in &pending {
                    groups
                        .entry(state.route(table, row)?.0)
                        .or_default()
                        .push((row, mutations));
                }
            }
            pending.clear();
            for (tree, group) in groups {
                if let Committed::Moved = self.commit_tablet(tree, &group, durability)? {
                    pending.extend(group);
                }
            }
        }
        Ok(())
    }

    /// Commits rows that all fall in tablet `tree`, unless it was split meanwhile.
    fn commit_tablet(
        &self,
        tree: TreeId,
        rows: &[(&[u8], &[Mutation])],
        durability: Durability,
    ) -> Result<Committed> {
        self.throttle(tree)?;
        let count: u64 = rows.iter().map(|(_, m)| m.len() as u64).sum();
        let (mem, first) = {
            let mut state = self.state.lock();
            loop {
                match state.trees.get(&tree) {
                    Some(t) if t.splitting => {
                        // Its halves take over shortly; then route again.
                        self.progress.wait(&mut state);
                    }
                    Some(t) if rows.iter().all(|(row, _)| t.range.contains(row)) => break,
                    _ => return Ok(Committed::Moved),
                }
            }
            let t = state
                .trees
                .get(&tree)
                .ok_or_else(|| Error::NotFound("table was dropped".into()))?;
            let mem = t.version.mem.clone();
            let first = self.commits.begin(count);
            if mem.min_lsn().is_none() {
                mem.note_lsn(self.log.next_lsn());
            }
            (mem, first)
        };
        let finish = Finish(&self.commits, first);
        let now = self.options.clock.now_micros();
        let mut entries = Vec::with_capacity(count as usize);
        let mut seq = first;
        for (row, mutations) in rows {
            entries.extend(to_entries(row, mutations, seq, now));
            seq += mutations.len() as SeqNo;
        }
        let record = log_record::encode(tree, first, &entries);
        match durability {
            Durability::Synced => self.log.append(&record)?,
            Durability::Buffered => self.log.append_unsynced(&record)?,
        };
        let user_bytes: usize = rows
            .iter()
            .map(|(row, mutations)| row.len() * mutations.len() + payload_bytes(mutations))
            .sum();
        for (i, (key, value)) in entries.into_iter().enumerate() {
            mem.insert(key, value, first + i as SeqNo);
        }
        drop(finish);
        // Read-your-writes: a write is acknowledged only once reads can see it, that is
        // once every commit with a smaller sequence number has finished too.
        self.commits.wait_visible(first + count.max(1) - 1);
        self.stats.lock().user_bytes += user_bytes as u64;
        self.after_write(tree, &mem)?;
        Ok(Committed::Done)
    }

    fn after_write(&self, tree: TreeId, mem: &Arc<Memtable>) -> Result<()> {
        if mem.approximate_bytes() >= self.options.memtable_bytes {
            self.freeze(tree, mem);
            self.request_maintenance()?;
        }
        Ok(())
    }

    /// Delays or stalls a writer while the table's flushes or compactions are behind.
    fn throttle(&self, tree: TreeId) -> Result<()> {
        let deadline = Instant::now() + self.options.max_write_stall;
        let mut delayed = false;
        loop {
            if let Some(failure) = self.failure() {
                return Err(Error::Stalled(format!("maintenance failed: {failure}")));
            }
            let mut state = self.state.lock();
            let Some(t) = state.trees.get(&tree) else {
                return Ok(());
            };
            let frozen = t.version.frozen.len();
            let l0 = t.version.levels[0].len();
            if frozen >= self.options.max_frozen_memtables || l0 >= self.options.l0_stop_trigger {
                self.stats.lock().throttled_writes += 1;
                if !self.options.background_maintenance {
                    drop(state);
                    self.run_maintenance_until_idle()?;
                    continue;
                }
                if self.progress.wait_until(&mut state, deadline).timed_out() {
                    return Err(Error::Stalled(format!(
                        "compaction has been behind for {:?} ({frozen} memtables and {l0} level-0 tables waiting)",
                        self.options.max_write_stall
                    )));
                }
                continue;
            }
            if l0 >= self.options.l0_slowdown_trigger && !delayed {
                drop(state);
                self.stats.lock().throttled_writes += 1;
                delayed = true;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            return Ok(());
        }
    }

    /// Judges a check-and-mutate of `row` (the caller holds its lock): whether
    /// `predicate` matched, and the branch to write.
    fn judge<'m>(
        &self,
        table: &str,
        row: &[u8],
        predicate: Option<&crate::filter::CompiledFilter>,
        (if_true, if_false): (&'m [Mutation], &'m [Mutation]),
    ) -> Result<(bool, &'m [Mutation])> {
        let matched = !self.selected_cells(table, row, predicate)?.is_empty();
        Ok((matched, if matched { if_true } else { if_false }))
    }

    /// The cells of `row` that `filter` outputs (without one: each column's newest
    /// cell), as a read now would return them. The caller holds the row's lock.
    fn selected_cells(
        &self,
        table: &str,
        row: &[u8],
        filter: Option<&crate::filter::CompiledFilter>,
    ) -> Result<Vec<Cell>> {
        // Only the cells the filter may look at.
        let window = match filter {
            Some(filter) => filter.read_window(),
            None => Some(NEWEST_ONLY),
        };
        let cells = self.latest_cells(table, row, window)?;
        Ok(match filter {
            Some(filter) => filter.apply(row, cells),
            None => cells,
        })
    }

    /// The row's cells as a read now would return them, GC applied. The caller holds
    /// the row's lock, so every write to the row has finished and the newest entries
    /// can be read without waiting for the visible sequence number.
    pub(super) fn latest_cells(
        &self,
        table: &str,
        row: &[u8],
        window: Option<ReadWindow>,
    ) -> Result<Vec<Cell>> {
        let (schema, version) = {
            let state = self.state.lock();
            let (_, t) = state.route(table, row)?;
            (t.schema.clone(), t.version.clone())
        };
        let now = self.options.clock.now_micros();
        let mut reader = RowReader::windowed(window, &schema, now);
        let mut cells = version
            .read_row_with(row, SeqNo::MAX, &mut reader)?
            .map_or_else(Vec::new, |r| r.cells);
        collect_garbage(&mut cells, &schema, now);
        Ok(cells)
    }
}

/// Applies one commit-log record during recovery; returns its last sequence number.
pub(super) fn replay(state: &mut State, lsn: u64, payload: &[u8], dir: &Path) -> Result<SeqNo> {
    let record = log_record::decode(payload).ok_or_else(|| {
        corruption(
            dir.join("log"),
            format!("commit-log record {lsn} is malformed"),
        )
    })?;
    let last = record.last_seq();
    if let Some(tree) = state.trees.get(&record.tree) {
        if last > tree.flushed_seq {
            let mem = &tree.version.mem;
            mem.note_lsn(lsn);
            for (i, (key, value)) in record.entries.iter().enumerate() {
                mem.insert(key.to_vec(), value.to_vec(), record.first_seq + i as SeqNo);
            }
        }
    }
    Ok(last)
}
