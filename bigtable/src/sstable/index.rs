//! A table's index, decoded once when the table opens: the last key and the handle of
//! every data block. A seek binary-searches an array of 8-byte *heads* (each key's 8
//! bytes after the prefix all keys share, as a big-endian integer): it is small enough to
//! stay in the CPU cache, where searching the keys themselves cost a cache miss or two
//! per probe. Full keys are compared only among blocks with equal heads.

use super::block::{common_prefix, Block, BlockIter};
use super::format::BlockHandle;

pub struct TableIndex {
    /// Length of the prefix every key shares.
    shared: usize,
    /// Every key's head.
    heads: Vec<u64>,
    /// Every block's last key, concatenated.
    keys: Vec<u8>,
    /// `keys[ends[i - 1]..ends[i]]` is block `i`'s last key.
    ends: Vec<usize>,
    handles: Vec<BlockHandle>,
}

impl TableIndex {
    /// Decodes an index block (entries: last key -> encoded handle).
    pub fn decode(block: Block) -> Result<TableIndex, &'static str> {
        let mut index = TableIndex {
            shared: 0,
            heads: Vec::new(),
            keys: Vec::new(),
            ends: Vec::new(),
            handles: Vec::new(),
        };
        let mut it = BlockIter::new(std::sync::Arc::new(block));
        it.seek_to_first()?;
        while it.valid() {
            if !index.is_empty() && it.key() <= index.key(index.len() - 1) {
                return Err("index keys out of order");
            }
            let handle = BlockHandle::decode(it.value()).ok_or("malformed block handle")?;
            index.keys.extend_from_slice(it.key());
            index.ends.push(index.keys.len());
            index.handles.push(handle);
            it.advance()?;
        }
        index.keys.shrink_to_fit();
        if let Some(last) = index.len().checked_sub(1) {
            // Keys are sorted, so the prefix the first and last share is everyone's.
            index.shared = common_prefix(index.key(0), index.key(last));
        }
        index.heads = (0..index.len())
            .map(|i| head(&index.key(i)[index.shared..]))
            .collect();
        Ok(index)
    }

    /// Number of data blocks.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The last key of block `i` (`i < len()`).
    pub fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.keys[start..self.ends[i]]
    }

    pub fn handle(&self, i: usize) -> BlockHandle {
        self.handles[i]
    }

    /// The first block that may hold a key `>= target`: the first whose last key is
    /// `>= target` (`len()` when there is none).
    pub fn block_for(&self, target: &[u8]) -> usize {
        if self.is_empty() {
            return 0;
        }
        let prefix = &self.key(0)[..self.shared];
        let n = self.shared.min(target.len());
        match target[..n].cmp(&prefix[..n]) {
            std::cmp::Ordering::Less => return 0,
            std::cmp::Ordering::Greater => return self.len(),
            // A target that is a proper prefix of the shared prefix is below every key.
            std::cmp::Ordering::Equal if n < self.shared => return 0,
            std::cmp::Ordering::Equal => {}
        }
        // A smaller head means a smaller key, a larger head a larger key; equal heads
        // need the keys.
        let t = head(&target[n..]);
        let lo = self.heads.partition_point(|&h| h < t);
        let mut hi = lo + self.heads[lo..].partition_point(|&h| h == t);
        let mut lo = lo;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// The first 8 bytes as a big-endian integer, zero-padded: heads order as the byte
/// strings do, except that strings equal in their first 8 bytes have equal heads.
fn head(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sstable::block::BlockBuilder;

    fn index(keys: &[&[u8]]) -> TableIndex {
        let mut b = BlockBuilder::new(1);
        for (i, k) in keys.iter().enumerate() {
            let mut v = Vec::new();
            BlockHandle {
                offset: i as u64 * 100,
                size: 90,
            }
            .encode_into(&mut v);
            b.add(k, &v);
        }
        TableIndex::decode(Block::new(b.finish()).unwrap()).unwrap()
    }

    #[test]
    fn finds_the_first_block_whose_last_key_is_not_below_the_target() {
        let idx = index(&[b"b", b"d", b"f"]);
        let found: Vec<usize> = [&b"a"[..], b"b", b"c", b"d", b"e", b"f", b"g"]
            .iter()
            .map(|t| idx.block_for(t))
            .collect();
        assert_eq!(found, vec![0, 0, 1, 1, 2, 2, 3]);
        assert_eq!(idx.key(1), b"d");
        assert_eq!(idx.handle(2).offset, 200);
    }

    proptest::proptest! {
        #[test]
        fn block_for_is_the_partition_point_of_the_keys(
            keys in proptest::collection::btree_set(proptest::collection::vec(proptest::prop_oneof![proptest::strategy::Just(0u8), proptest::strategy::Just(7u8), proptest::prelude::any::<u8>()], 0..14), 1..40),
            targets in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..14), 0..20),
        ) {
            let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| [b"shared/".to_vec(), k].concat()).collect();
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let idx = index(&refs);
            let extra = keys.iter().flat_map(|k| [k.clone(), k[..k.len() - 1].to_vec(), [k.as_slice(), &[0]].concat()]);
            for t in targets.into_iter().chain(extra) {
                proptest::prop_assert_eq!(idx.block_for(&t), keys.partition_point(|k| k.as_slice() < t.as_slice()), "target {:?}", t);
            }
        }
    }

    #[test]
    fn a_malformed_handle_is_an_error() {
        let mut b = BlockBuilder::new(1);
        b.add(b"k", &[0xFF]);
        assert!(TableIndex::decode(Block::new(b.finish()).unwrap()).is_err());
    }
}
