//! The fixed parts of an SSTable: block handles, block trailers, properties, footer.

use crate::coding::{get_u32_le, get_u64_le, put_varint, Reader};
use crate::key::SeqNo;

/// `compression (1) | crc32 (4)` after every block; the CRC covers the stored block
/// bytes and the compression byte.
pub const BLOCK_TRAILER_SIZE: usize = 5;
pub const FOOTER_SIZE: usize = 64;
pub const MAGIC: u64 = u64::from_le_bytes(*b"MGSTSST1");
/// 2: blocked bloom filter over row prefixes (1: over rows, one probe per cache line).
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

/// Where a block is: offset and size of its stored bytes (the trailer follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockHandle {
    pub offset: u64,
    pub size: u64,
}

impl BlockHandle {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.offset);
        put_varint(out, self.size);
    }

    pub fn decode(bytes: &[u8]) -> Option<BlockHandle> {
        let mut r = Reader::new(bytes);
        let handle = BlockHandle {
            offset: r.varint()?,
            size: r.varint()?,
        };
        r.is_empty().then_some(handle)
    }
}

pub fn block_crc(stored: &[u8], compression: u8) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(stored);
    h.update(&[compression]);
    h.finalize()
}

/// Facts about a table, stored in it and needed without reading its data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableProperties {
    pub entries: u64,
    pub max_seq: SeqNo,
    pub smallest_key: Vec<u8>,
    pub largest_key: Vec<u8>,
    /// Uncompressed bytes of keys and values.
    pub raw_bytes: u64,
}

impl TableProperties {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, self.entries);
        put_varint(&mut out, self.max_seq);
        put_varint(&mut out, self.raw_bytes);
        for key in [&self.smallest_key, &self.largest_key] {
            put_varint(&mut out, key.len() as u64);
            out.extend_from_slice(key);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<TableProperties> {
        let mut r = Reader::new(bytes);
        let entries = r.varint()?;
        let max_seq = r.varint()?;
        let raw_bytes = r.varint()?;
        let n = r.varint_usize()?;
        let smallest_key = r.take(n)?.to_vec();
        let n = r.varint_usize()?;
        let largest_key = r.take(n)?.to_vec();
        r.is_empty().then_some(TableProperties {
            entries,
            max_seq,
            smallest_key,
            largest_key,
            raw_bytes,
        })
    }
}

/// `filter, properties, index handles (offset u64, size u64 each) | version u32 |
/// crc32 of bytes 0..52 | magic u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub filter: BlockHandle,
    pub properties: BlockHandle,
    pub index: BlockHandle,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut f = [0u8; FOOTER_SIZE];
        let fields = [
            self.filter.offset,
            self.filter.size,
            self.properties.offset,
            self.properties.size,
            self.index.offset,
            self.index.size,
        ];
        for (i, v) in fields.iter().enumerate() {
            f[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        f[48..52].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = crc32fast::hash(&f[..52]);
        f[52..56].copy_from_slice(&crc.to_le_bytes());
        f[56..64].copy_from_slice(&MAGIC.to_le_bytes());
        f
    }

    pub fn decode(f: &[u8]) -> Result<Footer, String> {
        if f.len() != FOOTER_SIZE {
            return Err(format!(
                "footer is {} bytes, expected {FOOTER_SIZE}",
                f.len()
            ));
        }
        if get_u64_le(f, 56) != Some(MAGIC) {
            return Err("bad magic number (not an SSTable, or its end is damaged)".into());
        }
        if get_u32_le(f, 52) != Some(crc32fast::hash(&f[..52])) {
            return Err("footer checksum mismatch".into());
        }
        let version = get_u32_le(f, 48).unwrap_or(0);
        if version != FORMAT_VERSION {
            return Err(format!("unsupported SSTable format version {version}"));
        }
        let field = |i: usize| get_u64_le(f, i * 8).unwrap_or(0);
        let handle = |i: usize| BlockHandle {
            offset: field(i),
            size: field(i + 1),
        };
        Ok(Footer {
            filter: handle(0),
            properties: handle(2),
            index: handle(4),
        })
    }
}
