//! The read path: snapshots, row sets, and the row stream (forward or reverse), with GC
//! rules and filters applied to each row.

use std::ops::Bound;
use std::sync::Arc;

use super::{Core, Engine, SnapshotGuard, MAX_ROW_BYTES};
use crate::error::{corruption, Result};
use crate::filter::{CompiledFilter, RowFilter};
use crate::gc_rule::collect_garbage;
use crate::key::{key_row, row_end, row_prefix, SeqNo, Timestamp};
use crate::merge::{EntryCursor, MergingCursor};
use crate::row_reader::{Row, RowReader};
use crate::schema::TableSchema;
use crate::tablet::{TabletChain, TabletRange};
use crate::version::{RowScope, TreeVersion};

/// Rows from `start` to `end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRange {
    pub start: Bound<Vec<u8>>,
    pub end: Bound<Vec<u8>>,
}

impl RowRange {
    pub fn all() -> Self {
        RowRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    fn single(key: &[u8]) -> Self {
        RowRange {
            start: Bound::Included(key.to_vec()),
            end: Bound::Included(key.to_vec()),
        }
    }

    fn after_start(&self, row: &[u8]) -> bool {
        crate::key::after_start(row, &self.start)
    }

    fn before_end(&self, row: &[u8]) -> bool {
        crate::key::before_end(row, &self.end)
    }

    fn start_row(&self) -> &[u8] {
        match &self.start {
            Bound::Included(s) | Bound::Excluded(s) => s,
            Bound::Unbounded => &[],
        }
    }

    fn end_row(&self) -> Option<&[u8]> {
        match &self.end {
            Bound::Included(e) | Bound::Excluded(e) => Some(e),
            Bound::Unbounded => None,
        }
    }

    fn as_single_row(&self) -> Option<&[u8]> {
        match (&self.start, &self.end) {
            (Bound::Included(s), Bound::Included(e)) if s == e => Some(s),
            _ => None,
        }
    }
}

/// Which rows to read: the union of some keys and ranges; both empty means every row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowSet {
    pub keys: Vec<Vec<u8>>,
    pub ranges: Vec<RowRange>,
}

impl RowSet {
    pub fn all() -> Self {
        RowSet::default()
    }

    pub fn keys<I: IntoIterator<Item = Vec<u8>>>(keys: I) -> Self {
        RowSet {
            keys: keys.into_iter().collect(),
            ranges: Vec::new(),
        }
    }

    pub fn range(range: RowRange) -> Self {
        RowSet {
            keys: Vec::new(),
            ranges: vec![range],
        }
    }

    fn spans(&self) -> Vec<RowRange> {
        if self.keys.is_empty() && self.ranges.is_empty() {
            return vec![RowRange::all()];
        }
        self.keys
            .iter()
            .map(|k| RowRange::single(k))
            .chain(self.ranges.iter().cloned())
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReadRequest {
    pub rows: RowSet,
    pub filter: Option<RowFilter>,
    /// At most this many rows (after filtering).
    pub limit: Option<u64>,
    /// Rows in descending key order.
    pub reverse: bool,
}

/// A consistent view of one table: later writes, flushes and compactions do not change
/// what it reads.
pub struct TableSnapshot {
    seq: SeqNo,
    schema: Arc<TableSchema>,
    /// The table's tablets in row order, each with its version.
    tablets: Vec<(TabletRange, Arc<TreeVersion>)>,
    now: Timestamp,
    _registration: SnapshotGuard,
}

impl Engine {
    /// A snapshot of `table` as of now.
    pub fn snapshot(&self, table: &str) -> Result<TableSnapshot> {
        self.core.snapshot(table)
    }

    /// One row, through `filter`.
    pub fn read_row(
        &self,
        table: &str,
        row: &[u8],
        filter: Option<&RowFilter>,
    ) -> Result<Option<Row>> {
        let filter = filter.map(RowFilter::compile).transpose()?;
        self.snapshot(table)?.read_row(row, filter.as_ref())
    }

    /// Reads rows into a vector (a convenience over [`TableSnapshot::read_rows`]).
    pub fn read_rows(&self, table: &str, request: &ReadRequest) -> Result<Vec<Row>> {
        let snapshot = self.snapshot(table)?;
        let rows = snapshot.read_rows(request)?;
        rows.collect()
    }

    /// Keys splitting the table into pieces of about `sample_bytes` of SSTable data,
    /// each with the bytes before it: every tablet boundary, and block boundaries
    /// within tablets. The last sample has an empty key and the total.
    pub fn sample_row_keys(&self, table: &str) -> Result<Vec<(Vec<u8>, u64)>> {
        let tablets = self.snapshot(table)?.tablets;
        let mut samples: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut total = 0;
        for (range, version) in &tablets {
            let mut blocks = Vec::new();
            for file in version.levels.iter().flatten() {
                let mut previous_end = 0;
                for (key, end) in file.table.block_boundaries() {
                    let row = key_row(&key)
                        .ok_or_else(|| corruption(file.table.path(), "malformed index key"))?
                        .into_owned();
                    if range.contains(&row) {
                        blocks.push((row, end - previous_end));
                    }
                    previous_end = end;
                }
            }
            blocks.sort();
            let mut since_sample = 0;
            for (row, bytes) in blocks {
                total += bytes;
                since_sample += bytes;
                if since_sample >= self.core.options.sample_bytes
                    && samples.last().is_none_or(|(last, _)| *last != row)
                {
                    samples.push((row, total));
                    since_sample = 0;
                }
            }
            if let Some(end) = &range.end {
                if samples.last().is_none_or(|(last, _)| last != end) {
                    samples.push((end.clone(), total));
                }
            }
        }
        samples.push((Vec::new(), total));
        Ok(samples)
    }
}

impl Core {
    fn snapshot(&self, table: &str) -> Result<TableSnapshot> {
        let state = self.state.lock();
        let mut tablets = Vec::new();
        let mut schema = None;
        for id in state.tablets(table)? {
            if let Some(t) = state.trees.get(id) {
                schema.get_or_insert_with(|| t.schema.clone());
                tablets.push((t.range.clone(), t.version.clone()));
            }
        }
        let schema = schema.ok_or_else(|| crate::Error::NotFound(format!("table {table}")))?;
        let seq = self.commits.visible();
        Ok(TableSnapshot {
            seq,
            schema,
            tablets,
            now: self.options.clock.now_micros(),
            _registration: self.snapshots.register(seq),
        })
    }
}

impl TableSnapshot {
    /// A cursor over the entries of rows `start..=end` (`end = None`: to the end), across
    /// the tablets holding them. A table of one tablet reads its sources directly.
    fn scan_cursor(&self, start: &[u8], end: Option<&[u8]>) -> Box<dyn EntryCursor + '_> {
        let scope = RowScope::Span(start, end);
        let mut parts: Vec<(TabletRange, Box<dyn EntryCursor + '_>)> = self
            .tablets
            .iter()
            .filter(|(range, _)| range.overlaps(start, end))
            .map(|(range, version)| {
                let cursor = MergingCursor::new(version.cursors(scope));
                (range.clone(), Box::new(cursor) as Box<dyn EntryCursor + '_>)
            })
            .collect();
        if parts.len() == 1 && parts[0].0.is_all() {
            return parts.remove(0).1;
        }
        Box::new(TabletChain::new(parts))
    }

    /// The sequence number the snapshot reads at.
    pub fn seq(&self) -> SeqNo {
        self.seq
    }

    /// One row, through `filter`.
    pub fn read_row(&self, row: &[u8], filter: Option<&CompiledFilter>) -> Result<Option<Row>> {
        let at = self
            .tablets
            .partition_point(|(r, _)| r.start.as_slice() <= row);
        let Some((_, version)) = self.tablets.get(at.saturating_sub(1)) else {
            return Ok(None);
        };
        let mut reader = self.reader(filter);
        let found = version.read_row_with(row, self.seq, &mut reader)?;
        Ok(found.and_then(|r| self.finish_row(r, filter)))
    }

    /// A row reader that leaves out what `filter` would drop anyway.
    fn reader(&self, filter: Option<&CompiledFilter>) -> RowReader {
        let window = filter.and_then(CompiledFilter::read_window);
        RowReader::windowed(window, &self.schema, self.now)
    }

    /// Streams the rows of `request` in key order (or reverse key order).
    pub fn read_rows(&self, request: &ReadRequest) -> Result<RowStream<'_>> {
        let filter = request
            .filter
            .as_ref()
            .map(RowFilter::compile)
            .transpose()?
            .filter(|f| !f.is_pass_all());
        let mut spans = request.rows.spans();
        if request.reverse {
            spans.sort_by(|a, b| end_order(&b.end, &a.end));
        } else {
            spans.sort_by(|a, b| start_order(&a.start, &b.start));
        }
        spans.reverse(); // popped from the back
        Ok(RowStream {
            snapshot: self,
            filter,
            spans,
            scan: None,
            remaining: request.limit.unwrap_or(u64::MAX),
            reverse: request.reverse,
            last_row: None,
            failed: false,
        })
    }

    /// Applies GC rules and the filter; `None` if nothing is left.
    fn finish_row(&self, mut row: Row, filter: Option<&CompiledFilter>) -> Option<Row> {
        collect_garbage(&mut row.cells, &self.schema, self.now);
        if let Some(filter) = filter {
            row.cells = filter.apply(&row.key, std::mem::take(&mut row.cells));
        }
        (!row.cells.is_empty()).then_some(row)
    }
}

fn start_order(a: &Bound<Vec<u8>>, b: &Bound<Vec<u8>>) -> std::cmp::Ordering {
    let rank = |x: &Bound<Vec<u8>>| match x {
        Bound::Unbounded => (0, Vec::new(), 0),
        Bound::Included(k) => (1, k.clone(), 0),
        Bound::Excluded(k) => (1, k.clone(), 1),
    };
    rank(a).cmp(&rank(b))
}

fn end_order(a: &Bound<Vec<u8>>, b: &Bound<Vec<u8>>) -> std::cmp::Ordering {
    let rank = |x: &Bound<Vec<u8>>| match x {
        Bound::Unbounded => (1, Vec::new(), 0),
        Bound::Included(k) => (0, k.clone(), 1),
        Bound::Excluded(k) => (0, k.clone(), 0),
    };
    rank(a).cmp(&rank(b))
}

/// A key above every key of every row (rows are at most [`MAX_ROW_BYTES`] long).
fn key_above_all_rows() -> Vec<u8> {
    vec![0xFF; MAX_ROW_BYTES + 1]
}

/// The rows of a read, one at a time. Borrows its snapshot.
pub struct RowStream<'s> {
    snapshot: &'s TableSnapshot,
    filter: Option<CompiledFilter>,
    /// Spans still to read, the next one last.
    spans: Vec<RowRange>,
    scan: Option<Scan<'s>>,
    remaining: u64,
    reverse: bool,
    /// The last row returned: overlapping spans never return a row twice.
    last_row: Option<Vec<u8>>,
    failed: bool,
}

struct Scan<'s> {
    span: RowRange,
    cursor: Box<dyn EntryCursor + 's>,
    /// Reverse scans: the next row is the last one below this key.
    upper: Vec<u8>,
    reader: RowReader,
}

impl<'s> RowStream<'s> {
    fn start_scan(&mut self, span: RowRange) -> Result<Scan<'s>> {
        let mut cursor = self.snapshot.scan_cursor(span.start_row(), span.end_row());
        let mut upper = Vec::new();
        if self.reverse {
            upper = match &span.end {
                Bound::Unbounded => key_above_all_rows(),
                Bound::Included(e) => row_end(e),
                Bound::Excluded(e) => row_prefix(e),
            };
            if let Some(last) = &self.last_row {
                upper = upper.min(row_prefix(last));
            }
        } else {
            let mut start = row_prefix(span.start_row());
            if let Some(last) = &self.last_row {
                start = start.max(row_end(last));
            }
            cursor.seek(&start)?;
        }
        Ok(Scan {
            span,
            cursor,
            upper,
            reader: self.snapshot.reader(self.filter.as_ref()),
        })
    }

    /// The next row of the current span with visible cells, before GC and filtering;
    /// `None` when the span is exhausted.
    fn next_in_span(&mut self) -> Result<Option<Row>> {
        let reverse = self.reverse;
        let seq = self.snapshot.seq;
        let Some(scan) = self.scan.as_mut() else {
            return Ok(None);
        };
        loop {
            if reverse {
                let Some(key) = scan.cursor.last_key_before(&scan.upper)? else {
                    return Ok(None);
                };
                let row = key_row(&key)
                    .ok_or_else(crate::row_reader::malformed)?
                    .into_owned();
                if !scan.span.after_start(&row) {
                    return Ok(None);
                }
                scan.upper = row_prefix(&row);
                scan.cursor.seek(&scan.upper)?;
                if !scan.span.before_end(&row) {
                    continue;
                }
                if let Some(found) = scan.reader.read(scan.cursor.as_mut(), seq)? {
                    return Ok(Some(found));
                }
            } else {
                if !scan.cursor.valid() {
                    return Ok(None);
                }
                let row = key_row(scan.cursor.key()).ok_or_else(crate::row_reader::malformed)?;
                if !scan.span.before_end(&row) {
                    return Ok(None);
                }
                if !scan.span.after_start(&row) {
                    let next = row_end(&row);
                    scan.cursor.seek(&next)?;
                    continue;
                }
                if let Some(found) = scan.reader.read(scan.cursor.as_mut(), seq)? {
                    return Ok(Some(found));
                }
            }
        }
    }

    fn next_row(&mut self) -> Result<Option<Row>> {
        while self.remaining > 0 {
            if self.scan.is_none() {
                let Some(span) = self.spans.pop() else {
                    return Ok(None);
                };
                if let Some(row) = span.as_single_row() {
                    let row = row.to_vec();
                    let already_passed = self.last_row.as_ref().is_some_and(|last| {
                        if self.reverse {
                            *last <= row
                        } else {
                            *last >= row
                        }
                    });
                    if already_passed {
                        continue;
                    }
                    self.last_row = Some(row.clone());
                    if let Some(found) = self.snapshot.read_row(&row, self.filter.as_ref())? {
                        self.remaining -= 1;
                        return Ok(Some(found));
                    }
                    continue;
                }
                self.scan = Some(self.start_scan(span)?);
            }
            match self.next_in_span()? {
                None => self.scan = None,
                Some(row) => {
                    let last = self.last_row.get_or_insert_with(Vec::new);
                    last.clear();
                    last.extend_from_slice(&row.key);
                    if let Some(row) = self.snapshot.finish_row(row, self.filter.as_ref()) {
                        self.remaining -= 1;
                        return Ok(Some(row));
                    }
                }
            }
        }
        Ok(None)
    }
}

impl Iterator for RowStream<'_> {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        if self.failed {
            return None;
        }
        let next = self.next_row();
        if next.is_err() {
            self.failed = true;
        }
        next.transpose()
    }
}
