//! Mutations of one row (the Cloud Bigtable set), and how they become engine entries.

use std::borrow::Cow;

use crate::key::{encode_column_key, CellKind, InternalKey, SeqNo, Target, Timestamp};

/// Timestamps `start <= ts < end`; `end = None` means no upper bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimestampRange {
    pub start: Timestamp,
    pub end: Option<Timestamp>,
}

impl TimestampRange {
    pub fn contains(&self, ts: Timestamp) -> bool {
        ts >= self.start && self.end.is_none_or(|end| ts < end)
    }

    /// `start i64 LE | end i64 LE` (`i64::MAX` for no bound): the value of a column delete.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.start.to_le_bytes());
        out.extend_from_slice(&self.end.unwrap_or(i64::MAX).to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<TimestampRange> {
        let start = i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let end = i64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
        (bytes.len() == 16).then_some(TimestampRange {
            start,
            end: (end != i64::MAX).then_some(end),
        })
    }
}

/// One change to a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Writes a cell; `timestamp: None` takes the server's time at commit.
    SetCell {
        family: Vec<u8>,
        qualifier: Vec<u8>,
        timestamp: Option<Timestamp>,
        value: Vec<u8>,
    },
    /// Deletes the column's cells with timestamps in `range`.
    DeleteFromColumn {
        family: Vec<u8>,
        qualifier: Vec<u8>,
        range: TimestampRange,
    },
    /// Adds `input` to the cell at `timestamp` of a sum family (server time if `None`).
    AddToCell {
        family: Vec<u8>,
        qualifier: Vec<u8>,
        timestamp: Option<Timestamp>,
        input: i64,
    },
    /// Deletes every cell of the family in the row.
    DeleteFromFamily { family: Vec<u8> },
    /// Deletes every cell of the row.
    DeleteFromRow,
}

/// The value of a sum cell (an addend or a sum): 8 bytes big-endian; anything else
/// counts as 0.
pub fn read_sum(value: &[u8]) -> i64 {
    value.try_into().map(i64::from_be_bytes).unwrap_or(0)
}

/// Column deletions sort first within their column (see `docs/sstable-format.md`).
pub const COLUMN_DELETE_TIMESTAMP: Timestamp = Timestamp::MAX;

/// The entries for `mutations` applied in order to `row`: mutation `i` gets sequence
/// number `first_seq + i`, so a later mutation in the list overrides an earlier one.
pub fn to_entries(
    row: &[u8],
    mutations: &[Mutation],
    first_seq: SeqNo,
    now: Timestamp,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    mutations
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let seq = first_seq + i as SeqNo;
            let mut key = Vec::with_capacity(row.len() + 40);
            let value = match m {
                Mutation::SetCell {
                    family,
                    qualifier,
                    timestamp,
                    value,
                } => {
                    let ts = timestamp.unwrap_or(now);
                    encode_column_key(&mut key, row, family, qualifier, ts, seq, CellKind::Put);
                    value.clone()
                }
                Mutation::AddToCell {
                    family,
                    qualifier,
                    timestamp,
                    input,
                } => {
                    let ts = timestamp.unwrap_or(now);
                    encode_column_key(&mut key, row, family, qualifier, ts, seq, CellKind::Add);
                    input.to_be_bytes().to_vec()
                }
                Mutation::DeleteFromColumn {
                    family,
                    qualifier,
                    range,
                } => {
                    let ts = COLUMN_DELETE_TIMESTAMP;
                    encode_column_key(
                        &mut key,
                        row,
                        family,
                        qualifier,
                        ts,
                        seq,
                        CellKind::DeleteCells,
                    );
                    range.encode()
                }
                Mutation::DeleteFromFamily { family } => {
                    let target = Target::DeleteFamily {
                        family: Cow::Borrowed(family),
                    };
                    InternalKey {
                        row: Cow::Borrowed(row),
                        target,
                        seq,
                    }
                    .encode_into(&mut key);
                    Vec::new()
                }
                Mutation::DeleteFromRow => {
                    InternalKey {
                        row: Cow::Borrowed(row),
                        target: Target::DeleteRow,
                        seq,
                    }
                    .encode_into(&mut key);
                    Vec::new()
                }
            };
            (key, value)
        })
        .collect()
}
