//! Bloom filters over row keys, so a point read skips memtables and SSTables that cannot
//! hold its row. They are *blocked*: every probe of one key falls in the same 512-bit
//! (64-byte) block, so a lookup costs one cache miss instead of one per probe.
//!
//! Keys are hashed as their encoded row prefix (`esc(row)`, see `key.rs`), which both a
//! reader (its seek target) and a writer (the start of every internal key) have at hand.
//!
//! SSTable layout: the blocks (a multiple of 64 bytes), then one byte with the number of
//! probes. Memtables keep the same bits in atomic words ([`ConcurrentFilter`]).

use std::sync::atomic::{AtomicU64, Ordering};

const BLOCK_BYTES: usize = 64;
const BLOCK_BITS: u32 = 512;
const WORDS_PER_BLOCK: usize = BLOCK_BYTES / 8;

/// A stable 64-bit hash (FNV-1a over 8-byte words, then a SplitMix64 finaliser).
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h ^= u64::from_le_bytes(word);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    for &b in chunks.remainder() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= bytes.len() as u64;
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The filter hash of a row (of its encoded prefix).
pub fn row_hash(row: &[u8]) -> u64 {
    hash64(&crate::key::row_prefix(row))
}

fn probes_for(bits_per_key: usize) -> u8 {
    ((bits_per_key as f64) * std::f64::consts::LN_2)
        .round()
        .clamp(1.0, 30.0) as u8
}

fn blocks_for(keys: usize, bits_per_key: usize) -> usize {
    (keys * bits_per_key).div_ceil(BLOCK_BITS as usize).max(1)
}

/// The block a hash selects (from its high bits) and its probes' bit positions within
/// that block (from its low bits, by double hashing).
fn probe(hash: u64, probes: u8, blocks: usize) -> (usize, impl Iterator<Item = u32>) {
    let block = (((hash >> 32) * blocks as u64) >> 32) as usize;
    let h1 = hash as u32;
    let h2 = h1.rotate_right(17) | 1;
    let bits =
        (0..u32::from(probes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % BLOCK_BITS);
    (block, bits)
}

/// Builds an SSTable filter from key hashes, `bits_per_key` bits each.
pub fn build(hashes: &[u64], bits_per_key: usize) -> Vec<u8> {
    let probes = probes_for(bits_per_key);
    let blocks = blocks_for(hashes.len(), bits_per_key);
    let mut filter = vec![0u8; blocks * BLOCK_BYTES + 1];
    for &h in hashes {
        let (block, bits) = probe(h, probes, blocks);
        let base = block * BLOCK_BYTES;
        for bit in bits {
            filter[base + (bit / 8) as usize] |= 1 << (bit % 8);
        }
    }
    filter[blocks * BLOCK_BYTES] = probes;
    filter
}

/// Whether the key with this hash may be in an SSTable filter. Malformed filters say yes.
pub fn may_contain(filter: &[u8], hash: u64) -> bool {
    let Some((&probes, bitmap)) = filter.split_last() else {
        return true;
    };
    if bitmap.is_empty() || bitmap.len() % BLOCK_BYTES != 0 || probes == 0 || probes > 30 {
        return true;
    }
    let (block, mut bits) = probe(hash, probes, bitmap.len() / BLOCK_BYTES);
    let block = &bitmap[block * BLOCK_BYTES..(block + 1) * BLOCK_BYTES];
    bits.all(|bit| block[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
}

/// The same filter in atomic words, for a memtable that writers fill while readers
/// probe it. Sized for an expected number of keys; more keys only raise the false
/// positive rate.
pub struct ConcurrentFilter {
    words: Box<[AtomicU64]>,
    probes: u8,
}

impl ConcurrentFilter {
    pub fn new(expected_keys: usize, bits_per_key: usize) -> Self {
        let blocks = blocks_for(expected_keys, bits_per_key);
        ConcurrentFilter {
            words: (0..blocks * WORDS_PER_BLOCK)
                .map(|_| AtomicU64::new(0))
                .collect(),
            probes: probes_for(bits_per_key),
        }
    }

    /// Adds a key. Readers that learn of the write through a release/acquire pair (the
    /// commit tracker publishing its sequence number) see these bits.
    pub fn insert(&self, hash: u64) {
        let (block, bits) = probe(hash, self.probes, self.words.len() / WORDS_PER_BLOCK);
        let words = &self.words[block * WORDS_PER_BLOCK..(block + 1) * WORDS_PER_BLOCK];
        for bit in bits {
            words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
    }

    pub fn may_contain(&self, hash: u64) -> bool {
        let (block, mut bits) = probe(hash, self.probes, self.words.len() / WORDS_PER_BLOCK);
        let words = &self.words[block * WORDS_PER_BLOCK..(block + 1) * WORDS_PER_BLOCK];
        bits.all(|bit| words[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0)
    }

    pub fn memory_bytes(&self) -> usize {
        self.words.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn false_positives(contains: impl Fn(u64) -> bool) -> usize {
        (0..10_000u32)
            .filter(|i| contains(hash64(format!("other{i}").as_bytes())))
            .count()
    }

    #[test]
    fn members_are_always_found_and_false_positives_are_rare() {
        let hashes: Vec<u64> = (0..10_000u32)
            .map(|i| hash64(format!("row{i}").as_bytes()))
            .collect();
        let filter = build(&hashes, 10);
        assert!(hashes.iter().all(|&h| may_contain(&filter, h)));
        let concurrent = ConcurrentFilter::new(10_000, 10);
        hashes.iter().for_each(|&h| concurrent.insert(h));
        assert!(hashes.iter().all(|&h| concurrent.may_contain(h)));
        for fp in [
            false_positives(|h| may_contain(&filter, h)),
            false_positives(|h| concurrent.may_contain(h)),
        ] {
            assert!(fp < 250, "{fp} false positives in 10000 (expect ~1.5%)");
        }
    }

    #[test]
    fn both_forms_set_the_same_bits() {
        let hashes: Vec<u64> = (0..500u64).map(|i| hash64(&i.to_le_bytes())).collect();
        let filter = build(&hashes, 10);
        let concurrent = ConcurrentFilter::new(500, 10);
        hashes.iter().for_each(|&h| concurrent.insert(h));
        let words: Vec<u8> = concurrent
            .words
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .collect();
        assert_eq!(&filter[..filter.len() - 1], words.as_slice());
    }

    #[test]
    fn malformed_filters_never_exclude() {
        assert!(may_contain(&[], 1));
        assert!(may_contain(&[0xff, 0], 1));
        assert!(may_contain(&[0, 0, 0, 99], 1));
        assert!(may_contain(&[0; 65], 1), "zero probes");
    }
}
