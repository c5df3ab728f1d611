//! Reading an SSTable: the file is memory-mapped; the index, filter and properties are
//! decoded at open; data blocks are verified, decompressed and shared through the
//! [`BlockCache`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::block::{Block, BlockIter};
use super::format::{
    block_crc, BlockHandle, Compression, Footer, TableProperties, BLOCK_TRAILER_SIZE, FOOTER_SIZE,
};
use super::index::TableIndex;
use crate::bloom;
use crate::cache::BlockCache;
use crate::coding::Reader;
use crate::error::{corruption, io_error, Error, Result};
use wal::fs::{FileBytes, FileSystem};

/// Largest block a table may claim (a sanity bound for decompression).
const MAX_BLOCK_SIZE: u64 = 64 << 20;

pub struct Table {
    id: u64,
    path: PathBuf,
    bytes: FileBytes,
    index: TableIndex,
    filter: Vec<u8>,
    properties: TableProperties,
    cache: Arc<BlockCache>,
}

impl Table {
    /// Opens table file `path`; `id` names its blocks in the shared cache.
    pub fn open(
        fs: &dyn FileSystem,
        path: &Path,
        id: u64,
        cache: Arc<BlockCache>,
    ) -> Result<Arc<Table>> {
        let bytes = fs
            .map(path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        let file = TableFile {
            path,
            bytes: &bytes,
        };
        let footer_at = bytes.len().checked_sub(FOOTER_SIZE).ok_or_else(|| {
            file.corrupt(format!("{} bytes is too short for an SSTable", bytes.len()))
        })?;
        let footer = Footer::decode(&bytes[footer_at..]).map_err(|e| file.corrupt(e))?;
        let index = TableIndex::decode(file.read_block(footer.index)?)
            .map_err(|e| file.corrupt(format!("index: {e}")))?;
        let filter = file.read_raw(footer.filter)?;
        let properties = TableProperties::decode(&file.read_raw(footer.properties)?)
            .ok_or_else(|| file.corrupt("malformed properties"))?;
        Ok(Arc::new(Table {
            id,
            path: path.to_path_buf(),
            bytes,
            index,
            filter,
            properties,
            cache,
        }))
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn properties(&self) -> &TableProperties {
        &self.properties
    }

    pub fn file_size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// False when the bloom filter proves the table holds no entry of the row whose
    /// prefix has this [`bloom::hash64`].
    pub fn may_contain_row(&self, row_hash: u64) -> bool {
        bloom::may_contain(&self.filter, row_hash)
    }

    /// `(last key, end offset)` of every data block, in order: where the table's bytes
    /// lie along its keys.
    pub fn block_boundaries(&self) -> Vec<(Vec<u8>, u64)> {
        (0..self.index.len())
            .map(|i| {
                let handle = self.index.handle(i);
                (self.index.key(i).to_vec(), handle.offset + handle.size)
            })
            .collect()
    }

    pub fn iter(self: &Arc<Self>) -> TableIter {
        TableIter {
            table: self.clone(),
            block: 0,
            data: None,
        }
    }

    fn file(&self) -> TableFile<'_> {
        TableFile {
            path: &self.path,
            bytes: &self.bytes,
        }
    }

    fn corrupt(&self, detail: impl Into<String>) -> Error {
        self.file().corrupt(detail)
    }

    /// A data block, from the cache or the file.
    fn data_block(&self, handle: BlockHandle) -> Result<Arc<Block>> {
        let key = (self.id, handle.offset);
        if let Some(block) = self.cache.get(&key) {
            return Ok(block);
        }
        let block = Arc::new(self.file().read_block(handle)?);
        self.cache.insert(key, block.clone());
        Ok(block)
    }
}

/// The bytes of a table file, and how to read verified blocks from them.
struct TableFile<'a> {
    path: &'a Path,
    bytes: &'a [u8],
}

impl TableFile<'_> {
    fn corrupt(&self, detail: impl Into<String>) -> Error {
        corruption(self.path, detail)
    }

    /// A block's stored bytes after checking bounds, trailer and checksum; decompressed.
    fn read_raw(&self, handle: BlockHandle) -> Result<Vec<u8>> {
        let end = handle
            .offset
            .checked_add(handle.size)
            .and_then(|e| e.checked_add(BLOCK_TRAILER_SIZE as u64))
            .filter(|&e| {
                e <= (self.bytes.len() - FOOTER_SIZE) as u64 && handle.size <= MAX_BLOCK_SIZE
            })
            .ok_or_else(|| self.corrupt(format!("block handle {handle:?} out of bounds")))?;
        let start = handle.offset as usize;
        let stored = &self.bytes[start..start + handle.size as usize];
        let trailer = &self.bytes[start + handle.size as usize..end as usize];
        let crc = u32::from_le_bytes([trailer[1], trailer[2], trailer[3], trailer[4]]);
        if block_crc(stored, trailer[0]) != crc {
            return Err(self.corrupt(format!(
                "checksum mismatch in block at offset {}",
                handle.offset
            )));
        }
        match trailer[0] {
            c if c == Compression::None as u8 => Ok(stored.to_vec()),
            c if c == Compression::Zstd as u8 => self.decompress(stored, handle),
            other => Err(self.corrupt(format!(
                "unknown compression {other} at offset {}",
                handle.offset
            ))),
        }
    }

    fn decompress(&self, stored: &[u8], handle: BlockHandle) -> Result<Vec<u8>> {
        let mut r = Reader::new(stored);
        let raw_len = r
            .varint()
            .filter(|&n| n <= MAX_BLOCK_SIZE)
            .ok_or_else(|| self.corrupt(format!("bad block length at offset {}", handle.offset)))?;
        let frame = &stored[stored.len() - r.remaining()..];
        let raw = super::zstd_context::decompress(frame, raw_len as usize).map_err(|e| {
            self.corrupt(format!(
                "block at offset {} does not decompress: {e}",
                handle.offset
            ))
        })?;
        if raw.len() as u64 != raw_len {
            return Err(self.corrupt(format!(
                "block at offset {} has the wrong length",
                handle.offset
            )));
        }
        Ok(raw)
    }

    fn read_block(&self, handle: BlockHandle) -> Result<Block> {
        let raw = self.read_raw(handle)?;
        Block::new(raw).map_err(|e| self.corrupt(format!("block at offset {}: {e}", handle.offset)))
    }
}

/// A cursor over a table's entries in key order.
pub struct TableIter {
    table: Arc<Table>,
    /// The index position of the data block `data` reads.
    block: usize,
    data: Option<BlockIter>,
}

impl TableIter {
    pub fn valid(&self) -> bool {
        self.data.as_ref().is_some_and(BlockIter::valid)
    }

    pub fn key(&self) -> &[u8] {
        self.data.as_ref().map_or(&[], BlockIter::key)
    }

    pub fn value(&self) -> &[u8] {
        self.data.as_ref().map_or(&[], BlockIter::value)
    }

    pub fn seek_to_first(&mut self) -> Result<()> {
        self.load_data_block(0, |it| it.seek_to_first())?;
        self.skip_exhausted_blocks()
    }

    /// Positions at the first entry with key `>= target`.
    pub fn seek(&mut self, target: &[u8]) -> Result<()> {
        let block = self.table.index.block_for(target);
        self.load_data_block(block, |it| it.seek(target))?;
        self.skip_exhausted_blocks()
    }

    /// The key of the last entry with key `< target`, if any. Moves the cursor.
    pub fn last_key_before(&mut self, target: &[u8]) -> Result<Option<Vec<u8>>> {
        let block = self.table.index.block_for(target);
        self.load_data_block(block, |it| it.seek(target))?;
        let path = &self.table.path;
        if let Some(data) = self.data.as_mut() {
            if let Some(key) = data
                .last_key_before(target)
                .map_err(|e| corruption(path, e))?
            {
                return Ok(Some(key));
            }
        }
        // Not in the block that would hold `target`: it is the previous block's last
        // key, which the index holds.
        Ok(block
            .checked_sub(1)
            .map(|previous| self.table.index.key(previous).to_vec()))
    }

    pub fn advance(&mut self) -> Result<()> {
        if let Some(data) = self.data.as_mut() {
            data.advance()
                .map_err(|e| corruption(&self.table.path, e))?;
        }
        self.skip_exhausted_blocks()
    }

    fn skip_exhausted_blocks(&mut self) -> Result<()> {
        while self.data.as_ref().is_some_and(|d| !d.valid()) {
            self.load_data_block(self.block + 1, |it| it.seek_to_first())?;
        }
        Ok(())
    }

    /// Reads block `block` of the index (none past the end) and positions in it.
    fn load_data_block(
        &mut self,
        block: usize,
        position: impl FnOnce(&mut BlockIter) -> Result<(), &'static str>,
    ) -> Result<()> {
        self.block = block;
        if block >= self.table.index.len() {
            self.data = None;
            return Ok(());
        }
        let handle = self.table.index.handle(block);
        // Reuse the cursor's key buffer: a scan moves through thousands of blocks.
        let mut it = match self.data.take() {
            Some(old) => old.reset(self.table.data_block(handle)?),
            None => BlockIter::new(self.table.data_block(handle)?),
        };
        position(&mut it).map_err(|e| {
            self.table
                .corrupt(format!("block at offset {}: {e}", handle.offset))
        })?;
        self.data = Some(it);
        Ok(())
    }
}
