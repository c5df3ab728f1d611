//! Turning a merged entry stream into rows of visible cells at a snapshot.
//!
//! Visibility, for entries written at or before the snapshot's sequence number:
//! - a row tombstone hides the row's entries written before it (lower sequence number);
//! - a family tombstone hides the family's entries written before it;
//! - a column deletion hides the column's cells written before it whose timestamp is in
//!   its range;
//! - of several versions with the same timestamp, only the last written is visible.

use std::borrow::Cow;

use crate::error::{corruption, Result};
use std::ops::Bound;

use crate::key::{
    column_prefix, family_prefix, get_escaped, row_end, CellKind, InternalKey, SeqNo, Target,
    Timestamp,
};
use crate::merge::EntryCursor;
use crate::mutation::{read_sum, TimestampRange};

/// A visible cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub family: Vec<u8>,
    pub qualifier: Vec<u8>,
    pub timestamp: Timestamp,
    pub value: Vec<u8>,
    /// Labels added by an `ApplyLabel` filter.
    pub labels: Vec<String>,
}

/// A row's visible cells, by family, qualifier, then timestamp newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: Vec<u8>,
    pub cells: Vec<Cell>,
}

/// What is known while walking one row's entries in key order: the deletions seen so
/// far and the column being read. Both reads and compactions decide visibility here.
/// [`RowVisibility::reset`] readies it for the next row, keeping its buffers.
#[derive(Default)]
pub(crate) struct RowVisibility {
    row_tombstone: SeqNo,
    /// The family being read, if any (`family` holds its name).
    in_family: bool,
    family: Vec<u8>,
    family_tombstone: SeqNo,
    /// Whether a column of `family` is being read (`qualifier` holds its qualifier).
    in_column: bool,
    qualifier: Vec<u8>,
    column_deletes: Vec<(TimestampRange, SeqNo)>,
    last_timestamp: Option<Timestamp>,
    /// Timestamp of the current column's last visible cell (sum cells gather addends).
    visible_at: Option<Timestamp>,
    /// Timestamp of the visible cell before that one (the next newer version).
    pub newer_at: Option<Timestamp>,
    /// Visible versions of the current column so far.
    pub versions: usize,
}

/// What one entry turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A deletion marker (row, family or column).
    Deletion,
    /// A cell hidden by a deletion or by a newer write of the same timestamp.
    Hidden,
    /// A visible cell.
    Visible,
    /// A visible addend of the sum cell seen just before (same column and timestamp).
    Addend,
}

impl RowVisibility {
    /// Forgets the row, ready for the next one.
    pub fn reset(&mut self) {
        self.row_tombstone = 0;
        self.in_family = false;
        self.in_column = false;
    }

    fn enter_family(&mut self, family: &[u8]) {
        if !self.in_family || self.family != family {
            self.in_family = true;
            self.family.clear();
            self.family.extend_from_slice(family);
            self.family_tombstone = 0;
            self.in_column = false;
        }
    }

    /// Forgets the current column (the reader skipped the rest of it).
    fn leave_column(&mut self) {
        self.in_column = false;
    }

    fn enter_column(&mut self, family: &[u8], qualifier: &[u8]) {
        self.enter_family(family);
        if !self.in_column || self.qualifier != qualifier {
            self.in_column = true;
            self.qualifier.clear();
            self.qualifier.extend_from_slice(qualifier);
            self.column_deletes.clear();
            self.last_timestamp = None;
            self.visible_at = None;
            self.newer_at = None;
            self.versions = 0;
        }
    }

    /// Whether a cell written at `seq` with timestamp `ts` is visible.
    fn admits(&mut self, ts: Timestamp, seq: SeqNo) -> bool {
        if self.last_timestamp == Some(ts) {
            return false;
        }
        self.last_timestamp = Some(ts);
        !self.deleted(ts, seq)
    }

    /// Whether a deletion seen so far covers an entry written at `seq` with timestamp `ts`.
    fn deleted(&self, ts: Timestamp, seq: SeqNo) -> bool {
        seq <= self.row_tombstone
            || seq <= self.family_tombstone
            || self
                .column_deletes
                .iter()
                .any(|(range, s)| *s > seq && range.contains(ts))
    }

    /// Takes the next entry of the row (in key order).
    pub fn observe(&mut self, target: &Target<'_>, seq: SeqNo, value: &[u8]) -> Result<Seen> {
        Ok(match target {
            Target::DeleteRow => {
                self.row_tombstone = self.row_tombstone.max(seq);
                Seen::Deletion
            }
            Target::DeleteFamily { family } => {
                self.enter_family(family);
                self.family_tombstone = self.family_tombstone.max(seq);
                Seen::Deletion
            }
            Target::Column {
                family,
                qualifier,
                timestamp,
                kind,
            } => {
                self.enter_column(family, qualifier);
                match kind {
                    CellKind::DeleteCells => {
                        let range = TimestampRange::decode(value).ok_or_else(malformed)?;
                        self.column_deletes.push((range, seq));
                        Seen::Deletion
                    }
                    CellKind::Put if self.admits(*timestamp, seq) => {
                        self.versions += 1;
                        self.newer_at = self.visible_at;
                        self.visible_at = Some(*timestamp);
                        Seen::Visible
                    }
                    CellKind::Put => Seen::Hidden,
                    CellKind::Add => {
                        self.last_timestamp = Some(*timestamp);
                        if self.deleted(*timestamp, seq) {
                            Seen::Hidden
                        } else if self.visible_at == Some(*timestamp) {
                            Seen::Addend
                        } else {
                            self.versions += 1;
                            self.newer_at = self.visible_at;
                            self.visible_at = Some(*timestamp);
                            Seen::Visible
                        }
                    }
                }
            }
        })
    }
}

/// Reads rows from `cursor` (positioned at the start of a row) until one has a visible
/// cell; returns it with the cursor at the start of the following row, or `None` at the
/// end of the stream.
pub fn next_visible_row(cursor: &mut dyn EntryCursor, snapshot: SeqNo) -> Result<Option<Row>> {
    let mut reader = RowReader::default();
    while cursor.valid() {
        if let Some(row) = reader.read(cursor, snapshot)? {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

pub(crate) fn malformed() -> crate::Error {
    corruption("<merged entries>", "malformed internal key")
}

/// Reads the row the cursor is at, leaving the cursor at the next row. `None` when the
/// row has no visible cell.
pub fn read_row(cursor: &mut dyn EntryCursor, snapshot: SeqNo) -> Result<Option<Row>> {
    RowReader::default().read(cursor, snapshot)
}

/// Cells a read's filter drops whatever else the row holds, so the reader may leave
/// them out: cells of columns outside `columns`, cells outside `[start, end)`, and each
/// column's versions after the first `versions` inside it. Leaving out a column or
/// the rest of one takes a single seek, so a read of a few columns at a timestamp walks
/// neither the row's other columns nor every older version of a hot cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadWindow {
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    pub versions: Option<usize>,
    /// The columns read (`None`: all).
    pub columns: Option<Vec<ColumnSpan>>,
}

/// The columns of one family with qualifiers in a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpan {
    pub family: Vec<u8>,
    pub start: Bound<Vec<u8>>,
    pub end: Bound<Vec<u8>>,
}

impl ColumnSpan {
    fn after_start(&self, qualifier: &[u8]) -> bool {
        crate::key::after_start(qualifier, &self.start)
    }

    fn before_end(&self, qualifier: &[u8]) -> bool {
        crate::key::before_end(qualifier, &self.end)
    }

    /// The first key of the span's entries in `row` (for a span starting at the
    /// family's beginning, its deletions included).
    fn first_key(&self, row: &[u8]) -> Vec<u8> {
        match &self.start {
            Bound::Included(q) => column_prefix(row, &self.family, q),
            Bound::Excluded(q) => column_end(row, &self.family, q),
            Bound::Unbounded => family_prefix(row, &self.family),
        }
    }
}

impl ReadWindow {
    pub const ALL: ReadWindow = ReadWindow {
        start: Timestamp::MIN,
        end: None,
        versions: None,
        columns: None,
    };

    fn contains(&self, ts: Timestamp) -> bool {
        ts >= self.start && self.end.is_none_or(|e| ts < e)
    }

    fn bounds_timestamps(&self) -> bool {
        self.start != Timestamp::MIN || self.end.is_some()
    }
}

/// Where a column lies with respect to the columns a read wants.
enum Place {
    Wanted,
    /// Not wanted; the next wanted entry is at or after this key.
    Before(Vec<u8>),
    /// Not wanted, nor anything after it in the row.
    Past,
}

/// Where column `family:qualifier` of `row` lies among `spans` (sorted by family;
/// spans of one family may overlap).
fn place(spans: &[ColumnSpan], row: &[u8], family: &[u8], qualifier: &[u8]) -> Place {
    let mut next: Option<Vec<u8>> = None;
    let mut consider = |key: Vec<u8>| {
        if next.as_ref().is_none_or(|n| key < *n) {
            next = Some(key);
        }
    };
    for span in spans {
        match span.family.as_slice().cmp(family) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => {
                if !span.after_start(qualifier) {
                    consider(span.first_key(row));
                } else if span.before_end(qualifier) {
                    return Place::Wanted;
                }
            }
            std::cmp::Ordering::Greater => {
                // The nearest later family (spans are sorted by family).
                consider(family_prefix(row, &span.family));
                break;
            }
        }
    }
    next.map_or(Place::Past, Place::Before)
}

/// A key after every entry of one column and before the next column's.
fn column_end(row: &[u8], family: &[u8], qualifier: &[u8]) -> Vec<u8> {
    let mut end = column_prefix(row, family, qualifier);
    // Past any timestamp, sequence number and kind.
    end.extend_from_slice(&[0xFF; 18]);
    end
}

/// Reads rows one after another, reusing its working buffers (a scan reads millions).
#[derive(Default)]
pub struct RowReader {
    visibility: RowVisibility,
    prefix: Vec<u8>,
    window: Option<ReadWindow>,
    /// Families the window does not apply to: leaving out newer cells would change
    /// what their garbage-collection rule keeps.
    exempt: Vec<Vec<u8>>,
    /// Sum families: a cell's addends follow it.
    sums: Vec<Vec<u8>>,
    /// The columns read, sorted by family (`None`: all).
    columns: Option<Vec<ColumnSpan>>,
}

impl RowReader {
    /// A reader that leaves out the cells outside `window` (of families whose GC rule
    /// allows it, per `schema`, at time `now`).
    pub fn windowed(
        window: Option<ReadWindow>,
        schema: &crate::schema::TableSchema,
        now: Timestamp,
    ) -> Self {
        let mut window = window.filter(|w| *w != ReadWindow::ALL);
        let mut columns = window.as_mut().and_then(|w| w.columns.take());
        if let Some(spans) = columns.as_mut() {
            spans.sort_by(|a, b| a.family.cmp(&b.family));
        }
        let exempt = match &window {
            Some(w) if w.bounds_timestamps() => schema
                .families
                .iter()
                .filter(|(_, rule)| rule.needs_cells_after(w.end, now))
                .map(|(name, _)| name.as_bytes().to_vec())
                .collect(),
            _ => Vec::new(),
        };
        RowReader {
            window,
            exempt,
            sums: schema
                .sum_families
                .iter()
                .map(|f| f.as_bytes().to_vec())
                .collect(),
            columns,
            ..RowReader::default()
        }
    }

    /// Moves the cursor to `end` ([`column_end`]), past the rest of a column. Column
    /// deletions sort before the column's cells, so none of them is skipped.
    fn skip_column(&mut self, cursor: &mut dyn EntryCursor, end: &[u8]) -> Result<()> {
        cursor.seek(end)?;
        self.visibility.leave_column();
        Ok(())
    }

    /// Whether a read of one row is done once column `family:qualifier` is: no
    /// column after it is wanted.
    fn done_after(&self, row: &[u8], family: &[u8], qualifier: &[u8]) -> bool {
        let Some(spans) = self.columns.as_deref() else {
            return false;
        };
        // The first qualifier after `qualifier`.
        let mut next = qualifier.to_vec();
        next.push(0);
        matches!(place(spans, row, family, &next), Place::Past)
    }

    /// [`RowReader::read`] for a read of this row alone: it stops once the row's wanted
    /// columns are read, leaving the cursor anywhere (a scan needs the seek past the
    /// rest of the row to go on to the next one).
    pub fn read_one(
        &mut self,
        cursor: &mut dyn EntryCursor,
        snapshot: SeqNo,
    ) -> Result<Option<Row>> {
        self.read_row(cursor, snapshot, true)
    }

    /// The window for cells of `family`, if any.
    fn window_for(&self, family: &[u8]) -> Option<&ReadWindow> {
        self.window
            .as_ref()
            .filter(|_| !self.exempt.iter().any(|f| f.as_slice() == family))
    }

    /// Reads the row the cursor is at, leaving the cursor at the next row. `None` when
    /// the row has no visible cell.
    pub fn read(&mut self, cursor: &mut dyn EntryCursor, snapshot: SeqNo) -> Result<Option<Row>> {
        self.read_row(cursor, snapshot, false)
    }

    /// Reads the row the cursor is at; `one_row`: see [`RowReader::read_one`].
    fn read_row(
        &mut self,
        cursor: &mut dyn EntryCursor,
        snapshot: SeqNo,
        one_row: bool,
    ) -> Result<Option<Row>> {
        let first = cursor.key();
        let (row, prefix_len) = get_escaped(first).ok_or_else(malformed)?;
        let key = row.into_owned();
        self.prefix.clear();
        self.prefix.extend_from_slice(&first[..prefix_len]);
        self.visibility.reset();
        let mut cells: Vec<Cell> = Vec::new();
        // In the current column: versions kept inside the window, and whether the last
        // visible cell was kept (its addends follow it).
        let mut kept_in_column = 0;
        let mut last_kept = false;
        while cursor.valid() && cursor.key().starts_with(&self.prefix) {
            let (target, seq) =
                InternalKey::decode_after_row(&cursor.key()[prefix_len..]).ok_or_else(malformed)?;
            if let (
                Some(spans),
                Target::Column {
                    family, qualifier, ..
                },
            ) = (&self.columns, &target)
            {
                let next = match place(spans, &key, family, qualifier) {
                    Place::Wanted => None,
                    Place::Before(next) => Some(next),
                    Place::Past if one_row => break,
                    Place::Past => Some(row_end(&key)),
                };
                if let Some(next) = next {
                    cursor.seek(&next)?;
                    self.visibility.leave_column();
                    continue;
                }
            }
            let seen = if seq <= snapshot {
                self.visibility.observe(&target, seq, cursor.value())?
            } else {
                Seen::Hidden
            };
            if seen == Seen::Addend {
                if let Some(cell) = cells.last_mut().filter(|_| last_kept) {
                    let sum = read_sum(&cell.value).wrapping_add(read_sum(cursor.value()));
                    cell.value = sum.to_be_bytes().to_vec();
                }
            } else if seen == Seen::Visible {
                if let Target::Column {
                    family,
                    qualifier,
                    timestamp,
                    ..
                } = target
                {
                    let same_column = cells
                        .last()
                        .is_some_and(|c| c.family == *family && c.qualifier == *qualifier);
                    if !same_column {
                        kept_in_column = 0;
                    }
                    let window = self.window_for(&family);
                    let limit = window.and_then(|w| w.versions);
                    last_kept = window.is_none_or(|w| w.contains(timestamp));
                    if last_kept && limit == Some(kept_in_column) {
                        if one_row && self.done_after(&key, &family, &qualifier) {
                            break;
                        }
                        let end = column_end(&key, &family, &qualifier);
                        self.skip_column(cursor, &end)?;
                        continue;
                    }
                    if last_kept {
                        kept_in_column += 1;
                        let done = limit == Some(kept_in_column)
                            && !self.sums.iter().any(|f| *f == *family);
                        let end = done.then(|| column_end(&key, &family, &qualifier));
                        let last_wanted =
                            one_row && done && self.done_after(&key, &family, &qualifier);
                        cells.push(Cell {
                            family: Cow::into_owned(family),
                            qualifier: Cow::into_owned(qualifier),
                            timestamp,
                            value: cursor.value().to_vec(),
                            labels: Vec::new(),
                        });
                        // The column is complete: skip its older versions (and the
                        // overwritten ones of the same timestamp) with one seek. A sum
                        // column's addends follow its cell, so it is skipped only at
                        // its next version.
                        if last_wanted {
                            break;
                        }
                        if let Some(end) = end {
                            self.skip_column(cursor, &end)?;
                            continue;
                        }
                    }
                }
            }
            cursor.advance()?;
        }
        Ok((!cells.is_empty()).then_some(Row { key, cells }))
    }
}
