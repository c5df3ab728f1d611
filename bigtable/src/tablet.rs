//! Tablets: a table is split into contiguous row ranges, each with its own LSM tree
//! (memtables and SSTables). This module holds the range type and the cursor that reads
//! several tablets (or one tablet's share of SSTables it shares with its sibling after a
//! split) as one stream.

use crate::error::Result;
use crate::key::row_prefix;
use crate::merge::EntryCursor;

/// Rows `start <= row < end` (`end = None`: no upper bound). The first tablet of a table
/// starts at the empty row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TabletRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl TabletRange {
    pub fn all() -> Self {
        TabletRange::default()
    }

    pub fn contains(&self, row: &[u8]) -> bool {
        (self.start.is_empty() || row >= self.start.as_slice())
            && self.end.as_ref().is_none_or(|e| row < e.as_slice())
    }

    pub fn is_all(&self) -> bool {
        self.start.is_empty() && self.end.is_none()
    }

    /// Whether some row in `[first, last]` (`last = None`: no bound) is in the range.
    pub fn overlaps(&self, first: &[u8], last: Option<&[u8]>) -> bool {
        self.end.as_ref().is_none_or(|e| first < e.as_slice())
            && last.is_none_or(|l| l >= self.start.as_slice())
    }

    /// The range's halves at `at` (which must lie strictly inside it).
    pub fn split(&self, at: &[u8]) -> (TabletRange, TabletRange) {
        let left = TabletRange {
            start: self.start.clone(),
            end: Some(at.to_vec()),
        };
        let right = TabletRange {
            start: at.to_vec(),
            end: self.end.clone(),
        };
        (left, right)
    }

    /// Entry keys of the range's rows are `>= lower` and `< upper`.
    fn key_bounds(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let lower = if self.start.is_empty() {
            Vec::new()
        } else {
            row_prefix(&self.start)
        };
        (lower, self.end.as_deref().map(row_prefix))
    }
}

/// One tablet's entries: a cursor over its sources, limited to its range.
struct Part<'a> {
    lower: Vec<u8>,
    upper: Option<Vec<u8>>,
    cursor: Box<dyn EntryCursor + 'a>,
}

impl Part<'_> {
    fn below_upper(&self, key: &[u8]) -> bool {
        self.upper.as_ref().is_none_or(|u| key < u.as_slice())
    }
}

/// Several tablets' cursors, in row order, read as one. Each part only shows the entries
/// of its own range, so tablets that still share SSTables after a split each see their
/// half.
pub struct TabletChain<'a> {
    parts: Vec<Part<'a>>,
    at: usize,
}

impl<'a> TabletChain<'a> {
    /// `parts`: tablets in row order, disjoint.
    pub fn new(parts: Vec<(TabletRange, Box<dyn EntryCursor + 'a>)>) -> Self {
        let parts = parts
            .into_iter()
            .map(|(range, cursor)| {
                let (lower, upper) = range.key_bounds();
                Part {
                    lower,
                    upper,
                    cursor,
                }
            })
            .collect();
        TabletChain { parts, at: 0 }
    }

    /// From part `at` on, positions at the first entry `>= target` inside a part.
    fn settle(&mut self, mut at: usize, target: &[u8]) -> Result<()> {
        while at < self.parts.len() {
            let part = &mut self.parts[at];
            let from = if target > part.lower.as_slice() {
                target
            } else {
                part.lower.as_slice()
            };
            if part.upper.as_ref().is_none_or(|u| from < u.as_slice()) {
                let from = from.to_vec();
                part.cursor.seek(&from)?;
                if part.cursor.valid() && part.below_upper(part.cursor.key()) {
                    self.at = at;
                    return Ok(());
                }
            }
            at += 1;
        }
        self.at = self.parts.len();
        Ok(())
    }
}

impl EntryCursor for TabletChain<'_> {
    fn valid(&self) -> bool {
        self.parts.get(self.at).is_some_and(|p| p.cursor.valid())
    }

    fn key(&self) -> &[u8] {
        self.parts.get(self.at).map_or(&[], |p| p.cursor.key())
    }

    fn value(&self) -> &[u8] {
        self.parts.get(self.at).map_or(&[], |p| p.cursor.value())
    }

    fn seek_to_first(&mut self) -> Result<()> {
        self.settle(0, &[])
    }

    fn seek(&mut self, target: &[u8]) -> Result<()> {
        // The first part whose range reaches past the target.
        let first = self
            .parts
            .partition_point(|p| p.upper.as_ref().is_some_and(|u| u.as_slice() <= target));
        self.settle(first, target)
    }

    fn advance(&mut self) -> Result<()> {
        let Some(part) = self.parts.get_mut(self.at) else {
            return Ok(());
        };
        part.cursor.advance()?;
        if part.cursor.valid() && part.below_upper(part.cursor.key()) {
            return Ok(());
        }
        self.settle(self.at + 1, &[])
    }

    fn last_key_before(&mut self, target: &[u8]) -> Result<Option<Vec<u8>>> {
        self.at = self.parts.len();
        for part in self.parts.iter_mut().rev() {
            if part.lower.as_slice() >= target {
                continue;
            }
            let limit = match &part.upper {
                Some(u) if u.as_slice() < target => u.clone(),
                _ => target.to_vec(),
            };
            if let Some(key) = part.cursor.last_key_before(&limit)? {
                if key.as_slice() >= part.lower.as_slice() {
                    return Ok(Some(key));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{InternalKey, Target};
    use crate::memtable::Memtable;

    fn key(row: &str) -> Vec<u8> {
        InternalKey {
            row: row.as_bytes().into(),
            target: Target::DeleteRow,
            seq: 1,
        }
        .encode()
    }

    /// Two tablets split at "m" that both still hold every row (shared SSTables).
    #[test]
    fn each_part_shows_only_its_rows() {
        let mem = Memtable::new(64);
        for row in ["a", "f", "m", "q", "z"] {
            mem.insert(key(row), Vec::new(), 1);
        }
        let all = TabletRange::all();
        let (left, right) = all.split(b"m");
        let mut chain = TabletChain::new(vec![
            (left, Box::new(mem.iter()) as Box<dyn EntryCursor>),
            (right, Box::new(mem.iter())),
        ]);
        chain.seek_to_first().unwrap();
        let mut seen = Vec::new();
        while chain.valid() {
            seen.push(chain.key().to_vec());
            chain.advance().unwrap();
        }
        assert_eq!(
            seen,
            ["a", "f", "m", "q", "z"].map(key).to_vec(),
            "each row once"
        );
        chain.seek(&key("g")).unwrap();
        assert_eq!(chain.key(), key("m").as_slice());
        assert_eq!(chain.last_key_before(&key("q")).unwrap(), Some(key("m")));
        assert_eq!(chain.last_key_before(&key("m")).unwrap(), Some(key("f")));
        assert_eq!(chain.last_key_before(&key("a")).unwrap(), None);
    }

    #[test]
    fn ranges_contain_and_overlap() {
        let r = TabletRange {
            start: b"b".to_vec(),
            end: Some(b"d".to_vec()),
        };
        assert!(r.contains(b"b") && r.contains(b"c") && !r.contains(b"d") && !r.contains(b"a"));
        assert!(
            r.overlaps(b"a", Some(b"b")) && !r.overlaps(b"d", None) && !r.overlaps(b"", Some(b"a"))
        );
    }
}
