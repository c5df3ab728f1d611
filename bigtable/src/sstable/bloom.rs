//! A bloom filter over the row keys of one SSTable, so point reads skip tables that
//! cannot hold the row. Layout: the bit array, then one byte with the number of probes.

/// A stable 64-bit hash (FNV-1a, then a SplitMix64 finaliser to spread the bits).
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Builds a filter from key hashes, `bits_per_key` bits each.
pub fn build(hashes: &[u64], bits_per_key: usize) -> Vec<u8> {
    let probes = ((bits_per_key as f64) * std::f64::consts::LN_2)
        .round()
        .clamp(1.0, 30.0) as u8;
    let bits = (hashes.len() * bits_per_key).max(64);
    let bytes = bits.div_ceil(8);
    let bits = bytes * 8;
    let mut filter = vec![0u8; bytes + 1];
    for &h in hashes {
        for i in probe_positions(h, probes, bits) {
            filter[i / 8] |= 1 << (i % 8);
        }
    }
    filter[bytes] = probes;
    filter
}

/// Whether the key with this hash may be in the set. Malformed filters say yes.
pub fn may_contain(filter: &[u8], hash: u64) -> bool {
    let Some((&probes, bitmap)) = filter.split_last() else {
        return true;
    };
    if bitmap.is_empty() || probes == 0 || probes > 30 {
        return true;
    }
    let bits = bitmap.len() * 8;
    probe_positions(hash, probes, bits).all(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
}

/// Double hashing: probe i is `h1 + i * h2` modulo the bit count.
fn probe_positions(hash: u64, probes: u8, bits: usize) -> impl Iterator<Item = usize> {
    let h1 = hash as u32 as u64;
    let h2 = (hash >> 32) | 1;
    (0..u64::from(probes))
        .map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % bits as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_always_found_and_false_positives_are_rare() {
        let keys: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("row{i}").into_bytes())
            .collect();
        let hashes: Vec<u64> = keys.iter().map(|k| hash64(k)).collect();
        let filter = build(&hashes, 10);
        assert!(hashes.iter().all(|&h| may_contain(&filter, h)));
        let false_positives = (0..10_000u32)
            .filter(|i| may_contain(&filter, hash64(format!("other{i}").as_bytes())))
            .count();
        assert!(
            false_positives < 200,
            "{false_positives} false positives in 10000 (expect ~1%)"
        );
    }

    #[test]
    fn malformed_filters_never_exclude() {
        assert!(may_contain(&[], 1));
        assert!(may_contain(&[0xff, 0], 1));
        assert!(may_contain(&[0, 0, 0, 99], 1));
    }
}
