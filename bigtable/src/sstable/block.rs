//! Blocks: sorted key/value entries with prefix-compressed keys and restart points.
//!
//! ```text
//! entry:   shared varint | unshared varint | value_len varint | key[shared..] | value
//! trailer: restart offsets (u32 LE each) | restart count (u32 LE)
//! ```
//! Every `restart_interval`-th entry stores its whole key (shared = 0) and its offset is
//! a restart point, so a seek binary-searches the restarts and then scans forward.

use std::sync::Arc;

use crate::coding::{get_u32_le, put_varint, Reader};

/// Builds one block.
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    since_restart: usize,
    restart_interval: usize,
    last_key: Vec<u8>,
    entries: usize,
}

impl BlockBuilder {
    pub fn new(restart_interval: usize) -> Self {
        BlockBuilder {
            buf: Vec::new(),
            restarts: vec![0],
            since_restart: 0,
            restart_interval: restart_interval.max(1),
            last_key: Vec::new(),
            entries: 0,
        }
    }

    /// Adds an entry; keys must arrive in strictly increasing order.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(
            self.entries == 0 || key > self.last_key.as_slice(),
            "keys out of order"
        );
        let shared = if self.since_restart < self.restart_interval {
            common_prefix(&self.last_key, key)
        } else {
            self.restarts.push(self.buf.len() as u32);
            self.since_restart = 0;
            0
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(&key[shared..]);
        self.since_restart += 1;
        self.entries += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Size of the block if finished now.
    pub fn estimated_size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Appends the restart trailer and returns the finished block; the builder is reset.
    pub fn finish(&mut self) -> Vec<u8> {
        for r in &self.restarts {
            self.buf.extend_from_slice(&r.to_le_bytes());
        }
        self.buf
            .extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        let block = std::mem::take(&mut self.buf);
        *self = BlockBuilder::new(self.restart_interval);
        block
    }
}

/// How many leading bytes `a` and `b` share.
pub(crate) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A decoded (uncompressed, checksum-verified) block.
#[derive(Debug)]
pub struct Block {
    data: Vec<u8>,
    restarts_at: usize,
    restart_count: usize,
}

/// Why a block's bytes could not be decoded.
pub type BlockError = &'static str;

impl Block {
    pub fn new(data: Vec<u8>) -> Result<Block, BlockError> {
        let len = data.len();
        let count = len
            .checked_sub(4)
            .and_then(|at| get_u32_le(&data, at))
            .ok_or("block too short for its restart count")? as usize;
        let restarts_at = count
            .checked_mul(4)
            .and_then(|n| len.checked_sub(4 + n))
            .ok_or("restart count larger than the block")?;
        if count == 0 {
            return Err("block without restart points");
        }
        Ok(Block {
            data,
            restarts_at,
            restart_count: count,
        })
    }

    /// Bytes held in memory (for cache accounting).
    pub fn size(&self) -> usize {
        self.data.len()
    }

    fn restart(&self, i: usize) -> Result<usize, BlockError> {
        let at = get_u32_le(&self.data, self.restarts_at + 4 * i).ok_or("bad restart")? as usize;
        if at > self.restarts_at {
            return Err("restart point past the entries");
        }
        Ok(at)
    }

    /// The key of the entry at restart point `i`, read in place (a restart entry shares
    /// nothing with the entry before it, so its whole key is stored).
    fn restart_key(&self, i: usize) -> Result<&[u8], BlockError> {
        let entries = &self.data[self.restart(i)?..self.restarts_at];
        let mut r = Reader::new(entries);
        let shared = r.varint_usize().ok_or("bad entry header")?;
        let unshared = r.varint_usize().ok_or("bad entry header")?;
        r.varint_usize().ok_or("bad entry header")?;
        if shared != 0 {
            return Err("restart entry shares a prefix");
        }
        r.take(unshared).ok_or("entry key runs past the block")
    }
}

/// A cursor over a block's entries.
pub struct BlockIter {
    block: Arc<Block>,
    /// Offset of the entry after the current one.
    next: usize,
    key: Vec<u8>,
    value: (usize, usize),
    valid: bool,
}

impl BlockIter {
    pub fn new(block: Arc<Block>) -> Self {
        BlockIter {
            block,
            next: 0,
            key: Vec::new(),
            value: (0, 0),
            valid: false,
        }
    }

    /// A cursor over another block that keeps this one's key buffer.
    pub fn reset(mut self, block: Arc<Block>) -> Self {
        self.block = block;
        self.next = 0;
        self.key.clear();
        self.value = (0, 0);
        self.valid = false;
        self
    }

    pub fn valid(&self) -> bool {
        self.valid
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn value(&self) -> &[u8] {
        &self.block.data[self.value.0..self.value.1]
    }

    pub fn seek_to_first(&mut self) -> Result<(), BlockError> {
        self.start_at_restart(0)?;
        self.advance()
    }

    /// Positions at the first entry with key `>= target` (invalid if there is none).
    pub fn seek(&mut self, target: &[u8]) -> Result<(), BlockError> {
        self.start_at_last_restart_before(target)?;
        while self.valid && self.key.as_slice() < target {
            self.advance()?;
        }
        Ok(())
    }

    /// The key of the last entry with key `< target`, if any (leaves the cursor anywhere).
    pub fn last_key_before(&mut self, target: &[u8]) -> Result<Option<Vec<u8>>, BlockError> {
        self.start_at_last_restart_before(target)?;
        let mut last = None;
        while self.valid && self.key.as_slice() < target {
            last = Some(self.key.clone());
            self.advance()?;
        }
        Ok(last)
    }

    /// Positions at the first entry of the last restart run whose first key is `< target`
    /// (or of the first run when there is none).
    fn start_at_last_restart_before(&mut self, target: &[u8]) -> Result<(), BlockError> {
        let (mut lo, mut hi) = (0, self.block.restart_count - 1);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.block.restart_key(mid)? < target {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        self.start_at_restart(lo)?;
        self.advance()
    }

    /// Moves to the next entry (invalid at the end).
    pub fn advance(&mut self) -> Result<(), BlockError> {
        if self.next >= self.block.restarts_at {
            self.valid = false;
            return Ok(());
        }
        let entries = &self.block.data[self.next..self.block.restarts_at];
        let mut r = Reader::new(entries);
        let shared = r.varint_usize().ok_or("bad entry header")?;
        let unshared = r.varint_usize().ok_or("bad entry header")?;
        let value_len = r.varint_usize().ok_or("bad entry header")?;
        if shared > self.key.len() {
            return Err("entry shares more than the previous key");
        }
        let suffix = r.take(unshared).ok_or("entry key runs past the block")?;
        let value_start = self.block.restarts_at - r.remaining();
        r.take(value_len).ok_or("entry value runs past the block")?;
        self.key.truncate(shared);
        self.key.extend_from_slice(suffix);
        self.value = (value_start, value_start + value_len);
        self.next = value_start + value_len;
        self.valid = true;
        Ok(())
    }

    fn start_at_restart(&mut self, i: usize) -> Result<(), BlockError> {
        self.next = self.block.restart(i)?;
        self.key.clear();
        self.valid = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn build(entries: &BTreeMap<Vec<u8>, Vec<u8>>, interval: usize) -> Arc<Block> {
        let mut b = BlockBuilder::new(interval);
        for (k, v) in entries {
            b.add(k, v);
        }
        Arc::new(Block::new(b.finish()).unwrap())
    }

    proptest! {
        #[test]
        fn iteration_and_seek_match_a_sorted_map(
            entries in proptest::collection::btree_map(proptest::collection::vec(0u8..4, 0..8), proptest::collection::vec(any::<u8>(), 0..10), 0..60),
            interval in 1usize..20,
            targets in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..8), 0..10),
        ) {
            let block = build(&entries, interval);
            let mut it = BlockIter::new(block.clone());
            it.seek_to_first().unwrap();
            let mut got = Vec::new();
            while it.valid() {
                got.push((it.key().to_vec(), it.value().to_vec()));
                it.advance().unwrap();
            }
            prop_assert_eq!(got, entries.clone().into_iter().collect::<Vec<_>>());
            for t in targets {
                let before = it.last_key_before(&t).unwrap();
                prop_assert_eq!(before, entries.range(..t.clone()).next_back().map(|(k, _)| k.clone()));
                it.seek(&t).unwrap();
                let expected = entries.range(t.clone()..).next();
                prop_assert_eq!(it.valid().then(|| (it.key().to_vec(), it.value().to_vec())), expected.map(|(k, v)| (k.clone(), v.clone())));
            }
        }

        #[test]
        fn garbage_blocks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), target in proptest::collection::vec(any::<u8>(), 0..5)) {
            if let Ok(block) = Block::new(bytes) {
                let block = Arc::new(block);
                let mut it = BlockIter::new(block.clone());
                if it.seek_to_first().is_ok() {
                    for _ in 0..100 {
                        if !it.valid() || it.advance().is_err() { break; }
                    }
                }
                let _ = BlockIter::new(block).seek(&target);
            }
        }
    }

    #[test]
    fn shared_prefixes_make_blocks_smaller() {
        let entries: BTreeMap<Vec<u8>, Vec<u8>> = (0..100u32)
            .map(|i| (format!("user/000{i:05}").into_bytes(), vec![1]))
            .collect();
        let compressed = build(&entries, 16).size();
        let raw: usize = entries.keys().map(|k| k.len() + 4).sum();
        assert!(compressed < raw * 2 / 3, "{compressed} vs {raw}");
    }
}
