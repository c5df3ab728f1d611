//! Engine settings. The defaults suit a server; tests shrink the sizes to exercise
//! flushes and compactions with little data.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::sstable::TableOptions;
use wal::SyncPolicy;

#[derive(Clone)]
pub struct EngineOptions {
    /// When a write is acknowledged: after its log record is synced (`EveryCommit`),
    /// or written to the OS and synced later.
    pub sync: SyncPolicy,
    pub log_segment_bytes: u64,
    /// A table's memtable is frozen and flushed at this size. The default, 16 MiB (as
    /// fjall's; LevelDB's is 4, RocksDB's 64), keeps many tables' memtables within a
    /// budget and a point read's skiplist search short.
    pub memtable_bytes: usize,
    /// Frozen memtables per table waiting for a flush before writers stall.
    pub max_frozen_memtables: usize,
    /// Decoded SSTable blocks kept in memory, shared by all tables.
    pub block_cache_bytes: usize,
    pub table: TableOptions,
    /// Compactions cut their output into tables of about this size.
    pub target_file_bytes: u64,
    /// Size limit of level 1; level `n` may hold `level_multiplier` times level `n - 1`.
    pub level1_bytes: u64,
    pub level_multiplier: u64,
    /// Level-0 tables that start a compaction into level 1.
    pub l0_compaction_trigger: usize,
    /// Level-0 tables from which each write is delayed by a millisecond.
    pub l0_slowdown_trigger: usize,
    /// Level-0 tables at which writers wait for compaction.
    pub l0_stop_trigger: usize,
    /// Longest a writer waits for compaction before failing with `Error::Stalled`.
    pub max_write_stall: Duration,
    /// Flush and compact in a background thread. When false they run in the writing
    /// thread, deterministically (crash tests use this).
    pub background_maintenance: bool,
    /// The manifest starts a new generation (a snapshot) after this many edit records.
    pub manifest_rotation_records: u64,
    /// A tablet splits in two when its SSTables hold more than this many bytes.
    pub tablet_split_bytes: u64,
    /// `sample_row_keys` reports a key about every this many bytes.
    pub sample_bytes: u64,
    pub clock: Arc<dyn Clock>,
}

impl EngineOptions {
    /// An empty memtable, its row filter sized for the entries a full one holds (an
    /// entry takes at least about 128 bytes with its overhead).
    pub(crate) fn new_memtable(&self) -> std::sync::Arc<crate::memtable::Memtable> {
        std::sync::Arc::new(crate::memtable::Memtable::new(self.memtable_bytes / 128))
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            sync: SyncPolicy::EveryCommit,
            log_segment_bytes: 64 << 20,
            memtable_bytes: 16 << 20,
            max_frozen_memtables: 2,
            block_cache_bytes: 128 << 20,
            table: TableOptions::default(),
            target_file_bytes: 16 << 20,
            level1_bytes: 64 << 20,
            level_multiplier: 10,
            l0_compaction_trigger: 4,
            l0_slowdown_trigger: 8,
            l0_stop_trigger: 12,
            max_write_stall: Duration::from_secs(60),
            background_maintenance: true,
            sample_bytes: 16 << 20,
            tablet_split_bytes: 128 << 20,
            manifest_rotation_records: 4096,
            clock: Arc::new(SystemClock),
        }
    }
}

impl EngineOptions {
    /// Small sizes so a few kilobytes of writes cause flushes and compactions.
    pub fn tiny() -> Self {
        EngineOptions {
            log_segment_bytes: 64 << 10,
            memtable_bytes: 4 << 10,
            block_cache_bytes: 1 << 20,
            table: TableOptions {
                block_size: 256,
                ..TableOptions::default()
            },
            target_file_bytes: 4 << 10,
            level1_bytes: 16 << 10,
            level_multiplier: 4,
            sample_bytes: 1 << 10,
            tablet_split_bytes: 32 << 10,
            manifest_rotation_records: 16,
            ..EngineOptions::default()
        }
    }
}
