//! The commit-log record of one commit: the entries it adds to one table's memtable.
//!
//! ```text
//! tree varint | first_seq varint | count varint | count x (key_len varint | key | value_len varint | value)
//! ```
//! The entries carry sequence numbers `first_seq .. first_seq + count` in their keys.

use crate::coding::{put_varint, Reader};
use crate::key::SeqNo;
use crate::manifest::TreeId;

pub fn encode(tree: TreeId, first_seq: SeqNo, entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let size: usize = entries.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
    let mut out = Vec::with_capacity(size + 24);
    put_varint(&mut out, tree);
    put_varint(&mut out, first_seq);
    put_varint(&mut out, entries.len() as u64);
    for (k, v) in entries {
        put_varint(&mut out, k.len() as u64);
        out.extend_from_slice(k);
        put_varint(&mut out, v.len() as u64);
        out.extend_from_slice(v);
    }
    out
}

pub struct LogRecord<'a> {
    pub tree: TreeId,
    pub first_seq: SeqNo,
    pub entries: Vec<(&'a [u8], &'a [u8])>,
}

impl LogRecord<'_> {
    pub fn last_seq(&self) -> SeqNo {
        self.first_seq + (self.entries.len() as u64).saturating_sub(1)
    }
}

pub fn decode(bytes: &[u8]) -> Option<LogRecord<'_>> {
    let mut r = Reader::new(bytes);
    let tree = r.varint()?;
    let first_seq = r.varint()?;
    let count = r.varint_usize()?;
    let mut entries = Vec::with_capacity(count.min(bytes.len()));
    for _ in 0..count {
        let n = r.varint_usize()?;
        let key = r.take(n)?;
        let n = r.varint_usize()?;
        entries.push((key, r.take(n)?));
    }
    r.is_empty().then_some(LogRecord {
        tree,
        first_seq,
        entries,
    })
}
