//! A log entry: everything one committed transaction changes in its entity group, as
//! redo. Applying an entry is deterministic (it depends only on the entry and the data as
//! of the previous position), so it can be repeated after a crash with the same result.
//! Format: `docs/megastore-layout.md`.

use bigtable::coding::Reader;

use crate::entity::{damaged, encode_prop, put_bytes, read_bytes, read_prop, read_value};
use crate::entity::{encode_value, Entity};
use crate::keys::Value;
use crate::queue::{encode_group, read_group, IdentifiedPayloads, MessageId};
use crate::{Error, GroupKey};

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
    /// Sends a message on `queue` from this group (`from`) to group `to`: applying it
    /// puts the message in this group's outbox.
    Send {
        queue: String,
        from: GroupKey,
        to: GroupKey,
        payload: Vec<u8>,
    },
    /// Puts messages sent by `from` (with their ids there) into this group's inbox of
    /// `queue`, and records the last id as delivered from `from`.
    Deliver {
        queue: String,
        from: GroupKey,
        messages: IdentifiedPayloads,
    },
    /// Consumes the messages at these slots of this group's inbox of `queue`.
    Receive {
        queue: String,
        slots: Vec<MessageId>,
    },
    /// Deletes these delivered messages from this group's outbox of `queue`.
    Forget { queue: String, ids: Vec<MessageId> },
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
const SEND: u8 = 4;
const DELIVER: u8 = 5;
const RECEIVE: u8 = 6;
const FORGET: u8 = 7;

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
                Write::Send {
                    queue,
                    from,
                    to,
                    payload,
                } => {
                    out.push(SEND);
                    put_bytes(&mut out, queue.as_bytes());
                    encode_group(&mut out, from);
                    encode_group(&mut out, to);
                    put_bytes(&mut out, payload);
                }
                Write::Deliver {
                    queue,
                    from,
                    messages,
                } => {
                    out.push(DELIVER);
                    put_bytes(&mut out, queue.as_bytes());
                    encode_group(&mut out, from);
                    bigtable::coding::put_varint(&mut out, messages.len() as u64);
                    for (id, payload) in messages {
                        id.encode(&mut out);
                        put_bytes(&mut out, payload);
                    }
                }
                Write::Receive { queue, slots: ids } | Write::Forget { queue, ids } => {
                    out.push(if matches!(write, Write::Receive { .. }) {
                        RECEIVE
                    } else {
                        FORGET
                    });
                    put_bytes(&mut out, queue.as_bytes());
                    bigtable::coding::put_varint(&mut out, ids.len() as u64);
                    for id in ids {
                        id.encode(&mut out);
                    }
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
                SEND => Write::Send {
                    queue: read_string(r)?,
                    from: read_group(r)?,
                    to: read_group(r)?,
                    payload: read_bytes(r)?.to_vec(),
                },
                DELIVER => {
                    let queue = read_string(r)?;
                    let from = read_group(r)?;
                    let count = r.varint_usize()?;
                    if count > r.remaining() {
                        return None;
                    }
                    let messages = (0..count)
                        .map(|_| Some((MessageId::read(r)?, read_bytes(r)?.to_vec())))
                        .collect::<Option<_>>()?;
                    Write::Deliver {
                        queue,
                        from,
                        messages,
                    }
                }
                tag @ (RECEIVE | FORGET) => {
                    let queue = read_string(r)?;
                    let count = r.varint_usize()?;
                    if count > r.remaining() {
                        return None;
                    }
                    let ids = (0..count)
                        .map(|_| MessageId::read(r))
                        .collect::<Option<_>>()?;
                    if tag == RECEIVE {
                        Write::Receive { queue, slots: ids }
                    } else {
                        Write::Forget { queue, ids }
                    }
                }
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
                Write::Send {
                    queue: "Mail".into(),
                    from: GroupKey::new("User", vec![Value::Int64(7)]),
                    to: GroupKey::new("User", vec![Value::Int64(8)]),
                    payload: b"hi".to_vec(),
                },
                Write::Deliver {
                    queue: "Mail".into(),
                    from: GroupKey::new("User", vec![Value::Int64(6)]),
                    messages: vec![(
                        MessageId {
                            timestamp: 5,
                            seq: 1,
                        },
                        b"yo".to_vec(),
                    )],
                },
                Write::Receive {
                    queue: "Mail".into(),
                    slots: vec![MessageId {
                        timestamp: 9,
                        seq: 0,
                    }],
                },
                Write::Forget {
                    queue: "Mail".into(),
                    ids: vec![MessageId {
                        timestamp: 4,
                        seq: 2,
                    }],
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
