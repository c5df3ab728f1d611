//! A table's state at one moment: its memtables and its SSTables by level. Versions are
//! immutable and shared (`Arc`); a flush or compaction installs a new one, and readers
//! holding the old one keep reading it undisturbed.

use std::sync::Arc;

use crate::bloom;
use crate::key::{row_prefix, SeqNo};
use crate::manifest::{FileMeta, MAX_LEVELS};
use crate::memtable::Memtable;
use crate::merge::{EntryCursor, MergingCursor};
use crate::row_reader::Row;
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

impl TreeVersion {
    /// A version with only an (empty) memtable.
    pub fn new(mem: Arc<Memtable>) -> Self {
        TreeVersion {
            mem,
            frozen: Vec::new(),
            levels: vec![Vec::new(); MAX_LEVELS],
        }
    }
}

/// Which rows a read needs.
#[derive(Clone, Copy)]
pub enum RowScope<'a> {
    /// Exactly one row; `hash` is the [`crate::bloom::hash64`] of its prefix.
    Row { row: &'a [u8], hash: u64 },
    /// Rows from `start` (inclusive) to `end` (inclusive; `None`: no end).
    Span(&'a [u8], Option<&'a [u8]>),
}

impl RowScope<'_> {
    fn wants_memtable(&self, mem: &Memtable) -> bool {
        match *self {
            RowScope::Row { hash, .. } => mem.may_contain_row(hash),
            RowScope::Span(..) => true,
        }
    }

    fn wants(&self, file: &LevelFile) -> bool {
        match *self {
            RowScope::Row { row, hash } => {
                file.meta.overlaps_rows(row, row) && file.table.may_contain_row(hash)
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
        let mut sources: Vec<Box<dyn EntryCursor + '_>> = Vec::new();
        let memtables = std::iter::once(&self.mem).chain(self.frozen.iter().rev().map(|f| &f.mem));
        for mem in memtables {
            if scope.wants_memtable(mem) {
                sources.push(Box::new(mem.iter()));
            }
        }
        for file in self.levels[0].iter().rev() {
            if scope.wants(file) {
                sources.push(Box::new(file.table.iter()));
            }
        }
        for level in &self.levels[1..] {
            match scope {
                RowScope::Row { row, .. } => {
                    let at = level.partition_point(|f| f.meta.largest_row() < row);
                    if let Some(file) = level.get(at).filter(|f| scope.wants(f)) {
                        sources.push(Box::new(file.table.iter()));
                    }
                }
                RowScope::Span(start, end) => {
                    let first = level.partition_point(|f| f.meta.largest_row() < start);
                    let files: Vec<Arc<LevelFile>> = level[first..]
                        .iter()
                        .take_while(|f| end.is_none_or(|e| f.meta.smallest_row() <= e))
                        .cloned()
                        .collect();
                    if !files.is_empty() {
                        sources.push(Box::new(LevelCursor::new(files)));
                    }
                }
            }
        }
        sources
    }

    /// One row's visible cells at `seq`, before GC rules and filters.
    pub fn read_row(&self, row: &[u8], seq: SeqNo) -> crate::Result<Option<Row>> {
        self.read_row_with(row, seq, &mut crate::row_reader::RowReader::default())
    }

    /// [`Version::read_row`] through `reader` (which may leave cells out).
    pub fn read_row_with(
        &self,
        row: &[u8],
        seq: SeqNo,
        reader: &mut crate::row_reader::RowReader,
    ) -> crate::Result<Option<Row>> {
        let prefix = row_prefix(row);
        let scope = RowScope::Row {
            row,
            hash: bloom::hash64(&prefix),
        };
        let mut cursor = MergingCursor::new(self.cursors(scope));
        cursor.seek(&prefix)?;
        if !cursor.valid() || !cursor.key().starts_with(&prefix) {
            return Ok(None);
        }
        reader.read_one(&mut cursor, seq)
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

/// One cursor over a level's disjoint, sorted tables, opening each table only when the
/// scan reaches it (so a scan of a deep level merges one source, not hundreds).
pub struct LevelCursor {
    files: Vec<Arc<LevelFile>>,
    at: usize,
    iter: Option<crate::sstable::TableIter>,
}

impl LevelCursor {
    pub fn new(files: Vec<Arc<LevelFile>>) -> Self {
        LevelCursor {
            files,
            at: 0,
            iter: None,
        }
    }

    /// Opens file `at` positioned at its first entry, moving on past empty files.
    fn start_file(&mut self, mut at: usize) -> crate::Result<()> {
        self.iter = None;
        while at < self.files.len() {
            let mut it = self.files[at].table.iter();
            it.seek_to_first()?;
            if it.valid() {
                self.at = at;
                self.iter = Some(it);
                return Ok(());
            }
            at += 1;
        }
        Ok(())
    }
}

impl EntryCursor for LevelCursor {
    fn valid(&self) -> bool {
        self.iter.as_ref().is_some_and(|i| i.valid())
    }

    fn key(&self) -> &[u8] {
        self.iter.as_ref().map_or(&[], |i| i.key())
    }

    fn value(&self) -> &[u8] {
        self.iter.as_ref().map_or(&[], |i| i.value())
    }

    fn seek_to_first(&mut self) -> crate::Result<()> {
        self.start_file(0)
    }

    fn seek(&mut self, target: &[u8]) -> crate::Result<()> {
        let at = self
            .files
            .partition_point(|f| f.table.properties().largest_key.as_slice() < target);
        if at >= self.files.len() {
            self.iter = None;
            return Ok(());
        }
        let mut it = self.files[at].table.iter();
        it.seek(target)?;
        if it.valid() {
            self.at = at;
            self.iter = Some(it);
            Ok(())
        } else {
            self.start_file(at + 1)
        }
    }

    fn advance(&mut self) -> crate::Result<()> {
        if let Some(it) = self.iter.as_mut() {
            it.advance()?;
            if !it.valid() {
                self.start_file(self.at + 1)?;
            }
        }
        Ok(())
    }

    fn last_key_before(&mut self, target: &[u8]) -> crate::Result<Option<Vec<u8>>> {
        let after = self
            .files
            .partition_point(|f| f.table.properties().smallest_key.as_slice() < target);
        self.iter = None;
        for file in self.files[..after].iter().rev() {
            if let Some(key) = file.table.iter().last_key_before(target)? {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }
}
