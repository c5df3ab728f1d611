//! The block cache: decoded SSTable blocks shared by every table, bounded in bytes.
//! Sharded to keep lock contention low. Eviction is CLOCK, an approximation of
//! least-recently-used: a hit only sets the block's reference bit (no list to reorder,
//! so a hit is a hash lookup), and the eviction hand spares a referenced block once,
//! clearing its bit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::sstable::block::Block;

/// `(table id, block offset)`.
pub type BlockKey = (u64, u64);

const SHARDS: usize = 16;

pub struct BlockCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: usize,
}

/// Hashes a [`BlockKey`] with one multiplication per word. Block keys are not chosen by
/// users, so SipHash's defence against crafted collisions buys nothing here, and it cost
/// a tenth of a cached point read.
#[derive(Default)]
struct BlockKeyHasher(u64);

impl Hasher for BlockKeyHasher {
    fn finish(&self) -> u64 {
        // Fold the well-mixed high bits into the low ones the table indexes by.
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
}

struct Slot {
    key: BlockKey,
    block: Arc<Block>,
    referenced: bool,
}

#[derive(Default)]
struct Shard {
    /// Where each cached block's slot is.
    index: HashMap<BlockKey, usize, BuildHasherDefault<BlockKeyHasher>>,
    /// The clock: the hand sweeps these in a circle.
    slots: Vec<Slot>,
    hand: usize,
    bytes: usize,
}

impl Shard {
    fn remove_slot(&mut self, at: usize) {
        let slot = self.slots.swap_remove(at);
        self.index.remove(&slot.key);
        self.bytes -= slot.block.size();
        if let Some(moved) = self.slots.get(at) {
            self.index.insert(moved.key, at);
        }
    }

    /// Evicts the first unreferenced block from the hand on, clearing reference bits as
    /// it passes them.
    fn evict_one(&mut self) {
        while !self.slots.is_empty() {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let slot = &mut self.slots[self.hand];
            if slot.referenced {
                slot.referenced = false;
                self.hand += 1;
            } else {
                self.remove_slot(self.hand);
                return;
            }
        }
    }
}

/// Counters for observability and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
}

impl BlockCache {
    /// A cache holding at most about `capacity` bytes of blocks.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(BlockCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity: capacity / SHARDS,
        })
    }

    fn shard(&self, key: &BlockKey) -> &Mutex<Shard> {
        let h =
            (key.0 ^ key.1.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        &self.shards[(h >> 60) as usize % SHARDS]
    }

    pub fn get(&self, key: &BlockKey) -> Option<Arc<Block>> {
        let mut shard = self.shard(key).lock();
        let at = *shard.index.get(key)?;
        let slot = &mut shard.slots[at];
        slot.referenced = true;
        Some(slot.block.clone())
    }

    /// Inserts a block, evicting others beyond the capacity. A block larger than a
    /// shard's capacity is not kept.
    pub fn insert(&self, key: BlockKey, block: Arc<Block>) {
        let size = block.size();
        if size > self.shard_capacity {
            return;
        }
        let mut shard = self.shard(&key).lock();
        if let Some(&at) = shard.index.get(&key) {
            shard.remove_slot(at);
        }
        while shard.bytes + size > self.shard_capacity && !shard.slots.is_empty() {
            shard.evict_one();
        }
        let at = shard.slots.len();
        shard.slots.push(Slot {
            key,
            block,
            referenced: false,
        });
        shard.index.insert(key, at);
        shard.bytes += size;
    }

    /// Drops every block of a table (after the table file is deleted).
    pub fn evict_table(&self, table: u64) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            let mut at = 0;
            while at < shard.slots.len() {
                if shard.slots[at].key.0 == table {
                    shard.remove_slot(at);
                } else {
                    at += 1;
                }
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.shards.iter().fold(CacheStats::default(), |acc, s| {
            let s = s.lock();
            CacheStats {
                entries: acc.entries + s.slots.len(),
                bytes: acc.bytes + s.bytes,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sstable::block::BlockBuilder;

    fn block(bytes: usize) -> Arc<Block> {
        let mut b = BlockBuilder::new(16);
        b.add(b"k", &vec![0; bytes]);
        Arc::new(Block::new(b.finish()).unwrap())
    }

    #[test]
    fn stays_within_capacity_and_evicts_unreferenced_blocks_first() {
        let cache = BlockCache::new(16 * 1000);
        for i in 0..1000 {
            cache.insert((1, i), block(100));
            cache.get(&(1, 0)).expect("the block read every time stays");
        }
        let stats = cache.stats();
        assert!(stats.bytes <= 16 * 1000, "{stats:?}");
        assert!(stats.entries < 1000 && stats.entries > 16, "{stats:?}");
        assert!(
            cache.get(&(1, 1)).is_none(),
            "an old, unused block was evicted"
        );
        cache.insert((2, 0), block(100));
        cache.evict_table(1);
        assert_eq!(cache.stats().entries, 1);
        assert!(cache.get(&(2, 0)).is_some(), "other tables' blocks stay");
    }
}
