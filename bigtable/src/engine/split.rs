//! Splitting tablets. A tablet whose SSTable data grows past `tablet_split_bytes` is
//! cut at a row near the middle of its data into two tablets that share its SSTables
//! (each reads only its half; compactions rewrite them apart).
//!
//! The split keeps every write: the tablet first stops taking writes (writers wait,
//! then route to the halves), its memtables are flushed so no commit-log record of it
//! is needed any more, and one manifest record replaces it by its halves. A crash
//! before that record leaves the whole tablet; after it, both halves.

use super::{Core, Tree};
use crate::error::Result;
use crate::key::key_row;
use crate::manifest::{Edit, Manifest, TreeId};

/// A tablet's share of its SSTables: the bytes of the blocks whose rows it holds (a
/// file shared with a sibling counts only in part).
pub(super) fn tablet_bytes(tree: &Tree) -> u64 {
    row_blocks(tree).iter().map(|(_, bytes)| bytes).sum()
}

/// `(last row, bytes)` of every SSTable block holding rows of the tablet, by row.
fn row_blocks(tree: &Tree) -> Vec<(Vec<u8>, u64)> {
    let mut blocks = Vec::new();
    for file in tree.version.levels.iter().flatten() {
        let whole = tree.range.contains(&file.meta.smallest_row)
            && tree.range.contains(&file.meta.largest_row);
        let mut previous_end = 0;
        for (key, end) in file.table.block_boundaries() {
            if let Some(row) = key_row(&key) {
                if whole || tree.range.contains(&row) {
                    blocks.push((row.into_owned(), end - previous_end));
                }
            }
            previous_end = end;
        }
    }
    blocks.sort();
    blocks
}

/// Where to split: just after the row at which half of the tablet's bytes lie below,
/// if that leaves rows on both sides.
fn split_point(tree: &Tree) -> Option<Vec<u8>> {
    let blocks = row_blocks(tree);
    let total: u64 = blocks.iter().map(|(_, b)| b).sum();
    let mut below = 0;
    for (row, bytes) in &blocks {
        below += bytes;
        if below * 2 >= total {
            // The smallest row after `row`: the left half keeps `row` whole.
            let mut at = row.clone();
            at.push(0);
            let inside = tree.range.contains(&at) && at > tree.range.start;
            let right_has_rows = blocks.last().is_some_and(|(last, _)| *last >= at);
            return (inside && right_has_rows).then_some(at);
        }
    }
    None
}

impl Core {
    /// A tablet due for a split and where to split it.
    pub(super) fn pick_split(&self) -> Option<(TreeId, Vec<u8>)> {
        let limit = self.options.tablet_split_bytes;
        let state = self.state.lock();
        state.trees.iter().find_map(|(&id, tree)| {
            // File sizes bound the tablet's share from above: most tablets are ruled out
            // without reading their indexes (this runs, under the lock, after every
            // flush and compaction).
            let files: u64 = tree
                .version
                .levels
                .iter()
                .flatten()
                .map(|f| f.meta.size)
                .sum();
            (files > limit && tablet_bytes(tree) > limit)
                .then(|| split_point(tree))
                .flatten()
                .map(|at| (id, at))
        })
    }

    pub(super) fn split_tablet(
        &self,
        manifest: &mut Manifest,
        tree: TreeId,
        at: Vec<u8>,
    ) -> Result<()> {
        {
            let mut state = self.state.lock();
            let Some(t) = state.trees.get_mut(&tree) else {
                return Ok(());
            };
            t.splitting = true;
            // Even when it looks empty: a writer may hold it with a sequence number
            // taken but its entries not yet inserted. The flush below waits for it.
            self.freeze_locked(t);
        }
        let result = self.finish_split(manifest, tree, &at);
        if result.is_err() {
            if let Some(t) = self.state.lock().trees.get_mut(&tree) {
                t.splitting = false;
            }
        }
        self.progress.notify_all();
        result
    }

    fn finish_split(&self, manifest: &mut Manifest, tree: TreeId, at: &[u8]) -> Result<()> {
        loop {
            let frozen = {
                let state = self.state.lock();
                state
                    .trees
                    .get(&tree)
                    .and_then(|t| t.version.frozen.first().cloned())
            };
            match frozen {
                Some(frozen) => self.flush_frozen(manifest, tree, frozen)?,
                None => break,
            }
        }
        let (left, right) = (self.alloc_id(), self.alloc_id());
        manifest.append(&[
            Edit::SplitTablet {
                parent: tree,
                left,
                right,
                at: at.to_vec(),
            },
            Edit::NextId(self.next_id()),
        ])?;
        let mut state = self.state.lock();
        let Some(parent) = state.trees.remove(&tree) else {
            return Ok(());
        };
        let (left_range, right_range) = parent.range.split(at);
        let halves = [
            (
                left,
                Tree::half(&parent, left_range, self.options.new_memtable()),
            ),
            (
                right,
                Tree::half(&parent, right_range, self.options.new_memtable()),
            ),
        ];
        if let Some(tablets) = state.tables.get_mut(&parent.name) {
            tablets.ids.retain(|&id| id != tree);
            tablets.ids.extend([left, right]);
        }
        for (id, half) in halves {
            state.trees.insert(id, half);
        }
        state.sort_tablets(&parent.name);
        self.stats.lock().splits += 1;
        tracing::debug!(table = %parent.name, tablet = tree, "split tablet into {left} and {right}");
        Ok(())
    }

    /// Whether any tablet still lists SSTable `id`.
    pub(super) fn file_in_use(&self, id: u64) -> bool {
        let state = self.state.lock();
        state
            .trees
            .values()
            .any(|t| t.version.levels.iter().flatten().any(|f| f.meta.id == id))
    }
}
