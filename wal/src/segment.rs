//! Segment files: `<first LSN, 20 digits>.wal`, each starting with a 32-byte header that
//! names its first LSN. Blocks are counted from the start of the file, so block 0 holds
//! the header and then fragments.

use std::path::{Path, PathBuf};

use crate::fs::FileSystem;
use crate::{Error, IoContext, Lsn, Result};

pub const SEGMENT_HEADER_SIZE: usize = 32;
const MAGIC: &[u8; 8] = b"MGSTWAL\0";
const FORMAT_VERSION: u32 = 1;
const SUFFIX: &str = ".wal";

/// The file name of the segment whose first record has `first_lsn`.
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}{SUFFIX}")
}

/// The first LSN encoded in a segment's file name, or `None` for other files.
pub fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, ordered by first LSN.
pub fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<(Lsn, PathBuf)>> {
    let names = fs
        .list(dir)
        .context(|| format!("listing {}", dir.display()))?;
    let mut segments: Vec<(Lsn, PathBuf)> = names
        .iter()
        .filter_map(|name| parse_segment_file_name(name).map(|lsn| (lsn, dir.join(name))))
        .collect();
    segments.sort();
    Ok(segments)
}

const CRC_AT: usize = SEGMENT_HEADER_SIZE - 4;

/// `magic (8) | version u32 | reserved (4) | first_lsn u64 | reserved (4) | crc32 of bytes 0..28`.
pub fn encode_header(first_lsn: Lsn) -> [u8; SEGMENT_HEADER_SIZE] {
    let mut h = [0u8; SEGMENT_HEADER_SIZE];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&h[..CRC_AT]);
    h[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a header; the error says what is wrong with it.
pub fn decode_header(bytes: &[u8]) -> Result<Lsn, String> {
    let h: &[u8; SEGMENT_HEADER_SIZE] = bytes
        .get(..SEGMENT_HEADER_SIZE)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("header is {} of {SEGMENT_HEADER_SIZE} bytes", bytes.len()))?;
    let stored_crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    if crc32fast::hash(&h[..CRC_AT]) != stored_crc {
        return Err("header checksum mismatch".into());
    }
    if &h[..8] != MAGIC {
        return Err("not a log segment (bad magic)".into());
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&h[16..24]);
    Ok(u64::from_le_bytes(lsn))
}

/// Reports a damaged segment as corruption.
pub fn corruption(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_files_are_ignored() {
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("LOCK"), None);
        assert_eq!(parse_segment_file_name("12.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000001x.wal"), None);
    }

    #[test]
    fn header_round_trips_and_rejects_any_flipped_bit() {
        let h = encode_header(1234);
        assert_eq!(decode_header(&h), Ok(1234));
        for bit in 0..(SEGMENT_HEADER_SIZE * 8) {
            let mut bad = h;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_header(&bad).is_err(),
                "bit {bit} flip went unnoticed"
            );
        }
        assert!(decode_header(&h[..10]).is_err());
    }
}
