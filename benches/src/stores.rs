//! The stores `bt-bench` drives: our engine (one table, one family, one qualifier, one
//! version per key, so it does what a key-value store does) and fjall.

use std::path::Path;
use std::sync::Arc;

use bigtable::{Engine, EngineOptions, Mutation, ReadRequest, RowRange, RowSet, TableSchema};
use wal::fs::RealFs;
use wal::SyncPolicy;

use crate::db_bench::Store;

const TABLE: &str = "usertable";
const FAMILY: &[u8] = b"cf";

fn remove_dir(path: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Settings `bt-bench` passes to both stores (db_bench's flags of the same names).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub sync: bool,
    /// Block cache bytes (`--cache_size`).
    pub cache_bytes: usize,
    /// Memtable bytes before a flush (`--write_buffer_size`); `None`: the store's default.
    pub write_buffer_bytes: Option<usize>,
}

pub struct BigtableStore {
    engine: Engine,
}

impl BigtableStore {
    pub fn open(path: &Path, fresh: bool, tuning: Tuning) -> Result<Self, String> {
        if fresh {
            remove_dir(path)?;
        }
        let defaults = EngineOptions::default();
        let options = EngineOptions {
            sync: if tuning.sync {
                SyncPolicy::EveryCommit
            } else {
                SyncPolicy::Never
            },
            block_cache_bytes: tuning.cache_bytes,
            memtable_bytes: tuning.write_buffer_bytes.unwrap_or(defaults.memtable_bytes),
            ..defaults
        };
        let engine = Engine::open(Arc::new(RealFs), path, options).map_err(|e| e.to_string())?;
        if engine.schema(TABLE).is_err() {
            engine
                .create_table(TABLE, TableSchema::with_families(["cf"]))
                .map_err(|e| e.to_string())?;
        }
        Ok(BigtableStore { engine })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Store for BigtableStore {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let m = Mutation::SetCell {
            family: FAMILY.to_vec(),
            qualifier: Vec::new(),
            timestamp: Some(0),
            value: value.to_vec(),
        };
        self.engine
            .mutate_row(TABLE, key, &[m])
            .map_err(|e| e.to_string())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let row = self
            .engine
            .read_row(TABLE, key, None)
            .map_err(|e| e.to_string())?;
        Ok(row
            .and_then(|r| r.cells.into_iter().next())
            .map(|c| c.value))
    }

    fn scan(&self) -> Result<u64, String> {
        let snapshot = self.engine.snapshot(TABLE).map_err(|e| e.to_string())?;
        let mut n = 0;
        for row in snapshot
            .read_rows(&ReadRequest::default())
            .map_err(|e| e.to_string())?
        {
            row.map_err(|e| e.to_string())?;
            n += 1;
        }
        Ok(n)
    }

    fn seek(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let request = ReadRequest {
            rows: RowSet::range(RowRange {
                start: std::ops::Bound::Included(key.to_vec()),
                end: std::ops::Bound::Unbounded,
            }),
            limit: Some(1),
            ..ReadRequest::default()
        };
        let snapshot = self.engine.snapshot(TABLE).map_err(|e| e.to_string())?;
        let mut rows = snapshot.read_rows(&request).map_err(|e| e.to_string())?;
        rows.next()
            .transpose()
            .map(|r| r.map(|r| r.key))
            .map_err(|e| e.to_string())
    }

    fn after_fill(&self) -> Result<Option<String>, String> {
        self.engine
            .wait_for_maintenance()
            .map_err(|e| e.to_string())?;
        let stats = self.engine.stats();
        let log = self.engine.log_bytes();
        let written = log + stats.flush_bytes + stats.compaction_bytes;
        let mb = |b: u64| b as f64 / 1e6;
        Ok(Some(format!(
            "write amplification {:.2}: {:.0} MB written (log {:.0}, flushes {:.0}, compactions {:.0}) for {:.0} MB of keys and values; {} writes throttled",
            written as f64 / stats.user_bytes.max(1) as f64,
            mb(written),
            mb(log),
            mb(stats.flush_bytes),
            mb(stats.compaction_bytes),
            mb(stats.user_bytes),
            stats.throttled_writes
        )))
    }
}

/// fjall, with each write handed to the OS before it returns (as db_bench's LevelDB and
/// our engine do without `--sync`), or fsynced with `--sync`.
pub struct FjallStore {
    keyspace: fjall::Keyspace,
    items: fjall::PartitionHandle,
    persist: fjall::PersistMode,
}

impl FjallStore {
    pub fn open(path: &Path, fresh: bool, tuning: Tuning) -> Result<Self, String> {
        if fresh {
            remove_dir(path)?;
        }
        let keyspace = fjall::Config::new(path)
            .cache_size(tuning.cache_bytes as u64)
            .open()
            .map_err(|e| e.to_string())?;
        let mut partition = fjall::PartitionCreateOptions::default();
        if let Some(bytes) = tuning.write_buffer_bytes {
            partition = partition.max_memtable_size(u32::try_from(bytes).unwrap_or(u32::MAX));
        }
        let items = keyspace
            .open_partition("usertable", partition)
            .map_err(|e| e.to_string())?;
        let persist = if tuning.sync {
            fjall::PersistMode::SyncData
        } else {
            fjall::PersistMode::Buffer
        };
        Ok(FjallStore {
            keyspace,
            items,
            persist,
        })
    }
}

impl Store for FjallStore {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.items.insert(key, value).map_err(|e| e.to_string())?;
        self.keyspace
            .persist(self.persist)
            .map_err(|e| e.to_string())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.items
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| e.to_string())
    }

    fn scan(&self) -> Result<u64, String> {
        let mut n = 0;
        for item in self.items.iter() {
            item.map_err(|e| e.to_string())?;
            n += 1;
        }
        Ok(n)
    }

    fn seek(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self.items.range(key.to_vec()..).next() {
            None => Ok(None),
            Some(item) => item
                .map(|(k, _)| Some(k.to_vec()))
                .map_err(|e| e.to_string()),
        }
    }
}
