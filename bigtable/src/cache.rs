//! The block cache: decoded SSTable blocks shared by every table, bounded in bytes.
//! Sharded to keep lock contention low; least-recently-used eviction within a shard.

use std::collections::{BTreeMap, HashMap};
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

#[derive(Default)]
struct Shard {
    entries: HashMap<BlockKey, (Arc<Block>, u64)>,
    by_age: BTreeMap<u64, BlockKey>,
    tick: u64,
    bytes: usize,
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
        let (block, old_tick) = shard.entries.get(key).map(|(b, t)| (b.clone(), *t))?;
        // Only a block that drifted towards the old end moves back to the new end: a hit
        // on a recently used block then costs no reordering.
        let distance = shard.tick - old_tick;
        if distance > (shard.entries.len() as u64 / 4).max(1) {
            shard.tick += 1;
            let tick = shard.tick;
            if let Some(entry) = shard.entries.get_mut(key) {
                entry.1 = tick;
            }
            shard.by_age.remove(&old_tick);
            shard.by_age.insert(tick, *key);
        }
        Some(block)
    }

    /// Inserts a block, evicting the least recently used ones beyond the capacity.
    /// A block larger than a shard's capacity is not kept.
    pub fn insert(&self, key: BlockKey, block: Arc<Block>) {
        let size = block.size();
        if size > self.shard_capacity {
            return;
        }
        let mut shard = self.shard(&key).lock();
        shard.tick += 1;
        let tick = shard.tick;
        if let Some((old, old_tick)) = shard.entries.insert(key, (block, tick)) {
            shard.bytes -= old.size();
            shard.by_age.remove(&old_tick);
        }
        shard.by_age.insert(tick, key);
        shard.bytes += size;
        while shard.bytes > self.shard_capacity {
            let Some((_, victim)) = shard.by_age.pop_first() else {
                break;
            };
            if let Some((evicted, _)) = shard.entries.remove(&victim) {
                shard.bytes -= evicted.size();
            }
        }
    }

    /// Drops every block of a table (after the table file is deleted).
    pub fn evict_table(&self, table: u64) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            let victims: Vec<(BlockKey, u64)> = shard
                .entries
                .iter()
                .filter(|(k, _)| k.0 == table)
                .map(|(k, (_, t))| (*k, *t))
                .collect();
            for (key, tick) in victims {
                if let Some((block, _)) = shard.entries.remove(&key) {
                    shard.bytes -= block.size();
                }
                shard.by_age.remove(&tick);
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.shards.iter().fold(CacheStats::default(), |acc, s| {
            let s = s.lock();
            CacheStats {
                entries: acc.entries + s.entries.len(),
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
    fn stays_within_capacity_and_evicts_the_least_recently_used() {
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
        cache.evict_table(1);
        assert_eq!(cache.stats(), CacheStats::default());
    }
}
