//! Record framing: a log file is a sequence of 32 KiB blocks; a record is written as one
//! or more fragments, each `crc32 | length | type | payload`, never crossing a block.
//! See `docs/wal-format.md`.

/// Size of a block. Fragments never span a block boundary.
pub const BLOCK_SIZE: usize = 32 * 1024;
/// `crc32 (4) | length (2) | type (1)`.
pub const FRAGMENT_HEADER_SIZE: usize = 7;

/// Where a fragment sits within its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FragmentType {
    Full = 1,
    First = 2,
    Middle = 3,
    Last = 4,
}

impl FragmentType {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Full),
            2 => Some(Self::First),
            3 => Some(Self::Middle),
            4 => Some(Self::Last),
            _ => None,
        }
    }
}

/// The checksum stored in a fragment header: CRC32 (Castagnoli is not needed; crc32fast's
/// IEEE polynomial is hardware-accelerated) over the type byte followed by the payload.
pub fn fragment_crc(ty: FragmentType, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[ty as u8]);
    hasher.update(payload);
    hasher.finalize()
}

/// A decoded fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    pub crc: u32,
    pub len: usize,
    pub ty: u8,
}

impl FragmentHeader {
    pub fn decode(bytes: &[u8; FRAGMENT_HEADER_SIZE]) -> Self {
        FragmentHeader {
            crc: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            len: u16::from_le_bytes([bytes[4], bytes[5]]) as usize,
            ty: bytes[6],
        }
    }
}

/// Frames records into fragments, tracking the position inside the current block.
#[derive(Debug, Clone)]
pub struct RecordFramer {
    block_offset: usize,
}

impl RecordFramer {
    /// A framer for a file currently `file_len` bytes long.
    pub fn at_file_offset(file_len: u64) -> Self {
        RecordFramer {
            block_offset: (file_len % BLOCK_SIZE as u64) as usize,
        }
    }

    /// Appends `payload`, framed, to `out`; returns the number of bytes appended.
    pub fn frame(&mut self, payload: &[u8], out: &mut Vec<u8>) -> usize {
        let start = out.len();
        let mut rest = payload;
        let mut first = true;
        loop {
            let left_in_block = BLOCK_SIZE - self.block_offset;
            if left_in_block < FRAGMENT_HEADER_SIZE {
                out.resize(out.len() + left_in_block, 0);
                self.block_offset = 0;
            }
            let room = BLOCK_SIZE - self.block_offset - FRAGMENT_HEADER_SIZE;
            let n = rest.len().min(room);
            let last = n == rest.len();
            let ty = match (first, last) {
                (true, true) => FragmentType::Full,
                (true, false) => FragmentType::First,
                (false, false) => FragmentType::Middle,
                (false, true) => FragmentType::Last,
            };
            let (chunk, tail) = rest.split_at(n);
            out.extend_from_slice(&fragment_crc(ty, chunk).to_le_bytes());
            out.extend_from_slice(&(n as u16).to_le_bytes());
            out.push(ty as u8);
            out.extend_from_slice(chunk);
            self.block_offset += FRAGMENT_HEADER_SIZE + n;
            rest = tail;
            first = false;
            if last {
                return out.len() - start;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_record_is_one_full_fragment() {
        let mut out = Vec::new();
        let n = RecordFramer::at_file_offset(0).frame(b"hello", &mut out);
        assert_eq!(n, FRAGMENT_HEADER_SIZE + 5);
        let header = FragmentHeader::decode(out[..7].try_into().unwrap());
        assert_eq!(header.ty, FragmentType::Full as u8);
        assert_eq!(header.len, 5);
        assert_eq!(header.crc, fragment_crc(FragmentType::Full, b"hello"));
    }

    #[test]
    fn a_record_crossing_blocks_is_split_and_pads_short_block_tails() {
        let mut framer = RecordFramer::at_file_offset((BLOCK_SIZE - 3) as u64);
        let mut out = Vec::new();
        framer.frame(&vec![7u8; BLOCK_SIZE], &mut out);
        assert_eq!(
            &out[..3],
            &[0, 0, 0],
            "a tail shorter than a header is zero padding"
        );
        let first = FragmentHeader::decode(out[3..10].try_into().unwrap());
        assert_eq!(first.ty, FragmentType::First as u8);
        assert_eq!(first.len, BLOCK_SIZE - FRAGMENT_HEADER_SIZE);
        let second_at = 3 + BLOCK_SIZE;
        let second = FragmentHeader::decode(out[second_at..second_at + 7].try_into().unwrap());
        assert_eq!(second.ty, FragmentType::Last as u8);
        assert_eq!(second.len, FRAGMENT_HEADER_SIZE);
    }
}
