//! The memtable: recent writes, sorted by internal key in a concurrent skiplist, with
//! its memory use counted so the engine can flush it at a size limit.

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_skiplist::SkipMap;

use crate::bloom::{self, ConcurrentFilter};
use crate::key::{row_prefix_len, SeqNo};

/// Bytes charged per entry on top of key and value: skiplist node, tower and vectors.
const ENTRY_OVERHEAD: usize = 80;

/// Bloom filter bits per expected row: point reads of rows a memtable does not hold
/// (most of them) skip its skiplist, the costliest part of such a read.
const FILTER_BITS_PER_KEY: usize = 10;

pub struct Memtable {
    map: SkipMap<Vec<u8>, Vec<u8>>,
    rows: ConcurrentFilter,
    bytes: AtomicUsize,
    max_seq: AtomicU64,
    /// No commit-log record of an entry here has an LSN below this (`u64::MAX`: none yet).
    min_lsn: AtomicU64,
}

impl Memtable {
    /// A memtable whose row filter is sized for about `expected_entries` entries.
    pub fn new(expected_entries: usize) -> Self {
        let rows = ConcurrentFilter::new(expected_entries.max(64), FILTER_BITS_PER_KEY);
        Memtable {
            map: SkipMap::new(),
            bytes: AtomicUsize::new(rows.memory_bytes()),
            rows,
            max_seq: AtomicU64::new(0),
            min_lsn: AtomicU64::new(u64::MAX),
        }
    }

    /// Records that a write whose log record has an LSN `>= lsn` is coming.
    pub fn note_lsn(&self, lsn: u64) {
        self.min_lsn.fetch_min(lsn, Ordering::Relaxed);
    }

    /// The lowest LSN noted: the commit log must be kept from here until this memtable
    /// is flushed. `None` when nothing was noted.
    pub fn min_lsn(&self) -> Option<u64> {
        let lsn = self.min_lsn.load(Ordering::Relaxed);
        (lsn != u64::MAX).then_some(lsn)
    }

    /// Inserts an entry (an equal key is replaced). Safe from many threads at once.
    pub fn insert(&self, key: Vec<u8>, value: Vec<u8>, seq: SeqNo) {
        self.bytes
            .fetch_add(key.len() + value.len() + ENTRY_OVERHEAD, Ordering::Relaxed);
        self.max_seq.fetch_max(seq, Ordering::Relaxed);
        if let Some(n) = row_prefix_len(&key) {
            self.rows.insert(bloom::hash64(&key[..n]));
        }
        self.map.insert(key, value);
    }

    /// False when the memtable holds no entry of the row whose prefix has this hash.
    pub fn may_contain_row(&self, row_hash: u64) -> bool {
        self.rows.may_contain(row_hash)
    }

    /// Approximate memory held, for the flush trigger.
    pub fn approximate_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The highest sequence number inserted.
    pub fn max_seq(&self) -> SeqNo {
        self.max_seq.load(Ordering::Relaxed)
    }

    /// A cursor over the entries in key order.
    pub fn iter(&self) -> MemtableIter<'_> {
        MemtableIter {
            map: &self.map,
            current: None,
        }
    }
}

/// A cursor over a memtable. It stays valid while writers insert: it sees a key inserted
/// after the cursor's position if the cursor reaches it.
pub struct MemtableIter<'a> {
    map: &'a SkipMap<Vec<u8>, Vec<u8>>,
    current: Option<crossbeam_skiplist::map::Entry<'a, Vec<u8>, Vec<u8>>>,
}

impl MemtableIter<'_> {
    pub fn valid(&self) -> bool {
        self.current.is_some()
    }

    pub fn key(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |e| e.key())
    }

    pub fn value(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |e| e.value())
    }

    pub fn seek_to_first(&mut self) {
        self.current = self.map.front();
    }

    /// Positions at the first entry with key `>= target`.
    pub fn seek(&mut self, target: &[u8]) {
        self.current = self.map.lower_bound(Bound::Included(target));
    }

    /// The key of the last entry with key `< target`, if any.
    pub fn last_key_before(&self, target: &[u8]) -> Option<Vec<u8>> {
        self.map
            .upper_bound(Bound::Excluded(target))
            .map(|e| e.key().clone())
    }

    pub fn advance(&mut self) {
        self.current = self.current.take().and_then(|e| e.next());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #[test]
        fn iterates_and_seeks_like_a_sorted_map(
            entries in proptest::collection::vec((proptest::collection::vec(0u8..4, 0..6), proptest::collection::vec(any::<u8>(), 0..4)), 0..80),
            targets in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..6), 0..10),
        ) {
            let mem = Memtable::new(1000);
            let mut model = BTreeMap::new();
            for (i, (k, v)) in entries.into_iter().enumerate() {
                mem.insert(k.clone(), v.clone(), i as u64);
                model.insert(k, v);
            }
            let mut it = mem.iter();
            it.seek_to_first();
            let mut got = Vec::new();
            while it.valid() {
                got.push((it.key().to_vec(), it.value().to_vec()));
                it.advance();
            }
            prop_assert_eq!(got, model.clone().into_iter().collect::<Vec<_>>());
            for t in targets {
                prop_assert_eq!(it.last_key_before(&t), model.range(..t.clone()).next_back().map(|(k, _)| k.clone()));
                it.seek(&t);
                prop_assert_eq!(it.valid().then(|| it.key().to_vec()), model.range(t..).next().map(|(k, _)| k.clone()));
            }
        }
    }

    #[test]
    fn concurrent_inserts_are_all_kept_and_counted() {
        let mem = Memtable::new(1000);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let mem = &mem;
                s.spawn(move || {
                    for i in 0..1000u64 {
                        let key = format!("{i:05}-{t}").into_bytes();
                        mem.insert(key, vec![0; 10], t * 1000 + i);
                    }
                });
            }
        });
        assert_eq!(mem.len(), 4000);
        assert_eq!(mem.max_seq(), 3999);
        assert!(mem.approximate_bytes() >= 4000 * (7 + 10));
    }
}
