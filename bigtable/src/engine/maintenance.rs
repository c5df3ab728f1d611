//! Flushes and compactions, and the thread that runs them.
//!
//! Compaction policy: leveled, as in LevelDB. Level 0 holds flushed tables, which may
//! overlap; when it has `l0_compaction_trigger` tables they are merged with the
//! overlapping level-1 tables into level 1. Level `n >= 1` holds disjoint tables up to
//! `level1_bytes * level_multiplier^(n-1)` bytes; past that, one table (taken round
//! the level) is merged with the overlapping tables of level `n + 1`.

use std::path::Path;
use std::sync::Arc;

use super::{Core, State, Tree};
use crate::cache::BlockCache;
use crate::compaction::{compact, copy_all, table_path, Garbage, TableSink, WrittenTable};
use crate::error::{io_error, Result};
use crate::manifest::{Edit, FileMeta, Manifest, ManifestState, TreeId, MAX_LEVELS};
use crate::memtable::Memtable;
use crate::merge::{EntryCursor, MergingCursor};
use crate::sstable::Table;
use crate::tablet::TabletChain;
use crate::version::{FrozenMemtable, LevelFile, TreeVersion};
use wal::fs::SharedFs;

/// A compaction to run.
struct Job {
    tree: TreeId,
    /// `(level, file)`, newest data first.
    inputs: Vec<(usize, Arc<LevelFile>)>,
    output_level: usize,
    /// No level below the output holds rows in the inputs' range.
    bottommost: bool,
    /// The single input moves down a level without being rewritten.
    trivial_move: bool,
}

/// Builds the in-memory state from the manifest, opening every table it lists.
pub(super) fn open_trees(
    fs: &SharedFs,
    sst_dir: &Path,
    cache: &Arc<BlockCache>,
    manifest: &ManifestState,
    new_memtable: &dyn Fn() -> Arc<Memtable>,
) -> Result<State> {
    let mut state = State {
        tables: Default::default(),
        trees: Default::default(),
        next_id: manifest.next_id.max(1),
    };
    for (&id, meta) in &manifest.trees {
        let mut tree = Tree::new(&meta.name, meta.schema.clone(), new_memtable());
        tree.flushed_seq = meta.flushed_seq;
        tree.range = meta.range.clone();
        let mut version = TreeVersion::clone(&tree.version);
        for (level, files) in meta.levels.iter().enumerate() {
            for file in files {
                let path = table_path(sst_dir, file.id);
                let table = Table::open(fs.as_ref(), &path, file.id, cache.clone())?;
                version.levels[level].push(Arc::new(LevelFile {
                    meta: file.clone(),
                    table,
                }));
            }
        }
        tree.version = Arc::new(version);
        state
            .tables
            .entry(meta.name.clone())
            .or_default()
            .ids
            .push(id);
        state.trees.insert(id, tree);
    }
    let names: Vec<String> = state.tables.keys().cloned().collect();
    for name in names {
        state.sort_tablets(&name);
    }
    // Tablets of one table share its schema.
    for tablets in state.tables.values() {
        let mut shared: Option<Arc<crate::schema::TableSchema>> = None;
        for id in &tablets.ids {
            if let Some(t) = state.trees.get_mut(id) {
                match &shared {
                    Some(schema) => t.schema = schema.clone(),
                    None => shared = Some(t.schema.clone()),
                }
            }
        }
    }
    Ok(state)
}

/// Deletes table files the manifest does not list (left by a crash mid-flush or
/// mid-compaction, or by a dropped table).
pub(super) fn remove_unlisted_tables(fs: &SharedFs, sst_dir: &Path, state: &State) -> Result<()> {
    let listed: std::collections::HashSet<u64> = state
        .trees
        .values()
        .flat_map(|t| t.version.levels.iter().flatten().map(|f| f.meta.id))
        .collect();
    let names = fs
        .list(sst_dir)
        .map_err(io_error(format!("listing {}", sst_dir.display())))?;
    for name in names {
        let id = name
            .strip_suffix(".sst")
            .and_then(|n| n.parse::<u64>().ok());
        if id.is_none_or(|id| !listed.contains(&id)) {
            let path = sst_dir.join(&name);
            fs.remove(&path)
                .map_err(io_error(format!("removing {}", path.display())))?;
        }
    }
    Ok(())
}

impl Core {
    /// Freezes `mem` if it is still `tree`'s active memtable.
    pub(super) fn freeze(&self, tree: TreeId, mem: &Arc<Memtable>) {
        let mut state = self.state.lock();
        if let Some(t) = state.trees.get_mut(&tree) {
            if Arc::ptr_eq(&t.version.mem, mem) && !mem.is_empty() {
                self.freeze_locked(t);
            }
        }
    }

    /// Must be called with the state locked: sequence numbers are allocated under the
    /// same lock, so every write numbered up to the boundary went to the frozen memtable.
    pub(super) fn freeze_locked(&self, tree: &mut Tree) {
        let mut version = TreeVersion::clone(&tree.version);
        let mem = std::mem::replace(&mut version.mem, self.options.new_memtable());
        version.frozen.push(FrozenMemtable {
            mem,
            last_seq: self.commits.last_allocated(),
        });
        tree.version = Arc::new(version);
    }

    pub(super) fn freeze_all(&self) {
        let mut state = self.state.lock();
        for tree in state.trees.values_mut() {
            if !tree.version.mem.is_empty() {
                self.freeze_locked(tree);
            }
        }
    }

    pub(super) fn freeze_full_memtables(&self) {
        let mut state = self.state.lock();
        for tree in state.trees.values_mut() {
            if tree.version.mem.approximate_bytes() >= self.options.memtable_bytes {
                self.freeze_locked(tree);
            }
        }
    }

    /// Asks the maintenance thread to look for work, or does the work now when there
    /// is no thread.
    pub(super) fn request_maintenance(&self) -> Result<()> {
        if self.options.background_maintenance {
            self.wakeup.lock().work = true;
            self.wakeup_signal.notify_all();
            Ok(())
        } else {
            self.run_maintenance_until_idle()
        }
    }

    pub(super) fn maintenance_loop(&self) {
        loop {
            {
                let mut wakeup = self.wakeup.lock();
                while !wakeup.work && !wakeup.shutdown {
                    self.wakeup_signal.wait(&mut wakeup);
                }
                if wakeup.shutdown {
                    return;
                }
                wakeup.work = false;
            }
            if let Err(e) = self.run_maintenance_until_idle() {
                tracing::error!(error = %e, "flush or compaction failed; writes will stall");
                self.wakeup.lock().failure = Some(e.to_string());
                self.progress.notify_all();
                return;
            }
        }
    }

    pub(super) fn run_maintenance_until_idle(&self) -> Result<()> {
        while self.maintenance_step()? {}
        Ok(())
    }

    /// Runs one flush or compaction if one is due; returns whether it did.
    fn maintenance_step(&self) -> Result<bool> {
        let mut manifest = self.maintenance.lock();
        let flush = {
            let state = self.state.lock();
            state
                .trees
                .iter()
                .find_map(|(&id, t)| t.version.frozen.first().map(|f| (id, f.clone())))
        };
        if let Some((tree, frozen)) = flush {
            self.flush_frozen(&mut manifest, tree, frozen)?;
        } else if let Some(job) = self.pick_compaction() {
            self.run_compaction(&mut manifest, job)?;
        } else if let Some((tree, at)) = self.pick_split() {
            self.split_tablet(&mut manifest, tree, at)?;
        } else {
            return Ok(false);
        }
        if manifest.wants_rotation() {
            manifest.rotate(&self.manifest_state())?;
        }
        self.progress.notify_all();
        Ok(true)
    }

    pub(super) fn alloc_id(&self) -> u64 {
        let mut state = self.state.lock();
        let id = state.next_id;
        state.next_id += 1;
        id
    }

    pub(super) fn next_id(&self) -> u64 {
        self.state.lock().next_id
    }

    /// Opens freshly written tables, after making their directory entries durable.
    fn open_written(&self, written: Vec<WrittenTable>) -> Result<Vec<Arc<LevelFile>>> {
        if !written.is_empty() {
            self.fs
                .sync_dir(&self.sst_dir)
                .map_err(io_error(format!("syncing {}", self.sst_dir.display())))?;
        }
        written
            .into_iter()
            .map(|w| {
                let table = Table::open(self.fs.as_ref(), &w.path, w.id, self.cache.clone())?;
                let props = table.properties();
                let meta = FileMeta {
                    id: w.id,
                    size: table.file_size(),
                    entries: props.entries,
                    max_seq: props.max_seq,
                    smallest_row: w.smallest_row,
                    largest_row: w.largest_row,
                };
                Ok(Arc::new(LevelFile { meta, table }))
            })
            .collect()
    }

    pub(super) fn flush_frozen(
        &self,
        manifest: &mut Manifest,
        tree: TreeId,
        frozen: FrozenMemtable,
    ) -> Result<()> {
        self.commits.wait_visible(frozen.last_seq);
        // The memtable may hold buffered (unsynced) writes: sync the log first, so no
        // write reaches disk in a table while an earlier one could still be lost.
        self.log.sync()?;
        let mut cursor = frozen.mem.iter();
        cursor.seek_to_first();
        let mut new_id = || self.alloc_id();
        let mut sink = TableSink::new(
            self.fs.as_ref(),
            &self.sst_dir,
            &self.options.table,
            u64::MAX,
            &mut new_id,
        );
        copy_all(&mut cursor, &mut sink)?;
        let outputs = self.open_written(sink.finish()?)?;
        let mut edits: Vec<Edit> = outputs
            .iter()
            .map(|f| Edit::AddFile {
                tree,
                level: 0,
                file: f.meta.clone(),
            })
            .collect();
        edits.extend([
            Edit::Flushed {
                tree,
                seq: frozen.last_seq,
            },
            Edit::NextId(self.next_id()),
            Edit::LastSeq(frozen.last_seq),
        ]);
        manifest.append(&edits)?;
        let bytes: u64 = outputs.iter().map(|f| f.meta.size).sum();
        self.install(tree, |t, v| {
            if v.frozen
                .first()
                .is_some_and(|f| Arc::ptr_eq(&f.mem, &frozen.mem))
            {
                v.frozen.remove(0);
            }
            v.levels[0].extend(outputs);
            t.flushed_seq = t.flushed_seq.max(frozen.last_seq);
        });
        {
            let mut stats = self.stats.lock();
            stats.flushes += 1;
            stats.flush_bytes += bytes;
        }
        self.truncate_log()
    }

    /// Replaces a table's version with an edited copy.
    fn install(&self, tree: TreeId, edit: impl FnOnce(&mut Tree, &mut TreeVersion)) {
        let mut state = self.state.lock();
        if let Some(t) = state.trees.get_mut(&tree) {
            let mut version = TreeVersion::clone(&t.version);
            edit(t, &mut version);
            t.version = Arc::new(version);
        }
    }

    /// Deletes commit-log segments that only hold flushed writes.
    pub(super) fn truncate_log(&self) -> Result<()> {
        let keep_from = {
            let state = self.state.lock();
            state
                .trees
                .values()
                .filter_map(|t| t.version.min_lsn())
                .min()
                .unwrap_or_else(|| self.log.next_lsn())
        };
        self.log.truncate_before(keep_from)?;
        Ok(())
    }

    pub(super) fn delete_table_file(&self, id: u64) {
        self.cache.evict_table(id);
        let path = table_path(&self.sst_dir, id);
        if let Err(e) = self.fs.remove(&path) {
            // Harmless: the next open deletes files the manifest does not list.
            tracing::warn!(path = %path.display(), error = %e, "could not delete an obsolete table");
        }
    }

    fn level_limit(&self, level: usize) -> u64 {
        let mut limit = self.options.level1_bytes;
        for _ in 1..level {
            limit = limit.saturating_mul(self.options.level_multiplier);
        }
        limit
    }

    /// The most urgent compaction of any table, if one is due.
    fn pick_compaction(&self) -> Option<Job> {
        let mut state = self.state.lock();
        let mut best: Option<(f64, TreeId, usize)> = None;
        for (&id, tree) in &state.trees {
            let v = &tree.version;
            let mut consider = |score: f64, level: usize| {
                if score >= 1.0 && best.is_none_or(|(s, _, _)| score > s) {
                    best = Some((score, id, level));
                }
            };
            consider(
                v.levels[0].len() as f64 / self.options.l0_compaction_trigger as f64,
                0,
            );
            for level in 1..MAX_LEVELS - 1 {
                consider(
                    v.level_bytes(level) as f64 / self.level_limit(level) as f64,
                    level,
                );
            }
        }
        let (_, id, level) = best?;
        let tree = state.trees.get_mut(&id)?;
        Some(plan_compaction(id, tree, level))
    }

    fn run_compaction(&self, manifest: &mut Manifest, job: Job) -> Result<()> {
        let outputs = if job.trivial_move {
            job.inputs.iter().map(|(_, f)| f.clone()).collect()
        } else {
            self.merge_inputs(&job)?
        };
        let mut edits: Vec<Edit> = job
            .inputs
            .iter()
            .map(|(level, f)| Edit::RemoveFile {
                tree: job.tree,
                level: *level as u8,
                id: f.meta.id,
            })
            .collect();
        edits.extend(outputs.iter().map(|f| Edit::AddFile {
            tree: job.tree,
            level: job.output_level as u8,
            file: f.meta.clone(),
        }));
        edits.push(Edit::NextId(self.next_id()));
        manifest.append(&edits)?;
        let written: u64 = outputs.iter().map(|f| f.meta.size).sum();
        let output_level = job.output_level;
        self.install(job.tree, |_, v| {
            for (level, input) in &job.inputs {
                v.levels[*level].retain(|f| f.meta.id != input.meta.id);
            }
            let files = &mut v.levels[output_level];
            files.extend(outputs);
            files.sort_by(|a, b| a.meta.smallest_row.cmp(&b.meta.smallest_row));
        });
        if !job.trivial_move {
            for (_, input) in &job.inputs {
                // The other half of a split tablet may still read it.
                if !self.file_in_use(input.meta.id) {
                    self.delete_table_file(input.meta.id);
                }
            }
            let mut stats = self.stats.lock();
            stats.compactions += 1;
            stats.compaction_bytes += written;
        }
        Ok(())
    }

    /// Merges the job's inputs into new tables, dropping garbage.
    fn merge_inputs(&self, job: &Job) -> Result<Vec<Arc<LevelFile>>> {
        let (schema, range) = {
            let state = self.state.lock();
            match state.trees.get(&job.tree) {
                Some(t) => (t.schema.clone(), t.range.clone()),
                None => return Ok(Vec::new()),
            }
        };
        let visible = self.commits.visible();
        let garbage = Garbage {
            oldest_snapshot: self.snapshots.oldest().map_or(visible, |s| s.min(visible)),
            bottommost: job.bottommost,
            schema: &schema,
            now: self.options.clock.now_micros(),
        };
        let sources: Vec<Box<dyn EntryCursor>> = job
            .inputs
            .iter()
            .map(|(_, f)| Box::new(f.table.iter()) as Box<dyn EntryCursor>)
            .collect();
        let merged: Box<dyn EntryCursor> = Box::new(MergingCursor::new(sources));
        // Inputs a split tablet shares with its sibling also hold the sibling's rows:
        // only this tablet's range is written out.
        let mut cursor: Box<dyn EntryCursor> = if range.is_all() {
            merged
        } else {
            Box::new(TabletChain::new(vec![(range, merged)]))
        };
        cursor.seek_to_first()?;
        let mut new_id = || self.alloc_id();
        let mut sink = TableSink::new(
            self.fs.as_ref(),
            &self.sst_dir,
            &self.options.table,
            self.options.target_file_bytes,
            &mut new_id,
        );
        let dropped = compact(cursor.as_mut(), &garbage, &mut sink)?;
        let outputs = self.open_written(sink.finish()?)?;
        self.stats.lock().dropped_entries += dropped;
        Ok(outputs)
    }

    /// Merges all of a table's SSTables into its deepest level.
    pub(super) fn major_compaction(&self, tree: TreeId) -> Result<()> {
        let mut manifest = self.maintenance.lock();
        let job = {
            let state = self.state.lock();
            let Some(t) = state.trees.get(&tree) else {
                return Ok(());
            };
            let v = &t.version;
            let mut inputs: Vec<(usize, Arc<LevelFile>)> =
                v.levels[0].iter().rev().map(|f| (0, f.clone())).collect();
            for (level, files) in v.levels.iter().enumerate().skip(1) {
                inputs.extend(files.iter().map(|f| (level, f.clone())));
            }
            let deepest = (1..MAX_LEVELS)
                .rev()
                .find(|&l| !v.levels[l].is_empty())
                .unwrap_or(1);
            Job {
                tree,
                inputs,
                output_level: deepest,
                bottommost: true,
                trivial_move: false,
            }
        };
        if job.inputs.is_empty() {
            return Ok(());
        }
        self.run_compaction(&mut manifest, job)?;
        self.progress.notify_all();
        Ok(())
    }
}

/// Whether no two of the files hold a common row.
fn rows_disjoint(files: &[Arc<LevelFile>]) -> bool {
    let mut ranges: Vec<(&[u8], &[u8])> = files
        .iter()
        .map(|f| {
            (
                f.meta.smallest_row.as_slice(),
                f.meta.largest_row.as_slice(),
            )
        })
        .collect();
    ranges.sort();
    ranges.windows(2).all(|w| w[0].1 < w[1].0)
}

/// Chooses the inputs of a compaction out of `level` of `tree`.
fn plan_compaction(id: TreeId, tree: &mut Tree, level: usize) -> Job {
    let v = &tree.version;
    let from_level: Vec<Arc<LevelFile>> = if level == 0 {
        v.levels[0].iter().rev().cloned().collect()
    } else {
        let pointer = &tree.compact_pointers[level];
        let files = &v.levels[level];
        let pick = files
            .iter()
            .find(|f| f.meta.smallest_row.as_slice() > pointer.as_slice())
            .or_else(|| files.first());
        pick.into_iter().cloned().collect()
    };
    let start = from_level
        .iter()
        .map(|f| f.meta.smallest_row.clone())
        .min()
        .unwrap_or_default();
    let end = from_level
        .iter()
        .map(|f| f.meta.largest_row.clone())
        .max()
        .unwrap_or_default();
    let next = v.overlapping(level + 1, &start, &end);
    let span_start = next
        .iter()
        .map(|f| f.meta.smallest_row.as_slice())
        .chain([start.as_slice()])
        .min()
        .unwrap_or_default()
        .to_vec();
    let span_end = next
        .iter()
        .map(|f| f.meta.largest_row.as_slice())
        .chain([end.as_slice()])
        .max()
        .unwrap_or_default()
        .to_vec();
    let bottommost =
        (level + 2..MAX_LEVELS).all(|l| v.overlapping(l, &span_start, &span_end).is_empty());
    // Files that overlap nothing in the next level, nor (from level 0) each other, move
    // down without being rewritten: a sequential load then costs no compaction I/O.
    let trivial_move = next.is_empty() && (from_level.len() == 1 || rows_disjoint(&from_level));
    if level > 0 {
        tree.compact_pointers[level] = end;
    }
    let mut inputs: Vec<(usize, Arc<LevelFile>)> =
        from_level.into_iter().map(|f| (level, f)).collect();
    inputs.extend(next.into_iter().map(|f| (level + 1, f)));
    Job {
        tree: id,
        inputs,
        output_level: level + 1,
        bottommost,
        trivial_move,
    }
}
