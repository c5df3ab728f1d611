//! A log entry: everything one committed transaction changes in its entity group, as
//! redo. Applying an entry is deterministic (it depends only on the entry and the data as
//! of the previous position), so it can be repeated after a crash with the same result.
//! Format: `docs/megastore-layout.md`.

use bigtable::coding::Reader;

use crate::entity::{damaged, encode_prop, put_bytes, read_bytes, read_prop, read_value};
use crate::entity::{encode_value, Entity};
use crate::footprint::Footprint;
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
    /// Prepares this group's part of two-phase transaction `txid`: records it (what it
    /// read, and its writes, which are puts and deletes) and locks the entities it
    /// read or writes until it is resolved. `coordinator` holds the decision.
    Prepare {
        txid: u64,
        coordinator: GroupKey,
        participant: GroupKey,
        reads: Footprint,
        writes: Vec<Write>,
    },
    /// Ends this group's part of `txid`: applies `writes` (its prepared writes) if the
    /// transaction commits, and unlocks. At the coordinator (`decide`), it also records
    /// the decision, unless one is recorded already, which then stands instead.
    Resolve {
        txid: u64,
        commit: bool,
        decide: bool,
        writes: Vec<Write>,
    },
    /// Catalog group only: records version `version` of the database's schema, whose
    /// text is `text`, in every replica's catalog.
    Schema { version: u64, text: String },
    /// Catalog group only: records that index `index` (added in schema version
    /// `version`) is back-filled, so every replica serves queries on it.
    IndexBuilt { index: String, version: u64 },
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
const PREPARE: u8 = 8;
const RESOLVE: u8 = 9;
const SCHEMA: u8 = 10;
const INDEX_BUILT: u8 = 11;

impl LogEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.next_leader.to_be_bytes());
        out.extend_from_slice(&self.proposal.to_be_bytes());
        bigtable::coding::put_varint(&mut out, self.writes.len() as u64);
        for write in &self.writes {
            encode_write(&mut out, write);
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
            writes.push(read_write(r)?);
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

/// One write, as in a log entry: a tag byte, then its fields.
fn encode_write(out: &mut Vec<u8>, write: &Write) {
    match write {
        Write::Put(entity) => {
            out.push(PUT);
            put_bytes(out, entity.table.as_bytes());
            bigtable::coding::put_varint(out, entity.props.len() as u64);
            for (name, prop) in &entity.props {
                put_bytes(out, name.as_bytes());
                encode_prop(out, prop);
            }
        }
        Write::Delete { table, key } => {
            out.push(DELETE);
            put_bytes(out, table.as_bytes());
            bigtable::coding::put_varint(out, key.len() as u64);
            for v in key {
                encode_value(out, v);
            }
        }
        Write::Reindex { index } => {
            out.push(REINDEX);
            put_bytes(out, index.as_bytes());
        }
        Write::Send {
            queue,
            from,
            to,
            payload,
        } => {
            out.push(SEND);
            put_bytes(out, queue.as_bytes());
            encode_group(out, from);
            encode_group(out, to);
            put_bytes(out, payload);
        }
        Write::Deliver {
            queue,
            from,
            messages,
        } => {
            out.push(DELIVER);
            put_bytes(out, queue.as_bytes());
            encode_group(out, from);
            bigtable::coding::put_varint(out, messages.len() as u64);
            for (id, payload) in messages {
                id.encode(out);
                put_bytes(out, payload);
            }
        }
        Write::Receive { queue, slots: ids } | Write::Forget { queue, ids } => {
            out.push(if matches!(write, Write::Receive { .. }) {
                RECEIVE
            } else {
                FORGET
            });
            put_bytes(out, queue.as_bytes());
            bigtable::coding::put_varint(out, ids.len() as u64);
            for id in ids {
                id.encode(out);
            }
        }
        Write::Prepare {
            txid,
            coordinator,
            participant,
            reads,
            writes,
        } => {
            out.push(PREPARE);
            out.extend_from_slice(&txid.to_be_bytes());
            encode_group(out, coordinator);
            encode_group(out, participant);
            reads.encode(out);
            encode_writes(out, writes);
        }
        Write::Resolve {
            txid,
            commit,
            decide,
            writes,
        } => {
            out.push(RESOLVE);
            out.extend_from_slice(&txid.to_be_bytes());
            out.push(u8::from(*commit) | (u8::from(*decide) << 1));
            encode_writes(out, writes);
        }
        Write::Schema { version, text } => {
            out.push(SCHEMA);
            out.extend_from_slice(&version.to_be_bytes());
            put_bytes(out, text.as_bytes());
        }
        Write::IndexBuilt { index, version } => {
            out.push(INDEX_BUILT);
            put_bytes(out, index.as_bytes());
            out.extend_from_slice(&version.to_be_bytes());
        }
    }
}

/// A count, then each write.
pub(crate) fn encode_writes(out: &mut Vec<u8>, writes: &[Write]) {
    bigtable::coding::put_varint(out, writes.len() as u64);
    for write in writes {
        encode_write(out, write);
    }
}

/// Writes as [`encode_writes`] puts them, when each is a put or a delete (what a
/// two-phase transaction's part holds).
pub(crate) fn read_data_writes(r: &mut Reader<'_>) -> Option<Vec<Write>> {
    let n = r.varint_usize()?;
    if n > r.remaining() {
        return None;
    }
    (0..n)
        .map(|_| match read_write(r)? {
            w @ (Write::Put(_) | Write::Delete { .. }) => Some(w),
            _ => None,
        })
        .collect()
}

fn read_write(r: &mut Reader<'_>) -> Option<Write> {
    Some(match r.u8()? {
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
        PREPARE => Write::Prepare {
            txid: u64::from_be_bytes(r.take(8)?.try_into().ok()?),
            coordinator: read_group(r)?,
            participant: read_group(r)?,
            reads: Footprint::read(r)?,
            writes: read_data_writes(r)?,
        },
        RESOLVE => {
            let txid = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
            let flags = r.u8()?;
            if flags > 3 {
                return None;
            }
            Write::Resolve {
                txid,
                commit: flags & 1 == 1,
                decide: flags & 2 == 2,
                writes: read_data_writes(r)?,
            }
        }
        SCHEMA => Write::Schema {
            version: u64::from_be_bytes(r.take(8)?.try_into().ok()?),
            text: read_string(r)?,
        },
        INDEX_BUILT => Write::IndexBuilt {
            index: read_string(r)?,
            version: u64::from_be_bytes(r.take(8)?.try_into().ok()?),
        },
        _ => return None,
    })
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
                Write::Prepare {
                    txid: 77,
                    coordinator: GroupKey::new("User", vec![Value::Int64(1)]),
                    participant: GroupKey::new("User", vec![Value::Int64(2)]),
                    reads: {
                        let mut f = Footprint::default();
                        f.add_row("Photo", b"row");
                        f
                    },
                    writes: vec![Write::Delete {
                        table: "Photo".into(),
                        key: vec![Value::Int64(2), Value::Int32(1)],
                    }],
                },
                Write::Resolve {
                    txid: 77,
                    commit: true,
                    decide: false,
                    writes: vec![Write::Put(
                        Entity::new("User").set("user_id", Value::Int64(2)),
                    )],
                },
                Write::Schema {
                    version: 2,
                    text: "CREATE SCHEMA S;".into(),
                },
                Write::IndexBuilt {
                    index: "PhotosByTime".into(),
                    version: 2,
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
