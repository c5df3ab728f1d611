//! Index work in the background and on schema changes: the global-index maintainer's
//! loop, finding groups with unindexed entries at start-up, and back-filling a new index.

use bigtable::{ReadRequest, RowFilter, RowSet};

use super::{Core, GroupName};
use crate::apply::apply_global_indexes;
use crate::keys::storage_table;
use crate::layout::{self, column, data_table, GroupMeta};
use crate::log::LogEntry;
use crate::replica::RootRow;
use crate::schema::{GroupRole, IndexScope};
use crate::Error;

impl Core {
    /// Brings the global indexes up to date with the group's applied entries: writes
    /// the index entries of every applied position past the indexed one, then records
    /// how far it indexed. Index writes are idempotent, so a crash or a race between
    /// the two steps only means some are written again. Returns the timestamp of the
    /// last entry indexed.
    pub(super) fn index_group(&self, root: &RootRow) -> Result<i64, Error> {
        let (meta, _) = self.replica.group_meta(root)?;
        let (from, through) = (meta.indexed + 1, meta.applied);
        if from > through {
            return Ok(meta.applied_timestamp);
        }
        let log = self.replica.log_range(root, from, through)?;
        for position in from..=through {
            let bytes = log
                .get(&position)
                .and_then(|s| s.accepted.as_ref())
                .map(|(_, value)| value)
                .ok_or_else(|| Error::Damaged(format!("log position {position} has no value")))?;
            let entry = LogEntry::decode(bytes)?;
            let schema = self.schema_at(entry.schema_version)?;
            apply_global_indexes(self.engine(), &schema, &root.table, &root.row, &entry)?;
        }
        self.record_indexed(root, through)?;
        Ok(meta.applied_timestamp)
    }

    /// Raises the group's indexed position to `through` (unless it is there already),
    /// whatever else changed in its state meanwhile.
    fn record_indexed(&self, root: &RootRow, through: u64) -> Result<(), Error> {
        loop {
            let (meta, meta_cell) = self.replica.group_meta(root)?;
            if meta.indexed >= through {
                return Ok(());
            }
            let next = GroupMeta {
                indexed: through,
                ..meta
            };
            if self.replica.set_meta(root, meta_cell.as_deref(), next)? {
                return Ok(());
            }
        }
    }

    pub(super) fn run_indexer(&self) {
        while let Some(root) = self.queue.next() {
            match self.index_group(&root) {
                Ok(through) => self.queue.done(&root, through),
                Err(e) => {
                    tracing::error!("global index maintenance of a group failed: {e}");
                    self.queue.failed(&root);
                }
            }
        }
    }

    /// Start-up: groups whose log may hold entries the global indexes lack.
    pub(super) fn find_unindexed_groups(&self) -> Result<(), Error> {
        let schema = self.current.read().1.clone();
        if !schema.indexes.iter().any(|i| i.scope == IndexScope::Global) {
            return Ok(());
        }
        for root in schema.tables.iter().filter(|t| t.role == GroupRole::Root) {
            let table = data_table(&schema, storage_table(&schema, &root.name));
            for row in self.group_rows(&table, true)? {
                let mut meta = GroupMeta::default();
                let mut last = 0;
                for cell in &row.cells {
                    if cell.family == layout::META.as_bytes() {
                        meta = GroupMeta::decode(&cell.value)?;
                    } else if let Ok(q) = <[u8; 8]>::try_from(cell.qualifier.as_slice()) {
                        last = last.max(u64::from_be_bytes(q));
                    }
                }
                if meta.indexed < meta.applied.max(last) {
                    self.queue.register_unknown(&RootRow {
                        table: table.clone(),
                        row: row.key,
                    });
                }
            }
        }
        Ok(())
    }

    /// The root rows of every group in `table` that has a log (with its log cells'
    /// qualifiers when `with_log`).
    pub(super) fn group_rows(
        &self,
        table: &str,
        with_log: bool,
    ) -> Result<Vec<bigtable::Row>, Error> {
        let mut parts = vec![RowFilter::Chain(vec![
            column(layout::META, layout::META_STATE),
            RowFilter::CellsPerColumnLimit(1),
        ])];
        if with_log {
            parts.push(RowFilter::Chain(vec![
                layout::family_at(layout::LOG, None),
                RowFilter::StripValue,
            ]));
        }
        let request = ReadRequest {
            rows: RowSet::all(),
            filter: Some(RowFilter::Interleave(parts)),
            ..ReadRequest::default()
        };
        Ok(self.engine().read_rows(table, &request)?)
    }

    /// Writes index `index`'s entries in every group (one `Reindex` entry per group),
    /// then marks it built.
    pub(super) fn backfill(&self, index: &str, version: u64) -> Result<(), Error> {
        let schema = self.current.read().1.clone();
        let def = schema
            .indexes
            .iter()
            .find(|i| i.name == index)
            .ok_or_else(|| Error::Invalid(format!("no index {index}")))?;
        let root_table = schema
            .table(&def.table)
            .map(|t| t.root_name().to_string())
            .ok_or_else(|| Error::Invalid(format!("index {index} names no table")))?;
        let table = data_table(&schema, storage_table(&schema, &root_table));
        let groups = self.group_rows(&table, false)?;
        let total = groups.len();
        for (done, row) in groups.into_iter().enumerate() {
            let root = RootRow {
                table: table.clone(),
                row: row.key,
            };
            self.transact(GroupName::table(&root_table), &root, |tx| {
                tx.reindex(index);
                Ok(())
            })?;
            if def.scope == IndexScope::Global {
                // Indexed here rather than by the background thread, so that the index
                // is complete when it is marked built, and a failure is reported.
                self.index_group(&root)?;
            }
            if (done + 1) % 1000 == 0 || done + 1 == total {
                tracing::info!("back-fill of index {index}: {} of {total} groups", done + 1);
            }
        }
        self.mark_built(index, version)
    }
}
