//! A log entry: everything one committed transaction changes in its entity group, as
//! redo. Applying an entry is deterministic (it depends only on the entry and the data as
//! of the previous position), so it can be repeated after a crash with the same result.
//! Format: `docs/megastore-layout.md`.

use bigtable::coding::Reader;

use crate::entity::{damaged, encode_prop, put_bytes, read_bytes, read_prop, read_value};
use crate::entity::{encode_value, Entity};
use crate::keys::Value;
use crate::Error;

/// One change in a log entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Replaces the whole entity (properties it lacks become absent).
    Put(Entity),
    /// Deletes the entity of `table` with primary key `key`.
    Delete { table: String, key: Vec<Value> },
    /// Writes the entries of a newly added index for every entity of its table in the
    /// group: the group's part of a back-fill.
    Reindex { index: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// The cells of this entry are written at this timestamp, greater than every
    /// earlier entry's of the group.
    pub timestamp: i64,
    /// The schema version the transaction ran under: applying the entry maintains that
    /// version's indexes.
    pub schema_version: u64,
    /// The replica nominated to lead the next position (replication, next part).
    pub next_leader: u32,
    /// Unique to the proposing transaction attempt, so that two transactions writing
    /// the same changes at the same timestamp are still two different values: the
    /// acceptor takes a repeated value as a retry of the same proposal.
    pub proposal: u64,
    pub writes: Vec<Write>,
}

const FORMAT: u8 = 1;
const PUT: u8 = 1;
const DELETE: u8 = 2;
const REINDEX: u8 = 3;

impl LogEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.next_leader.to_be_bytes());
        out.extend_from_slice(&self.proposal.to_be_bytes());
        bigtable::coding::put_varint(&mut out, self.writes.len() as u64);
        for write in &self.writes {
            match write {
                Write::Put(entity) => {
                    out.push(PUT);
                    put_bytes(&mut out, entity.table.as_bytes());
                    bigtable::coding::put_varint(&mut out, entity.props.len() as u64);
                    for (name, prop) in &entity.props {
                        put_bytes(&mut out, name.as_bytes());
                        encode_prop(&mut out, prop);
                    }
                }
                Write::Delete { table, key } => {
                    out.push(DELETE);
                    put_bytes(&mut out, table.as_bytes());
                    bigtable::coding::put_varint(&mut out, key.len() as u64);
                    for v in key {
                        encode_value(&mut out, v);
                    }
                }
                Write::Reindex { index } => {
                    out.push(REINDEX);
                    put_bytes(&mut out, index.as_bytes());
                }
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<LogEntry, Error> {
        Self::read(&mut Reader::new(bytes)).ok_or_else(|| damaged("log entry"))
    }

    fn read(r: &mut Reader<'_>) -> Option<LogEntry> {
        if r.u8()? != FORMAT {
            return None;
        }
        let timestamp = i64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let schema_version = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let next_leader = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
        let proposal = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let n = r.varint_usize()?;
        if n > r.remaining() {
            return None;
        }
        let mut writes = Vec::with_capacity(n);
        for _ in 0..n {
            writes.push(match r.u8()? {
                PUT => {
                    let mut entity = Entity::new(read_string(r)?);
                    for _ in 0..r.varint_usize()? {
                        let name = read_string(r)?;
                        entity.props.insert(name, read_prop(r)?);
                    }
                    Write::Put(entity)
                }
                DELETE => {
                    let table = read_string(r)?;
                    let count = r.varint_usize()?;
                    if count > r.remaining() {
                        return None;
                    }
                    let key = (0..count).map(|_| read_value(r)).collect::<Option<_>>()?;
                    Write::Delete { table, key }
                }
                REINDEX => Write::Reindex {
                    index: read_string(r)?,
                },
                _ => return None,
            });
        }
        r.is_empty().then_some(LogEntry {
            timestamp,
            schema_version,
            next_leader,
            proposal,
            writes,
        })
    }
}

fn read_string(r: &mut Reader<'_>) -> Option<String> {
    String::from_utf8(read_bytes(r)?.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entries_round_trip() {
        let entry = LogEntry {
            timestamp: 1_700_000_000_000_000,
            schema_version: 3,
            next_leader: 1,
            proposal: 0xABCD,
            writes: vec![
                Write::Put(
                    Entity::new("Photo")
                        .set("user_id", Value::Int64(7))
                        .set_many("tag", vec![Value::String("dinner".into())]),
                ),
                Write::Delete {
                    table: "Photo".into(),
                    key: vec![Value::Int64(7), Value::Int32(2)],
                },
                Write::Reindex {
                    index: "PhotosByTime".into(),
                },
            ],
        };
        assert_eq!(LogEntry::decode(&entry.encode()).ok(), Some(entry));
    }

    proptest! {
        #[test]
        fn damaged_entries_are_errors_not_panics(bytes in any::<Vec<u8>>()) {
            let _ = LogEntry::decode(&bytes);
        }
    }
}
