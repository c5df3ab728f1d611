//! A table's state at one moment: its memtables and its SSTables by level. Versions are
//! immutable and shared (`Arc`); a flush or compaction installs a new one, and readers
//! holding the old one keep reading it undisturbed.

use std::sync::Arc;

use crate::manifest::{FileMeta, MAX_LEVELS};
use crate::memtable::Memtable;
use crate::merge::EntryCursor;
use crate::sstable::Table;

/// An SSTable in a version: what the manifest records and the open table.
pub struct LevelFile {
    pub meta: FileMeta,
    pub table: Arc<Table>,
}

/// A memtable no longer written, waiting to be flushed.
#[derive(Clone)]
pub struct FrozenMemtable {
    pub mem: Arc<Memtable>,
    /// Every write to it has a sequence number `<= last_seq`.
    pub last_seq: u64,
}

#[derive(Clone)]
pub struct TreeVersion {
    pub mem: Arc<Memtable>,
    /// Oldest first.
    pub frozen: Vec<FrozenMemtable>,
    /// `levels[0]`: newest file last, files may overlap. Deeper: sorted, disjoint rows.
    pub levels: Vec<Vec<Arc<LevelFile>>>,
}

impl Default for TreeVersion {
    fn default() -> Self {
        TreeVersion {
            mem: Arc::new(Memtable::new()),
            frozen: Vec::new(),
            levels: vec![Vec::new(); MAX_LEVELS],
        }
    }
}

/// Which rows a read needs.
#[derive(Clone, Copy)]
pub enum RowScope<'a> {
    /// Exactly one row.
    Row(&'a [u8]),
    /// Rows from `start` (inclusive) to `end` (inclusive; `None`: no end).
    Span(&'a [u8], Option<&'a [u8]>),
}

impl RowScope<'_> {
    fn wants(&self, file: &LevelFile) -> bool {
        match *self {
            RowScope::Row(row) => {
                file.meta.overlaps_rows(row, row) && file.table.may_contain_row(row)
            }
            RowScope::Span(start, end) => {
                file.meta.largest_row() >= start
                    && end.is_none_or(|e| file.meta.smallest_row() <= e)
            }
        }
    }
}

impl TreeVersion {
    /// Cursors over every source that may hold entries in `scope`, newest first.
    pub fn cursors(&self, scope: RowScope<'_>) -> Vec<Box<dyn EntryCursor + '_>> {
        let mut sources: Vec<Box<dyn EntryCursor + '_>> = vec![Box::new(self.mem.iter())];
        for frozen in self.frozen.iter().rev() {
            sources.push(Box::new(frozen.mem.iter()));
        }
        for file in self.levels[0].iter().rev() {
            if scope.wants(file) {
                sources.push(Box::new(file.table.iter()));
            }
        }
        for level in &self.levels[1..] {
            let first = match scope {
                RowScope::Row(start) | RowScope::Span(start, _) => {
                    level.partition_point(|f| f.meta.largest_row() < start)
                }
            };
            for file in &level[first..] {
                if !scope.wants(file) {
                    if matches!(scope, RowScope::Row(_)) {
                        break;
                    }
                    if let RowScope::Span(_, Some(end)) = scope {
                        if file.meta.smallest_row() > end {
                            break;
                        }
                    }
                    continue;
                }
                sources.push(Box::new(file.table.iter()));
            }
        }
        sources
    }

    /// The lowest commit-log LSN this version's memtables still need.
    pub fn min_lsn(&self) -> Option<u64> {
        std::iter::once(&self.mem)
            .chain(self.frozen.iter().map(|f| &f.mem))
            .filter_map(|m| m.min_lsn())
            .min()
    }

    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels[level].iter().map(|f| f.meta.size).sum()
    }

    /// Files of `level` that may hold rows in `[start, end]`.
    pub fn overlapping(&self, level: usize, start: &[u8], end: &[u8]) -> Vec<Arc<LevelFile>> {
        self.levels[level]
            .iter()
            .filter(|f| f.meta.overlaps_rows(start, end))
            .cloned()
            .collect()
    }
}
