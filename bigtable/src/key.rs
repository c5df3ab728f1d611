//! Internal keys: every entry in the memtable and in SSTables is keyed by one byte
//! string whose plain byte order (memcmp) is the engine's order:
//! row, then family, then qualifier ascending; then timestamp and sequence number
//! descending (newest first). Row and family deletions sort before everything they
//! cover. See `docs/sstable-format.md` for the exact layout.
//!
//! ```text
//! row tombstone:    esc(row) 00 seq
//! family tombstone: esc(row) 01 esc(family) 00 seq
//! cell / column delete: esc(row) 01 esc(family) 01 esc(qualifier) ts seq kind
//! ```
//! `esc(b)` writes `b` with each 0x00 byte as `00 FF` and ends with `00 01`, so it is
//! prefix-free and keeps the byte order of `b`. `ts` and `seq` are 8 bytes big-endian,
//! inverted so larger values sort first (`ts` with its sign bit flipped first).

use std::borrow::Cow;

/// Cell timestamps: microseconds since the Unix epoch.
pub type Timestamp = i64;
/// Sequence numbers order all writes to an engine; a read at sequence `s` sees writes `<= s`.
pub type SeqNo = u64;

/// What an entry about one column does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CellKind {
    /// A cell value.
    Put = 1,
    /// Deletes the column's cells written before it whose timestamp is in the range held
    /// in the entry's value.
    DeleteCells = 2,
    /// An addend of a sum family's cell: the cell's value is the sum of the addends at
    /// its timestamp (8 bytes, big-endian, two's complement).
    Add = 3,
}

/// What an entry applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target<'a> {
    /// Deletes everything in the row written before it.
    DeleteRow,
    /// Deletes everything in one family of the row written before it.
    DeleteFamily { family: Cow<'a, [u8]> },
    /// A cell, or a deletion of some of one column's cells.
    Column {
        family: Cow<'a, [u8]>,
        qualifier: Cow<'a, [u8]>,
        timestamp: Timestamp,
        kind: CellKind,
    },
}

/// A decoded internal key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InternalKey<'a> {
    pub row: Cow<'a, [u8]>,
    pub target: Target<'a>,
    pub seq: SeqNo,
}

const TAG_END: u8 = 0x00;
const TAG_MORE: u8 = 0x01;

/// Appends the order-preserving, prefix-free form of `bytes`.
pub fn put_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.split_inclusive(|&b| b == 0) {
        out.extend_from_slice(chunk);
        if chunk.last() == Some(&0) {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Reads an escaped byte string at the start of `bytes`; returns it and its encoded length.
pub fn get_escaped(bytes: &[u8]) -> Option<(Cow<'_, [u8]>, usize)> {
    let mut i = 0;
    let mut owned: Option<Vec<u8>> = None;
    loop {
        let zero = i + bytes.get(i..)?.iter().position(|&b| b == 0)?;
        match *bytes.get(zero + 1)? {
            0x01 => {
                let value = match owned {
                    None => Cow::Borrowed(&bytes[..zero]),
                    Some(mut v) => {
                        v.extend_from_slice(&bytes[i..zero]);
                        Cow::Owned(v)
                    }
                };
                return Some((value, zero + 2));
            }
            0xFF => {
                let v = owned.get_or_insert_with(Vec::new);
                v.extend_from_slice(&bytes[i..=zero]);
                i = zero + 2;
            }
            _ => return None,
        }
    }
}

fn put_desc(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&(!v).to_be_bytes());
}

fn get_desc(bytes: &[u8]) -> Option<u64> {
    let b: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(!u64::from_be_bytes(b))
}

fn timestamp_bits(ts: Timestamp) -> u64 {
    (ts as u64) ^ (1 << 63)
}

/// Whether `v` is at or after a range's `start` bound.
pub fn after_start(v: &[u8], start: &std::ops::Bound<Vec<u8>>) -> bool {
    match start {
        std::ops::Bound::Included(s) => v >= s.as_slice(),
        std::ops::Bound::Excluded(s) => v > s.as_slice(),
        std::ops::Bound::Unbounded => true,
    }
}

/// Whether `v` is at or before a range's `end` bound.
pub fn before_end(v: &[u8], end: &std::ops::Bound<Vec<u8>>) -> bool {
    match end {
        std::ops::Bound::Included(e) => v <= e.as_slice(),
        std::ops::Bound::Excluded(e) => v < e.as_slice(),
        std::ops::Bound::Unbounded => true,
    }
}

/// The key prefix every entry of `row` starts with; seeking to it finds the row's first entry.
pub fn row_prefix(row: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(row.len() + 2);
    put_escaped(&mut out, row);
    out
}

/// A key greater than every entry of `row` and smaller than every entry of a later row:
/// `esc(row)` ends in `00 01`, and in no escaped string does `02` follow a `00`.
pub fn row_end(row: &[u8]) -> Vec<u8> {
    let mut out = row_prefix(row);
    if let Some(last) = out.last_mut() {
        *last = 0x02;
    }
    out
}

/// The prefix shared by every entry of one family of a row, its deletions first.
pub fn family_prefix(row: &[u8], family: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(row.len() + family.len() + 6);
    put_escaped(&mut out, row);
    out.push(TAG_MORE);
    put_escaped(&mut out, family);
    out
}

/// The prefix shared by every entry of one column (seek target for the newest version).
pub fn column_prefix(row: &[u8], family: &[u8], qualifier: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(row.len() + family.len() + qualifier.len() + 8);
    put_escaped(&mut out, row);
    out.push(TAG_MORE);
    put_escaped(&mut out, family);
    out.push(TAG_MORE);
    put_escaped(&mut out, qualifier);
    out
}

/// Encodes a cell (or column-deletion) key into `out`.
pub fn encode_column_key(
    out: &mut Vec<u8>,
    row: &[u8],
    family: &[u8],
    qualifier: &[u8],
    timestamp: Timestamp,
    seq: SeqNo,
    kind: CellKind,
) {
    put_escaped(out, row);
    out.push(TAG_MORE);
    put_escaped(out, family);
    out.push(TAG_MORE);
    put_escaped(out, qualifier);
    put_desc(out, timestamp_bits(timestamp));
    put_desc(out, seq);
    out.push(kind as u8);
}

impl InternalKey<'_> {
    /// Appends the encoded key to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match &self.target {
            Target::DeleteRow => {
                put_escaped(out, &self.row);
                out.push(TAG_END);
                put_desc(out, self.seq);
            }
            Target::DeleteFamily { family } => {
                put_escaped(out, &self.row);
                out.push(TAG_MORE);
                put_escaped(out, family);
                out.push(TAG_END);
                put_desc(out, self.seq);
            }
            Target::Column {
                family,
                qualifier,
                timestamp,
                kind,
            } => encode_column_key(
                out, &self.row, family, qualifier, *timestamp, self.seq, *kind,
            ),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes a key; `None` if the bytes are not a well-formed key.
    pub fn decode(bytes: &[u8]) -> Option<InternalKey<'_>> {
        let (row, n) = get_escaped(bytes)?;
        let (target, seq) = Self::decode_after_row(&bytes[n..])?;
        Some(InternalKey { row, target, seq })
    }

    /// Decodes what follows the row prefix of a key (whose length the caller knows,
    /// having read the row already): the target and the sequence number.
    pub fn decode_after_row(rest: &[u8]) -> Option<(Target<'_>, SeqNo)> {
        let (target, rest) = match *rest.first()? {
            TAG_END => (Target::DeleteRow, &rest[1..]),
            TAG_MORE => {
                let rest = &rest[1..];
                let (family, n) = get_escaped(rest)?;
                let rest = &rest[n..];
                match *rest.first()? {
                    TAG_END => (Target::DeleteFamily { family }, &rest[1..]),
                    TAG_MORE => {
                        let rest = &rest[1..];
                        let (qualifier, n) = get_escaped(rest)?;
                        let rest = &rest[n..];
                        let timestamp = (get_desc(rest)? ^ (1 << 63)) as i64;
                        let kind = match *rest.get(16)? {
                            1 => CellKind::Put,
                            2 => CellKind::DeleteCells,
                            3 => CellKind::Add,
                            _ => return None,
                        };
                        if rest.len() != 17 {
                            return None;
                        }
                        let target = Target::Column {
                            family,
                            qualifier,
                            timestamp,
                            kind,
                        };
                        (target, &rest[8..16])
                    }
                    _ => return None,
                }
            }
            _ => return None,
        };
        if rest.len() != 8 {
            return None;
        }
        Some((target, get_desc(rest)?))
    }
}

/// The row of an encoded key, without decoding the rest.
pub fn key_row(bytes: &[u8]) -> Option<Cow<'_, [u8]>> {
    get_escaped(bytes).map(|(row, _)| row)
}

/// The length of the row prefix (`esc(row)`) of an encoded key.
pub fn row_prefix_len(bytes: &[u8]) -> Option<usize> {
    get_escaped(bytes).map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1u8), Just(0xFFu8), any::<u8>()],
            0..6,
        )
    }

    fn target() -> impl Strategy<Value = Target<'static>> {
        prop_oneof![
            Just(Target::DeleteRow),
            bytes().prop_map(|f| Target::DeleteFamily {
                family: Cow::Owned(f)
            }),
            (bytes(), bytes(), any::<i64>(), any::<bool>()).prop_map(|(f, q, ts, put)| {
                Target::Column {
                    family: Cow::Owned(f),
                    qualifier: Cow::Owned(q),
                    timestamp: ts,
                    kind: if put {
                        CellKind::Put
                    } else {
                        CellKind::DeleteCells
                    },
                }
            }),
        ]
    }

    fn key() -> impl Strategy<Value = InternalKey<'static>> {
        (bytes(), target(), any::<u64>()).prop_map(|(row, target, seq)| InternalKey {
            row: Cow::Owned(row),
            target,
            seq,
        })
    }

    /// The order the engine needs, stated directly on decoded keys.
    fn logical_cmp(a: &InternalKey, b: &InternalKey) -> std::cmp::Ordering {
        fn rank<'a>(t: &'a Target) -> (u8, &'a [u8], u8, &'a [u8], std::cmp::Reverse<i64>) {
            match t {
                Target::DeleteRow => (0, &[], 0, &[], std::cmp::Reverse(0)),
                Target::DeleteFamily { family } => (1, family, 0, &[], std::cmp::Reverse(0)),
                Target::Column {
                    family,
                    qualifier,
                    timestamp,
                    ..
                } => (1, family, 1, qualifier, std::cmp::Reverse(*timestamp)),
            }
        }
        let kind = |t: &Target| match t {
            Target::Column { kind, .. } => *kind as u8,
            _ => 0,
        };
        (
            a.row.as_ref(),
            rank(&a.target),
            std::cmp::Reverse(a.seq),
            kind(&a.target),
        )
            .cmp(&(
                b.row.as_ref(),
                rank(&b.target),
                std::cmp::Reverse(b.seq),
                kind(&b.target),
            ))
    }

    proptest! {
        #[test]
        fn keys_round_trip(k in key()) {
            let bytes = k.encode();
            prop_assert_eq!(InternalKey::decode(&bytes), Some(k.clone()));
            let row = key_row(&bytes);
            prop_assert_eq!(row.as_deref(), Some(k.row.as_ref()));
            prop_assert!(bytes.starts_with(&row_prefix(&k.row)));
            prop_assert!(bytes < row_end(&k.row));
        }

        #[test]
        fn row_end_is_below_every_later_row(a in bytes(), b in bytes(), t in target()) {
            prop_assume!(a < b);
            let later = InternalKey { row: Cow::Owned(b), target: t, seq: 0 }.encode();
            prop_assert!(row_end(&a) < later);
        }

        #[test]
        fn byte_order_is_the_logical_order(a in key(), b in key()) {
            prop_assert_eq!(a.encode().cmp(&b.encode()), logical_cmp(&a, &b));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = InternalKey::decode(&bytes);
        }
    }

    #[test]
    fn escaping_keeps_order_and_is_prefix_free() {
        let enc = |b: &[u8]| {
            let mut v = Vec::new();
            put_escaped(&mut v, b);
            v
        };
        assert!(enc(b"a") < enc(b"a\0"));
        assert!(enc(b"a\0") < enc(b"ab"));
        assert!(enc(b"") < enc(b"\0"));
        assert_eq!(get_escaped(&enc(b"x\0y")).unwrap().0.as_ref(), b"x\0y");
    }
}
