//! Writing entries to new SSTables: flushes (a memtable to one level-0 table) and
//! compactions (merged tables to tables of the next level, split at row boundaries).
//! A compaction also collects garbage: entries no snapshot can see, cells the family's
//! GC rule collects, and, at the bottom of the tree, the deletion markers themselves.

use std::path::{Path, PathBuf};

use crate::error::{corruption, Result};
use crate::gc_rule::CellVersion;
use crate::key::{InternalKey, SeqNo, Target, Timestamp};
use crate::merge::EntryCursor;
use crate::row_reader::{malformed, RowVisibility, Seen};
use crate::schema::TableSchema;
use crate::sstable::{TableBuilder, TableOptions};
use wal::fs::FileSystem;

/// What a compaction may drop.
pub struct Garbage<'a> {
    /// No reader will ever use a sequence number below this.
    pub oldest_snapshot: SeqNo,
    /// No deeper level holds entries of these rows, so deletion markers can go.
    pub bottommost: bool,
    pub schema: &'a TableSchema,
    pub now: Timestamp,
}

/// A table written by a [`TableSink`].
pub struct WrittenTable {
    pub id: u64,
    pub path: PathBuf,
    pub smallest_row: Vec<u8>,
    pub largest_row: Vec<u8>,
}

pub fn table_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:08}.sst"))
}

/// Receives entries in key order and writes them to tables of about `target_bytes`,
/// starting a new table only at a row boundary.
pub struct TableSink<'a> {
    fs: &'a dyn FileSystem,
    dir: &'a Path,
    options: &'a TableOptions,
    target_bytes: u64,
    new_id: &'a mut dyn FnMut() -> u64,
    open: Option<(TableBuilder, WrittenTable)>,
    written: Vec<WrittenTable>,
}

impl<'a> TableSink<'a> {
    pub fn new(
        fs: &'a dyn FileSystem,
        dir: &'a Path,
        options: &'a TableOptions,
        target_bytes: u64,
        new_id: &'a mut dyn FnMut() -> u64,
    ) -> Self {
        TableSink {
            fs,
            dir,
            options,
            target_bytes,
            new_id,
            open: None,
            written: Vec::new(),
        }
    }

    /// Adds an entry of `row`.
    pub fn add(&mut self, row: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        let full = self.open.as_ref().is_some_and(|(builder, table)| {
            builder.file_size() >= self.target_bytes && table.largest_row != row
        });
        if full {
            self.finish_open()?;
        }
        if self.open.is_none() {
            let id = (self.new_id)();
            let path = table_path(self.dir, id);
            let builder = TableBuilder::create(self.fs, &path, self.options.clone())?;
            let table = WrittenTable {
                id,
                path,
                smallest_row: row.to_vec(),
                largest_row: row.to_vec(),
            };
            self.open = Some((builder, table));
        }
        if let Some((builder, table)) = self.open.as_mut() {
            if table.largest_row != row {
                table.largest_row = row.to_vec();
            }
            builder.add(key, value)?;
        }
        Ok(())
    }

    fn finish_open(&mut self) -> Result<()> {
        if let Some((builder, table)) = self.open.take() {
            builder.finish()?;
            self.written.push(table);
        }
        Ok(())
    }

    /// Finishes the last table (each table is synced); returns all tables written.
    pub fn finish(mut self) -> Result<Vec<WrittenTable>> {
        self.finish_open()?;
        Ok(self.written)
    }
}

/// Copies every entry of `cursor` (positioned at its first entry) to `sink`.
pub fn copy_all(cursor: &mut dyn EntryCursor, sink: &mut TableSink<'_>) -> Result<()> {
    while cursor.valid() {
        let entry = InternalKey::decode(cursor.key()).ok_or_else(malformed)?;
        sink.add(&entry.row, cursor.key(), cursor.value())?;
        cursor.advance()?;
    }
    Ok(())
}

/// Copies the entries of `cursor` (positioned at its first entry) to `sink`, leaving out
/// the garbage. Returns how many entries were dropped.
pub fn compact(
    cursor: &mut dyn EntryCursor,
    garbage: &Garbage<'_>,
    sink: &mut TableSink<'_>,
) -> Result<u64> {
    let mut dropped = 0;
    let mut row: Vec<u8> = Vec::new();
    let mut visibility = RowVisibility::default();
    let mut first = true;
    while cursor.valid() {
        let entry = InternalKey::decode(cursor.key()).ok_or_else(malformed)?;
        if first || entry.row.as_ref() != row.as_slice() {
            row.clear();
            row.extend_from_slice(&entry.row);
            visibility.reset();
            first = false;
        }
        if keeps(&entry, cursor.value(), garbage, &mut visibility)? {
            sink.add(&row, cursor.key(), cursor.value())?;
        } else {
            dropped += 1;
        }
        cursor.advance()?;
    }
    Ok(dropped)
}

fn keeps(
    entry: &InternalKey<'_>,
    value: &[u8],
    garbage: &Garbage<'_>,
    visibility: &mut RowVisibility,
) -> Result<bool> {
    if entry.seq > garbage.oldest_snapshot {
        // Some reader may see the data as it was before this entry: keep it as is.
        return Ok(true);
    }
    Ok(match visibility.observe(&entry.target, entry.seq, value)? {
        Seen::Deletion => !garbage.bottommost,
        Seen::Hidden => false,
        Seen::Visible | Seen::Addend => match &entry.target {
            Target::Column {
                family, timestamp, ..
            } => {
                let cell = CellVersion {
                    version: visibility.versions - 1,
                    timestamp: *timestamp,
                    newer: visibility.newer_at,
                };
                garbage
                    .schema
                    .gc_rule(family)
                    .is_some_and(|rule| rule.keeps(cell, garbage.now))
            }
            _ => return Err(corruption("<compaction>", "a cell without a column")),
        },
    })
}
