//! Merging sorted entry sources (the memtable, SSTables) into one sorted stream.

use crate::error::Result;
use crate::memtable::MemtableIter;
use crate::sstable::TableIter;

/// A cursor over entries sorted by internal key.
pub trait EntryCursor {
    fn valid(&self) -> bool;
    fn key(&self) -> &[u8];
    fn value(&self) -> &[u8];
    fn seek_to_first(&mut self) -> Result<()>;
    fn seek(&mut self, target: &[u8]) -> Result<()>;
    fn advance(&mut self) -> Result<()>;
    /// The key of the last entry with key `< target`, if any; the cursor's position
    /// afterwards is unspecified (seek before reading again).
    fn last_key_before(&mut self, target: &[u8]) -> Result<Option<Vec<u8>>>;
}

impl EntryCursor for MemtableIter<'_> {
    fn valid(&self) -> bool {
        MemtableIter::valid(self)
    }
    fn key(&self) -> &[u8] {
        MemtableIter::key(self)
    }
    fn value(&self) -> &[u8] {
        MemtableIter::value(self)
    }
    fn seek_to_first(&mut self) -> Result<()> {
        MemtableIter::seek_to_first(self);
        Ok(())
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        MemtableIter::seek(self, target);
        Ok(())
    }
    fn advance(&mut self) -> Result<()> {
        MemtableIter::advance(self);
        Ok(())
    }
    fn last_key_before(&mut self, target: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(MemtableIter::last_key_before(self, target))
    }
}

impl EntryCursor for TableIter {
    fn valid(&self) -> bool {
        TableIter::valid(self)
    }
    fn key(&self) -> &[u8] {
        TableIter::key(self)
    }
    fn value(&self) -> &[u8] {
        TableIter::value(self)
    }
    fn seek_to_first(&mut self) -> Result<()> {
        TableIter::seek_to_first(self)
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        TableIter::seek(self, target)
    }
    fn advance(&mut self) -> Result<()> {
        TableIter::advance(self)
    }
    fn last_key_before(&mut self, target: &[u8]) -> Result<Option<Vec<u8>>> {
        TableIter::last_key_before(self, target)
    }
}

/// The union of several cursors in key order. Where sources hold the same key, the
/// earliest source in the list (the newest data) wins and the others are skipped.
pub struct MergingCursor<'a> {
    sources: Vec<Box<dyn EntryCursor + 'a>>,
    current: Option<usize>,
    /// Another source is at the current key too.
    tie: bool,
}

impl<'a> MergingCursor<'a> {
    pub fn new(sources: Vec<Box<dyn EntryCursor + 'a>>) -> Self {
        MergingCursor {
            sources,
            current: None,
            tie: false,
        }
    }

    fn pick_smallest(&mut self) {
        self.current = None;
        self.tie = false;
        for (i, s) in self.sources.iter().enumerate() {
            if !s.valid() {
                continue;
            }
            match self.current {
                None => self.current = Some(i),
                Some(c) => match s.key().cmp(self.sources[c].key()) {
                    std::cmp::Ordering::Less => {
                        self.current = Some(i);
                        self.tie = false;
                    }
                    std::cmp::Ordering::Equal => self.tie = true,
                    std::cmp::Ordering::Greater => {}
                },
            }
        }
    }
}

impl EntryCursor for MergingCursor<'_> {
    fn valid(&self) -> bool {
        self.current.is_some()
    }

    fn key(&self) -> &[u8] {
        self.current.map_or(&[], |c| self.sources[c].key())
    }

    fn value(&self) -> &[u8] {
        self.current.map_or(&[], |c| self.sources[c].value())
    }

    fn seek_to_first(&mut self) -> Result<()> {
        for s in &mut self.sources {
            s.seek_to_first()?;
        }
        self.pick_smallest();
        Ok(())
    }

    fn seek(&mut self, target: &[u8]) -> Result<()> {
        for s in &mut self.sources {
            s.seek(target)?;
        }
        self.pick_smallest();
        Ok(())
    }

    fn advance(&mut self) -> Result<()> {
        let Some(c) = self.current else { return Ok(()) };
        // Older sources holding the same key are skipped (the current one is newest).
        if self.tie {
            for i in 0..self.sources.len() {
                if i != c
                    && self.sources[i].valid()
                    && self.sources[i].key() == self.sources[c].key()
                {
                    self.sources[i].advance()?;
                }
            }
        }
        self.sources[c].advance()?;
        self.pick_smallest();
        Ok(())
    }

    fn last_key_before(&mut self, target: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut best: Option<Vec<u8>> = None;
        for s in &mut self.sources {
            if let Some(key) = s.last_key_before(target)? {
                if best.as_ref().is_none_or(|b| key > *b) {
                    best = Some(key);
                }
            }
        }
        self.current = None;
        Ok(best)
    }
}
