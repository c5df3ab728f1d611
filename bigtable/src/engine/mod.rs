//! The storage engine of one tablet server: named tables of multi-version cells, each an
//! LSM tree (memtable, frozen memtables, leveled SSTables), sharing one commit log, one
//! manifest and one block cache.
//!
//! Write: row lock -> sequence numbers -> commit-log record (group commit) -> memtable.
//! Read: a snapshot (visible sequence number + the table's current version) merged over
//! its memtables and SSTables. Flushes and compactions run in a background thread (or
//! inline, see [`EngineOptions::background_maintenance`]).

mod log_record;
mod maintenance;
mod options;
mod read;
mod split;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::cache::BlockCache;
use crate::commit::{CommitTracker, RowLocks};
use crate::error::{io_error, Error, Result};
use crate::key::SeqNo;
use crate::manifest::{Edit, Manifest, ManifestState, TreeId};
use crate::memtable::Memtable;
use crate::schema::TableSchema;
use crate::tablet::TabletRange;
use crate::version::TreeVersion;
use wal::fs::SharedFs;
use wal::{Wal, WalOptions};

pub use options::EngineOptions;
pub use read::{ReadRequest, RowRange, RowSet, RowStream, TableSnapshot};
pub use write::{Durability, ReadModifyWrite, RowCheck, RowMutations, RowRead};

/// Longest row key accepted.
pub const MAX_ROW_BYTES: usize = 64 << 10;

pub struct Engine {
    core: Arc<Core>,
    worker: Option<JoinHandle<()>>,
}

pub(crate) struct Core {
    fs: SharedFs,
    sst_dir: PathBuf,
    options: EngineOptions,
    log: Wal,
    cache: Arc<BlockCache>,
    state: Mutex<State>,
    /// Signalled when a flush or compaction finishes (stalled writers wait on it).
    progress: Condvar,
    commits: CommitTracker,
    row_locks: RowLocks,
    snapshots: Arc<SnapshotList>,
    /// Held for the whole of a flush, compaction or schema change: one at a time.
    maintenance: Mutex<Manifest>,
    wakeup: Mutex<Wakeup>,
    wakeup_signal: Condvar,
    stats: Mutex<EngineStats>,
}

#[derive(Default)]
struct Wakeup {
    work: bool,
    shutdown: bool,
    failure: Option<String>,
}

struct State {
    /// Table name -> its tablets, in row order.
    tables: BTreeMap<String, Tablets>,
    /// Every tablet of every table.
    trees: BTreeMap<TreeId, Tree>,
    next_id: u64,
}

/// A table's tablets in row order, with their first rows for routing.
#[derive(Default)]
struct Tablets {
    ids: Vec<TreeId>,
    /// `starts[i]` is the first row of tablet `ids[i]` (kept by `State::sort_tablets`).
    starts: Vec<Vec<u8>>,
}

impl State {
    fn tablets(&self, name: &str) -> Result<&[TreeId]> {
        self.tables
            .get(name)
            .map(|t| t.ids.as_slice())
            .ok_or_else(|| Error::NotFound(format!("table {name}")))
    }

    /// The tablet of `name` that holds `row`.
    fn route(&self, name: &str, row: &[u8]) -> Result<(TreeId, &Tree)> {
        let tablets = self
            .tables
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("table {name}")))?;
        let at = match tablets.ids.len() {
            1 => 0,
            _ => tablets
                .starts
                .partition_point(|start| start.as_slice() <= row)
                .saturating_sub(1),
        };
        let id = *tablets
            .ids
            .get(at)
            .ok_or_else(|| Error::NotFound(format!("table {name}")))?;
        let tree = self
            .trees
            .get(&id)
            .ok_or_else(|| Error::NotFound(format!("table {name}")))?;
        Ok((id, tree))
    }

    /// Puts a table's tablets back in row order (after tablets came or went).
    fn sort_tablets(&mut self, name: &str) {
        let trees = &self.trees;
        if let Some(tablets) = self.tables.get_mut(name) {
            let start = |id: &TreeId| {
                trees
                    .get(id)
                    .map(|t| t.range.start.clone())
                    .unwrap_or_default()
            };
            tablets.ids.sort_by_key(start);
            tablets.starts = tablets.ids.iter().map(start).collect();
        }
    }
}

/// One tablet: a row range of a table, with its own LSM tree.
struct Tree {
    name: String,
    schema: Arc<TableSchema>,
    version: Arc<TreeVersion>,
    flushed_seq: SeqNo,
    /// Per level, the last row compacted out of it (compactions go round the level).
    compact_pointers: Vec<Vec<u8>>,
    range: TabletRange,
    /// Being split: writers wait until its halves replace it.
    splitting: bool,
}

/// Counters of the work the engine did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Bytes of row keys, column names and values users wrote.
    pub user_bytes: u64,
    pub flushes: u64,
    pub flush_bytes: u64,
    pub compactions: u64,
    pub compaction_bytes: u64,
    /// Entries compactions dropped as garbage.
    pub dropped_entries: u64,
    /// Writes delayed or stalled because compaction was behind.
    pub throttled_writes: u64,
    /// Tablets split in two.
    pub splits: u64,
}

/// Levels of one table, for observability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelSummary {
    pub level: usize,
    pub files: usize,
    pub bytes: u64,
}

/// Sequence numbers of live snapshots; compactions keep what they may still read.
#[derive(Default)]
pub(crate) struct SnapshotList {
    /// `(sequence number, open snapshots at it)`, oldest first. Few snapshots are open at
    /// once, so a vector beats a map here (this is on every read's path).
    live: Mutex<Vec<(SeqNo, usize)>>,
}

pub(crate) struct SnapshotGuard {
    list: Arc<SnapshotList>,
    seq: SeqNo,
}

impl SnapshotList {
    fn register(self: &Arc<Self>, seq: SeqNo) -> SnapshotGuard {
        let mut live = self.live.lock();
        // Snapshots are taken at a non-decreasing sequence number: usually the last.
        match live.iter().rposition(|&(s, _)| s <= seq) {
            Some(at) if live[at].0 == seq => live[at].1 += 1,
            Some(at) => live.insert(at + 1, (seq, 1)),
            None => live.insert(0, (seq, 1)),
        }
        SnapshotGuard {
            list: self.clone(),
            seq,
        }
    }

    fn oldest(&self) -> Option<SeqNo> {
        self.live.lock().first().map(|&(s, _)| s)
    }
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        let mut live = self.list.live.lock();
        if let Some(at) = live.iter().rposition(|&(s, _)| s == self.seq) {
            live[at].1 -= 1;
            if live[at].1 == 0 {
                live.remove(at);
            }
        }
    }
}

impl Engine {
    /// Opens the engine in `dir`, creating it if empty: reads the manifest, opens the
    /// SSTables it lists, deletes files it does not list, and replays the commit log.
    pub fn open(fs: SharedFs, dir: impl AsRef<Path>, options: EngineOptions) -> Result<Engine> {
        let dir = dir.as_ref();
        let sst_dir = dir.join("sst");
        fs.create_dir_all(&sst_dir)
            .map_err(io_error(format!("creating {}", sst_dir.display())))?;
        let (manifest, manifest_state) =
            Manifest::open(fs.clone(), dir, options.manifest_rotation_records)?;
        let cache = BlockCache::new(options.block_cache_bytes);
        let state = maintenance::open_trees(&fs, &sst_dir, &cache, &manifest_state, &|| {
            options.new_memtable()
        })?;
        maintenance::remove_unlisted_tables(&fs, &sst_dir, &state)?;
        let log_options = WalOptions::default()
            .with_sync(options.sync)
            .with_segment_size(options.log_segment_bytes);
        let mut recovery = Wal::recover(fs.clone(), dir.join("log"), log_options, 0)?;
        let mut state = state;
        let mut last_seq = manifest_state.last_seq;
        while let Some((lsn, payload)) = recovery.next_record()? {
            last_seq = last_seq.max(write::replay(&mut state, lsn, &payload, dir)?);
        }
        let (log, report) = recovery.finish()?;
        tracing::info!(
            records = report.records_replayed,
            torn_tail = report.torn_tail.is_some(),
            "engine opened"
        );
        let background = options.background_maintenance;
        let core = Arc::new(Core {
            fs,
            sst_dir,
            cache,
            log,
            state: Mutex::new(state),
            progress: Condvar::new(),
            commits: CommitTracker::new(last_seq),
            row_locks: RowLocks::default(),
            snapshots: Arc::default(),
            maintenance: Mutex::new(manifest),
            wakeup: Mutex::new(Wakeup::default()),
            wakeup_signal: Condvar::new(),
            stats: Mutex::new(EngineStats::default()),
            options,
        });
        core.freeze_full_memtables();
        let worker = if background {
            let core = core.clone();
            let handle = std::thread::Builder::new()
                .name("bigtable-maintenance".into())
                .spawn(move || core.maintenance_loop())
                .map_err(io_error("starting the maintenance thread"))?;
            Some(handle)
        } else {
            None
        };
        let engine = Engine { core, worker };
        engine.core.request_maintenance()?;
        Ok(engine)
    }

    /// Creates a table with the given column families.
    pub fn create_table(&self, name: &str, schema: TableSchema) -> Result<()> {
        self.create_table_with_splits(name, schema, &[])
    }

    /// Creates a table already split into tablets at `splits` (row keys; each starts a
    /// tablet).
    pub fn create_table_with_splits(
        &self,
        name: &str,
        schema: TableSchema,
        splits: &[Vec<u8>],
    ) -> Result<()> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("table name is empty".into()));
        }
        let mut starts: Vec<Vec<u8>> = splits.iter().filter(|s| !s.is_empty()).cloned().collect();
        starts.sort();
        starts.dedup();
        starts.insert(0, Vec::new());
        let mut manifest = self.core.maintenance.lock();
        let mut state = self.core.state.lock();
        if state.tables.contains_key(name) {
            return Err(Error::AlreadyExists(format!("table {name}")));
        }
        let mut edits = Vec::new();
        let mut tablets = Vec::new();
        for (i, start) in starts.iter().enumerate() {
            let tree = state.next_id;
            state.next_id += 1;
            let range = TabletRange {
                start: start.clone(),
                end: starts.get(i + 1).cloned(),
            };
            edits.push(Edit::CreateTable {
                tree,
                name: name.to_string(),
                schema: schema.clone(),
            });
            if !range.is_all() {
                edits.push(Edit::SetRange {
                    tree,
                    start: range.start.clone(),
                    end: range.end.clone(),
                });
            }
            tablets.push((tree, range));
        }
        edits.push(Edit::NextId(state.next_id));
        manifest.append(&edits)?;
        let schema = Arc::new(schema);
        for (tree, range) in &tablets {
            let mut t = Tree::new(
                name,
                TableSchema::clone(&schema),
                self.core.options.new_memtable(),
            );
            t.schema = schema.clone();
            t.range = range.clone();
            state.trees.insert(*tree, t);
        }
        let ids = tablets.into_iter().map(|(id, _)| id).collect();
        state.tables.insert(
            name.to_string(),
            Tablets {
                ids,
                starts: Vec::new(),
            },
        );
        state.sort_tablets(name);
        Ok(())
    }

    /// Replaces a table's column families (adding, dropping, or changing GC rules).
    /// Cells of a dropped family are hidden at once and removed by compactions.
    pub fn set_schema(&self, name: &str, schema: TableSchema) -> Result<()> {
        let mut manifest = self.core.maintenance.lock();
        let tablets = self.core.state.lock().tablets(name)?.to_vec();
        let edits: Vec<Edit> = tablets
            .iter()
            .map(|&tree| Edit::SetSchema {
                tree,
                schema: schema.clone(),
            })
            .collect();
        manifest.append(&edits)?;
        let schema = Arc::new(schema);
        let mut state = self.core.state.lock();
        for tree in tablets {
            if let Some(t) = state.trees.get_mut(&tree) {
                t.schema = schema.clone();
            }
        }
        Ok(())
    }

    /// Deletes a table and its files.
    pub fn drop_table(&self, name: &str) -> Result<()> {
        let mut manifest = self.core.maintenance.lock();
        let tablets = self.core.state.lock().tablets(name)?.to_vec();
        let edits: Vec<Edit> = tablets
            .iter()
            .map(|&tree| Edit::DropTable { tree })
            .collect();
        manifest.append(&edits)?;
        let mut files = std::collections::BTreeSet::new();
        {
            let mut state = self.core.state.lock();
            state.tables.remove(name);
            for tree in &tablets {
                if let Some(t) = state.trees.remove(tree) {
                    files.extend(t.version.levels.iter().flatten().map(|f| f.meta.id));
                }
            }
        }
        for id in files {
            self.core.delete_table_file(id);
        }
        drop(manifest);
        self.core.truncate_log()
    }

    pub fn schema(&self, name: &str) -> Result<TableSchema> {
        let state = self.core.state.lock();
        let (_, tree) = state.route(name, &[])?;
        Ok(TableSchema::clone(&tree.schema))
    }

    pub fn list_tables(&self) -> Vec<String> {
        self.core.state.lock().tables.keys().cloned().collect()
    }

    /// A table's tablets in row order: each one's rows and its SSTable bytes.
    pub fn tablets(&self, name: &str) -> Result<Vec<(TabletRange, u64)>> {
        let state = self.core.state.lock();
        state
            .tablets(name)?
            .iter()
            .filter_map(|id| state.trees.get(id))
            .map(|t| Ok((t.range.clone(), split::tablet_bytes(t))))
            .collect()
    }

    /// Flushes every memtable to SSTables (and waits for it).
    pub fn flush(&self) -> Result<()> {
        self.core.freeze_all();
        self.core.run_maintenance_until_idle()
    }

    /// Flushes, then merges each table's files into one sorted run at its deepest level,
    /// dropping everything no reader can see (a major compaction).
    pub fn compact_all(&self) -> Result<()> {
        self.flush()?;
        let trees: Vec<TreeId> = self.core.state.lock().trees.keys().copied().collect();
        for tree in trees {
            self.core.major_compaction(tree)?;
        }
        Ok(())
    }

    pub fn stats(&self) -> EngineStats {
        *self.core.stats.lock()
    }

    /// Bytes appended to the commit log so far.
    pub fn log_bytes(&self) -> u64 {
        self.core.log.stats().bytes
    }

    /// Commit-log fsyncs so far (one per group commit under `SyncPolicy::EveryCommit`).
    pub fn log_syncs(&self) -> u64 {
        self.core.log.stats().syncs
    }

    /// Files and bytes per level of a table, over its tablets (a file two tablets still
    /// share after a split counts once).
    pub fn levels(&self, name: &str) -> Result<Vec<LevelSummary>> {
        let state = self.core.state.lock();
        let mut levels: Vec<std::collections::BTreeMap<u64, u64>> =
            vec![Default::default(); crate::manifest::MAX_LEVELS];
        for tree in state
            .tablets(name)?
            .iter()
            .filter_map(|id| state.trees.get(id))
        {
            for (level, files) in tree.version.levels.iter().enumerate() {
                levels[level].extend(files.iter().map(|f| (f.meta.id, f.meta.size)));
            }
        }
        Ok(levels
            .into_iter()
            .enumerate()
            .map(|(level, files)| LevelSummary {
                level,
                files: files.len(),
                bytes: files.values().sum(),
            })
            .collect())
    }

    /// Waits for background flushes and compactions to finish what is pending.
    pub fn wait_for_maintenance(&self) -> Result<()> {
        self.core.run_maintenance_until_idle()
    }

    /// Stops the maintenance thread and syncs the commit log.
    pub fn close(mut self) -> Result<()> {
        self.stop_worker();
        self.core.log.sync()?;
        Ok(())
    }

    fn stop_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.core.wakeup.lock().shutdown = true;
            self.core.wakeup_signal.notify_all();
            let _ = worker.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

impl Tree {
    fn new(name: &str, schema: TableSchema, mem: Arc<Memtable>) -> Tree {
        Tree {
            name: name.to_string(),
            schema: Arc::new(schema),
            version: Arc::new(TreeVersion::new(mem)),
            flushed_seq: 0,
            compact_pointers: vec![Vec::new(); crate::manifest::MAX_LEVELS],
            range: TabletRange::all(),
            splitting: false,
        }
    }

    /// One half of a split tablet: the parent's SSTables (shared), an empty memtable.
    fn half(parent: &Tree, range: TabletRange, mem: Arc<Memtable>) -> Tree {
        let mut version = TreeVersion::new(mem);
        version.levels = parent.version.levels.clone();
        Tree {
            name: parent.name.clone(),
            schema: parent.schema.clone(),
            version: Arc::new(version),
            flushed_seq: parent.flushed_seq,
            compact_pointers: vec![Vec::new(); crate::manifest::MAX_LEVELS],
            range,
            splitting: false,
        }
    }
}

impl Core {
    /// The state as the manifest would describe it (for a new manifest generation).
    fn manifest_state(&self) -> ManifestState {
        let state = self.state.lock();
        let mut out = ManifestState {
            next_id: state.next_id,
            last_seq: self.commits.last_allocated(),
            ..ManifestState::default()
        };
        for (&id, tree) in &state.trees {
            out.trees.insert(
                id,
                crate::manifest::TreeMeta {
                    name: tree.name.clone(),
                    schema: TableSchema::clone(&tree.schema),
                    flushed_seq: tree.flushed_seq,
                    levels: tree
                        .version
                        .levels
                        .iter()
                        .map(|files| files.iter().map(|f| f.meta.clone()).collect())
                        .collect(),
                    range: tree.range.clone(),
                },
            );
        }
        out
    }

    fn failure(&self) -> Option<String> {
        self.wakeup.lock().failure.clone()
    }
}
