//! Writing an SSTable: data blocks, then the row-key bloom filter, the properties, the
//! index (last key of each data block -> its handle), and the footer.

use std::path::{Path, PathBuf};

use super::block::BlockBuilder;
use super::format::{block_crc, BlockHandle, Compression, Footer, TableProperties};
use crate::bloom;
use crate::coding::put_varint;
use crate::error::{io_error, Result};
use crate::key::{row_prefix_len, InternalKey};
use wal::fs::{FileSystem, WritableFile};

/// How tables are written.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// Target uncompressed size of a data block.
    pub block_size: usize,
    pub restart_interval: usize,
    /// zstd level, or `None` for no compression.
    pub zstd_level: Option<i32>,
    pub bloom_bits_per_key: usize,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            block_size: 4096,
            restart_interval: 16,
            zstd_level: Some(1),
            bloom_bits_per_key: 10,
        }
    }
}

pub struct TableBuilder {
    path: PathBuf,
    file: Box<dyn WritableFile>,
    options: TableOptions,
    data: BlockBuilder,
    index: BlockBuilder,
    row_hashes: Vec<u64>,
    last_row: Vec<u8>,
    props: TableProperties,
    scratch: Vec<u8>,
}

impl TableBuilder {
    pub fn create(fs: &dyn FileSystem, path: &Path, options: TableOptions) -> Result<Self> {
        let file = fs
            .create(path)
            .map_err(io_error(format!("creating {}", path.display())))?;
        Ok(TableBuilder {
            path: path.to_path_buf(),
            file,
            data: BlockBuilder::new(options.restart_interval),
            index: BlockBuilder::new(1),
            options,
            row_hashes: Vec::new(),
            last_row: Vec::new(),
            props: TableProperties::default(),
            scratch: Vec::new(),
        })
    }

    /// Adds an entry; keys must be well-formed internal keys in strictly increasing order.
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.props.entries == 0 {
            self.props.smallest_key = key.to_vec();
        }
        if let Some(prefix) = row_prefix_len(key).map(|n| &key[..n]) {
            if self.props.entries == 0 || prefix != self.last_row.as_slice() {
                self.row_hashes.push(bloom::hash64(prefix));
                self.last_row.clear();
                self.last_row.extend_from_slice(prefix);
            }
        }
        if let Some(k) = InternalKey::decode(key) {
            self.props.max_seq = self.props.max_seq.max(k.seq);
        }
        self.props.entries += 1;
        self.props.raw_bytes += (key.len() + value.len()) as u64;
        self.data.add(key, value);
        if self.data.estimated_size() >= self.options.block_size {
            self.flush_data_block()?;
        }
        Ok(())
    }

    pub fn entries(&self) -> u64 {
        self.props.entries
    }

    /// Bytes written so far (a lower bound of the finished size).
    pub fn file_size(&self) -> u64 {
        self.file.len()
    }

    fn flush_data_block(&mut self) -> Result<()> {
        if self.data.is_empty() {
            return Ok(());
        }
        let last_key = self.data.last_key().to_vec();
        let block = self.data.finish();
        let handle = self.write_block(&block, self.options.zstd_level)?;
        self.scratch.clear();
        handle.encode_into(&mut self.scratch);
        let value = std::mem::take(&mut self.scratch);
        self.index.add(&last_key, &value);
        self.scratch = value;
        Ok(())
    }

    /// Writes a block (compressed when that saves at least an eighth) and its trailer.
    fn write_block(&mut self, raw: &[u8], zstd_level: Option<i32>) -> Result<BlockHandle> {
        let compressed = zstd_level.and_then(|level| {
            let frame = super::zstd_context::compress(raw, level)?;
            let mut stored = Vec::with_capacity(frame.len() + 5);
            put_varint(&mut stored, raw.len() as u64);
            stored.extend_from_slice(&frame);
            (stored.len() < raw.len() - raw.len() / 8).then_some(stored)
        });
        let (stored, compression) = match &compressed {
            Some(c) => (c.as_slice(), Compression::Zstd),
            None => (raw, Compression::None),
        };
        let handle = BlockHandle {
            offset: self.file.len(),
            size: stored.len() as u64,
        };
        let mut trailer = [compression as u8, 0, 0, 0, 0];
        trailer[1..].copy_from_slice(&block_crc(stored, compression as u8).to_le_bytes());
        let describe = || format!("writing {}", self.path.display());
        self.file.append(stored).map_err(io_error(describe()))?;
        self.file.append(&trailer).map_err(io_error(describe()))?;
        Ok(handle)
    }

    /// Writes the metadata and footer and syncs the file. Returns its properties.
    pub fn finish(mut self) -> Result<TableProperties> {
        self.flush_data_block()?;
        self.props.largest_key = self.index.last_key().to_vec();
        let filter = bloom::build(&self.row_hashes, self.options.bloom_bits_per_key);
        let filter = self.write_block(&filter, None)?;
        let properties = self.write_block(&self.props.encode(), None)?;
        let index_block = self.index.finish();
        let index = self.write_block(&index_block, None)?;
        let footer = Footer {
            filter,
            properties,
            index,
        }
        .encode();
        let describe = format!("finishing {}", self.path.display());
        self.file
            .append(&footer)
            .map_err(io_error(describe.clone()))?;
        self.file.sync().map_err(io_error(describe))?;
        Ok(self.props)
    }
}
